/*
 * reads.c — read queries of meridiand on a bounded libpq pool.
 *
 * Handler threads borrow a connection (blocking, with a timeout: a full
 * pool is 503, never an unbounded queue), run one statement and give it
 * back. Each answer is a single statement, so it is one MVCC snapshot:
 * GET /v1/balances never sees half of a group commit. Statements are
 * sent with PQexecParams (text parameters; the bytea key hash binary),
 * every row count is bounded by LIMIT clauses matching the API limits,
 * and a connection found broken is reset and the statement retried once
 * (reads are idempotent). SQL errors on a healthy connection are logged
 * here once with their SQLSTATE; callers only map the status to HTTP.
 *
 * Reads are strong: the pool's connections go to the cell's current
 * leader (route.h). Each slot remembers the route generation it was
 * opened for and reconnects on its next use after the leader changed;
 * while the cell has no leader a borrower waits for one (bounded by the
 * acquire timeout) and then gets READS_UNAVAILABLE.
 */
#include "service/reads.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>
#include <poll.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "db/migrate.h"
#include "service/route.h"

#define READS_POOL_MAX 64
#define READY_CACHE_NS 1000000000LL

typedef struct slot {
    PGconn *conn;
    bool busy;
    uint64_t generation;  /* route the connection was opened for */
    route_source *route;  /* the pool's route (borrowed): a query gives up when it moves */
} slot;

/* A query waits at most this long for its answer (the server's own
 * statement_timeout is 30 s), and gives up sooner when the leader moves:
 * a database behind a black-holed link (a partition) never answers, and
 * TCP keepalives cannot tell, since a proxy on the way answers them. */
#define READS_QUERY_WAIT_MS 35000
#define READS_POLL_SLICE_MS 200

struct reads {
    route_source *route;     /* borrowed, or own_route */
    route_source *own_route; /* static route of reads_create */
    int size;
    int acquire_timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot slots[READS_POOL_MAX];

    pthread_mutex_t ready_mu;
    int64_t ready_checked_ns;
    int ready_version;
    int ready_ok;
    bool ready_checking; /* a probe is running check_ready */
    char ready_reason[256];
};

static PGconn *connect_db(const char *dsn)
{
    /* dsn first (expanded), then our settings override it. */
    const char *const keys[] = {"dbname", "connect_timeout", "application_name", "options", NULL};
    const char *const vals[] = {dsn, "5", "meridiand-reads", "-c statement_timeout=30000", NULL};
    return PQconnectdbParams(keys, vals, 1);
}

static const char *first_line(const char *msg, char *buf, size_t size)
{
    snprintf(buf, size, "%s", msg != NULL ? msg : "");
    char *nl = strchr(buf, '\n');
    if (nl != NULL) *nl = '\0';
    return buf;
}

reads *reads_create_routed(route_source *route, int pool_size, int acquire_timeout_ms,
                           char *err, size_t err_size)
{
    mrd_assert(route != NULL);
    if (pool_size < 1 || pool_size > READS_POOL_MAX) {
        snprintf(err, err_size, "read_pool_size must be between 1 and %d, not %d",
                 READS_POOL_MAX, pool_size);
        return NULL;
    }
    reads *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    r->route = route;
    r->size = pool_size;
    r->acquire_timeout_ms = acquire_timeout_ms > 0 ? acquire_timeout_ms : 5000;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&r->ready_mu, NULL);
    for (int i = 0; i < READS_POOL_MAX; i++)
        r->slots[i].route = route;

    route_snapshot snap;
    char dsn[ROUTE_DSN_MAX], line[256];
    if (route_wait_leader(route, route_is_etcd(route) ? r->acquire_timeout_ms : 0, &snap) < 0) {
        snprintf(err, err_size, "no leader for cell %s", route_cell(route));
        reads_free(r);
        return NULL;
    }
    if (route_dsn(route, &snap, dsn, sizeof dsn) != 0) {
        snprintf(err, err_size, "connection string too long");
        reads_free(r);
        return NULL;
    }
    r->slots[0].conn = connect_db(dsn);
    r->slots[0].generation = snap.generation;
    if (r->slots[0].conn == NULL || PQstatus(r->slots[0].conn) != CONNECTION_OK) {
        first_line(r->slots[0].conn != NULL ? PQerrorMessage(r->slots[0].conn) : "out of memory",
                   line, sizeof line);
        snprintf(err, err_size, "cannot connect to the database: %s", line);
        reads_free(r);
        return NULL;
    }
    return r;
}

