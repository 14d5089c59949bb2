/*
 * store.c — one group commit in PostgreSQL (see store.h for the
 * algorithm: load, lock in id order, reload pending state, apply in C,
 * write with few round trips, commit).
 *
 * Round trips per commit: three pipelines.
 *   1. BEGIN; with fencing on (store_set_fence), the epoch the node
 *      recorded in meridian_fencing, which must be the route's (else
 *      STORE_FENCED, nothing written); the stored transfers with the
 *      requested ids and the transfers that post/void/expire events
 *      reference.
 *   2. The accounts, SELECT ... ORDER BY id FOR UPDATE; then, in the
 *      same pipeline and so after those locks are held, the state of the
 *      referenced pending transfers; for account requests the customers
 *      (FOR KEY SHARE) and, when needed, the ledgers table.
 *   3. INSERT/UPDATE with unnest() over array parameters, then COMMIT.
 * Array parameters are PostgreSQL binary arrays (array_recv's format)
 * built in growable buffers owned by the store (bounded by
 * STORE_PARAM_BYTES_MAX) and reused across commits.
 *
 * Every statement but BEGIN and COMMIT is prepared once per connection
 * (its Parse rides in the first pipeline that uses it) and executed by
 * name afterwards, so the server neither parses nor re-analyses it on
 * each commit. A new connection (reconnect, failover, PQreset) starts
 * with none prepared: store.prepared is cleared wherever the connection
 * is replaced. Plans stay custom (session_setup says why).
 *
 * Why the pending state is read after the locks: every change of a
 * pending transfer's state also changes its two accounts' balances, so
 * once those accounts are locked the state cannot change under us; a
 * READ COMMITTED statement started after the lock sees the latest one.
 *
 * Metadata of stored transfers is not copied: the engine keeps pointers
 * into the PGresult of pipeline 1, which the store keeps until the next
 * commit (or store_free), i.e. as long as the batch's contents live.
 *
 * The engine has no notion of customers, so the store checks that the
 * customer of each account to create exists, and reports
 * customer_not_found itself for those events (and linked_event_failed
 * for the rest of their chain) without handing them to the engine.
 */
#include "ledger/store.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/clock.h"
#include "common/id128.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"

#define COMP "store"

/* One array parameter may not grow past this (8,190 metadata of 8 KiB
 * is about 67 MiB in binary; the text literals of store_batch_committed
 * are far smaller). */
#define STORE_PARAM_BYTES_MAX (192u * 1024u * 1024u)
/* Parameter buffers held by a store (the write pipeline uses 44). */
#define STORE_BUFS_MAX 48
/* A parameter buffer grown past this is released after its commit, so an
 * occasional huge batch does not pin its memory for good. */
#define STORE_BUF_KEEP_BYTES_MAX (4u * 1024u * 1024u)
/* Statements in one pipeline and parameters of one statement. */
#define STORE_STMTS_MAX 8
#define STORE_PARAMS_MAX 16
/* Rows of the ledgers table we cache (it holds a handful of currencies). */
#define STORE_LEDGERS_MAX 4096
/* Results we read per statement before giving up on a confused stream. */
#define STORE_RESULTS_PER_STMT_MAX 4

/* A growable byte buffer with a hard maximum. */
typedef struct sbuf {
    char *data;
    size_t len;
    size_t cap;
    /* Binary array parameters (bin_*): element type, count, any NULL. */
    bool binary;
    uint32_t elem_oid;
    uint32_t nelem;
    bool has_null;
} sbuf;

/* A growable array with a hard maximum, for ids and parsed rows. */
typedef struct id_vec {
    id128 *ids;
    size_t count;
    size_t cap;
} id_vec;

