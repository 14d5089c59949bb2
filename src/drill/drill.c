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

#include "common/clock.h"
#include "common/mrd_assert.h"
#include "drill/run.h"

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

bool drill_interrupted(void)
{
    return interrupted != 0;
}

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void drill_session_begin(drill_session *s)
{
    started_mono_ms = clock_mono_ms();
    interrupted = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

void drill_session_end(const drill_session *s)
{
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
}

/* snprintf into a fixed buffer where truncating a long message is fine
 * (paths and nested errors); a function so the compiler does not warn
 * about the truncation it cannot rule out. */
void drill_say(char *dst, size_t size, const char *fmt, ...)
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
    double t = started_mono_ms ? (double)(clock_mono_ms() - started_mono_ms) / 1000.0 : 0.0;
    fprintf(stderr, "[drill %6.1fs] %s\n", t, line);
    fflush(stderr);
}

bool drill_nap(int64_t ms)
{
    int64_t end = clock_mono_ms() + ms;
    while (!interrupted) {
        int64_t left = end - clock_mono_ms();
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
    else if (strcmp(name, "db-failure") == 0)
        *out = DRILL_DB_FAILURE;
    else if (strcmp(name, "partition") == 0)
        *out = DRILL_PARTITION;
    else if (strcmp(name, "etcd-majority-loss") == 0)
        *out = DRILL_ETCD_MAJORITY_LOSS;
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
    case DRILL_DB_FAILURE:
        return "db-failure";
    case DRILL_PARTITION:
        return "partition";
    case DRILL_ETCD_MAJORITY_LOSS:
        return "etcd-majority-loss";
    }
    return "?";
}