reads *reads_create(const char *dsn, int pool_size, int acquire_timeout_ms, char *err,
                    size_t err_size)
{
    route_source *route = route_create_static(dsn, err, err_size);
    if (route == NULL) return NULL;
    reads *r = reads_create_routed(route, pool_size, acquire_timeout_ms, err, err_size);
    if (r == NULL) {
        route_free(route);
        return NULL;
    }
    r->own_route = route;
    return r;
}

void reads_free(reads *r)
{
    if (r == NULL) return;
    for (int i = 0; i < r->size; i++) {
        mrd_assert(!r->slots[i].busy);
        if (r->slots[i].conn != NULL) PQfinish(r->slots[i].conn);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->ready_mu);
    route_free(r->own_route);
    free(r);
}

/* Borrow a connected slot. Returns NULL (READS_UNAVAILABLE) when none
 * frees up in time or the connection cannot be made. */
static slot *acquire(reads *r)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += r->acquire_timeout_ms / 1000;
    deadline.tv_nsec += (long)(r->acquire_timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    slot *s = NULL;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        /* Prefer a slot that is already connected. */
        for (int i = 0; i < r->size && s == NULL; i++)
            if (!r->slots[i].busy && r->slots[i].conn != NULL) s = &r->slots[i];
        for (int i = 0; i < r->size && s == NULL; i++)
            if (!r->slots[i].busy) s = &r->slots[i];
        if (s != NULL) break;
        if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == ETIMEDOUT) break;
    }
    if (s != NULL) s->busy = true;
    pthread_mutex_unlock(&r->mu);
    if (s == NULL) {
        log_warn("reads", "no free database connection after %d ms (read_pool_size=%d)",
                 r->acquire_timeout_ms, r->size);
        return NULL;
    }
    /* Follow the leader: a connection opened for an older route is
     * dropped; without a leader, wait for one within the same bound. */
    route_snapshot snap;
    route_current(r->route, &snap);
    if (!snap.has_leader) route_wait_leader(r->route, r->acquire_timeout_ms, &snap);
    char dsn[ROUTE_DSN_MAX];
    bool routable = snap.has_leader && route_dsn(r->route, &snap, dsn, sizeof dsn) == 0;
    if (s->conn != NULL && (!routable || s->generation != snap.generation)) {
        PQfinish(s->conn);
        s->conn = NULL;
    }
    if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
        if (s->conn != NULL) PQfinish(s->conn);
        s->conn = routable ? connect_db(dsn) : NULL;
        s->generation = snap.generation;
        if (s->conn == NULL || PQstatus(s->conn) != CONNECTION_OK) {
            char line[256];
            if (!routable)
                snprintf(line, sizeof line, "no leader for cell %s", route_cell(r->route));
            else
                first_line(s->conn != NULL ? PQerrorMessage(s->conn) : "out of memory", line,
                           sizeof line);
            log_warn("reads", "cannot connect to the database: %s", line);
            if (s->conn != NULL) PQfinish(s->conn);
            s->conn = NULL;
            pthread_mutex_lock(&r->mu);
            s->busy = false;
            pthread_cond_signal(&r->cv);
            pthread_mutex_unlock(&r->mu);
            return NULL;
        }
    }
    return s;
}

