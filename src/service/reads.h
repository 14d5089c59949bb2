/*
 * reads.h — the read side of meridiand: queries on a bounded pool of
 * PostgreSQL connections.
 *
 * Writes go through the batcher; everything else a request needs (API
 * keys, account and transfer lookups, histories, balances, customer
 * names, readiness) is one query on a connection borrowed from this
 * pool. Every query is scoped: scope_customer_id > 0 restricts the
 * answer to that customer's accounts (another customer's rows are
 * reported exactly as missing ones), 0 is the admin scope (everything).
 * A broken connection is reset and the query retried once; after that
 * the caller gets READS_UNAVAILABLE (HTTP 503).
 */
#ifndef MERIDIAN_READS_H
#define MERIDIAN_READS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/apikey.h"
#include "common/limits.h"
#include "ledger/ledger.h"

typedef struct reads reads;

typedef enum {
    READS_OK = 0,
    READS_NOT_FOUND = -1,   /* no such row, or not visible in the scope */
    READS_UNAVAILABLE = -2, /* no connection (pool exhausted, database down) */
    READS_TOO_MANY = -3,    /* more rows than the query's bound */
    READS_INTERNAL = -4,    /* unexpected SQL error or OOM (logged) */
} reads_status;

/* Largest answer of reads_all_balances. */
#define READS_BALANCES_MAX 100000

/* Connect one connection (to fail early on a bad dsn) of a pool of
 * pool_size (1..64); the others connect on first use. acquire_timeout_ms
 * bounds the wait for a free connection. Returns NULL with a reason in err. */
reads *reads_create(const char *dsn, int pool_size, int acquire_timeout_ms, char *err,
                    size_t err_size);

/* Like reads_create, but the connections follow route (route.h,
 * borrowed: it must outlive the pool) to the cell's current leader. */
struct route_source;
reads *reads_create_routed(struct route_source *route, int pool_size, int acquire_timeout_ms,
                           char *err, size_t err_size);
void reads_free(reads *r);

/* ---- API keys. */
typedef struct reads_key {
    bool admin;
    int64_t customer_id; /* 0 for admin keys */
    char customer_name[LIMIT_CUSTOMER_NAME_MAX + 1];
} reads_key;

/* The live (not revoked) key with this lookup hash. READS_OK,
 * READS_NOT_FOUND, READS_UNAVAILABLE or READS_INTERNAL. */
reads_status reads_api_key(reads *r, const uint8_t hash[APIKEY_HASH_SIZE], reads_key *out);

/* ---- Accounts. */
typedef struct reads_account {
    ledger_account account;
    char customer_name[LIMIT_CUSTOMER_NAME_MAX + 1];
} reads_account;

reads_status reads_account_get(reads *r, const id128 *id, int64_t scope_customer_id,
                               reads_account *out);

/* The visible accounts among ids[0..count), in request order (an id
 * asked twice appears twice). *out is malloc'd (free()), *found its
 * length; count is at most LIMIT_BATCH_EVENTS_MAX. */
reads_status reads_accounts_lookup(reads *r, const id128 *ids, size_t count,
                                   int64_t scope_customer_id, reads_account **out,
                                   size_t *found);

/* ---- Transfers. */
typedef struct reads_transfer {
    ledger_transfer transfer; /* metadata points into metadata_owned */
    bool has_pending_state;
    ledger_pending_state pending_state;
    int64_t seq;              /* insertion order, for cursors */
    char *metadata_owned;     /* malloc'd or NULL */
} reads_transfer;

/* Free the metadata of count transfers, then the array (NULL is fine). */
void reads_transfers_free(reads_transfer *t, size_t count);

/* A transfer visible in the scope (the customer owns its debit or
 * credit account). On READS_OK release out with reads_transfers_free(out, 0)
 * semantics: free(out->metadata_owned). */
reads_status reads_transfer_get(reads *r, const id128 *id, int64_t scope_customer_id,
                                reads_transfer *out);

/* A page of a history: rows with from_us <= timestamp_us < to_us and
 * (timestamp_us, key) after the cursor, oldest first, at most limit. */
typedef struct reads_page {
    int64_t from_us;
    int64_t to_us;
    size_t limit;          /* 1..LIMIT_PAGE_ROWS_MAX */
    bool has_cursor;
    int64_t cursor_ts_us;
    int64_t cursor_seq;    /* transfers */
    id128 cursor_id;       /* balances: transfer id */
    /* out: */
    bool more;             /* there are rows after this page */
} reads_page;

/* The transfers of account_id (debit or credit side). READS_NOT_FOUND
 * when the account is not visible. *out malloc'd: reads_transfers_free. */
reads_status reads_account_transfers(reads *r, const id128 *account_id,
                                     int64_t scope_customer_id, reads_page *page,
                                     reads_transfer **out, size_t *count);

/* The balance history of account_id. *out malloc'd (free()); account_id
 * of each row is account_id. */
reads_status reads_account_balances(reads *r, const id128 *account_id,
                                    int64_t scope_customer_id, reads_page *page,
                                    ledger_balance_row **out, size_t *count);

/* ---- All balances, one statement (one snapshot). */
typedef struct reads_balance {
    id128 id;
    int32_t ledger;
    int64_t debits_pending;
    int64_t debits_posted;
    int64_t credits_pending;
    int64_t credits_posted;
} reads_balance;

/* Every visible account ordered by id; READS_TOO_MANY past
 * READS_BALANCES_MAX. *out malloc'd (free()). */
reads_status reads_all_balances(reads *r, int64_t scope_customer_id, reads_balance **out,
                                size_t *count);

/* ---- Customers. ids[i] = id of names[i], or 0 when there is none.
 * count at most LIMIT_BATCH_EVENTS_MAX. */
reads_status reads_customer_ids(reads *r, const char *const *names, size_t count,
                                int64_t *ids);

/* ---- Readiness: reachable, writable (not in recovery) and at schema
 * version expected_version. The answer is cached for about a second.
 * Returns 0 when ready, else -1 with a reason in reason. */
int reads_ready(reads *r, int expected_version, char *reason, size_t reason_size);

#endif
