/*
 * itest_api_errors.c — every bad input gets its documented answer and
 * changes nothing.
 *
 * For each refusal in docs/API.md this test sends the bad request to a
 * real meridiand and checks the HTTP status, the problem+json body and
 * its `code` (request-level errors) or the per-event result code (200
 * answers), and then proves nothing was written: a fingerprint of the
 * whole ledger read directly from PostgreSQL (row counts, every
 * account's balances, every pending state) is identical before and
 * after. The ledger is not empty while this runs (funded accounts, a
 * stored transfer), so a stray write would show.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "testlib.h"

#define USD 840
#define EUR 978
#define GBP 826

static tl_world W;
static tl_daemon D;
static PGconn *PG;

/* Accounts made in setup. acme: bank (no limits), lim (debits must not
 * exceed credits, funded 10,000), other (no limits), eur (EUR), hist
 * (history flag), capped (credits must not exceed debits); globex: g1, g2.
 * t0: an acme transfer bank -> other of 100. */
static char bank[TL_UUID_TEXT_SIZE], lim[TL_UUID_TEXT_SIZE], other[TL_UUID_TEXT_SIZE],
    eur[TL_UUID_TEXT_SIZE], g1[TL_UUID_TEXT_SIZE], g2[TL_UUID_TEXT_SIZE],
    t0[TL_UUID_TEXT_SIZE], gt0[TL_UUID_TEXT_SIZE], hist[TL_UUID_TEXT_SIZE],
    capped[TL_UUID_TEXT_SIZE];

/* ---- Helpers. */

#define SNAP(fp) assert_int_equal(tl_db_fingerprint(PG, (fp)), 0)
#define EXPECT_UNCHANGED(before)                                               \
    do {                                                                       \
        char after_[TL_FINGERPRINT_SIZE];                                      \
        SNAP(after_);                                                          \
        assert_string_equal((before), after_);                                 \
    } while (0)

/* POST a raw body to path. */
static void raw_post(const char *path, const char *key, const char *body, size_t len,
                     const char *content_type, tl_resp *r)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", D.base_url, path);
    tl_req req = {.method = "POST",
                  .url = url,
                  .api_key = key,
                  .body = body,
                  .body_len = len,
                  .content_type = content_type};
    tl_http_req(&req, r);
}

/* POST body (a C string) to /v1/transfers as acme and expect a problem
 * with status/code and, when pointer is not NULL, that JSON pointer. */
#define EXPECT_TRANSFERS_PROBLEM(body, status, code, pointer)                  \
    expect_problem_at("/v1/transfers", (body), (status), (code), (pointer), __FILE__, __LINE__)
#define EXPECT_ACCOUNTS_PROBLEM(body, status, code, pointer)                   \
    expect_problem_at("/v1/accounts", (body), (status), (code), (pointer), __FILE__, __LINE__)
static void expect_problem_at(const char *path, const char *body, long status,
                              const char *code, const char *pointer, const char *file,
                              int line)
{
    tl_resp r;
    raw_post(path, W.key_acme, body, strlen(body), NULL, &r);
    tl_expect_problem_at(&r, status, code, file, line);
    const char *got = tl_field_str(r.json, "pointer");
    if (pointer != NULL && (got == NULL || strcmp(got, pointer) != 0)) {
        print_error("%s:%d: want pointer %s, got %s; request: %.300s\n  response: %s\n", file,
                    line, pointer, got ? got : "(none)", body, r.body);
        _fail(file, line);
    }
    tl_resp_release(&r);
}

/* A valid transfer object as text (fresh id, bank -> other, 5 USD),
 * with field replaced by the raw JSON value (added when it is not one of
 * the usual fields; removed when value is NULL). */
static char *transfer_with(const char *field, const char *value)
{
    char id[TL_UUID_TEXT_SIZE];
    tl_uuid_random(id);
    char qid[64], qdebit[64], qcredit[64];
    snprintf(qid, sizeof qid, "\"%s\"", id);
    snprintf(qdebit, sizeof qdebit, "\"%s\"", bank);
    snprintf(qcredit, sizeof qcredit, "\"%s\"", other);
    const char *keys[] = {"id", "debit_account_id", "credit_account_id", "amount", "ledger",
                          "code", field};
    const char *vals[] = {qid, qdebit, qcredit, "5", "840", "1", value};
    size_t n = 6;
    bool found = false;
    for (size_t i = 0; i < 6; i++) {
        if (field != NULL && strcmp(keys[i], field) == 0) {
            vals[i] = value;
            found = true;
        }
    }
    if (field != NULL && !found)
        n = 7;
    size_t cap = 512 + (value ? strlen(value) : 0);
    char *out = malloc(cap);
    assert_non_null(out);
    size_t len = 0;
    len += (size_t)snprintf(out + len, cap - len, "{");
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (vals[i] == NULL)
            continue;
        len += (size_t)snprintf(out + len, cap - len, "%s\"%s\":%s", first ? "" : ",", keys[i],
                                vals[i]);
        first = false;
    }
    snprintf(out + len, cap - len, "}");
    return out;
}

/* {"transfers":[<valid>,<transfer_with(field, value)>]}: the bad event
 * is the second one, so nothing of a partly valid batch may apply. */
static char *batch_with(const char *field, const char *value)
{
    char *good = transfer_with(NULL, NULL);
    char *bad = transfer_with(field, value);
    size_t cap = strlen(good) + strlen(bad) + 64;
    char *out = malloc(cap);
    assert_non_null(out);
    snprintf(out, cap, "{\"transfers\":[%s,%s]}", good, bad);
    free(good);
    free(bad);
    return out;
}

#define EXPECT_FIELD_PROBLEM(field, value, status, code, pointer)              \
    do {                                                                       \
        char *b_ = batch_with((field), (value));                               \
        expect_problem_at("/v1/transfers", b_, (status), (code), (pointer), __FILE__,     \
                          __LINE__);                                           \
        free(b_);                                                              \
    } while (0)

/* Balances of one account as seen by key: 0 or -1. */
static int balances_of(const char *key, const char *id, int64_t out[4])
{
    tl_resp r;
    tl_get(&D, key, &r, "/v1/accounts/%s", id);
    int rc = r.status == 200 && tl_field_i64(r.json, "debits_pending", &out[0]) == 0 &&
                     tl_field_i64(r.json, "debits_posted", &out[1]) == 0 &&
                     tl_field_i64(r.json, "credits_pending", &out[2]) == 0 &&
                     tl_field_i64(r.json, "credits_posted", &out[3]) == 0
                 ? 0
                 : -1;
    tl_resp_release(&r);
    return rc;
}

