/*
 * api.c — the HTTP API of docs/API.md on top of the batcher and reads.
 *
 * A request goes: route table (exact paths, "{id}" segments; literal
 * paths win over patterns, so /v1/accounts/lookup is never an id) ->
 * 404/405 -> API key (401; 503 when the key cannot be checked) -> POST
 * framing (411 without Content-Length, 415 without application/json) ->
 * handler. Handlers never build error bodies themselves: every refusal
 * goes through reply_problem, so each is problem+json with a stable
 * code. Writes block in batcher_submit_* on the connection's own thread
 * until their group commit has an outcome, and the batcher's outcome is
 * mapped here to what a client can safely do next (retry with the same
 * ids, or not).
 */
#include "service/api.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "common/textbuf.h"
#include "service/codec.h"
#include "service/metrics.h"
#include "service/route.h"

struct api {
    api_config cfg;
};

/* Longest path parameter kept ({id}); longer ones are invalid ids. */
#define PATH_PARAM_SIZE 72

/* Distinct ledgers summed by GET /v1/balances (the ledgers table has a
 * handful; past this the answer is refused as a bug). */
#define BALANCE_LEDGERS_MAX 1024

/* Largest JSON number clients read exactly. */
#define EXACT_INT_MAX (INT64_C(1) << 53)

typedef struct ctx {
    api *api;
    const http_request *req;
    http_response *resp;
    auth_identity who;
    const char *param; /* {id} of the path, or NULL */
} ctx;

typedef void (*route_fn)(ctx *c);

typedef struct route {
    const char *method;
    const char *pattern;
    const char *name; /* metrics route */
    route_fn fn;
    bool authenticated;
    bool admin_only;
} route;

api *api_create(const api_config *cfg)
{
    mrd_assert(cfg != NULL && cfg->batcher != NULL && cfg->reads != NULL && cfg->auth != NULL);
    api *a = calloc(1, sizeof *a);
    if (a == NULL) return NULL;
    a->cfg = *cfg;
    return a;
}

void api_free(api *a)
{
    free(a);
}

/* ---- Replies. */

static void reply_body(ctx *c, int status, char *body, const char *content_type)
{
    free(c->resp->body);
    c->resp->status = status;
    c->resp->body = body;
    c->resp->body_len = body != NULL ? strlen(body) : 0;
    c->resp->content_type = content_type;
}

static void reply_codec_error(ctx *c, const codec_error *e)
{
    char *body = codec_problem_body(e);
    if (e->status >= 500)
        log_error("api", "request_id=%s status=%d code=%s detail=\"%s\"", c->req->request_id,
                  e->status, e->code, e->detail);
    reply_body(c, e->status, body, "application/problem+json");
}

