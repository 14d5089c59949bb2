/*
 * batcher.c — group commit: a bounded queue of requests drained by
 * worker threads, each committing many requests in one transaction.
 *
 * Submitters (HTTP threads) push a job on the queue and sleep on the
 * job's semaphore. A worker takes the first job (blocking), then keeps
 * taking queued jobs while they fit in events_max, waiting at most
 * wait_us after the first for more, and commits them with
 * store_commit_batch. The outcome of that commit, after bounded retries
 * and reconnects, is posted to every job of the batch:
 *   STORE_OK                      -> BATCHER_OK (results filled)
 *   STORE_RETRY (x retries)       -> run again; then BATCHER_UNAVAILABLE
 *   STORE_CONN / STORE_READONLY / -> reconnect to the current leader
 *   STORE_FENCED                     (waiting for etcd to name one),
 *                                    run again; after the budget (2 s for
 *                                    a static route, failover_wait_ms with
 *                                    etcd) BATCHER_UNAVAILABLE (nothing
 *                                    applied)
 *   STORE_AMBIGUOUS               -> reconnect to the (possibly new)
 *                                    leader and ask it
 *                                    (store_batch_committed): committed ->
 *                                    BATCHER_OK, not committed -> run
 *                                    again, cannot tell -> BATCHER_UNKNOWN
 *   STORE_FATAL                   -> BATCHER_INTERNAL
 *
 * Following the leader (route.h): each worker remembers the route
 * generation and epoch its connection was opened for. Before every
 * commit attempt it compares them with the current route and, when the
 * leader changed, reconnects first; the store then checks inside the
 * transaction that the node recorded that epoch (STORE_FENCED if not).
 * A batch whose COMMIT may have reached the old leader is settled on the
 * new one: a commit the old leader made but no synchronous standby
 * received is gone with the old leader's timeline, so "not there" on
 * the new leader means "run again", and the transfer ids make a second
 * run of anything that is there answer `exists`.
 *
 * A background thread lists timed-out pending transfers on its own
 * connection and expires them by submitting an internal request through
 * the same queue, so expiry takes the same locks as everything else.
 */
#include "service/batcher.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "ledger/store.h"
#include "service/metrics.h"
#include "service/route.h"

#define COMP "batcher"

#define BATCHER_WORKERS_MAX 32
/* Time a batch may spend reconnecting after STORE_CONN/READONLY on a
 * static route. */
#define BATCHER_RECONNECT_BUDGET_MS 2000
/* Default time a batch may wait for a leader on an etcd route. */
#define BATCHER_FAILOVER_WAIT_MS_DEFAULT 15000
/* Backoff between reconnects to the same route, and its cap. The cap is
 * short because the usual reason to retry the same route is a leader
 * that etcd already names but that is still promoting (read-only) or
 * recording its epoch: it becomes writable a few hundred milliseconds
 * later, and every attempt past that moment is write downtime. A dead
 * leader costs a refused connection per attempt until etcd names
 * another, which cuts the wait short anyway. */
#define BATCHER_BACKOFF_US_MIN 20000
#define BATCHER_BACKOFF_US_MAX 100000
/* The jobs table's kind for the pending-transfer expiry sweep
 * (sql/migrations/0003_expiry_job.sql). */
#define BATCHER_EXPIRY_JOB "expire_pending"
/* Time a batch may spend settling an ambiguous commit. */
#define BATCHER_SETTLE_BUDGET_MS 5000
/* Attempts of one batch, whatever the reasons. */
#define BATCHER_ATTEMPTS_MAX (4 * LIMIT_COMMIT_RETRIES_MAX)
/* Pending transfers expired per sweep. */
#define BATCHER_EXPIRE_PER_SWEEP_MAX 1000

typedef struct job {
    store_request req;
    batcher_status status;
    sem_t done;
} job;

typedef struct worker {
    struct batcher *owner;
    pthread_t thread;
    bool started;
    store *st;
    uint64_t route_generation; /* route the connection was opened for */
    int64_t route_epoch;       /* and its epoch (0: static route) */
    ledger_batch *lb;
    job **jobs;           /* taken for the current batch */
    store_request *reqs;  /* copies of their requests */
} worker;