bool drill_scenario_needs_lab(drill_scenario s)
{
    return s != DRILL_NODE_LOSS && s != DRILL_DB_CRASH && s != DRILL_ISOLATE_PRIMARY;
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
    case DRILL_AZ_LOSS:
    case DRILL_DB_FAILURE:
    case DRILL_PARTITION:
    case DRILL_ETCD_MAJORITY_LOSS:
        break; /* lab.c plans the lab's faults */
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
    case DRILL_DB_FAILURE:
    case DRILL_PARTITION:
    case DRILL_ETCD_MAJORITY_LOSS:
        return NULL; /* lab.c: the lab is taken down afterwards */
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

int drill_current_leader(etcd_client *etcd, const char *cell, drill_leader *l, int tries)
{
    for (int i = 0; i < tries && !interrupted; i++) {
        if (drill_etcd_leader(etcd, cell, l) == 0 && l->present)
            return 0;
        drill_nap(DRILL_POLL_MS * 2);
    }
    return -1;
}

void drill_leader_dsn(const drill_leader *l, char *out, size_t size)
{
    snprintf(out, size, "host=%s port=%d user=postgres dbname=meridian connect_timeout=5",
             l->host, l->port);
}

void drill_measure_rto(const workload *w, drill_run_result *r, int64_t serving_since_ms)
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

/* Has a node begun serving writes since the fault: a new epoch (seen in
 * etcd) or, for db-crash, the old leader's PostgreSQL restarted? Returns
 * the moment (wall ms) from which acknowledgements count, 0 if not yet. */
static int64_t serving_since_live(drill_env *env, drill_run_result *r, const char *dsn_before)
{
    int64_t epoch = 0, now = clock_wall_ms();
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

void drill_wait_recovery(drill_env *env, workload *w, drill_run_result *r,
                          const char *dsn_before)
{
    bool watching = false;
    int64_t last_progress = 0, last_look = 0;
    int64_t acked_at_fault = workload_acked_now(w);
    for (;;) {
        int64_t now = clock_wall_ms();
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
        drill_nap(DRILL_POLL_MS);
    }
    r->waited_ms = clock_wall_ms() - r->t0_ms;
}

int64_t drill_measure_history(drill_env *env, drill_run_result *r)
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
        drill_say(r->error, sizeof r->error,
                 "the cell was not healthy before the run (no leader with every standby "
                 "synchronous within %d s); see %s and %s/*.keeper.log",
                 DRILL_HEALTHY_WAIT_S, cell->log_path, cell->dir);
        return;
    }
    drill_leader before;
    if (drill_current_leader(env->etcd, cell->name, &before, DRILL_LEADER_TRIES) != 0 ||
        drill_etcd_epoch(env->etcd, cell->name, &r->epoch_before) != 0) {
        drill_say(r->error, sizeof r->error, "cannot read the leader from etcd at %s", cell->etcd);
        return;
    }
    snprintf(r->leader_before, sizeof r->leader_before, "%s", before.node);

    workload_config wc = {.api_key = env->api_key, .writers = o->clients,
                          .readers = o->readers, .accounts = o->accounts,
                          .url_count = cell->url_count, .rate_per_s = o->rate_per_s};
    for (size_t i = 0; i < cell->url_count; i++)
        wc.urls[i] = cell->urls[i];
    w = workload_create(&wc, err, sizeof err);
    if (w == NULL || workload_setup(w, err, sizeof err) != 0 ||
        workload_start(w, err, sizeof err) != 0) {
        drill_say(r->error, sizeof r->error, "workload: %s", err);
        goto out;
    }
    r->workload_ran = true;
    drill_progress("run %d/%d: workload running (%d writers, %d readers, %d accounts, %zu "
                   "meridiand); warm-up %d ms",
                   index, o->runs, o->clients, o->readers, o->accounts, cell->url_count,
                   DRILL_WARMUP_MS);
    drill_nap(DRILL_WARMUP_MS);
    if (interrupted) {
        drill_say(r->error, sizeof r->error, "interrupted");
        workload_stop(w, true);
        goto stopped;
    }

    /* The fault. */
    drill_progress("run %d/%d: %s on the leader %s (epoch %" PRId64 ", %" PRId64
                   " transfers acknowledged so far)",
                   index, o->runs, r->fault, r->leader_before, r->epoch_before,
                   workload_acked_now(w));
    r->t0_ms = clock_wall_ms();
    int frc = drill_cell_do(cell, r->fault, r->leader_before, err, sizeof err);
    r->injected_ms = clock_wall_ms();
    if (frc != 0) {
        drill_say(r->error, sizeof r->error, "fault injection: %s", err);
        workload_stop(w, false);
        goto stopped;
    }
    r->fault_injected = true;
    char dsn_before[256];
    drill_leader_dsn(&before, dsn_before, sizeof dsn_before);
    drill_wait_recovery(env, w, r, dsn_before);
    drill_progress("run %d/%d: stopping the workload", index, o->runs);
    workload_stop(w, interrupted != 0);
    if (interrupted)
        drill_say(r->error, sizeof r->error, "interrupted");

stopped:
    workload_stats_get(w, &r->ws);
    /* Undo the fault, whatever happened, so the next run (or the
     * operator's cell) is whole again. */
    const char *undo = restore_verb(o->scenario);
    if (r->fault_injected && undo != NULL) {
        drill_progress("run %d/%d: %s %s", index, o->runs, undo, r->leader_before);
        if (drill_cell_do(cell, undo, r->leader_before, err, sizeof err) != 0 &&
            r->error[0] == '\0')
            drill_say(r->error, sizeof r->error, "restoring %s: %s", r->leader_before, err);
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
    r->serving_since_ms = drill_measure_history(env, r);
    drill_leader after;
    bool have_after =
        drill_current_leader(env->etcd, cell->name, &after, interrupted ? 1 : DRILL_LEADER_TRIES) == 0;
    char dsn[256] = "";
    if (have_after)
        drill_leader_dsn(&after, dsn, sizeof dsn);
    int64_t started = 0;
    if (r->serving_since_ms == 0 && have_after && drill_db_started_ms(dsn, &started) == 0 &&
        started > r->t0_ms)
        r->serving_since_ms = started;
    if (r->fault_injected)
        drill_measure_rto(w, r, r->serving_since_ms);
    if (have_after) {
        snprintf(r->leader_after, sizeof r->leader_after, "%s", after.node);
        r->epoch_after = after.epoch;
        drill_progress("run %d/%d: checking %" PRId64 " acknowledged transfers in %s's database",
                       index, o->runs, r->ws.acked, after.node);
        if (drill_check_db(dsn, w, &r->db, err, sizeof err) == 0)
            r->db_checked = true;
        else if (r->error[0] == '\0')
            drill_say(r->error, sizeof r->error, "database check: %s", err);
    } else if (r->error[0] == '\0') {
        drill_say(r->error, sizeof r->error, "no leader after the run: cannot check the database");
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

void drill_show_log_tail(const char *log_path, const char *dir)
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

int drill_run(const drill_options *o, json_t **report)
{
    mrd_assert(o->runs >= 1 && o->runs <= DRILL_RUNS_MAX);
    *report = NULL;
    if (o->lab || drill_scenario_needs_lab(o->scenario))
        return drill_run_lab(o, report);
    drill_session session;
    drill_session_begin(&session);

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
        drill_say(err, sizeof err,
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
            drill_say(err, sizeof err, "cannot create a directory under /tmp: %s",
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
        drill_current_leader(env.etcd, cell->name, &l, DRILL_LEADER_TRIES) != 0) {
        drill_say(err, sizeof err, "the cell in %s is not healthy (no leader with synchronous "
                                  "standbys within %d s)",
                 cell->dir, DRILL_HEALTHY_WAIT_S);
        error = err;
        goto out;
    }
    char dsn[256];
    drill_leader_dsn(&l, dsn, sizeof dsn);
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
        drill_show_log_tail(cell->log_path[0] ? cell->log_path : NULL, tmpdir);
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
    drill_session_end(&session);
    if (unavailable)
        return DRILL_EXIT_UNAVAILABLE;
    if (*report != NULL && json_is_true(json_object_get(*report, "pass")))
        return DRILL_EXIT_PASS;
    return DRILL_EXIT_FAIL;
}