static void reply_problem(ctx *c, int status, const char *code, const char *pointer,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void reply_problem(ctx *c, int status, const char *code, const char *pointer,
                          const char *fmt, ...)
{
    codec_error e;
    memset(&e, 0, sizeof e);
    char detail[sizeof e.detail];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    codec_fail(&e, status, code, pointer, "%s", detail);
    reply_codec_error(c, &e);
}

static void reply_internal(ctx *c, const char *what)
{
    log_error("api", "request_id=%s internal error: %s", c->req->request_id, what);
    reply_problem(c, 500, "internal", NULL,
                  "internal error (request id %s); it is logged, please report it",
                  c->req->request_id);
}

/* Send j (a new reference, consumed) as JSON with status. */
static void reply_json(ctx *c, int status, json_t *j)
{
    if (j == NULL) {
        reply_internal(c, "out of memory while encoding the answer");
        return;
    }
    char *body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (body == NULL) {
        reply_internal(c, "out of memory while serialising the answer");
        return;
    }
    reply_body(c, status, body, "application/json");
}

static void reply_unavailable(ctx *c)
{
    reply_problem(c, 503, "unavailable", NULL,
                  "the database is unreachable; nothing was changed, retry shortly");
    c->resp->retry_after_s = 1;
}

/* Map a reads status other than READS_OK. */
static void reply_reads_error(ctx *c, reads_status rs, const char *not_found)
{
    switch (rs) {
    case READS_NOT_FOUND:
        reply_problem(c, 404, "not_found", NULL, "%s", not_found);
        return;
    case READS_UNAVAILABLE:
        reply_unavailable(c);
        return;
    case READS_TOO_MANY:
        reply_problem(c, 400, "too_many_accounts", NULL,
                      "more than %d accounts; read them in pages with POST /v1/accounts/lookup",
                      READS_BALANCES_MAX);
        return;
    case READS_OK:
    case READS_INTERNAL:
        break;
    }
    reply_internal(c, "read query failed (see above)");
}

/* Map a batcher status other than BATCHER_OK. */
static void reply_batcher_error(ctx *c, batcher_status st)
{
    switch (st) {
    case BATCHER_OVERLOADED:
        reply_problem(c, 503, "overloaded", NULL,
                      "the commit queue is full; nothing was applied, retry with the same ids");
        c->resp->retry_after_s = 1;
        return;
    case BATCHER_UNAVAILABLE:
        reply_problem(c, 503, "unavailable", NULL,
                      "the database is unreachable or read-only; nothing was applied, retry "
                      "with the same ids");
        c->resp->retry_after_s = 1;
        return;
    case BATCHER_STOPPING:
        reply_problem(c, 503, "unavailable", NULL,
                      "meridiand is shutting down; nothing was applied, retry with the same ids");
        c->resp->retry_after_s = 1;
        return;
    case BATCHER_UNKNOWN:
        log_warn("api", "request_id=%s commit outcome unknown", c->req->request_id);
        reply_problem(c, 503, "unavailable", NULL,
                      "the database connection broke while committing and the outcome is "
                      "unknown; retrying with the same ids is safe (ids are idempotent: "
                      "anything already applied answers exists)");
        c->resp->retry_after_s = 1;
        return;
    case BATCHER_GLOBAL_TIMEOUT:
        reply_problem(c, 503, "durability_timeout", NULL,
                      "committed in the home region, but no cross-region standby confirmed it "
                      "in time, so it is not acknowledged with global durability; retry with "
                      "the same ids to wait again (they answer exists once applied)");
        c->resp->retry_after_s = 1;
        return;
    case BATCHER_OK:
    case BATCHER_INTERNAL:
        break;
    }
    reply_internal(c, "batcher failed (see above)");
}

/* ---- Helpers. */

static bool parse_path_id(ctx *c, id128 *id)
{
    if (c->param == NULL || strlen(c->param) >= PATH_PARAM_SIZE - 1 ||
        id128_parse(c->param, id) != 0) {
        reply_problem(c, 400, "invalid_field", NULL,
                      "'%.40s' in the path is not an id: expected a UUID (32 hex digits, "
                      "dashes optional)",
                      c->param != NULL ? c->param : "");
        return false;
    }
    return true;
}

static json_t *parse_body(ctx *c)
{
    codec_error e;
    memset(&e, 0, sizeof e);
    json_t *root = codec_parse_body(c->req->body, c->req->body_len, &e);
    if (root == NULL) reply_codec_error(c, &e);
    return root;
}

/* A JSON value for a sum that may not fit int64 (per-ledger totals). */
static json_t *amount128(__int128 v)
{
    if (v >= INT64_MIN && v <= INT64_MAX) return codec_amount((int64_t)v);
    char buf[48], *p = buf + sizeof buf;
    *--p = '\0';
    bool neg = v < 0;
    unsigned __int128 u = neg ? (unsigned __int128)(-(v + 1)) + 1u : (unsigned __int128)v;
    do {
        *--p = (char)('0' + (int)(u % 10u));
        u /= 10u;
    } while (u != 0);
    if (neg) *--p = '-';
    return json_string(p);
}

/* ---- Operations. */

static void h_healthz(ctx *c)
{
    reply_json(c, 200, json_pack("{s:s}", "status", "ok"));
}

static void h_readyz(ctx *c)
{
    char reason[256];
    route_snapshot snap;
    if (c->api->cfg.route != NULL) {
        route_current(c->api->cfg.route, &snap);
        if (!snap.has_leader) {
            snprintf(reason, sizeof reason, "no leader for cell %s",
                     route_cell(c->api->cfg.route));
            reply_json(c, 503,
                       json_pack("{s:s,s:s}", "status", "unavailable", "reason", reason));
            return;
        }
    }
    if (reads_ready(c->api->cfg.reads, c->api->cfg.schema_version, reason, sizeof reason) == 0) {
        reply_json(c, 200, json_pack("{s:s}", "status", "ready"));
        return;
    }
    reply_json(c, 503, json_pack("{s:s,s:s}", "status", "unavailable", "reason", reason));
}

static void h_metrics(ctx *c)
{
    metrics_queue_depth_set(batcher_queue_depth(c->api->cfg.batcher));
    metrics_db_up_set(batcher_db_up(c->api->cfg.batcher));
    char *text = metrics_render();
    if (text == NULL) {
        reply_internal(c, "cannot render metrics");
        return;
    }
    reply_body(c, 200, text, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- Writes. */

static void h_transfers_create(ctx *c)
{
    json_t *root = parse_body(c);
    if (root == NULL) return;
    codec_error e;
    memset(&e, 0, sizeof e);
    ledger_transfer *events = NULL;
    size_t count = 0;
    int rc = codec_decode_transfers(root, c->who.customer_id, &events, &count, &e);
    json_decref(root);
    if (rc != 0) {
        reply_codec_error(c, &e);
        return;
    }
    mrd_assert(count >= 1 && count <= LIMIT_BATCH_EVENTS_MAX);
    ledger_transfer_result *results = calloc(count, sizeof *results);
    if (results == NULL) {
        codec_transfers_free(events, count);
        reply_internal(c, "out of memory");
        return;
    }
    batcher_status st = batcher_submit_transfers(c->api->cfg.batcher, events, count, results);
    if (st == BATCHER_OK) {
        /* Written directly: the same bytes as reply_json of
         * codec_encode_transfer_results, without building the tree. */
        char *body = codec_transfer_results_text(events, results, count);
        if (body != NULL)
            reply_body(c, 200, body, "application/json");
        else
            reply_internal(c, "out of memory while encoding the answer");
    } else {
        reply_batcher_error(c, st);
    }
    free(results);
    codec_transfers_free(events, count);
}

static void h_accounts_create(ctx *c)
{
    json_t *root = parse_body(c);
    if (root == NULL) return;
    codec_error e;
    memset(&e, 0, sizeof e);
    ledger_account *events = NULL;
    const char **names = NULL;
    size_t count = 0;
    int64_t *ids = NULL;
    ledger_account_result *results = NULL;
    bool admin = c->who.admin;
    if (codec_decode_accounts(root, admin ? 0 : c->who.customer_id, admin ? 1 : 0, &events,
                              &names, &count, &e) != 0) {
        reply_codec_error(c, &e);
        goto out;
    }
    mrd_assert(count >= 1 && count <= LIMIT_BATCH_EVENTS_MAX);
    if (admin) {
        /* Resolve the customer names once for the whole request. An
         * unknown name leaves customer_id 0, which the engine answers
         * per event with customer_not_found (docs/API.md), so a linked
         * chain fails as a whole like for any other per-event refusal. */
        ids = calloc(count, sizeof *ids);
        if (ids == NULL) {
            reply_internal(c, "out of memory");
            goto out;
        }
        reads_status rs = reads_customer_ids(c->api->cfg.reads, names, count, ids);
        if (rs != READS_OK) {
            reply_reads_error(c, rs, "");
            goto out;
        }
        for (size_t i = 0; i < count; i++) {
            char ptr[64];
            snprintf(ptr, sizeof ptr, "/accounts/%zu/customer", i);
            if (names[i] == NULL) {
                reply_problem(c, 400, "missing_field", ptr,
                              "accounts[%zu].customer: an admin key must name the customer", i);
                goto out;
            }
            events[i].customer_id = ids[i];
        }
    }
    results = calloc(count, sizeof *results);
    if (results == NULL) {
        reply_internal(c, "out of memory");
        goto out;
    }
    batcher_status st = batcher_submit_accounts(c->api->cfg.batcher, events, count, results);
    if (st == BATCHER_OK)
        reply_json(c, 200, codec_encode_account_results(events, results, count));
    else
        reply_batcher_error(c, st);
out:
    free(results);
    free(ids);
    free(names);
    free(events);
    json_decref(root);
}

/* ---- Reads. */

static void h_accounts_get(ctx *c)
{
    id128 id;
    if (!parse_path_id(c, &id)) return;
    reads_account acc;
    reads_status rs = reads_account_get(c->api->cfg.reads, &id, c->who.customer_id, &acc);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "no account with this id");
        return;
    }
    reply_json(c, 200, codec_encode_account(&acc.account, acc.customer_name));
}

static void h_accounts_lookup(ctx *c)
{
    json_t *root = parse_body(c);
    if (root == NULL) return;
    codec_error e;
    memset(&e, 0, sizeof e);
    id128 *ids = NULL;
    size_t count = 0;
    int rc = codec_decode_ids(root, &ids, &count, &e);
    json_decref(root);
    if (rc != 0) {
        reply_codec_error(c, &e);
        return;
    }
    reads_account *found = NULL;
    size_t n = 0;
    reads_status rs =
        reads_accounts_lookup(c->api->cfg.reads, ids, count, c->who.customer_id, &found, &n);
    free(ids);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "");
        return;
    }
    json_t *arr = json_array();
    bool bad = arr == NULL;
    for (size_t i = 0; i < n && !bad; i++)
        bad = json_array_append_new(arr, codec_encode_account(&found[i].account,
                                                              found[i].customer_name)) != 0;
    free(found);
    if (bad) {
        json_decref(arr);
        reply_internal(c, "out of memory");
        return;
    }
    json_t *o = json_object();
    if (o != NULL && json_object_set_new(o, "accounts", arr) != 0) {
        json_decref(o);
        o = NULL;
    } else if (o == NULL) {
        json_decref(arr);
    }
    reply_json(c, 200, o);
}