struct store {
    PGconn *conn;
    char *dsn;
    /* Set once COMMIT was handed to libpq in the current attempt. */
    bool commit_sent;
    /* Set by the notice receiver when the server warns that a commit
     * was not confirmed by the synchronous standbys. */
    bool syncrep_warning;
    /* Parameter buffers, reused. */
    sbuf bufs[STORE_BUFS_MAX];
    size_t bufs_used;
    /* Id lists of the current commit. */
    id_vec event_ids;  /* sorted: ids of transfer events */
    id_vec pend_ids;   /* sorted: pending ids referenced */
    id_vec acct_ids;   /* accounts to lock */
    id_vec state_ids;  /* ids of the pending-state rows, in row order */
    /* Stored transfers of pipeline 1, sorted by id; metadata points into
     * loaded_res, kept until the next commit. */
    ledger_transfer *loaded;
    size_t loaded_count;
    size_t loaded_cap;
    PGresult *loaded_res;
    /* Ledgers table cache. */
    int32_t *ledgers;
    size_t ledgers_count;
    bool ledgers_loaded;
    /* Customers that exist, of the current commit's account events. */
    int64_t *customers;
    size_t customers_count;
    size_t customers_cap;
    /* Pending-change dedup scratch. */
    size_t *order;
    size_t order_cap;
    /* Timestamps handed to the engine strictly increase per store. */
    int64_t ts_floor_us;
    /* now_us of the last commit attempt (account creation timestamps). */
    int64_t last_now_us;
    /* Epoch the server must have recorded in meridian_fencing; 0: no check. */
    int64_t fence_epoch;
    /* Bit q set: query q is prepared on the current connection. Cleared
     * whenever the connection is replaced (a new session has none). */
    uint32_t prepared;
    /* The session settings of session_setup are in force on the current
     * connection. Cleared with prepared. */
    bool session_ready;
    /* store_set_abandon. */
    store_abandon_fn abandon;
    void *abandon_arg;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static int grow(void **p, size_t *cap, size_t need, size_t elem, size_t max)
{
    if (need <= *cap) return 0;
    if (need > max) return -1;
    size_t n = *cap ? *cap : 64;
    while (n < need) n = n > max / 2 ? max : n * 2;
    void *q = realloc(*p, n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static int idv_push(id_vec *v, const id128 *id)
{
    if (grow((void **)&v->ids, &v->cap, v->count + 1, sizeof(id128),
             (size_t)4 * LIMIT_COMMIT_EVENTS_MAX + 16) < 0)
        return -1;
    v->ids[v->count++] = *id;
    return 0;
}

static int cmp_id(const void *a, const void *b)
{
    return id128_compare((const id128 *)a, (const id128 *)b);
}

static void idv_sort_unique(id_vec *v)
{
    if (v->count < 2) return;
    qsort(v->ids, v->count, sizeof(id128), cmp_id);
    size_t w = 1;
    for (size_t i = 1; i < v->count; i++)
        if (!id128_equal(&v->ids[i], &v->ids[w - 1])) v->ids[w++] = v->ids[i];
    v->count = w;
}

static bool idv_contains(const id_vec *v, const id128 *id)
{
    return v->count && bsearch(id, v->ids, v->count, sizeof(id128), cmp_id);
}

static const ledger_transfer *loaded_find(const store *s, const id128 *id)
{
    size_t lo = 0, hi = s->loaded_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = id128_compare(&s->loaded[mid].id, id);
        if (c == 0) return &s->loaded[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

/* ---- Parameter buffers: PostgreSQL text array literals. */

static sbuf *buf_take(store *s)
{
    mrd_assert(s->bufs_used < STORE_BUFS_MAX);
    sbuf *b = &s->bufs[s->bufs_used++];
    b->len = 0;
    b->binary = false;
    return b;
}

static int sb_reserve(sbuf *b, size_t extra)
{
    if (extra > STORE_PARAM_BYTES_MAX - b->len) return -1;
    return grow((void **)&b->data, &b->cap, b->len + extra + 1, 1,
                STORE_PARAM_BYTES_MAX + 1);
}

static int sb_put(sbuf *b, const char *p, size_t n)
{
    if (sb_reserve(b, n) < 0) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

/* Separator: '{' before the first element, ',' before the others. */
static int sb_sep(sbuf *b)
{
    return sb_put(b, b->len == 0 ? "{" : ",", 1);
}

static int sb_close(sbuf *b)
{
    if (b->len == 0) return sb_put(b, "{}", 2);
    return sb_put(b, "}", 1);
}

static int sb_id(sbuf *b, const id128 *id)
{
    char t[ID128_TEXT_SIZE];
    id128_format(id, t);
    if (sb_sep(b) < 0) return -1;
    return sb_put(b, t, strlen(t));
}

static int sb_i64(sbuf *b, int64_t v)
{
    char t[32];
    int n = snprintf(t, sizeof t, "%" PRId64, v);
    mrd_assert(n > 0 && (size_t)n < sizeof t);
    if (sb_sep(b) < 0) return -1;
    return sb_put(b, t, (size_t)n);
}

/* ---- Parameter buffers: PostgreSQL binary arrays, the format of
 * array_recv: int32 ndim, int32 has-null flag, element type OID, per
 * dimension int32 length and int32 lower bound, then per element an
 * int32 length (-1: NULL) and the element's binary form; all integers
 * big-endian. The server neither parses nor unescapes them (text
 * literals cost it array_in and one input function call per element),
 * and the 5 KB metadata strings go as they are. The one-dimension
 * header is written at bin_close; an empty array has ndim 0. */

#define OID_INT2 21u
#define OID_INT4 23u
#define OID_INT8 20u
#define OID_TEXT 25u
#define OID_UUID 2950u
#define BIN_HEADER_BYTES 20u

static sbuf *bin_take(store *s, uint32_t elem_oid)
{
    sbuf *b = buf_take(s);
    b->binary = true;
    b->elem_oid = elem_oid;
    b->nelem = 0;
    b->has_null = false;
    return b;
}

static void put_be32(char *w, uint32_t v)
{
    w[0] = (char)(v >> 24);
    w[1] = (char)(v >> 16);
    w[2] = (char)(v >> 8);
    w[3] = (char)v;
}

/* One element of n bytes at p, or NULL when p is NULL. */
static int bin_elem(sbuf *b, const void *p, size_t n)
{
    mrd_assert(b->binary);
    if (p && n > (size_t)INT32_MAX) return -1;
    if (b->nelem >= (uint32_t)INT32_MAX) return -1;
    size_t head = b->len == 0 ? BIN_HEADER_BYTES : 0;
    if (sb_reserve(b, head + 4 + (p ? n : 0)) < 0) return -1;
    b->len += head; /* written at bin_close */
    put_be32(b->data + b->len, p ? (uint32_t)n : UINT32_MAX);
    b->len += 4;
    if (p && n > 0) memcpy(b->data + b->len, p, n);
    if (p) b->len += n;
    else b->has_null = true;
    b->nelem++;
    return 0;
}

static int bin_i64(sbuf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    char t[8];
    for (int i = 0; i < 8; i++) t[i] = (char)(u >> (56 - 8 * i));
    return bin_elem(b, t, sizeof t);
}

/* Out of the column's range is an error, as the server's int4 and int2
 * input functions make it for a text literal. */
static int bin_i32(sbuf *b, int64_t v)
{
    if (v < INT32_MIN || v > INT32_MAX) return -1;
    char t[4];
    put_be32(t, (uint32_t)(int32_t)v);
    return bin_elem(b, t, sizeof t);
}

static int bin_i16(sbuf *b, int64_t v)
{
    if (v < INT16_MIN || v > INT16_MAX) return -1;
    uint16_t u = (uint16_t)(int16_t)v;
    char t[2] = {(char)(u >> 8), (char)u};
    return bin_elem(b, t, sizeof t);
}

/* uuid's binary form is its 16 bytes, most significant first: id128's. */
static int bin_id(sbuf *b, const id128 *id)
{
    return bin_elem(b, id->bytes, sizeof id->bytes);
}

static int bin_id_or_null(sbuf *b, const id128 *id)
{
    return bin_elem(b, id128_is_zero(id) ? NULL : id->bytes, sizeof id->bytes);
}

/* text's binary form is its bytes (the server still checks encoding). */
static int bin_text_or_null(sbuf *b, const char *p, size_t n)
{
    return bin_elem(b, p, p ? n : 0);
}

static int bin_close(sbuf *b)
{
    mrd_assert(b->binary);
    if (b->len == 0) {
        if (sb_reserve(b, 12) < 0) return -1;
        put_be32(b->data, 0); /* ndim 0: empty */
        put_be32(b->data + 4, 0);
        put_be32(b->data + 8, b->elem_oid);
        b->len = 12;
        return 0;
    }
    mrd_assert(b->len >= BIN_HEADER_BYTES);
    put_be32(b->data, 1);
    put_be32(b->data + 4, b->has_null ? 1 : 0);
    put_be32(b->data + 8, b->elem_oid);
    put_be32(b->data + 12, b->nelem);
    put_be32(b->data + 16, 1); /* lower bound */
    return 0;
}

/* ---- Parsing text results. */

static int parse_i64(const char *t, int64_t *out)
{
    if (!t || !*t) return -1;
    errno = 0;
    char *end = NULL;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || !end || *end != '\0') return -1;
    *out = (int64_t)v;
    return 0;
}

static int parse_i32(const char *t, int32_t *out)
{
    int64_t v;
    if (parse_i64(t, &v) < 0 || v < INT32_MIN || v > INT32_MAX) return -1;
    *out = (int32_t)v;
    return 0;
}

static int parse_u32(const char *t, uint32_t *out)
{
    int64_t v;
    if (parse_i64(t, &v) < 0 || v < 0 || v > (int64_t)UINT32_MAX) return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_id(const PGresult *r, int row, int col, id128 *out)
{
    if (PQgetisnull(r, row, col)) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    return id128_parse(PQgetvalue(r, row, col), out);
}

#define TRANSFER_COLS                                                          \
    "id, debit_account_id, credit_account_id, pending_id, amount, ledger, "   \
    "code, flags, timeout_s, user_data_128, user_data_64, user_data_32, "     \
    "metadata, customer_id, timestamp_us"

static int parse_transfer(const PGresult *r, int row, ledger_transfer *t)
{
    memset(t, 0, sizeof *t);
    if (PQnfields(r) != 15) return -1;
    if (parse_id(r, row, 0, &t->id) < 0 || parse_id(r, row, 1, &t->debit_account_id) < 0 ||
        parse_id(r, row, 2, &t->credit_account_id) < 0 ||
        parse_id(r, row, 3, &t->pending_id) < 0 ||
        parse_i64(PQgetvalue(r, row, 4), &t->amount) < 0 ||
        parse_i32(PQgetvalue(r, row, 5), &t->ledger) < 0 ||
        parse_i32(PQgetvalue(r, row, 6), &t->code) < 0 ||
        parse_u32(PQgetvalue(r, row, 7), &t->flags) < 0 ||
        parse_u32(PQgetvalue(r, row, 8), &t->timeout_s) < 0 ||
        parse_id(r, row, 9, &t->user_data_128) < 0 ||
        parse_i64(PQgetvalue(r, row, 10), &t->user_data_64) < 0 ||
        parse_i32(PQgetvalue(r, row, 11), &t->user_data_32) < 0 ||
        parse_i64(PQgetvalue(r, row, 13), &t->customer_id) < 0 ||
        parse_i64(PQgetvalue(r, row, 14), &t->timestamp_us) < 0)
        return -1;
    if (!PQgetisnull(r, row, 12)) {
        t->metadata = PQgetvalue(r, row, 12);
        t->metadata_len = (size_t)PQgetlength(r, row, 12);
    }
    return 0;
}

#define ACCOUNT_COLS                                                           \
    "id, customer_id, ledger, code, flags, debits_pending, debits_posted, "   \
    "credits_pending, credits_posted, user_data_128, user_data_64, "          \
    "user_data_32, timestamp_us"

static int parse_account(const PGresult *r, int row, ledger_account *a)
{
    memset(a, 0, sizeof *a);
    if (PQnfields(r) != 13) return -1;
    if (parse_id(r, row, 0, &a->id) < 0 ||
        parse_i64(PQgetvalue(r, row, 1), &a->customer_id) < 0 ||
        parse_i32(PQgetvalue(r, row, 2), &a->ledger) < 0 ||
        parse_i32(PQgetvalue(r, row, 3), &a->code) < 0 ||
        parse_u32(PQgetvalue(r, row, 4), &a->flags) < 0 ||
        parse_i64(PQgetvalue(r, row, 5), &a->debits_pending) < 0 ||
        parse_i64(PQgetvalue(r, row, 6), &a->debits_posted) < 0 ||
        parse_i64(PQgetvalue(r, row, 7), &a->credits_pending) < 0 ||
        parse_i64(PQgetvalue(r, row, 8), &a->credits_posted) < 0 ||
        parse_id(r, row, 9, &a->user_data_128) < 0 ||
        parse_i64(PQgetvalue(r, row, 10), &a->user_data_64) < 0 ||
        parse_i32(PQgetvalue(r, row, 11), &a->user_data_32) < 0 ||
        parse_i64(PQgetvalue(r, row, 12), &a->timestamp_us) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Connection                                                          */

static bool contains(const char *hay, const char *needle)
{
    return hay && strstr(hay, needle) != NULL;
}

/* A commit that was not confirmed by the synchronous standbys (the
 * wait was cancelled) must not be acknowledged: remember the warning. */
static void notice_receiver(void *arg, const PGresult *r)
{
    store *s = arg;
    const char *primary = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    if (contains(detail, "might not have been replicated") ||
        contains(primary, "synchronous replication")) {
        s->syncrep_warning = true;
        log_warn(COMP, "commit not confirmed by synchronous standbys: %s (%s)",
                 primary ? primary : "?", detail ? detail : "");
        return;
    }
    log_debug(COMP, "server notice: %s", primary ? primary : "?");
}

/* Connection defaults that the DSN may override: fail fast on a dead
 * peer instead of blocking a worker forever, and prefer a primary. */
static PGconn *open_conn(const char *dsn)
{
    const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                          "keepalives_interval", "keepalives_count",
                          "tcp_user_timeout", "application_name",
                          "target_session_attrs", "dbname", NULL};
    const char *vals[] = {"5", "1", "5", "2", "3", "15000", "meridiand",
                          "read-write", dsn, NULL};
    return PQconnectdbParams(keys, vals, 1);
}

store *store_connect(const char *dsn, char *err, size_t err_size)
{
    mrd_assert(dsn && err && err_size > 0);
    store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->dsn = strdup(dsn);
    if (!s->dsn) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    s->conn = open_conn(dsn);
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        const char *m = s->conn ? PQerrorMessage(s->conn) : "out of memory";
        snprintf(err, err_size, "%.*s", (int)strcspn(m, "\n"), m);
        goto fail;
    }
    PQsetNoticeReceiver(s->conn, notice_receiver, s);
    return s;
fail:
    store_free(s);
    return NULL;
}

void store_free(store *s)
{
    if (!s) return;
    if (s->conn) PQfinish(s->conn);
    PQclear(s->loaded_res);
    for (size_t i = 0; i < STORE_BUFS_MAX; i++) free(s->bufs[i].data);
    free(s->event_ids.ids);
    free(s->pend_ids.ids);
    free(s->acct_ids.ids);
    free(s->state_ids.ids);
    free(s->loaded);
    free(s->ledgers);
    free(s->customers);
    free(s->order);
    free(s->dsn);
    free(s);
}

int store_reconnect(store *s)
{
    mrd_assert(s);
    if (s->conn) PQfinish(s->conn);
    s->ledgers_loaded = false;
    s->prepared = 0;
    s->session_ready = false;
    s->conn = open_conn(s->dsn);
    if (!s->conn || PQstatus(s->conn) != CONNECTION_OK) {
        const char *m = s->conn ? PQerrorMessage(s->conn) : "out of memory";
        log_warn(COMP, "cannot connect to database: %.*s", (int)strcspn(m, "\n"), m);
        return -1;
    }
    PQsetNoticeReceiver(s->conn, notice_receiver, s);
    return 0;
}

int store_reconnect_dsn(store *s, const char *dsn)
{
    mrd_assert(s && dsn);
    char *copy = strdup(dsn);
    if (!copy) {
        log_error(COMP, "out of memory");
        return -1;
    }
    free(s->dsn);
    s->dsn = copy;
    return store_reconnect(s);
}

void store_set_fence(store *s, int64_t epoch)
{
    mrd_assert(s && epoch >= 0);
    s->fence_epoch = epoch;
}

/* ------------------------------------------------------------------ */
/* Pipelines and error mapping                                         */

/* The statements of the commit path that are prepared once per
 * connection (named "mrd_<n>"); 0 is a statement sent unprepared (BEGIN
 * and COMMIT: nothing to plan). A bit of store.prepared per query. */
typedef enum {
    Q_NONE = 0,
    Q_FENCE,
    Q_LOAD_TRANSFERS,
    Q_LOCK_ACCOUNTS,
    Q_LOAD_PENDING,
    Q_LOAD_CUSTOMERS,
    Q_LOAD_LEDGERS,
    Q_INSERT_ACCOUNTS,
    Q_INSERT_TRANSFERS,
    Q_UPDATE_BALANCES,
    Q_UPSERT_PENDING,
    Q_INSERT_BALANCES,
    Q_COUNT
} query_id;

typedef struct stmt {
    const char *what; /* for logs */
    query_id query;   /* Q_NONE: sent unprepared */
    const char *sql;  /* the same text every time for one query */
    int nparams;
    const char *values[STORE_PARAMS_MAX];
    int lengths[STORE_PARAMS_MAX]; /* of binary values */
    int formats[STORE_PARAMS_MAX]; /* 0 text, 1 binary */
} stmt;

/* Parameter k of x is the contents of b (closed). */
static void stmt_param(stmt *x, int k, const sbuf *b)
{
    mrd_assert(k >= 0 && k < x->nparams && k < STORE_PARAMS_MAX);
    mrd_assert(b->len <= (size_t)INT_MAX);
    x->values[k] = b->data;
    x->lengths[k] = (int)b->len;
    x->formats[k] = b->binary ? 1 : 0;
}

static bool conn_lost(const store *s)
{
    return !s->conn || PQstatus(s->conn) == CONNECTION_BAD;
}

static store_status lost_status(const store *s)
{
    return s->commit_sent ? STORE_AMBIGUOUS : STORE_CONN;
}

/* Map one failed result to a status; logs. */
static store_status classify(store *s, const PGresult *r, const char *what)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    if (!msg) msg = PQresultErrorMessage(r);
    if (!state) {
        /* Generated by libpq: the connection broke. */
        log_warn(COMP, "database connection lost during %s: %s", what, msg);
        return conn_lost(s) ? lost_status(s) : STORE_FATAL;
    }
    if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "23505")) {
        log_info(COMP, "commit conflict during %s, retrying: SQLSTATE %s: %s (%s)",
                 what, state, msg, detail ? detail : "");
        return STORE_RETRY;
    }
    if (!strcmp(state, "42P01") && contains(msg, "meridian_fencing")) {
        log_warn(COMP, "node records no epoch (no meridian_fencing table) during %s: "
                       "refusing to write to it", what);
        return STORE_FENCED;
    }
    if (!strcmp(state, "25006") || contains(msg, "read-only transaction")) {
        log_warn(COMP, "database is read-only during %s: %s", what, msg);
        return STORE_READONLY;
    }
    if (!strncmp(state, "08", 2) || !strcmp(state, "57P01") ||
        !strcmp(state, "57P02") || !strcmp(state, "57P03")) {
        log_warn(COMP, "database connection lost during %s: SQLSTATE %s: %s",
                 what, state, msg);
        return STORE_CONN;
    }
    log_error(COMP, "commit failed during %s: SQLSTATE %s: %s detail=\"%s\"", what,
              state, msg, detail ? detail : "");
    return STORE_FATAL;
}

void store_set_abandon(store *s, store_abandon_fn fn, void *arg)
{
    mrd_assert(s);
    s->abandon = fn;
    s->abandon_arg = arg;
}

/* Wait until a result can be read without blocking (PQisBusy false) or
 * timeout_ms passes. When a result is not already parsed, PQconsumeInput
 * runs before every poll: it also drains data that TLS already decrypted
 * into its own buffer, which poll on the socket would never report. (A
 * result that is already there costs no system call: the pipeline's
 * later results usually are.) Returns 1 ready, 0 timed out, -1 the
 * connection failed (the next PQgetResult reports it). */
static int wait_ready(store *s, int timeout_ms)
{
    if (conn_lost(s)) return -1;
    if (!PQisBusy(s->conn)) return 1;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        if (conn_lost(s) || !PQconsumeInput(s->conn)) return -1;
        if (!PQisBusy(s->conn)) return 1;
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0) return 0;
        struct pollfd p = {.fd = PQsocket(s->conn), .events = POLLIN};
        if (p.fd < 0) return -1;
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) return -1;
    }
}

