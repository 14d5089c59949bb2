/*
 * lab.c — the drills of the two-region lab (scripts/lab.sh, docs/LAB.md,
 * docs/DRILLS.md "Lab drills"): region-loss, az-loss, db-failure,
 * partition and etcd-majority-loss, against cell DRILL_LAB_CELL through
 * the global entry's port for the cell, so the workload reaches the cell
 * wherever it is served.
 *
 * A run is a short plan of phases, each one `lab.sh fault ...` and what
 * must follow it:
 *   home    a new leader in the home region, nothing acknowledged lost
 *           (in-region failover to a synchronous standby);
 *   dr      the DR standby leads (the keepers' automatic policy); what
 *           was acknowledged and is missing afterwards is the RPO, judged
 *           against the cell's bound (topology failover.max_loss_s);
 *   fenced  no node may hold the cell (etcd has no majority): writes
 *           stop within the lease, and nothing sent after the lease ran
 *           out is acknowledged until the next phase restores etcd;
 *   rejoin  the side that was cut off comes back (partition healed) as
 *           standbys streaming from the leader, by pg_rewind, with the
 *           WAL the rewind threw away reported by the keepers.
 * The scenarios:
 *   region-loss         dr (lose us-east: nodes, etcd, meridiand, HAProxy)
 *   az-loss             home (lose the leader's zone)
 *   db-failure          home (the leader's node), then dr (every other
 *                       database node of the cell in us-east) — scenario
 *                       2 of the requirements: in-region fallback, then DR
 *   partition           dr (us-east cut off), then rejoin (heal)
 *   etcd-majority-loss  fenced (two of three etcd members frozen), then
 *                       home (they come back)
 * Every run: warm-up, the phases in order, stop the workload, measure
 * each phase (etcd history, the workload's logs), check the final
 * leader's database (every acknowledged transfer once, balances, no
 * phantom), judge. An acknowledgement to an attempt SENT after the DR
 * standby took the cell that is missing afterwards can only have come
 * from a stale primary: a violation, never "loss". Several runs (--runs)
 * each bring up a lab of their own (a lab given by --lab-dir serves one
 * run: the fault consumes it).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/clock.h"
#include "common/mrd_assert.h"
#include "drill/run.h"

#define LAB_ETCD_TIMEOUT_MS 2000
#define LAB_LEADER_TRIES 50
#define LAB_HISTORY_EVENTS_MAX 64
#define LAB_PHASES_MAX 3
#define LAB_NODES_MAX 8
#define LAB_CUSTOMER "drill"
#define LAB_DR_REGION_UNKNOWN ""
/* The partition's lost side must stream again within this. */
#define LAB_REJOIN_LIMIT_MS 180000
#define LAB_POLL_MS 500
/* etcd-majority-loss holds the fault this many leases (plus a margin). */
#define LAB_FENCE_HOLD_LEASES 2
#define LAB_FENCE_HOLD_EXTRA_MS 3000
#define LAB_LEASE_TTL_DEFAULT_S 6
#define LAB_REWINDS_MAX 256

typedef enum { EXPECT_HOME, EXPECT_DR, EXPECT_FENCED, EXPECT_REJOIN } lab_expect;

static const char *expect_name(lab_expect e)
{
    switch (e) {
    case EXPECT_HOME:
        return "home";
    case EXPECT_DR:
        return "dr";
    case EXPECT_FENCED:
        return "fenced";
    case EXPECT_REJOIN:
        return "rejoin";
    }
    return "?";
}

/* One phase of a run. */
typedef struct lab_phase {
    char args[4][64];  /* lab.sh fault ARGS: args[0] is the fault kind */
    size_t nargs;
    lab_expect expect;
    bool same_leader_ok;      /* home: the lost leader may lead again (db-crash) */
    drill_run_result r;       /* timings of this phase, relative to its own t0 */
    char region_after[32];    /* the leader's region after the phase */
    int64_t writes_stopped_ms;  /* fenced: last acknowledgement after the fault was in place
                                 * (lab.sh returned), relative to that; -1 none */
    int64_t acked_while_fenced; /* fenced: sent a lease after that, answered before the next phase */
    int64_t end_ms;             /* wall ms when the next phase began (or the workload stopped) */
    int64_t rejoin_ms;          /* rejoin: every lost node streaming, rel. t0; -1 not */
    int rejoined, rejoin_wanted;
    int64_t discarded_wal_bytes; /* rejoin: what the rewinds threw away (keepers' reports) */
    int rewinds;
    bool pass;
    char why[256];
} lab_phase;

/* Extra numbers of a lab run, for the report's region_* fields. */
typedef struct lab_measure {
    int64_t acks_before;    /* acknowledged between workload start and the first fault */
    int64_t span_before_ms; /* that window */
    int64_t lost;           /* acknowledged, missing on the final leader */
    int64_t loss_ms;        /* window of the lost acknowledgements + one interval; -1 unknown */
    int64_t bound_ms;       /* the cell's loss bound (0 without a dr phase) */
    int64_t stale_acks;     /* missing, sent after the DR standby took the cell */
    char event_kind[32];    /* kind of the history event of the headline phase */
    char zone_lost[32];     /* az-loss: the zone lost */
    char region_after[32];  /* the final leader's region */
    size_t phase_count;
    size_t headline;        /* the phase whose numbers the run reports */
    lab_phase phases[LAB_PHASES_MAX];
} lab_measure;

static void phase_set(lab_phase *p, lab_expect e, const char *a0, const char *a1,
                      const char *a2, const char *a3)
{
    memset(p, 0, sizeof *p);
    p->expect = e;
    const char *a[4] = {a0, a1, a2, a3};
    for (size_t i = 0; i < 4 && a[i] != NULL; i++) {
        snprintf(p->args[i], sizeof p->args[i], "%s", a[i]);
        p->nargs = i + 1;
    }
    p->writes_stopped_ms = p->rejoin_ms = -1;
}

