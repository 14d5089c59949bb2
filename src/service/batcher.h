/*
 * batcher.h — group commit: many concurrent requests, one transaction.
 *
 * HTTP handler threads call batcher_submit_* and block until their
 * request's commit has an outcome. Worker threads (each with its own
 * store connection) take queued requests until the commit holds
 * events_max events or wait_us has passed since the first was taken,
 * then commit them together with store_commit_batch. Retryable failures
 * are retried a bounded number of times; an ambiguous commit is settled
 * with store_batch_committed so that a caller always gets either the
 * real results or a definite "not applied" (BATCHER_UNAVAILABLE), never
 * a transfer applied twice. A background thread expires timed-out
 * pending transfers through the same path.
 */
#ifndef MERIDIAN_BATCHER_H
#define MERIDIAN_BATCHER_H

#include <stddef.h>

#include "ledger/ledger.h"

typedef struct batcher batcher;

struct route_source;

typedef struct batcher_config {
    const char *dsn;     /* used when route is NULL: a static route */
    /* Where commits go (route.h), borrowed; must outlive the batcher.
     * NULL: a static route to dsn, owned by the batcher. */
    struct route_source *route;
    /* etcd routes: longest a batch waits for a (new) writable leader
     * before answering BATCHER_UNAVAILABLE; <= 0 means 15000. Static
     * routes keep their 2 s reconnect budget. */
    int failover_wait_ms;
    int workers;         /* commit threads (connections), 1..32 */
    int wait_us;         /* max wait to fill a commit, 0..LIMIT_COMMIT_WAIT_US_MAX */
    size_t events_max;   /* events per commit, 1..LIMIT_COMMIT_EVENTS_MAX */
    size_t queue_max;    /* queued requests, past it BATCHER_OVERLOADED */
    int expire_interval_ms; /* pending-expiry sweep period; 0 disables */
    /* Per-transfer "global" durability (store_wait_global): which standbys
     * count (comma-separated application names; NULL/"" = any asynchronous
     * standby) and how long a request may wait for one (0 = default 5 s). */
    const char *global_standby_names;
    int global_wait_ms;
} batcher_config;

typedef enum {
    BATCHER_OK = 0,
    BATCHER_OVERLOADED = -1,  /* queue full: nothing applied, retry later */
    BATCHER_UNAVAILABLE = -2, /* database unreachable/read-only: nothing applied */
    BATCHER_STOPPING = -3,    /* shutting down: nothing applied */
    BATCHER_UNKNOWN = -4,     /* outcome could not be settled: retry with the same ids */
    BATCHER_INTERNAL = -5,    /* a bug; logged */
    BATCHER_GLOBAL_TIMEOUT = -6, /* committed (results valid) but no cross-region
                                  * standby confirmed it in time: not acknowledged */
} batcher_status;

/* Start workers connected to cfg->dsn. Returns NULL with a reason in err
 * when the configuration is invalid or no connection can be made. */
batcher *batcher_start(const batcher_config *cfg, char *err, size_t err_size);

/* Stop taking requests (new submits get BATCHER_STOPPING), finish every
 * queued and in-flight commit, join the threads and free. */
void batcher_stop(batcher *b);

/* Submit one request and wait for its commit. events/results are the
 * caller's and must stay valid until return. */
batcher_status batcher_submit_transfers(batcher *b, ledger_transfer *events,
                                        size_t count,
                                        ledger_transfer_result *results);
batcher_status batcher_submit_accounts(batcher *b, ledger_account *events,
                                       size_t count,
                                       ledger_account_result *results);

/* Requests waiting right now (for /metrics and /readyz). */
size_t batcher_queue_depth(batcher *b);

/* 1 when the last commit attempt reached the database, else 0. */
int batcher_db_up(batcher *b);

#endif