static void release(reads *r, slot *s)
{
    pthread_mutex_lock(&r->mu);
    s->busy = false;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Send one statement and wait for its result, at most READS_QUERY_WAIT_MS
 * and only while the route's generation stays the one the connection
 * was opened for. Returns the result, or NULL with *abandoned set when
 * the wait was given up (the connection is then closed: its answer, if
 * any ever comes, belongs to nobody). */
static PGresult *exec_bounded(slot *s, const char *sql, int nparams, const char *const *values,
                              const int *lengths, const int *formats, bool *abandoned)
{
    *abandoned = false;
    if (!PQsendQueryParams(s->conn, sql, nparams, NULL, values, lengths, formats, 0))
        return NULL;
    int64_t deadline = clock_mono_ns() + (int64_t)READS_QUERY_WAIT_MS * 1000000LL;
    while (PQisBusy(s->conn)) {
        route_snapshot snap;
        route_current(s->route, &snap);
        bool moved = !snap.has_leader || snap.generation != s->generation;
        if (moved || clock_mono_ns() >= deadline) {
            log_warn("reads", "giving up a query after %s: closing its connection",
                     moved ? "the leader moved" : "35 s without an answer");
            PQfinish(s->conn);
            s->conn = NULL;
            *abandoned = true;
            return NULL;
        }
        struct pollfd pfd = {.fd = PQsocket(s->conn), .events = POLLIN};
        if (pfd.fd < 0)
            return NULL;
        int pr = poll(&pfd, 1, READS_POLL_SLICE_MS);
        if (pr < 0 && errno != EINTR)
            return NULL;
        if (pr > 0 && !PQconsumeInput(s->conn))
            return NULL;
    }
    PGresult *res = PQgetResult(s->conn);
    /* One statement: drain to the terminating NULL. */
    for (int i = 0; i < 16; i++) {
        PGresult *extra = PQgetResult(s->conn);
        if (extra == NULL)
            break;
        PQclear(extra);
    }
    return res;
}

/* Run one statement; on a broken connection reset it and try once more.
 * On READS_OK *out holds the result (PQclear it). */
static reads_status exec(slot *s, const char *what, const char *sql, int nparams,
                         const char *const *values, const int *lengths, const int *formats,
                         PGresult **out)
{
    *out = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool abandoned = false;
        PGresult *res = exec_bounded(s, sql, nparams, values, lengths, formats, &abandoned);
        if (abandoned)
            return READS_UNAVAILABLE;
        ExecStatusType st = res != NULL ? PQresultStatus(res) : PGRES_FATAL_ERROR;
        if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
            *out = res;
            return READS_OK;
        }
        char line[256];
        if (PQstatus(s->conn) == CONNECTION_BAD) {
            PQclear(res);
            log_warn("reads", "connection lost during %s: %s", what,
                     first_line(PQerrorMessage(s->conn), line, sizeof line));
            if (attempt == 0) {
                PQreset(s->conn);
                if (PQstatus(s->conn) == CONNECTION_OK) continue;
            }
            return READS_UNAVAILABLE;
        }
        const char *sqlstate = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (sqlstate == NULL) sqlstate = "";
        log_error("reads", "query %s failed: %s sqlstate=%s", what,
                  first_line(res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(s->conn),
                             line, sizeof line),
                  sqlstate);
        reads_status rs = READS_INTERNAL;
        /* Connection exceptions, operator intervention (shutdown,
         * statement timeout), insufficient resources: the database, not
         * us. */
        if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "57", 2) == 0 ||
            strncmp(sqlstate, "53", 2) == 0)
            rs = READS_UNAVAILABLE;
        PQclear(res);
        return rs;
    }
    return READS_UNAVAILABLE;
}

/* ---- Field parsing (text format). */

static int64_t get_i64(const PGresult *res, int row, int col)
{
    if (PQgetisnull(res, row, col)) return 0;
    return strtoll(PQgetvalue(res, row, col), NULL, 10);
}

static void get_id(const PGresult *res, int row, int col, id128 *out)
{
    memset(out, 0, sizeof *out);
    if (PQgetisnull(res, row, col)) return;
    int rc = id128_parse(PQgetvalue(res, row, col), out);
    mrd_assert(rc == 0); /* the uuid type always prints 8-4-4-4-12 */
}

