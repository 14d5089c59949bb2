/*
 * check.c — the drill's checker: libpq queries against the leader's
 * database and reads of the cell's keys in etcd (see check.h).
 *
 * Ids travel to PostgreSQL as one uuid[] parameter in text form (at most
 * DRILL_ACKS_MAX ids, about 37 MB of text in the worst case, far less in
 * a drill of seconds), so each check is one query. The comparison of
 * acknowledged transfers with stored rows is done here, on a sorted copy
 * of the acknowledgements, so a row that differs from what was sent is
 * reported as such rather than as "found".
 */
#include "drill/check.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common/mrd_assert.h"

#define CHECK_KEY_BYTES 256
#define CHECK_HISTORY_KEYS_MAX 10000

int64_t drill_db_check_violations(const drill_db_check *c)
{
    return c->acked_missing + c->acked_doubled + c->acked_mismatched + c->refused_applied +
           c->phantom + c->accounts_missing + c->balance_mismatches + c->limit_violations +
           (c->ledger_balanced ? 0 : 1);
}

static void problem(drill_db_check *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void problem(drill_db_check *c, const char *fmt, ...)
{
    if (c->first_problem[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->first_problem, sizeof c->first_problem, fmt, ap);
    va_end(ap);
}

/* "{id,id,...}" for a uuid[] parameter, from n ids `stride` bytes apart
 * (an id128 array, or the id member of an array of records). Returns a
 * malloc'd string or NULL. */
static char *uuid_array(const id128 *first, size_t stride, size_t n)
{
    size_t cap = 3 + n * ID128_TEXT_SIZE;
    char *s = malloc(cap);
    if (s == NULL)
        return NULL;
    size_t len = 0;
    s[len++] = '{';
    const unsigned char *p = (const unsigned char *)first;
    for (size_t i = 0; i < n; i++, p += stride) {
        if (i)
            s[len++] = ',';
        id128 id;
        memcpy(&id, p, sizeof id);
        id128_format(&id, s + len);
        len += ID128_TEXT_SIZE - 1;
    }
    s[len++] = '}';
    s[len] = '\0';
    mrd_assert(len < cap);
    return s;
}

static char *uuid_array_events(const workload_event *ev, size_t n)
{
    return uuid_array(n > 0 ? &ev[0].id : NULL, sizeof *ev, n);
}

static char *uuid_array_ids(const id128 *ids, size_t n)
{
    return uuid_array(ids, sizeof *ids, n);
}

/* Run a one-parameter query; returns the result (PGRES_TUPLES_OK) or
 * NULL with the error in err. */
static PGresult *query1(PGconn *db, const char *sql, const char *param, char *err,
                        size_t err_size)
{
    const char *params[1] = {param};
    PGresult *r = PQexecParams(db, sql, param ? 1 : 0, NULL, param ? params : NULL, NULL, NULL,
                               0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, err_size, "query failed: %s", PQerrorMessage(db));
        PQclear(r);
        return NULL;
    }
    return r;
}

static int cmp_event_id(const void *a, const void *b)
{
    return id128_compare(&((const workload_event *)a)->id, &((const workload_event *)b)->id);
}

static int64_t cell_i64(PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : (int64_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* Acknowledged transfers: present once, with the fields sent. */
static int check_acked(PGconn *db, const workload *w, drill_db_check *out, char *err,
                       size_t err_size)
{
    size_t n;
    const workload_event *acked = workload_acked(w, &n);
    out->acked = (int64_t)n;
    if (n == 0)
        return 0;
    size_t accounts_n;
    const id128 *accounts = workload_accounts(w, NULL, &accounts_n);
    workload_event *sorted = malloc(n * sizeof *sorted);
    uint8_t *seen = calloc(n, 1);
    char *arr = uuid_array_events(acked, n);
    int rc = -1;
    PGresult *r = NULL;
    if (sorted == NULL || seen == NULL || arr == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    memcpy(sorted, acked, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_event_id);
    r = query1(db,
               "SELECT id::text, amount, debit_account_id::text, credit_account_id::text "
               "FROM transfers WHERE id = ANY($1::uuid[])",
               arr, err, err_size);
    if (r == NULL)
        goto out;
    for (int i = 0; i < PQntuples(r); i++) {
        workload_event key;
        if (id128_parse(PQgetvalue(r, i, 0), &key.id) != 0)
            continue;
        workload_event *e = bsearch(&key, sorted, n, sizeof *sorted, cmp_event_id);
        if (e == NULL)
            continue;
        size_t at = (size_t)(e - sorted);
        if (seen[at]++ > 0) {
            out->acked_doubled++;
            problem(out, "transfer %s stored more than once", PQgetvalue(r, i, 0));
            continue;
        }
        out->acked_found++;
        id128 d, c;
        bool same = cell_i64(r, i, 1) == e->amount && id128_parse(PQgetvalue(r, i, 2), &d) == 0 &&
                    id128_parse(PQgetvalue(r, i, 3), &c) == 0 && e->debit < accounts_n &&
                    e->credit < accounts_n && id128_equal(&d, &accounts[e->debit]) &&
                    id128_equal(&c, &accounts[e->credit]);
        if (!same) {
            out->acked_mismatched++;
            problem(out, "transfer %s stored with other accounts or amount than sent",
                    PQgetvalue(r, i, 0));
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (seen[i] == 0) {
            out->acked_missing++;
            if (sorted[i].sent_ms > out->acked_missing_sent_max_ms)
                out->acked_missing_sent_max_ms = sorted[i].sent_ms;
            if (out->acked_missing_answer_min_ms == 0 ||
                sorted[i].answer_ms < out->acked_missing_answer_min_ms)
                out->acked_missing_answer_min_ms = sorted[i].answer_ms;
            if (sorted[i].answer_ms > out->acked_missing_answer_max_ms)
                out->acked_missing_answer_max_ms = sorted[i].answer_ms;
            if (out->first_problem[0] == '\0') {
                char id[ID128_TEXT_SIZE];
                id128_format(&sorted[i].id, id);
                problem(out, "acknowledged transfer %s (answered at %" PRId64 " ms) is missing",
                        id, sorted[i].answer_ms);
            }
        }
    }
    rc = 0;
out:
    PQclear(r);
    free(arr);
    free(seen);
    free(sorted);
    return rc;
}

/* How many of the events' ids are stored. Returns 0 or -1. */
static int count_present(PGconn *db, const workload_event *ev, size_t n, int64_t *present,
                         char *err, size_t err_size)
{
    *present = 0;
    if (n == 0)
        return 0;
    char *arr = uuid_array_events(ev, n);
    if (arr == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    PGresult *r = query1(db, "SELECT count(*) FROM transfers WHERE id = ANY($1::uuid[])", arr,
                         err, err_size);
    free(arr);
    if (r == NULL)
        return -1;
    *present = cell_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

/* Balances against the transfers table, limits, ledger balance, and
 * rows touching the accounts that no request accounts for. */
static int check_accounts(PGconn *db, const workload *w, drill_db_check *out, char *err,
                          size_t err_size)
{
    const bool *limited = NULL;
    size_t n;
    const id128 *ids = workload_accounts(w, &limited, &n);
    char *arr = uuid_array_ids(ids, n);
    if (arr == NULL) {
        snprintf(err, err_size, "out of memory");
        return -1;
    }
    /* Plain transfers only: the workload makes no pending ones, and a
     * pending one would show as debits_pending and fail the comparison. */
    PGresult *r = query1(
        db,
        "SELECT a.id::text, a.debits_posted, a.credits_posted, a.debits_pending, "
        "a.credits_pending, "
        "(SELECT coalesce(sum(t.amount), 0)::bigint FROM transfers t WHERE t.debit_account_id = a.id), "
        "(SELECT coalesce(sum(t.amount), 0)::bigint FROM transfers t WHERE t.credit_account_id = a.id) "
        "FROM accounts a WHERE a.id = ANY($1::uuid[])",
        arr, err, err_size);
    if (r == NULL) {
        free(arr);
        return -1;
    }
    out->accounts_missing = (int64_t)n - PQntuples(r);
    if (out->accounts_missing > 0)
        problem(out, "%" PRId64 " of the workload's accounts are missing", out->accounts_missing);
    int64_t debits = 0, credits = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        int64_t dp = cell_i64(r, i, 1), cp = cell_i64(r, i, 2), dpe = cell_i64(r, i, 3),
                cpe = cell_i64(r, i, 4), sd = cell_i64(r, i, 5), sc = cell_i64(r, i, 6);
        if (dp != sd || cp != sc || dpe != 0 || cpe != 0) {
            out->balance_mismatches++;
            problem(out,
                    "account %s: debits_posted %" PRId64 " credits_posted %" PRId64
                    " but its transfers sum to %" PRId64 " / %" PRId64,
                    PQgetvalue(r, i, 0), dp, cp, sd, sc);
        }
        id128 id;
        if (id128_parse(PQgetvalue(r, i, 0), &id) == 0) {
            for (size_t j = 0; j < n; j++) {
                if (limited[j] && id128_equal(&id, &ids[j]) && dp + dpe > cp) {
                    out->limit_violations++;
                    problem(out, "limited account %s has debits %" PRId64 " > credits %" PRId64,
                            PQgetvalue(r, i, 0), dp + dpe, cp);
                }
            }
        }
        if (__builtin_add_overflow(debits, dp, &debits) ||
            __builtin_add_overflow(credits, cp, &credits)) {
            debits = -1;
            credits = -2; /* cannot balance: reported below */
        }
    }
    PQclear(r);
    out->ledger_balanced = debits == credits;
    if (!out->ledger_balanced)
        problem(out, "the workload's accounts do not balance: debits %" PRId64
                     " credits %" PRId64, debits, credits);
    r = query1(db,
               "SELECT count(*) FROM transfers WHERE debit_account_id = ANY($1::uuid[]) "
               "OR credit_account_id = ANY($1::uuid[])",
               arr, err, err_size);
    free(arr);
    if (r == NULL)
        return -1;
    out->rows = cell_i64(r, 0, 0);
    PQclear(r);
    return 0;
}

int drill_check_db(const char *conninfo, const workload *w, drill_db_check *out, char *err,
                   size_t err_size)
{
    memset(out, 0, sizeof *out);
    PGconn *db = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(db) != CONNECTION_OK) {
        snprintf(err, err_size, "cannot connect to %s: %s", conninfo, PQerrorMessage(db));
        goto out;
    }
    /* One snapshot for every query: the cell may take writes meanwhile
     * (not from this workload, which is stopped). */
    PGresult *b = PQexec(db, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    bool began = PQresultStatus(b) == PGRES_COMMAND_OK;
    PQclear(b);
    if (!began) {
        snprintf(err, err_size, "BEGIN failed: %s", PQerrorMessage(db));
        goto out;
    }
    if (check_acked(db, w, out, err, err_size) != 0)
        goto out;
    size_t n;
    const workload_event *ev = workload_refused(w, &n);
    out->refused = (int64_t)n;
    if (count_present(db, ev, n, &out->refused_applied, err, err_size) != 0)
        goto out;
    if (out->refused_applied > 0)
        problem(out, "%" PRId64 " transfers refused to the client were applied",
                out->refused_applied);
    ev = workload_unresolved(w, &n);
    out->unresolved = (int64_t)n;
    if (count_present(db, ev, n, &out->unresolved_applied, err, err_size) != 0)
        goto out;
    if (check_accounts(db, w, out, err, err_size) != 0)
        goto out;
    int64_t explained = out->acked_found + out->acked_doubled + out->unresolved_applied +
                        out->refused_applied;
    out->phantom = out->rows > explained ? out->rows - explained : 0;
    if (out->phantom > 0)
        problem(out, "%" PRId64 " transfers touch the workload's accounts that no client "
                     "request accounts for", out->phantom);
    rc = 0;
out:
    PQfinish(db);
    return rc;
}

int drill_db_started_ms(const char *conninfo, int64_t *started_ms)
{
    *started_ms = 0;
    PGconn *db = PQconnectdb(conninfo);
    int rc = -1;
    if (PQstatus(db) == CONNECTION_OK) {
        PGresult *r = PQexec(db, "SELECT (extract(epoch FROM pg_postmaster_start_time()) * 1000)"
                                 "::bigint");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            *started_ms = cell_i64(r, 0, 0);
            rc = 0;
        }
        PQclear(r);
    }
    PQfinish(db);
    return rc;
}

/* ---- etcd. */

int drill_etcd_leader(etcd_client *c, const char *cell, drill_leader *out)
{
    memset(out, 0, sizeof *out);
    char key[CHECK_KEY_BYTES];
    snprintf(key, sizeof key, "/meridian/%s/leader", cell);
    etcd_kv kv;
    int rc = etcd_get(c, key, &kv);
    if (rc == ETCD_E_NOT_FOUND)
        return 0;
    if (rc != ETCD_OK)
        return -1;
    json_error_t jerr;
    json_t *j = json_loadb(kv.value, kv.value_len, 0, &jerr);
    const char *node = json_string_value(json_object_get(j, "node"));
    const char *host = json_string_value(json_object_get(j, "host"));
    if (node != NULL) {
        out->present = true;
        snprintf(out->node, sizeof out->node, "%s", node);
        snprintf(out->host, sizeof out->host, "%s", host ? host : "127.0.0.1");
        out->epoch = (int64_t)json_integer_value(json_object_get(j, "epoch"));
        out->port = (int)json_integer_value(json_object_get(j, "port"));
    }
    json_decref(j);
    etcd_kv_release(&kv);
    return 0;
}

int drill_etcd_epoch(etcd_client *c, const char *cell, int64_t *epoch)
{
    *epoch = 0;
    char key[CHECK_KEY_BYTES];
    snprintf(key, sizeof key, "/meridian/%s/epoch", cell);
    etcd_kv kv;
    int rc = etcd_get(c, key, &kv);
    if (rc == ETCD_E_NOT_FOUND)
        return 0;
    if (rc != ETCD_OK)
        return -1;
    *epoch = (int64_t)strtoll(kv.value ? kv.value : "0", NULL, 10);
    etcd_kv_release(&kv);
    return 0;
}

static int64_t json_ms(json_t *j, const char *name)
{
    json_t *v = json_object_get(j, name);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : 0;
}

int drill_etcd_history_after(etcd_client *c, const char *cell, int64_t after, drill_event *out,
                             size_t max, size_t *count)
{
    *count = 0;
    char prefix[CHECK_KEY_BYTES];
    snprintf(prefix, sizeof prefix, "/meridian/%s/history/", cell);
    etcd_kv *kvs = NULL;
    size_t n = 0;
    int rc = etcd_get_prefix(c, prefix, &kvs, &n, CHECK_HISTORY_KEYS_MAX);
    if (rc == ETCD_E_NOT_FOUND)
        return 0;
    if (rc != ETCD_OK)
        return -1;
    /* Keys are history/<epoch, 20 digits>: sorted by key is by epoch. */
    for (size_t i = 0; i < n && *count < max; i++) {
        json_error_t jerr;
        json_t *j = json_loadb(kvs[i].value, kvs[i].value_len, 0, &jerr);
        if (j == NULL)
            continue;
        drill_event e = {0};
        e.epoch = json_ms(j, "epoch");
        if (e.epoch > after) {
            snprintf(e.node, sizeof e.node, "%s",
                     json_string_value(json_object_get(j, "node")) ?: "");
            snprintf(e.kind, sizeof e.kind, "%s",
                     json_string_value(json_object_get(j, "kind")) ?: "");
            e.leader_lost_at_ms = json_ms(j, "leader_lost_at_ms");
            e.acquired_at_ms = json_ms(j, "acquired_at_ms");
            e.promoted_at_ms = json_ms(j, "promoted_at_ms");
            out[(*count)++] = e;
        }
        json_decref(j);
    }
    etcd_kvs_free(kvs, n);
    return 0;
}
