/*
 * itest_api_flow.c — the API's happy paths against a real meridiand and
 * PostgreSQL, with exact values at every step.
 *
 * One meridiand serves every test of this file (sequentially, so each
 * test knows every write that happens). Covered: accounts (flags, user
 * data, idempotency, lookups in request order), plain transfers with
 * metadata, two-phase transfers (pending, partial post, full post, void,
 * pending amounts counted against available balance), per-account
 * transfer history with cursor pagination and time filters, balance
 * history with running balances, amounts above 2^53 as strings, the
 * per-customer view of /v1/balances, /metrics, /healthz and a clean exit
 * on SIGTERM. The contract is docs/API.md.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "testlib.h"

#define USD 840
#define EUR 978
#define TWO_POW_53 9007199254740992LL

static tl_world W;
static tl_daemon D;
static PGconn *PG;

/* ---- Helpers (assertions report the caller's line). */

static json_t *post_pending(const char *id, const char *debit, const char *credit,
                            int64_t amount, int64_t timeout_s)
{
    json_t *t = tl_transfer(id, debit, credit, amount, USD, "pending");
    json_object_set_new(t, "timeout_s", json_integer(timeout_s));
    return t;
}

/* A post (amount > 0: partial; 0: omitted, the full amount) or a void. */
static json_t *resolve(const char *id, const char *pending_id, const char *flag, int64_t amount)
{
    json_t *t = json_pack("{s:s,s:s,s:o}", "id", id, "pending_id", pending_id, "flags",
                          tl_flags(flag));
    if (amount > 0)
        json_object_set_new(t, "amount", json_integer(amount));
    return t;
}

#define EXPECT_BALANCES(key, id, dpend, dpost, cpend, cpost)                   \
    expect_balances_at((key), (id), (dpend), (dpost), (cpend), (cpost), __FILE__, __LINE__)
static void expect_balances_at(const char *key, const char *id, int64_t dpend, int64_t dpost,
                               int64_t cpend, int64_t cpost, const char *file, int line)
{
    tl_resp r;
    tl_get(&D, key, &r, "/v1/accounts/%s", id);
    tl_expect_status_at(&r, 200, file, line);
    tl_expect_i64_at(r.json, "debits_pending", dpend, file, line);
    tl_expect_i64_at(r.json, "debits_posted", dpost, file, line);
    tl_expect_i64_at(r.json, "credits_pending", cpend, file, line);
    tl_expect_i64_at(r.json, "credits_posted", cpost, file, line);
    tl_resp_release(&r);
}

/* Create accounts (all expected ok) with key. */
static void create_accounts(const char *key, json_t *batch, size_t count)
{
    tl_resp r;
    assert_int_equal(tl_post(&D, "/v1/accounts", key, batch, &r), 0);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(tl_results_count(&r), count);
    for (size_t i = 0; i < count; i++) {
        if (tl_result(&r, i) == NULL || strcmp(tl_result(&r, i), "ok") != 0)
            print_error("account %zu: %s\n", i, r.body);
        assert_non_null(tl_result(&r, i));
        assert_string_equal(tl_result(&r, i), "ok");
    }
    tl_resp_release(&r);
}

/* True when arr (JSON array of strings) holds exactly the names in csv,
 * in any order. */
static bool flags_equal(const json_t *arr, const char *csv)
{
    json_t *want = tl_flags(csv);
    bool same = json_is_array(arr) && json_array_size(arr) == json_array_size(want);
    for (size_t i = 0; same && i < json_array_size(want); i++) {
        bool found = false;
        for (size_t j = 0; j < json_array_size(arr); j++)
            if (json_equal(json_array_get(arr, j), json_array_get(want, i)))
                found = true;
        same = found;
    }
    json_decref(want);
    return same;
}

/* The ok counter of meridian_transfers_total in a /metrics body, or -1. */
static int64_t metric_transfers_ok(const char *body)
{
    static const char name[] = "meridian_transfers_total{result=\"ok\"}";
    for (const char *p = body; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (strncmp(p, name, sizeof name - 1) == 0 && p[sizeof name - 1] == ' ')
            return (int64_t)strtod(p + sizeof name, NULL);
        p = eol ? eol + 1 : NULL;
    }
    return -1;
}

/* ---- Tests. */

static void test_health(void **state)
{
    (void)state;
    tl_resp r;
    assert_int_equal(tl_get(&D, NULL, &r, "/healthz"), 0);
    TL_EXPECT_STATUS(&r, 200);
    assert_non_null(tl_field_str(r.json, "status"));
    assert_string_equal(tl_field_str(r.json, "status"), "ok");
    tl_resp_release(&r);
    assert_int_equal(tl_get(&D, NULL, &r, "/readyz"), 0);
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);
}