static void get_text(const PGresult *res, int row, int col, char *buf, size_t size)
{
    snprintf(buf, size, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

static void fmt_id(const id128 *id, char buf[ID128_TEXT_SIZE])
{
    id128_format(id, buf);
}

static void fmt_i64(int64_t v, char buf[24])
{
    snprintf(buf, 24, "%" PRId64, v);
}

/* ---- API keys. */

reads_status reads_api_key(reads *r, const uint8_t hash[APIKEY_HASH_SIZE], reads_key *out)
{
    static const char sql[] =
        "SELECT k.scope, k.customer_id, c.name FROM api_keys k "
        "LEFT JOIN customers c ON c.id = k.customer_id "
        "WHERE k.lookup_hash = $1 AND k.revoked_at IS NULL";
    slot *s = acquire(r);
    if (s == NULL) return READS_UNAVAILABLE;
    const char *values[1] = {(const char *)hash};
    int lengths[1] = {APIKEY_HASH_SIZE};
    int formats[1] = {1};
    PGresult *res;
    reads_status rs = exec(s, "api key", sql, 1, values, lengths, formats, &res);
    release(r, s);
    if (rs != READS_OK) return rs;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return READS_NOT_FOUND;
    }
    memset(out, 0, sizeof *out);
    out->admin = strcmp(PQgetvalue(res, 0, 0), "admin") == 0;
    out->customer_id = out->admin ? 0 : get_i64(res, 0, 1);
    get_text(res, 0, 2, out->customer_name, sizeof out->customer_name);
    PQclear(res);
    if (!out->admin && out->customer_id <= 0) {
        log_error("reads", "api key of scope customer without a customer");
        return READS_INTERNAL;
    }
    return READS_OK;
}

/* ---- Accounts. */

#define ACCOUNT_COLS                                                                     \
    "a.id, a.customer_id, c.name, a.ledger, a.code, a.flags, a.debits_pending, "         \
    "a.debits_posted, a.credits_pending, a.credits_posted, a.user_data_128, "            \
    "a.user_data_64, a.user_data_32, a.timestamp_us "

static void parse_account(const PGresult *res, int row, reads_account *out)
{
    memset(out, 0, sizeof *out);
    ledger_account *a = &out->account;
    get_id(res, row, 0, &a->id);
    a->customer_id = get_i64(res, row, 1);
    get_text(res, row, 2, out->customer_name, sizeof out->customer_name);
    a->ledger = (int32_t)get_i64(res, row, 3);
    a->code = (int32_t)get_i64(res, row, 4);
    a->flags = (uint32_t)get_i64(res, row, 5);
    a->debits_pending = get_i64(res, row, 6);
    a->debits_posted = get_i64(res, row, 7);
    a->credits_pending = get_i64(res, row, 8);
    a->credits_posted = get_i64(res, row, 9);
    get_id(res, row, 10, &a->user_data_128);
    a->user_data_64 = get_i64(res, row, 11);
    a->user_data_32 = (int32_t)get_i64(res, row, 12);
    a->timestamp_us = get_i64(res, row, 13);
}

reads_status reads_account_get(reads *r, const id128 *id, int64_t scope_customer_id,
                               reads_account *out)
{
    static const char sql[] =
        "SELECT " ACCOUNT_COLS "FROM accounts a JOIN customers c ON c.id = a.customer_id "
        "WHERE a.id = $1::uuid AND ($2::bigint = 0 OR a.customer_id = $2::bigint)";
    char idt[ID128_TEXT_SIZE], scope[24];
    fmt_id(id, idt);
    fmt_i64(scope_customer_id, scope);
    const char *values[2] = {idt, scope};
    slot *s = acquire(r);
    if (s == NULL) return READS_UNAVAILABLE;
    PGresult *res;
    reads_status rs = exec(s, "account", sql, 2, values, NULL, NULL, &res);
    release(r, s);
    if (rs != READS_OK) return rs;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return READS_NOT_FOUND;
    }
    parse_account(res, 0, out);
    PQclear(res);
    return READS_OK;
}

/* "{id,id,...}" for a uuid[] parameter. Returns malloc'd text or NULL. */
static char *uuid_array(const id128 *ids, size_t count)
{
    size_t size = 3 + count * ID128_TEXT_SIZE;
    char *buf = malloc(size);
    if (buf == NULL) return NULL;
    size_t len = 0;
    buf[len++] = '{';
    for (size_t i = 0; i < count; i++) {
        if (i > 0) buf[len++] = ',';
        id128_format(&ids[i], buf + len);
        len += ID128_TEXT_SIZE - 1;
    }
    buf[len++] = '}';
    buf[len] = '\0';
    mrd_assert(len < size);
    return buf;
}

static int account_cmp(const void *a, const void *b)
{
    return id128_compare(&((const reads_account *)a)->account.id,
                         &((const reads_account *)b)->account.id);
}

reads_status reads_accounts_lookup(reads *r, const id128 *ids, size_t count,
                                   int64_t scope_customer_id, reads_account **out,
                                   size_t *found)
{
    static const char sql[] =
        "SELECT " ACCOUNT_COLS "FROM accounts a JOIN customers c ON c.id = a.customer_id "
        "WHERE a.id = ANY($1::uuid[]) AND ($2::bigint = 0 OR a.customer_id = $2::bigint)";
    mrd_assert(count <= LIMIT_BATCH_EVENTS_MAX);
    *out = NULL;
    *found = 0;
    if (count == 0) return READS_OK;
    char *arr = uuid_array(ids, count);
    reads_account *rows = NULL, *answer = NULL;
    if (arr == NULL) return READS_INTERNAL;
    char scope[24];
    fmt_i64(scope_customer_id, scope);
    const char *values[2] = {arr, scope};
    slot *s = acquire(r);
    if (s == NULL) {
        free(arr);
        return READS_UNAVAILABLE;
    }
    PGresult *res;
    reads_status rs = exec(s, "accounts lookup", sql, 2, values, NULL, NULL, &res);
    release(r, s);
    free(arr);
    if (rs != READS_OK) return rs;
    size_t n = (size_t)PQntuples(res);
    mrd_assert(n <= count);
    rows = calloc(n > 0 ? n : 1, sizeof *rows);
    answer = calloc(count, sizeof *answer);
    if (rows == NULL || answer == NULL) {
        PQclear(res);
        free(rows);
        free(answer);
        return READS_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) parse_account(res, (int)i, &rows[i]);
    PQclear(res);
    qsort(rows, n, sizeof *rows, account_cmp);
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        reads_account key;
        key.account.id = ids[i];
        reads_account *hit = bsearch(&key, rows, n, sizeof *rows, account_cmp);
        if (hit != NULL) answer[k++] = *hit;
    }
    free(rows);
    *out = answer;
    *found = k;
    return READS_OK;
}