/* POST json to /v1/transfers as acme; r must be released by the caller. */
static void post_transfers(json_t *batch, tl_resp *r)
{
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme, batch, r), 0);
}

static json_t *pending(const char *id, const char *debit, const char *credit, int64_t amount,
                       int64_t timeout_s)
{
    json_t *t = tl_transfer(id, debit, credit, amount, USD, "pending");
    json_object_set_new(t, "timeout_s", json_integer(timeout_s));
    return t;
}

static json_t *resolve(const char *id, const char *pending_id, const char *flag)
{
    return json_pack("{s:s,s:s,s:o}", "id", id, "pending_id", pending_id, "flags",
                     tl_flags(flag));
}

/* ---- Tests. */

static void test_malformed_json(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    char *good = transfer_with(NULL, NULL);
    char buf[2048];

    snprintf(buf, sizeof buf, "{\"transfers\":[%s", good);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "malformed_json", NULL);
    snprintf(buf, sizeof buf, "{\"transfers\":[%s,]}", good);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "malformed_json", NULL);
    snprintf(buf, sizeof buf, "{\"transfers\":[%s],}", good);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "malformed_json", NULL);
    EXPECT_TRANSFERS_PROBLEM("not json", 400, "malformed_json", NULL);
    EXPECT_TRANSFERS_PROBLEM("{'transfers':[]}", 400, "malformed_json", NULL);
    EXPECT_TRANSFERS_PROBLEM("{\"transfers\":[]} {}", 400, "malformed_json", NULL);
    EXPECT_TRANSFERS_PROBLEM("{\"transfers\":[{\"amount\":NaN}]}", 400, "malformed_json", NULL);

    /* Invalid UTF-8 inside a string (an overlong '/', a lone
     * continuation byte, a truncated sequence). */
    static const char *const bad_utf8[] = {"\xc0\xaf", "\x80", "\xe2\x82"};
    for (size_t i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
        char *t = transfer_with("metadata", NULL);
        snprintf(buf, sizeof buf, "{\"transfers\":[%.*s,\"metadata\":{\"note\":\"a%sb\"}}]}",
                 (int)strlen(t) - 1, t, bad_utf8[i]);
        free(t);
        EXPECT_TRANSFERS_PROBLEM(buf, 400, "malformed_json", NULL);
    }
    /* An empty body is not JSON either. */
    tl_resp r;
    raw_post("/v1/transfers", W.key_acme, "", 0, NULL, &r);
    TL_EXPECT_PROBLEM(&r, 400, "malformed_json");
    tl_resp_release(&r);
    /* The malformed_json problem says where (line/column). */
    raw_post("/v1/transfers", W.key_acme, "{\n\"transfers\": [1,,]}", 20, NULL, &r);
    TL_EXPECT_PROBLEM(&r, 400, "malformed_json");
    assert_non_null(tl_field_str(r.json, "detail"));
    assert_non_null(strstr(tl_field_str(r.json, "detail"), "2"));
    tl_resp_release(&r);

    /* Duplicate keys, in a transfer and at the top. */
    snprintf(buf, sizeof buf, "{\"transfers\":[%.*s,\"amount\":6}]}", (int)strlen(good) - 1,
             good);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "duplicate_key", NULL);
    snprintf(buf, sizeof buf, "{\"transfers\":[%s],\"transfers\":[%s]}", good, good);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "duplicate_key", NULL);
    char *t = transfer_with("metadata", "{\"a\":1,\"b\":{\"c\":1,\"c\":2}}");
    snprintf(buf, sizeof buf, "{\"transfers\":[%s]}", t);
    free(t);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "duplicate_key", NULL);

    /* Nesting: 17 levels (body object, transfers array, transfer object,
     * metadata + 13 more objects) is too deep; 100 levels too. */
    char deep[1024];
    size_t len = 0;
    for (int i = 0; i < 14; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "{\"a\":");
    len += (size_t)snprintf(deep + len, sizeof deep - len, "1");
    for (int i = 0; i < 14; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "}");
    t = transfer_with("metadata", deep);
    snprintf(buf, sizeof buf, "{\"transfers\":[%s]}", t);
    free(t);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "too_deep", NULL);
    len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "[");
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "]");
    t = transfer_with("metadata", deep);
    char big[4096];
    snprintf(big, sizeof big, "{\"transfers\":[%s]}", t);
    free(t);
    EXPECT_TRANSFERS_PROBLEM(big, 400, "too_deep", NULL);

    free(good);
    EXPECT_UNCHANGED(before);

    /* 16 levels are fine (and are the only write of this test). */
    len = 0;
    for (int i = 0; i < 13; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "{\"a\":");
    len += (size_t)snprintf(deep + len, sizeof deep - len, "1");
    for (int i = 0; i < 13; i++)
        len += (size_t)snprintf(deep + len, sizeof deep - len, "}");
    t = transfer_with("metadata", deep);
    snprintf(buf, sizeof buf, "{\"transfers\":[%s]}", t);
    free(t);
    raw_post("/v1/transfers", W.key_acme, buf, strlen(buf), NULL, &r);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
}