struct batcher {
    batcher_config cfg;
    char *dsn;
    route_source *route;      /* cfg.route, or own_route */
    route_source *own_route;  /* the static route made from dsn */
    int unavailable_budget_ms; /* waiting for a writable leader, per batch */
    int settle_budget_ms;      /* settling an ambiguous commit, per batch */
    size_t batch_capacity; /* events the ledger_batch holds */

    pthread_mutex_t mu;
    pthread_cond_t not_empty; /* CLOCK_MONOTONIC */
    pthread_cond_t stop_cv;   /* wakes the expiry thread; CLOCK_MONOTONIC */
    job **queue;              /* ring of queue_max */
    size_t head, count;
    bool stopping;

    worker workers[BATCHER_WORKERS_MAX];
    int workers_started;

    pthread_t expirer;
    bool expirer_started;
    store *expire_store;
    uint64_t expire_generation;

    atomic_int db_up;
};

/* ------------------------------------------------------------------ */

static struct timespec mono_deadline(int64_t at_us)
{
    struct timespec ts = {.tv_sec = at_us / 1000000, .tv_nsec = (at_us % 1000000) * 1000};
    return ts;
}

static void sleep_us(int64_t us)
{
    if (us <= 0) return;
    struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Start-up: connect to the cell's leader, retrying for as long as a
 * request would wait through a failover (etcd routes) — the leader key
 * names a node a moment before it is writable, so a meridiand started
 * then (the lab scaling up after a regional failover) must not give up.
 * *snap and dsn follow the route while retrying. Returns the store or
 * NULL with the last reason in err. */
static store *connect_at_start(batcher *b, bool etcd, int budget_ms, route_snapshot *snap,
                               char *dsn, size_t dsn_size, char *err, size_t err_size)
{
    int64_t give_up_us = clock_mono_us() + (int64_t)budget_ms * 1000;
    int64_t logged_us = 0;
    for (;;) {
        store *st = store_connect(dsn, err, err_size);
        if (st != NULL || !etcd || clock_mono_us() >= give_up_us)
            return st;
        if (clock_mono_us() - logged_us >= 1000000) {
            log_warn(COMP, "start-up: the leader %s does not take writes yet (%s): retrying for "
                           "up to %d ms",
                     snap->node, err, budget_ms);
            logged_us = clock_mono_us();
        }
        sleep_us(200000);
        route_snapshot now;
        route_current(b->route, &now);
        if (now.has_leader && route_dsn(b->route, &now, dsn, dsn_size) == 0)
            *snap = now;
    }
}

static void set_db_up(batcher *b, int up)
{
    atomic_store(&b->db_up, up);
    metrics_db_up_set(up);
}

/* ------------------------------------------------------------------ */
/* Queue                                                               */

static job *queue_pop_locked(batcher *b)
{
    mrd_assert(b->count > 0);
    job *j = b->queue[b->head];
    b->head = (b->head + 1) % b->cfg.queue_max;
    b->count--;
    return j;
}

static batcher_status submit(batcher *b, store_request *req)
{
    if (req->count == 0) return BATCHER_OK;
    if (req->count > b->batch_capacity) {
        log_error(COMP, "request of %zu events exceeds the commit capacity %zu",
                  req->count, b->batch_capacity);
        return BATCHER_INTERNAL;
    }
    job j = {.req = *req, .status = BATCHER_INTERNAL};
    if (sem_init(&j.done, 0, 0) < 0) return BATCHER_INTERNAL;

    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        sem_destroy(&j.done);
        return BATCHER_STOPPING;
    }
    if (b->count >= b->cfg.queue_max) {
        pthread_mutex_unlock(&b->mu);
        sem_destroy(&j.done);
        return BATCHER_OVERLOADED;
    }
    b->queue[(b->head + b->count) % b->cfg.queue_max] = &j;
    b->count++;
    metrics_queue_depth_set(b->count);
    pthread_cond_signal(&b->not_empty);
    pthread_mutex_unlock(&b->mu);

    while (sem_wait(&j.done) < 0 && errno == EINTR) {
    }
    sem_destroy(&j.done);
    return j.status;
}

