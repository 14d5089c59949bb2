/*
 * itest_store.c — the write path (batcher + store + engine) against a
 * real PostgreSQL, without HTTP.
 *
 * The test database (MERIDIAN_TEST_DSN, empty) is migrated with
 * migrate_apply, one customer is inserted, and requests go through
 * batcher_submit_* exactly as the HTTP handlers send them. Outcomes are
 * checked twice: the result codes, and the rows in PostgreSQL (balances
 * exact, each acknowledged transfer stored once, nothing written by a
 * failed chain, pending state transitions, expiry by the background
 * thread). Submitting threads never call cmocka (it is not
 * thread-safe); they record what they saw and the main thread asserts.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "common/id128.h"
#include "common/log.h"
#include "db/migrate.h"
#include "ledger/ledger.h"
#include "ledger/store.h"
#include "service/batcher.h"
#include "testlib.h"

#define LEDGER_USD 840
#define RANDOM_THREADS 8
#define RANDOM_TRANSFERS_PER_THREAD 200
#define RANDOM_ACCOUNTS 5
#define DUP_ROUNDS 20
#define EXPIRY_WAIT_MS 10000

static const char *g_dsn;
static PGconn *g_pg;
static int64_t g_customer;
static batcher *g_b;

/* ---- Helpers. */

static int64_t q_i64(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int64_t q_i64(const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    int64_t v = INT64_MIN;
    assert_int_equal(tl_pg_i64(g_pg, sql, &v), 0);
    return v;
}

static void new_id(id128 *id)
{
    id128_random(id);
}

static const char *idtxt(const id128 *id, char buf[ID128_TEXT_SIZE])
{
    id128_format(id, buf);
    return buf;
}

static ledger_account mk_account(uint32_t flags)
{
    ledger_account a = {0};
    new_id(&a.id);
    a.customer_id = g_customer;
    a.ledger = LEDGER_USD;
    a.code = 1;
    a.flags = flags;
    return a;
}

static ledger_transfer mk_transfer(const id128 *debit, const id128 *credit, int64_t amount,
                                   uint32_t flags)
{
    ledger_transfer t = {0};
    new_id(&t.id);
    if (debit) t.debit_account_id = *debit;
    if (credit) t.credit_account_id = *credit;
    t.amount = amount;
    t.ledger = LEDGER_USD;
    t.code = 7;
    t.flags = flags;
    t.customer_id = g_customer;
    return t;
}

static void create_accounts(ledger_account *a, size_t n)
{
    ledger_account_result r[16];
    assert_true(n <= 16);
    assert_int_equal(batcher_submit_accounts(g_b, a, n, r), BATCHER_OK);
    for (size_t i = 0; i < n; i++) assert_int_equal(r[i], LEDGER_ACCOUNT_OK);
}

static void submit_one(ledger_transfer *t, ledger_transfer_result want)
{
    ledger_transfer_result r = LEDGER_TRANSFER_RESULT_COUNT;
    assert_int_equal(batcher_submit_transfers(g_b, t, 1, &r), BATCHER_OK);
    if (r != want)
        fail_msg("result %s, want %s", ledger_transfer_result_name(r),
                 ledger_transfer_result_name(want));
}

/* Balances of one account as stored: dp, dpo, cp, cpo. */
static void balances(const id128 *id, int64_t out[4])
{
    char t[ID128_TEXT_SIZE];
    static const char *cols[4] = {"debits_pending", "debits_posted", "credits_pending",
                                  "credits_posted"};
    for (int k = 0; k < 4; k++)
        out[k] = q_i64("SELECT %s FROM accounts WHERE id = '%s'", cols[k], idtxt(id, t));
}

static void expect_balances(const id128 *id, int64_t dp, int64_t dpo, int64_t cp, int64_t cpo)
{
    int64_t b[4];
    balances(id, b);
    if (b[0] != dp || b[1] != dpo || b[2] != cp || b[3] != cpo)
        fail_msg("balances dp=%" PRId64 " dpo=%" PRId64 " cp=%" PRId64 " cpo=%" PRId64
                 ", want %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64,
                 b[0], b[1], b[2], b[3], dp, dpo, cp, cpo);
}

static int64_t transfer_count(const id128 *id)
{
    char t[ID128_TEXT_SIZE];
    return q_i64("SELECT count(*) FROM transfers WHERE id = '%s'", idtxt(id, t));
}

static batcher *start_batcher(int workers, int expire_ms)
{
    batcher_config cfg = {.dsn = g_dsn, .workers = workers, .wait_us = 500,
                          .events_max = 1000, .queue_max = 1024,
                          .expire_interval_ms = expire_ms};
    char err[256] = "";
    batcher *b = batcher_start(&cfg, err, sizeof err);
    if (!b) fprintf(stderr, "batcher_start: %s\n", err);
    return b;
}

static int set_sync_names(const char *value);

/* ---- Setup. */

static int group_setup(void **state)
{
    (void)state;
    /* MERIDIAN_TEST_LOG=debug shows every commit and retry. */
    log_level level = LOG_WARN;
    const char *lv = getenv("MERIDIAN_TEST_LOG");
    if (lv && log_level_parse(lv, &level) < 0) level = LOG_WARN;
    log_init(level, false);
    g_dsn = tl_env("MERIDIAN_TEST_DSN");
    g_pg = tl_pg_connect(g_dsn);
    if (!g_pg) return -1;
    char err[512] = "";
    if (migrate_apply(g_pg, NULL, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "migrate: %s\n", err);
        return -1;
    }
    PGresult *r = PQexec(g_pg, "INSERT INTO customers (name) VALUES ('acme') RETURNING id");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "insert customer: %s", PQerrorMessage(g_pg));
        PQclear(r);
        return -1;
    }
    g_customer = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    /* A run killed inside the test that sets it could have left it. */
    if (set_sync_names("") != 0) return -1;
    g_b = start_batcher(4, 200);
    return g_b ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    batcher_stop(g_b);
    PQfinish(g_pg);
    return 0;
}