/* The phases of a scenario; returns their count. */
static size_t lab_plan(drill_scenario s, const char *leader, const char *zone, lab_measure *m)
{
    lab_phase *p = m->phases;
    const char *home = DRILL_LAB_HOME_REGION;
    m->headline = 0;
    switch (s) {
    case DRILL_REGION_LOSS:
        phase_set(&p[0], EXPECT_DR, "region-loss", home, NULL, NULL);
        return 1;
    case DRILL_AZ_LOSS:
        phase_set(&p[0], EXPECT_HOME, "zone-loss", home, zone, NULL);
        return 1;
    case DRILL_DB_FAILURE:
        phase_set(&p[0], EXPECT_HOME, "node-kill", leader, NULL, NULL);
        phase_set(&p[1], EXPECT_DR, "db-loss", DRILL_LAB_CELL, home, NULL);
        m->headline = 1;
        return 2;
    case DRILL_PARTITION:
        phase_set(&p[0], EXPECT_DR, "partition", home, NULL, NULL);
        phase_set(&p[1], EXPECT_REJOIN, "heal", NULL, NULL, NULL);
        return 2;
    case DRILL_ETCD_MAJORITY_LOSS:
        phase_set(&p[0], EXPECT_FENCED, "etcd-majority-loss", home, NULL, NULL);
        phase_set(&p[1], EXPECT_HOME, "heal", NULL, NULL, NULL);
        m->headline = 1;
        return 2;
    case DRILL_NODE_LOSS: /* --lab: the cell drills, through the global entry */
        phase_set(&p[0], EXPECT_HOME, "node-kill", leader, NULL, NULL);
        return 1;
    case DRILL_DB_CRASH:
        phase_set(&p[0], EXPECT_HOME, "db-crash", leader, NULL, NULL);
        p[0].same_leader_ok = true; /* the keeper may restart it in place */
        return 1;
    case DRILL_ISOLATE_PRIMARY:
        break;
    }
    return 0;
}

