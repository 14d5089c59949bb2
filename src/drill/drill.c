/*
 * drill.c — one failover drill from start to end: get a cell (start one
 * or use --cell-dir), then per run: healthy cell -> workload warm-up ->
 * t0, fault on the leader -> wait for acknowledged writes on the new
 * primary -> stop the workload -> restore the faulted node -> healthy
 * cell -> measure (etcd history) and check (the leader's database) ->
 * judge. Finally the report, and the cell taken down if the drill made
 * it.
 *
 * Measuring RTO: t0 is taken just before cell.sh injects the fault and
 * t_injected when it returns. The first acknowledged transfer "on the
 * new primary" is the earliest answer given after the node serving
 * writes now began to: the new leader took the key (failover), or, when
 * the keeper restarted PostgreSQL in place (db-crash), the new postmaster
 * started. Before that moment the old primary may still commit: an
 * isolated one until it fences itself, and the orphaned backends of a
 * killed postmaster for a moment (with a synchronous standby's
 * acknowledgement); neither is recovery. After it, the old primary is
 * dead or fenced (a new postmaster cannot start while orphaned backends
 * hold its shared memory), so the answer came through the new one — also
 * for a request held by meridiand across the failover. When neither
 * moment is known, the earliest answer to an attempt SENT after
 * t_injected counts. RTO = that answer's time - t0. While the run is
 * going, the same rule with the moment the drill saw the new epoch or
 * the restarted postmaster decides when writes are back; the reported
 * number is computed afterwards from the logs.
 */
#include "drill/drill.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/mrd_assert.h"
#include "drill/cell.h"
#include "drill/check.h"
#include "drill/report.h"
#include "drill/workload.h"

#ifndef MERIDIAN_SOURCE_DIR
#define MERIDIAN_SOURCE_DIR ""
#endif

#define DRILL_ETCD_TIMEOUT_MS 2000
#define DRILL_POLL_MS 100
#define DRILL_PROGRESS_EVERY_MS 1000
/* How often, after the fault, the drill looks for a new epoch or a
 * restarted PostgreSQL. */
#define DRILL_LOOK_EVERY_MS 300
#define DRILL_CUSTOMER "drill"
#define DRILL_HISTORY_EVENTS_MAX 64
#define DRILL_LEADER_TRIES 50