/* ---- Tests. */

static void test_config_is_validated(void **state)
{
    (void)state;
    char err[256] = "";
    batcher_config cfg = {.dsn = g_dsn, .workers = 0, .events_max = 10, .queue_max = 1};
    assert_null(batcher_start(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "workers"));
    cfg.workers = 1;
    cfg.events_max = 0;
    assert_null(batcher_start(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "events"));
    cfg.events_max = 10;
    cfg.dsn = "host=127.0.0.1 port=1 dbname=nothing connect_timeout=2";
    assert_null(batcher_start(&cfg, err, sizeof err));
    assert_non_null(strstr(err, "cannot connect to database"));
}

static void test_accounts_and_transfers(void **state)
{
    (void)state;
    ledger_account a[3] = {mk_account(LEDGER_AF_HISTORY), mk_account(0),
                           mk_account(LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS)};
    create_accounts(a, 3);
    char t[ID128_TEXT_SIZE];
    assert_int_equal(q_i64("SELECT count(*) FROM accounts WHERE id = '%s' AND customer_id = "
                           "%" PRId64 " AND flags = %d",
                           idtxt(&a[0].id, t), g_customer, LEDGER_AF_HISTORY),
                     1);

    /* Again: exists; changed fields: exists_with_different_fields. */
    ledger_account again[2] = {a[1], a[2]};
    again[1].code = 99;
    ledger_account_result ar[2];
    assert_int_equal(batcher_submit_accounts(g_b, again, 2, ar), BATCHER_OK);
    assert_int_equal(ar[0], LEDGER_ACCOUNT_EXISTS);
    assert_int_equal(ar[1], LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS);

    /* Unknown customer and unknown ledger: nothing written. */
    ledger_account bad[2] = {mk_account(0), mk_account(0)};
    bad[0].customer_id = g_customer + 1000;
    bad[1].ledger = 999;
    assert_int_equal(batcher_submit_accounts(g_b, bad, 2, ar), BATCHER_OK);
    assert_int_equal(ar[0], LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND);
    assert_int_equal(ar[1], LEDGER_ACCOUNT_LEDGER_NOT_FOUND);
    assert_int_equal(q_i64("SELECT count(*) FROM accounts WHERE id IN ('%s', '%s')",
                           idtxt(&bad[0].id, t), idtxt(&bad[1].id, (char[ID128_TEXT_SIZE]){0})),
                     0);

    /* A linked chain with a missing customer fails as a whole. */
    ledger_account chain[2] = {mk_account(LEDGER_AF_LINKED), mk_account(0)};
    chain[1].customer_id = g_customer + 1000;
    assert_int_equal(batcher_submit_accounts(g_b, chain, 2, ar), BATCHER_OK);
    assert_int_equal(ar[0], LEDGER_ACCOUNT_LINKED_EVENT_FAILED);
    assert_int_equal(ar[1], LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND);
    assert_int_equal(transfer_count(&chain[0].id), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM accounts WHERE id = '%s'",
                           idtxt(&chain[0].id, t)),
                     0);

    /* Transfers in one request, with metadata that needs escaping. */
    ledger_transfer tr[3] = {mk_transfer(&a[0].id, &a[1].id, 100, 0),
                             mk_transfer(&a[1].id, &a[2].id, 30, 0),
                             mk_transfer(&a[2].id, &a[0].id, 31, 0)};
    static const char meta[] = "{\"note\":\"a \\\"quoted\\\" \\\\ back{slash},x\"}";
    tr[0].metadata = meta;
    tr[0].metadata_len = strlen(meta);
    ledger_transfer_result r[3];
    assert_int_equal(batcher_submit_transfers(g_b, tr, 3, r), BATCHER_OK);
    assert_int_equal(r[0], LEDGER_TRANSFER_OK);
    assert_int_equal(r[1], LEDGER_TRANSFER_OK);
    assert_int_equal(r[2], LEDGER_TRANSFER_EXCEEDS_CREDITS);
    expect_balances(&a[0].id, 0, 100, 0, 0);
    expect_balances(&a[1].id, 0, 30, 0, 100);
    expect_balances(&a[2].id, 0, 0, 0, 30);
    assert_int_equal(transfer_count(&tr[0].id), 1);
    assert_int_equal(transfer_count(&tr[2].id), 0);
    char stored[256];
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT metadata FROM transfers WHERE id = '%s'",
             idtxt(&tr[0].id, t));
    assert_int_equal(tl_pg_text(g_pg, sql, stored, sizeof stored), 0);
    assert_string_equal(stored, meta);
    assert_int_equal(q_i64("SELECT timestamp_us FROM transfers WHERE id = '%s'",
                           idtxt(&tr[0].id, t)),
                     tr[0].timestamp_us);
    /* History rows for the account with the history flag only. */
    assert_int_equal(q_i64("SELECT count(*) FROM account_balances WHERE account_id = '%s'",
                           idtxt(&a[0].id, t)),
                     1);
    assert_int_equal(q_i64("SELECT debits_posted FROM account_balances WHERE transfer_id = "
                           "'%s'",
                           idtxt(&tr[0].id, t)),
                     100);

    /* Idempotency against stored rows, metadata included. */
    ledger_transfer same = tr[0], other = tr[0];
    same.timestamp_us = other.timestamp_us = 0;
    submit_one(&same, LEDGER_TRANSFER_EXISTS);
    other.metadata = "{\"note\":\"other\"}";
    other.metadata_len = strlen(other.metadata);
    submit_one(&other, LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    expect_balances(&a[0].id, 0, 100, 0, 0);
    assert_int_equal(transfer_count(&tr[0].id), 1);
}