/* ---- Transfers. */

#define TRANSFER_COLS                                                                    \
    "t.id, t.debit_account_id, t.credit_account_id, t.pending_id, t.amount, t.ledger, "  \
    "t.code, t.flags, t.timeout_s, t.user_data_128, t.user_data_64, t.user_data_32, "    \
    "t.metadata, t.customer_id, t.timestamp_us, t.seq, p.status, p.expires_at_us, "      \
    "p.amount_posted "

/* Returns 0, or -1 when the metadata copy cannot be allocated. */
static int parse_transfer(const PGresult *res, int row, reads_transfer *out)
{
    memset(out, 0, sizeof *out);
    ledger_transfer *t = &out->transfer;
    get_id(res, row, 0, &t->id);
    get_id(res, row, 1, &t->debit_account_id);
    get_id(res, row, 2, &t->credit_account_id);
    get_id(res, row, 3, &t->pending_id);
    t->amount = get_i64(res, row, 4);
    t->ledger = (int32_t)get_i64(res, row, 5);
    t->code = (int32_t)get_i64(res, row, 6);
    t->flags = (uint32_t)get_i64(res, row, 7);
    t->timeout_s = (uint32_t)get_i64(res, row, 8);
    get_id(res, row, 9, &t->user_data_128);
    t->user_data_64 = get_i64(res, row, 10);
    t->user_data_32 = (int32_t)get_i64(res, row, 11);
    if (!PQgetisnull(res, row, 12)) {
        out->metadata_owned = strdup(PQgetvalue(res, row, 12));
        if (out->metadata_owned == NULL) return -1;
        t->metadata = out->metadata_owned;
        t->metadata_len = strlen(out->metadata_owned);
    }
    t->customer_id = get_i64(res, row, 13);
    t->timestamp_us = get_i64(res, row, 14);
    out->seq = get_i64(res, row, 15);
    if (!PQgetisnull(res, row, 16)) {
        out->has_pending_state = true;
        out->pending_state.status = (ledger_pending_status)get_i64(res, row, 16);
        out->pending_state.expires_at_us = get_i64(res, row, 17);
        out->pending_state.amount_posted = get_i64(res, row, 18);
    }
    return 0;
}

void reads_transfers_free(reads_transfer *t, size_t count)
{
    if (t == NULL) return;
    for (size_t i = 0; i < count; i++) free(t[i].metadata_owned);
    free(t);
}

reads_status reads_transfer_get(reads *r, const id128 *id, int64_t scope_customer_id,
                                reads_transfer *out)
{
    static const char sql[] =
        "SELECT " TRANSFER_COLS "FROM transfers t LEFT JOIN pending_transfers p ON p.id = t.id "
        "WHERE t.id = $1::uuid AND ($2::bigint = 0 OR EXISTS ("
        "  SELECT 1 FROM accounts a WHERE a.id IN (t.debit_account_id, t.credit_account_id)"
        "  AND a.customer_id = $2::bigint))";
    char idt[ID128_TEXT_SIZE], scope[24];
    fmt_id(id, idt);
    fmt_i64(scope_customer_id, scope);
    const char *values[2] = {idt, scope};
    slot *s = acquire(r);
    if (s == NULL) return READS_UNAVAILABLE;
    PGresult *res;
    reads_status rs = exec(s, "transfer", sql, 2, values, NULL, NULL, &res);
    release(r, s);
    if (rs != READS_OK) return rs;
    if (PQntuples(res) == 0) {
        PQclear(res);
        return READS_NOT_FOUND;
    }
    int rc = parse_transfer(res, 0, out);
    PQclear(res);
    if (rc != 0) return READS_INTERNAL;
    return READS_OK;
}