batcher_status batcher_submit_transfers(batcher *b, ledger_transfer *events,
                                        size_t count,
                                        ledger_transfer_result *results)
{
    mrd_assert(b && (count == 0 || (events && results)));
    store_request req = {.kind = STORE_REQ_TRANSFERS, .count = count,
                         .transfers = events, .transfer_results = results};
    return submit(b, &req);
}

batcher_status batcher_submit_accounts(batcher *b, ledger_account *events,
                                       size_t count,
                                       ledger_account_result *results)
{
    mrd_assert(b && (count == 0 || (events && results)));
    store_request req = {.kind = STORE_REQ_ACCOUNTS, .count = count,
                         .accounts = events, .account_results = results};
    return submit(b, &req);
}

size_t batcher_queue_depth(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    size_t n = b->count;
    pthread_mutex_unlock(&b->mu);
    return n;
}

int batcher_db_up(batcher *b)
{
    return atomic_load(&b->db_up);
}

/* ------------------------------------------------------------------ */
/* Workers                                                             */

/* Take the jobs of the next batch into w->jobs. Returns their number, or
 * 0 when stopping and the queue is empty. */
static size_t take_batch(worker *w)
{
    batcher *b = w->owner;
    size_t n = 0, events = 0;
    pthread_mutex_lock(&b->mu);
    while (b->count == 0 && !b->stopping) pthread_cond_wait(&b->not_empty, &b->mu);
    if (b->count == 0) {
        pthread_mutex_unlock(&b->mu);
        return 0;
    }
    w->jobs[n] = queue_pop_locked(b);
    events = w->jobs[n++]->req.count;
    struct timespec deadline = mono_deadline(clock_mono_us() + b->cfg.wait_us);
    while (n < b->batch_capacity) {
        if (b->count > 0) {
            job *next = b->queue[b->head];
            if (events + next->req.count > b->cfg.events_max) break;
            w->jobs[n++] = queue_pop_locked(b);
            events += next->req.count;
            continue;
        }
        if (b->stopping || b->cfg.wait_us == 0) break;
        if (pthread_cond_timedwait(&b->not_empty, &b->mu, &deadline) == ETIMEDOUT &&
            b->count == 0)
            break;
    }
    metrics_queue_depth_set(b->count);
    pthread_mutex_unlock(&b->mu);
    return n;
}

static void finish(worker *w, size_t n, batcher_status status)
{
    for (size_t i = 0; i < n; i++) {
        w->jobs[i]->status = status;
        sem_post(&w->jobs[i]->done);
    }
}

/* Did this request ask for global durability (any of its transfers)? */
static bool wants_global(const store_request *r)
{
    if (r->kind != STORE_REQ_TRANSFERS)
        return false;
    for (size_t i = 0; i < r->count; i++)
        if (r->transfers[i].durability_global)
            return true;
    return false;
}

/* The batch committed: answer every request. Requests that asked for
 * global durability are answered only after a cross-region standby has
 * flushed the commit (store_wait_global), the others at once. A retry
 * of a global request whose first answer timed out gets `exists` and
 * waits again here, which covers the original commit too. */
static void finish_committed(worker *w, size_t n)
{
    size_t global = 0;
    for (size_t i = 0; i < n; i++) {
        if (wants_global(&w->reqs[i])) {
            global++;
            continue;
        }
        w->jobs[i]->status = BATCHER_OK;
        sem_post(&w->jobs[i]->done);
    }
    if (global == 0)
        return;
    const batcher_config *c = &w->owner->cfg;
    int64_t t0 = clock_mono_us();
    int rc = store_wait_global(w->st, c->global_standby_names,
                               c->global_wait_ms > 0 ? c->global_wait_ms : 5000);
    metrics_global_wait(rc == 0, (double)(clock_mono_us() - t0) / 1e6);
    if (rc != 0)
        log_warn(COMP, "%zu global-durability requests not confirmed by a cross-region standby "
                       "within %d ms", global, c->global_wait_ms > 0 ? c->global_wait_ms : 5000);
    for (size_t i = 0; i < n; i++) {
        if (!wants_global(&w->reqs[i]))
            continue;
        w->jobs[i]->status = rc == 0 ? BATCHER_OK : BATCHER_GLOBAL_TIMEOUT;
        sem_post(&w->jobs[i]->done);
    }
}