/* ---- Concurrency: random transfers among a few accounts. */

typedef struct rnd_arg {
    ledger_account *accounts;
    unsigned seed;
    ledger_transfer transfers[RANDOM_TRANSFERS_PER_THREAD];
    ledger_transfer_result results[RANDOM_TRANSFERS_PER_THREAD];
    int bad_status; /* a batcher status other than OK */
} rnd_arg;

static void *random_worker(void *p)
{
    rnd_arg *a = p;
    size_t done = 0;
    while (done < RANDOM_TRANSFERS_PER_THREAD) {
        size_t n = 1 + (size_t)(rand_r(&a->seed) % 5);
        if (n > RANDOM_TRANSFERS_PER_THREAD - done) n = RANDOM_TRANSFERS_PER_THREAD - done;
        for (size_t i = 0; i < n; i++) {
            int d = rand_r(&a->seed) % RANDOM_ACCOUNTS;
            int c = (d + 1 + rand_r(&a->seed) % (RANDOM_ACCOUNTS - 1)) % RANDOM_ACCOUNTS;
            a->transfers[done + i] =
                mk_transfer(&a->accounts[d].id, &a->accounts[c].id,
                            1 + rand_r(&a->seed) % 1000, 0);
        }
        batcher_status st =
            batcher_submit_transfers(g_b, a->transfers + done, n, a->results + done);
        if (st != BATCHER_OK) a->bad_status = st;
        done += n;
    }
    return NULL;
}

static void test_concurrent_random_transfers(void **state)
{
    (void)state;
    ledger_account acc[RANDOM_ACCOUNTS];
    for (int i = 0; i < RANDOM_ACCOUNTS; i++) acc[i] = mk_account(i == 0 ? LEDGER_AF_HISTORY : 0);
    create_accounts(acc, RANDOM_ACCOUNTS);

    static rnd_arg args[RANDOM_THREADS];
    pthread_t th[RANDOM_THREADS];
    for (int i = 0; i < RANDOM_THREADS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].accounts = acc;
        args[i].seed = 1234u + (unsigned)i;
        assert_int_equal(pthread_create(&th[i], NULL, random_worker, &args[i]), 0);
    }
    for (int i = 0; i < RANDOM_THREADS; i++) pthread_join(th[i], NULL);

    int64_t expect_debits[RANDOM_ACCOUNTS] = {0}, expect_credits[RANDOM_ACCOUNTS] = {0};
    size_t ok = 0;
    for (int i = 0; i < RANDOM_THREADS; i++) {
        assert_int_equal(args[i].bad_status, 0);
        for (int k = 0; k < RANDOM_TRANSFERS_PER_THREAD; k++) {
            const ledger_transfer *t = &args[i].transfers[k];
            assert_int_equal(args[i].results[k], LEDGER_TRANSFER_OK);
            ok++;
            for (int j = 0; j < RANDOM_ACCOUNTS; j++) {
                if (id128_equal(&t->debit_account_id, &acc[j].id)) expect_debits[j] += t->amount;
                if (id128_equal(&t->credit_account_id, &acc[j].id)) expect_credits[j] += t->amount;
            }
            if (k % 37 == 0) assert_int_equal(transfer_count(&t->id), 1);
        }
    }
    assert_int_equal(ok, RANDOM_THREADS * RANDOM_TRANSFERS_PER_THREAD);
    for (int j = 0; j < RANDOM_ACCOUNTS; j++)
        expect_balances(&acc[j].id, 0, expect_debits[j], 0, expect_credits[j]);
    /* Money is conserved on the ledger and every transfer is stored once. */
    assert_int_equal(q_i64("SELECT sum(debits_posted - credits_posted) + sum(debits_pending - "
                           "credits_pending) FROM accounts WHERE ledger = %d",
                           LEDGER_USD),
                     0);
    char t[ID128_TEXT_SIZE];
    idtxt(&acc[0].id, t);
    int64_t touching = q_i64("SELECT count(*) FROM transfers WHERE debit_account_id = '%s' "
                             "OR credit_account_id = '%s'", t, t);
    assert_true(touching > 0);
    assert_int_equal(touching,
                     q_i64("SELECT count(*) FROM account_balances WHERE account_id = '%s'", t));
    assert_int_equal(q_i64("SELECT count(DISTINCT seq) - count(*) FROM transfers"), 0);
}