/* Make the connection fail at once: libpq then sees the end of the
 * stream and the caller's usual lost-connection path runs. */
static void drop_connection(store *s)
{
    if (conn_lost(s)) return;
    shutdown(PQsocket(s->conn), SHUT_RDWR);
    (void)PQconsumeInput(s->conn); /* reads EOF: CONNECTION_BAD */
}

/* Before a PQgetResult of the write pipeline: wait for the server's
 * answer, asking the abandon hook every STORE_ABANDON_POLL_MS; when it
 * says give up, drop the connection. Without a hook, returns at once
 * (PQgetResult waits as long as libpq does). */
static void await_result(store *s, const char *what)
{
    if (!s->abandon) return;
    for (;;) {
        int rc = wait_ready(s, STORE_ABANDON_POLL_MS);
        if (rc != 0) return;
        if (s->abandon(s->abandon_arg)) {
            log_warn(COMP, "no answer from the database during %s, and its owner gave up "
                           "waiting (the leader moved): closing the connection", what);
            drop_connection(s);
            return;
        }
    }
}

/* Name of query q's prepared statement. */
static void query_name(query_id q, char name[16])
{
    mrd_assert(q > Q_NONE && q < Q_COUNT);
    snprintf(name, 16, "mrd_%d", (int)q);
}

/* Send n statements and one sync, read every result into out[] (the
 * caller clears them). commit_index is the index of COMMIT or -1.
 * A statement whose query is not yet prepared on this connection is
 * preceded, in the same pipeline, by its Parse (PQsendPrepare); it is
 * marked prepared once the server accepted it, so the first commit on
 * a connection costs no extra round trip. Returns STORE_OK when every
 * statement succeeded. */
static store_status pipeline_run(store *s, const stmt *st, int n, PGresult **out,
                                 int commit_index)
{
    _Static_assert(Q_COUNT <= 32, "store.prepared holds one bit per query");
    mrd_assert(n > 0 && n <= STORE_STMTS_MAX);
    /* Slots in send order: a statement's prepare (if any), then it. */
    struct {
        int stmt;
        bool prepare;
    } slot[2 * STORE_STMTS_MAX];
    PGresult *prep[STORE_STMTS_MAX];
    int nslots = 0;
    for (int i = 0; i < n; i++) {
        out[i] = NULL;
        prep[i] = NULL;
        query_id q = st[i].query;
        mrd_assert(q >= Q_NONE && q < Q_COUNT);
        if (q != Q_NONE && !(s->prepared & (1u << q))) {
            bool twice = false; /* a query prepared earlier in this pipeline */
            for (int j = 0; j < i; j++) twice = twice || st[j].query == q;
            mrd_assert(!twice);
            slot[nslots].stmt = i;
            slot[nslots++].prepare = true;
        }
        slot[nslots].stmt = i;
        slot[nslots++].prepare = false;
    }
    if (conn_lost(s)) return STORE_CONN;
    if (!PQenterPipelineMode(s->conn)) {
        log_warn(COMP, "cannot enter pipeline mode: %s", PQerrorMessage(s->conn));
        return conn_lost(s) ? STORE_CONN : STORE_FATAL;
    }
    int sent = 0;
    for (; sent < nslots; sent++) {
        const stmt *x = &st[slot[sent].stmt];
        char name[16];
        int ok;
        if (slot[sent].stmt == commit_index) s->commit_sent = true;
        if (x->query == Q_NONE) {
            ok = PQsendQueryParams(s->conn, x->sql, x->nparams, NULL, x->values, NULL, NULL, 0);
        } else {
            query_name(x->query, name);
            ok = slot[sent].prepare
                     ? PQsendPrepare(s->conn, name, x->sql, x->nparams, NULL)
                     : PQsendQueryPrepared(s->conn, name, x->nparams, x->values,
                                                   x->lengths, x->formats, 0);
        }
        if (!ok) break;
    }
    if (sent < nslots) {
        /* Nothing was flushed by a failing send unless libpq's buffer
         * filled; treat like a lost connection (ambiguous once COMMIT
         * was queued). */
        log_warn(COMP, "cannot send %s: %s", st[slot[sent].stmt].what,
                 PQerrorMessage(s->conn));
        if (!conn_lost(s)) PQpipelineSync(s->conn);
    } else if (!PQpipelineSync(s->conn)) {
        log_warn(COMP, "cannot send pipeline: %s", PQerrorMessage(s->conn));
    }

    /* Read one result per slot (each followed by NULL), then the sync.
     * An aborted pipeline yields PGRES_PIPELINE_ABORTED. */
    bool broken = false;
    for (int i = 0; i < sent && !broken; i++) {
        PGresult **dst = slot[i].prepare ? &prep[slot[i].stmt] : &out[slot[i].stmt];
        int k = 0;
        await_result(s, st[slot[i].stmt].what);
        for (PGresult *r; (r = PQgetResult(s->conn)) != NULL;) {
            if (k++ == 0) *dst = r;
            else PQclear(r);
            if (k > STORE_RESULTS_PER_STMT_MAX) break;
        }
        if (!*dst || conn_lost(s)) broken = true;
    }
    if (!broken && !conn_lost(s)) {
        await_result(s, "sync");
        PGresult *r = PQgetResult(s->conn);
        if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) broken = true;
        PQclear(r);
    }
    if (!conn_lost(s) && !PQexitPipelineMode(s->conn)) broken = true;

    /* The first slot that failed decides: an error result means the
     * transaction was aborted there and nothing was committed. */
    store_status rc = STORE_OK;
    bool decided = false;
    for (int i = 0; i < nslots && !decided; i++) {
        int si = slot[i].stmt;
        const PGresult *r = slot[i].prepare ? prep[si] : out[si];
        if (!r) break;
        ExecStatusType es = PQresultStatus(r);
        if (es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK) {
            if (slot[i].prepare) s->prepared |= 1u << st[si].query;
            continue;
        }
        if (es == PGRES_PIPELINE_ABORTED) continue; /* after the failure */
        decided = true;
        if (es == PGRES_FATAL_ERROR) {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (slot[i].prepare && state && !strcmp(state, "42P05")) {
                /* Already prepared on this session (we lost track of
                 * an earlier Parse): use it, and run the batch again. */
                log_warn(COMP, "statement for %s was already prepared; retrying", st[si].what);
                s->prepared |= 1u << st[si].query;
                rc = STORE_RETRY;
                break;
            }
            /* An error the server sent for a statement before COMMIT
             * aborted the transaction: nothing was committed. One that
             * libpq made up (no SQLSTATE: the connection broke) or one
             * on COMMIT itself proves nothing once COMMIT was sent. */
            rc = classify(s, r, st[si].what);
            if (rc == STORE_CONN && commit_index >= 0 && si >= commit_index)
                rc = STORE_AMBIGUOUS;
            break;
        }
        log_error(COMP, "unexpected result status %s during %s", PQresStatus(es), st[si].what);
        rc = STORE_FATAL;
    }
    for (int i = 0; i < n; i++) PQclear(prep[i]);
    if (decided) return rc;
    if (sent < nslots || broken || !out[n - 1]) {
        if (conn_lost(s)) return lost_status(s);
        log_error(COMP, "incomplete pipeline result during %s: %s",
                  st[0].what, PQerrorMessage(s->conn));
        return s->commit_sent ? STORE_AMBIGUOUS : STORE_FATAL;
    }
    return STORE_OK;
}