static void phase_text(const lab_phase *p, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < p->nargs && used < size; i++) {
        int n = snprintf(out + used, size - used, "%s%s", i ? " " : "", p->args[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* The cell's failover.max_loss_s from the lab's normalized topology. */
static int64_t lab_loss_bound_ms(const drill_cell *lab)
{
    char path[DRILL_PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/topology.json", lab->dir);
    json_error_t jerr;
    json_t *t = json_load_file(path, 0, &jerr);
    int64_t bound = DRILL_REGION_LOSS_BOUND_DEFAULT_MS;
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(t, "cells"), i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *v = json_object_get(json_object_get(c, "failover"), "max_loss_s");
        if (name != NULL && strcmp(name, lab->name) == 0 && json_is_number(v) &&
            json_number_value(v) >= 0 && json_number_value(v) < 86400)
            bound = (int64_t)(json_number_value(v) * 1000.0);
    }
    json_decref(t);
    return bound;
}

static int64_t lease_ms(const drill_cell *lab)
{
    return (int64_t)(lab->lease_ttl_s > 0 ? lab->lease_ttl_s : LAB_LEASE_TTL_DEFAULT_S) * 1000;
}

/* Poll until writes have been acknowledged for DRILL_SETTLE_MS counting
 * only answers at or after since_ms, or limit_ms after t0. */
static void wait_writes_since(drill_env *env, workload *w, drill_run_result *r, int64_t since_ms)
{
    workload_watch_recovery(w, since_ms);
    int64_t last_progress = 0;
    for (;;) {
        int64_t now = clock_wall_ms();
        int64_t first = workload_first_recovered_ms(w);
        if (first > 0 && now - first >= DRILL_SETTLE_MS)
            break;
        if (now - r->t0_ms >= env->rto_limit_ms || drill_interrupted())
            break;
        if (now - last_progress >= 1000) {
            last_progress = now;
            drill_progress("  %.1f s after `%s`: %s (%" PRId64 " acknowledged in all)",
                           (double)(now - r->t0_ms) / 1000.0, r->fault,
                           first > 0 ? "writes back" : "waiting for writes",
                           workload_acked_now(w));
        }
        drill_nap(100);
    }
    r->waited_ms = clock_wall_ms() - r->t0_ms;
}

/* How many of `names` stream from the leader (pg_stat_replication). */
static int count_streaming(const drill_leader *l, char names[][32], int n)
{
    char dsn[256];
    drill_leader_dsn(l, dsn, sizeof dsn);
    PGconn *db = PQconnectdb(dsn);
    int count = -1;
    if (PQstatus(db) == CONNECTION_OK) {
        PGresult *res = PQexec(db, "SELECT application_name FROM pg_stat_replication "
                                   "WHERE state = 'streaming'");
        if (PQresultStatus(res) == PGRES_TUPLES_OK) {
            count = 0;
            for (int i = 0; i < PQntuples(res); i++)
                for (int j = 0; j < n; j++)
                    if (strcmp(PQgetvalue(res, i, 0), names[j]) == 0)
                        count++;
        }
        PQclear(res);
    }
    PQfinish(db);
    return count;
}

/* The keepers' rewind reports (/meridian/<cell>/rewinds/<epoch>-<node>)
 * for epochs after `after`: how many, and the WAL bytes they discarded. */
static void read_rewinds(drill_env *env, int64_t after, lab_phase *p)
{
    char prefix[128];
    snprintf(prefix, sizeof prefix, "/meridian/%s/rewinds/", env->cell->name);
    etcd_kv *kvs = NULL;
    size_t n = 0;
    if (etcd_get_prefix(env->etcd, prefix, &kvs, &n, LAB_REWINDS_MAX) != 0)
        return;
    for (size_t i = 0; i < n; i++) {
        json_error_t jerr;
        json_t *j = json_loadb(kvs[i].value, kvs[i].value_len, 0, &jerr);
        json_t *ep = json_object_get(j, "epoch");
        json_t *by = json_object_get(j, "discarded_bytes");
        if (json_is_integer(ep) && json_integer_value(ep) > after) {
            p->rewinds++;
            if (json_is_integer(by) && json_integer_value(by) > 0)
                p->discarded_wal_bytes += (int64_t)json_integer_value(by);
        }
        json_decref(j);
    }
    etcd_kvs_free(kvs, n);
}

/* rejoin: wait until every node of the cell in the home region streams
 * from the leader. */
static void wait_rejoin(drill_env *env, lab_phase *p)
{
    char names[LAB_NODES_MAX][32];
    int n = drill_lab_cell_nodes(env->cell, env->cell->name, DRILL_LAB_HOME_REGION, names,
                                 LAB_NODES_MAX);
    p->rejoin_wanted = n > 0 ? n : 0;
    int64_t last_progress = 0;
    while (n > 0 && !drill_interrupted()) {
        int64_t now = clock_wall_ms();
        drill_leader l;
        if (drill_current_leader(env->etcd, env->cell->name, &l, 1) == 0) {
            int c = count_streaming(&l, names, n);
            if (c > p->rejoined)
                p->rejoined = c;
            if (c == n) {
                p->rejoin_ms = now - p->r.t0_ms;
                drill_progress("  %d of %d %s nodes stream from %s (%.1f s after the heal)", c,
                               n, DRILL_LAB_HOME_REGION, l.node,
                               (double)p->rejoin_ms / 1000.0);
                return;
            }
            if (now - last_progress >= 2000) {
                last_progress = now;
                drill_progress("  %.1f s after the heal: %d of %d %s nodes stream from %s",
                               (double)(now - p->r.t0_ms) / 1000.0, c < 0 ? 0 : c, n,
                               DRILL_LAB_HOME_REGION, l.node);
            }
        }
        if (now - p->r.t0_ms >= LAB_REJOIN_LIMIT_MS)
            return;
        drill_nap(LAB_POLL_MS);
    }
}

/* Before a later phase that expects the DR standby to take over: the
 * earlier phase moved the leader, and the DR standby reconnects to the
 * new one across the WAN. The keepers' policy promotes it only when it
 * lagged at most max_loss_s when the leader was lost — the drill
 * measures the failover, not that race — so wait (at most 60 s) until
 * it streams from the leader with a flush lag under 0.5 s. */
static void wait_dr_caught_up(drill_env *env)
{
    char path[DRILL_PATH_MAX + 16], line[512], dr[32] = "";
    snprintf(path, sizeof path, "%s/nodes.tsv", env->cell->dir);
    FILE *f = fopen(path, "r");
    for (int lines = 0; f != NULL && dr[0] == '\0' && lines < 10000 &&
                        fgets(line, sizeof line, f) != NULL;
         lines++) {
        char *save = NULL;
        const char *name = strtok_r(line, "\t\n", &save);
        const char *cell = strtok_r(NULL, "\t\n", &save);
        strtok_r(NULL, "\t\n", &save); /* region */
        strtok_r(NULL, "\t\n", &save); /* zone */
        const char *role = strtok_r(NULL, "\t\n", &save);
        if (name != NULL && cell != NULL && role != NULL &&
            strcmp(cell, env->cell->name) == 0 && strcmp(role, "dr-standby") == 0)
            snprintf(dr, sizeof dr, "%s", name);
    }
    if (f != NULL)
        fclose(f);
    if (dr[0] == '\0')
        return;
    int64_t start = clock_wall_ms();
    while (!drill_interrupted() && clock_wall_ms() - start < 60000) {
        drill_leader l;
        if (drill_current_leader(env->etcd, env->cell->name, &l, 1) == 0) {
            char dsn[256];
            drill_leader_dsn(&l, dsn, sizeof dsn);
            PGconn *db = PQconnectdb(dsn);
            const char *params[1] = {dr};
            PGresult *res =
                PQstatus(db) == CONNECTION_OK
                    ? PQexecParams(db,
                                   "SELECT 1 FROM pg_stat_replication WHERE application_name = $1"
                                   " AND state = 'streaming'"
                                   " AND coalesce(extract(epoch FROM flush_lag), 0) < 0.5",
                                   1, NULL, params, NULL, NULL, 0)
                    : NULL;
            bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
            PQclear(res);
            PQfinish(db);
            if (ok) {
                drill_progress("  the DR standby %s streams from %s, flush lag < 0.5 s (%.1f s)", dr,
                               l.node, (double)(clock_wall_ms() - start) / 1000.0);
                return;
            }
        }
        drill_nap(LAB_POLL_MS);
    }
    drill_progress("  the DR standby %s is not caught up after 60 s: going on (the policy may "
                   "refuse the failover)",
                   dr);
}

/* Inject one phase's fault and wait for what must follow it. */
static int run_phase(drill_env *env, workload *w, lab_phase *p, size_t index, size_t count,
                     const lab_phase *prev)
{
    bool after_fenced = prev != NULL && prev->expect == EXPECT_FENCED;
    if (prev != NULL && p->expect == EXPECT_DR)
        wait_dr_caught_up(env);
    drill_cell *lab = env->cell;
    char err[1024] = "", text[256];
    phase_text(p, text, sizeof text);
    drill_run_result *r = &p->r;
    r->index = (int)index + 1;
    r->detection_ms = r->promotion_ms = r->rto_ms = -1;
    drill_say(r->fault, sizeof r->fault, "%s", p->args[0]);
    drill_leader before;
    memset(&before, 0, sizeof before);
    if (after_fenced) {
        /* etcd has no majority: nothing can have changed the epoch. */
        r->epoch_before = prev->r.epoch_before;
        snprintf(r->leader_before, sizeof r->leader_before, "%s", prev->r.leader_before);
    } else if (drill_etcd_epoch(env->etcd, lab->name, &r->epoch_before) != 0) {
        drill_say(p->why, sizeof p->why, "cannot read cell %s's epoch from etcd", lab->name);
        return -1;
    } else if (drill_current_leader(env->etcd, lab->name, &before, 1) == 0) {
        snprintf(r->leader_before, sizeof r->leader_before, "%s", before.node);
    }
    drill_progress("phase %zu/%zu: lab fault %s (expect: %s; leader %s, epoch %" PRId64
                   ", %" PRId64 " acknowledged so far)",
                   index + 1, count, text, expect_name(p->expect),
                   r->leader_before[0] ? r->leader_before : "none", r->epoch_before,
                   workload_acked_now(w));
    const char *argv[5] = {"fault", p->args[0], p->args[1], p->args[2], p->args[3]};
    r->t0_ms = clock_wall_ms();
    int frc = drill_lab_do(lab, argv, p->nargs + 1, DRILL_LAB_CMD_TIMEOUT_MS, err, sizeof err);
    r->injected_ms = clock_wall_ms();
    if (frc != 0) {
        drill_say(p->why, sizeof p->why, "fault injection: %s", err);
        return -1;
    }
    r->fault_injected = true;
    switch (p->expect) {
    case EXPECT_HOME:
    case EXPECT_DR:
        if (after_fenced) {
            /* After etcd came back the old leader may take the key again
             * (same node): any write acknowledged after the heal counts. */
            wait_writes_since(env, w, r, r->injected_ms);
        } else {
            char dsn_before[256] = "";
            if (r->leader_before[0])
                drill_leader_dsn(&before, dsn_before, sizeof dsn_before);
            drill_wait_recovery(env, w, r, dsn_before);
        }
        break;
    case EXPECT_FENCED: {
        int64_t hold = LAB_FENCE_HOLD_LEASES * lease_ms(lab) + LAB_FENCE_HOLD_EXTRA_MS;
        drill_progress("  holding the fault %.1f s (%d leases + %.1f s): writes must stop",
                       (double)hold / 1000.0, LAB_FENCE_HOLD_LEASES,
                       LAB_FENCE_HOLD_EXTRA_MS / 1000.0);
        int64_t acked_at = workload_acked_now(w);
        while (clock_wall_ms() - r->t0_ms < hold && !drill_interrupted()) {
            drill_nap(1000);
            drill_progress("  %.1f s after the fault: %" PRId64 " acknowledged since it",
                           (double)(clock_wall_ms() - r->t0_ms) / 1000.0,
                           workload_acked_now(w) - acked_at);
        }
        r->waited_ms = clock_wall_ms() - r->t0_ms;
        break;
    }
    case EXPECT_REJOIN:
        wait_rejoin(env, p);
        r->waited_ms = clock_wall_ms() - r->t0_ms;
        break;
    }
    return 0;
}

/* The leader (and its region) once a phase is over. */
static void note_leader_after(drill_env *env, lab_phase *p)
{
    drill_leader l;
    if (drill_current_leader(env->etcd, env->cell->name, &l, 3) != 0)
        return;
    snprintf(p->r.leader_after, sizeof p->r.leader_after, "%s", l.node);
    p->r.epoch_after = l.epoch;
    char zone[32];
    if (drill_lab_node_place(env->cell, l.node, p->region_after, sizeof p->region_after, zone,
                             sizeof zone) != 0)
        p->region_after[0] = '\0';
}

/* After the workload stopped: the numbers of each phase, and its verdict. */
static void measure_phase(drill_env *env, const workload *w, lab_phase *p, bool after_fenced)
{
    drill_run_result *r = &p->r;
    if (!r->fault_injected)
        return;
    size_t n = 0;
    const workload_event *acked = workload_acked(w, &n);
    switch (p->expect) {
    case EXPECT_HOME:
    case EXPECT_DR: {
        int64_t since = drill_measure_history(env, r);
        if (since <= 0 && after_fenced)
            since = r->injected_ms; /* the same node took the key again */
        int64_t started = 0;
        char dsn[256];
        drill_leader now_leader;
        if (since <= 0 && p->same_leader_ok &&
            drill_current_leader(env->etcd, env->cell->name, &now_leader, 3) == 0) {
            /* restarted in place: from its new postmaster's start */
            drill_leader_dsn(&now_leader, dsn, sizeof dsn);
            if (drill_db_started_ms(dsn, &started) == 0 && started > r->t0_ms)
                since = started > r->injected_ms ? started : r->injected_ms;
        }
        r->serving_since_ms = since;
        drill_measure_rto(w, r, since);
        r->recovered = r->has_rto_ack && r->rto_ms < DRILL_REGION_RTO_LIMIT_MS;
        bool home = strcmp(p->region_after, DRILL_LAB_HOME_REGION) == 0;
        if (!r->recovered)
            drill_say(p->why, sizeof p->why, "no acknowledged write on a new primary within %d s",
                      DRILL_REGION_RTO_LIMIT_MS / 1000);
        else if (p->expect == EXPECT_HOME && !home)
            drill_say(p->why, sizeof p->why, "the new leader %s is in %s, not in %s",
                      r->leader_after, p->region_after[0] ? p->region_after : "no region",
                      DRILL_LAB_HOME_REGION);
        else if (p->expect == EXPECT_HOME && !after_fenced && !p->same_leader_ok &&
                 strcmp(r->leader_after, r->leader_before) == 0)
            drill_say(p->why, sizeof p->why, "%s still leads after losing it", r->leader_after);
        else if (p->expect == EXPECT_DR && (home || p->region_after[0] == '\0'))
            drill_say(p->why, sizeof p->why, "the cell did not move to its DR region (leader %s)",
                      r->leader_after[0] ? r->leader_after : "none");
        break;
    }
    case EXPECT_FENCED: {
        /* Measured from when lab.sh returned, when the fault was surely
         * in place (lab.sh itself may take a second or two on a loaded
         * machine). The leader may still renew its lease for an etcd
         * election timeout after that (the member it talks to serves
         * keepalives until it notices it lost the quorum), then fences
         * itself at most a lease later: two leases bound both. */
        int64_t lease_end = r->injected_ms + 2 * lease_ms(env->cell);
        int64_t last = -1;
        for (size_t i = 0; i < n; i++) {
            const workload_event *e = &acked[i];
            if (e->answer_ms < r->injected_ms || e->answer_ms >= p->end_ms)
                continue;
            if (e->answer_ms - r->injected_ms > last)
                last = e->answer_ms - r->injected_ms;
            if (e->sent_ms >= lease_end)
                p->acked_while_fenced++;
        }
        p->writes_stopped_ms = last >= 0 ? last : 0;
        if (p->acked_while_fenced > 0)
            drill_say(p->why, sizeof p->why,
                      "%" PRId64 " transfers sent after the lease ran out were acknowledged "
                      "while etcd had no majority",
                      p->acked_while_fenced);
        break;
    }
    case EXPECT_REJOIN:
        if (p->rejoin_ms < 0)
            drill_say(p->why, sizeof p->why,
                      "%d of %d %s nodes stream from the leader %d s after the heal", p->rejoined,
                      p->rejoin_wanted, DRILL_LAB_HOME_REGION, LAB_REJOIN_LIMIT_MS / 1000);
        break;
    }
    p->pass = p->why[0] == '\0';
}

/* One run of a lab scenario on the lab in env->cell. */
static void run_lab_once(drill_env *env, int index, drill_run_result *r, lab_measure *m)
{
    const drill_options *o = env->o;
    drill_cell *lab = env->cell;
    char err[1024] = "";
    workload *w = NULL;
    memset(r, 0, sizeof *r);
    memset(m, 0, sizeof *m);
    r->index = index;
    r->detection_ms = r->promotion_ms = r->rto_ms = m->loss_ms = -1;
    const char *sname = drill_scenario_name(o->scenario);

    drill_leader before;
    int64_t epoch_start = 0;
    if (drill_current_leader(env->etcd, lab->name, &before, LAB_LEADER_TRIES) != 0 ||
        drill_etcd_epoch(env->etcd, lab->name, &epoch_start) != 0) {
        drill_say(r->error, sizeof r->error, "cannot read cell %s's leader from etcd at %s",
                  lab->name, lab->etcd);
        goto out;
    }
    snprintf(r->leader_before, sizeof r->leader_before, "%s", before.node);
    r->epoch_before = epoch_start;
    char region_before[32] = "";
    if (drill_lab_node_place(lab, before.node, region_before, sizeof region_before,
                             m->zone_lost, sizeof m->zone_lost) != 0 ||
        strcmp(region_before, DRILL_LAB_HOME_REGION) != 0) {
        drill_say(r->error, sizeof r->error,
                  "cell %s's leader %s is not in its home region %s (region \"%s\"): the lab "
                  "is not in its starting state",
                  lab->name, before.node, DRILL_LAB_HOME_REGION, region_before);
        goto out;
    }
    m->phase_count = lab_plan(o->scenario, before.node, m->zone_lost, m);
    mrd_assert(m->phase_count >= 1 && m->phase_count <= LAB_PHASES_MAX);
    if (o->scenario != DRILL_AZ_LOSS)
        m->zone_lost[0] = '\0';
    bool any_dr = false;
    for (size_t i = 0; i < m->phase_count; i++)
        any_dr |= m->phases[i].expect == EXPECT_DR;
    m->bound_ms = any_dr ? lab_loss_bound_ms(lab) : 0;
    /* Cut off rather than killed, the home primary keeps acknowledging
     * (through its in-region synchronous standbys) until it fences
     * itself, and none of that reaches the DR standby: with DR-aware
     * fencing (--dr-fence-ms, half the bound, at least 500 ms) once etcd
     * and the DR standby have both been silent that long, else at the
     * lease deadline, at most one lease after the cut. So a partition may
     * lose the policy's bound plus that much traffic (docs/FAILOVER.md;
     * "durability": "global" makes a transfer safe from it). */
    if (o->scenario == DRILL_PARTITION) {
        int64_t fence_ms = m->bound_ms / 2 > 500 ? m->bound_ms / 2 : 500;
        m->bound_ms += lab->dr_fence ? fence_ms : lease_ms(lab);
    }

    workload_config wc = {.api_key = env->api_key, .writers = o->clients,
                          .readers = o->readers, .accounts = o->accounts, .url_count = 1,
                          .rate_per_s = o->rate_per_s};
    wc.urls[0] = lab->urls[0];
    w = workload_create(&wc, err, sizeof err);
    if (w == NULL || workload_setup(w, err, sizeof err) != 0 ||
        workload_start(w, err, sizeof err) != 0) {
        drill_say(r->error, sizeof r->error, "workload: %s", err);
        goto out;
    }
    int64_t start_ms = clock_wall_ms();
    r->workload_ran = true;
    drill_progress("run %d/%d: %s: workload on cell %s through %s (%d writers%s, %d readers); "
                   "warm-up %d ms; %zu phase%s",
                   index, o->runs, sname, lab->name, lab->urls[0], o->clients,
                   o->rate_per_s > 0 ? ", paced" : "", o->readers, DRILL_WARMUP_MS,
                   m->phase_count, m->phase_count > 1 ? "s" : "");
    drill_nap(DRILL_WARMUP_MS);
    for (size_t i = 0; i < m->phase_count && !drill_interrupted(); i++) {
        if (i > 0)
            m->phases[i - 1].end_ms = clock_wall_ms();
        if (run_phase(env, w, &m->phases[i], i, m->phase_count,
                      i > 0 ? &m->phases[i - 1] : NULL) != 0) {
            drill_say(r->error, sizeof r->error, "phase %zu: %s", i + 1, m->phases[i].why);
            break;
        }
        note_leader_after(env, &m->phases[i]);
    }
    drill_progress("run %d/%d: stopping the workload", index, o->runs);
    m->phases[m->phase_count - 1].end_ms = clock_wall_ms();
    workload_stop(w, drill_interrupted());
    if (drill_interrupted() && r->error[0] == '\0')
        drill_say(r->error, sizeof r->error, "interrupted");
    workload_stats_get(w, &r->ws);

    for (size_t i = 0; i < m->phase_count; i++) {
        bool after_fenced = i > 0 && m->phases[i - 1].expect == EXPECT_FENCED;
        measure_phase(env, w, &m->phases[i], after_fenced);
        if (m->phases[i].expect == EXPECT_REJOIN)
            read_rewinds(env, epoch_start, &m->phases[i]);
    }
    /* The run reports its headline phase's timings. */
    const lab_phase *h = &m->phases[m->headline];
    memcpy(r->fault, h->r.fault, sizeof r->fault);
    r->fault_injected = true;
    for (size_t i = 0; i < m->phase_count; i++)
        r->fault_injected &= m->phases[i].r.fault_injected;
    r->t0_ms = h->r.t0_ms;
    r->injected_ms = h->r.injected_ms;
    r->recovered = h->r.recovered || h->expect == EXPECT_REJOIN || h->expect == EXPECT_FENCED;
    r->rto_ms = h->r.rto_ms;
    r->detection_ms = h->r.detection_ms;
    r->promotion_ms = h->r.promotion_ms;
    r->waited_ms = h->r.waited_ms;
    r->acked_after_fault = h->r.acked_after_fault;
    r->has_rto_ack = h->r.has_rto_ack;
    r->rto_ack = h->r.rto_ack;
    r->serving_since_ms = h->r.serving_since_ms;
    r->promotions = 0;
    for (size_t i = 0; i < m->phase_count; i++)
        r->promotions += m->phases[i].r.promotions;
    /* The acknowledgement rate before the first fault (funding transfers
     * answered before start_ms do not count). */
    size_t nacked = 0;
    const workload_event *acked = workload_acked(w, &nacked);
    int64_t first_t0 = m->phases[0].r.t0_ms;
    for (size_t i = 0; i < nacked && first_t0 > 0; i++)
        if (acked[i].answer_ms >= start_ms && acked[i].answer_ms < first_t0)
            m->acks_before++;
    m->span_before_ms = first_t0 > start_ms ? first_t0 - start_ms : 0;
    drill_event ev[LAB_HISTORY_EVENTS_MAX];
    size_t nev = 0;
    if (drill_etcd_history_after(env->etcd, lab->name, h->r.epoch_before, ev,
                                 LAB_HISTORY_EVENTS_MAX, &nev) == 0 &&
        nev > 0)
        snprintf(m->event_kind, sizeof m->event_kind, "%s", ev[0].kind);

    drill_leader after;
    if (drill_current_leader(env->etcd, lab->name, &after,
                             drill_interrupted() ? 1 : LAB_LEADER_TRIES) == 0) {
        snprintf(r->leader_after, sizeof r->leader_after, "%s", after.node);
        r->epoch_after = after.epoch;
        char zone_after[32];
        if (drill_lab_node_place(lab, after.node, m->region_after, sizeof m->region_after,
                                 zone_after, sizeof zone_after) != 0)
            m->region_after[0] = '\0';
        r->end_healthy = true;
        for (size_t i = 0; i < m->phase_count; i++)
            r->end_healthy &= m->phases[i].pass;
        char dsn[256];
        drill_leader_dsn(&after, dsn, sizeof dsn);
        drill_progress("run %d/%d: checking %" PRId64 " acknowledged transfers in %s's database",
                       index, o->runs, r->ws.acked, after.node);
        if (drill_check_db(dsn, w, &r->db, err, sizeof err) == 0)
            r->db_checked = true;
        else if (r->error[0] == '\0')
            drill_say(r->error, sizeof r->error, "database check: %s", err);
    } else if (r->error[0] == '\0') {
        drill_say(r->error, sizeof r->error, "cell %s has no leader after the drill", lab->name);
    }
out:
    drill_report_judge(r);
    if (r->db_checked) {
        m->lost = r->db.acked_missing;
        /* Loss in a regional failover is the RPO, judged against the
         * bound; anything missing that was SENT after the DR standby
         * took the cell came from a stale primary: a violation. */
        if (m->bound_ms > 0) {
            r->invariant_violations -= r->db.acked_missing;
            for (size_t i = 0; i < m->phase_count; i++) {
                const lab_phase *p = &m->phases[i];
                if (p->expect == EXPECT_DR && p->r.serving_since_ms > 0 &&
                    r->db.acked_missing_sent_max_ms >= p->r.serving_since_ms)
                    m->stale_acks = 1;
            }
            r->invariant_violations += m->stale_acks;
        }
        /* Seconds of traffic lost: the window the missing acknowledgements
         * were answered in, plus one interval between acknowledgements at
         * the rate before the fault (one lost transfer is that much). */
        if (m->lost == 0)
            m->loss_ms = 0;
        else if (m->acks_before > 0)
            m->loss_ms = r->db.acked_missing_answer_max_ms - r->db.acked_missing_answer_min_ms +
                         m->span_before_ms / m->acks_before;
    }
    for (size_t i = 0; i < m->phase_count; i++)
        r->invariant_violations += m->phases[i].acked_while_fenced;
    r->pass = r->error[0] == '\0' && r->fault_injected && r->end_healthy && r->db_checked &&
              r->workload_ran && r->invariant_violations == 0 && r->ws.acked > 0 &&
              m->loss_ms >= 0 && m->loss_ms <= m->bound_ms;
    for (size_t i = 0; i < m->phase_count; i++) {
        const lab_phase *p = &m->phases[i];
        char text[256];
        phase_text(p, text, sizeof text);
        if (!p->r.fault_injected)
            continue;
        drill_progress("run %d/%d: phase %zu `%s` (%s): %s%s%s; leader %s -> %s, detection "
                       "%.3f s, RTO %.3f s",
                       index, o->runs, i + 1, text, expect_name(p->expect),
                       p->pass ? "pass" : "FAIL", p->why[0] ? ": " : "", p->why,
                       p->r.leader_before[0] ? p->r.leader_before : "none",
                       p->r.leader_after[0] ? p->r.leader_after : "none",
                       (double)p->r.detection_ms / 1000.0, (double)p->r.rto_ms / 1000.0);
    }
    drill_progress("run %d/%d: %s: %s -> %s, %" PRId64 " acknowledged, %" PRId64
                   " lost (%.3f s of traffic, bound %.3f s), %" PRId64 " invariant violations%s%s",
                   index, o->runs, r->pass ? "pass" : "FAIL", r->leader_before,
                   r->leader_after[0] ? r->leader_after : "?", r->ws.acked, m->lost,
                   (double)m->loss_ms / 1000.0, (double)m->bound_ms / 1000.0,
                   r->invariant_violations, r->error[0] ? "; " : "", r->error);
    workload_free(w);
}

static json_t *secs_or_null(int64_t ms)
{
    return ms >= 0 ? json_real((double)ms / 1000.0) : json_null();
}

static json_t *phase_json(const lab_phase *p, int64_t run_t0_ms)
{
    char text[256];
    phase_text(p, text, sizeof text);
    const drill_run_result *r = &p->r;
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "fault", json_string(text));
    json_object_set_new(o, "expect", json_string(expect_name(p->expect)));
    json_object_set_new(o, "pass", json_boolean(p->pass));
    json_object_set_new(o, "why", p->why[0] ? json_string(p->why) : json_null());
    json_object_set_new(o, "at_s", secs_or_null(r->t0_ms > 0 ? r->t0_ms - run_t0_ms : -1));
    json_object_set_new(o, "leader_before",
                        r->leader_before[0] ? json_string(r->leader_before) : json_null());
    json_object_set_new(o, "leader_after",
                        r->leader_after[0] ? json_string(r->leader_after) : json_null());
    json_object_set_new(o, "region_after",
                        p->region_after[0] ? json_string(p->region_after) : json_null());
    json_object_set_new(o, "epoch_before", json_integer(r->epoch_before));
    json_object_set_new(o, "epoch_after", json_integer(r->epoch_after));
    json_object_set_new(o, "detection_s", secs_or_null(r->detection_ms));
    json_object_set_new(o, "promotion_s", secs_or_null(r->promotion_ms));
    json_object_set_new(o, "rto_s", secs_or_null(r->recovered ? r->rto_ms : -1));
    json_object_set_new(o, "waited_s", secs_or_null(r->waited_ms));
    if (p->expect == EXPECT_FENCED) {
        json_object_set_new(o, "writes_stopped_s", secs_or_null(p->writes_stopped_ms));
        json_object_set_new(o, "acked_while_fenced", json_integer(p->acked_while_fenced));
    }
    if (p->expect == EXPECT_REJOIN) {
        json_object_set_new(o, "rejoin_s", secs_or_null(p->rejoin_ms));
        json_object_set_new(o, "rejoined", json_integer(p->rejoined));
        json_object_set_new(o, "rejoin_wanted", json_integer(p->rejoin_wanted));
        json_object_set_new(o, "rewinds", json_integer(p->rewinds));
        json_object_set_new(o, "discarded_wal_bytes", json_integer(p->discarded_wal_bytes));
    }
    return o;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The lab fields: per run (details[i]) the phases and region_* numbers;
 * at the top the last run's region_* (one-run reports) and the
 * aggregates over runs (region_rto_s_median, ..._max, region_acked_lost_max,
 * region_loss_s_max). */
static void lab_report(json_t *rep, const drill_run_result *runs, const lab_measure *ms,
                       size_t n, const char *lab_dir)
{
    if (rep == NULL)
        return;
    json_object_set_new(rep, "lab", json_true());
    json_object_set_new(rep, "lab_dir", json_string(lab_dir));
    json_object_set_new(rep, "cell", json_string(DRILL_LAB_CELL));
    json_object_set_new(rep, "rto_limit_s", json_real(DRILL_REGION_RTO_LIMIT_MS / 1000.0));
    json_object_set_new(rep, "region_rto_limit_s",
                        json_real(DRILL_REGION_RTO_LIMIT_MS / 1000.0));
    json_t *details = json_object_get(rep, "details");
    int64_t rtos[DRILL_RUNS_MAX];
    size_t nrto = 0;
    int64_t lost_max = -1, loss_ms_max = -1;
    for (size_t i = 0; i < n; i++) {
        const drill_run_result *r = &runs[i];
        const lab_measure *m = &ms[i];
        json_t *d = json_array_get(details, i);
        json_t *ph = json_array();
        for (size_t k = 0; k < m->phase_count && ph != NULL; k++)
            json_array_append_new(ph, phase_json(&m->phases[k], m->phases[0].r.t0_ms));
        if (d != NULL) {
            json_object_set_new(d, "phases", ph != NULL ? ph : json_null());
            json_object_set_new(d, "region_acked_lost",
                                r->db_checked ? json_integer(m->lost) : json_null());
            json_object_set_new(d, "region_loss_s", secs_or_null(m->loss_ms));
            json_object_set_new(d, "stale_primary_acks", json_integer(m->stale_acks));
            json_object_set_new(d, "leader_region_after",
                                m->region_after[0] ? json_string(m->region_after) : json_null());
        } else {
            json_decref(ph);
        }
        if (r->recovered && r->rto_ms >= 0)
            rtos[nrto++] = r->rto_ms;
        if (r->db_checked && m->lost > lost_max)
            lost_max = m->lost;
        if (m->loss_ms > loss_ms_max)
            loss_ms_max = m->loss_ms;
    }
    if (n > 0) {
        const drill_run_result *r = &runs[n - 1];
        const lab_measure *m = &ms[n - 1];
        if (m->zone_lost[0] != '\0')
            json_object_set_new(rep, "zone_lost", json_string(m->zone_lost));
        else
            json_object_set_new(rep, "region_lost", json_string(DRILL_LAB_HOME_REGION));
        json_object_set_new(rep, "leader_region_after",
                            m->region_after[0] ? json_string(m->region_after) : json_null());
        json_object_set_new(rep, "region_rto_s", secs_or_null(r->recovered ? r->rto_ms : -1));
        json_object_set_new(rep, "region_acked_lost",
                            r->db_checked ? json_integer(m->lost) : json_null());
        json_object_set_new(rep, "region_loss_s", secs_or_null(m->loss_ms));
        json_object_set_new(rep, "region_loss_bound_s", secs_or_null(m->bound_ms));
        json_object_set_new(rep, "region_ack_rate_per_s",
                            m->span_before_ms > 0
                                ? json_real((double)m->acks_before * 1000.0 /
                                            (double)m->span_before_ms)
                                : json_null());
        json_object_set_new(rep, "region_failover_kind",
                            m->event_kind[0] ? json_string(m->event_kind) : json_null());
        json_object_set_new(rep, "detection_s", secs_or_null(r->detection_ms));
        json_object_set_new(rep, "promotion_s", secs_or_null(r->promotion_ms));
    }
    qsort(rtos, nrto, sizeof rtos[0], cmp_i64);
    json_object_set_new(rep, "region_rto_s_median",
                        secs_or_null(nrto > 0 ? rtos[nrto / 2] : -1));
    json_object_set_new(rep, "region_rto_s_max", secs_or_null(nrto > 0 ? rtos[nrto - 1] : -1));
    json_object_set_new(rep, "region_acked_lost_max",
                        lost_max >= 0 ? json_integer(lost_max) : json_null());
    json_object_set_new(rep, "region_loss_s_max", secs_or_null(loss_ms_max));
}

/* Bring up a lab of the drill's own in dir, or open the one of --lab-dir. */
static int lab_get(const drill_options *o, const char *script, drill_cell *lab,
                   const char *dir, char *err, size_t err_size)
{
    if (o->lab_dir != NULL) {
        if (drill_lab_open(lab, script, o->lab_dir, o->build_dir, DRILL_LAB_CELL, err,
                           err_size) != 0)
            return -1;
        drill_progress("using the lab in %s (cell %s through %s)", lab->dir, lab->name,
                       lab->urls[0]);
        return 0;
    }
    drill_progress("starting the two-region lab in %s (lab.sh up; about 35-80 s)", dir);
    if (drill_lab_up(lab, script, dir, o->build_dir, DRILL_LAB_CELL, err, err_size) != 0) {
        /* Partly up: remember enough to take it down. */
        snprintf(lab->dir, sizeof lab->dir, "%s", dir);
        snprintf(lab->script, sizeof lab->script, "%s", script);
        snprintf(lab->build, sizeof lab->build, "%s", o->build_dir);
        snprintf(lab->log_path, sizeof lab->log_path, "%s.drill.log", dir);
        return -1;
    }
    return 0;
}

static void lab_down(drill_cell *lab)
{
    char err[1024];
    drill_progress("taking the lab down");
    const char *down[] = {"down"};
    if (drill_lab_do(lab, down, 1, DRILL_LAB_CMD_TIMEOUT_MS, err, sizeof err) != 0)
        drill_progress("lab down: %s", err);
}

int drill_run_lab(const drill_options *o, json_t **report)
{
    mrd_assert(o->lab_dir == NULL || o->runs == 1);
    *report = NULL;
    drill_session session;
    drill_session_begin(&session);
    char err[1024] = "";
    const char *error = NULL;
    char tmpdir[64] = "";
    char script[DRILL_PATH_MAX];
    char last_dir[DRILL_PATH_MAX] = "";
    drill_cell *lab = calloc(1, sizeof *lab);
    drill_run_result *runs = calloc((size_t)o->runs, sizeof *runs);
    lab_measure *ms = calloc((size_t)o->runs, sizeof *ms);
    size_t done = 0;
    drill_env env = {.o = o, .cell = lab, .rto_limit_ms = DRILL_REGION_RTO_LIMIT_MS};
    if (lab == NULL || runs == NULL || ms == NULL) {
        error = "out of memory";
        goto out;
    }
    if (drill_locate_cell_script(o->source_dir, script, sizeof script, err, sizeof err) != 0) {
        error = err;
        goto out;
    }
    /* lab.sh sits beside cell.sh. */
    char *slash = strrchr(script, '/');
    mrd_assert(slash != NULL);
    snprintf(slash + 1, sizeof script - (size_t)(slash + 1 - script), "lab.sh");
    if (access(script, R_OK) != 0) {
        drill_say(err, sizeof err, "cannot find %s", script);
        error = err;
        goto out;
    }
    if (o->lab_dir == NULL) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/meridian-drill-lab-XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            drill_say(err, sizeof err, "cannot create a directory under /tmp: %s",
                      strerror(errno));
            tmpdir[0] = '\0';
            error = err;
            goto out;
        }
        chmod(tmpdir, 0755); /* PostgreSQL runs as postgres and must reach it */
    }
    for (int i = 0; i < o->runs && !drill_interrupted(); i++) {
        char dir[sizeof tmpdir + 16];
        /* The lab in TMP/lab (TMP/lab-N for later runs); lab.sh empties its DIR. */
        if (i == 0)
            snprintf(dir, sizeof dir, "%s/lab", tmpdir);
        else
            snprintf(dir, sizeof dir, "%s/lab-%d", tmpdir, i + 1);
        memset(lab, 0, sizeof *lab);
        int up = lab_get(o, script, lab, dir, err, sizeof err);
        snprintf(last_dir, sizeof last_dir, "%s", lab->dir[0] ? lab->dir : dir);
        if (up != 0) {
            if (o->lab_dir == NULL) {
                if (!o->keep)
                    drill_show_log_tail(lab->log_path[0] ? lab->log_path : NULL, "");
                lab_down(lab);
            }
            error = err;
            goto out;
        }
        env.etcd = etcd_client_create(lab->etcd, LAB_ETCD_TIMEOUT_MS, err, sizeof err);
        drill_leader l;
        char dsn[256];
        if (env.etcd == NULL) {
            error = err;
        } else if (drill_current_leader(env.etcd, lab->name, &l, LAB_LEADER_TRIES) != 0) {
            drill_say(err, sizeof err, "cell %s of the lab in %s has no leader", lab->name,
                      lab->dir);
            error = err;
        } else {
            drill_leader_dsn(&l, dsn, sizeof dsn);
            if (drill_cell_apikey(lab, dsn, LAB_CUSTOMER, env.api_key, sizeof env.api_key, err,
                                  sizeof err) != 0) {
                error = err;
            } else {
                drill_progress("run %d/%d: cell %s: leader %s (epoch %" PRId64
                               "), global entry %s",
                               i + 1, o->runs, lab->name, l.node, l.epoch, lab->urls[0]);
                run_lab_once(&env, i + 1, &runs[i], &ms[i]);
                done++;
            }
        }
        etcd_client_free(env.etcd);
        env.etcd = NULL;
        if (o->lab_dir == NULL)
            lab_down(lab);
        if (error != NULL)
            goto out;
    }
    if (drill_interrupted())
        error = "interrupted";

out:
    *report = drill_report_json(o->scenario, runs, done, o->runs, error, false);
    if (runs != NULL && ms != NULL)
        lab_report(*report, runs, ms, done, last_dir[0] ? last_dir : tmpdir);
    if (tmpdir[0]) {
        if (o->keep)
            drill_progress("kept the (stopped) labs' directory %s", tmpdir);
        else
            drill_rmtree(tmpdir);
    }
    free(runs);
    free(ms);
    free(lab);
    drill_session_end(&session);
    if (*report != NULL && json_is_true(json_object_get(*report, "pass")))
        return DRILL_EXIT_PASS;
    return DRILL_EXIT_FAIL;
}