/* ---- The same id from two processes (two batchers) at once. */

typedef struct dup_arg {
    batcher *b;
    pthread_barrier_t *go;
    ledger_transfer t;
    ledger_transfer_result r;
    batcher_status st;
} dup_arg;

static void *dup_worker(void *p)
{
    dup_arg *a = p;
    pthread_barrier_wait(a->go);
    a->st = batcher_submit_transfers(a->b, &a->t, 1, &a->r);
    return NULL;
}

static void test_duplicate_id_concurrently(void **state)
{
    (void)state;
    batcher *b2 = start_batcher(1, 0);
    assert_non_null(b2);
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    int64_t total = 0;
    for (int round = 0; round < DUP_ROUNDS; round++) {
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        dup_arg a[2] = {{.b = g_b, .go = &go}, {.b = b2, .go = &go}};
        a[0].t = mk_transfer(&acc[0].id, &acc[1].id, 10, 0);
        a[1].t = a[0].t;
        pthread_t th[2];
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, dup_worker, &a[i]), 0);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);
        assert_int_equal(a[0].st, BATCHER_OK);
        assert_int_equal(a[1].st, BATCHER_OK);
        int oks = (a[0].r == LEDGER_TRANSFER_OK) + (a[1].r == LEDGER_TRANSFER_OK);
        int exists = (a[0].r == LEDGER_TRANSFER_EXISTS) + (a[1].r == LEDGER_TRANSFER_EXISTS);
        if (oks != 1 || exists != 1)
            fail_msg("round %d: results %s and %s", round, ledger_transfer_result_name(a[0].r),
                     ledger_transfer_result_name(a[1].r));
        assert_int_equal(transfer_count(&a[0].t.id), 1);
        total += 10;
    }
    expect_balances(&acc[0].id, 0, total, 0, 0);
    expect_balances(&acc[1].id, 0, 0, 0, total);
    batcher_stop(b2);
}