static void clear_results(PGresult **r, int n)
{
    for (int i = 0; i < n; i++) {
        PQclear(r[i]);
        r[i] = NULL;
    }
}

/* Leave no transaction open after a failed attempt. */
static void rollback_quietly(store *s)
{
    if (conn_lost(s)) return;
    if (PQpipelineStatus(s->conn) != PQ_PIPELINE_OFF) {
        /* pipeline_run always drains; if it could not, start over. */
        s->prepared = 0;
        s->session_ready = false;
        PQreset(s->conn);
        return;
    }
    PGTransactionStatusType ts = PQtransactionStatus(s->conn);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        PGresult *r = PQexec(s->conn, "ROLLBACK");
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            log_warn(COMP, "rollback failed: %s", PQerrorMessage(s->conn));
        PQclear(r);
    }
}

/* ------------------------------------------------------------------ */
/* Commit                                                              */

static bool is_post_or_void(const ledger_transfer *t)
{
    return (t->flags & (LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING)) != 0;
}

static bool ledger_cached(const store *s, int32_t ledger)
{
    for (size_t i = 0; i < s->ledgers_count; i++)
        if (s->ledgers[i] == ledger) return true;
    return false;
}

static bool customer_exists(const store *s, int64_t id)
{
    /* s->customers is sorted (ORDER BY id). */
    size_t lo = 0, hi = s->customers_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->customers[mid] == id) return true;
        if (s->customers[mid] < id) lo = mid + 1;
        else hi = mid;
    }
    return false;
}

/* Collect the ids of pipeline 1. Returns 0 or -1 (out of memory). */
static int collect_transfer_ids(store *s, const store_request *reqs, size_t n)
{
    s->event_ids.count = s->pend_ids.count = s->acct_ids.count = 0;
    for (size_t r = 0; r < n; r++) {
        const store_request *q = &reqs[r];
        for (size_t i = 0; i < q->count; i++) {
            if (q->kind == STORE_REQ_TRANSFERS) {
                const ledger_transfer *t = &q->transfers[i];
                if (!id128_is_zero(&t->id) && idv_push(&s->event_ids, &t->id) < 0)
                    return -1;
                if (is_post_or_void(t) && !id128_is_zero(&t->pending_id) &&
                    idv_push(&s->pend_ids, &t->pending_id) < 0)
                    return -1;
            } else if (q->kind == STORE_REQ_EXPIRE) {
                if (!id128_is_zero(&q->transfers[i].id) &&
                    idv_push(&s->pend_ids, &q->transfers[i].id) < 0)
                    return -1;
            }
        }
    }
    idv_sort_unique(&s->event_ids);
    idv_sort_unique(&s->pend_ids);
    return 0;
}

/* Collect the accounts to lock. The ids that decide the outcome come
 * first; ids named by a post/void event that differ from its pending
 * transfer's (the event fails either way) only within the batch's
 * bound of two accounts per event. */
static int collect_account_ids(store *s, const store_request *reqs, size_t n,
                               size_t events)
{
    id_vec *v = &s->acct_ids;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r = 0; r < n; r++) {
            const store_request *q = &reqs[r];
            for (size_t i = 0; i < q->count; i++) {
                if (q->kind == STORE_REQ_ACCOUNTS) {
                    if (pass == 0 && !id128_is_zero(&q->accounts[i].id) &&
                        idv_push(v, &q->accounts[i].id) < 0)
                        return -1;
                    continue;
                }
                const ledger_transfer *t = &q->transfers[i];
                const ledger_transfer *p = NULL;
                if (q->kind == STORE_REQ_EXPIRE) p = loaded_find(s, &t->id);
                else if (is_post_or_void(t)) p = loaded_find(s, &t->pending_id);
                const id128 *ids[2] = {&t->debit_account_id, &t->credit_account_id};
                if (pass == 0) {
                    if (p) {
                        ids[0] = &p->debit_account_id;
                        ids[1] = &p->credit_account_id;
                    } else if (q->kind == STORE_REQ_EXPIRE) {
                        continue;
                    }
                    for (int k = 0; k < 2; k++)
                        if (!id128_is_zero(ids[k]) && idv_push(v, ids[k]) < 0) return -1;
                } else if (p && q->kind == STORE_REQ_TRANSFERS) {
                    const id128 *pids[2] = {&p->debit_account_id, &p->credit_account_id};
                    for (int k = 0; k < 2; k++) {
                        if (id128_is_zero(ids[k]) || id128_equal(ids[k], pids[k])) continue;
                        if (v->count >= 2 * events) return 0;
                        if (idv_push(v, ids[k]) < 0) return -1;
                    }
                }
            }
        }
        idv_sort_unique(v);
    }
    return 0;
}

/* Pipeline 1: BEGIN and the stored transfers. */
static store_status load_transfers(store *s)
{
    PQclear(s->loaded_res);
    s->loaded_res = NULL;
    s->loaded_count = 0;

    sbuf *ids = bin_take(s, OID_UUID);
    for (size_t i = 0; i < s->event_ids.count; i++)
        if (bin_id(ids, &s->event_ids.ids[i]) < 0) goto oom;
    for (size_t i = 0; i < s->pend_ids.count; i++)
        if (bin_id(ids, &s->pend_ids.ids[i]) < 0) goto oom;
    if (bin_close(ids) < 0) goto oom;

    /* With fencing on, the epoch check rides in the same round trip,
     * inside the transaction and before anything is written. */
    stmt st[3];
    int nst = 0, i_fence = -1;
    st[nst++] = (stmt){.what = "begin", .sql = "BEGIN ISOLATION LEVEL READ COMMITTED"};
    if (s->fence_epoch > 0) {
        i_fence = nst;
        st[nst++] = (stmt){.what = "fencing check", .query = Q_FENCE,
                           .sql = "SELECT epoch FROM meridian_fencing WHERE id = 1"};
    }
    int i_load = nst;
    st[nst++] = (stmt){.what = "load transfers", .query = Q_LOAD_TRANSFERS,
                       .sql = "SELECT " TRANSFER_COLS " FROM transfers WHERE id = ANY($1::uuid[]) "
                              "ORDER BY id",
                       .nparams = 1};
    stmt_param(&st[i_load], 0, ids);
    PGresult *res[3];
    store_status rc = pipeline_run(s, st, nst, res, -1);
    if (rc != STORE_OK) {
        clear_results(res, nst);
        return rc;
    }
    if (i_fence >= 0) {
        int64_t epoch = 0;
        bool ok = PQntuples(res[i_fence]) == 1 && !PQgetisnull(res[i_fence], 0, 0) &&
                  parse_i64(PQgetvalue(res[i_fence], 0, 0), &epoch) == 0;
        if (!ok || epoch != s->fence_epoch) {
            if (ok)
                log_warn(COMP, "node is at epoch %" PRId64 ", the route expects %" PRId64
                               ": refusing to write to it", epoch, s->fence_epoch);
            else
                log_warn(COMP, "node records no epoch (expected %" PRId64
                               "): refusing to write to it", s->fence_epoch);
            clear_results(res, nst);
            return STORE_FENCED;
        }
    }
    for (int i = 0; i < nst; i++)
        if (i != i_load) PQclear(res[i]);
    s->loaded_res = res[i_load];
    int rows = PQntuples(s->loaded_res);
    if (grow((void **)&s->loaded, &s->loaded_cap, (size_t)rows + 1,
             sizeof(ledger_transfer), (size_t)2 * LIMIT_COMMIT_EVENTS_MAX + 1) < 0)
        goto oom;
    for (int i = 0; i < rows; i++) {
        if (parse_transfer(s->loaded_res, i, &s->loaded[i]) < 0) {
            log_error(COMP, "cannot parse stored transfer row %d", i);
            return STORE_FATAL;
        }
    }
    s->loaded_count = (size_t)rows;
    return STORE_OK;
oom:
    log_error(COMP, "out of memory building the transfer lookup");
    return STORE_FATAL;
}