static void test_accounts(void **state)
{
    (void)state;
    char a[TL_UUID_TEXT_SIZE], b[TL_UUID_TEXT_SIZE], c[TL_UUID_TEXT_SIZE];
    char unknown[TL_UUID_TEXT_SIZE], ud[TL_UUID_TEXT_SIZE];
    tl_uuid_random(a);
    tl_uuid_random(b);
    tl_uuid_random(c);
    tl_uuid_random(unknown);
    tl_uuid_random(ud);
    int64_t before_us = tl_wall_us();

    json_t *acc_a = tl_account(a, USD, 7, "debits_must_not_exceed_credits,history");
    json_object_set_new(acc_a, "user_data_128", json_string(ud));
    json_object_set_new(acc_a, "user_data_64", json_integer(123456789012345LL));
    json_object_set_new(acc_a, "user_data_32", json_integer(42));
    create_accounts(W.key_acme,
                    tl_batch("accounts", acc_a, tl_account(b, USD, 1, NULL),
                             tl_account(c, EUR, 2, "credits_must_not_exceed_debits"), NULL),
                    3);

    tl_resp r;
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", a);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "id"), a);
    assert_non_null(tl_field_str(r.json, "customer"));
    assert_string_equal(tl_field_str(r.json, "customer"), "acme");
    TL_EXPECT_I64(r.json, "ledger", USD);
    TL_EXPECT_I64(r.json, "code", 7);
    assert_true(flags_equal(json_object_get(r.json, "flags"),
                            "debits_must_not_exceed_credits,history"));
    assert_string_equal(tl_field_str(r.json, "user_data_128"), ud);
    TL_EXPECT_I64(r.json, "user_data_64", 123456789012345LL);
    TL_EXPECT_I64(r.json, "user_data_32", 42);
    TL_EXPECT_I64(r.json, "debits_pending", 0);
    TL_EXPECT_I64(r.json, "debits_posted", 0);
    TL_EXPECT_I64(r.json, "credits_pending", 0);
    TL_EXPECT_I64(r.json, "credits_posted", 0);
    int64_t ts = 0;
    assert_int_equal(tl_field_i64(r.json, "timestamp_us", &ts), 0);
    assert_in_range(ts, before_us - 60000000, tl_wall_us() + 60000000);
    tl_resp_release(&r);

    /* Ids are accepted without dashes and in upper case too. */
    char plain[33];
    size_t n = 0;
    for (const char *p = c; *p && n < 32; p++)
        if (*p != '-')
            plain[n++] = (char)(*p >= 'a' && *p <= 'f' ? *p - 'a' + 'A' : *p);
    plain[n] = '\0';
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", plain);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "id"), c);
    TL_EXPECT_I64(r.json, "ledger", EUR);
    assert_true(flags_equal(json_object_get(r.json, "flags"), "credits_must_not_exceed_debits"));
    tl_resp_release(&r);

    /* Same id, same fields: exists; same id, another code: different. */
    assert_int_equal(tl_post(&D, "/v1/accounts", W.key_acme,
                             tl_batch("accounts", tl_account(b, USD, 1, NULL),
                                      tl_account(b, USD, 2, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "exists", "exists_with_different_fields");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", b);
    TL_EXPECT_I64(r.json, "code", 1);
    tl_resp_release(&r);

    /* Lookup keeps request order and leaves out unknown ids. */
    json_t *ids = json_pack("{s:[s,s,s,s]}", "ids", c, unknown, a, b);
    assert_int_equal(tl_post(&D, "/v1/accounts/lookup", W.key_acme, ids, &r), 0);
    TL_EXPECT_STATUS(&r, 200);
    json_t *accs = json_object_get(r.json, "accounts");
    assert_int_equal(json_array_size(accs), 3);
    assert_string_equal(tl_field_str(json_array_get(accs, 0), "id"), c);
    assert_string_equal(tl_field_str(json_array_get(accs, 1), "id"), a);
    assert_string_equal(tl_field_str(json_array_get(accs, 2), "id"), b);
    TL_EXPECT_I64(json_array_get(accs, 1), "code", 7);
    tl_resp_release(&r);

    /* And the rows are really in PostgreSQL with the API's flag bits. */
    char sql[256];
    int64_t flags = -1;
    snprintf(sql, sizeof sql, "SELECT flags FROM accounts WHERE id = '%s'", a);
    assert_int_equal(tl_pg_i64(PG, sql, &flags), 0);
    assert_int_equal(flags, 2 | 8);
}

static void test_transfers_and_metadata(void **state)
{
    (void)state;
    char bank[TL_UUID_TEXT_SIZE], x[TL_UUID_TEXT_SIZE], y[TL_UUID_TEXT_SIZE];
    char t1[TL_UUID_TEXT_SIZE], t2[TL_UUID_TEXT_SIZE], t3[TL_UUID_TEXT_SIZE];
    tl_uuid_random(bank);
    tl_uuid_random(x);
    tl_uuid_random(y);
    tl_uuid_random(t1);
    tl_uuid_random(t2);
    tl_uuid_random(t3);
    create_accounts(W.key_acme,
                    tl_batch("accounts", tl_account(bank, USD, 1, NULL),
                             tl_account(x, USD, 1, "debits_must_not_exceed_credits"),
                             tl_account(y, USD, 1, NULL), NULL),
                    3);

    json_t *first = tl_transfer(t1, bank, x, 1000, USD, NULL);
    json_error_t jerr;
    json_object_set_new(first, "metadata",
                        json_loads("{\"zeta\": 1, \"alpha\": {\"y\": true, \"b\": [1, 2.5, "
                                   "\"x\"]}, \"reference\": \"invoice 42\"}",
                                   0, &jerr));
    json_object_set_new(first, "user_data_64", json_integer(99));
    tl_resp r;
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", first,
                                      tl_transfer(t2, x, y, 300, USD, NULL),
                                      /* 800 more would overdraw x (700 left). */
                                      tl_transfer(t3, x, y, 800, USD, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 3, "ok", "ok", "exceeds_credits");
    int64_t ts1 = 0, ts2 = 0;
    json_t *res = json_object_get(r.json, "results");
    assert_string_equal(tl_field_str(json_array_get(res, 0), "id"), t1);
    assert_int_equal(tl_field_i64(json_array_get(res, 0), "timestamp_us", &ts1), 0);
    assert_int_equal(tl_field_i64(json_array_get(res, 1), "timestamp_us", &ts2), 0);
    assert_true(ts2 > ts1);
    tl_resp_release(&r);

    EXPECT_BALANCES(W.key_acme, bank, 0, 1000, 0, 0);
    EXPECT_BALANCES(W.key_acme, x, 0, 300, 0, 1000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 0, 300);

    /* The transfer as stored: input fields, timestamp, canonical metadata. */
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", t1);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "id"), t1);
    assert_string_equal(tl_field_str(r.json, "debit_account_id"), bank);
    assert_string_equal(tl_field_str(r.json, "credit_account_id"), x);
    TL_EXPECT_I64(r.json, "amount", 1000);
    TL_EXPECT_I64(r.json, "ledger", USD);
    TL_EXPECT_I64(r.json, "code", 1);
    TL_EXPECT_I64(r.json, "user_data_64", 99);
    TL_EXPECT_I64(r.json, "timestamp_us", ts1);
    assert_true(flags_equal(json_object_get(r.json, "flags"), NULL));
    assert_null(json_object_get(r.json, "pending_status"));
    json_t *want_meta = json_loads("{\"alpha\":{\"b\":[1,2.5,\"x\"],\"y\":true},"
                                   "\"reference\":\"invoice 42\",\"zeta\":1}",
                                   0, &jerr);
    assert_true(json_equal(json_object_get(r.json, "metadata"), want_meta));
    json_decref(want_meta);
    tl_resp_release(&r);

    /* Stored canonically (compact, sorted keys) in PostgreSQL. */
    char sql[256], meta[512];
    snprintf(sql, sizeof sql, "SELECT metadata FROM transfers WHERE id = '%s'", t1);
    assert_int_equal(tl_pg_text(PG, sql, meta, sizeof meta), 0);
    assert_string_equal(meta, "{\"alpha\":{\"b\":[1,2.5,\"x\"],\"y\":true},"
                              "\"reference\":\"invoice 42\",\"zeta\":1}");

    /* The failed transfer was not stored. */
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", t3);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);

    /* A linked chain that succeeds applies every event. */
    char l1[TL_UUID_TEXT_SIZE], l2[TL_UUID_TEXT_SIZE];
    tl_uuid_random(l1);
    tl_uuid_random(l2);
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", tl_transfer(l1, y, x, 100, USD, "linked"),
                                      tl_transfer(l2, x, bank, 50, USD, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "ok", "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, bank, 0, 1000, 0, 50);
    EXPECT_BALANCES(W.key_acme, x, 0, 350, 0, 1100);
    EXPECT_BALANCES(W.key_acme, y, 0, 100, 0, 300);
}

static void test_two_phase(void **state)
{
    (void)state;
    char bank[TL_UUID_TEXT_SIZE], x[TL_UUID_TEXT_SIZE], y[TL_UUID_TEXT_SIZE];
    char p1[TL_UUID_TEXT_SIZE], p2[TL_UUID_TEXT_SIZE], p3[TL_UUID_TEXT_SIZE];
    char post1[TL_UUID_TEXT_SIZE], void2[TL_UUID_TEXT_SIZE], post3[TL_UUID_TEXT_SIZE];
    char fund[TL_UUID_TEXT_SIZE], over[TL_UUID_TEXT_SIZE], after[TL_UUID_TEXT_SIZE];
    tl_uuid_random(bank);
    tl_uuid_random(x);
    tl_uuid_random(y);
    tl_uuid_random(p1);
    tl_uuid_random(p2);
    tl_uuid_random(p3);
    tl_uuid_random(post1);
    tl_uuid_random(void2);
    tl_uuid_random(post3);
    tl_uuid_random(fund);
    tl_uuid_random(over);
    tl_uuid_random(after);
    create_accounts(W.key_acme,
                    tl_batch("accounts", tl_account(bank, USD, 1, NULL),
                             tl_account(x, USD, 1, "debits_must_not_exceed_credits"),
                             tl_account(y, USD, 1, NULL), NULL),
                    3);
    tl_resp r;
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", tl_transfer(fund, bank, x, 2000, USD, NULL),
                                      post_pending(p1, x, y, 1000, 3600), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "ok", "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, x, 1000, 0, 0, 2000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 1000, 0);

    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", p1);
    TL_EXPECT_STATUS(&r, 200);
    assert_non_null(tl_field_str(r.json, "pending_status"));
    assert_string_equal(tl_field_str(r.json, "pending_status"), "pending");
    assert_true(flags_equal(json_object_get(r.json, "flags"), "pending"));
    TL_EXPECT_I64(r.json, "timeout_s", 3600);
    TL_EXPECT_I64(r.json, "amount", 1000);
    tl_resp_release(&r);

    /* Pending amounts count against the available balance: 2000 credits,
     * 1000 reserved, so 1001 more is refused and 1000 would fit. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", tl_transfer(over, x, y, 1001, USD, NULL),
                                      NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 1, "exceeds_credits");
    tl_resp_release(&r);

    /* Partial post: 600 of 1000 posted, the remaining 400 released. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers",
                                      resolve(post1, p1, "post_pending_transfer", 600), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, x, 0, 600, 0, 2000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 0, 600);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", p1);
    assert_string_equal(tl_field_str(r.json, "pending_status"), "posted");
    TL_EXPECT_I64(r.json, "amount_posted", 600);
    TL_EXPECT_I64(r.json, "amount", 1000);
    tl_resp_release(&r);
    /* The post itself carries the resolved accounts and amount. */
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", post1);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "pending_id"), p1);
    assert_string_equal(tl_field_str(r.json, "debit_account_id"), x);
    assert_string_equal(tl_field_str(r.json, "credit_account_id"), y);
    TL_EXPECT_I64(r.json, "amount", 600);
    TL_EXPECT_I64(r.json, "ledger", USD);
    assert_true(flags_equal(json_object_get(r.json, "flags"), "post_pending_transfer"));
    tl_resp_release(&r);

    /* Void: the reservation disappears, nothing is posted. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", post_pending(p2, x, y, 500, 0), NULL), &r),
                     0);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, x, 500, 600, 0, 2000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 500, 600);
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers",
                                      resolve(void2, p2, "void_pending_transfer", 0), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 1, "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, x, 0, 600, 0, 2000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 0, 600);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", p2);
    assert_string_equal(tl_field_str(r.json, "pending_status"), "voided");
    tl_resp_release(&r);

    /* Pending and full post (amount omitted) in one request. */
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", post_pending(p3, x, y, 250, 60),
                                      resolve(post3, p3, "post_pending_transfer", 0),
                                      tl_transfer(after, x, y, 1150, USD, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 3, "ok", "ok", "ok");
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, x, 0, 2000, 0, 2000);
    EXPECT_BALANCES(W.key_acme, y, 0, 0, 0, 2000);
    tl_get(&D, W.key_acme, &r, "/v1/transfers/%s", p3);
    assert_string_equal(tl_field_str(r.json, "pending_status"), "posted");
    TL_EXPECT_I64(r.json, "amount_posted", 250);
    tl_resp_release(&r);

    /* PostgreSQL agrees: statuses 2 (posted) and 3 (voided). */
    char sql[512], got[128];
    snprintf(sql, sizeof sql,
             "SELECT string_agg(status::text || ':' || amount_posted, ',' ORDER BY status, "
             "amount_posted) FROM pending_transfers WHERE id IN ('%s','%s','%s')",
             p1, p2, p3);
    assert_int_equal(tl_pg_text(PG, sql, got, sizeof got), 0);
    assert_string_equal(got, "2:250,2:600,3:0");
}

/* GET every page of path (which has a query string), limit per page;
 * fills ids (at most max) in order and returns how many, checking every
 * page but the last is full and only the last has no next_cursor. */
static size_t fetch_pages(const char *key, const char *path, const char *list, int limit,
                          char (*ids)[TL_UUID_TEXT_SIZE], int64_t *ts, size_t max,
                          size_t *pages)
{
    char cursor[512] = "";
    size_t count = 0;
    *pages = 0;
    for (size_t guard = 0; guard < 100; guard++) {
        tl_resp r;
        char *esc = NULL;
        if (cursor[0] != '\0') {
            esc = curl_easy_escape(NULL, cursor, 0);
            assert_non_null(esc);
        }
        tl_get(&D, key, &r, "%s&limit=%d%s%s", path, limit, esc ? "&cursor=" : "",
               esc ? esc : "");
        curl_free(esc);
        TL_EXPECT_STATUS(&r, 200);
        (*pages)++;
        json_t *rows = json_object_get(r.json, list);
        assert_true(json_is_array(rows));
        assert_true(json_array_size(rows) <= (size_t)limit);
        for (size_t i = 0; i < json_array_size(rows); i++) {
            json_t *row = json_array_get(rows, i);
            const char *id = tl_field_str(row, strcmp(list, "balances") == 0 ? "transfer_id"
                                                                              : "id");
            assert_non_null(id);
            assert_true(count < max);
            snprintf(ids[count], TL_UUID_TEXT_SIZE, "%s", id);
            assert_int_equal(tl_field_i64(row, "timestamp_us", &ts[count]), 0);
            count++;
        }
        const char *next = tl_field_str(r.json, "next_cursor");
        if (next == NULL) {
            tl_resp_release(&r);
            return count;
        }
        /* A page with a cursor after it is full. */
        assert_int_equal(json_array_size(rows), limit);
        assert_true(strlen(next) < sizeof cursor);
        snprintf(cursor, sizeof cursor, "%s", next);
        tl_resp_release(&r);
    }
    fail_msg("more than 100 pages");
    return count;
}

static void test_history(void **state)
{
    (void)state;
    enum { N = 25 };
    char h[TL_UUID_TEXT_SIZE], k[TL_UUID_TEXT_SIZE];
    char ids[N][TL_UUID_TEXT_SIZE];
    int64_t ts[N];
    tl_uuid_random(h);
    tl_uuid_random(k);
    create_accounts(W.key_acme,
                    tl_batch("accounts", tl_account(h, USD, 1, "history"),
                             tl_account(k, USD, 1, NULL), NULL),
                    2);
    /* 25 transfers in 5 requests; odd ones debit h, even ones credit it. */
    for (int req = 0; req < 5; req++) {
        json_t *arr = json_array();
        for (int i = req * 5; i < req * 5 + 5; i++) {
            tl_uuid_random(ids[i]);
            bool debit_h = i % 2 == 1;
            json_array_append_new(arr, tl_transfer(ids[i], debit_h ? h : k, debit_h ? k : h,
                                                   (int64_t)(i + 1) * 10, USD, NULL));
        }
        tl_resp r;
        assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                                 json_pack("{s:o}", "transfers", arr), &r),
                         0);
        TL_EXPECT_RESULTS(&r, 5, "ok", "ok", "ok", "ok", "ok");
        json_t *res = json_object_get(r.json, "results");
        for (int i = 0; i < 5; i++)
            assert_int_equal(
                tl_field_i64(json_array_get(res, (size_t)i), "timestamp_us", &ts[req * 5 + i]), 0);
        tl_resp_release(&r);
    }
    for (int i = 1; i < N; i++)
        assert_true(ts[i] > ts[i - 1]);

    /* 3 pages of 10, 10, 5: same ids, same order, no gaps, no repeats. */
    char got[N + 5][TL_UUID_TEXT_SIZE];
    int64_t got_ts[N + 5];
    size_t pages = 0;
    char path[256];
    snprintf(path, sizeof path, "/v1/accounts/%s/transfers?from_us=0", h);
    size_t n = fetch_pages(W.key_acme, path, "transfers", 10, got, got_ts, N + 5, &pages);
    assert_int_equal(n, N);
    assert_int_equal(pages, 3);
    for (int i = 0; i < N; i++) {
        assert_string_equal(got[i], ids[i]);
        assert_int_equal(got_ts[i], ts[i]);
    }
    /* The default page holds everything, oldest first, without a cursor. */
    tl_resp r;
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/transfers", h);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "transfers")), N);
    assert_null(json_object_get(r.json, "next_cursor"));
    json_t *last = json_array_get(json_object_get(r.json, "transfers"), N - 1);
    TL_EXPECT_I64(last, "amount", 250);
    assert_string_equal(tl_field_str(last, "debit_account_id"), k);
    tl_resp_release(&r);

    /* Time range: from_us <= timestamp_us < to_us selects 5..14. */
    snprintf(path, sizeof path, "/v1/accounts/%s/transfers?from_us=%" PRId64 "&to_us=%" PRId64,
             h, ts[5], ts[15]);
    n = fetch_pages(W.key_acme, path, "transfers", 4, got, got_ts, N + 5, &pages);
    assert_int_equal(n, 10);
    assert_int_equal(pages, 3);
    for (int i = 0; i < 10; i++)
        assert_string_equal(got[i], ids[5 + i]);

    /* The other side sees the same transfers. */
    snprintf(path, sizeof path, "/v1/accounts/%s/transfers?to_us=%" PRId64, k, ts[3]);
    n = fetch_pages(W.key_acme, path, "transfers", 1000, got, got_ts, N + 5, &pages);
    assert_int_equal(n, 3);
    assert_string_equal(got[2], ids[2]);

    /* Balance history of h: one row per transfer, exact running sums. */
    snprintf(path, sizeof path, "/v1/accounts/%s/balances?from_us=0", h);
    n = fetch_pages(W.key_acme, path, "balances", 10, got, got_ts, N + 5, &pages);
    assert_int_equal(n, N);
    assert_int_equal(pages, 3);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s/balances?limit=1000", h);
    TL_EXPECT_STATUS(&r, 200);
    json_t *rows = json_object_get(r.json, "balances");
    assert_int_equal(json_array_size(rows), N);
    int64_t debits = 0, credits = 0;
    for (int i = 0; i < N; i++) {
        if (i % 2 == 1)
            debits += (int64_t)(i + 1) * 10;
        else
            credits += (int64_t)(i + 1) * 10;
        json_t *row = json_array_get(rows, (size_t)i);
        assert_string_equal(tl_field_str(row, "transfer_id"), ids[i]);
        TL_EXPECT_I64(row, "timestamp_us", ts[i]);
        TL_EXPECT_I64(row, "debits_posted", debits);
        TL_EXPECT_I64(row, "credits_posted", credits);
        TL_EXPECT_I64(row, "debits_pending", 0);
        TL_EXPECT_I64(row, "credits_pending", 0);
    }
    tl_resp_release(&r);
    EXPECT_BALANCES(W.key_acme, h, 0, debits, 0, credits);
    /* k has no history flag: no rows were written for it. */
    char sql[256];
    int64_t cnt = -1;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM account_balances WHERE account_id = '%s'",
             k);
    assert_int_equal(tl_pg_i64(PG, sql, &cnt), 0);
    assert_int_equal(cnt, 0);
}