static void h_transfers_get(ctx *c)
{
    id128 id;
    if (!parse_path_id(c, &id)) return;
    reads_transfer t;
    reads_status rs = reads_transfer_get(c->api->cfg.reads, &id, c->who.customer_id, &t);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "no transfer with this id");
        return;
    }
    reply_json(c, 200,
               codec_encode_transfer(&t.transfer, t.has_pending_state ? &t.pending_state : NULL));
    free(t.metadata_owned);
}

/* ---- Pages: ?from_us=&to_us=&limit=&cursor= */

typedef enum { CURSOR_TRANSFERS, CURSOR_BALANCES } cursor_kind;

typedef struct page_args {
    ctx *c;
    reads_page *page;
    cursor_kind kind;
    bool has_from, has_to, has_limit, has_cursor;
} page_args;

/* A decimal int64 in [min, max], digits only. */
static bool parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (s == NULL || *s == '\0' || strlen(s) > 19) return false;
    int64_t v = 0;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') return false;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *p - '0', &v))
            return false;
    }
    if (v < min || v > max) return false;
    *out = v;
    return true;
}

/* Cursors: "<timestamp_us>.<seq>" (transfers), "<timestamp_us>.<32 hex>"
 * (balances): the sort key of the last row returned. */
static bool parse_cursor(const char *s, cursor_kind kind, reads_page *page)
{
    const char *dot = strchr(s, '.');
    if (dot == NULL || dot == s || (size_t)(dot - s) > 19) return false;
    char ts[24];
    memcpy(ts, s, (size_t)(dot - s));
    ts[dot - s] = '\0';
    if (!parse_i64(ts, 0, INT64_MAX, &page->cursor_ts_us)) return false;
    if (kind == CURSOR_TRANSFERS) {
        if (!parse_i64(dot + 1, 0, INT64_MAX, &page->cursor_seq)) return false;
    } else {
        if (strlen(dot + 1) != 32 || id128_parse(dot + 1, &page->cursor_id) != 0) return false;
    }
    page->has_cursor = true;
    return true;
}

