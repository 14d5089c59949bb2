/*
 * etcd.h — Meridian's client for etcd 3.4, its consensus store.
 *
 * The keepers hold a cell's leader key under a lease and bump the cell's
 * epoch (fencing token) in one transaction; meridiand watches the leader
 * key to route writes. There is no packaged C gRPC client, so this module
 * speaks etcd's v3 JSON gateway over HTTP with libcurl (request shapes in
 * /work/shared/DEPENDENCIES.md): keys and values travel base64-encoded,
 * 64-bit numbers as JSON strings, and fields holding their default value
 * are omitted from answers. The pure JSON encoding and decoding lives in
 * etcd_codec.{h,c} so it can be unit-tested without a server.
 *
 * Failover across members: a client holds the list of endpoints and sends
 * each request to its current one. When a member cannot be reached the
 * request moves on to the next member — always when the request was
 * never sent, and for requests that are safe to repeat (reads, lease
 * keepalive, put, delete) also after a timeout. A transaction that may
 * have reached the server is never sent twice: the caller gets
 * ETCD_E_UNAVAILABLE ("outcome unknown") and decides, and the next call
 * starts on the next member.
 *
 * Threads: an etcd_client owns one CURL easy handle and a reusable
 * response buffer; it is NOT thread-safe. Use one client per thread (they
 * are cheap) or serialise calls. A watch (etcd_watch_start) runs its own
 * thread with its own connection and calls back from that thread.
 *
 * Ownership: strings passed in are copied or only read during the call;
 * everything returned in an etcd_kv belongs to the caller and is freed
 * with etcd_kv_release / etcd_kvs_free.
 */
#ifndef MERIDIAN_ETCD_H
#define MERIDIAN_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Result codes: 0 or negative. */
enum {
    ETCD_OK = 0,
    ETCD_E_UNAVAILABLE = -1, /* no endpoint answered, or outcome unknown */
    ETCD_E_NOT_FOUND = -2,   /* key or lease does not exist (any more) */
    ETCD_E_FAILED = -3,      /* a transaction's comparison did not hold */
    ETCD_E_PROTOCOL = -4,    /* unexpected answer from the server */
    ETCD_E_INVALID = -5,     /* bad argument (key too long, empty key...) */
    ETCD_E_LIMIT = -6,       /* a bound was exceeded (answer too large, too many keys) */
};

/* Static name of a result code ("unavailable", "not found", ...). */
const char *etcd_strerror(int rc);

/* One key-value pair as etcd stores it. key and value are heap copies,
 * NUL-terminated for convenience (value may also hold NUL bytes: use
 * value_len). `lease` is 0 when the key has no lease. For a DELETE event
 * only key and mod_revision are set. */
typedef struct etcd_kv {
    char *key;
    char *value;
    size_t value_len;
    int64_t create_revision;
    int64_t mod_revision;
    int64_t version;
    int64_t lease;
} etcd_kv;

/* Free the strings of *kv and zero it; NULL and zeroed structs are fine. */
void etcd_kv_release(etcd_kv *kv);
/* Release `count` entries of an array returned by the library, then the
 * array itself; NULL is fine. */
void etcd_kvs_free(etcd_kv *kvs, size_t count);

typedef struct etcd_client etcd_client;

/* Create a client for the comma-separated endpoint URLs
 * ("http://127.0.0.1:2379,http://127.0.0.1:22379"; at most
 * LIMIT_ETCD_ENDPOINTS_MAX). timeout_ms bounds each HTTP exchange with one
 * member (a request that fails over may take up to one timeout per
 * member). No connection is made here. Returns NULL on a malformed list,
 * a non-positive timeout or allocation failure, with the reason in err
 * (when err_size > 0). Free with etcd_client_free. */
etcd_client *etcd_client_create(const char *endpoints_csv, int timeout_ms,
                                char *err, size_t err_size);
/* Close the connection and free the client; NULL is fine. */
void etcd_client_free(etcd_client *c);
/* Human-readable reason for the last failed call on c (empty after a
 * success). Valid until the next call on c. */
const char *etcd_client_last_error(const etcd_client *c);
/* URL of the member the next request goes to (for logs). */
const char *etcd_client_endpoint(const etcd_client *c);