static int add_ledgers(store *s, const PGresult *r)
{
    int rows = PQntuples(r);
    if (rows > STORE_LEDGERS_MAX) {
        log_error(COMP, "ledgers table has more than %d rows", STORE_LEDGERS_MAX);
        return -1;
    }
    size_t cap = 0;
    int32_t *l = NULL;
    if (grow((void **)&l, &cap, (size_t)rows + 1, sizeof(int32_t), STORE_LEDGERS_MAX + 1) < 0)
        return -1;
    for (int i = 0; i < rows; i++) {
        if (parse_i32(PQgetvalue(r, i, 0), &l[i]) < 0) {
            free(l);
            return -1;
        }
    }
    free(s->ledgers);
    s->ledgers = l;
    s->ledgers_count = (size_t)rows;
    s->ledgers_loaded = true;
    return 0;
}

/* Pipeline 2: lock accounts, reload pending state, customers, ledgers.
 * Feeds the batch. */
static store_status load_locked(store *s, ledger_batch *b, const store_request *reqs,
                                size_t n)
{
    bool has_accounts = false, need_ledgers = !s->ledgers_loaded;
    for (size_t r = 0; r < n; r++) {
        if (reqs[r].kind != STORE_REQ_ACCOUNTS) continue;
        has_accounts = true;
        for (size_t i = 0; i < reqs[r].count && !need_ledgers; i++)
            if (reqs[r].accounts[i].ledger > 0 && !ledger_cached(s, reqs[r].accounts[i].ledger))
                need_ledgers = true;
    }
    need_ledgers = need_ledgers && has_accounts;

    stmt st[4];
    int nst = 0, i_acct = -1, i_pend = -1, i_cust = -1, i_ledg = -1;
    sbuf *acct = bin_take(s, OID_UUID);
    for (size_t i = 0; i < s->acct_ids.count; i++)
        if (bin_id(acct, &s->acct_ids.ids[i]) < 0) goto oom;
    if (bin_close(acct) < 0) goto oom;
    i_acct = nst;
    st[nst++] = (stmt){.what = "lock accounts", .query = Q_LOCK_ACCOUNTS,
                       .sql = "SELECT " ACCOUNT_COLS " FROM accounts WHERE id = "
                              "ANY($1::uuid[]) ORDER BY id FOR UPDATE",
                       .nparams = 1};
    stmt_param(&st[i_acct], 0, acct);
    if (s->pend_ids.count > 0) {
        sbuf *pend = bin_take(s, OID_UUID);
        for (size_t i = 0; i < s->pend_ids.count; i++)
            if (bin_id(pend, &s->pend_ids.ids[i]) < 0) goto oom;
        if (bin_close(pend) < 0) goto oom;
        i_pend = nst;
        st[nst++] = (stmt){.what = "load pending state", .query = Q_LOAD_PENDING,
                           .sql = "SELECT id, status, expires_at_us, amount_posted "
                                  "FROM pending_transfers WHERE id = ANY($1::uuid[]) "
                                  "ORDER BY id",
                           .nparams = 1};
        stmt_param(&st[i_pend], 0, pend);
    }
    if (has_accounts) {
        sbuf *cust = bin_take(s, OID_INT8);
        for (size_t r = 0; r < n; r++)
            for (size_t i = 0; reqs[r].kind == STORE_REQ_ACCOUNTS && i < reqs[r].count; i++)
                if (bin_i64(cust, reqs[r].accounts[i].customer_id) < 0) goto oom;
        if (bin_close(cust) < 0) goto oom;
        i_cust = nst;
        st[nst++] = (stmt){.what = "load customers", .query = Q_LOAD_CUSTOMERS,
                           .sql = "SELECT id FROM customers WHERE id = ANY($1::int8[]) "
                                  "ORDER BY id FOR KEY SHARE",
                           .nparams = 1};
        stmt_param(&st[i_cust], 0, cust);
    }
    if (need_ledgers) {
        i_ledg = nst;
        st[nst++] = (stmt){.what = "load ledgers", .query = Q_LOAD_LEDGERS,
                           .sql = "SELECT id FROM ledgers ORDER BY id LIMIT 4097"};
    }

    PGresult *res[4];
    store_status rc = pipeline_run(s, st, nst, res, -1);
    if (rc != STORE_OK) goto out;
    rc = STORE_FATAL;

    /* Accounts, in id order. */
    for (int i = 0; i < PQntuples(res[i_acct]); i++) {
        ledger_account a;
        if (parse_account(res[i_acct], i, &a) < 0) {
            log_error(COMP, "cannot parse account row %d", i);
            goto out;
        }
        if (ledger_batch_add_account(b, &a) < 0) {
            log_error(COMP, "batch account capacity exceeded (%zu ids)", s->acct_ids.count);
            goto out;
        }
    }
    /* Stored transfers: the requested ids for idempotency; referenced
     * pending transfers with their fresh state (rows sorted by id). */
    s->state_ids.count = 0;
    for (int k = 0; i_pend >= 0 && k < PQntuples(res[i_pend]); k++) {
        id128 pid;
        if (id128_parse(PQgetvalue(res[i_pend], k, 0), &pid) < 0 ||
            idv_push(&s->state_ids, &pid) < 0) {
            log_error(COMP, "cannot read pending state row %d", k);
            goto out;
        }
    }
    for (size_t i = 0; i < s->loaded_count; i++) {
        const ledger_transfer *t = &s->loaded[i];
        if (idv_contains(&s->event_ids, &t->id) && ledger_batch_add_transfer(b, t) < 0) {
            log_error(COMP, "batch transfer capacity exceeded");
            goto out;
        }
        if (!idv_contains(&s->pend_ids, &t->id)) continue;
        const id128 *hit = s->state_ids.count
                               ? bsearch(&t->id, s->state_ids.ids, s->state_ids.count,
                                         sizeof(id128), cmp_id)
                               : NULL;
        int row = hit ? (int)(hit - s->state_ids.ids) : -1;
        if (row < 0) {
            /* Not a pending transfer: the engine tells not_pending from
             * the stored row. Past the bound it reports not_found. */
            if (!idv_contains(&s->event_ids, &t->id) && ledger_batch_add_transfer(b, t) < 0)
                log_debug(COMP, "referenced transfer not added: capacity");
            continue;
        }
        ledger_pending_state ps = {0};
        int32_t status = 0;
        if (parse_i32(PQgetvalue(res[i_pend], row, 1), &status) < 0 || status < 1 ||
            status > 4 || parse_i64(PQgetvalue(res[i_pend], row, 2), &ps.expires_at_us) < 0 ||
            parse_i64(PQgetvalue(res[i_pend], row, 3), &ps.amount_posted) < 0) {
            log_error(COMP, "cannot parse pending state row %d", row);
            goto out;
        }
        ps.status = (ledger_pending_status)status;
        if (ledger_batch_add_pending(b, t, &ps) < 0) {
            log_error(COMP, "batch pending capacity exceeded");
            goto out;
        }
    }
    if (i_cust >= 0) {
        int rows = PQntuples(res[i_cust]);
        if (grow((void **)&s->customers, &s->customers_cap, (size_t)rows + 1,
                 sizeof(int64_t), LIMIT_COMMIT_EVENTS_MAX + 1) < 0)
            goto out;
        s->customers_count = 0;
        for (int i = 0; i < rows; i++)
            if (parse_i64(PQgetvalue(res[i_cust], i, 0), &s->customers[s->customers_count++]) < 0)
                goto out;
    }
    if (i_ledg >= 0 && add_ledgers(s, res[i_ledg]) < 0) goto out;
    if (has_accounts)
        for (size_t i = 0; i < s->ledgers_count; i++)
            if (ledger_batch_add_ledger(b, s->ledgers[i]) < 0) goto out;
    rc = STORE_OK;
out:
    clear_results(res, nst);
    return rc;
oom:
    log_error(COMP, "out of memory building the account lock list");
    return STORE_FATAL;
}

/* An account event the engine must not see: it would create an account
 * whose customer does not exist. */
static bool account_customer_missing(const store *s, const ledger_account *a)
{
    return a->customer_id > 0 && !customer_exists(s, a->customer_id) &&
           ledger_account_validate(a) == LEDGER_ACCOUNT_OK;
}

/* Apply one account request: runs of chains whose customers exist go to
 * the engine; a chain with a missing customer fails here, the way the
 * engine fails a chain (first failure keeps its code, the others get
 * linked_event_failed, an unterminated last chain chain_open). */
static void apply_accounts_request(store *s, ledger_batch *b, store_request *q,
                                   int64_t now_us)
{
    size_t run = 0, i = 0;
    while (i < q->count) {
        size_t end = i; /* chain is [i, end] */
        while (end + 1 < q->count && (q->accounts[end].flags & LEDGER_AF_LINKED)) end++;
        bool bad = false;
        for (size_t k = i; k <= end; k++)
            if (account_customer_missing(s, &q->accounts[k])) bad = true;
        if (!bad) {
            i = end + 1;
            continue;
        }
        if (i > run)
            ledger_batch_apply_accounts(b, q->accounts + run, i - run, now_us,
                                        q->account_results + run);
        bool open = end + 1 == q->count && (q->accounts[end].flags & LEDGER_AF_LINKED);
        bool failed = false;
        for (size_t k = i; k <= end; k++) {
            ledger_account_result r = ledger_account_validate(&q->accounts[k]);
            if (r == LEDGER_ACCOUNT_OK && account_customer_missing(s, &q->accounts[k]))
                r = LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND;
            if (open && k == end) r = LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN;
            else if (failed || r == LEDGER_ACCOUNT_OK) r = LEDGER_ACCOUNT_LINKED_EVENT_FAILED;
            if (r != LEDGER_ACCOUNT_LINKED_EVENT_FAILED) failed = true;
            q->account_results[k] = r;
        }
        i = run = end + 1;
    }
    if (run < q->count)
        ledger_batch_apply_accounts(b, q->accounts + run, q->count - run, now_us,
                                    q->account_results + run);
}