/* Is the account visible in the scope? READS_OK or READS_NOT_FOUND. */
static reads_status account_visible(slot *s, const char *idt, const char *scope)
{
    static const char sql[] =
        "SELECT 1 FROM accounts WHERE id = $1::uuid "
        "AND ($2::bigint = 0 OR customer_id = $2::bigint)";
    const char *values[2] = {idt, scope};
    PGresult *res;
    reads_status rs = exec(s, "account visibility", sql, 2, values, NULL, NULL, &res);
    if (rs != READS_OK) return rs;
    rs = PQntuples(res) == 1 ? READS_OK : READS_NOT_FOUND;
    PQclear(res);
    return rs;
}

/* One page of an account's history: check the account is visible to
 * scope, run sql (6 parameters, the last one limit + 1), and trim the
 * extra row that says whether there is a next page. On READS_OK *res
 * holds the rows (caller clears) and *n the rows of this page. */
static reads_status page_query(reads *r, const char *what, const char *sql,
                               const char *const values[6], const char *idt,
                               const char *scope, reads_page *page, PGresult **res,
                               size_t *n)
{
    slot *s = acquire(r);
    if (s == NULL) return READS_UNAVAILABLE;
    reads_status rs = account_visible(s, idt, scope);
    if (rs == READS_OK) rs = exec(s, what, sql, 6, values, NULL, NULL, res);
    release(r, s);
    if (rs != READS_OK) return rs;
    *n = (size_t)PQntuples(*res);
    mrd_assert(*n <= page->limit + 1);
    if (*n > page->limit) {
        page->more = true;
        *n = page->limit;
    }
    return READS_OK;
}

reads_status reads_account_transfers(reads *r, const id128 *account_id,
                                     int64_t scope_customer_id, reads_page *page,
                                     reads_transfer **out, size_t *count)
{
    /* Two index range scans (transfers_debit, transfers_credit), merged:
     * an account is never both sides of one transfer, so UNION ALL does
     * not repeat a row. One row past the page tells whether there are
     * more. */
    static const char sql[] =
        "SELECT " TRANSFER_COLS "FROM ("
        " (SELECT * FROM transfers WHERE debit_account_id = $1::uuid"
        "   AND timestamp_us >= $2::bigint AND timestamp_us < $3::bigint"
        "   AND (timestamp_us, seq) > ($4::bigint, $5::bigint)"
        "   ORDER BY timestamp_us, seq LIMIT $6::bigint)"
        " UNION ALL"
        " (SELECT * FROM transfers WHERE credit_account_id = $1::uuid"
        "   AND timestamp_us >= $2::bigint AND timestamp_us < $3::bigint"
        "   AND (timestamp_us, seq) > ($4::bigint, $5::bigint)"
        "   ORDER BY timestamp_us, seq LIMIT $6::bigint)"
        ") t LEFT JOIN pending_transfers p ON p.id = t.id "
        "ORDER BY t.timestamp_us, t.seq LIMIT $6::bigint";
    mrd_assert(page->limit >= 1 && page->limit <= LIMIT_PAGE_ROWS_MAX);
    *out = NULL;
    *count = 0;
    page->more = false;
    char idt[ID128_TEXT_SIZE], scope[24], from[24], to[24], cts[24], cseq[24], lim[24];
    fmt_id(account_id, idt);
    fmt_i64(scope_customer_id, scope);
    fmt_i64(page->from_us, from);
    fmt_i64(page->to_us, to);
    fmt_i64(page->has_cursor ? page->cursor_ts_us : INT64_MIN, cts);
    fmt_i64(page->has_cursor ? page->cursor_seq : INT64_MIN, cseq);
    fmt_i64((int64_t)page->limit + 1, lim);
    const char *values[6] = {idt, from, to, cts, cseq, lim};

    PGresult *res = NULL;
    size_t n = 0;
    reads_status rs = page_query(r, "account transfers", sql, values, idt, scope, page, &res, &n);
    if (rs != READS_OK) return rs;
    reads_transfer *rows = calloc(n > 0 ? n : 1, sizeof *rows);
    if (rows == NULL) {
        PQclear(res);
        return READS_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse_transfer(res, (int)i, &rows[i]) != 0) {
            PQclear(res);
            reads_transfers_free(rows, i);
            return READS_INTERNAL;
        }
    }
    PQclear(res);
    *out = rows;
    *count = n;
    return READS_OK;
}