static void test_big_amounts(void **state)
{
    (void)state;
    char p[TL_UUID_TEXT_SIZE], q[TL_UUID_TEXT_SIZE], t1[TL_UUID_TEXT_SIZE],
        t2[TL_UUID_TEXT_SIZE];
    tl_uuid_random(p);
    tl_uuid_random(q);
    tl_uuid_random(t1);
    tl_uuid_random(t2);
    /* EUR is used only here, so its totals are known exactly. */
    create_accounts(W.key_globex,
                    tl_batch("accounts", tl_account(p, EUR, 1, NULL),
                             tl_account(q, EUR, 1, NULL), NULL),
                    2);
    json_t *big = tl_transfer(t1, p, q, 0, EUR, NULL);
    json_object_set_new(big, "amount", json_string("9007199254740993"));
    json_t *edge = tl_transfer(t2, p, q, TWO_POW_53, EUR, NULL);
    tl_resp r;
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_globex,
                             tl_batch("transfers", big, edge, NULL), &r),
                     0);
    TL_EXPECT_RESULTS(&r, 2, "ok", "ok");
    tl_resp_release(&r);

    /* Above 2^53: a string, digit for digit; at 2^53: a number. */
    tl_get(&D, W.key_globex, &r, "/v1/transfers/%s", t1);
    TL_EXPECT_STATUS(&r, 200);
    assert_true(json_is_string(json_object_get(r.json, "amount")));
    assert_string_equal(tl_field_str(r.json, "amount"), "9007199254740993");
    tl_resp_release(&r);
    tl_get(&D, W.key_globex, &r, "/v1/transfers/%s", t2);
    assert_true(json_is_integer(json_object_get(r.json, "amount")));
    TL_EXPECT_I64(r.json, "amount", TWO_POW_53);
    tl_resp_release(&r);

    tl_get(&D, W.key_globex, &r, "/v1/accounts/%s", q);
    TL_EXPECT_STATUS(&r, 200);
    assert_true(json_is_string(json_object_get(r.json, "credits_posted")));
    assert_string_equal(tl_field_str(r.json, "credits_posted"), "18014398509481985");
    assert_true(json_is_integer(json_object_get(r.json, "debits_posted")));
    tl_resp_release(&r);

    /* Totals for EUR in the balances snapshot. */
    tl_get(&D, W.key_globex, &r, "/v1/balances");
    TL_EXPECT_STATUS(&r, 200);
    json_t *totals = json_object_get(r.json, "totals");
    json_t *eur = NULL;
    for (size_t i = 0; i < json_array_size(totals); i++) {
        int64_t l = 0;
        if (tl_field_i64(json_array_get(totals, i), "ledger", &l) == 0 && l == EUR)
            eur = json_array_get(totals, i);
    }
    assert_non_null(eur);
    assert_string_equal(tl_field_str(eur, "debits_posted"), "18014398509481985");
    assert_string_equal(tl_field_str(eur, "credits_posted"), "18014398509481985");
    TL_EXPECT_I64(eur, "debits_pending", 0);
    tl_resp_release(&r);

    char sql[256];
    int64_t v = 0;
    snprintf(sql, sizeof sql, "SELECT credits_posted FROM accounts WHERE id = '%s'", q);
    assert_int_equal(tl_pg_i64(PG, sql, &v), 0);
    assert_int_equal(v, 18014398509481985LL);
}