/* --- Leases. */

/* Grant a lease of ttl_s seconds (1..ETCD_LEASE_TTL_S_MAX; etcd may round
 * up to its minimum TTL). On success *lease_id is the new lease. A grant
 * retried on another member after a timeout may leave an unused lease
 * behind; it expires by itself. */
int etcd_lease_grant(etcd_client *c, int ttl_s, int64_t *lease_id);
/* Renew a lease once. On success *ttl_left_s (may be NULL) is its
 * renewed TTL. ETCD_E_NOT_FOUND when the lease has expired or was
 * revoked (etcd answers without a TTL). */
int etcd_lease_keepalive(etcd_client *c, int64_t lease_id, int64_t *ttl_left_s);
/* Revoke a lease, deleting every key attached to it. ETCD_E_NOT_FOUND if
 * it no longer exists (also when a revoke that timed out on one member
 * had in fact succeeded before being repeated on another). */
int etcd_lease_revoke(etcd_client *c, int64_t lease_id);
/* Remaining TTL of a lease in seconds; ETCD_E_NOT_FOUND if it expired,
 * was revoked or has no whole second left. */
int etcd_lease_ttl(etcd_client *c, int64_t lease_id, int64_t *ttl_left_s);

/* --- Keys. Keys are non-empty C strings of at most LIMIT_ETCD_KEY_BYTES_MAX
 * bytes; values are bytes, at most LIMIT_ETCD_VALUE_BYTES_MAX. */

/* Put key=value, attached to lease_id (0 = no lease). *revision (may be
 * NULL) receives the store revision of the write. ETCD_E_NOT_FOUND when
 * the lease does not exist. */
int etcd_put(etcd_client *c, const char *key, const void *value, size_t value_len,
             int64_t lease_id, int64_t *revision);
/* Read one key into *out (caller releases with etcd_kv_release).
 * ETCD_E_NOT_FOUND when absent; *out is zeroed on any failure. */
int etcd_get(etcd_client *c, const char *key, etcd_kv *out);
/* Read every key starting with prefix (sorted by key) into a new array
 * *out of *count entries (free with etcd_kvs_free; NULL when none).
 * max (1..LIMIT_ETCD_PREFIX_KEYS_MAX) bounds the count: more keys than
 * that is ETCD_E_LIMIT and nothing is returned. An empty prefix reads
 * the whole key space. */
int etcd_get_prefix(etcd_client *c, const char *prefix, etcd_kv **out,
                    size_t *count, size_t max);
/* Delete one key. Deleting an absent key succeeds. */
int etcd_delete(etcd_client *c, const char *key);

/* --- Transactions: if every comparison holds, run `success`, else
 * `failure`, atomically. */

typedef enum {
    ETCD_CMP_VERSION = 0, /* number: the key's version (0 = absent) */
    ETCD_CMP_CREATE,      /* number: create_revision (0 = absent) */
    ETCD_CMP_MOD,         /* number: mod_revision (0 = absent) */
    ETCD_CMP_VALUE,       /* value/value_len */
    ETCD_CMP_LEASE,       /* number: the key's lease id */
} etcd_cmp_target;

typedef enum {
    ETCD_CMP_EQUAL = 0,
    ETCD_CMP_GREATER,
    ETCD_CMP_LESS,
    ETCD_CMP_NOT_EQUAL,
} etcd_cmp_result;

typedef struct etcd_compare {
    const char *key;
    etcd_cmp_target target;
    etcd_cmp_result result;
    int64_t number;    /* for VERSION, CREATE, MOD, LEASE */
    const void *value; /* for VALUE */
    size_t value_len;
} etcd_compare;

typedef enum { ETCD_OP_PUT = 0, ETCD_OP_GET, ETCD_OP_DELETE } etcd_op_kind;

typedef struct etcd_op {
    etcd_op_kind kind;
    const char *key;
    bool prefix;       /* GET/DELETE: every key starting with `key` */
    const void *value; /* PUT */
    size_t value_len;  /* PUT */
    int64_t lease_id;  /* PUT, 0 = none */
} etcd_op;