reads_status reads_account_balances(reads *r, const id128 *account_id,
                                    int64_t scope_customer_id, reads_page *page,
                                    ledger_balance_row **out, size_t *count)
{
    static const char sql[] =
        "SELECT transfer_id, timestamp_us, debits_pending, debits_posted, credits_pending,"
        " credits_posted FROM account_balances WHERE account_id = $1::uuid"
        " AND timestamp_us >= $2::bigint AND timestamp_us < $3::bigint"
        " AND (timestamp_us, transfer_id) > ($4::bigint, $5::uuid)"
        " ORDER BY timestamp_us, transfer_id LIMIT $6::bigint";
    mrd_assert(page->limit >= 1 && page->limit <= LIMIT_PAGE_ROWS_MAX);
    *out = NULL;
    *count = 0;
    page->more = false;
    id128 zero;
    memset(&zero, 0, sizeof zero);
    char idt[ID128_TEXT_SIZE], cid[ID128_TEXT_SIZE], scope[24], from[24], to[24], cts[24],
        lim[24];
    fmt_id(account_id, idt);
    fmt_id(page->has_cursor ? &page->cursor_id : &zero, cid);
    fmt_i64(scope_customer_id, scope);
    fmt_i64(page->from_us, from);
    fmt_i64(page->to_us, to);
    fmt_i64(page->has_cursor ? page->cursor_ts_us : INT64_MIN, cts);
    fmt_i64((int64_t)page->limit + 1, lim);
    const char *values[6] = {idt, from, to, cts, cid, lim};

    PGresult *res = NULL;
    size_t n = 0;
    reads_status rs = page_query(r, "account balances", sql, values, idt, scope, page, &res, &n);
    if (rs != READS_OK) return rs;
    ledger_balance_row *rows = calloc(n > 0 ? n : 1, sizeof *rows);
    if (rows == NULL) {
        PQclear(res);
        return READS_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        int row = (int)i;
        rows[i].account_id = *account_id;
        get_id(res, row, 0, &rows[i].transfer_id);
        rows[i].timestamp_us = get_i64(res, row, 1);
        rows[i].debits_pending = get_i64(res, row, 2);
        rows[i].debits_posted = get_i64(res, row, 3);
        rows[i].credits_pending = get_i64(res, row, 4);
        rows[i].credits_posted = get_i64(res, row, 5);
    }
    PQclear(res);
    *out = rows;
    *count = n;
    return READS_OK;
}

reads_status reads_all_balances(reads *r, int64_t scope_customer_id, reads_balance **out,
                                size_t *count)
{
    static const char sql[] =
        "SELECT id, ledger, debits_pending, debits_posted, credits_pending, credits_posted"
        " FROM accounts WHERE ($1::bigint = 0 OR customer_id = $1::bigint)"
        " ORDER BY id LIMIT $2::bigint";
    *out = NULL;
    *count = 0;
    char scope[24], lim[24];
    fmt_i64(scope_customer_id, scope);
    fmt_i64(READS_BALANCES_MAX + 1, lim);
    const char *values[2] = {scope, lim};
    slot *s = acquire(r);
    if (s == NULL) return READS_UNAVAILABLE;
    PGresult *res;
    reads_status rs = exec(s, "all balances", sql, 2, values, NULL, NULL, &res);
    release(r, s);
    if (rs != READS_OK) return rs;
    size_t n = (size_t)PQntuples(res);
    if (n > READS_BALANCES_MAX) {
        PQclear(res);
        return READS_TOO_MANY;
    }
    reads_balance *rows = calloc(n > 0 ? n : 1, sizeof *rows);
    if (rows == NULL) {
        PQclear(res);
        return READS_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        int row = (int)i;
        get_id(res, row, 0, &rows[i].id);
        rows[i].ledger = (int32_t)get_i64(res, row, 1);
        rows[i].debits_pending = get_i64(res, row, 2);
        rows[i].debits_posted = get_i64(res, row, 3);
        rows[i].credits_pending = get_i64(res, row, 4);
        rows[i].credits_posted = get_i64(res, row, 5);
    }
    PQclear(res);
    *out = rows;
    *count = n;
    return READS_OK;
}

/* ---- Customers. */

static bool customer_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n < 1 || n > LIMIT_CUSTOMER_NAME_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

typedef struct name_id {
    const char *name;
    int64_t id;
} name_id;

static int name_id_cmp(const void *a, const void *b)
{
    return strcmp(((const name_id *)a)->name, ((const name_id *)b)->name);
}

