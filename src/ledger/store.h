/*
 * store.h — the ledger's write path in PostgreSQL: one group commit.
 *
 * A worker of the batcher owns one store (one libpq connection). For
 * each commit it calls store_commit_batch with the requests it
 * coalesced. Inside one READ COMMITTED transaction the store:
 *   1. loads the transfers already stored with the requested ids and the
 *      pending transfers that post/void events reference;
 *   2. locks every account the batch touches with SELECT ... FOR UPDATE
 *      ORDER BY id (one global lock order: several meridiand processes
 *      on one database never deadlock);
 *   3. reloads the state of those pending transfers (now serialised by
 *      the account locks) and hands everything to the engine;
 *   4. writes the engine's outputs with few round trips (libpq pipeline
 *      mode, array parameters with unnest) and commits.
 * A concurrent duplicate id (unique violation), a serialization failure
 * or a deadlock makes the whole batch STORE_RETRY: nothing was applied,
 * and the batcher runs it again from step 1.
 *
 * The store never reports a transfer as applied unless COMMIT returned
 * success. If the connection breaks after COMMIT was sent, the outcome
 * is STORE_AMBIGUOUS and store_batch_committed settles it on a new
 * connection.
 */
#ifndef MERIDIAN_STORE_H
#define MERIDIAN_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "ledger/ledger.h"

typedef struct store store;

typedef enum {
    STORE_OK = 0,
    STORE_RETRY = -1,     /* nothing applied; run the batch again */
    STORE_CONN = -2,      /* connection lost before COMMIT was sent: nothing applied */
    STORE_AMBIGUOUS = -3, /* connection lost after COMMIT was sent: unknown */
    STORE_FATAL = -4,     /* a bug or a schema problem: logged with detail */
    STORE_READONLY = -5,  /* the server is a standby / read-only: nothing applied */
    STORE_FENCED = -6,    /* the node's recorded epoch is not the expected one (or it
                             records none): nothing applied, find the current leader */
} store_status;

typedef enum {
    STORE_REQ_TRANSFERS = 1,
    STORE_REQ_ACCOUNTS = 2,
    STORE_REQ_EXPIRE = 3, /* transfers[i].id names pending transfers to expire */
} store_request_kind;

/* One API request (or one expiry sweep) inside a commit. Arrays are the
 * caller's; results are written by store_commit_batch. */
typedef struct store_request {
    store_request_kind kind;
    size_t count;
    ledger_transfer *transfers;               /* TRANSFERS, EXPIRE */
    ledger_transfer_result *transfer_results; /* TRANSFERS, EXPIRE */
    ledger_account *accounts;                 /* ACCOUNTS */
    ledger_account_result *account_results;   /* ACCOUNTS */
} store_request;

/* Connect to dsn. Returns NULL and writes a one-line reason to err on
 * failure. The caller frees with store_free. */
store *store_connect(const char *dsn, char *err, size_t err_size);
void store_free(store *s);

/* Drop and re-open the connection. Returns 0 or -1 (reason logged). */
int store_reconnect(store *s);

/* Point the store at another server (a new leader): replace its DSN with
 * a copy of dsn and reconnect. Returns 0, or -1 (reason logged; the DSN
 * is replaced even then, so a later store_reconnect retries it). */
int store_reconnect_dsn(store *s, const char *dsn);

/* Fencing. With epoch > 0, every commit reads meridian_fencing.epoch
 * (written by the keeper at promotion) in its first round trip and
 * refuses with STORE_FENCED, applying nothing, unless it equals epoch; a
 * missing table or row is STORE_FENCED too. store_batch_committed then
 * answers -1 (cannot tell) on such a node. 0 (the default) turns the
 * check off. */
void store_set_fence(store *s, int64_t epoch);

/* Abandoning a commit that waits on a silent server. While the store
 * waits for a result of the write pipeline it polls the connection and,
 * every STORE_ABANDON_POLL_MS without an answer, calls fn(arg); true
 * closes the connection, so the wait ends as a lost connection
 * (STORE_CONN, or STORE_AMBIGUOUS once COMMIT was sent) instead of
 * lasting as long as the network stays silent (a black-holed link
 * answers nothing and TCP never times out through a proxy). The batcher
 * says true once etcd names a leader of another epoch. fn runs on the
 * committing thread. NULL (the default) waits as long as libpq does. */
#define STORE_ABANDON_POLL_MS 100
typedef bool (*store_abandon_fn)(void *arg);
void store_set_abandon(store *s, store_abandon_fn fn, void *arg);

/* Apply reqs[0..n) in one transaction (see the file comment), using b as
 * scratch (reset inside). now_us is the commit's clock. On STORE_OK every
 * result array is filled and the transaction is committed. On any other
 * status the results are undefined and must not be reported. */
store_status store_commit_batch(store *s, ledger_batch *b, store_request *reqs,
                                 size_t n, int64_t now_us);

/* After STORE_AMBIGUOUS and a reconnect: did that batch commit? Looks up
 * the ids the engine had applied. Returns 1 committed, 0 not committed
 * (safe to run again), -1 cannot tell (connection still down, or the
 * rows are there but not yet confirmed durable).
 * "Committed" is only answered once the rows are as durable as an
 * acknowledged commit: a commit whose wait for the synchronous standbys
 * was cut short (the connection died during it) is visible on the
 * server although no standby may hold it. So before answering 1 the
 * store commits a transaction of its own (one that writes nothing but
 * its commit record) and waits, at most STORE_SETTLE_BARRIER_MS, for the
 * standbys to confirm it; WAL is ordered, so that confirms the batch
 * too. Not confirmed in time: -1, and the caller asks again. */
#define STORE_SETTLE_BARRIER_MS 2000
int store_batch_committed(store *s, const store_request *reqs, size_t n);

/* Ids of pending transfers whose timeout passed at now_us, at most max.
 * Returns the count written to out, or -1. */
int store_expired_pending(store *s, int64_t now_us, id128 *out, size_t max);

/* Claim the periodic job `kind` (a row of the jobs table) if it is due:
 * one statement moves its run_at interval_ms ahead and counts the
 * attempt; a row another process holds locked is skipped. When the kind
 * has no open row, one is created (due at once) for the next call.
 * Returns 1 claimed (*job_id set), 0 not due or claimed elsewhere, -1 on
 * a connection or SQL error (logged). */
int store_job_claim(store *s, const char *kind, int interval_ms, int64_t *job_id);

/* Record the outcome of a claimed run of job_id: error NULL for success
 * (clears last_error), else its text. Returns 0 or -1 (logged). */
int store_job_finish(store *s, int64_t job_id, const char *error);

/* Per-transfer "global" durability: wait until a cross-region standby
 * has flushed everything this connection committed. standby_names is a
 * comma-separated list of application names, or NULL/"" for any
 * asynchronous standby (the DR standbys: in-region standbys are
 * quorum-synchronous). Polls pg_stat_replication for at most timeout_ms.
 * Returns 0 when reached, -1 on timeout or error (the commit itself
 * stands: only the cross-region confirmation is missing). */
int store_wait_global(store *s, const char *standby_names, int timeout_ms);

#endif