static void test_balances_are_scoped(void **state)
{
    (void)state;
    /* acme sees only acme's accounts; globex only globex's; the admin all. */
    int64_t n_acme = -1, n_globex = -1, n_all = -1;
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT count(*) FROM accounts a JOIN customers c ON "
                               "c.id = a.customer_id WHERE c.name = 'acme'",
                               &n_acme),
                     0);
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT count(*) FROM accounts a JOIN customers c ON "
                               "c.id = a.customer_id WHERE c.name = 'globex'",
                               &n_globex),
                     0);
    assert_int_equal(tl_pg_i64(PG, "SELECT count(*) FROM accounts", &n_all), 0);
    assert_true(n_acme > 0 && n_globex > 0);
    const char *keys[] = {W.key_acme, W.key_globex, W.key_admin};
    int64_t want[] = {n_acme, n_globex, n_all};
    for (int k = 0; k < 3; k++) {
        tl_resp r;
        tl_get(&D, keys[k], &r, "/v1/balances");
        TL_EXPECT_STATUS(&r, 200);
        json_t *accs = json_object_get(r.json, "accounts");
        assert_int_equal(json_array_size(accs), want[k]);
        /* Totals per ledger balance, and equal the sum of the accounts. */
        json_t *totals = json_object_get(r.json, "totals");
        assert_true(json_array_size(totals) > 0);
        for (size_t t = 0; t < json_array_size(totals); t++) {
            json_t *tot = json_array_get(totals, t);
            int64_t ledger = 0, dp = 0, cp = 0, sum_dp = 0, sum_cp = 0;
            assert_int_equal(tl_field_i64(tot, "ledger", &ledger), 0);
            assert_int_equal(tl_field_i64(tot, "debits_posted", &dp), 0);
            assert_int_equal(tl_field_i64(tot, "credits_posted", &cp), 0);
            assert_int_equal(dp, cp);
            for (size_t i = 0; i < json_array_size(accs); i++) {
                json_t *a = json_array_get(accs, i);
                int64_t l = 0, v = 0;
                assert_int_equal(tl_field_i64(a, "ledger", &l), 0);
                if (l != ledger)
                    continue;
                assert_int_equal(tl_field_i64(a, "debits_posted", &v), 0);
                sum_dp += v;
                assert_int_equal(tl_field_i64(a, "credits_posted", &v), 0);
                sum_cp += v;
            }
            assert_int_equal(sum_dp, dp);
            assert_int_equal(sum_cp, cp);
        }
        tl_resp_release(&r);
    }

    /* An admin creates an account for globex: globex sees it, acme not. */
    char g[TL_UUID_TEXT_SIZE];
    tl_uuid_random(g);
    json_t *acc = tl_account(g, USD, 3, NULL);
    json_object_set_new(acc, "customer", json_string("globex"));
    create_accounts(W.key_admin, tl_batch("accounts", acc, NULL), 1);
    tl_resp r;
    tl_get(&D, W.key_globex, &r, "/v1/accounts/%s", g);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "customer"), "globex");
    tl_resp_release(&r);
    tl_get(&D, W.key_acme, &r, "/v1/accounts/%s", g);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    tl_get(&D, W.key_admin, &r, "/v1/accounts/%s", g);
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);
}