static void apply_all(store *s, ledger_batch *b, store_request *reqs, size_t n,
                      int64_t now_us)
{
    for (size_t r = 0; r < n; r++) {
        store_request *q = &reqs[r];
        switch (q->kind) {
        case STORE_REQ_TRANSFERS:
            ledger_batch_apply_transfers(b, q->transfers, q->count, now_us,
                                         q->transfer_results);
            break;
        case STORE_REQ_ACCOUNTS:
            apply_accounts_request(s, b, q, now_us);
            break;
        case STORE_REQ_EXPIRE:
            for (size_t i = 0; i < q->count; i++)
                q->transfer_results[i] = ledger_batch_expire(b, &q->transfers[i].id, now_us);
            break;
        default:
            mrd_assert(!"unknown store request kind");
        }
    }
}

static int cmp_change_order(const void *pa, const void *pb, void *arg)
{
    const ledger_pending_change *c = arg;
    size_t a = *(const size_t *)pa, b = *(const size_t *)pb;
    int k = id128_compare(&c[a].pending_id, &c[b].pending_id);
    if (k) return k;
    return a < b ? -1 : a > b;
}

static int64_t account_ts(const store *s, const ledger_account *a)
{
    return a->timestamp_us > 0 ? a->timestamp_us : s->last_now_us;
}

/* Pipeline 3: write the engine's outputs and COMMIT. */
static store_status write_and_commit(store *s, ledger_batch *b)
{
    const ledger_account *const *nacc = NULL;
    const ledger_transfer *const *ntr = NULL;
    const ledger_account *const *chg = NULL;
    const ledger_pending_change *pc = NULL;
    const ledger_balance_row *bal = NULL;
    size_t n_nacc = ledger_batch_new_accounts(b, &nacc);
    size_t n_ntr = ledger_batch_new_transfers(b, &ntr);
    size_t n_chg = ledger_batch_changed_accounts(b, &chg);
    size_t n_pc = ledger_batch_pending_changes(b, &pc);
    size_t n_bal = ledger_batch_balance_rows(b, &bal);

    stmt st[STORE_STMTS_MAX];
    int nst = 0, i_nacc = -1, i_ntr = -1, i_chg = -1, i_pc = -1;
    s->bufs_used = 0; /* the reads' parameters are no longer referenced */

    if (n_nacc > 0) {
        static const uint32_t oid[13] = {OID_UUID, OID_INT8, OID_INT4, OID_INT4, OID_INT4,
                                         OID_INT8, OID_INT8, OID_INT8, OID_INT8, OID_UUID,
                                         OID_INT8, OID_INT4, OID_INT8};
        sbuf *c[13];
        for (int k = 0; k < 13; k++) c[k] = bin_take(s, oid[k]);
        for (size_t i = 0; i < n_nacc; i++) {
            const ledger_account *a = nacc[i];
            if (bin_id(c[0], &a->id) < 0 || bin_i64(c[1], a->customer_id) < 0 ||
                bin_i32(c[2], a->ledger) < 0 || bin_i32(c[3], a->code) < 0 ||
                bin_i32(c[4], (int64_t)a->flags) < 0 || bin_i64(c[5], 0) < 0 ||
                bin_i64(c[6], 0) < 0 || bin_i64(c[7], 0) < 0 || bin_i64(c[8], 0) < 0 ||
                bin_id(c[9], &a->user_data_128) < 0 || bin_i64(c[10], a->user_data_64) < 0 ||
                bin_i32(c[11], a->user_data_32) < 0 || bin_i64(c[12], account_ts(s, a)) < 0)
                goto oom;
            if (account_ts(s, a) >= s->ts_floor_us) s->ts_floor_us = account_ts(s, a) + 1;
        }
        i_nacc = nst;
        stmt *x = &st[nst++];
        *x = (stmt){.what = "insert accounts", .query = Q_INSERT_ACCOUNTS,
                    .sql = "INSERT INTO accounts (" ACCOUNT_COLS ") SELECT * FROM unnest("
                           "$1::uuid[], $2::int8[], $3::int4[], $4::int4[], $5::int4[], "
                           "$6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::uuid[], "
                           "$11::int8[], $12::int4[], $13::int8[])",
                    .nparams = 13};
        for (int k = 0; k < 13; k++) {
            if (bin_close(c[k]) < 0) goto oom;
            stmt_param(x, k, c[k]);
        }
    }
    if (n_ntr > 0) {
        static const uint32_t oid[15] = {OID_UUID, OID_UUID, OID_UUID, OID_UUID, OID_INT8,
                                         OID_INT4, OID_INT4, OID_INT4, OID_INT4, OID_UUID,
                                         OID_INT8, OID_INT4, OID_TEXT, OID_INT8, OID_INT8};
        sbuf *c[15];
        for (int k = 0; k < 15; k++) c[k] = bin_take(s, oid[k]);
        for (size_t i = 0; i < n_ntr; i++) {
            const ledger_transfer *t = ntr[i];
            if (bin_id(c[0], &t->id) < 0 || bin_id(c[1], &t->debit_account_id) < 0 ||
                bin_id(c[2], &t->credit_account_id) < 0 ||
                bin_id_or_null(c[3], &t->pending_id) < 0 || bin_i64(c[4], t->amount) < 0 ||
                bin_i32(c[5], t->ledger) < 0 || bin_i32(c[6], t->code) < 0 ||
                bin_i32(c[7], (int64_t)t->flags) < 0 ||
                bin_i32(c[8], (int64_t)t->timeout_s) < 0 ||
                bin_id(c[9], &t->user_data_128) < 0 || bin_i64(c[10], t->user_data_64) < 0 ||
                bin_i32(c[11], t->user_data_32) < 0 ||
                bin_text_or_null(c[12], t->metadata, t->metadata_len) < 0 ||
                bin_i64(c[13], t->customer_id) < 0 || bin_i64(c[14], t->timestamp_us) < 0)
                goto oom;
            if (t->timestamp_us >= s->ts_floor_us) s->ts_floor_us = t->timestamp_us + 1;
        }
        i_ntr = nst;
        stmt *x = &st[nst++];
        /* WITH ORDINALITY ... ORDER BY: seq follows application order. */
        *x = (stmt){.what = "insert transfers", .query = Q_INSERT_TRANSFERS,
                    .sql = "INSERT INTO transfers (" TRANSFER_COLS ") "
                           "SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, n, o FROM unnest("
                           "$1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::int8[], "
                           "$6::int4[], $7::int4[], $8::int4[], $9::int4[], $10::uuid[], "
                           "$11::int8[], $12::int4[], $13::text[], $14::int8[], $15::int8[]) "
                           "WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, "
                           "ord) ORDER BY ord",
                    .nparams = 15};
        for (int k = 0; k < 15; k++) {
            if (bin_close(c[k]) < 0) goto oom;
            stmt_param(x, k, c[k]);
        }
    }
    if (n_chg > 0) {
        sbuf *c[5];
        for (int k = 0; k < 5; k++) c[k] = bin_take(s, k == 0 ? OID_UUID : OID_INT8);
        for (size_t i = 0; i < n_chg; i++) {
            const ledger_account *a = chg[i];
            if (bin_id(c[0], &a->id) < 0 || bin_i64(c[1], a->debits_pending) < 0 ||
                bin_i64(c[2], a->debits_posted) < 0 || bin_i64(c[3], a->credits_pending) < 0 ||
                bin_i64(c[4], a->credits_posted) < 0)
                goto oom;
        }
        i_chg = nst;
        stmt *x = &st[nst++];
        *x = (stmt){.what = "update balances", .query = Q_UPDATE_BALANCES,
                    .sql = "UPDATE accounts a SET debits_pending = u.dp, debits_posted = "
                           "u.dpo, credits_pending = u.cp, credits_posted = u.cpo FROM "
                           "unnest($1::uuid[], $2::int8[], $3::int8[], $4::int8[], "
                           "$5::int8[]) AS u(id, dp, dpo, cp, cpo) WHERE a.id = u.id",
                    .nparams = 5};
        for (int k = 0; k < 5; k++) {
            if (bin_close(c[k]) < 0) goto oom;
            stmt_param(x, k, c[k]);
        }
    }
    size_t n_pc_unique = 0;
    if (n_pc > 0) {
        /* One row per id (the last change wins): ON CONFLICT DO UPDATE
         * cannot touch a row twice in one statement. */
        if (grow((void **)&s->order, &s->order_cap, n_pc, sizeof(size_t),
                 (size_t)2 * LIMIT_COMMIT_EVENTS_MAX) < 0)
            goto oom;
        for (size_t i = 0; i < n_pc; i++) s->order[i] = i;
        qsort_r(s->order, n_pc, sizeof(size_t), cmp_change_order, (void *)pc);
        static const uint32_t oid[4] = {OID_UUID, OID_INT2, OID_INT8, OID_INT8};
        sbuf *c[4];
        for (int k = 0; k < 4; k++) c[k] = bin_take(s, oid[k]);
        for (size_t i = 0; i < n_pc; i++) {
            const ledger_pending_change *x = &pc[s->order[i]];
            if (i + 1 < n_pc && id128_equal(&x->pending_id, &pc[s->order[i + 1]].pending_id))
                continue;
            n_pc_unique++;
            if (bin_id(c[0], &x->pending_id) < 0 || bin_i16(c[1], x->state.status) < 0 ||
                bin_i64(c[2], x->state.expires_at_us) < 0 ||
                bin_i64(c[3], x->state.amount_posted) < 0)
                goto oom;
        }
        i_pc = nst;
        stmt *x = &st[nst++];
        *x = (stmt){.what = "upsert pending state", .query = Q_UPSERT_PENDING,
                    .sql = "INSERT INTO pending_transfers (id, status, expires_at_us, "
                           "amount_posted) SELECT * FROM unnest($1::uuid[], $2::int2[], "
                           "$3::int8[], $4::int8[]) ON CONFLICT (id) DO UPDATE SET status "
                           "= EXCLUDED.status, expires_at_us = EXCLUDED.expires_at_us, "
                           "amount_posted = EXCLUDED.amount_posted",
                    .nparams = 4};
        for (int k = 0; k < 4; k++) {
            if (bin_close(c[k]) < 0) goto oom;
            stmt_param(x, k, c[k]);
        }
    }
    if (n_bal > 0) {
        sbuf *c[7];
        for (int k = 0; k < 7; k++) c[k] = bin_take(s, k < 2 ? OID_UUID : OID_INT8);
        for (size_t i = 0; i < n_bal; i++) {
            const ledger_balance_row *r = &bal[i];
            if (bin_id(c[0], &r->account_id) < 0 || bin_id(c[1], &r->transfer_id) < 0 ||
                bin_i64(c[2], r->timestamp_us) < 0 || bin_i64(c[3], r->debits_pending) < 0 ||
                bin_i64(c[4], r->debits_posted) < 0 || bin_i64(c[5], r->credits_pending) < 0 ||
                bin_i64(c[6], r->credits_posted) < 0)
                goto oom;
        }
        stmt *x = &st[nst++];
        *x = (stmt){.what = "insert balance history", .query = Q_INSERT_BALANCES,
                    .sql = "INSERT INTO account_balances (account_id, transfer_id, "
                           "timestamp_us, debits_pending, debits_posted, credits_pending, "
                           "credits_posted) SELECT * FROM unnest($1::uuid[], $2::uuid[], "
                           "$3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[])",
                    .nparams = 7};
        for (int k = 0; k < 7; k++) {
            if (bin_close(c[k]) < 0) goto oom;
            stmt_param(x, k, c[k]);
        }
    }
    int i_commit = nst;
    st[nst++] = (stmt){.what = "commit", .sql = "COMMIT"};

    PGresult *res[STORE_STMTS_MAX];
    s->syncrep_warning = false;
    store_status rc = pipeline_run(s, st, nst, res, i_commit);
    if (rc == STORE_OK && s->syncrep_warning) {
        log_warn(COMP, "commit not acknowledged: synchronous replication unconfirmed");
        rc = STORE_AMBIGUOUS;
    }
    if (rc == STORE_OK) {
        /* COMMIT of an aborted transaction answers ROLLBACK. */
        const char *tag = PQcmdStatus(res[i_commit]);
        if (strcmp(tag, "COMMIT") != 0) {
            log_error(COMP, "commit answered \"%s\"", tag);
            rc = STORE_FATAL;
        }
    }
    if (rc == STORE_OK) {
        if (i_nacc >= 0) mrd_assert(strtoull(PQcmdTuples(res[i_nacc]), NULL, 10) == n_nacc);
        if (i_ntr >= 0) mrd_assert(strtoull(PQcmdTuples(res[i_ntr]), NULL, 10) == n_ntr);
        if (i_chg >= 0) mrd_assert(strtoull(PQcmdTuples(res[i_chg]), NULL, 10) == n_chg);
        if (i_pc >= 0) mrd_assert(strtoull(PQcmdTuples(res[i_pc]), NULL, 10) == n_pc_unique);
    }
    clear_results(res, nst);
    return rc;
oom:
    log_error(COMP, "cannot build write parameters: out of memory, over %u bytes, or a "
                    "value out of its column's range", STORE_PARAM_BYTES_MAX);
    return STORE_FATAL;
}