static volatile sig_atomic_t interrupted;
static int64_t started_mono_ms;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t drill_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool drill_interrupted(void)
{
    return interrupted != 0;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* snprintf into a fixed buffer where truncating a long message is fine
 * (paths and nested errors); a function so the compiler does not warn
 * about the truncation it cannot rule out. */
static void say(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

void drill_progress(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    double t = started_mono_ms ? (double)(mono_ms() - started_mono_ms) / 1000.0 : 0.0;
    fprintf(stderr, "[drill %6.1fs] %s\n", t, line);
    fflush(stderr);
}

/* Sleep ms in slices; returns early (false) on interruption. */
static bool nap(int64_t ms)
{
    int64_t end = mono_ms() + ms;
    while (!interrupted) {
        int64_t left = end - mono_ms();
        if (left <= 0)
            return true;
        int64_t step = left < 50 ? left : 50;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = step * 1000000L};
        nanosleep(&ts, NULL);
    }
    return false;
}

int drill_scenario_parse(const char *name, drill_scenario *out)
{
    if (strcmp(name, "node-loss") == 0)
        *out = DRILL_NODE_LOSS;
    else if (strcmp(name, "db-crash") == 0)
        *out = DRILL_DB_CRASH;
    else if (strcmp(name, "isolate-primary") == 0)
        *out = DRILL_ISOLATE_PRIMARY;
    else if (strcmp(name, "region-loss") == 0)
        *out = DRILL_REGION_LOSS;
    else if (strcmp(name, "az-loss") == 0)
        *out = DRILL_AZ_LOSS;
    else
        return -1;
    return 0;
}

const char *drill_scenario_name(drill_scenario s)
{
    switch (s) {
    case DRILL_NODE_LOSS:
        return "node-loss";
    case DRILL_DB_CRASH:
        return "db-crash";
    case DRILL_ISOLATE_PRIMARY:
        return "isolate-primary";
    case DRILL_REGION_LOSS:
        return "region-loss";
    case DRILL_AZ_LOSS:
        return "az-loss";
    }
    return "?";
}

bool drill_scenario_needs_lab(drill_scenario s)
{
    return s == DRILL_REGION_LOSS || s == DRILL_AZ_LOSS;
}

/* The cell.sh verb that injects the fault, and the one that undoes it
 * (NULL: the keeper restarts its own PostgreSQL). */
static const char *fault_verb(drill_scenario s)
{
    switch (s) {
    case DRILL_NODE_LOSS:
        return "kill-node";
    case DRILL_DB_CRASH:
        return "kill-db";
    case DRILL_ISOLATE_PRIMARY:
        return "isolate";
    case DRILL_REGION_LOSS:
        return "region-loss";
    case DRILL_AZ_LOSS:
        return "zone-loss";
    }
    return "?";
}

static const char *restore_verb(drill_scenario s)
{
    switch (s) {
    case DRILL_NODE_LOSS:
        return "start-node";
    case DRILL_DB_CRASH:
        return NULL;
    case DRILL_ISOLATE_PRIMARY:
        return "heal";
    case DRILL_REGION_LOSS:
    case DRILL_AZ_LOSS:
        return NULL; /* the lab is taken down afterwards */
    }
    return NULL;
}

void drill_options_init(drill_options *o)
{
    memset(o, 0, sizeof *o);
    o->scenario = DRILL_NODE_LOSS;
    o->runs = 1;
    o->clients = DRILL_CLIENTS_DEFAULT;
    o->readers = DRILL_READERS_DEFAULT;
    o->accounts = DRILL_ACCOUNTS_DEFAULT;
}

int drill_locate_cell_script(const char *source_dir, char *out, size_t out_size, char *err,
                             size_t err_size)
{
    const char *env = getenv("MERIDIAN_SOURCE_DIR");
    const char *candidates[3] = {source_dir, env, MERIDIAN_SOURCE_DIR};
    for (size_t i = 0; i < 3; i++) {
        if (candidates[i] == NULL || candidates[i][0] == '\0')
            continue;
        int n = snprintf(out, out_size, "%s/scripts/cell.sh", candidates[i]);
        if (n > 0 && (size_t)n < out_size && access(out, R_OK) == 0)
            return 0;
    }
    snprintf(err, err_size,
             "cannot find scripts/cell.sh (looked in $MERIDIAN_SOURCE_DIR=%s and the source "
             "tree this binary was built from, %s); set MERIDIAN_SOURCE_DIR to a Meridian "
             "source tree",
             env ? env : "(unset)", MERIDIAN_SOURCE_DIR[0] ? MERIDIAN_SOURCE_DIR : "(none)");
    return -1;
}

/* The leader key, retried briefly (a failover may be under way). */
static int current_leader(etcd_client *etcd, const char *cell, drill_leader *l, int tries)
{
    for (int i = 0; i < tries && !interrupted; i++) {
        if (drill_etcd_leader(etcd, cell, l) == 0 && l->present)
            return 0;
        nap(DRILL_POLL_MS * 2);
    }
    return -1;
}

static void leader_dsn(const drill_leader *l, char *out, size_t size)
{
    snprintf(out, size, "host=%s port=%d user=postgres dbname=meridian connect_timeout=5",
             l->host, l->port);
}

/* The first acknowledgement on the new primary (see the header comment)
 * and how many answers came after the fault. */
static void measure_rto(const workload *w, drill_run_result *r, int64_t serving_since_ms)
{
    size_t n;
    const workload_event *acked = workload_acked(w, &n);
    int64_t first = -1;
    r->acked_after_fault = 0;
    for (size_t i = 0; i < n; i++) {
        const workload_event *e = &acked[i];
        if (e->sent_ms >= r->injected_ms)
            r->acked_after_fault++;
        if (serving_since_ms > 0 ? e->answer_ms < serving_since_ms
                                 : e->sent_ms < r->injected_ms)
            continue;
        if (first < 0 || e->answer_ms < first) {
            first = e->answer_ms;
            r->rto_ack = *e;
            r->has_rto_ack = true;
        }
    }
    r->recovered = first >= 0 && first - r->t0_ms < DRILL_RTO_LIMIT_MS;
    r->rto_ms = first >= 0 ? first - r->t0_ms : -1;
}

typedef struct drill_env {
    const drill_options *o;
    drill_cell *cell;
    etcd_client *etcd;
    char api_key[256];
    int64_t rto_limit_ms; /* give up waiting for writes after this */
} drill_env;

/* Has a node begun serving writes since the fault: a new epoch (seen in
 * etcd) or, for db-crash, the old leader's PostgreSQL restarted? Returns
 * the moment (wall ms) from which acknowledgements count, 0 if not yet. */
static int64_t serving_since_live(drill_env *env, drill_run_result *r, const char *dsn_before)
{
    int64_t epoch = 0, now = drill_wall_ms();
    if (drill_etcd_epoch(env->etcd, env->cell->name, &epoch) == 0 && epoch > r->epoch_before) {
        drill_progress("run %d: epoch %" PRId64 " promoted (%.1f s after the fault)", r->index,
                       epoch, (double)(now - r->t0_ms) / 1000.0);
        return now;
    }
    int64_t started = 0;
    if (env->o->scenario == DRILL_DB_CRASH && drill_db_started_ms(dsn_before, &started) == 0 &&
        started > r->t0_ms) {
        drill_progress("run %d: PostgreSQL of %s restarted (%.1f s after the fault)", r->index,
                       r->leader_before, (double)(started - r->t0_ms) / 1000.0);
        return started > r->injected_ms ? started : r->injected_ms;
    }
    return 0;
}

/* Wait, after the fault, until writes have been acknowledged on the new
 * primary for DRILL_SETTLE_MS, or DRILL_RTO_LIMIT_MS have passed. */
static void wait_recovery(drill_env *env, workload *w, drill_run_result *r,
                          const char *dsn_before)
{
    bool watching = false;
    int64_t last_progress = 0, last_look = 0;
    int64_t acked_at_fault = workload_acked_now(w);
    for (;;) {
        int64_t now = drill_wall_ms();
        if (!watching && now - last_look >= DRILL_LOOK_EVERY_MS) {
            last_look = now;
            int64_t since = serving_since_live(env, r, dsn_before);
            if (since > 0) {
                workload_watch_recovery(w, since);
                watching = true;
            }
        }
        int64_t first = watching ? workload_first_recovered_ms(w) : 0;
        if (first > 0 && now - first >= DRILL_SETTLE_MS)
            break;
        if (now - r->t0_ms >= env->rto_limit_ms) {
            drill_progress("run %d: no acknowledged write on a new primary %d s after the "
                           "fault: giving up",
                           r->index, (int)(env->rto_limit_ms / 1000));
            break;
        }
        if (interrupted)
            break;
        if (now - last_progress >= DRILL_PROGRESS_EVERY_MS) {
            last_progress = now;
            if (first > 0)
                drill_progress("run %d: %.1f s after the fault: writes back since %.3f s, %" PRId64
                               " acknowledged since the fault",
                               r->index, (double)(now - r->t0_ms) / 1000.0,
                               (double)(first - r->t0_ms) / 1000.0,
                               workload_acked_now(w) - acked_at_fault);
            else
                drill_progress("run %d: %.1f s after the fault: waiting for writes (%" PRId64
                               " acknowledged since the fault)",
                               r->index, (double)(now - r->t0_ms) / 1000.0,
                               workload_acked_now(w) - acked_at_fault);
        }
        nap(DRILL_POLL_MS);
    }
    r->waited_ms = drill_wall_ms() - r->t0_ms;
}

/* After the run: history events since epoch_before give detection and
 * promotion; returns the new leader's acquisition time (0 if none). */
static int64_t measure_history(drill_env *env, drill_run_result *r)
{
    drill_event ev[DRILL_HISTORY_EVENTS_MAX];
    size_t n = 0;
    r->detection_ms = r->promotion_ms = -1;
    if (drill_etcd_history_after(env->etcd, env->cell->name, r->epoch_before, ev,
                                 DRILL_HISTORY_EVENTS_MAX, &n) != 0 ||
        n == 0)
        return 0;
    r->promotions = n;
    const drill_event *e = &ev[0];
    if (e->leader_lost_at_ms > 0)
        r->detection_ms = e->leader_lost_at_ms - r->t0_ms;
    if (e->promoted_at_ms > 0)
        r->promotion_ms = e->promoted_at_ms - r->t0_ms;
    return e->acquired_at_ms;
}

static void run_once(drill_env *env, int index, drill_run_result *r)
{
    const drill_options *o = env->o;
    drill_cell *cell = env->cell;
    char err[1024] = "";
    workload *w = NULL;
    memset(r, 0, sizeof *r);
    r->index = index;
    r->detection_ms = r->promotion_ms = r->rto_ms = -1;
    snprintf(r->fault, sizeof r->fault, "%s", fault_verb(o->scenario));

    drill_progress("run %d/%d: waiting for a healthy cell", index, o->runs);
    if (drill_cell_wait_healthy(cell, DRILL_HEALTHY_WAIT_S) != 0) {
        say(r->error, sizeof r->error,
                 "the cell was not healthy before the run (no leader with every standby "
                 "synchronous within %d s); see %s and %s/*.keeper.log",
                 DRILL_HEALTHY_WAIT_S, cell->log_path, cell->dir);
        return;
    }
    drill_leader before;
    if (current_leader(env->etcd, cell->name, &before, DRILL_LEADER_TRIES) != 0 ||
        drill_etcd_epoch(env->etcd, cell->name, &r->epoch_before) != 0) {
        say(r->error, sizeof r->error, "cannot read the leader from etcd at %s", cell->etcd);
        return;
    }
    snprintf(r->leader_before, sizeof r->leader_before, "%s", before.node);

    workload_config wc = {.api_key = env->api_key, .writers = o->clients,
                          .readers = o->readers, .accounts = o->accounts,
                          .url_count = cell->url_count};
    for (size_t i = 0; i < cell->url_count; i++)
        wc.urls[i] = cell->urls[i];
    w = workload_create(&wc, err, sizeof err);
    if (w == NULL || workload_setup(w, err, sizeof err) != 0 ||
        workload_start(w, err, sizeof err) != 0) {
        say(r->error, sizeof r->error, "workload: %s", err);
        goto out;
    }
    r->workload_ran = true;
    drill_progress("run %d/%d: workload running (%d writers, %d readers, %d accounts, %zu "
                   "meridiand); warm-up %d ms",
                   index, o->runs, o->clients, o->readers, o->accounts, cell->url_count,
                   DRILL_WARMUP_MS);
    nap(DRILL_WARMUP_MS);
    if (interrupted) {
        say(r->error, sizeof r->error, "interrupted");
        workload_stop(w, true);
        goto stopped;
    }

    /* The fault. */
    drill_progress("run %d/%d: %s on the leader %s (epoch %" PRId64 ", %" PRId64
                   " transfers acknowledged so far)",
                   index, o->runs, r->fault, r->leader_before, r->epoch_before,
                   workload_acked_now(w));
    r->t0_ms = drill_wall_ms();
    int frc = drill_cell_do(cell, r->fault, r->leader_before, err, sizeof err);
    r->injected_ms = drill_wall_ms();
    if (frc != 0) {
        say(r->error, sizeof r->error, "fault injection: %s", err);
        workload_stop(w, false);
        goto stopped;
    }
    r->fault_injected = true;
    char dsn_before[256];
    leader_dsn(&before, dsn_before, sizeof dsn_before);
    wait_recovery(env, w, r, dsn_before);
    drill_progress("run %d/%d: stopping the workload", index, o->runs);
    workload_stop(w, interrupted != 0);
    if (interrupted)
        say(r->error, sizeof r->error, "interrupted");

stopped:
    workload_stats_get(w, &r->ws);
    /* Undo the fault, whatever happened, so the next run (or the
     * operator's cell) is whole again. */
    const char *undo = restore_verb(o->scenario);
    if (r->fault_injected && undo != NULL) {
        drill_progress("run %d/%d: %s %s", index, o->runs, undo, r->leader_before);
        if (drill_cell_do(cell, undo, r->leader_before, err, sizeof err) != 0 &&
            r->error[0] == '\0')
            say(r->error, sizeof r->error, "restoring %s: %s", r->leader_before, err);
    }
    if (!interrupted) {
        drill_progress("run %d/%d: waiting for one primary and streaming synchronous standbys",
                       index, o->runs);
        r->end_healthy = drill_cell_wait_healthy(cell, DRILL_HEALTHY_WAIT_S) == 0;
        if (!r->end_healthy)
            drill_progress("run %d/%d: the cell did not become healthy within %d s", index,
                           o->runs, DRILL_HEALTHY_WAIT_S);
    }

    /* Measure and check. The node serving writes now began to at the new
     * leader's acquisition, or (restart in place) its postmaster's start. */
    r->serving_since_ms = measure_history(env, r);
    drill_leader after;
    bool have_after =
        current_leader(env->etcd, cell->name, &after, interrupted ? 1 : DRILL_LEADER_TRIES) == 0;
    char dsn[256] = "";
    if (have_after)
        leader_dsn(&after, dsn, sizeof dsn);
    int64_t started = 0;
    if (r->serving_since_ms == 0 && have_after && drill_db_started_ms(dsn, &started) == 0 &&
        started > r->t0_ms)
        r->serving_since_ms = started;
    if (r->fault_injected)
        measure_rto(w, r, r->serving_since_ms);
    if (have_after) {
        snprintf(r->leader_after, sizeof r->leader_after, "%s", after.node);
        r->epoch_after = after.epoch;
        drill_progress("run %d/%d: checking %" PRId64 " acknowledged transfers in %s's database",
                       index, o->runs, r->ws.acked, after.node);
        if (drill_check_db(dsn, w, &r->db, err, sizeof err) == 0)
            r->db_checked = true;
        else if (r->error[0] == '\0')
            say(r->error, sizeof r->error, "database check: %s", err);
    } else if (r->error[0] == '\0') {
        say(r->error, sizeof r->error, "no leader after the run: cannot check the database");
    }
out:
    drill_report_judge(r);
    if (r->fault_injected) {
        char rto[32] = "-", det[32] = "-";
        if (r->rto_ms >= 0)
            snprintf(rto, sizeof rto, "%.3f s", (double)r->rto_ms / 1000.0);
        if (r->detection_ms >= 0)
            snprintf(det, sizeof det, "%.3f s", (double)r->detection_ms / 1000.0);
        drill_progress("run %d/%d: %s: %s -> %s, detection %s, RTO %s, %" PRId64
                       " acknowledged, %" PRId64 " lost, %" PRId64 " invariant violations",
                       index, o->runs, r->pass ? "pass" : "FAIL", r->leader_before,
                       r->leader_after[0] ? r->leader_after : "?", det, rto, r->ws.acked,
                       r->db.acked_missing, r->invariant_violations);
    } else {
        drill_progress("run %d/%d: FAIL: %s", index, o->runs, r->error);
    }
    workload_free(w);
}

/* Before a drill-made cell is removed after a failure, show the end of
 * what cell.sh said (its log goes with the directory). */
static void show_log_tail(const char *log_path, const char *dir)
{
    char path[DRILL_PATH_MAX];
    if (log_path != NULL)
        snprintf(path, sizeof path, "%s", log_path);
    else if (dir[0] != '\0')
        snprintf(path, sizeof path, "%.*s/drill.log", DRILL_PATH_MAX - 16, dir);
    else
        return;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    enum { LINES = 20, LINE_BYTES = 512 };
    static char ring[LINES][LINE_BYTES];
    size_t n = 0;
    while (fgets(ring[n % LINES], LINE_BYTES, f) != NULL)
        n++;
    fclose(f);
    fprintf(stderr, "[drill] last lines of %s (removed with the cell; --keep keeps it):\n", path);
    for (size_t i = n > LINES ? n - LINES : 0; i < n; i++)
        fprintf(stderr, "  | %s", ring[i % LINES]);
}

/* ---- Lab drills (region-loss, az-loss): the two-region lab of
 * scripts/lab.sh.
 *
 * One run against cell DRILL_LAB_CELL through the global entry's port
 * for the cell: warm-up, t0, `lab fault region-loss <home region>` (or,
 * az-loss, `lab fault zone-loss <home region> <the leader's zone>`), wait
 * (bounded by DRILL_REGION_RTO_LIMIT_MS) until writes are acknowledged on
 * the new primary (the DR standby, promoted by the keepers' automatic
 * policy), stop, measure, check the new primary's database. A regional
 * failover may lose acknowledged transfers (asynchronous replication to
 * the DR standby), so acked_missing is measured and judged against the
 * cell's loss bound (topology failover.max_loss_s) instead of counting as
 * an invariant violation; every other invariant must hold. az-loss fails
 * over inside the home region to a synchronous standby: no loss allowed
 * (bound 0, a missing transfer is a violation), and the new leader must
 * be in the home region. */

/* Extra numbers of a lab run, for the report's region_* fields. */
typedef struct lab_measure {
    int64_t acks_before;    /* acknowledged between workload start and t0 */
    int64_t span_before_ms; /* that window */
    int64_t lost;           /* acknowledged, missing on the new primary */
    int64_t loss_ms;        /* lost / ack rate before the fault; -1 unknown */
    int64_t bound_ms;       /* the cell's loss bound */
    char event_kind[32];    /* kind of the first history event after the fault */
    char zone_lost[32];     /* az-loss: the zone lost */
    char region_after[32];  /* the new leader's region */
} lab_measure;

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

static void run_region(drill_env *env, drill_run_result *r, lab_measure *m)
{
    const drill_options *o = env->o;
    drill_cell *lab = env->cell;
    char err[1024] = "";
    workload *w = NULL;
    memset(r, 0, sizeof *r);
    memset(m, 0, sizeof *m);
    r->index = 1;
    r->detection_ms = r->promotion_ms = r->rto_ms = m->loss_ms = -1;
    bool az = o->scenario == DRILL_AZ_LOSS;
    const char *sname = drill_scenario_name(o->scenario);
    m->bound_ms = az ? 0 : lab_loss_bound_ms(lab);
    snprintf(r->fault, sizeof r->fault, "%s", fault_verb(o->scenario));

    drill_leader before;
    if (current_leader(env->etcd, lab->name, &before, DRILL_LEADER_TRIES) != 0 ||
        drill_etcd_epoch(env->etcd, lab->name, &r->epoch_before) != 0) {
        say(r->error, sizeof r->error, "cannot read cell %s's leader from etcd at %s",
            lab->name, lab->etcd);
        goto out;
    }
    snprintf(r->leader_before, sizeof r->leader_before, "%s", before.node);
    char region_before[32] = "";
    if (drill_lab_node_place(lab, before.node, region_before, sizeof region_before,
                             m->zone_lost, sizeof m->zone_lost) != 0 ||
        strcmp(region_before, DRILL_LAB_HOME_REGION) != 0) {
        say(r->error, sizeof r->error,
            "cell %s's leader %s is not in its home region %s (region \"%s\"): the lab is "
            "not in its starting state",
            lab->name, before.node, DRILL_LAB_HOME_REGION, region_before);
        goto out;
    }
    if (!az)
        m->zone_lost[0] = '\0';

    workload_config wc = {.api_key = env->api_key, .writers = o->clients,
                          .readers = o->readers, .accounts = o->accounts, .url_count = 1};
    wc.urls[0] = lab->urls[0];
    w = workload_create(&wc, err, sizeof err);
    if (w == NULL || workload_setup(w, err, sizeof err) != 0 ||
        workload_start(w, err, sizeof err) != 0) {
        say(r->error, sizeof r->error, "workload: %s", err);
        goto out;
    }
    int64_t start_ms = drill_wall_ms();
    r->workload_ran = true;
    drill_progress("%s: workload on cell %s through %s (%d writers, %d readers); "
                   "warm-up %d ms",
                   sname, lab->name, lab->urls[0], o->clients, o->readers, DRILL_WARMUP_MS);
    nap(DRILL_WARMUP_MS);
    if (interrupted) {
        say(r->error, sizeof r->error, "interrupted");
        workload_stop(w, true);
        goto stopped;
    }

    drill_progress("%s: lab fault %s %s %s (leader %s, epoch %" PRId64 ", %" PRId64
                   " transfers acknowledged so far)",
                   sname, r->fault, DRILL_LAB_HOME_REGION, m->zone_lost, r->leader_before,
                   r->epoch_before, workload_acked_now(w));
    r->t0_ms = drill_wall_ms();
    const char *fault[] = {"fault", r->fault, DRILL_LAB_HOME_REGION, m->zone_lost};
    int frc = drill_lab_do(lab, fault, az ? 4 : 3, DRILL_LAB_CMD_TIMEOUT_MS, err, sizeof err);
    r->injected_ms = drill_wall_ms();
    if (frc != 0) {
        say(r->error, sizeof r->error, "fault injection: %s", err);
        workload_stop(w, false);
        goto stopped;
    }
    r->fault_injected = true;
    char dsn_before[256];
    leader_dsn(&before, dsn_before, sizeof dsn_before);
    wait_recovery(env, w, r, dsn_before);
    drill_progress("%s: stopping the workload", sname);
    workload_stop(w, interrupted != 0);
    if (interrupted)
        say(r->error, sizeof r->error, "interrupted");

stopped:
    workload_stats_get(w, &r->ws);
    r->serving_since_ms = measure_history(env, r);
    drill_event ev[DRILL_HISTORY_EVENTS_MAX];
    size_t nev = 0;
    if (drill_etcd_history_after(env->etcd, lab->name, r->epoch_before, ev,
                                 DRILL_HISTORY_EVENTS_MAX, &nev) == 0 &&
        nev > 0)
        snprintf(m->event_kind, sizeof m->event_kind, "%s", ev[0].kind);
    if (r->fault_injected) {
        measure_rto(w, r, r->serving_since_ms);
        r->recovered = r->has_rto_ack && r->rto_ms < DRILL_REGION_RTO_LIMIT_MS;
    }
    /* The ack rate before the fault (funding transfers answered before
     * start_ms do not count). */
    size_t nacked = 0;
    const workload_event *acked = workload_acked(w, &nacked);
    for (size_t i = 0; i < nacked && r->t0_ms > 0; i++)
        if (acked[i].answer_ms >= start_ms && acked[i].answer_ms < r->t0_ms)
            m->acks_before++;
    m->span_before_ms = r->t0_ms > start_ms ? r->t0_ms - start_ms : 0;

    drill_leader after;
    bool have_after =
        current_leader(env->etcd, lab->name, &after, interrupted ? 1 : DRILL_LEADER_TRIES) == 0;
    if (have_after) {
        snprintf(r->leader_after, sizeof r->leader_after, "%s", after.node);
        r->epoch_after = after.epoch;
        /* The lab is not made whole again (it is taken down): "healthy"
         * here means the cell has a new leader, not the one lost. */
        char zone_after[32];
        if (drill_lab_node_place(lab, after.node, m->region_after, sizeof m->region_after,
                                 zone_after, sizeof zone_after) != 0)
            m->region_after[0] = '\0';
        r->end_healthy = strcmp(after.node, r->leader_before) != 0 &&
                         (!az || strcmp(m->region_after, DRILL_LAB_HOME_REGION) == 0);
        char dsn[256];
        leader_dsn(&after, dsn, sizeof dsn);
        drill_progress("%s: checking %" PRId64 " acknowledged transfers in %s's database",
                       sname, r->ws.acked, after.node);
        if (drill_check_db(dsn, w, &r->db, err, sizeof err) == 0)
            r->db_checked = true;
        else if (r->error[0] == '\0')
            say(r->error, sizeof r->error, "database check: %s", err);
    } else if (r->error[0] == '\0') {
        say(r->error, sizeof r->error, "cell %s has no leader after the fault", lab->name);
    }
out:
    drill_report_judge(r);
    /* Acknowledged transfers lost in a regional failover are the RPO,
     * judged against the bound, not an invariant violation. */
    if (r->db_checked) {
        m->lost = r->db.acked_missing;
        if (!az) /* az-loss: a lost transfer stays a violation */
            r->invariant_violations -= r->db.acked_missing;
        if (m->acks_before > 0)
            m->loss_ms = m->lost * m->span_before_ms / m->acks_before;
        else if (m->lost == 0)
            m->loss_ms = 0;
    }
    r->pass = r->error[0] == '\0' && r->fault_injected && r->recovered && r->end_healthy &&
              r->db_checked && r->workload_ran && r->invariant_violations == 0 &&
              r->ws.acked > 0 && m->loss_ms >= 0 && m->loss_ms <= m->bound_ms;
    if (r->fault_injected)
        drill_progress("%s: %s: %s -> %s, detection %.3f s, promotion %.3f s, RTO "
                       "%.3f s, %" PRId64 " acknowledged, %" PRId64 " lost (%.3f s of "
                       "traffic, bound %.3f s), %" PRId64 " invariant violations",
                       sname, r->pass ? "pass" : "FAIL", r->leader_before,
                       r->leader_after[0] ? r->leader_after : "?",
                       (double)r->detection_ms / 1000.0, (double)r->promotion_ms / 1000.0,
                       (double)r->rto_ms / 1000.0, r->ws.acked, m->lost,
                       (double)m->loss_ms / 1000.0, (double)m->bound_ms / 1000.0,
                       r->invariant_violations);
    else
        drill_progress("%s: FAIL: %s", sname, r->error);
    workload_free(w);
}

static json_t *secs_or_null(int64_t ms)
{
    return ms >= 0 ? json_real((double)ms / 1000.0) : json_null();
}

/* Add the region_* summary fields to a report. */
static void lab_report(json_t *rep, const drill_run_result *r, const lab_measure *m,
                       const char *lab_dir)
{
    if (rep == NULL)
        return;
    json_object_set_new(rep, "lab", json_true());
    json_object_set_new(rep, "lab_dir", json_string(lab_dir));
    json_object_set_new(rep, "cell", json_string(DRILL_LAB_CELL));
    if (m->zone_lost[0] != '\0')
        json_object_set_new(rep, "zone_lost", json_string(m->zone_lost));
    else
        json_object_set_new(rep, "region_lost", json_string(DRILL_LAB_HOME_REGION));
    json_object_set_new(rep, "leader_region_after",
                        m->region_after[0] ? json_string(m->region_after) : json_null());
    json_object_set_new(rep, "region_rto_s", secs_or_null(r->recovered ? r->rto_ms : -1));
    json_object_set_new(rep, "region_rto_limit_s",
                        json_real(DRILL_REGION_RTO_LIMIT_MS / 1000.0));
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
    json_object_set_new(rep, "rto_limit_s", json_real(DRILL_REGION_RTO_LIMIT_MS / 1000.0));
}

/* drill_run for the lab scenarios. */
static int drill_run_lab(const drill_options *o, json_t **report)
{
    *report = NULL;
    started_mono_ms = mono_ms();
    interrupted = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    char err[1024] = "";
    const char *error = NULL;
    bool own = false, lab_up = false;
    char tmpdir[64] = "";
    char script[DRILL_PATH_MAX];
    drill_cell *lab = calloc(1, sizeof *lab);
    drill_run_result *run = calloc(1, sizeof *run);
    lab_measure m;
    memset(&m, 0, sizeof m);
    m.loss_ms = m.bound_ms = -1; /* unknown until run_region measures */
    size_t done = 0;
    drill_env env = {.o = o, .cell = lab, .rto_limit_ms = DRILL_REGION_RTO_LIMIT_MS};
    if (lab == NULL || run == NULL) {
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
        say(err, sizeof err, "cannot find %s", script);
        error = err;
        goto out;
    }
    if (o->lab_dir != NULL) {
        if (drill_lab_open(lab, script, o->lab_dir, o->build_dir, DRILL_LAB_CELL, err,
                           sizeof err) != 0) {
            error = err;
            goto out;
        }
        lab_up = true;
        drill_progress("using the lab in %s (cell %s through %s)", lab->dir, lab->name,
                       lab->urls[0]);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/meridian-drill-lab-XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            say(err, sizeof err, "cannot create a directory under /tmp: %s", strerror(errno));
            tmpdir[0] = '\0';
            error = err;
            goto out;
        }
        chmod(tmpdir, 0755); /* PostgreSQL runs as postgres and must reach it */
        own = true;
        /* The lab in TMP/lab (lab.sh empties its DIR), the log in TMP. */
        char labdir[sizeof tmpdir + 8];
        snprintf(labdir, sizeof labdir, "%s/lab", tmpdir);
        drill_progress("starting the two-region lab in %s (lab.sh up; about 35-80 s)", labdir);
        if (drill_lab_up(lab, script, labdir, o->build_dir, DRILL_LAB_CELL, err, sizeof err) !=
            0) {
            /* Partly up: take it down. */
            snprintf(lab->dir, sizeof lab->dir, "%s", labdir);
            snprintf(lab->script, sizeof lab->script, "%s", script);
            snprintf(lab->build, sizeof lab->build, "%s", o->build_dir);
            snprintf(lab->log_path, sizeof lab->log_path, "%s.drill.log", labdir);
            lab_up = true;
            error = err;
            goto out;
        }
        lab_up = true;
    }
    if (interrupted) {
        error = "interrupted";
        goto out;
    }
    env.etcd = etcd_client_create(lab->etcd, DRILL_ETCD_TIMEOUT_MS, err, sizeof err);
    if (env.etcd == NULL) {
        error = err;
        goto out;
    }
    drill_leader l;
    if (current_leader(env.etcd, lab->name, &l, DRILL_LEADER_TRIES) != 0) {
        say(err, sizeof err, "cell %s of the lab in %s has no leader", lab->name, lab->dir);
        error = err;
        goto out;
    }
    char dsn[256];
    leader_dsn(&l, dsn, sizeof dsn);
    if (drill_cell_apikey(lab, dsn, DRILL_CUSTOMER, env.api_key, sizeof env.api_key, err,
                          sizeof err) != 0) {
        error = err;
        goto out;
    }
    drill_progress("cell %s: leader %s (epoch %" PRId64 "), global entry %s", lab->name, l.node,
                   l.epoch, lab->urls[0]);
    run_region(&env, run, &m);
    done = 1;
    if (interrupted)
        error = "interrupted";

out:
    etcd_client_free(env.etcd);
    if (error != NULL && own && !o->keep)
        show_log_tail(lab != NULL && lab->log_path[0] ? lab->log_path : NULL, "");
    *report = drill_report_json(o->scenario, run, done, 1, error, false);
    if (lab != NULL && run != NULL)
        lab_report(*report, run, &m, lab->dir[0] ? lab->dir : tmpdir);
    if (own && lab_up) {
        drill_progress("taking the lab down");
        const char *down[] = {"down"};
        if (drill_lab_do(lab, down, 1, DRILL_LAB_CMD_TIMEOUT_MS, err, sizeof err) != 0)
            drill_progress("lab down: %s", err);
    }
    if (own && tmpdir[0]) {
        if (o->keep)
            drill_progress("kept the (stopped) lab's directory %s", tmpdir);
        else
            drill_rmtree(tmpdir);
    }
    free(run);
    free(lab);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (*report != NULL && json_is_true(json_object_get(*report, "pass")))
        return DRILL_EXIT_PASS;
    return DRILL_EXIT_FAIL;
}