static void report_results(const store_request *reqs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (reqs[i].kind == STORE_REQ_TRANSFERS)
            metrics_transfer_results(reqs[i].transfer_results, reqs[i].count);
        else if (reqs[i].kind == STORE_REQ_ACCOUNTS)
            metrics_account_results(reqs[i].account_results, reqs[i].count);
    }
}

static int ms_until(int64_t deadline_us)
{
    int64_t left = deadline_us - clock_mono_us();
    if (left <= 0) return 0;
    return left / 1000 > INT32_MAX ? INT32_MAX : (int)(left / 1000);
}

/* Point st at the leader of snapshot snap: its DSN and, for an etcd
 * route, its epoch as the fencing check. *generation records the route
 * tried, connected or not. Returns 0 or -1. */
static int connect_to(batcher *b, store *st, uint64_t *generation, const route_snapshot *snap)
{
    char dsn[ROUTE_DSN_MAX];
    *generation = snap->generation;
    if (route_dsn(b->route, snap, dsn, sizeof dsn) != 0) {
        log_error(COMP, "connection string for %s:%d too long", snap->host, snap->port);
        return -1;
    }
    store_set_fence(st, route_is_etcd(b->route) ? snap->epoch : 0);
    if (route_is_etcd(b->route))
        log_debug(COMP, "connecting to leader %s (%s:%d, epoch %" PRId64 ")", snap->node,
                  snap->host, snap->port, snap->epoch);
    return store_reconnect_dsn(st, dsn);
}

/* The abandon hook of a worker's store (store_set_abandon): a commit
 * still waiting for its old leader is given up once etcd names a leader
 * of another epoch, since the old one will never answer through a silent
 * network and is fenced anyway. The batch is then settled on the new
 * leader like any commit whose connection broke. */
static bool leader_moved(void *arg)
{
    worker *w = arg;
    if (!route_is_etcd(w->owner->route)) return false;
    route_snapshot snap;
    route_current(w->owner->route, &snap);
    return snap.has_leader && snap.generation != w->route_generation &&
           snap.epoch != w->route_epoch;
}

/* Reconnect to the current leader, waiting for etcd to name one when
 * there is none, with backoff, until deadline_us (monotonic). A change of
 * the route cuts the backoff short. Returns 0 or -1. */
static int reconnect_until(worker *w, int64_t deadline_us, int *tries)
{
    batcher *b = w->owner;
    int64_t backoff_us = BATCHER_BACKOFF_US_MIN;
    while (*tries < LIMIT_DB_RECONNECT_MAX) {
        route_snapshot snap;
        if (route_wait_leader(b->route, ms_until(deadline_us), &snap) < 0) {
            log_warn(COMP, "no leader for cell %s", route_cell(b->route));
            return -1;
        }
        (*tries)++;
        w->route_epoch = snap.epoch;
        if (connect_to(b, w->st, &w->route_generation, &snap) == 0) return 0;
        if (clock_mono_us() >= deadline_us) return -1;
        int64_t wait_us = backoff_us < deadline_us - clock_mono_us() ? backoff_us
                                                                : deadline_us - clock_mono_us();
        route_wait_change(b->route, snap.generation, (int)(wait_us / 1000), &snap);
        backoff_us = backoff_us * 2 < BATCHER_BACKOFF_US_MAX ? backoff_us * 2
                                                             : BATCHER_BACKOFF_US_MAX;
    }
    return -1;
}

/* Before a commit attempt: if the leader changed since the connection
 * was opened, move to the new one (waiting for one up to the batch's
 * unavailability deadline, set here if not yet). Returns 0 or -1. */