static void test_metrics(void **state)
{
    (void)state;
    tl_resp r;
    assert_int_equal(tl_get(&D, NULL, &r, "/metrics"), 0);
    TL_EXPECT_STATUS(&r, 200);
    assert_true(strncmp(r.content_type, "text/plain", 10) == 0);
    int64_t before = metric_transfers_ok(r.body);
    if (before < 0)
        print_error("no meridian_transfers_total{result=\"ok\"} in:\n%.3000s\n", r.body);
    assert_true(before > 0); /* earlier tests applied transfers */
    assert_non_null(strstr(r.body, "meridian_db_up 1"));
    assert_non_null(strstr(r.body, "meridian_http_requests_total{"));
    assert_non_null(strstr(r.body, "meridian_commit_duration_seconds_bucket{"));
    tl_resp_release(&r);

    char a[TL_UUID_TEXT_SIZE], b[TL_UUID_TEXT_SIZE];
    char t[3][TL_UUID_TEXT_SIZE], bad[TL_UUID_TEXT_SIZE];
    tl_uuid_random(a);
    tl_uuid_random(b);
    for (int i = 0; i < 3; i++)
        tl_uuid_random(t[i]);
    tl_uuid_random(bad);
    create_accounts(W.key_acme,
                    tl_batch("accounts", tl_account(a, USD, 1, NULL),
                             tl_account(b, USD, 1, NULL), NULL),
                    2);
    assert_int_equal(tl_post(&D, "/v1/transfers", W.key_acme,
                             tl_batch("transfers", tl_transfer(t[0], a, b, 1, USD, NULL),
                                      tl_transfer(t[1], a, b, 2, USD, NULL),
                                      tl_transfer(bad, a, a, 2, USD, NULL),
                                      tl_transfer(t[2], b, a, 3, USD, NULL), NULL),
                             &r),
                     0);
    TL_EXPECT_RESULTS(&r, 4, "ok", "ok", "accounts_must_be_different", "ok");
    tl_resp_release(&r);

    assert_int_equal(tl_get(&D, NULL, &r, "/metrics"), 0);
    int64_t after = metric_transfers_ok(r.body);
    assert_int_equal(after - before, 3);
    assert_non_null(strstr(r.body, "meridian_transfers_total{result=\"accounts_must_be_different\"}"));
    tl_resp_release(&r);
}

/* Last: SIGTERM drains and exits 0 (LeakSanitizer runs at that exit). */
static void test_sigterm_exits_zero(void **state)
{
    (void)state;
    assert_int_equal(tl_meridiand_stop(&D), 0);
    tl_resp r;
    assert_int_equal(tl_get(&D, NULL, &r, "/healthz"), -1);
    tl_resp_release(&r);
}

static int setup(void **state)
{
    (void)state;
    if (tl_setup_db_and_keys(&W) != 0)
        return -1;
    if (tl_meridiand_start(W.config_path, W.port, W.tmp_dir, &D) != 0)
        return -1;
    PG = tl_pg_connect(W.dsn);
    return PG ? 0 : -1;
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
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_accounts),
        cmocka_unit_test(test_transfers_and_metadata),
        cmocka_unit_test(test_two_phase),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_big_amounts),
        cmocka_unit_test(test_balances_are_scoped),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_sigterm_exits_zero),
    };
    int failed = cmocka_run_group_tests_name("itest_api_flow", tests, setup, teardown);
    tl_world_release(&W, failed != 0);
    tl_shutdown();
    return failed == 0 ? 0 : 1;
}