static void test_linked_chain_failure_writes_nothing(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    id128 missing;
    new_id(&missing);
    ledger_transfer tr[3] = {mk_transfer(&acc[0].id, &acc[1].id, 5, LEDGER_TF_LINKED),
                             mk_transfer(&acc[0].id, &missing, 5, 0),
                             mk_transfer(&acc[1].id, &acc[0].id, 1, 0)};
    ledger_transfer_result r[3];
    assert_int_equal(batcher_submit_transfers(g_b, tr, 3, r), BATCHER_OK);
    assert_int_equal(r[0], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_int_equal(r[1], LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    assert_int_equal(r[2], LEDGER_TRANSFER_OK);
    assert_int_equal(transfer_count(&tr[0].id), 0);
    assert_int_equal(transfer_count(&tr[1].id), 0);
    assert_int_equal(transfer_count(&tr[2].id), 1);
    expect_balances(&acc[0].id, 0, 0, 0, 1);
    expect_balances(&acc[1].id, 0, 1, 0, 0);
}

static void test_pending_post_and_void_across_commits(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    ledger_transfer p1 = mk_transfer(&acc[0].id, &acc[1].id, 500, LEDGER_TF_PENDING);
    ledger_transfer p2 = mk_transfer(&acc[0].id, &acc[1].id, 70, LEDGER_TF_PENDING);
    submit_one(&p1, LEDGER_TRANSFER_OK);
    submit_one(&p2, LEDGER_TRANSFER_OK);
    expect_balances(&acc[0].id, 570, 0, 0, 0);
    expect_balances(&acc[1].id, 0, 0, 570, 0);
    char t[ID128_TEXT_SIZE];
    assert_int_equal(q_i64("SELECT status FROM pending_transfers WHERE id = '%s'",
                           idtxt(&p1.id, t)),
                     LEDGER_PENDING_PENDING);

    /* Partial post of p1 (ledger/code/accounts taken from the pending). */
    ledger_transfer post = mk_transfer(NULL, NULL, 300, LEDGER_TF_POST_PENDING);
    post.pending_id = p1.id;
    post.ledger = 0;
    post.code = 0;
    submit_one(&post, LEDGER_TRANSFER_OK);
    expect_balances(&acc[0].id, 70, 300, 0, 0);
    expect_balances(&acc[1].id, 0, 0, 70, 300);
    assert_int_equal(q_i64("SELECT status FROM pending_transfers WHERE id = '%s'",
                           idtxt(&p1.id, t)),
                     LEDGER_PENDING_POSTED);
    assert_int_equal(q_i64("SELECT amount_posted FROM pending_transfers WHERE id = '%s'",
                           t),
                     300);
    char pid[ID128_TEXT_SIZE];
    assert_int_equal(q_i64("SELECT count(*) FROM transfers WHERE id = '%s' AND pending_id = "
                           "'%s' AND debit_account_id = '%s'",
                           idtxt(&post.id, t), idtxt(&p1.id, pid),
                           idtxt(&acc[0].id, (char[ID128_TEXT_SIZE]){0})),
                     1);

    /* Void p2; a second post of p1 and a void of p1 fail. */
    ledger_transfer vd = mk_transfer(NULL, NULL, 0, LEDGER_TF_VOID_PENDING);
    vd.pending_id = p2.id;
    vd.ledger = 0;
    vd.code = 0;
    ledger_transfer post_again = mk_transfer(NULL, NULL, 0, LEDGER_TF_POST_PENDING);
    post_again.pending_id = p1.id;
    post_again.ledger = 0;
    post_again.code = 0;
    ledger_transfer two[2] = {vd, post_again};
    ledger_transfer_result r[2];
    assert_int_equal(batcher_submit_transfers(g_b, two, 2, r), BATCHER_OK);
    assert_int_equal(r[0], LEDGER_TRANSFER_OK);
    assert_int_equal(r[1], LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    expect_balances(&acc[0].id, 0, 300, 0, 0);
    expect_balances(&acc[1].id, 0, 0, 0, 300);
    assert_int_equal(q_i64("SELECT status FROM pending_transfers WHERE id = '%s'",
                           idtxt(&p2.id, t)),
                     LEDGER_PENDING_VOIDED);

    /* Pending and its post in the same request. */
    ledger_transfer both[2] = {mk_transfer(&acc[0].id, &acc[1].id, 9, LEDGER_TF_PENDING),
                               mk_transfer(NULL, NULL, 0, LEDGER_TF_POST_PENDING)};
    both[1].pending_id = both[0].id;
    both[1].ledger = 0;
    both[1].code = 0;
    assert_int_equal(batcher_submit_transfers(g_b, both, 2, r), BATCHER_OK);
    assert_int_equal(r[0], LEDGER_TRANSFER_OK);
    assert_int_equal(r[1], LEDGER_TRANSFER_OK);
    expect_balances(&acc[0].id, 0, 309, 0, 0);
    assert_int_equal(q_i64("SELECT status FROM pending_transfers WHERE id = '%s'",
                           idtxt(&both[0].id, t)),
                     LEDGER_PENDING_POSTED);
}

static void test_pending_expires(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    ledger_transfer p = mk_transfer(&acc[0].id, &acc[1].id, 40, LEDGER_TF_PENDING);
    p.timeout_s = 1;
    submit_one(&p, LEDGER_TRANSFER_OK);
    expect_balances(&acc[0].id, 40, 0, 0, 0);
    char t[ID128_TEXT_SIZE];
    idtxt(&p.id, t);
    int64_t deadline = tl_now_ms() + EXPIRY_WAIT_MS;
    int64_t status = 0;
    while (tl_now_ms() < deadline) {
        status = q_i64("SELECT status FROM pending_transfers WHERE id = '%s'", t);
        if (status == LEDGER_PENDING_EXPIRED) break;
        tl_sleep_ms(100);
    }
    assert_int_equal(status, LEDGER_PENDING_EXPIRED);
    expect_balances(&acc[0].id, 0, 0, 0, 0);
    expect_balances(&acc[1].id, 0, 0, 0, 0);

    ledger_transfer post = mk_transfer(NULL, NULL, 0, LEDGER_TF_POST_PENDING);
    post.pending_id = p.id;
    post.ledger = 0;
    post.code = 0;
    submit_one(&post, LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED);
    assert_int_equal(transfer_count(&post.id), 0);
    /* The sweep ran as the job of the jobs table, and succeeded. */
    assert_true(q_i64("SELECT attempts FROM jobs WHERE kind = 'expire_pending' AND "
                      "done_at IS NULL") > 0);
    assert_int_equal(q_i64("SELECT count(*) FROM jobs WHERE kind = 'expire_pending' AND "
                           "done_at IS NULL AND last_error IS NULL"),
                     1);
}

/* The expiry job: one claimer per interval, whoever asks first; a row
 * that went missing is recreated; the outcome is recorded. */
static void test_expiry_job_claim(void **state)
{
    (void)state;
    char err[256] = "";
    store *a = store_connect(g_dsn, err, sizeof err);
    store *b = store_connect(g_dsn, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    const char *kind = "itest_claim";
    int64_t id_a = 0, id_b = 0;
    /* No row yet: created, not claimed. */
    assert_int_equal(store_job_claim(a, kind, 60000, &id_a), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM jobs WHERE kind = '%s'", kind), 1);
    /* Due now: the first claims it, the second finds it an interval ahead. */
    assert_int_equal(store_job_claim(a, kind, 60000, &id_a), 1);
    assert_int_equal(store_job_claim(b, kind, 60000, &id_b), 0);
    assert_true(q_i64("SELECT (run_at > now() + interval '50 seconds')::int FROM jobs "
                      "WHERE id = %lld", (long long)id_a) == 1);
    assert_int_equal(store_job_finish(a, id_a, "sweep failed: test"), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM jobs WHERE id = %lld AND "
                           "last_error = 'sweep failed: test' AND attempts = 1",
                           (long long)id_a),
                     1);
    /* Made due again: the second claims it this time; success clears the error. */
    assert_int_equal(q_i64("WITH u AS (UPDATE jobs SET run_at = now() WHERE id = %lld "
                           "RETURNING 1) SELECT count(*) FROM u", (long long)id_a),
                     1);
    assert_int_equal(store_job_claim(b, kind, 0, &id_b), 1);
    assert_int_equal(id_b, id_a);
    assert_int_equal(store_job_finish(b, id_b, NULL), 0);
    assert_int_equal(q_i64("SELECT count(*) FROM jobs WHERE id = %lld AND last_error IS NULL "
                           "AND attempts = 2", (long long)id_a),
                     1);
    store_free(a);
    store_free(b);
}

/* A server-side disconnect between commits (a restart, a failover, an
 * idle timeout) costs a reconnect, not a failed request. */
static void test_terminated_connections_reconnect(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    int64_t total = 0;
    for (int round = 0; round < 3; round++) {
        /* Only this test's database: other tests share the instance. */
        int64_t killed = q_i64("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                               "WHERE datname = current_database() AND pid <> "
                               "pg_backend_pid() AND backend_type = 'client backend'");
        assert_true(killed >= 1);
        ledger_transfer t = mk_transfer(&acc[0].id, &acc[1].id, 3, 0);
        submit_one(&t, LEDGER_TRANSFER_OK);
        total += 3;
        assert_int_equal(transfer_count(&t.id), 1);
    }
    expect_balances(&acc[0].id, 0, total, 0, 0);
    assert_int_equal(batcher_db_up(g_b), 1);
}

/* One request larger than events_max (the coalescing target), with
 * metadata on every transfer: one commit, every row stored. */
#define LARGE_COUNT 3000
static void test_large_request(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    static char meta[1024];
    memset(meta, 'm', sizeof meta);
    memcpy(meta, "{\"k\":\"", 6);
    memcpy(meta + sizeof meta - 3, "\"}", 3); /* NUL included */
    ledger_transfer *tr = calloc(LARGE_COUNT, sizeof *tr);
    ledger_transfer_result *r = calloc(LARGE_COUNT, sizeof *r);
    assert_non_null(tr);
    assert_non_null(r);
    for (size_t i = 0; i < LARGE_COUNT; i++) {
        tr[i] = mk_transfer(&acc[i % 2].id, &acc[(i + 1) % 2].id, 1, 0);
        tr[i].metadata = meta;
        tr[i].metadata_len = strlen(meta);
    }
    assert_int_equal(batcher_submit_transfers(g_b, tr, LARGE_COUNT, r), BATCHER_OK);
    for (size_t i = 0; i < LARGE_COUNT; i++) assert_int_equal(r[i], LEDGER_TRANSFER_OK);
    char t[ID128_TEXT_SIZE];
    idtxt(&acc[0].id, t);
    assert_int_equal(q_i64("SELECT count(*) FROM transfers WHERE debit_account_id = '%s' OR "
                           "credit_account_id = '%s'", t, t),
                     LARGE_COUNT);
    assert_int_equal(q_i64("SELECT count(*) FROM transfers WHERE (debit_account_id = '%s' OR "
                           "credit_account_id = '%s') AND octet_length(metadata) = %zu",
                           t, t, strlen(meta)),
                     LARGE_COUNT);
    expect_balances(&acc[0].id, 0, LARGE_COUNT / 2, 0, LARGE_COUNT / 2);
    free(tr);
    free(r);
}

/* Settling an ambiguous commit: the rows the engine applied, with the
 * timestamps it gave, are all there (1) or none is (0). */
static void test_batch_committed_settles(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    ledger_transfer t = mk_transfer(&acc[0].id, &acc[1].id, 2, 0);
    submit_one(&t, LEDGER_TRANSFER_OK);
    assert_true(t.timestamp_us > 0);

    char err[256] = "";
    store *st = store_connect(g_dsn, err, sizeof err);
    assert_non_null(st);
    ledger_transfer_result ok = LEDGER_TRANSFER_OK;
    ledger_account_result aok[2] = {LEDGER_ACCOUNT_OK, LEDGER_ACCOUNT_OK};
    store_request req = {.kind = STORE_REQ_TRANSFERS, .count = 1, .transfers = &t,
                         .transfer_results = &ok};
    store_request both[2] = {req, {.kind = STORE_REQ_ACCOUNTS, .count = 2, .accounts = acc,
                                   .account_results = aok}};
    assert_int_equal(store_batch_committed(st, both, 2), 1);

    ledger_transfer other = t; /* same id, another commit's timestamp */
    other.timestamp_us = t.timestamp_us + 1;
    req.transfers = &other;
    assert_int_equal(store_batch_committed(st, &req, 1), 0);
    ledger_transfer fresh = mk_transfer(&acc[0].id, &acc[1].id, 2, 0);
    fresh.timestamp_us = t.timestamp_us;
    req.transfers = &fresh;
    assert_int_equal(store_batch_committed(st, &req, 1), 0);
    ledger_transfer_result failed = LEDGER_TRANSFER_EXCEEDS_CREDITS;
    req.transfer_results = &failed;
    assert_int_equal(store_batch_committed(st, &req, 1), 1); /* nothing was written */

    id128 expired[4];
    assert_true(store_expired_pending(st, tl_wall_us(), expired, 4) >= 0);
    store_free(st);
}

/* ---- A commit whose wait for the synchronous standbys never ends.
 *
 * synchronous_standby_names names a standby that does not exist, so a
 * COMMIT waits forever, as it does when a primary has lost its standbys
 * or its network went silent. Checked: (1) the abandon hook ends the
 * wait as STORE_AMBIGUOUS instead of hanging; (2) once the server cuts
 * that wait short (the backend is terminated) the rows are visible
 * although no standby holds them, and store_batch_committed must not
 * call them committed; (3) once commits are confirmed again, it does. */

#define GHOST_STANDBY "meridian_itest_ghost"
#define ABANDON_AFTER_MS 300
#define GHOST_WAIT_MS 10000 /* bound on the harness's own waits */

/* Does a commit wait for a standby now? One commit of a WAL record on a
 * connection of its own, watched for PROBE_MS: 1 it waits (it is then
 * terminated), 0 it committed, -1 error. Whether COMMIT waits is decided
 * by a flag the checkpointer sets when it has re-read the configuration,
 * later than new sessions see the setting, so this is what to wait for. */
#define PROBE_MS 1000
static int probe_commit_waits(void)
{
    char dsn[512];
    snprintf(dsn, sizeof dsn, "%s application_name=" GHOST_STANDBY "_probe", g_dsn);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK ||
        !PQsendQuery(c, "BEGIN; SELECT pg_logical_emit_message(true, 'itest', 'probe'); COMMIT")) {
        PQfinish(c);
        return -1;
    }
    for (int64_t end = tl_now_ms() + PROBE_MS; tl_now_ms() < end; tl_sleep_ms(10))
        if (!PQconsumeInput(c) || !PQisBusy(c)) break;
    int waits = PQisBusy(c) ? 1 : 0;
    if (waits) {
        int64_t n = 0;
        if (tl_pg_i64(g_pg, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE application_name = '" GHOST_STANDBY "_probe'", &n) != 0 || n != 1)
            waits = -1;
    }
    for (PGresult *r; (r = PQgetResult(c)) != NULL;) PQclear(r);
    PQfinish(c);
    return waits;
}

/* Set synchronous_standby_names for the whole instance ("" resets it)
 * and wait until commits behave accordingly. Returns 0 or -1. */
static int set_sync_names(const char *value)
{
    char sql[160];
    if (value[0] != '\0')
        snprintf(sql, sizeof sql, "ALTER SYSTEM SET synchronous_standby_names = '%s'", value);
    else
        snprintf(sql, sizeof sql, "ALTER SYSTEM RESET synchronous_standby_names");
    PGresult *r = PQexec(g_pg, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    r = PQexec(g_pg, "SELECT pg_reload_conf()");
    ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
    if (!ok) return -1;
    int want = value[0] != '\0' ? 1 : 0;
    for (int64_t end = tl_now_ms() + GHOST_WAIT_MS; tl_now_ms() < end; tl_sleep_ms(50))
        if (probe_commit_waits() == want) return 0;
    return -1;
}

static int reset_sync_names(void **state)
{
    (void)state;
    return set_sync_names("");
}

typedef struct abandon_probe {
    int64_t after_ms; /* tl_now_ms() past which the hook says give up */
    int calls;
} abandon_probe;

static bool abandon_after(void *arg)
{
    abandon_probe *p = arg;
    p->calls++;
    return tl_now_ms() >= p->after_ms;
}

static void test_unconfirmed_commit_is_abandoned_and_not_settled(void **state)
{
    (void)state;
    ledger_account acc[2] = {mk_account(0), mk_account(0)};
    create_accounts(acc, 2);
    /* Its own application_name: the batcher's expiry thread commits
     * (and waits) meanwhile too. */
    char dsn[512], err[256] = "";
    snprintf(dsn, sizeof dsn, "%s application_name=" GHOST_STANDBY "_client", g_dsn);
    store *st = store_connect(dsn, err, sizeof err);
    assert_non_null(st);
    ledger_batch *lb = ledger_batch_create(16);
    assert_non_null(lb);

    assert_int_equal(set_sync_names(GHOST_STANDBY), 0);
    abandon_probe probe = {.after_ms = tl_now_ms() + ABANDON_AFTER_MS};
    store_set_abandon(st, abandon_after, &probe);
    ledger_transfer t = mk_transfer(&acc[0].id, &acc[1].id, 7, 0);
    ledger_transfer_result res = LEDGER_TRANSFER_OK;
    store_request req = {.kind = STORE_REQ_TRANSFERS, .count = 1, .transfers = &t,
                         .transfer_results = &res};
    /* (1) COMMIT was sent and never answered: ambiguous, not a hang. */
    assert_int_equal(store_commit_batch(st, lb, &req, 1, tl_wall_us()), STORE_AMBIGUOUS);
    assert_true(probe.calls >= 1);
    assert_int_equal(res, LEDGER_TRANSFER_OK); /* what the engine applied */

    /* (2) The server is still waiting for the standby; cut that short,
     * as a restart or an operator would: the commit becomes visible. */
    char pred[] = "datname = current_database() AND wait_event = 'SyncRep' AND "
                  "application_name = '" GHOST_STANDBY "_client'";
    int64_t waiting = 0;
    for (int64_t end = tl_now_ms() + GHOST_WAIT_MS; waiting == 0 && tl_now_ms() < end;
         tl_sleep_ms(20))
        waiting = q_i64("SELECT count(*) FROM pg_stat_activity WHERE %s", pred);
    assert_int_equal(waiting, 1);
    assert_int_equal(q_i64("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE %s", pred),
                     1);
    int64_t seen = 0;
    for (int64_t end = tl_now_ms() + GHOST_WAIT_MS; seen == 0 && tl_now_ms() < end;
         tl_sleep_ms(20))
        seen = transfer_count(&t.id);
    assert_int_equal(seen, 1);
    assert_int_equal(store_reconnect(st), 0);
    assert_int_equal(store_batch_committed(st, &req, 1), -1); /* not known durable */

    /* (3) Commits are confirmed again (no standby required): settled. */
    assert_int_equal(set_sync_names(""), 0);
    assert_int_equal(store_batch_committed(st, &req, 1), 1);
    expect_balances(&acc[0].id, 0, 7, 0, 0);
    ledger_batch_free(lb);
    store_free(st);
}

static void test_stop_refuses_new_requests(void **state)
{
    (void)state;
    batcher *b = start_batcher(1, 50);
    assert_non_null(b);
    assert_int_equal(batcher_db_up(b), 1);
    assert_int_equal(batcher_queue_depth(b), 0);
    batcher_stop(b); /* joins the expiry thread and the worker */
}

int main(void)
{
    tl_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_is_validated),
        cmocka_unit_test(test_accounts_and_transfers),
        cmocka_unit_test(test_concurrent_random_transfers),
        cmocka_unit_test(test_duplicate_id_concurrently),
        cmocka_unit_test(test_linked_chain_failure_writes_nothing),
        cmocka_unit_test(test_pending_post_and_void_across_commits),
        cmocka_unit_test(test_pending_expires),
        cmocka_unit_test(test_expiry_job_claim),
        cmocka_unit_test(test_terminated_connections_reconnect),
        cmocka_unit_test(test_large_request),
        cmocka_unit_test(test_batch_committed_settles),
        cmocka_unit_test_teardown(test_unconfirmed_commit_is_abandoned_and_not_settled,
                                  reset_sync_names),
        cmocka_unit_test(test_stop_refuses_new_requests),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    tl_shutdown();
    return rc;
}