static int page_arg(void *arg, const char *name, const char *value)
{
    page_args *pa = arg;
    ctx *c = pa->c;
    int64_t v = 0;
    bool *seen = NULL;
    if (strcmp(name, "from_us") == 0)
        seen = &pa->has_from;
    else if (strcmp(name, "to_us") == 0)
        seen = &pa->has_to;
    else if (strcmp(name, "limit") == 0)
        seen = &pa->has_limit;
    else if (strcmp(name, "cursor") == 0)
        seen = &pa->has_cursor;
    else {
        reply_problem(c, 400, "invalid_parameter", NULL,
                      "unknown query parameter '%.40s'; known: from_us, to_us, limit, cursor",
                      name);
        return -1;
    }
    if (*seen) {
        reply_problem(c, 400, "invalid_parameter", NULL, "query parameter '%s' given twice",
                      name);
        return -1;
    }
    *seen = true;
    if (strcmp(name, "from_us") == 0 || strcmp(name, "to_us") == 0) {
        if (!parse_i64(value, 0, INT64_MAX, &v)) {
            reply_problem(c, 400, "invalid_parameter", NULL,
                          "%s must be microseconds since the Unix epoch, an integer between 0 "
                          "and 9223372036854775807",
                          name);
            return -1;
        }
        if (name[0] == 'f')
            pa->page->from_us = v;
        else
            pa->page->to_us = v;
    } else if (strcmp(name, "limit") == 0) {
        if (!parse_i64(value, 1, LIMIT_PAGE_ROWS_MAX, &v)) {
            reply_problem(c, 400, "invalid_parameter", NULL,
                          "limit must be an integer between 1 and %d", LIMIT_PAGE_ROWS_MAX);
            return -1;
        }
        pa->page->limit = (size_t)v;
    } else {
        if (!parse_cursor(value, pa->kind, pa->page)) {
            reply_problem(c, 400, "invalid_parameter", NULL,
                          "cursor is not one this endpoint returned; pass next_cursor from "
                          "the previous page unchanged");
            return -1;
        }
    }
    return 0;
}