static void test_wrong_types_and_ranges(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    static const char *const bad_amounts[] = {
        "1.5",  "100.0", "1e3",   "true", "false", "null", "{}", "[5]", "-5", "-0.0",
        "9223372036854775808", "18446744073709551616", "\"9223372036854775808\"",
        "\"12a\"", "\"-5\"", "\"\"", "\" 12\"", "\"1.5\"", "\"1e3\"", "\"0x10\"",
        "\"+5\"",
    };
    for (size_t i = 0; i < sizeof bad_amounts / sizeof bad_amounts[0]; i++) {
        print_message("amount %s\n", bad_amounts[i]);
        EXPECT_FIELD_PROBLEM("amount", bad_amounts[i], 400, "invalid_field",
                             "/transfers/1/amount");
    }
    EXPECT_FIELD_PROBLEM("id", "12345", 400, "invalid_field", "/transfers/1/id");
    EXPECT_FIELD_PROBLEM("id", "\"not-a-uuid\"", 400, "invalid_field", "/transfers/1/id");
    EXPECT_FIELD_PROBLEM("id", "\"7f1c2d3e-0000-4000-8000-00000000000g\"", 400,
                         "invalid_field", "/transfers/1/id");
    EXPECT_FIELD_PROBLEM("id", "\"7f1c2d3e-0000-4000-8000-0000000000011\"", 400,
                         "invalid_field", "/transfers/1/id");
    EXPECT_FIELD_PROBLEM("debit_account_id", "5", 400, "invalid_field",
                         "/transfers/1/debit_account_id");
    EXPECT_FIELD_PROBLEM("credit_account_id", "null", 400, "invalid_field",
                         "/transfers/1/credit_account_id");
    EXPECT_FIELD_PROBLEM("ledger", "\"840\"", 400, "invalid_field", "/transfers/1/ledger");
    EXPECT_FIELD_PROBLEM("ledger", "840.0", 400, "invalid_field", "/transfers/1/ledger");
    EXPECT_FIELD_PROBLEM("ledger", "-1", 400, "invalid_field", "/transfers/1/ledger");
    EXPECT_FIELD_PROBLEM("code", "\"1\"", 400, "invalid_field", "/transfers/1/code");
    EXPECT_FIELD_PROBLEM("code", "1099511627776", 400, "invalid_field", "/transfers/1/code");
    EXPECT_FIELD_PROBLEM("flags", "[\"bogus\"]", 400, "invalid_field", NULL);
    EXPECT_FIELD_PROBLEM("flags", "\"linked\"", 400, "invalid_field", "/transfers/1/flags");
    EXPECT_FIELD_PROBLEM("flags", "[1]", 400, "invalid_field", NULL);
    EXPECT_FIELD_PROBLEM("timeout_s", "-1", 400, "invalid_field", "/transfers/1/timeout_s");
    EXPECT_FIELD_PROBLEM("user_data_64", "1.5", 400, "invalid_field",
                         "/transfers/1/user_data_64");
    EXPECT_FIELD_PROBLEM("user_data_128", "\"xyz\"", 400, "invalid_field",
                         "/transfers/1/user_data_128");
    EXPECT_FIELD_PROBLEM("metadata", "\"a string\"", 400, "invalid_field",
                         "/transfers/1/metadata");
    EXPECT_FIELD_PROBLEM("metadata", "[1,2]", 400, "invalid_field", "/transfers/1/metadata");
    EXPECT_TRANSFERS_PROBLEM("{\"transfers\":{}}", 400, "invalid_field", "/transfers");
    EXPECT_TRANSFERS_PROBLEM("{\"transfers\":[5]}", 400, "invalid_field", "/transfers/0");
    EXPECT_TRANSFERS_PROBLEM("[]", 400, "invalid_field", NULL);

    /* The same rules for accounts. */
    char acc[512], id[TL_UUID_TEXT_SIZE];
    tl_uuid_random(id);
    snprintf(acc, sizeof acc, "{\"accounts\":[{\"id\":\"%s\",\"ledger\":\"840\",\"code\":1}]}",
             id);
    EXPECT_ACCOUNTS_PROBLEM(acc, 400, "invalid_field", "/accounts/0/ledger");
    snprintf(acc, sizeof acc, "{\"accounts\":[{\"id\":%d,\"ledger\":840,\"code\":1}]}", 7);
    EXPECT_ACCOUNTS_PROBLEM(acc, 400, "invalid_field", "/accounts/0/id");
    snprintf(acc, sizeof acc,
             "{\"accounts\":[{\"id\":\"%s\",\"ledger\":840,\"code\":1,\"flags\":[\"pending\"]}]}",
             id);
    EXPECT_ACCOUNTS_PROBLEM(acc, 400, "invalid_field", NULL);
    EXPECT_UNCHANGED(before);
}

static void test_unknown_and_missing_fields(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    EXPECT_FIELD_PROBLEM("foo", "1", 400, "unknown_field", "/transfers/1/foo");
    EXPECT_FIELD_PROBLEM("Amount", "5", 400, "unknown_field", "/transfers/1/Amount");
    EXPECT_FIELD_PROBLEM("amount", NULL, 400, "missing_field", "/transfers/1/amount");
    EXPECT_FIELD_PROBLEM("id", NULL, 400, "missing_field", "/transfers/1/id");
    EXPECT_FIELD_PROBLEM("ledger", NULL, 400, "missing_field", "/transfers/1/ledger");
    EXPECT_FIELD_PROBLEM("code", NULL, 400, "missing_field", "/transfers/1/code");
    EXPECT_FIELD_PROBLEM("debit_account_id", NULL, 400, "missing_field",
                         "/transfers/1/debit_account_id");
    EXPECT_TRANSFERS_PROBLEM("{}", 400, "missing_field", NULL);
    char *t = transfer_with(NULL, NULL);
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"transfers\":[%s],\"dry_run\":true}", t);
    free(t);
    EXPECT_TRANSFERS_PROBLEM(buf, 400, "unknown_field", "/dry_run");

    /* Accounts: missing code; a customer key may not name a customer. */
    char acc[512], id[TL_UUID_TEXT_SIZE];
    tl_uuid_random(id);
    snprintf(acc, sizeof acc, "{\"accounts\":[{\"id\":\"%s\",\"ledger\":840}]}", id);
    EXPECT_ACCOUNTS_PROBLEM(acc, 400, "missing_field", "/accounts/0/code");
    snprintf(acc, sizeof acc,
             "{\"accounts\":[{\"id\":\"%s\",\"ledger\":840,\"code\":1,\"customer\":\"globex\"}]}",
             id);
    EXPECT_ACCOUNTS_PROBLEM(acc, 400, "unknown_field", "/accounts/0/customer");
    /* An admin key must say whose account it is. */
    snprintf(acc, sizeof acc, "{\"accounts\":[{\"id\":\"%s\",\"ledger\":840,\"code\":1}]}", id);
    tl_resp r;
    raw_post("/v1/accounts", W.key_admin, acc, strlen(acc), NULL, &r);
    TL_EXPECT_PROBLEM(&r, 400, "missing_field");
    tl_resp_release(&r);
    /* ... of a customer that exists (a per-event result). */
    snprintf(acc, sizeof acc,
             "{\"accounts\":[{\"id\":\"%s\",\"ledger\":840,\"code\":1,\"customer\":\"nobody\"}]}",
             id);
    raw_post("/v1/accounts", W.key_admin, acc, strlen(acc), NULL, &r);
    TL_EXPECT_RESULTS(&r, 1, "customer_not_found");
    tl_resp_release(&r);
    /* Unknown ledger, zero ledger, zero id: per-event results. */
    char zero_id[] = "00000000-0000-0000-0000-000000000000";
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(id, 999, 1, NULL),
                                      tl_account(id, 0, 1, NULL),
                                      tl_account(zero_id, USD, 1, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 3, "ledger_not_found", "ledger_must_not_be_zero",
                      "id_must_not_be_zero");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
}