int drill_run(const drill_options *o, json_t **report)
{
    mrd_assert(o->runs >= 1 && o->runs <= DRILL_RUNS_MAX);
    *report = NULL;
    if (drill_scenario_needs_lab(o->scenario))
        return drill_run_lab(o, report);
    started_mono_ms = mono_ms();
    interrupted = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    char err[1024] = "";
    const char *error = NULL;
    bool unavailable = false;
    bool own = false, cell_up = false;
    char tmpdir[64] = "";
    char script[DRILL_PATH_MAX];
    drill_cell *cell = calloc(1, sizeof *cell);
    drill_run_result *runs = calloc((size_t)o->runs, sizeof *runs);
    size_t done = 0;
    drill_env env = {.o = o, .cell = cell, .rto_limit_ms = DRILL_RTO_LIMIT_MS};
    if (cell == NULL || runs == NULL) {
        error = "out of memory";
        goto out;
    }
    if (drill_locate_cell_script(o->source_dir, script, sizeof script, err, sizeof err) != 0) {
        error = err;
        goto out;
    }
    bool isolate = o->scenario == DRILL_ISOLATE_PRIMARY;
    if (isolate && !(drill_cell_script_has(script, "isolate") &&
                     drill_cell_script_has(script, "heal") &&
                     drill_cell_script_has(script, "--netem"))) {
        say(err, sizeof err,
                 "not available: cell.sh has no isolate (%s lacks `isolate`/`heal` and `up "
                 "--netem`)",
                 script);
        error = err;
        unavailable = true;
        goto out;
    }
    if (o->cell_dir != NULL) {
        if (drill_cell_open(cell, script, o->cell_dir, err, sizeof err) != 0) {
            error = err;
            goto out;
        }
        cell_up = true;
        drill_progress("using the cell in %s (cell %s, nodes %zu, meridiand %zu)", cell->dir,
                       cell->name, cell->node_count, cell->url_count);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/meridian-drill-XXXXXX");
        if (mkdtemp(tmpdir) == NULL) {
            say(err, sizeof err, "cannot create a directory under /tmp: %s",
                     strerror(errno));
            tmpdir[0] = '\0';
            error = err;
            goto out;
        }
        chmod(tmpdir, 0755); /* PostgreSQL runs as postgres and must reach it */
        own = true;
        drill_progress("starting a cell in %s (etcd x3, 3 PostgreSQL nodes with keepers, %d "
                       "meridiand%s)",
                       tmpdir, DRILL_MERIDIAND_DEFAULT, isolate ? ", etcd links via netem" : "");
        if (drill_cell_up(cell, script, tmpdir, o->build_dir, DRILL_MERIDIAND_DEFAULT, isolate,
                          err, sizeof err) != 0) {
            cell_up = true; /* partly up: take it down */
            snprintf(cell->dir, sizeof cell->dir, "%s", tmpdir);
            snprintf(cell->script, sizeof cell->script, "%s", script);
            error = err;
            goto out;
        }
        cell_up = true;
    }
    if (interrupted) {
        error = "interrupted";
        goto out;
    }
    env.etcd = etcd_client_create(cell->etcd, DRILL_ETCD_TIMEOUT_MS, err, sizeof err);
    if (env.etcd == NULL) {
        error = err;
        goto out;
    }
    drill_progress("waiting for a healthy cell");
    drill_leader l;
    if (drill_cell_wait_healthy(cell, DRILL_HEALTHY_WAIT_S) != 0 ||
        current_leader(env.etcd, cell->name, &l, DRILL_LEADER_TRIES) != 0) {
        say(err, sizeof err, "the cell in %s is not healthy (no leader with synchronous "
                                  "standbys within %d s)",
                 cell->dir, DRILL_HEALTHY_WAIT_S);
        error = err;
        goto out;
    }
    char dsn[256];
    leader_dsn(&l, dsn, sizeof dsn);
    if (drill_cell_apikey(cell, dsn, DRILL_CUSTOMER, env.api_key, sizeof env.api_key, err,
                          sizeof err) != 0) {
        error = err;
        goto out;
    }
    drill_progress("cell %s healthy: leader %s (epoch %" PRId64 "), meridiand %s%s", cell->name,
                   l.node, l.epoch, cell->urls[0], cell->url_count > 1 ? ", ..." : "");
    for (int i = 0; i < o->runs && !interrupted; i++) {
        run_once(&env, i + 1, &runs[i]);
        done++;
    }
    if (interrupted)
        error = "interrupted";

out:
    etcd_client_free(env.etcd);
    if (error != NULL && own && !o->keep)
        show_log_tail(cell->log_path[0] ? cell->log_path : NULL, tmpdir);
    *report = drill_report_json(o->scenario, runs, done, o->runs, error, unavailable);
    if (own && cell_up) {
        if (o->keep) {
            drill_progress("keeping the cell in %s (stop it with: %s down %s)", tmpdir, script,
                           tmpdir);
        } else {
            drill_progress("taking the cell down");
            drill_cell_down(cell);
        }
    }
    if (own && tmpdir[0] && !o->keep)
        drill_rmtree(tmpdir);
    free(runs);
    free(cell);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (unavailable)
        return DRILL_EXIT_UNAVAILABLE;
    if (*report != NULL && json_is_true(json_object_get(*report, "pass")))
        return DRILL_EXIT_PASS;
    return DRILL_EXIT_FAIL;
}