/* Fill page from the query string; false when a reply was made. */
static bool parse_page(ctx *c, cursor_kind kind, reads_page *page)
{
    memset(page, 0, sizeof *page);
    page->from_us = 0;
    page->to_us = INT64_MAX;
    page->limit = LIMIT_PAGE_ROWS_DEFAULT;
    page_args pa = {.c = c, .page = page, .kind = kind};
    if (http_request_query_each(c->req, page_arg, &pa) != 0) return false;
    if (page->to_us < page->from_us) {
        reply_problem(c, 400, "invalid_parameter", NULL,
                      "to_us (%" PRId64 ") is before from_us (%" PRId64 ")", page->to_us,
                      page->from_us);
        return false;
    }
    return true;
}

/* {"<key>": arr, "next_cursor": "..."} (next_cursor only when more). */
static void reply_page(ctx *c, const char *key, json_t *arr, const char *next_cursor)
{
    json_t *o = json_object();
    int bad = o == NULL;
    if (!bad) bad = json_object_set_new(o, key, arr) != 0;
    else json_decref(arr);
    if (!bad && next_cursor != NULL)
        bad = json_object_set_new(o, "next_cursor", json_string(next_cursor)) != 0;
    if (bad) {
        json_decref(o);
        reply_internal(c, "out of memory");
        return;
    }
    reply_json(c, 200, o);
}