static void test_auth(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    char *batch = batch_with(NULL, NULL);
    char url_t[256], url_b[256];
    snprintf(url_t, sizeof url_t, "%s/v1/transfers", D.base_url);
    snprintf(url_b, sizeof url_b, "%s/v1/balances", D.base_url);
    char wrong_key[TL_KEY_TEXT_SIZE] = "mk_";
    for (int i = 0; i < 43; i++)
        wrong_key[3 + i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[i];
    wrong_key[46] = '\0';
    char with_junk[128], lower[128];
    snprintf(with_junk, sizeof with_junk, "Bearer %sx", W.key_acme);
    snprintf(lower, sizeof lower, "Basic %s", W.key_acme);
    char wrong_bearer[128];
    snprintf(wrong_bearer, sizeof wrong_bearer, "Bearer %s", wrong_key);
    const char *auths[] = {NULL,       wrong_bearer, "Bearer", "Bearer ", "Bearer mk_short",
                           with_junk,  lower,        "mk_x", ""};
    for (size_t i = 0; i < sizeof auths / sizeof auths[0]; i++) {
        for (int k = 0; k < 2; k++) {
            tl_req req = {.method = k ? "GET" : "POST",
                          .url = k ? url_b : url_t,
                          .authorization = auths[i],
                          .body = k ? NULL : batch,
                          .body_len = k ? 0 : strlen(batch)};
            tl_resp r;
            tl_http_req(&req, &r);
            if (r.status != 401)
                print_error("Authorization \"%s\" on %s\n", auths[i] ? auths[i] : "(none)",
                            req.url);
            TL_EXPECT_PROBLEM(&r, 401, "unauthorized");
            tl_resp_release(&r);
        }
    }
    free(batch);
    EXPECT_UNCHANGED(before);

    /* A revoked key stops working: at once when it was never used, and
     * within the documented cache bound (5 s) when it was. */
    char fresh[TL_KEY_TEXT_SIZE], used[TL_KEY_TEXT_SIZE];
    int64_t fresh_id = 0, used_id = 0;
    assert_int_equal(tl_create_key(&W, "acme", fresh, &fresh_id), 0);
    assert_int_equal(tl_create_key(&W, "acme", used, &used_id), 0);
    tl_resp r;
    tl_get(&D, used, &r, "/v1/balances");
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);
    char ctl[PATH_MAX], id_text[32];
    snprintf(ctl, sizeof ctl, "%s/meridianctl", W.bin_dir);
    for (int k = 0; k < 2; k++) {
        snprintf(id_text, sizeof id_text, "%" PRId64, k ? used_id : fresh_id);
        const char *argv[] = {ctl, "--config", W.config_path, "apikey", "revoke", id_text, NULL};
        assert_int_equal(tl_run(argv, NULL), 0);
    }
    tl_get(&D, fresh, &r, "/v1/balances");
    TL_EXPECT_PROBLEM(&r, 401, "unauthorized");
    tl_resp_release(&r);
    long status = 0;
    for (int64_t deadline = tl_now_ms() + 8000; tl_now_ms() < deadline;) {
        tl_get(&D, used, &r, "/v1/balances");
        status = r.status;
        tl_resp_release(&r);
        if (status == 401)
            break;
        tl_sleep_ms(250);
    }
    assert_int_equal(status, 401);
}

static void test_size_limits(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    tl_resp r;

    /* A 17 MiB body: 413 before the server buffers it all. */
    size_t big_len = 17u << 20;
    char *big = malloc(big_len + 1);
    assert_non_null(big);
    char *t = transfer_with("metadata", "{\"k\":\"");
    int head = snprintf(big, big_len, "{\"transfers\":[%.*s", (int)strlen(t) - 1, t);
    free(t);
    memset(big + head, 'x', big_len - (size_t)head);
    memcpy(big + big_len - 6, "\"}}]}", 5);
    big[big_len - 1] = ' ';
    big[big_len] = '\0';
    raw_post("/v1/transfers", W.key_acme, big, big_len, NULL, &r);
    TL_EXPECT_PROBLEM(&r, 413, "body_too_large");
    tl_resp_release(&r);
    free(big);
    /* The connection pool still works after that. */
    tl_get(&D, W.key_acme, &r, "/v1/balances");
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);

    /* 8,191 events: one more than a batch may hold. */
    json_t *arr = json_array();
    json_t *accs = json_array();
    json_t *ids = json_array();
    for (int i = 0; i < 8191; i++) {
        char id[TL_UUID_TEXT_SIZE];
        tl_uuid_random(id);
        json_array_append_new(arr, tl_transfer(id, bank, other, 1, USD, NULL));
        json_array_append_new(accs, tl_account(id, USD, 1, NULL));
        json_array_append_new(ids, json_string(id));
    }
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             json_pack("{s:o}", "transfers", arr), &r),
                     0);
    TL_EXPECT_PROBLEM(&r, 413, "batch_too_large");
    tl_resp_release(&r);
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             json_pack("{s:o}", "accounts", accs), &r),
                     0);
    TL_EXPECT_PROBLEM(&r, 413, "batch_too_large");
    tl_resp_release(&r);
    assert_int_equal(tl_post(&D, "/v1/accounts/lookup", W.key_acme,
                             json_pack("{s:O}", "ids", ids), &r),
                     0);
    TL_EXPECT_PROBLEM(&r, 413, "batch_too_large");
    tl_resp_release(&r);
    /* 8,190 ids are fine (none exists). */
    json_array_remove(ids, 0);
    assert_int_equal(tl_post(&D, "/v1/accounts/lookup", W.key_acme,
                             json_pack("{s:o}", "ids", ids), &r),
                     0);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "accounts")), 0);
    tl_resp_release(&r);
    /* Zero events is not a batch either. */
    EXPECT_TRANSFERS_PROBLEM("{\"transfers\":[]}", 400, "invalid_field", NULL);

    /* Metadata: 8,193 canonical bytes refused, 8,192 accepted. The body
     * is sent with spaces and unsorted keys so only the canonical form
     * ({"a":1,"b":"x..."}: 14 bytes + the string) is exactly at the limit. */
    char *meta = malloc(9000);
    char *body = malloc(10000);
    assert_non_null(meta);
    assert_non_null(body);
    for (int extra = 1; extra >= 0; extra--) {
        size_t n = 8192 - 14 + (size_t)extra;
        int m = snprintf(meta, 9000, "{ \"b\" : \"");
        memset(meta + m, 'y', n);
        snprintf(meta + m + n, 9000 - (size_t)m - n, "\" ,  \"a\" : 1 }");
        t = transfer_with("metadata", meta);
        snprintf(body, 10000, "{\"transfers\":[%s]}", t);
        free(t);
        raw_post("/v1/transfers", W.key_acme, body, strlen(body), NULL, &r);
        if (extra) {
            TL_EXPECT_PROBLEM(&r, 413, "metadata_too_large");
            EXPECT_UNCHANGED(before);
        } else {
            TL_EXPECT_RESULTS(&r, 1, "ok");
        }
        tl_resp_release(&r);
    }
    free(meta);
    free(body);
}