typedef struct etcd_txn {
    const etcd_compare *compares;
    size_t compare_count;
    const etcd_op *success;
    size_t success_count;
    const etcd_op *failure;
    size_t failure_count;
} etcd_txn;

/* What a transaction did: which branch ran, the store revision after it,
 * and the keys read by the GET operations of that branch, in order. */
typedef struct etcd_txn_result {
    bool succeeded;
    int64_t revision;
    etcd_kv *kvs;
    size_t kv_count;
} etcd_txn_result;

/* Run a transaction (each list at most LIMIT_ETCD_TXN_OPS_MAX entries).
 * Returns ETCD_OK whichever branch ran (see out->succeeded); release
 * *out with etcd_txn_result_release. A transaction is never resent after
 * it may have reached a member: ETCD_E_UNAVAILABLE then means "outcome
 * unknown", read the keys to find out. ETCD_E_NOT_FOUND when a PUT names
 * a lease that does not exist. *out is zeroed on failure. */
int etcd_txn_run(etcd_client *c, const etcd_txn *txn, etcd_txn_result *out);
void etcd_txn_result_release(etcd_txn_result *r);

/* Create key=value (under lease_id, 0 = none) only if the key does not
 * exist (create_revision == 0). *created says whether it was written;
 * when it was not and current_if_not_created is not NULL, that receives
 * the existing pair (release with etcd_kv_release). If created is NULL, a
 * key that exists is reported as ETCD_E_FAILED. */
int etcd_create_if_absent(etcd_client *c, const char *key, const void *value,
                          size_t value_len, int64_t lease_id, bool *created,
                          etcd_kv *current_if_not_created);
/* Compare-and-swap: put key=value (under lease_id) only if the key's
 * mod_revision equals expected_mod_revision (0 = the key must not
 * exist). *succeeded says whether it was written; if succeeded is NULL a
 * failed comparison is ETCD_E_FAILED. */
int etcd_put_if_mod_revision(etcd_client *c, const char *key, const void *value,
                             size_t value_len, int64_t lease_id,
                             int64_t expected_mod_revision, bool *succeeded);

/* --- Watch. */

typedef enum {
    ETCD_EVENT_PUT = 0,
    ETCD_EVENT_DELETE,
    /* History up to `revision` was compacted before the watch could read
     * it: events were lost. Re-read the keys; the watch continues from
     * `revision`. kv is empty. */
    ETCD_EVENT_COMPACTED,
} etcd_event_type;

typedef struct etcd_event {
    etcd_event_type type;
    etcd_kv kv;       /* owned by the library, valid during the callback */
    int64_t revision; /* kv.mod_revision, or the compaction revision */
} etcd_event;

typedef void (*etcd_watch_cb)(const etcd_event *ev, void *arg);

typedef struct etcd_watch etcd_watch;

/* Watch `key` (or every key starting with it when prefix) from
 * start_revision (0 = from now on) on a thread of its own, calling
 * cb(ev, arg) from that thread for each event in revision order. The
 * watch survives member failures: it reconnects (to the next endpoint,
 * with a backoff doubling from LIMIT_ETCD_WATCH_BACKOFF_MS_MIN to _MAX)
 * and resumes after the last revision it delivered, so no event is lost
 * or repeated (unless compacted: ETCD_EVENT_COMPACTED). It asks members
 * to cancel it when they lose their raft leader (so a partitioned member
 * cannot leave it silently stale) and reconnects after
 * ETCD_WATCH_IDLE_RECONNECT_MS without any byte. The callback must not
 * call etcd_watch_stop. Returns NULL on bad arguments or when the thread
 * cannot be started (reason logged). */
etcd_watch *etcd_watch_start(const char *endpoints_csv, const char *key, bool prefix,
                             int64_t start_revision, etcd_watch_cb cb, void *arg);
/* Stop the watch (interrupting a blocked stream at once), join its
 * thread and free it. No callback runs after it returns. NULL is fine. */
void etcd_watch_stop(etcd_watch *w);

/* Longest lease accepted by etcd_lease_grant. */
#define ETCD_LEASE_TTL_S_MAX 86400

/* A silent watch stream is re-established after this long. */
#define ETCD_WATCH_IDLE_RECONNECT_MS 30000

#endif