static void h_account_transfers(ctx *c)
{
    id128 id;
    if (!parse_path_id(c, &id)) return;
    reads_page page;
    if (!parse_page(c, CURSOR_TRANSFERS, &page)) return;
    reads_transfer *rows = NULL;
    size_t n = 0;
    reads_status rs =
        reads_account_transfers(c->api->cfg.reads, &id, c->who.customer_id, &page, &rows, &n);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "no account with this id");
        return;
    }
    json_t *arr = json_array();
    bool bad = arr == NULL;
    for (size_t i = 0; i < n && !bad; i++)
        bad = json_array_append_new(
                  arr, codec_encode_transfer(&rows[i].transfer, rows[i].has_pending_state
                                                                    ? &rows[i].pending_state
                                                                    : NULL)) != 0;
    char cursor[64];
    if (page.more && n > 0)
        snprintf(cursor, sizeof cursor, "%" PRId64 ".%" PRId64, rows[n - 1].transfer.timestamp_us,
                 rows[n - 1].seq);
    reads_transfers_free(rows, n);
    if (bad) {
        json_decref(arr);
        reply_internal(c, "out of memory");
        return;
    }
    reply_page(c, "transfers", arr, page.more && n > 0 ? cursor : NULL);
}

static json_t *balance_row_json(const ledger_balance_row *b)
{
    json_t *o = json_object();
    if (o == NULL) return NULL;
    int bad = 0;
    bad |= json_object_set_new(o, "transfer_id", codec_id(&b->transfer_id));
    bad |= json_object_set_new(o, "timestamp_us", json_integer((json_int_t)b->timestamp_us));
    bad |= json_object_set_new(o, "debits_pending", codec_amount(b->debits_pending));
    bad |= json_object_set_new(o, "debits_posted", codec_amount(b->debits_posted));
    bad |= json_object_set_new(o, "credits_pending", codec_amount(b->credits_pending));
    bad |= json_object_set_new(o, "credits_posted", codec_amount(b->credits_posted));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void h_account_balances(ctx *c)
{
    id128 id;
    if (!parse_path_id(c, &id)) return;
    reads_page page;
    if (!parse_page(c, CURSOR_BALANCES, &page)) return;
    ledger_balance_row *rows = NULL;
    size_t n = 0;
    reads_status rs =
        reads_account_balances(c->api->cfg.reads, &id, c->who.customer_id, &page, &rows, &n);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "no account with this id");
        return;
    }
    json_t *arr = json_array();
    bool bad = arr == NULL;
    for (size_t i = 0; i < n && !bad; i++)
        bad = json_array_append_new(arr, balance_row_json(&rows[i])) != 0;
    char cursor[64];
    if (page.more && n > 0) {
        char hex[ID128_TEXT_SIZE];
        id128_format(&rows[n - 1].transfer_id, hex);
        /* Without dashes: 32 hex digits after the dot. */
        char compact[33];
        size_t k = 0;
        for (size_t i = 0; hex[i] != '\0' && k < 32; i++)
            if (hex[i] != '-') compact[k++] = hex[i];
        compact[k] = '\0';
        snprintf(cursor, sizeof cursor, "%" PRId64 ".%s", rows[n - 1].timestamp_us, compact);
    }
    free(rows);
    if (bad) {
        json_decref(arr);
        reply_internal(c, "out of memory");
        return;
    }
    reply_page(c, "balances", arr, page.more && n > 0 ? cursor : NULL);
}

/* ---- GET /v1/balances: written directly (up to 100,000 rows). */

/* An amount: a number up to 2^53, a string above (docs/API.md). */
static void sb_amount(textbuf *b, const char *key, __int128 v, bool last)
{
    char num[48];
    json_t *j = amount128(v);
    if (j == NULL) {
        b->failed = true;
        return;
    }
    if (json_is_string(j))
        snprintf(num, sizeof num, "\"%s\"", json_string_value(j));
    else
        snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    json_decref(j);
    char field[96];
    snprintf(field, sizeof field, "\"%s\":%s%s", key, num, last ? "}" : ",");
    textbuf_add(b, field);
}

typedef struct ledger_total {
    int32_t ledger;
    __int128 debits_pending, debits_posted, credits_pending, credits_posted;
} ledger_total;