static void test_query_parameters(void **state)
{
    (void)state;
    static const char *const bad[] = {"limit=0",  "limit=1001",     "limit=abc",
                                      "limit=-1", "limit=10x",      "cursor=%25%25%25",
                                      "from_us=abc", "to_us=1.5",   "from_us=1x",
                                      "to_us=99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        for (int k = 0; k < 2; k++) {
            tl_resp r;
            tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/%s?%s", lim,
                   k ? "balances" : "transfers", bad[i]);
            if (r.status != 400)
                print_error("query %s\n", bad[i]);
            TL_EXPECT_PROBLEM(&r, 400, "invalid_parameter");
            tl_resp_release(&r);
        }
    }
    tl_resp r;
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/transfers?limit=1000", lim);
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);
}

static void test_per_event_failures(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    enum { N = 16 };
    char id[N][TL_UUID_TEXT_SIZE], unknown[TL_UUID_TEXT_SIZE];
    for (int i = 0; i < N; i++)
        tl_uuid_random(id[i]);
    tl_uuid_random(unknown);
    const char *zero = "00000000-0000-0000-0000-000000000000";
    json_t *with_pending_id = tl_transfer(id[9], bank, other, 5, USD, NULL);
    json_object_set_new(with_pending_id, "pending_id", json_string(t0));
    json_t *with_timeout = tl_transfer(id[10], bank, other, 5, USD, NULL);
    json_object_set_new(with_timeout, "timeout_s", json_integer(10));
    json_t *too_long = pending(id[11], bank, other, 5, 400LL * 24 * 3600);
    tl_resp r;
    post_transfers(
        tl_batch("transfers", tl_transfer(id[0], bank, other, 0, USD, NULL),
                 tl_transfer(id[1], bank, bank, 5, USD, NULL),
                 tl_transfer(id[2], unknown, other, 5, USD, NULL),
                 tl_transfer(id[3], bank, unknown, 5, USD, NULL),
                 tl_transfer(id[4], bank, eur, 5, USD, NULL),
                 tl_transfer(id[5], bank, other, 5, EUR, NULL),
                 tl_transfer(id[6], g1, other, 5, USD, NULL),
                 tl_transfer(id[7], bank, g2, 5, USD, NULL),
                 tl_transfer(id[8], lim, other, 10001, USD, NULL), with_pending_id, with_timeout,
                 too_long, tl_transfer(zero, bank, other, 5, USD, NULL),
                 tl_transfer(id[12], bank, other, 5, USD, "pending,post_pending_transfer"),
                 tl_transfer(id[13], zero, other, 5, USD, NULL),
                 tl_transfer(id[14], bank, other, 5, 0, NULL),
                 tl_transfer(id[15], bank, capped, 1, USD, NULL), NULL),
        &r);
    TL_EXPECT_RESULTS(&r, 17, "amount_must_be_positive", "accounts_must_be_different",
                      "debit_account_not_found", "credit_account_not_found",
                      "accounts_must_have_the_same_ledger",
                      "transfer_must_have_the_same_ledger_as_accounts",
                      "debit_account_not_found", "credit_account_not_found", "exceeds_credits",
                      "pending_id_must_be_zero", "timeout_reserved_for_pending_transfer",
                      "timeout_too_large", "id_must_not_be_zero", "flags_are_mutually_exclusive",
                      "debit_account_id_must_not_be_zero", "ledger_must_not_be_zero",
                      "exceeds_debits");
    /* Failed events carry no timestamp. */
    assert_null(json_object_get(json_array_get(json_object_get(r.json, "results"), 0),
                                "timestamp_us"));
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* Another customer's account and transfer look exactly unknown. */
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", g1);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", unknown);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", gt0);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/transfers", g1);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/balances", g1);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    assert_int_equal(tl_post(&D, "/v1/accounts/lookup", W.key_acme,
                             json_pack("{s:[s,s,s]}", "ids", g1, bank, g2), &r),
                     0);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "accounts")), 1);
    assert_string_equal(tl_field_str(json_array_get(json_object_get(r.json, "accounts"), 0), "id"),
                        bank);
    tl_resp_release(&r);
    /* acme's balances list holds none of globex's accounts. */
    tl_get(&D, W.key_acme, &r, "/v1/balances");
    TL_EXPECT_STATUS(&r, 200);
    assert_null(strstr(r.body, g1));
    assert_null(strstr(r.body, g2));
    assert_non_null(strstr(r.body, bank));
    tl_resp_release(&r);
    /* Creating an account with an id globex already uses: exists... for
     * nobody: acme must not learn it exists, nor take it over. */
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(g1, USD, 1, NULL), NULL), &r),
                     0);
    TL_EXPECT_STATUS(&r, 200);
    assert_non_null(tl_result(&r, 0));
    assert_string_not_equal(tl_result(&r, 0), "ok");
    assert_string_not_equal(tl_result(&r, 0), "exists");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
}