/* Once per connection, before its first commit: plan every execution
 * of the prepared statements with its actual parameters (a custom plan),
 * as the unprepared statements were. A generic plan is cached once and
 * kept until the table's statistics change; one built while a table was
 * small (a new database) scans it sequentially for every lookup as it
 * grows. Preparing still saves parsing and analysis, the larger part.
 * Returns STORE_OK, or STORE_CONN when the connection broke; any other
 * failure is logged and ignored (it costs speed, not correctness). */
static store_status session_setup(store *s)
{
    PGresult *r = PQexec(s->conn, "SET plan_cache_mode = force_custom_plan");
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok && !conn_lost(s))
        log_warn(COMP, "cannot set plan_cache_mode: %s", PQerrorMessage(s->conn));
    PQclear(r);
    if (!ok && conn_lost(s)) return STORE_CONN;
    s->session_ready = true;
    return STORE_OK;
}

store_status store_commit_batch(store *s, ledger_batch *b, store_request *reqs,
                                 size_t n, int64_t now_us)
{
    mrd_assert(s && b && (reqs || n == 0));
    size_t events = 0;
    for (size_t r = 0; r < n; r++) {
        mrd_assert(reqs[r].kind == STORE_REQ_ACCOUNTS
                       ? reqs[r].accounts && reqs[r].account_results
                       : reqs[r].transfers && reqs[r].transfer_results);
        events += reqs[r].count;
    }
    mrd_assert(events <= LIMIT_COMMIT_EVENTS_MAX);
    s->commit_sent = false;
    s->bufs_used = 0;
    for (size_t i = 0; i < STORE_BUFS_MAX; i++) {
        if (s->bufs[i].cap <= STORE_BUF_KEEP_BYTES_MAX) continue;
        free(s->bufs[i].data);
        s->bufs[i] = (sbuf){0};
    }
    ledger_batch_reset(b);
    if (conn_lost(s)) return STORE_CONN;
    rollback_quietly(s);
    if (!s->session_ready && session_setup(s) != STORE_OK) return STORE_CONN;
    if (now_us < s->ts_floor_us) now_us = s->ts_floor_us;
    s->last_now_us = now_us;

    store_status rc;
    if (collect_transfer_ids(s, reqs, n) < 0) {
        log_error(COMP, "out of memory collecting ids");
        return STORE_FATAL;
    }
    rc = load_transfers(s);
    if (rc != STORE_OK) goto fail;
    if (collect_account_ids(s, reqs, n, events) < 0) {
        log_error(COMP, "out of memory collecting account ids");
        rc = STORE_FATAL;
        goto fail;
    }
    rc = load_locked(s, b, reqs, n);
    if (rc != STORE_OK) goto fail;
    apply_all(s, b, reqs, n, now_us);
    rc = write_and_commit(s, b);
    if (rc != STORE_OK) goto fail;
    return STORE_OK;
fail:
    rollback_quietly(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Settling an ambiguous commit, expiry                                */

/* Commit a transaction of our own that writes WAL (a transactional
 * logical-decoding message, which no reader sees) and wait for the
 * synchronous standbys to confirm it, at most STORE_SETTLE_BARRIER_MS.
 * (A transaction that writes no WAL does not wait at all, and
 * statement_timeout does not cover the wait inside COMMIT.) Past the
 * bound the wait is cancelled (PQcancel, itself a short blocking
 * connection to the server): the server then warns that the commit may
 * not be replicated (notice_receiver) and answers. No answer within
 * another STORE_SETTLE_BARRIER_MS either: the connection is dropped.
 * WAL is ordered, so a confirmed barrier confirms every commit before
 * it. Returns 0 confirmed, -1 not. */
static int durable_barrier(store *s)
{
    s->syncrep_warning = false;
    if (!PQsendQuery(s->conn, "BEGIN; SELECT pg_logical_emit_message(true, 'meridian', "
                              "'settle'); COMMIT")) {
        log_warn(COMP, "durability barrier not sent: %s", PQerrorMessage(s->conn));
        return -1;
    }
    int rc = 0;
    bool cancelled = false;
    for (;;) {
        /* One wait per result: the three statements answer one by one. */
        int ready = wait_ready(s, STORE_SETTLE_BARRIER_MS);
        if (ready == 0 && !cancelled) {
            char why[256] = "";
            PGcancel *c = PQgetCancel(s->conn);
            if (!c || !PQcancel(c, why, sizeof why))
                log_warn(COMP, "cannot cancel the durability barrier: %s", why);
            PQfreeCancel(c);
            cancelled = true;
            ready = wait_ready(s, STORE_SETTLE_BARRIER_MS);
        }
        if (ready == 0) {
            log_warn(COMP, "no answer to the durability barrier: closing the connection");
            drop_connection(s);
        }
        PGresult *r = PQgetResult(s->conn);
        if (!r) break;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
            log_warn(COMP, "durability barrier failed: %s", PQresultErrorMessage(r));
            rc = -1;
        }
        PQclear(r);
    }
    if (cancelled || s->syncrep_warning || conn_lost(s)) rc = -1;
    if (!conn_lost(s) && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *r = PQexec(s->conn, "ROLLBACK"); /* after an error: answered at once */
        PQclear(r);
    }
    s->syncrep_warning = false;
    return rc;
}

int store_batch_committed(store *s, const store_request *reqs, size_t n)
{
    mrd_assert(s);
    if (conn_lost(s)) return -1;
    /* What the engine applied, with the timestamps it gave: a row with
     * the same id but another timestamp was written by someone else, so
     * new transfers and accounts identify this very commit. Expiries do
     * not (another process's sweep may expire the same pending), so
     * they decide only a batch that holds nothing else. */
    sbuf *tid = &s->bufs[0], *tts = &s->bufs[1], *aid = &s->bufs[2], *ats = &s->bufs[3],
         *pid = &s->bufs[4];
    tid->len = tts->len = aid->len = ats->len = pid->len = 0;
    size_t want_rows = 0, want_expired = 0;
    for (size_t r = 0; r < n; r++) {
        const store_request *q = &reqs[r];
        for (size_t i = 0; i < q->count; i++) {
            int e = 0;
            if (q->kind == STORE_REQ_TRANSFERS && q->transfer_results[i] == LEDGER_TRANSFER_OK) {
                e = sb_id(tid, &q->transfers[i].id) | sb_i64(tts, q->transfers[i].timestamp_us);
                want_rows++;
            } else if (q->kind == STORE_REQ_ACCOUNTS &&
                       q->account_results[i] == LEDGER_ACCOUNT_OK) {
                e = sb_id(aid, &q->accounts[i].id) | sb_i64(ats, account_ts(s, &q->accounts[i]));
                want_rows++;
            } else if (q->kind == STORE_REQ_EXPIRE &&
                       q->transfer_results[i] == LEDGER_TRANSFER_OK) {
                e = sb_id(pid, &q->transfers[i].id);
                want_expired++;
            }
            if (e < 0) {
                log_error(COMP, "out of memory settling a commit");
                return -1;
            }
        }
    }
    if (want_rows + want_expired == 0) return 1; /* nothing written: results stand */
    if (sb_close(tid) | sb_close(tts) | sb_close(aid) | sb_close(ats) | sb_close(pid)) return -1;
    const char *vals[5] = {tid->data, tts->data, aid->data, ats->data, pid->data};
    /* With fencing on, only the node at the expected epoch may answer:
     * a stale node could lack a commit the current leader holds. */
    PGresult *r = PQexecParams(
        s->conn,
        s->fence_epoch > 0
            ? "SELECT (SELECT count(*) FROM transfers t JOIN unnest($1::uuid[], $2::int8[]) "
              "AS u(id, ts) ON t.id = u.id AND t.timestamp_us = u.ts) + "
              "(SELECT count(*) FROM accounts a JOIN unnest($3::uuid[], $4::int8[]) AS u(id, ts) "
              "ON a.id = u.id AND a.timestamp_us = u.ts), "
              "(SELECT count(*) FROM pending_transfers WHERE id = ANY($5::uuid[]) AND status = 4), "
              "(SELECT epoch FROM meridian_fencing WHERE id = 1)"
            : "SELECT (SELECT count(*) FROM transfers t JOIN unnest($1::uuid[], $2::int8[]) "
              "AS u(id, ts) ON t.id = u.id AND t.timestamp_us = u.ts) + "
              "(SELECT count(*) FROM accounts a JOIN unnest($3::uuid[], $4::int8[]) AS u(id, ts) "
              "ON a.id = u.id AND a.timestamp_us = u.ts), "
              "(SELECT count(*) FROM pending_transfers WHERE id = ANY($5::uuid[]) AND status = 4)",
        5, NULL, vals, NULL, NULL, 0);
    int out = -1;
    int64_t rows = -1, expired = -1, epoch = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
        parse_i64(PQgetvalue(r, 0, 0), &rows) < 0 ||
        parse_i64(PQgetvalue(r, 0, 1), &expired) < 0) {
        log_warn(COMP, "cannot settle an ambiguous commit: %s", PQerrorMessage(s->conn));
        goto out;
    }
    if (s->fence_epoch > 0 &&
        (PQgetisnull(r, 0, 2) || parse_i64(PQgetvalue(r, 0, 2), &epoch) < 0 ||
         epoch != s->fence_epoch)) {
        log_warn(COMP, "cannot settle an ambiguous commit on this node: its epoch is %s, "
                       "the route expects %" PRId64,
                 PQgetisnull(r, 0, 2) ? "unset" : PQgetvalue(r, 0, 2), s->fence_epoch);
        goto out;
    }
    if (want_rows > 0) {
        if (rows != 0 && (size_t)rows != want_rows) {
            /* One transaction: all or nothing. Anything else is a bug. */
            log_error(COMP, "ambiguous commit partially present: %" PRId64 " of %zu rows",
                      rows, want_rows);
            mrd_assert(!"a committed batch is partially present");
        }
        out = rows > 0;
    } else {
        /* Expiry only: every one expired means ours committed (or an
         * equivalent sweep did); fewer means ours did not, and running
         * it again is harmless. */
        out = (size_t)expired == want_expired;
    }
    if (out == 1 && durable_barrier(s) != 0) {
        log_warn(COMP, "ambiguous commit found on the server but not yet confirmed by its "
                       "synchronous standbys: asking again");
        out = -1;
        goto out;
    }
    log_info(COMP, "ambiguous commit settled: %s", out ? "committed" : "not committed");
out:
    PQclear(r);
    return out;
}