static int follow_route(worker *w, int64_t *deadline_us, int *tries)
{
    batcher *b = w->owner;
    route_snapshot snap;
    route_current(b->route, &snap);
    if (snap.generation == w->route_generation && snap.has_leader) return 0;
    if (*deadline_us == 0) *deadline_us = clock_mono_us() + (int64_t)b->unavailable_budget_ms * 1000;
    return reconnect_until(w, *deadline_us, tries);
}

/* Commit the taken jobs, with retries; posts every job's outcome. */
static void commit_jobs(worker *w, size_t n)
{
    batcher *b = w->owner;
    size_t events = 0;
    for (size_t i = 0; i < n; i++) {
        w->reqs[i] = w->jobs[i]->req;
        events += w->reqs[i].count;
    }
    log_debug(COMP, "commit: %zu requests, %zu events", n, events);
    int retries = 0, reconnects = 0;
    int64_t unavailable_deadline_us = 0, settle_deadline_us = 0;
    int64_t pause_us = BATCHER_BACKOFF_US_MIN;

    for (int attempt = 0; attempt < BATCHER_ATTEMPTS_MAX; attempt++) {
        if (follow_route(w, &unavailable_deadline_us, &reconnects) < 0) {
            set_db_up(b, 0);
            log_warn(COMP, "no writable leader: %zu requests refused", n);
            finish(w, n, BATCHER_UNAVAILABLE);
            return;
        }
        int64_t t0 = clock_mono_us();
        store_status rc = store_commit_batch(w->st, w->lb, w->reqs, n, clock_wall_us());
        if (rc == STORE_OK) {
            set_db_up(b, 1);
            metrics_commit_observe(events, (double)(clock_mono_us() - t0) / 1e6);
            route_snapshot cur;
            route_current(b->route, &cur);
            if (cur.generation == w->route_generation)
                route_note_write(b->route, cur.epoch, clock_wall_ms());
            report_results(w->reqs, n);
            finish_committed(w, n);
            return;
        }
        switch (rc) {
        case STORE_RETRY:
            set_db_up(b, 1);
            if (++retries > LIMIT_COMMIT_RETRIES_MAX) {
                log_error(COMP, "commit of %zu events failed after %d retries", events,
                          LIMIT_COMMIT_RETRIES_MAX);
                finish(w, n, BATCHER_UNAVAILABLE);
                return;
            }
            metrics_commit_retry();
            /* Spread retries of colliding workers apart. */
            sleep_us((int64_t)retries * 1000 + (clock_mono_us() % 1000));
            continue;
        case STORE_CONN:
        case STORE_READONLY:
        case STORE_FENCED: {
            set_db_up(b, 0);
            if (rc == STORE_FENCED) metrics_fenced_commit();
            if (unavailable_deadline_us == 0)
                unavailable_deadline_us =
                    clock_mono_us() + (int64_t)b->unavailable_budget_ms * 1000;
            if (rc != STORE_CONN) {
                /* The node answers but may not take writes yet (a leader
                 * being promoted, or not recording its epoch yet) or any
                 * more: give etcd a moment to name another, then retry. */
                route_snapshot snap;
                int64_t left = unavailable_deadline_us - clock_mono_us();
                route_wait_change(b->route, w->route_generation,
                                  (int)((pause_us < left ? pause_us : left > 0 ? left : 0) / 1000),
                                  &snap);
                pause_us = pause_us * 2 < BATCHER_BACKOFF_US_MAX ? pause_us * 2
                                                                 : BATCHER_BACKOFF_US_MAX;
            }
            if (clock_mono_us() >= unavailable_deadline_us ||
                reconnect_until(w, unavailable_deadline_us, &reconnects) < 0) {
                log_warn(COMP, "database unavailable: %zu requests refused", n);
                finish(w, n, BATCHER_UNAVAILABLE);
                return;
            }
            continue;
        }
        case STORE_AMBIGUOUS: {
            set_db_up(b, 0);
            if (settle_deadline_us == 0)
                settle_deadline_us = clock_mono_us() + (int64_t)b->settle_budget_ms * 1000;
            int committed = -1;
            while (committed < 0 && clock_mono_us() < settle_deadline_us) {
                if (reconnect_until(w, settle_deadline_us, &reconnects) < 0) break;
                committed = store_batch_committed(w->st, w->reqs, n);
                if (committed < 0) {
                    /* Connected but cannot tell (wrong epoch, error):
                     * wait for the route to move before asking again. */
                    route_snapshot snap;
                    int left_ms = ms_until(settle_deadline_us);
                    route_wait_change(b->route, w->route_generation,
                                      left_ms < 200 ? left_ms : 200, &snap);
                }
            }
            if (committed == 1) {
                set_db_up(b, 1);
                metrics_commit_observe(events, (double)(clock_mono_us() - t0) / 1e6);
                report_results(w->reqs, n);
                finish_committed(w, n);
                return;
            }
            if (committed < 0) {
                log_error(COMP, "commit outcome unknown for %zu requests", n);
                finish(w, n, BATCHER_UNKNOWN);
                return;
            }
            /* Not committed: nothing applied, safe to run again. */
            continue;
        }
        case STORE_FATAL:
        default:
            finish(w, n, BATCHER_INTERNAL);
            return;
        }
    }
    /* Every way out of the loop above left nothing applied. */
    log_error(COMP, "commit of %zu events gave up after %d attempts", events,
              BATCHER_ATTEMPTS_MAX);
    finish(w, n, BATCHER_UNAVAILABLE);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    for (;;) {
        size_t n = take_batch(w);
        if (n == 0) break;
        commit_jobs(w, n);
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Expiry                                                              */

static void *expirer_main(void *arg)
{
    batcher *b = arg;
    size_t max = BATCHER_EXPIRE_PER_SWEEP_MAX;
    if (max > b->batch_capacity) max = b->batch_capacity;
    id128 *ids = calloc(max, sizeof *ids);
    ledger_transfer *events = calloc(max, sizeof *events);
    ledger_transfer_result *results = calloc(max, sizeof *results);
    if (!ids || !events || !results) {
        log_error(COMP, "out of memory: pending-transfer expiry disabled");
        goto out;
    }
    for (;;) {
        pthread_mutex_lock(&b->mu);
        struct timespec deadline =
            mono_deadline(clock_mono_us() + (int64_t)b->cfg.expire_interval_ms * 1000);
        while (!b->stopping &&
               pthread_cond_timedwait(&b->stop_cv, &b->mu, &deadline) != ETIMEDOUT) {
        }
        bool stop = b->stopping;
        pthread_mutex_unlock(&b->mu);
        if (stop) break;

        route_snapshot snap;
        route_current(b->route, &snap);
        if (!snap.has_leader) continue;
        if (snap.generation != b->expire_generation &&
            connect_to(b, b->expire_store, &b->expire_generation, &snap) != 0)
            continue;
        /* One sweep per interval for every meridiand of the cell: the
         * process that claims the job row sweeps, the others wait. */
        int64_t job_id = 0;
        int claimed = store_job_claim(b->expire_store, BATCHER_EXPIRY_JOB,
                                      b->cfg.expire_interval_ms, &job_id);
        if (claimed < 0) {
            connect_to(b, b->expire_store, &b->expire_generation, &snap);
            continue;
        }
        if (claimed == 0) continue;
        int n = store_expired_pending(b->expire_store, clock_wall_us(), ids, max);
        if (n < 0) {
            connect_to(b, b->expire_store, &b->expire_generation, &snap);
            continue; /* the claim expires with its interval: swept again then */
        }
        const char *error = NULL;
        char why[96];
        if (n > 0) {
            memset(events, 0, (size_t)n * sizeof *events);
            for (int i = 0; i < n; i++) events[i].id = ids[i];
            store_request req = {.kind = STORE_REQ_EXPIRE, .count = (size_t)n,
                                 .transfers = events, .transfer_results = results};
            batcher_status st = submit(b, &req);
            size_t ok = 0;
            for (int i = 0; st == BATCHER_OK && i < n; i++)
                ok += results[i] == LEDGER_TRANSFER_OK;
            if (st == BATCHER_OK) {
                log_info(COMP, "expired %zu of %d pending transfers", ok, n);
            } else {
                snprintf(why, sizeof why, "commit of %d expiries failed: status %d", n, (int)st);
                log_warn(COMP, "pending-transfer expiry: %s", why);
                error = why;
            }
        }
        store_job_finish(b->expire_store, job_id, error);
    }
out:
    free(ids);
    free(events);
    free(results);
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Start, stop                                                         */

static void destroy(batcher *b)
{
    for (int i = 0; i < BATCHER_WORKERS_MAX; i++) {
        store_free(b->workers[i].st);
        ledger_batch_free(b->workers[i].lb);
        free(b->workers[i].jobs);
        free(b->workers[i].reqs);
    }
    store_free(b->expire_store);
    route_free(b->own_route);
    pthread_cond_destroy(&b->not_empty);
    pthread_cond_destroy(&b->stop_cv);
    pthread_mutex_destroy(&b->mu);
    free(b->queue);
    free(b->dsn);
    free(b);
}

static void stop_threads(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->stopping = true;
    pthread_cond_broadcast(&b->not_empty);
    pthread_cond_broadcast(&b->stop_cv);
    pthread_mutex_unlock(&b->mu);
    /* The expirer first: its last request needs the workers. */
    if (b->expirer_started) pthread_join(b->expirer, NULL);
    for (int i = 0; i < BATCHER_WORKERS_MAX; i++)
        if (b->workers[i].started) pthread_join(b->workers[i].thread, NULL);
}

static int init_sync(batcher *b)
{
    pthread_condattr_t ca;
    if (pthread_mutex_init(&b->mu, NULL) != 0) return -1;
    if (pthread_condattr_init(&ca) != 0) return -1;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&b->not_empty, &ca);
    if (rc == 0) rc = pthread_cond_init(&b->stop_cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc == 0 ? 0 : -1;
}

batcher *batcher_start(const batcher_config *cfg, char *err, size_t err_size)
{
    mrd_assert(cfg && err && err_size > 0);
    if (!cfg->route && (!cfg->dsn || !*cfg->dsn)) {
        snprintf(err, err_size, "database DSN is empty");
        return NULL;
    }
    if (cfg->workers < 1 || cfg->workers > BATCHER_WORKERS_MAX) {
        snprintf(err, err_size, "commit workers must be between 1 and %d, got %d",
                 BATCHER_WORKERS_MAX, cfg->workers);
        return NULL;
    }
    if (cfg->wait_us < 0 || cfg->wait_us > LIMIT_COMMIT_WAIT_US_MAX) {
        snprintf(err, err_size, "commit wait must be between 0 and %d us, got %d",
                 LIMIT_COMMIT_WAIT_US_MAX, cfg->wait_us);
        return NULL;
    }
    if (cfg->events_max < 1 || cfg->events_max > LIMIT_COMMIT_EVENTS_MAX) {
        snprintf(err, err_size, "events per commit must be between 1 and %d, got %zu",
                 LIMIT_COMMIT_EVENTS_MAX, cfg->events_max);
        return NULL;
    }
    if (cfg->queue_max < 1 || cfg->queue_max > LIMIT_QUEUE_REQUESTS_MAX) {
        snprintf(err, err_size, "queue size must be between 1 and %d, got %zu",
                 LIMIT_QUEUE_REQUESTS_MAX, cfg->queue_max);
        return NULL;
    }
    if (cfg->expire_interval_ms < 0) {
        snprintf(err, err_size, "expiry interval must be >= 0 ms, got %d",
                 cfg->expire_interval_ms);
        return NULL;
    }

    batcher *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->dsn = strdup(cfg->dsn ? cfg->dsn : "");
    b->cfg.dsn = b->dsn;
    /* A single request may carry up to LIMIT_BATCH_EVENTS_MAX events even
     * when events_max (the coalescing target) is smaller. */
    b->batch_capacity =
        cfg->events_max > LIMIT_BATCH_EVENTS_MAX ? cfg->events_max : LIMIT_BATCH_EVENTS_MAX;
    b->queue = calloc(cfg->queue_max, sizeof *b->queue);
    if (!b->dsn || !b->queue || init_sync(b) < 0) {
        snprintf(err, err_size, "out of memory");
        free(b->queue);
        free(b->dsn);
        free(b);
        return NULL;
    }

    char why[256];
    b->route = cfg->route;
    if (!b->route) {
        b->own_route = route_create_static(b->dsn, why, sizeof why);
        if (!b->own_route) {
            snprintf(err, err_size, "%s", why);
            goto fail;
        }
        b->route = b->own_route;
    }
    int failover_ms = cfg->failover_wait_ms > 0 ? cfg->failover_wait_ms
                                                 : BATCHER_FAILOVER_WAIT_MS_DEFAULT;
    bool etcd = route_is_etcd(b->route);
    b->unavailable_budget_ms = etcd ? failover_ms : BATCHER_RECONNECT_BUDGET_MS;
    b->settle_budget_ms = etcd && failover_ms > BATCHER_SETTLE_BUDGET_MS
                              ? failover_ms
                              : BATCHER_SETTLE_BUDGET_MS;
    /* Start-up needs the leader (waiting for one as long as a request
     * would), like a static route needs its database. */
    route_snapshot snap;
    char dsn[ROUTE_DSN_MAX];
    if (route_wait_leader(b->route, etcd ? failover_ms : 0, &snap) < 0) {
        snprintf(err, err_size, "no leader for cell %s after %d ms", route_cell(b->route),
                 failover_ms);
        goto fail;
    }
    if (route_dsn(b->route, &snap, dsn, sizeof dsn) != 0) {
        snprintf(err, err_size, "connection string too long");
        goto fail;
    }
    for (int i = 0; i < cfg->workers; i++) {
        worker *w = &b->workers[i];
        w->owner = b;
        w->st = connect_at_start(b, etcd, failover_ms, &snap, dsn, sizeof dsn, why, sizeof why);
        if (!w->st) {
            snprintf(err, err_size, "cannot connect to database: %s", why);
            goto fail;
        }
        w->route_generation = snap.generation;
        w->route_epoch = etcd ? snap.epoch : 0;
        store_set_fence(w->st, w->route_epoch);
        store_set_abandon(w->st, leader_moved, w);
        w->lb = ledger_batch_create(b->batch_capacity);
        w->jobs = calloc(b->batch_capacity, sizeof *w->jobs);
        w->reqs = calloc(b->batch_capacity, sizeof *w->reqs);
        if (!w->lb || !w->jobs || !w->reqs) {
            snprintf(err, err_size, "out of memory");
            goto fail;
        }
    }
    if (cfg->expire_interval_ms > 0) {
        b->expire_store =
            connect_at_start(b, etcd, failover_ms, &snap, dsn, sizeof dsn, why, sizeof why);
        if (!b->expire_store) {
            snprintf(err, err_size, "cannot connect to database: %s", why);
            goto fail;
        }
        b->expire_generation = snap.generation;
    }
    set_db_up(b, 1);
    for (int i = 0; i < cfg->workers; i++) {
        if (pthread_create(&b->workers[i].thread, NULL, worker_main, &b->workers[i]) != 0) {
            snprintf(err, err_size, "cannot start commit worker thread");
            goto fail;
        }
        b->workers[i].started = true;
        b->workers_started++;
    }
    if (cfg->expire_interval_ms > 0) {
        if (pthread_create(&b->expirer, NULL, expirer_main, b) != 0) {
            snprintf(err, err_size, "cannot start expiry thread");
            goto fail;
        }
        b->expirer_started = true;
    }
    log_info(COMP, "started: %d workers, wait %d us, %zu events per commit, queue %zu",
             cfg->workers, cfg->wait_us, cfg->events_max, cfg->queue_max);
    return b;
fail:
    stop_threads(b);
    destroy(b);
    return NULL;
}

void batcher_stop(batcher *b)
{
    if (!b) return;
    stop_threads(b);
    mrd_assert(b->count == 0);
    destroy(b);
    log_info(COMP, "stopped");
}