static void test_overflow(void **state)
{
    (void)state;
    char r1[TL_UUID_TEXT_SIZE], s1[TL_UUID_TEXT_SIZE], ta[TL_UUID_TEXT_SIZE],
        tb[TL_UUID_TEXT_SIZE];
    tl_uuid_random(r1);
    tl_uuid_random(s1);
    tl_uuid_random(ta);
    tl_uuid_random(tb);
    tl_resp r;
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(r1, GBP, 1, NULL),
                                      tl_account(s1, GBP, 1, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "ok", "ok");
    tl_resp_release(&r);
    json_t *max = tl_transfer(ta, r1, s1, 0, GBP, NULL);
    json_object_set_new(max, "amount", json_string("9223372036854775807"));
    post_transfers(tl_batch("transfers", max, NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    post_transfers(tl_batch("transfers", tl_transfer(tb, r1, s1, 1, GBP, NULL), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "overflows_debits_posted");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", r1);
    assert_string_equal(tl_field_str(r.json, "debits_posted"), "9223372036854775807");
    tl_resp_release(&r);
}

static void test_idempotency(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    tl_resp r;
    /* Same id, same body: exists, not applied again. */
    post_transfers(tl_batch("transfers", tl_transfer(t0, bank, other, 100, USD, NULL), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "exists");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    /* Same id, anything different: exists_with_different_fields. */
    json_t *diff_meta = tl_transfer(t0, bank, other, 100, USD, NULL);
    json_object_set_new(diff_meta, "metadata", json_pack("{s:i}", "a", 1));
    json_t *diff_ud = tl_transfer(t0, bank, other, 100, USD, NULL);
    json_object_set_new(diff_ud, "user_data_64", json_integer(1));
    post_transfers(tl_batch("transfers", tl_transfer(t0, bank, other, 101, USD, NULL),
                            tl_transfer(t0, other, bank, 100, USD, NULL),
                            tl_transfer(t0, bank, lim, 100, USD, NULL),
                            tl_transfer(t0, bank, other, 100, USD, "pending"), diff_meta,
                            diff_ud, NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 6, "exists_with_different_fields", "exists_with_different_fields",
                      "exists_with_different_fields", "exists_with_different_fields",
                      "exists_with_different_fields", "exists_with_different_fields");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", t0);
    TL_EXPECT_STATUS(&r, 200);
    TL_EXPECT_I64(r.json, "amount", 100);
    assert_string_equal(tl_field_str(r.json, "debit_account_id"), bank);
    assert_string_equal(tl_field_str(r.json, "credit_account_id"), other);
    tl_resp_release(&r);
    /* Another customer reusing acme's transfer id does not see it either
     * way; it must not be applied as new. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_globex,
                             tl_batch("transfers", tl_transfer(t0, g1, g2, 100, USD, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_STATUS(&r, 200);
    assert_non_null(tl_result(&r, 0));
    assert_string_not_equal(tl_result(&r, 0), "ok");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* "Same fields" is about values, not spelling: the amount as a
     * string, the ids without dashes in upper case, the metadata with
     * other key order, spacing and escapes are the same transfer. */
    char y[TL_UUID_TEXT_SIZE];
    tl_uuid_random(y);
    char body1[1024], body2[1024], yy[33], bb[33], oo[33];
    const char *src[] = {y, bank, other};
    char *dst[] = {yy, bb, oo};
    for (int k = 0; k < 3; k++) {
        size_t n = 0;
        for (const char *c = src[k]; *c && n < 32; c++)
            if (*c != '-')
                dst[k][n++] = (char)(*c >= 'a' && *c <= 'f' ? *c - 'a' + 'A' : *c);
        dst[k][n] = '\0';
    }
    snprintf(body1, sizeof body1,
             "{\"transfers\":[{\"id\":\"%s\",\"debit_account_id\":\"%s\",\"credit_account_id\":"
             "\"%s\",\"amount\":3,\"ledger\":840,\"code\":1,\"metadata\":{\"b\":[1,{\"y\":2,"
             "\"x\":1}],\"a\":\"\u00e9\"}}]}",
             y, bank, other);
    snprintf(body2, sizeof body2,
             "{ \"transfers\" : [ { \"metadata\" : { \"a\" : \"\xc3\xa9\" , \"b\" : [ 1 , "
             "{ \"x\" : 1 , \"y\" : 2 } ] } , \"code\" : 1 , \"ledger\" : 840 , \"amount\" : "
             "\"3\" , \"credit_account_id\" : \"%s\" , \"debit_account_id\" : \"%s\" , "
             "\"id\" : \"%s\" , \"flags\" : [ ] } ] }",
             oo, bb, yy);
    raw_post("/v1/transfers", W.key_acme, body1, strlen(body1), NULL, &r);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    SNAP(before);
    raw_post("/v1/transfers", W.key_acme, body2, strlen(body2), NULL, &r);
    TL_EXPECT_RESULTS(&r, 1, "exists");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* A new id twice in one request: applied once. */
    int64_t b_before[4], b_after[4];
    assert_int_equal(balances_of(W.key_acme, other, b_before), 0);
    char x[TL_UUID_TEXT_SIZE];
    tl_uuid_random(x);
    post_transfers(tl_batch("transfers", tl_transfer(x, bank, other, 7, USD, NULL),
                            tl_transfer(x, bank, other, 7, USD, NULL),
                            tl_transfer(x, bank, other, 8, USD, NULL), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 3, "ok", "exists", "exists_with_different_fields");
    tl_resp_release(&r);
    post_transfers(tl_batch("transfers", tl_transfer(x, bank, other, 7, USD, NULL), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "exists");
    tl_resp_release(&r);
    assert_int_equal(balances_of(W.key_acme, other, b_after), 0);
    assert_int_equal(b_after[3], b_before[3] + 7);
    char sql[256];
    int64_t n = 0;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM transfers WHERE id = '%s'", x);
    assert_int_equal(tl_pg_i64(PG, sql, &n), 0);
    assert_int_equal(n, 1);
}

static void test_pending_errors(void **state)
{
    (void)state;
    char p[TL_UUID_TEXT_SIZE], v[TL_UUID_TEXT_SIZE], e[TL_UUID_TEXT_SIZE];
    char ids[12][TL_UUID_TEXT_SIZE], unknown[TL_UUID_TEXT_SIZE];
    tl_uuid_random(p);
    tl_uuid_random(v);
    tl_uuid_random(e);
    tl_uuid_random(unknown);
    for (int i = 0; i < 12; i++)
        tl_uuid_random(ids[i]);
    tl_resp r;
    char before[TL_FINGERPRINT_SIZE];

    SNAP(before);
    post_transfers(tl_batch("transfers", resolve(ids[0], unknown, "post_pending_transfer"),
                            resolve(ids[1], unknown, "void_pending_transfer"),
                            resolve(ids[2], t0, "post_pending_transfer"),
                            resolve(ids[3], t0, "void_pending_transfer"), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 4, "pending_transfer_not_found", "pending_transfer_not_found",
                      "pending_transfer_not_pending", "pending_transfer_not_pending");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* p: posted, then posted again / voided; v: voided, then posted. */
    post_transfers(tl_batch("transfers", pending(p, lim, other, 300, 3600),
                            pending(v, lim, other, 200, 3600),
                            resolve(ids[4], p, "post_pending_transfer"),
                            resolve(ids[5], v, "void_pending_transfer"), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 4, "ok", "ok", "ok", "ok");
    tl_resp_release(&r);
    SNAP(before);
    json_t *too_much = resolve(ids[8], v, "post_pending_transfer");
    json_object_set_new(too_much, "amount", json_integer(1));
    post_transfers(tl_batch("transfers", resolve(ids[6], p, "post_pending_transfer"),
                            resolve(ids[7], p, "void_pending_transfer"), too_much, NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 3, "pending_transfer_already_posted",
                      "pending_transfer_already_posted", "pending_transfer_already_voided");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* Posting more than reserved, or naming other accounts or ledger. */
    char q[TL_UUID_TEXT_SIZE];
    tl_uuid_random(q);
    post_transfers(tl_batch("transfers", pending(q, lim, other, 50, 3600), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    SNAP(before);
    json_t *more = resolve(ids[9], q, "post_pending_transfer");
    json_object_set_new(more, "amount", json_integer(51));
    json_t *other_debit = resolve(ids[10], q, "post_pending_transfer");
    json_object_set_new(other_debit, "debit_account_id", json_string(bank));
    json_t *other_ledger = resolve(ids[11], q, "void_pending_transfer");
    json_object_set_new(other_ledger, "ledger", json_integer(EUR));
    json_t *void_amount = resolve(ids[0], q, "void_pending_transfer");
    json_object_set_new(void_amount, "amount", json_integer(49));
    post_transfers(tl_batch("transfers", more, other_debit, other_ledger, void_amount, NULL), &r);
    TL_EXPECT_RESULTS(&r, 4, "exceeds_pending_transfer_amount",
                      "pending_transfer_has_different_debit_account_id",
                      "pending_transfer_has_different_ledger",
                      "pending_transfer_has_different_amount");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    /* Another customer cannot post or void acme's reservation: to globex
     * it does not exist. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_globex,
                             tl_batch("transfers", resolve(ids[1], q, "post_pending_transfer"),
                                      resolve(ids[2], q, "void_pending_transfer"), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "pending_transfer_not_found", "pending_transfer_not_found");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* Expiry: a 1 s reservation cannot be posted after 2.5 s, and the
     * expiry job gives the reserved amount back. */
    int64_t start[4], now[4];
    assert_int_equal(balances_of(W.key_acme, lim, start), 0);
    post_transfers(tl_batch("transfers", pending(e, lim, other, 700, 1), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    assert_int_equal(balances_of(W.key_acme, lim, now), 0);
    assert_int_equal(now[0], start[0] + 700);
    tl_sleep_ms(2500);
    char post_e[TL_UUID_TEXT_SIZE];
    tl_uuid_random(post_e);
    post_transfers(tl_batch("transfers", resolve(post_e, e, "post_pending_transfer"), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "pending_transfer_expired");
    tl_resp_release(&r);
    bool released = false;
    for (int64_t deadline = tl_now_ms() + 10000; tl_now_ms() < deadline && !released;) {
        assert_int_equal(balances_of(W.key_acme, lim, now), 0);
        released = now[0] == start[0];
        if (!released)
            tl_sleep_ms(200);
    }
    if (!released)
        print_error("debits_pending of %s still %" PRId64 " (want %" PRId64 ") 10 s after expiry\n",
                    lim, now[0], start[0]);
    assert_true(released);
    assert_int_equal(now[1], start[1]); /* nothing was posted */
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", e);
    TL_EXPECT_STATUS(&r, 200);
    assert_non_null(tl_field_str(r.json, "pending_status"));
    assert_string_equal(tl_field_str(r.json, "pending_status"), "expired");
    tl_resp_release(&r);
    /* The post was not stored, and a void is refused the same way. */
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", post_e);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    SNAP(before);
    post_transfers(tl_batch("transfers", resolve(post_e, e, "void_pending_transfer"), NULL), &r);
    TL_EXPECT_RESULTS(&r, 1, "pending_transfer_expired");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
}

static void test_linked_chains(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    char a[TL_UUID_TEXT_SIZE], b[TL_UUID_TEXT_SIZE], c[TL_UUID_TEXT_SIZE], d[TL_UUID_TEXT_SIZE];
    tl_uuid_random(a);
    tl_uuid_random(b);
    tl_uuid_random(c);
    tl_uuid_random(d);
    tl_resp r;
    /* The middle event overdraws lim: the whole chain fails. */
    post_transfers(tl_batch("transfers", tl_transfer(a, bank, lim, 5, USD, "linked"),
                            tl_transfer(b, lim, other, 1000000, USD, "linked"),
                            tl_transfer(c, other, bank, 5, USD, NULL), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 3, "linked_event_failed", "exceeds_credits", "linked_event_failed");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    /* The first event fails (unknown account): its partners fail too. */
    post_transfers(tl_batch("transfers", tl_transfer(a, bank, g1, 5, USD, "linked"),
                            tl_transfer(b, lim, other, 1, USD, NULL), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 2, "credit_account_not_found", "linked_event_failed");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    /* A chain left open at the end of the request. */
    post_transfers(tl_batch("transfers", tl_transfer(a, bank, lim, 5, USD, "linked"),
                            tl_transfer(b, lim, other, 1, USD, "linked"), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 2, "linked_event_chain_open", "linked_event_chain_open");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    /* Nothing of those ids was stored. */
    const char *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", all[i]);
        TL_EXPECT_PROBLEM(&r, 404, "not_found");
        tl_resp_release(&r);
    }
    /* A failed chain is undone completely before the next event runs:
     * the chain credits lim 5,000 and touches the history account, then
     * fails; an event after it that could only succeed with those 5,000
     * is refused, and an event reusing a chain id is applied as new. */
    int64_t lim_bal[4];
    assert_int_equal(balances_of(W.key_acme, lim, lim_bal), 0);
    int64_t available = lim_bal[3] - lim_bal[1] - lim_bal[0];
    char p[TL_UUID_TEXT_SIZE], e[TL_UUID_TEXT_SIZE], f[TL_UUID_TEXT_SIZE];
    tl_uuid_random(p);
    tl_uuid_random(e);
    tl_uuid_random(f);
    json_t *pend = pending(p, hist, other, 10, 0);
    json_object_set_new(pend, "flags", tl_flags("pending,linked"));
    post_transfers(tl_batch("transfers", tl_transfer(a, bank, lim, 5000, USD, "linked"),
                            tl_transfer(b, lim, hist, available + 4000, USD, "linked"), pend,
                            tl_transfer(c, hist, g1, 1, USD, NULL),
                            tl_transfer(e, lim, other, available + 1, USD, NULL),
                            resolve(f, p, "post_pending_transfer"), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 6, "linked_event_failed", "linked_event_failed", "linked_event_failed",
                      "credit_account_not_found", "exceeds_credits", "pending_transfer_not_found");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
    post_transfers(tl_batch("transfers", tl_transfer(a, bank, lim, 5000, USD, "linked"),
                            tl_transfer(b, lim, g1, 1, USD, NULL),
                            tl_transfer(a, bank, other, 1, USD, NULL), NULL),
                   &r);
    TL_EXPECT_RESULTS(&r, 3, "linked_event_failed", "credit_account_not_found", "ok");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", a);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "credit_account_id"), other);
    TL_EXPECT_I64(r.json, "amount", 1);
    tl_resp_release(&r);
    SNAP(before);

    /* Accounts chain the same way. */
    char zero[] = "00000000-0000-0000-0000-000000000000";
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(d, USD, 1, "linked"),
                                      tl_account(zero, USD, 1, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "linked_event_failed", "id_must_not_be_zero");
    tl_resp_release(&r);
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(d, USD, 1, "linked"), NULL), &r),
                     0);
    TL_EXPECT_RESULTS(&r, 1, "linked_event_chain_open");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);
}

static void test_http_level(void **state)
{
    (void)state;
    char before[TL_FINGERPRINT_SIZE];
    SNAP(before);
    char *batch = batch_with(NULL, NULL);
    static const struct {
        const char *method;
        const char *path;
        long status;
        const char *code;
    } cases[] = {
        {"DELETE", "/v1/transfers", 405, "method_not_allowed"},
        {"PUT", "/v1/transfers", 405, "method_not_allowed"},
        {"GET", "/v1/transfers", 405, "method_not_allowed"},
        {"PATCH", "/v1/accounts", 405, "method_not_allowed"},
        {"POST", "/v1/balances", 405, "method_not_allowed"},
        {"DELETE", "/v1/accounts/00000000-0000-4000-8000-000000000001", 405,
         "method_not_allowed"},
        {"GET", "/v1/nope", 404, "not_found"},
        {"GET", "/nope", 404, "not_found"},
        {"GET", "/v2/balances", 404, "not_found"},
        {"GET", "/v1/transfers/00000000-0000-4000-8000-000000000001", 404, "not_found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char url[512];
        snprintf(url, sizeof url, "%s%s", D.base_url, cases[i].path);
        bool with_body = strcmp(cases[i].method, "GET") != 0;
        tl_req req = {.method = cases[i].method,
                      .url = url,
                      .api_key = W.key_acme,
                      .body = with_body ? batch : NULL,
                      .body_len = with_body ? strlen(batch) : 0};
        tl_resp r;
        tl_http_req(&req, &r);
        if (r.status != cases[i].status)
            print_error("%s %s\n", cases[i].method, cases[i].path);
        TL_EXPECT_PROBLEM(&r, cases[i].status, cases[i].code);
        tl_resp_release(&r);
    }
    /* Content types: JSON only (parameters allowed). */
    static const char *const bad_types[] = {"text/plain", "", "application/x-www-form-urlencoded",
                                            "application/jsonx"};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        tl_resp r;
        raw_post("/v1/transfers", W.key_acme, batch, strlen(batch), bad_types[i], &r);
        if (r.status != 415)
            print_error("Content-Type \"%s\"\n", bad_types[i]);
        TL_EXPECT_PROBLEM(&r, 415, "unsupported_media_type");
        tl_resp_release(&r);
    }
    /* No Content-Length (chunked upload): 411. */
    char url[256];
    snprintf(url, sizeof url, "%s/v1/transfers", D.base_url);
    tl_req chunked = {.method = "POST",
                      .url = url,
                      .api_key = W.key_acme,
                      .body = batch,
                      .body_len = strlen(batch),
                      .chunked = true};
    tl_resp r;
    tl_http_req(&chunked, &r);
    TL_EXPECT_PROBLEM(&r, 411, "length_required");
    tl_resp_release(&r);
    EXPECT_UNCHANGED(before);

    /* And with "; charset=utf-8" the same batch is accepted. */
    raw_post("/v1/transfers", W.key_acme, batch, strlen(batch), "application/json; charset=utf-8",
             &r);
    TL_EXPECT_RESULTS(&r, 2, "ok", "ok");
    tl_resp_release(&r);
    free(batch);
}

/* Last: the service still exits cleanly after all of the above. */
static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    assert_int_equal(tl_meridiand_stop(&D), 0);
}

static int setup(void **state)
{
    (void)state;
    if (tl_setup_db_and_keys(&W) != 0)
        return -1;
    if (tl_meridiand_start(W.config_path, W.port, W.tmp_dir, &D) != 0)
        return -1;
    PG = tl_pg_connect(W.dsn);
    if (PG == NULL)
        return -1;
    tl_uuid_random(bank);
    tl_uuid_random(lim);
    tl_uuid_random(other);
    tl_uuid_random(eur);
    tl_uuid_random(g1);
    tl_uuid_random(g2);
    tl_uuid_random(t0);
    tl_uuid_random(gt0);
    tl_uuid_random(hist);
    tl_uuid_random(capped);
    char fund[TL_UUID_TEXT_SIZE];
    tl_uuid_random(fund);
    tl_resp r;
    int rc = -1;
    tl_post(&D, "/v1/accounts", W.key_acme,
            tl_batch("accounts", tl_account(bank, USD, 1, NULL),
                     tl_account(lim, USD, 1, "debits_must_not_exceed_credits"),
                     tl_account(other, USD, 1, NULL), tl_account(eur, EUR, 1, NULL),
                     tl_account(hist, USD, 1, "history"),
                     tl_account(capped, USD, 1, "credits_must_not_exceed_debits"), NULL),
            &r);
    if (r.status != 200 || tl_results_count(&r) != 6)
        goto out;
    tl_resp_release(&r);
    tl_post(&D, "/v1/accounts", W.key_globex,
            tl_batch("accounts", tl_account(g1, USD, 1, NULL), tl_account(g2, USD, 1, NULL),
                     NULL),
            &r);
    if (r.status != 200)
        goto out;
    tl_resp_release(&r);
    tl_post(&D, "/v1/transfers", W.key_acme,
            tl_batch("transfers", tl_transfer(fund, bank, lim, 10000, USD, NULL),
                     tl_transfer(t0, bank, other, 100, USD, NULL), NULL),
            &r);
    if (r.status != 200 || tl_result(&r, 1) == NULL || strcmp(tl_result(&r, 1), "ok") != 0)
        goto out;
    tl_resp_release(&r);
    tl_post(&D, "/v1/transfers", W.key_globex,
            tl_batch("transfers", tl_transfer(gt0, g1, g2, 100, USD, NULL), NULL), &r);
    if (r.status != 200 || tl_result(&r, 0) == NULL || strcmp(tl_result(&r, 0), "ok") != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "setup: %ld %s\n", r.status, r.body);
    tl_resp_release(&r);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    if (D.pid > 0)
        tl_meridiand_stop(&D);
    PQfinish(PG);
    PG = NULL;
    return 0;
}

int main(void)
{
    tl_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_wrong_types_and_ranges),
        cmocka_unit_test(test_unknown_and_missing_fields),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_size_limits),
        cmocka_unit_test(test_query_parameters),
        cmocka_unit_test(test_per_event_failures),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_idempotency),
        cmocka_unit_test(test_pending_errors),
        cmocka_unit_test(test_linked_chains),
        cmocka_unit_test(test_http_level),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    int failed = cmocka_run_group_tests_name("itest_api_errors", tests, setup, teardown);
    tl_world_release(&W, failed != 0);
    tl_shutdown();
    return failed == 0 ? 0 : 1;
}