static int total_cmp(const void *a, const void *b)
{
    int32_t x = ((const ledger_total *)a)->ledger, y = ((const ledger_total *)b)->ledger;
    return (x > y) - (x < y);
}

static void h_balances(ctx *c)
{
    reads_balance *rows = NULL;
    size_t n = 0;
    reads_status rs = reads_all_balances(c->api->cfg.reads, c->who.customer_id, &rows, &n);
    if (rs != READS_OK) {
        reply_reads_error(c, rs, "");
        return;
    }
    ledger_total *totals = calloc(BALANCE_LEDGERS_MAX, sizeof *totals);
    textbuf b = {0};
    size_t ledgers = 0;
    if (totals == NULL) goto oom;
    textbuf_reserve(&b, n * 160 + 64);
    textbuf_add(&b, "{\"accounts\":[");
    for (size_t i = 0; i < n && !b.failed; i++) {
        const reads_balance *r = &rows[i];
        char head[96], id[ID128_TEXT_SIZE];
        id128_format(&r->id, id);
        snprintf(head, sizeof head, "%s{\"id\":\"%s\",\"ledger\":%" PRId32 ",", i > 0 ? "," : "",
                 id, r->ledger);
        textbuf_add(&b, head);
        sb_amount(&b, "debits_pending", r->debits_pending, false);
        sb_amount(&b, "debits_posted", r->debits_posted, false);
        sb_amount(&b, "credits_pending", r->credits_pending, false);
        sb_amount(&b, "credits_posted", r->credits_posted, true);
        size_t t = 0;
        while (t < ledgers && totals[t].ledger != r->ledger) t++;
        if (t == ledgers) {
            if (ledgers == BALANCE_LEDGERS_MAX) {
                free(rows);
                free(totals);
                free(b.data);
                reply_internal(c, "more distinct ledgers than BALANCE_LEDGERS_MAX");
                return;
            }
            totals[ledgers++].ledger = r->ledger;
        }
        totals[t].debits_pending += r->debits_pending;
        totals[t].debits_posted += r->debits_posted;
        totals[t].credits_pending += r->credits_pending;
        totals[t].credits_posted += r->credits_posted;
    }
    qsort(totals, ledgers, sizeof *totals, total_cmp);
    textbuf_add(&b, "],\"totals\":[");
    for (size_t t = 0; t < ledgers && !b.failed; t++) {
        char head[48];
        snprintf(head, sizeof head, "%s{\"ledger\":%" PRId32 ",", t > 0 ? "," : "",
                 totals[t].ledger);
        textbuf_add(&b, head);
        sb_amount(&b, "debits_posted", totals[t].debits_posted, false);
        sb_amount(&b, "credits_posted", totals[t].credits_posted, false);
        sb_amount(&b, "debits_pending", totals[t].debits_pending, false);
        sb_amount(&b, "credits_pending", totals[t].credits_pending, true);
    }
    textbuf_add(&b, "]}");
    if (b.failed) goto oom;
    free(rows);
    free(totals);
    reply_body(c, 200, b.data, "application/json");
    return;
oom:
    free(rows);
    free(totals);
    free(b.data);
    reply_internal(c, "out of memory");
}

/* ---- Routing. */

static const route routes[] = {
    {"GET", "/healthz", "healthz", h_healthz, false, false},
    {"GET", "/readyz", "readyz", h_readyz, false, false},
    {"GET", "/metrics", "metrics", h_metrics, false, false},
    {"POST", "/v1/transfers", "transfers_create", h_transfers_create, true, false},
    {"GET", "/v1/transfers/{id}", "transfers_get", h_transfers_get, true, false},
    {"POST", "/v1/accounts", "accounts_create", h_accounts_create, true, false},
    {"POST", "/v1/accounts/lookup", "accounts_lookup", h_accounts_lookup, true, false},
    {"GET", "/v1/accounts/{id}", "accounts_get", h_accounts_get, true, false},
    {"GET", "/v1/accounts/{id}/transfers", "account_transfers", h_account_transfers, true, false},
    {"GET", "/v1/accounts/{id}/balances", "account_balances", h_account_balances, true, false},
    {"GET", "/v1/balances", "balances", h_balances, true, false},
};
#define ROUTE_COUNT (sizeof routes / sizeof routes[0])