reads_status reads_customer_ids(reads *r, const char *const *names, size_t count, int64_t *ids)
{
    static const char sql[] =
        "SELECT name, id FROM customers WHERE name = ANY(string_to_array($1::text, ','))";
    mrd_assert(count <= LIMIT_BATCH_EVENTS_MAX);
    size_t size = 1, valid = 0;
    for (size_t i = 0; i < count; i++) {
        ids[i] = 0;
        if (names[i] != NULL && customer_name_valid(names[i])) {
            size += strlen(names[i]) + 1;
            valid++;
        }
    }
    if (valid == 0) return READS_OK; /* no name that could exist */
    char *list = malloc(size);
    if (list == NULL) return READS_INTERNAL;
    size_t len = 0;
    for (size_t i = 0; i < count; i++) {
        if (names[i] == NULL || !customer_name_valid(names[i])) continue;
        if (len > 0) list[len++] = ',';
        size_t n = strlen(names[i]);
        memcpy(list + len, names[i], n);
        len += n;
    }
    list[len] = '\0';
    mrd_assert(len < size);
    const char *values[1] = {list};
    slot *s = acquire(r);
    if (s == NULL) {
        free(list);
        return READS_UNAVAILABLE;
    }
    PGresult *res;
    reads_status rs = exec(s, "customer names", sql, 1, values, NULL, NULL, &res);
    release(r, s);
    free(list);
    if (rs != READS_OK) return rs;
    size_t n = (size_t)PQntuples(res);
    name_id *map = calloc(n > 0 ? n : 1, sizeof *map);
    if (map == NULL) {
        PQclear(res);
        return READS_INTERNAL;
    }
    for (size_t i = 0; i < n; i++) {
        map[i].name = PQgetvalue(res, (int)i, 0);
        map[i].id = get_i64(res, (int)i, 1);
    }
    qsort(map, n, sizeof *map, name_id_cmp);
    for (size_t i = 0; i < count; i++) {
        if (names[i] == NULL) continue;
        name_id key = {.name = names[i], .id = 0};
        name_id *hit = bsearch(&key, map, n, sizeof *map, name_id_cmp);
        if (hit != NULL) ids[i] = hit->id;
    }
    free(map);
    PQclear(res);
    return READS_OK;
}

/* ---- Readiness. */

static int check_ready(reads *r, int expected_version, char *reason, size_t reason_size)
{
    slot *s = acquire(r);
    if (s == NULL) {
        snprintf(reason, reason_size, "database unreachable (or every read connection busy)");
        return -1;
    }
    PGresult *res;
    int ret = -1;
    reads_status rs = exec(s, "readiness", "SELECT pg_is_in_recovery()", 0, NULL, NULL, NULL, &res);
    if (rs != READS_OK) {
        snprintf(reason, reason_size, "database unreachable");
        goto out;
    }
    bool in_recovery = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
    PQclear(res);
    if (in_recovery) {
        snprintf(reason, reason_size, "database is read-only (a standby in recovery)");
        goto out;
    }
    int version = 0;
    char err[256];
    if (migrate_current_version(s->conn, &version, err, sizeof err) != 0) {
        snprintf(reason, reason_size, "cannot read the schema version: %.200s", err);
        goto out;
    }
    if (version != expected_version) {
        snprintf(reason, reason_size,
                 "database schema is at version %d, this meridiand needs %d", version,
                 expected_version);
        goto out;
    }
    ret = 0;
out:
    release(r, s);
    return ret;
}

int reads_ready(reads *r, int expected_version, char *reason, size_t reason_size)
{
    /* One probe checks at a time, outside the lock; concurrent probes
     * answer from the last result instead of queueing behind a check
     * that may take seconds (a database that stopped answering). */
    pthread_mutex_lock(&r->ready_mu);
    int64_t now = clock_mono_ns();
    bool stale = r->ready_checked_ns == 0 || now - r->ready_checked_ns >= READY_CACHE_NS ||
                 r->ready_version != expected_version;
    bool check = stale && !r->ready_checking;
    if (check)
        r->ready_checking = true;
    pthread_mutex_unlock(&r->ready_mu);
    if (check) {
        char why[sizeof r->ready_reason];
        int ok = check_ready(r, expected_version, why, sizeof why) == 0;
        pthread_mutex_lock(&r->ready_mu);
        r->ready_ok = ok;
        snprintf(r->ready_reason, sizeof r->ready_reason, "%s", why);
        r->ready_version = expected_version;
        r->ready_checked_ns = clock_mono_ns();
        r->ready_checking = false;
        pthread_mutex_unlock(&r->ready_mu);
    }
    pthread_mutex_lock(&r->ready_mu);
    int ok = r->ready_checked_ns != 0 && r->ready_version == expected_version && r->ready_ok;
    if (ok)
        snprintf(reason, reason_size, "%s", "");
    else if (r->ready_checked_ns == 0)
        snprintf(reason, reason_size, "%s", "the first readiness check is still running");
    else
        snprintf(reason, reason_size, "%s", r->ready_reason);
    pthread_mutex_unlock(&r->ready_mu);
    return ok ? 0 : -1;
}