int store_expired_pending(store *s, int64_t now_us, id128 *out, size_t max)
{
    mrd_assert(s && (out || max == 0));
    if (max == 0) return 0;
    if (conn_lost(s)) return -1;
    char now_t[32], max_t[32];
    snprintf(now_t, sizeof now_t, "%" PRId64, now_us);
    snprintf(max_t, sizeof max_t, "%zu", max);
    const char *vals[2] = {now_t, max_t};
    PGresult *r = PQexecParams(s->conn,
                               "SELECT id FROM pending_transfers WHERE status = 1 AND "
                               "expires_at_us > 0 AND expires_at_us <= $1::int8 "
                               "ORDER BY expires_at_us LIMIT $2::int8",
                               2, NULL, vals, NULL, NULL, 0);
    int count = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        log_warn(COMP, "cannot list expired pending transfers: %s",
                 PQerrorMessage(s->conn));
        goto out;
    }
    int rows = PQntuples(r);
    mrd_assert((size_t)rows <= max);
    for (int i = 0; i < rows; i++) {
        if (id128_parse(PQgetvalue(r, i, 0), &out[i]) < 0) {
            log_error(COMP, "cannot parse pending transfer id \"%s\"", PQgetvalue(r, i, 0));
            goto out;
        }
    }
    count = rows;
out:
    PQclear(r);
    return count;
}

int store_job_claim(store *s, const char *kind, int interval_ms, int64_t *job_id)
{
    mrd_assert(s && kind && job_id && interval_ms >= 0);
    if (conn_lost(s)) return -1;
    char ms_t[24];
    snprintf(ms_t, sizeof ms_t, "%d", interval_ms);
    const char *vals[2] = {kind, ms_t};
    /* One round trip: claim the row if due; create it if the kind has no
     * open row at all (else a database whose row went missing would never
     * run the job again). Both parts see the same snapshot, so a row that
     * exists is never doubled; two processes creating at once meet the
     * unique index, and one row goes through. */
    PGresult *r = PQexecParams(
        s->conn,
        "WITH claimed AS (UPDATE jobs SET run_at = now() + make_interval(secs => "
        "$2::int8 / 1000.0), attempts = attempts + 1 WHERE id = (SELECT id FROM jobs "
        "WHERE kind = $1 AND done_at IS NULL AND run_at <= now() ORDER BY run_at LIMIT 1 "
        "FOR UPDATE SKIP LOCKED) RETURNING id), "
        "created AS (INSERT INTO jobs (kind) SELECT $1 WHERE NOT EXISTS (SELECT 1 FROM jobs "
        "WHERE kind = $1 AND done_at IS NULL) ON CONFLICT DO NOTHING RETURNING id) "
        "SELECT (SELECT id FROM claimed), (SELECT count(*) FROM created)",
        2, NULL, vals, NULL, NULL, 0);
    int rc = -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        log_warn(COMP, "cannot claim the %s job: %s", kind, PQerrorMessage(s->conn));
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 1), "0") != 0)
        log_warn(COMP, "the %s job had no open row: created one", kind);
    rc = 0;
    if (!PQgetisnull(r, 0, 0)) {
        *job_id = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        rc = 1;
    }
out:
    PQclear(r);
    return rc;
}

int store_job_finish(store *s, int64_t job_id, const char *error)
{
    mrd_assert(s != NULL);
    if (conn_lost(s)) return -1;
    char id_t[24];
    snprintf(id_t, sizeof id_t, "%" PRId64, job_id);
    const char *vals[2] = {id_t, error};
    PGresult *r = PQexecParams(s->conn, "UPDATE jobs SET last_error = $2 WHERE id = $1::int8", 2,
                               NULL, vals, NULL, NULL, 0);
    int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -1;
    if (rc != 0) log_warn(COMP, "cannot record the outcome of job %s: %s", id_t,
                          PQerrorMessage(s->conn));
    PQclear(r);
    return rc;
}

int store_wait_global(store *s, const char *standby_names, int timeout_ms)
{
    mrd_assert(s != NULL && timeout_ms >= 0);
    if (conn_lost(s)) return -1;
    /* Everything committed so far on this connection is at or before the
     * current flush position. */
    PGresult *r = PQexec(s->conn, "SELECT pg_current_wal_flush_lsn()");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        log_warn(COMP, "cannot read the flush LSN: %s", PQerrorMessage(s->conn));
        PQclear(r);
        return -1;
    }
    char lsn[64];
    snprintf(lsn, sizeof lsn, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    const char *names = standby_names != NULL && standby_names[0] != '\0' ? standby_names : NULL;
    const char *vals[2] = {lsn, names};
    int64_t start_ms = clock_mono_ms();
    for (;;) {
        r = PQexecParams(s->conn,
                         "SELECT count(*) FROM pg_stat_replication WHERE flush_lsn >= $1::pg_lsn "
                         "AND CASE WHEN $2::text IS NULL THEN sync_state = 'async' "
                         "ELSE application_name = ANY (string_to_array($2::text, ',')) END",
                         2, NULL, vals, NULL, NULL, 0);
        bool reached = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                       strtol(PQgetvalue(r, 0, 0), NULL, 10) > 0;
        bool failed = PQresultStatus(r) != PGRES_TUPLES_OK;
        PQclear(r);
        if (reached) return 0;
        if (failed) {
            log_warn(COMP, "cannot read pg_stat_replication: %s", PQerrorMessage(s->conn));
            return -1;
        }
        if (clock_mono_ms() - start_ms >= timeout_ms) return -1;
        usleep(2000); /* bounded by timeout_ms */
    }
}