/* Match path against pattern; "{id}" matches one non-empty segment,
 * copied (truncated) into param. */
static bool path_match(const char *pattern, const char *path, char *param, size_t param_size)
{
    const char *p = pattern, *s = path;
    while (*p != '\0') {
        if (strncmp(p, "{id}", 4) == 0) {
            size_t n = strcspn(s, "/");
            if (n == 0) return false;
            size_t k = n < param_size - 1 ? n : param_size - 1;
            memcpy(param, s, k);
            param[k] = '\0';
            s += n;
            p += 4;
            continue;
        }
        if (*p != *s) return false;
        p++;
        s++;
    }
    return *s == '\0';
}

static bool is_json_content_type(const char *ct)
{
    static const char json[] = "application/json";
    if (ct == NULL) return false;
    while (*ct == ' ') ct++;
    if (strncasecmp(ct, json, sizeof json - 1) != 0) return false;
    char next = ct[sizeof json - 1];
    return next == '\0' || next == ';' || next == ' ';
}

void api_handle(void *arg, const http_request *req, http_response *resp)
{
    api *a = arg;
    ctx c = {.api = a, .req = req, .resp = resp, .param = NULL};
    char param[PATH_PARAM_SIZE] = "";

    /* Literal patterns first, then patterns with {id}. Every path has
     * one method, so a path match with another method names it in Allow. */
    const route *hit = NULL;
    const char *allow = NULL;
    for (int pass = 0; pass < 2 && hit == NULL && allow == NULL; pass++) {
        for (size_t i = 0; i < ROUTE_COUNT; i++) {
            bool literal = strchr(routes[i].pattern, '{') == NULL;
            if (literal != (pass == 0)) continue;
            if (!path_match(routes[i].pattern, req->path, param, sizeof param)) continue;
            if (strcmp(routes[i].method, req->method) == 0) {
                hit = &routes[i];
                break;
            }
            if (allow == NULL) allow = routes[i].method;
        }
    }
    if (hit == NULL) {
        resp->route = "other";
        if (allow != NULL) {
            reply_problem(&c, 405, "method_not_allowed", NULL, "%.16s is not allowed here; use %s",
                          req->method, allow);
            resp->allow = allow;
        } else {
            reply_problem(&c, 404, "not_found", NULL, "no such route: %.100s", req->path);
        }
        return;
    }
    resp->route = hit->name;
    c.param = param[0] != '\0' ? param : NULL;

    if (hit->authenticated) {
        char why[160];
        auth_status as = auth_check(a->cfg.auth, http_request_header(req, "Authorization"),
                                    &c.who, why, sizeof why);
        if (as == AUTH_UNAVAILABLE) {
            reply_unavailable(&c);
            return;
        }
        if (as == AUTH_WRONG_CELL) { /* a key of another cell: misdirected */
            reply_problem(&c, 421, "wrong_cell", NULL, "%s", why);
            return;
        }
        if (as != AUTH_OK) {
            reply_problem(&c, 401, "unauthorized", NULL, "%s", why);
            resp->www_authenticate = true;
            return;
        }
        if (hit->admin_only && !c.who.admin) {
            reply_problem(&c, 403, "forbidden", NULL, "this endpoint needs an admin API key");
            return;
        }
    }
    if (strcmp(hit->method, "POST") == 0) {
        if (!req->has_content_length) {
            reply_problem(&c, 411, "length_required", NULL,
                          "POST needs a Content-Length header (chunked bodies are not accepted)");
            return;
        }
        if (!is_json_content_type(http_request_header(req, "Content-Type"))) {
            reply_problem(&c, 415, "unsupported_media_type", NULL,
                          "send the body as JSON with 'Content-Type: application/json'");
            return;
        }
    }
    hit->fn(&c);
    mrd_assert(resp->status != 0);
}
