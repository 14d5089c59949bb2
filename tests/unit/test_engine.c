/*
 * test_engine.c — unit tests for the ledger rules (ledger/engine.c).
 *
 * The engine is pure, so these tests drive it exactly as the store
 * does: add the loaded rows to a batch, apply events, read the outputs.
 * Every result code the engine can produce is reached at least once;
 * balances and outputs are compared to exact expected values; a seeded
 * random workload checks the money invariants against an independent
 * model of the balances.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/limits.h"
#include "ledger/ledger.h"

/* ------------------------------------------------------------------ */
/* Helpers.                                                            */

#define USD 840
#define EUR 978
#define NOW 1700000000000000LL

/* Stored accounts of the fixture (id = the number). */
enum {
    A1 = 1,    /* customer 1, USD */
    A2 = 2,    /* customer 1, USD */
    LIM = 3,   /* customer 1, USD, debits_must_not_exceed_credits, credits_posted 1000 */
    EU1 = 4,   /* customer 1, EUR */
    B1 = 5,    /* customer 2, USD */
    CLOSED = 6, /* customer 1, USD, closed */
    HIST = 7,  /* customer 1, USD, history */
    DLIM = 8,  /* customer 1, USD, credits_must_not_exceed_debits, debits_posted 500 */
    B2 = 9,    /* customer 2, USD */
    UNKNOWN = 99,
};

static id128 idn(uint64_t n)
{
    id128 id = {{0}};
    for (int i = 0; i < 8; i++)
        id.bytes[15 - i] = (uint8_t)(n >> (8 * i));
    return id;
}

static ledger_account acct(uint64_t id, int64_t customer, int32_t ledger, uint32_t flags)
{
    ledger_account a;
    memset(&a, 0, sizeof a);
    a.id = idn(id);
    a.customer_id = customer;
    a.ledger = ledger;
    a.code = 10;
    a.flags = flags;
    return a;
}

static ledger_transfer xfer(uint64_t id, uint64_t dr, uint64_t cr, int64_t amount)
{
    ledger_transfer t;
    memset(&t, 0, sizeof t);
    t.id = idn(id);
    t.debit_account_id = idn(dr);
    t.credit_account_id = idn(cr);
    t.amount = amount;
    t.ledger = USD;
    t.code = 1;
    return t;
}

static ledger_transfer pend(uint64_t id, uint64_t dr, uint64_t cr, int64_t amount,
                            uint32_t timeout_s)
{
    ledger_transfer t = xfer(id, dr, cr, amount);
    t.flags = LEDGER_TF_PENDING;
    t.timeout_s = timeout_s;
    return t;
}

/* A post (or void) that omits everything it may omit. */
static ledger_transfer post(uint64_t id, uint64_t pending_id, int64_t amount)
{
    ledger_transfer t;
    memset(&t, 0, sizeof t);
    t.id = idn(id);
    t.pending_id = idn(pending_id);
    t.amount = amount;
    t.flags = LEDGER_TF_POST_PENDING;
    return t;
}

static ledger_transfer voidp(uint64_t id, uint64_t pending_id)
{
    ledger_transfer t = post(id, pending_id, 0);
    t.flags = LEDGER_TF_VOID_PENDING;
    return t;
}

/* Compare result codes by name so failures print both names. */
#define assert_tr(got, want)                                                   \
    assert_string_equal(ledger_transfer_result_name(got),                      \
                        ledger_transfer_result_name(want))
#define assert_ar(got, want)                                                   \
    assert_string_equal(ledger_account_result_name(got),                       \
                        ledger_account_result_name(want))

static ledger_transfer_result apply1(ledger_batch *b, ledger_transfer *t, int64_t now_us)
{
    ledger_transfer_result r = LEDGER_TRANSFER_RESULT_COUNT;
    size_t ok = ledger_batch_apply_transfers(b, t, 1, now_us, &r);
    assert_int_equal(ok, r == LEDGER_TRANSFER_OK ? 1 : 0);
    return r;
}

/* The account as it is now, if the batch changed it, else NULL. */
static const ledger_account *changed(const ledger_batch *b, uint64_t id)
{
    const ledger_account *const *list;
    size_t n = ledger_batch_changed_accounts(b, &list);
    id128 want = idn(id);
    for (size_t i = 0; i < n; i++)
        if (id128_equal(&list[i]->id, &want))
            return list[i];
    return NULL;
}

static void check_balances(const ledger_batch *b, uint64_t id, int64_t dp, int64_t dpo,
                           int64_t cp, int64_t cpo, int line)
{
    const ledger_account *a = changed(b, id);
    if (a == NULL) {
        print_error("account %llu not among changed accounts (line %d)\n",
                    (unsigned long long)id, line);
        fail();
    }
    if (a->debits_pending != dp || a->debits_posted != dpo || a->credits_pending != cp ||
        a->credits_posted != cpo) {
        print_error("account %llu: got dp=%lld dpo=%lld cp=%lld cpo=%lld, want dp=%lld "
                    "dpo=%lld cp=%lld cpo=%lld (line %d)\n",
                    (unsigned long long)id, (long long)a->debits_pending,
                    (long long)a->debits_posted, (long long)a->credits_pending,
                    (long long)a->credits_posted, (long long)dp, (long long)dpo, (long long)cp,
                    (long long)cpo, line);
        fail();
    }
}
#define assert_balances(b, id, dp, dpo, cp, cpo)                               \
    check_balances(b, id, dp, dpo, cp, cpo, __LINE__)

static size_t n_changed(const ledger_batch *b)
{
    const ledger_account *const *list;
    return ledger_batch_changed_accounts(b, &list);
}

static size_t n_new_transfers(const ledger_batch *b)
{
    const ledger_transfer *const *list;
    return ledger_batch_new_transfers(b, &list);
}

static size_t n_pending_changes(const ledger_batch *b)
{
    const ledger_pending_change *list;
    return ledger_batch_pending_changes(b, &list);
}

static size_t n_balance_rows(const ledger_batch *b)
{
    const ledger_balance_row *list;
    return ledger_batch_balance_rows(b, &list);
}

static void assert_nothing_changed(const ledger_batch *b)
{
    assert_int_equal(n_changed(b), 0);
    assert_int_equal(n_new_transfers(b), 0);
    assert_int_equal(n_pending_changes(b), 0);
    assert_int_equal(n_balance_rows(b), 0);
}

/* Load the fixture's stored rows, as the store would. */
static void load_fixture(ledger_batch *b)
{
    assert_int_equal(ledger_batch_add_ledger(b, USD), 0);
    assert_int_equal(ledger_batch_add_ledger(b, EUR), 0);
    ledger_account rows[] = {
        acct(A1, 1, USD, 0),
        acct(A2, 1, USD, 0),
        acct(LIM, 1, USD, LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS),
        acct(EU1, 1, EUR, 0),
        acct(B1, 2, USD, 0),
        acct(CLOSED, 1, USD, LEDGER_AF_CLOSED),
        acct(HIST, 1, USD, LEDGER_AF_HISTORY),
        acct(DLIM, 1, USD, LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS),
        acct(B2, 2, USD, 0),
    };
    rows[2].credits_posted = 1000;
    rows[7].debits_posted = 500;
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(ledger_batch_add_account(b, &rows[i]), 0);
}

static int setup(void **state)
{
    ledger_batch *b = ledger_batch_create(64);
    if (b == NULL)
        return -1;
    ledger_batch_reset(b);
    load_fixture(b);
    *state = b;
    return 0;
}

static int teardown(void **state)
{
    ledger_batch_free(*state);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Names and stateless validation.                                     */

static void test_result_names(void **state)
{
    (void)state;
    assert_string_equal(ledger_transfer_result_name(LEDGER_TRANSFER_OK), "ok");
    assert_string_equal(ledger_transfer_result_name(LEDGER_TRANSFER_EXCEEDS_CREDITS),
                        "exceeds_credits");
    assert_string_equal(ledger_transfer_result_name(LEDGER_TRANSFER_EXCEEDS_DEBITS),
                        "exceeds_debits");
    assert_string_equal(
        ledger_transfer_result_name(LEDGER_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS),
        "transfer_must_have_the_same_ledger_as_accounts");
    assert_string_equal(
        ledger_transfer_result_name(LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID),
        "pending_transfer_has_different_debit_account_id");
    assert_string_equal(ledger_transfer_result_name(LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN),
                        "linked_event_chain_open");
    assert_string_equal(ledger_account_result_name(LEDGER_ACCOUNT_OK), "ok");
    assert_string_equal(ledger_account_result_name(LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND),
                        "customer_not_found");
    assert_string_equal(ledger_account_result_name(LEDGER_ACCOUNT_LEDGER_NOT_FOUND),
                        "ledger_not_found");

    /* Every name is snake_case and unique. */
    for (int i = 0; i < LEDGER_TRANSFER_RESULT_COUNT; i++) {
        const char *n = ledger_transfer_result_name((ledger_transfer_result)i);
        assert_non_null(n);
        assert_true(strlen(n) > 1);
        for (const char *p = n; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (int j = 0; j < i; j++)
            assert_true(strcmp(n, ledger_transfer_result_name((ledger_transfer_result)j)) != 0);
    }
    for (int i = 0; i < LEDGER_ACCOUNT_RESULT_COUNT; i++) {
        const char *n = ledger_account_result_name((ledger_account_result)i);
        assert_non_null(n);
        for (const char *p = n; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
        for (int j = 0; j < i; j++)
            assert_true(strcmp(n, ledger_account_result_name((ledger_account_result)j)) != 0);
    }
}

static void test_transfer_validate(void **state)
{
    (void)state;
    ledger_transfer t;

    t = xfer(10, A1, A2, 5);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_OK);

    t = xfer(0, A1, A2, 5);
    t.flags = 0xff; /* also broken: the id comes first */
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_ID_MUST_NOT_BE_ZERO);

    t = xfer(10, A1, A2, 5);
    t.flags = LEDGER_TF_PENDING | LEDGER_TF_POST_PENDING;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    t.flags = LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    t.flags = LEDGER_TF_PENDING | LEDGER_TF_VOID_PENDING | LEDGER_TF_LINKED;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_FLAGS_ARE_MUTUALLY_EXCLUSIVE);

    t = xfer(10, A1, A2, 5);
    t.flags = 1u << 4;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_FLAGS_UNKNOWN);
    t.flags = LEDGER_TF_LINKED | (1u << 31);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_FLAGS_UNKNOWN);

    t = xfer(10, 0, A2, 5);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_DEBIT_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    t = xfer(10, A1, 0, 5);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_CREDIT_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    t = pend(10, A1, A1, 5, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT);

    t = xfer(10, A1, A2, 5);
    t.pending_id = idn(77);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_PENDING_ID_MUST_BE_ZERO);
    t = pend(10, A1, A2, 5, 0);
    t.pending_id = idn(77);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_PENDING_ID_MUST_BE_ZERO);
    t = post(10, 0, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO);
    t = voidp(10, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO);
    t = post(10, 10, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_PENDING_ID_MUST_BE_DIFFERENT);
    /* Post/void may name both accounts, but not the same one twice. */
    t = post(10, 11, 0);
    t.debit_account_id = idn(A1);
    t.credit_account_id = idn(A1);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT);

    t = xfer(10, A1, A2, 5);
    t.timeout_s = 1;
    assert_tr(ledger_transfer_validate(&t),
              LEDGER_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    t = post(10, 11, 0);
    t.timeout_s = 1;
    assert_tr(ledger_transfer_validate(&t),
              LEDGER_TRANSFER_TIMEOUT_RESERVED_FOR_PENDING_TRANSFER);
    t = pend(10, A1, A2, 5, LIMIT_TIMEOUT_S_MAX + 1);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_TIMEOUT_TOO_LARGE);
    t = pend(10, A1, A2, 5, LIMIT_TIMEOUT_S_MAX);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_OK);

    t = xfer(10, A1, A2, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE);
    t = pend(10, A1, A2, 0, 0);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE);
    t = post(10, 11, 0); /* 0 = the full amount */
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_OK);
    t = voidp(10, 11);
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_OK);

    t = xfer(10, A1, A2, 5);
    t.ledger = 0;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO);
    t = pend(10, A1, A2, 5, 0);
    t.ledger = 0;
    assert_tr(ledger_transfer_validate(&t), LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO);
}

static void test_account_validate(void **state)
{
    (void)state;
    ledger_account a = acct(50, 1, USD, LEDGER_AF_HISTORY);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_OK);
    a = acct(0, 1, USD, 0xff);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    a = acct(50, 1, USD,
             LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS | LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    a = acct(50, 1, USD, 1u << 5);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_FLAGS_UNKNOWN);
    a = acct(50, 1, 0, 0);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO);
    a = acct(50, 0, USD, 0);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND);
    a = acct(50, -3, USD, 0);
    assert_ar(ledger_account_validate(&a), LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND);
}

/* Stateless failures through apply: each gets its own code and the
 * batch is untouched. */
static void test_apply_stateless_failures(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer ev[6] = {
        xfer(0, A1, A2, 1),
        xfer(11, A1, A1, 1),
        xfer(12, A1, A2, 0),
        pend(13, A1, A2, 1, LIMIT_TIMEOUT_S_MAX + 1),
        post(14, 0, 0),
        xfer(15, A1, A2, 1),
    };
    ev[5].ledger = 0;
    ledger_transfer_result r[6];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 6, NOW, r), 0);
    assert_tr(r[0], LEDGER_TRANSFER_ID_MUST_NOT_BE_ZERO);
    assert_tr(r[1], LEDGER_TRANSFER_ACCOUNTS_MUST_BE_DIFFERENT);
    assert_tr(r[2], LEDGER_TRANSFER_AMOUNT_MUST_BE_POSITIVE);
    assert_tr(r[3], LEDGER_TRANSFER_TIMEOUT_TOO_LARGE);
    assert_tr(r[4], LEDGER_TRANSFER_PENDING_ID_MUST_NOT_BE_ZERO);
    assert_tr(r[5], LEDGER_TRANSFER_LEDGER_MUST_NOT_BE_ZERO);
    for (int i = 0; i < 6; i++)
        assert_int_equal(ev[i].timestamp_us, 0);
    assert_nothing_changed(b);
}

/* ------------------------------------------------------------------ */
/* Plain transfers.                                                    */

static void test_plain_transfer(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer t = xfer(100, A1, A2, 1250);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OK);
    assert_int_equal(t.timestamp_us, NOW);
    assert_balances(b, A1, 0, 1250, 0, 0);
    assert_balances(b, A2, 0, 0, 0, 1250);
    assert_int_equal(n_changed(b), 2);

    const ledger_transfer *const *nt;
    assert_int_equal(ledger_batch_new_transfers(b, &nt), 1);
    assert_ptr_equal(nt[0], &t);
    assert_int_equal(n_pending_changes(b), 0);
    assert_int_equal(n_balance_rows(b), 0); /* no history accounts */

    /* A second one accumulates. */
    ledger_transfer t2 = xfer(101, A2, A1, 250);
    assert_tr(apply1(b, &t2, NOW), LEDGER_TRANSFER_OK);
    assert_int_equal(t2.timestamp_us, NOW + 1);
    assert_balances(b, A1, 0, 1250, 0, 250);
    assert_balances(b, A2, 0, 250, 0, 1250);
    assert_int_equal(n_new_transfers(b), 2);
}

static void test_account_and_ledger_checks(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer t;
    t = xfer(200, UNKNOWN, A2, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);
    t = xfer(201, A1, UNKNOWN, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    t = xfer(202, A1, EU1, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_ACCOUNTS_MUST_HAVE_THE_SAME_LEDGER);
    t = xfer(203, A1, A2, 1);
    t.ledger = EUR;
    assert_tr(apply1(b, &t, NOW),
              LEDGER_TRANSFER_TRANSFER_MUST_HAVE_THE_SAME_LEDGER_AS_ACCOUNTS);
    t = xfer(204, CLOSED, A2, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED);
    t = xfer(205, A1, CLOSED, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED);
    t = pend(206, CLOSED, A1, 1, 0);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED);
    assert_nothing_changed(b);
}

static void test_customer_scope(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer t;

    /* Customer 1 cannot see customer 2's accounts: reported as missing. */
    t = xfer(300, B1, A1, 1);
    t.customer_id = 1;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);
    t = xfer(301, A1, B1, 1);
    t.customer_id = 1;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    assert_nothing_changed(b);

    /* Own accounts are fine. */
    t = xfer(302, B1, B2, 7);
    t.customer_id = 2;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, B1, 0, 7, 0, 0);

    /* The admin scope may cross customers. */
    ledger_transfer p = pend(303, A1, B1, 40, 0);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 40, 0, 0, 0);

    /* Customer 1 cannot post it (B1 is not theirs), nor can customer 3;
     * the admin can. */
    ledger_transfer q = post(304, 303, 0);
    q.customer_id = 1;
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    q.customer_id = 3;
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    /* Nor learn that a plain transfer of someone else exists. */
    ledger_transfer q2 = post(305, 302, 0);
    q2.customer_id = 1;
    assert_tr(apply1(b, &q2, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    q2.customer_id = 2;
    assert_tr(apply1(b, &q2, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);

    /* Idempotency never confirms another customer's transfer. */
    ledger_transfer dup = xfer(302, B1, B2, 7);
    dup.customer_id = 1;
    assert_tr(apply1(b, &dup, NOW), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    dup.customer_id = 2;
    assert_tr(apply1(b, &dup, NOW), LEDGER_TRANSFER_EXISTS);

    q.customer_id = 0;
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 40, 0, 0);
    assert_balances(b, B1, 0, 7, 0, 40);
}

/* ------------------------------------------------------------------ */
/* Limits and overflow.                                                */

static void test_limit_debits_must_not_exceed_credits(void **state)
{
    ledger_batch *b = *state;
    /* LIM has credits_posted 1000. Pending debits count. */
    ledger_transfer p = pend(400, LIM, A1, 600, 0);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer t = xfer(401, LIM, A1, 401);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXCEEDS_CREDITS);
    ledger_transfer t2 = pend(402, LIM, A1, 401, 0);
    assert_tr(apply1(b, &t2, NOW), LEDGER_TRANSFER_EXCEEDS_CREDITS);
    assert_balances(b, LIM, 600, 0, 0, 1000);

    /* Exactly up to the limit is fine. */
    ledger_transfer t3 = xfer(403, LIM, A1, 400);
    assert_tr(apply1(b, &t3, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, LIM, 600, 400, 0, 1000);
    ledger_transfer t4 = xfer(404, LIM, A1, 1);
    assert_tr(apply1(b, &t4, NOW), LEDGER_TRANSFER_EXCEEDS_CREDITS);

    /* Pending credits do not count as available. */
    ledger_transfer in = pend(405, A2, LIM, 50, 0);
    assert_tr(apply1(b, &in, NOW), LEDGER_TRANSFER_OK);
    assert_tr(apply1(b, &t4, NOW), LEDGER_TRANSFER_EXCEEDS_CREDITS);

    /* Voiding the 600 reservation frees room. */
    ledger_transfer v = voidp(406, 400);
    assert_tr(apply1(b, &v, NOW), LEDGER_TRANSFER_OK);
    assert_tr(apply1(b, &t4, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, LIM, 0, 401, 50, 1000);
}

static void test_limit_credits_must_not_exceed_debits(void **state)
{
    ledger_batch *b = *state;
    /* DLIM has debits_posted 500. */
    ledger_transfer p = pend(410, A1, DLIM, 300, 0);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer t = xfer(411, A1, DLIM, 201);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXCEEDS_DEBITS);
    ledger_transfer t2 = xfer(412, A1, DLIM, 200);
    assert_tr(apply1(b, &t2, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, DLIM, 0, 500, 300, 200);
    ledger_transfer t3 = pend(413, A1, DLIM, 1, 0);
    assert_tr(apply1(b, &t3, NOW), LEDGER_TRANSFER_EXCEEDS_DEBITS);
}

static void test_overflow(void **state)
{
    (void)state;
    ledger_batch *b = ledger_batch_create(32);
    assert_non_null(b);
    assert_int_equal(ledger_batch_add_ledger(b, USD), 0);
    ledger_account big_dpo = acct(20, 1, USD, 0);
    big_dpo.debits_posted = INT64_MAX - 10;
    ledger_account big_cpo = acct(21, 1, USD, 0);
    big_cpo.credits_posted = INT64_MAX - 10;
    ledger_account big_dp = acct(22, 1, USD, 0);
    big_dp.debits_pending = INT64_MAX - 10;
    ledger_account big_cp = acct(23, 1, USD, 0);
    big_cp.credits_pending = INT64_MAX - 10;
    ledger_account sum_d = acct(24, 1, USD, 0);
    sum_d.debits_pending = INT64_MAX - 100;
    sum_d.debits_posted = 100;
    ledger_account sum_c = acct(25, 1, USD, 0);
    sum_c.credits_pending = INT64_MAX - 100;
    sum_c.credits_posted = 100;
    ledger_account plain = acct(26, 1, USD, 0);
    ledger_account rows[] = {big_dpo, big_cpo, big_dp, big_cp, sum_d, sum_c, plain};
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        assert_int_equal(ledger_batch_add_account(b, &rows[i]), 0);

    ledger_transfer t;
    t = xfer(500, 20, 26, 11);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    t = xfer(501, 26, 21, 11);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED);
    t = pend(502, 22, 26, 11, 0);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS_PENDING);
    t = pend(503, 26, 23, 11, 0);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_CREDITS_PENDING);
    t = xfer(504, 24, 26, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS);
    t = xfer(505, 26, 25, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_CREDITS);
    t = pend(506, 24, 26, 1, 0); /* pending fits, the sum does not */
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS);
    assert_nothing_changed(b);

    /* Right up to INT64_MAX is fine and never wraps. */
    ledger_transfer ok = xfer(507, 20, 26, 10);
    assert_tr(apply1(b, &ok, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 20, 0, INT64_MAX, 0, 0);
    ledger_transfer more = xfer(508, 20, 26, 1);
    assert_tr(apply1(b, &more, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    ledger_transfer okc = xfer(509, 26, 21, 10);
    assert_tr(apply1(b, &okc, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 21, 0, 0, 0, INT64_MAX);
    assert_balances(b, 26, 0, 10, 0, 10);
    ledger_batch_free(b);
}

/* Stored balances that already sit at the edge (e.g. written by an
 * older version): a post must still refuse to wrap. */
static void test_post_overflow(void **state)
{
    (void)state;
    ledger_batch *b = ledger_batch_create(16);
    assert_non_null(b);
    ledger_account d = acct(30, 1, USD, 0);
    d.debits_pending = 10;
    d.debits_posted = INT64_MAX - 5;
    ledger_account c = acct(31, 1, USD, 0);
    c.credits_pending = 10;
    ledger_account d2 = acct(32, 1, USD, 0);
    d2.debits_pending = 10;
    ledger_account c2 = acct(33, 1, USD, 0);
    c2.credits_pending = 10;
    c2.credits_posted = INT64_MAX - 5;
    assert_int_equal(ledger_batch_add_account(b, &d), 0);
    assert_int_equal(ledger_batch_add_account(b, &c), 0);
    assert_int_equal(ledger_batch_add_account(b, &d2), 0);
    assert_int_equal(ledger_batch_add_account(b, &c2), 0);
    ledger_transfer p1 = pend(600, 30, 31, 10, 0);
    ledger_transfer p2 = pend(601, 32, 33, 10, 0);
    ledger_pending_state st = {.status = LEDGER_PENDING_PENDING};
    assert_int_equal(ledger_batch_add_pending(b, &p1, &st), 0);
    assert_int_equal(ledger_batch_add_pending(b, &p2, &st), 0);

    ledger_transfer q = post(602, 600, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OVERFLOWS_DEBITS_POSTED);
    q = post(603, 601, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OVERFLOWS_CREDITS_POSTED);
    /* A partial post that fits is fine. */
    q = post(604, 600, 5);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 30, 0, INT64_MAX, 0, 0);
    assert_balances(b, 31, 0, 0, 0, 5);
    ledger_batch_free(b);
}

/* ------------------------------------------------------------------ */
/* Two-phase transfers.                                                */

static void test_pending_then_post_full(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer p = pend(700, A1, A2, 300, 60);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 300, 0, 0, 0);
    assert_balances(b, A2, 0, 0, 300, 0);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_true(id128_equal(&pc[0].pending_id, &p.id));
    assert_true(pc[0].is_new);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_PENDING);
    assert_int_equal(pc[0].state.expires_at_us, NOW + 60 * 1000000LL);
    assert_int_equal(pc[0].state.amount_posted, 0);

    ledger_transfer q = post(701, 700, 0);
    assert_tr(apply1(b, &q, NOW + 10), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 300, 0, 0);
    assert_balances(b, A2, 0, 0, 0, 300);
    /* Resolved fields written back. */
    assert_true(id128_equal(&q.debit_account_id, &p.debit_account_id));
    assert_true(id128_equal(&q.credit_account_id, &p.credit_account_id));
    assert_int_equal(q.amount, 300);
    assert_int_equal(q.ledger, USD);
    assert_int_equal(q.code, 1);
    assert_int_equal(q.timestamp_us, NOW + 10);
    /* Still one record for this pending: inserted with its final state. */
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_true(pc[0].is_new);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_POSTED);
    assert_int_equal(pc[0].state.amount_posted, 300);
    assert_int_equal(pc[0].state.expires_at_us, NOW + 60 * 1000000LL);
    assert_int_equal(n_new_transfers(b), 2);

    /* Posting again: already posted; voiding it: already posted too. */
    ledger_transfer q2 = post(702, 700, 0);
    assert_tr(apply1(b, &q2, NOW + 11), LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    ledger_transfer v = voidp(703, 700);
    assert_tr(apply1(b, &v, NOW + 11), LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_POSTED);
    /* Retrying the post itself is idempotent. */
    ledger_transfer again = post(701, 700, 0);
    assert_tr(apply1(b, &again, NOW + 12), LEDGER_TRANSFER_EXISTS);
    again = post(701, 700, 300);
    assert_tr(apply1(b, &again, NOW + 12), LEDGER_TRANSFER_EXISTS);
    again = post(701, 700, 299);
    assert_tr(apply1(b, &again, NOW + 12), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    assert_balances(b, A1, 0, 300, 0, 0);
}

static void test_partial_post(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer p = pend(710, A1, A2, 1000, 0);
    ledger_transfer q = post(711, 710, 400);
    q.debit_account_id = idn(A1); /* given and matching */
    q.code = 1;
    ledger_transfer ev[2] = {p, q};
    ledger_transfer_result r[2];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 2, NOW, r), 2);
    assert_tr(r[0], LEDGER_TRANSFER_OK);
    assert_tr(r[1], LEDGER_TRANSFER_OK);
    /* 400 posted, the other 600 released. */
    assert_balances(b, A1, 0, 400, 0, 0);
    assert_balances(b, A2, 0, 0, 0, 400);
    assert_int_equal(ev[1].amount, 400);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_POSTED);
    assert_int_equal(pc[0].state.amount_posted, 400);
    assert_int_equal(pc[0].state.expires_at_us, 0);
    /* Stored LIM (credits 1000) and DLIM (debits 500); A1/A2 net zero. */
    assert_int_equal(ledger_batch_net_sum(b, USD), 500 - 1000);
}

static void test_void(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer p = pend(720, A1, A2, 500, 0);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer v = voidp(721, 720);
    v.amount = 499;
    assert_tr(apply1(b, &v, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_AMOUNT);
    v.amount = 500;
    assert_tr(apply1(b, &v, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 0, 0, 0);
    assert_balances(b, A2, 0, 0, 0, 0);
    assert_int_equal(v.amount, 500);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_VOIDED);
    assert_int_equal(pc[0].state.amount_posted, 0);

    ledger_transfer q = post(722, 720, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);
    ledger_transfer v2 = voidp(723, 720);
    assert_tr(apply1(b, &v2, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_ALREADY_VOIDED);

    /* void with amount 0 */
    ledger_transfer p2 = pend(724, A2, A1, 70, 0);
    assert_tr(apply1(b, &p2, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer v3 = voidp(725, 724);
    assert_tr(apply1(b, &v3, NOW), LEDGER_TRANSFER_OK);
    assert_int_equal(v3.amount, 70);
    assert_balances(b, A1, 0, 0, 0, 0);
}

static void test_post_mismatches(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer p = pend(730, A1, A2, 100, 0);
    p.code = 7;
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);

    ledger_transfer q = post(731, 730, 0);
    q.debit_account_id = idn(A2);
    assert_tr(apply1(b, &q, NOW),
              LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_DEBIT_ACCOUNT_ID);
    q = post(731, 730, 0);
    q.credit_account_id = idn(A1);
    assert_tr(apply1(b, &q, NOW),
              LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CREDIT_ACCOUNT_ID);
    q = post(731, 730, 0);
    q.ledger = EUR;
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_LEDGER);
    q = post(731, 730, 0);
    q.code = 8;
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_HAS_DIFFERENT_CODE);
    q = post(731, 730, 101);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_EXCEEDS_PENDING_TRANSFER_AMOUNT);
    q = post(731, 9999, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);

    /* A plain transfer is not a pending one. */
    ledger_transfer plain = xfer(732, A1, A2, 5);
    assert_tr(apply1(b, &plain, NOW), LEDGER_TRANSFER_OK);
    q = post(733, 732, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    ledger_transfer stored_plain = xfer(734, A1, A2, 5);
    assert_int_equal(ledger_batch_add_transfer(b, &stored_plain), 0);
    q = voidp(735, 734);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);

    /* Nothing of the failures applied. */
    assert_balances(b, A1, 100, 5, 0, 0);
    q = post(736, 730, 0);
    q.code = 7;
    q.ledger = USD;
    q.debit_account_id = idn(A1);
    q.credit_account_id = idn(A2);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 105, 0, 0);
}

static void test_expired_post(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer p = pend(740, A1, A2, 100, 2);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer q = post(741, 740, 0);
    assert_tr(apply1(b, &q, NOW + 2000000), LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED);
    assert_int_equal(q.timestamp_us, 0);
    ledger_transfer v = voidp(742, 740);
    assert_tr(apply1(b, &v, NOW + 5000000), LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED);
    /* One microsecond before the deadline still works. */
    assert_tr(apply1(b, &q, NOW + 1999999), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 100, 0, 0);

    /* A stored pending already marked expired. */
    ledger_transfer sp = pend(743, A1, A2, 10, 1);
    ledger_pending_state st = {.status = LEDGER_PENDING_EXPIRED, .expires_at_us = NOW - 1};
    assert_int_equal(ledger_batch_add_pending(b, &sp, &st), 0);
    ledger_transfer q2 = post(744, 743, 0);
    assert_tr(apply1(b, &q2, NOW + 3000000), LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED);
}

static void test_stored_pending_and_closed(void **state)
{
    ledger_batch *b = *state;
    /* The store loaded a pending CLOSED -> A1 of 30 with its balances. */
    ledger_account closed2 = acct(40, 1, USD, LEDGER_AF_CLOSED);
    closed2.debits_pending = 30;
    ledger_account open2 = acct(41, 1, USD, 0);
    open2.credits_pending = 60;
    assert_int_equal(ledger_batch_add_account(b, &closed2), 0);
    assert_int_equal(ledger_batch_add_account(b, &open2), 0);
    ledger_transfer sp = pend(750, 40, 41, 30, 0);
    sp.timestamp_us = NOW - 100;
    ledger_transfer sp2 = pend(751, 40, 41, 30, 0);
    ledger_pending_state st = {.status = LEDGER_PENDING_PENDING};
    assert_int_equal(ledger_batch_add_pending(b, &sp, &st), 0);
    assert_int_equal(ledger_batch_add_pending(b, &sp2, &st), 0);
    /* Adding the same id twice keeps the first. */
    ledger_pending_state other = {.status = LEDGER_PENDING_POSTED};
    assert_int_equal(ledger_batch_add_pending(b, &sp, &other), 0);

    ledger_transfer q = post(752, 750, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_CLOSED);
    ledger_account closed3 = acct(42, 1, USD, LEDGER_AF_CLOSED);
    closed3.credits_pending = 8;
    assert_int_equal(ledger_batch_add_account(b, &closed3), 0);
    ledger_account src = acct(43, 1, USD, 0);
    src.debits_pending = 8;
    assert_int_equal(ledger_batch_add_account(b, &src), 0);
    ledger_transfer sp3 = pend(753, 43, 42, 8, 0);
    assert_int_equal(ledger_batch_add_pending(b, &sp3, &st), 0);
    ledger_transfer q3 = post(754, 753, 0);
    assert_tr(apply1(b, &q3, NOW), LEDGER_TRANSFER_CREDIT_ACCOUNT_CLOSED);

    /* A void only releases, so it is allowed on a closed account. */
    ledger_transfer v = voidp(755, 750);
    assert_tr(apply1(b, &v, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 40, 0, 0, 0, 0);
    assert_balances(b, 41, 0, 0, 30, 0);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_false(pc[0].is_new); /* an update of a stored row */
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_VOIDED);
    /* Idempotency also sees stored pendings (added with add_pending). */
    ledger_transfer dup = pend(751, 40, 41, 30, 0);
    assert_tr(apply1(b, &dup, NOW), LEDGER_TRANSFER_EXISTS);
}

/* ------------------------------------------------------------------ */
/* Linked chains.                                                      */

static void test_chain_failure_changes_nothing(void **state)
{
    ledger_batch *b = *state;
    /* An earlier call changed A1. */
    ledger_transfer first = xfer(800, A1, A2, 10);
    assert_tr(apply1(b, &first, NOW), LEDGER_TRANSFER_OK);

    ledger_transfer ev[5] = {
        xfer(801, A1, HIST, 5),
        pend(802, A2, A1, 7, 0),
        post(803, 802, 0),
        xfer(804, HIST, LIM, 3),
        xfer(805, LIM, A1, 5000), /* exceeds_credits */
    };
    for (int i = 0; i < 4; i++)
        ev[i].flags |= LEDGER_TF_LINKED;
    ledger_transfer_result r[5];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 5, NOW + 100, r), 0);
    assert_tr(r[0], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[1], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[2], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[3], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[4], LEDGER_TRANSFER_EXCEEDS_CREDITS);

    /* Exactly the state after `first`. */
    assert_int_equal(n_changed(b), 2);
    assert_balances(b, A1, 0, 10, 0, 0);
    assert_balances(b, A2, 0, 0, 0, 10);
    assert_null(changed(b, HIST));
    assert_null(changed(b, LIM));
    const ledger_transfer *const *nt;
    assert_int_equal(ledger_batch_new_transfers(b, &nt), 1);
    assert_ptr_equal(nt[0], &first);
    assert_int_equal(n_pending_changes(b), 0);
    assert_int_equal(n_balance_rows(b), 0);
    /* Fields written back into the events were restored. */
    for (int i = 0; i < 5; i++)
        assert_int_equal(ev[i].timestamp_us, 0);
    assert_true(id128_is_zero(&ev[2].debit_account_id));
    assert_int_equal(ev[2].amount, 0);

    /* The ids are free again, the pending is gone, the clock rewound. */
    ledger_transfer q = post(806, 802, 0);
    assert_tr(apply1(b, &q, NOW + 100), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    ledger_transfer again = xfer(801, A1, HIST, 5);
    assert_tr(apply1(b, &again, NOW + 100), LEDGER_TRANSFER_OK);
    assert_int_equal(again.timestamp_us, NOW + 100);
    assert_balances(b, A1, 0, 15, 0, 0);
    assert_int_equal(n_balance_rows(b), 1);
}

static void test_chain_failure_restores_pending_state(void **state)
{
    ledger_batch *b = *state;
    ledger_account d = acct(44, 1, USD, 0);
    d.debits_pending = 90;
    ledger_account c = acct(45, 1, USD, 0);
    c.credits_pending = 90;
    assert_int_equal(ledger_batch_add_account(b, &d), 0);
    assert_int_equal(ledger_batch_add_account(b, &c), 0);
    ledger_transfer sp = pend(810, 44, 45, 90, 0);
    ledger_pending_state st = {.status = LEDGER_PENDING_PENDING};
    assert_int_equal(ledger_batch_add_pending(b, &sp, &st), 0);

    /* A pending created in an earlier call, posted partially inside the
     * failing chain too. */
    ledger_transfer p = pend(811, A1, A2, 50, 0);
    assert_tr(apply1(b, &p, NOW), LEDGER_TRANSFER_OK);

    ledger_transfer ev[3] = {post(812, 810, 40), post(813, 811, 20), xfer(814, A1, UNKNOWN, 1)};
    ev[0].flags |= LEDGER_TF_LINKED;
    ev[1].flags |= LEDGER_TF_LINKED;
    ledger_transfer_result r[3];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 3, NOW, r), 0);
    assert_tr(r[0], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[1], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[2], LEDGER_TRANSFER_CREDIT_ACCOUNT_NOT_FOUND);
    assert_null(changed(b, 44));
    assert_balances(b, A1, 50, 0, 0, 0);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_true(pc[0].is_new);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_PENDING);

    /* Both pendings are still pending. */
    ledger_transfer q = post(815, 810, 0);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OK);
    ledger_transfer q2 = voidp(816, 811);
    assert_tr(apply1(b, &q2, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 44, 0, 90, 0, 0);
    assert_balances(b, A1, 0, 0, 0, 0);
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 2);
}

static void test_chain_ok_and_open(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer ev[5] = {
        xfer(820, A1, A2, 1), xfer(821, A2, A1, 2), xfer(822, A1, A2, 3),
        xfer(823, A1, A2, 4), xfer(824, A1, A2, 5),
    };
    ev[0].flags |= LEDGER_TF_LINKED;
    ev[1].flags |= LEDGER_TF_LINKED; /* chain 820..822 closes at 822 */
    ev[3].flags |= LEDGER_TF_LINKED;
    ev[4].flags |= LEDGER_TF_LINKED; /* 823..824 left open */
    ledger_transfer_result r[5];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 5, NOW, r), 3);
    assert_tr(r[0], LEDGER_TRANSFER_OK);
    assert_tr(r[1], LEDGER_TRANSFER_OK);
    assert_tr(r[2], LEDGER_TRANSFER_OK);
    assert_tr(r[3], LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN);
    assert_tr(r[4], LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN);
    assert_balances(b, A1, 0, 4, 0, 2);
    assert_int_equal(n_new_transfers(b), 3);
    assert_int_equal(ev[3].timestamp_us, 0);

    /* An open chain of one. */
    ledger_transfer lone = xfer(825, A1, A2, 1);
    lone.flags = LEDGER_TF_LINKED;
    assert_tr(apply1(b, &lone, NOW), LEDGER_TRANSFER_LINKED_EVENT_CHAIN_OPEN);

    /* A retried chain: every event exists, nothing applies again. */
    ledger_transfer retry[3] = {ev[0], ev[1], ev[2]};
    for (int i = 0; i < 3; i++)
        retry[i].timestamp_us = 0;
    assert_int_equal(ledger_batch_apply_transfers(b, retry, 3, NOW, r), 0);
    assert_tr(r[0], LEDGER_TRANSFER_EXISTS);
    assert_tr(r[1], LEDGER_TRANSFER_EXISTS);
    assert_tr(r[2], LEDGER_TRANSFER_EXISTS);
    assert_balances(b, A1, 0, 4, 0, 2);

    /* exists_with_different_fields fails its chain. */
    ledger_transfer mixed[2] = {xfer(826, A1, A2, 9), xfer(820, A1, A2, 99)};
    mixed[0].flags = LEDGER_TF_LINKED;
    assert_int_equal(ledger_batch_apply_transfers(b, mixed, 2, NOW, r), 0);
    assert_tr(r[0], LEDGER_TRANSFER_LINKED_EVENT_FAILED);
    assert_tr(r[1], LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    assert_balances(b, A1, 0, 4, 0, 2);
    assert_int_equal(n_new_transfers(b), 3);
}

/* ------------------------------------------------------------------ */
/* Idempotency.                                                        */

static void test_exists(void **state)
{
    ledger_batch *b = *state;
    static const char meta[] = "{\"reference\":\"invoice 42\"}";
    char meta_copy[sizeof meta];
    memcpy(meta_copy, meta, sizeof meta);

    /* Within one call. */
    ledger_transfer ev[3] = {xfer(900, A1, A2, 10), xfer(900, A1, A2, 10), xfer(900, A1, A2, 11)};
    ev[0].metadata = meta;
    ev[0].metadata_len = sizeof meta - 1;
    ev[1].metadata = meta_copy; /* same bytes, other buffer */
    ev[1].metadata_len = sizeof meta - 1;
    ev[2].metadata = meta;
    ev[2].metadata_len = sizeof meta - 1;
    ledger_transfer_result r[3];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 3, NOW, r), 1);
    assert_tr(r[0], LEDGER_TRANSFER_OK);
    assert_tr(r[1], LEDGER_TRANSFER_EXISTS);
    assert_tr(r[2], LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    assert_int_equal(ev[1].timestamp_us, 0);
    assert_balances(b, A1, 0, 10, 0, 0);

    /* In a later call of the same batch. */
    ledger_transfer t = xfer(900, A1, A2, 10);
    t.metadata = meta;
    t.metadata_len = sizeof meta - 1;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXISTS);
    t.metadata_len = 5;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    static const char meta_other[] = "{\"reference\":\"invoice 43\"}"; /* same length */
    _Static_assert(sizeof meta_other == sizeof meta, "same length");
    t.metadata = meta_other;
    t.metadata_len = sizeof meta_other - 1;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    t.metadata = NULL;
    t.metadata_len = 0;
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);

    /* Against a stored transfer. */
    ledger_transfer stored = xfer(901, A1, A2, 20);
    stored.user_data_64 = 5;
    stored.timestamp_us = NOW - 1000;
    assert_int_equal(ledger_batch_add_transfer(b, &stored), 0);
    ledger_transfer again = stored;
    again.timestamp_us = 0;
    assert_tr(apply1(b, &again, NOW), LEDGER_TRANSFER_EXISTS);
    struct {
        int field;
    } cases[] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ledger_transfer d = stored;
        d.timestamp_us = 0;
        switch (cases[i].field) {
        case 0: d.user_data_64 = 6; break;
        case 1: d.amount = 21; break;
        case 2: d.debit_account_id = idn(HIST); break;
        case 3: d.credit_account_id = idn(HIST); break;
        case 4: d.code = 2; break;
        case 5: d.user_data_32 = 1; break;
        case 6: d.user_data_128 = idn(1); break;
        case 7: d.flags = LEDGER_TF_PENDING; break;
        case 8: d.ledger = EUR; break;
        }
        assert_tr(apply1(b, &d, NOW), LEDGER_TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS);
    }
    /* Nothing of it changed balances. */
    assert_balances(b, A1, 0, 10, 0, 0);
    assert_int_equal(n_new_transfers(b), 1);

    /* The same-fields predicate directly, including post wildcards. */
    ledger_transfer sp = post(902, 903, 0);
    sp.debit_account_id = idn(A1);
    sp.credit_account_id = idn(A2);
    sp.ledger = USD;
    sp.code = 3;
    sp.amount = 77;
    ledger_transfer rq = post(902, 903, 0);
    assert_true(ledger_transfer_same_fields(&sp, &rq));
    rq.amount = 77;
    rq.code = 3;
    assert_true(ledger_transfer_same_fields(&sp, &rq));
    rq.code = 4;
    assert_false(ledger_transfer_same_fields(&sp, &rq));
    rq = post(902, 904, 0);
    assert_false(ledger_transfer_same_fields(&sp, &rq));
    ledger_transfer plain_rq = xfer(901, A1, A2, 20);
    ledger_transfer plain_st = plain_rq;
    plain_st.timestamp_us = 12345; /* not compared */
    plain_st.customer_id = 9;      /* not compared */
    assert_true(ledger_transfer_same_fields(&plain_st, &plain_rq));
    plain_rq.ledger = 0; /* zero is not a wildcard for plain transfers */
    assert_false(ledger_transfer_same_fields(&plain_st, &plain_rq));
}

/* ------------------------------------------------------------------ */
/* Timestamps, outputs, expiry.                                        */

static void test_timestamps_strictly_increase(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer ev[3] = {xfer(1000, A1, A2, 1), xfer(1001, A1, UNKNOWN, 1),
                             xfer(1002, A1, A2, 1)};
    ledger_transfer_result r[3];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 3, NOW, r), 2);
    assert_int_equal(ev[0].timestamp_us, NOW);
    assert_int_equal(ev[1].timestamp_us, 0);
    assert_int_equal(ev[2].timestamp_us, NOW + 1);

    /* A clock that did not move (or went back) still gives later ones. */
    ledger_transfer t = xfer(1003, A1, A2, 1);
    assert_tr(apply1(b, &t, NOW - 50), LEDGER_TRANSFER_OK);
    assert_int_equal(t.timestamp_us, NOW + 2);
    ledger_account a = acct(1004, 1, USD, 0);
    ledger_account_result ar;
    assert_int_equal(ledger_batch_apply_accounts(b, &a, 1, NOW, &ar), 1);
    assert_ar(ar, LEDGER_ACCOUNT_OK);
    assert_int_equal(a.timestamp_us, NOW + 3);
    ledger_transfer t2 = xfer(1005, A1, A2, 1);
    assert_tr(apply1(b, &t2, NOW + 1000), LEDGER_TRANSFER_OK);
    assert_int_equal(t2.timestamp_us, NOW + 1000);

    /* The clock survives reset: the next commit is later still. */
    ledger_batch_reset(b);
    load_fixture(b);
    ledger_transfer t3 = xfer(1006, A1, A2, 1);
    assert_tr(apply1(b, &t3, NOW), LEDGER_TRANSFER_OK);
    assert_int_equal(t3.timestamp_us, NOW + 1001);
}

static void test_changed_accounts_sorted(void **state)
{
    ledger_batch *b = *state;
    /* Touch accounts in an order unlike their ids. */
    ledger_transfer ev[3] = {xfer(1100, B2, HIST, 3), xfer(1101, A2, B1, 4),
                             xfer(1102, HIST, A1, 5)};
    ledger_transfer_result r[3];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 3, NOW, r), 3);
    const ledger_account *const *list;
    size_t n = ledger_batch_changed_accounts(b, &list);
    assert_int_equal(n, 5);
    const uint64_t want[5] = {A1, A2, B1, HIST, B2};
    for (size_t i = 0; i < n; i++) {
        id128 w = idn(want[i]);
        assert_true(id128_equal(&list[i]->id, &w));
    }
    assert_balances(b, B2, 0, 3, 0, 0);
    assert_balances(b, HIST, 0, 5, 0, 3);
    assert_balances(b, A1, 0, 0, 0, 5);
    assert_balances(b, A2, 0, 4, 0, 0);
    assert_balances(b, B1, 0, 0, 0, 4);

    /* A later call adds one in the middle and keeps the order. */
    ledger_transfer t = xfer(1103, LIM, A1, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OK);
    n = ledger_batch_changed_accounts(b, &list);
    assert_int_equal(n, 6);
    for (size_t i = 1; i < n; i++)
        assert_true(id128_compare(&list[i - 1]->id, &list[i]->id) < 0);
    id128 lim = idn(LIM);
    assert_true(id128_equal(&list[2]->id, &lim));
}

static void test_balance_rows(void **state)
{
    ledger_batch *b = *state;
    ledger_transfer ev[3] = {xfer(1200, A1, HIST, 30), xfer(1201, A1, A2, 1),
                             pend(1202, HIST, A2, 10, 0)};
    ledger_transfer_result r[3];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 3, NOW, r), 3);
    ledger_transfer q = post(1203, 1202, 4);
    assert_tr(apply1(b, &q, NOW), LEDGER_TRANSFER_OK);

    const ledger_balance_row *rows;
    assert_int_equal(ledger_batch_balance_rows(b, &rows), 3);
    id128 hist = idn(HIST);
    for (int i = 0; i < 3; i++)
        assert_true(id128_equal(&rows[i].account_id, &hist));
    assert_true(id128_equal(&rows[0].transfer_id, &ev[0].id));
    assert_int_equal(rows[0].timestamp_us, ev[0].timestamp_us);
    assert_int_equal(rows[0].credits_posted, 30);
    assert_int_equal(rows[0].debits_pending, 0);
    assert_true(id128_equal(&rows[1].transfer_id, &ev[2].id));
    assert_int_equal(rows[1].debits_pending, 10);
    assert_int_equal(rows[1].credits_posted, 30);
    assert_true(id128_equal(&rows[2].transfer_id, &q.id));
    assert_int_equal(rows[2].timestamp_us, q.timestamp_us);
    assert_int_equal(rows[2].debits_pending, 0);
    assert_int_equal(rows[2].debits_posted, 4);
    assert_int_equal(rows[2].credits_pending, 0);
    assert_int_equal(rows[2].credits_posted, 30);
}

static void test_expire(void **state)
{
    ledger_batch *b = *state;
    ledger_account d = acct(46, 1, USD, LEDGER_AF_HISTORY);
    d.debits_pending = 25;
    ledger_account c = acct(47, 1, USD, 0);
    c.credits_pending = 25;
    assert_int_equal(ledger_batch_add_account(b, &d), 0);
    assert_int_equal(ledger_batch_add_account(b, &c), 0);
    ledger_transfer sp = pend(1300, 46, 47, 15, 10);
    ledger_transfer forever = pend(1301, 46, 47, 10, 0);
    ledger_pending_state st = {.status = LEDGER_PENDING_PENDING, .expires_at_us = NOW};
    ledger_pending_state st0 = {.status = LEDGER_PENDING_PENDING, .expires_at_us = 0};
    assert_int_equal(ledger_batch_add_pending(b, &sp, &st), 0);
    assert_int_equal(ledger_batch_add_pending(b, &forever, &st0), 0);
    int64_t before = ledger_batch_net_sum(b, USD);

    id128 unknown = idn(4242);
    assert_tr(ledger_batch_expire(b, &unknown, NOW), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_FOUND);
    assert_tr(ledger_batch_expire(b, &sp.id, NOW - 1), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    assert_tr(ledger_batch_expire(b, &forever.id, NOW + 1000000000LL),
              LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    assert_nothing_changed(b);

    assert_tr(ledger_batch_expire(b, &sp.id, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 46, 10, 0, 0, 0);
    assert_balances(b, 47, 0, 0, 10, 0);
    assert_int_equal(ledger_batch_net_sum(b, USD), before);
    const ledger_pending_change *pc;
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 1);
    assert_true(id128_equal(&pc[0].pending_id, &sp.id));
    assert_false(pc[0].is_new);
    assert_int_equal(pc[0].state.status, LEDGER_PENDING_EXPIRED);
    assert_int_equal(pc[0].state.expires_at_us, NOW);
    const ledger_balance_row *rows;
    assert_int_equal(ledger_batch_balance_rows(b, &rows), 1);
    assert_true(id128_equal(&rows[0].transfer_id, &sp.id));
    assert_int_equal(rows[0].debits_pending, 10);
    assert_true(rows[0].timestamp_us >= NOW);
    assert_int_equal(n_new_transfers(b), 0);

    /* Twice: no longer pending. Posting it: expired. */
    assert_tr(ledger_batch_expire(b, &sp.id, NOW + 5), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    ledger_transfer q = post(1302, 1300, 0);
    assert_tr(apply1(b, &q, NOW + 5), LEDGER_TRANSFER_PENDING_TRANSFER_EXPIRED);
    assert_true(q.timestamp_us == 0);

    /* A pending created in this batch can expire too (if due). */
    ledger_transfer p = pend(1303, A1, A2, 3, 1);
    assert_tr(apply1(b, &p, NOW + 10), LEDGER_TRANSFER_OK);
    assert_tr(ledger_batch_expire(b, &p.id, NOW + 10), LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
    assert_tr(ledger_batch_expire(b, &p.id, p.timestamp_us + 1000000), LEDGER_TRANSFER_OK);
    assert_balances(b, A1, 0, 0, 0, 0);
    assert_int_equal(ledger_batch_pending_changes(b, &pc), 2);
    assert_true(pc[1].is_new);
    assert_int_equal(pc[1].state.status, LEDGER_PENDING_EXPIRED);
}

/* ------------------------------------------------------------------ */
/* Accounts.                                                           */

static void test_create_accounts(void **state)
{
    ledger_batch *b = *state;
    ledger_account ev[6] = {
        acct(60, 1, USD, LEDGER_AF_HISTORY),
        acct(61, 1, 826, 0),          /* GBP not loaded */
        acct(A1, 1, USD, 0),          /* stored, same fields */
        acct(A1, 1, USD, 0),          /* differs: code below */
        acct(60, 1, USD, LEDGER_AF_HISTORY), /* created just before */
        acct(60, 2, USD, LEDGER_AF_HISTORY), /* other owner */
    };
    ev[0].debits_posted = 123; /* ignored: new accounts start at zero */
    ev[3].code = 11;
    ledger_account_result r[6];
    assert_int_equal(ledger_batch_apply_accounts(b, ev, 6, NOW, r), 1);
    assert_ar(r[0], LEDGER_ACCOUNT_OK);
    assert_ar(r[1], LEDGER_ACCOUNT_LEDGER_NOT_FOUND);
    assert_ar(r[2], LEDGER_ACCOUNT_EXISTS);
    assert_ar(r[3], LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS);
    assert_ar(r[4], LEDGER_ACCOUNT_EXISTS);
    assert_ar(r[5], LEDGER_ACCOUNT_EXISTS_WITH_DIFFERENT_FIELDS);
    assert_int_equal(ev[0].timestamp_us, NOW);
    assert_int_equal(ev[0].debits_posted, 0);
    const ledger_account *const *na;
    assert_int_equal(ledger_batch_new_accounts(b, &na), 1);
    assert_ptr_equal(na[0], &ev[0]);

    /* Usable by transfers in the same batch; history rows follow. */
    ledger_transfer t = xfer(1400, A1, 60, 9);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OK);
    assert_balances(b, 60, 0, 0, 0, 9);
    assert_int_equal(n_balance_rows(b), 1);

    /* Stateless account failures through apply. */
    ledger_account bad[4] = {acct(0, 1, USD, 0), acct(62, 1, 0, 0), acct(63, 0, USD, 0),
                             acct(64, 1, USD, 1u << 7)};
    assert_int_equal(ledger_batch_apply_accounts(b, bad, 4, NOW, r), 0);
    assert_ar(r[0], LEDGER_ACCOUNT_ID_MUST_NOT_BE_ZERO);
    assert_ar(r[1], LEDGER_ACCOUNT_LEDGER_MUST_NOT_BE_ZERO);
    assert_ar(r[2], LEDGER_ACCOUNT_CUSTOMER_NOT_FOUND);
    assert_ar(r[3], LEDGER_ACCOUNT_FLAGS_UNKNOWN);
    ledger_account mx = acct(65, 1, USD,
                             LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS |
                                 LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS);
    assert_int_equal(ledger_batch_apply_accounts(b, &mx, 1, NOW, r), 0);
    assert_ar(r[0], LEDGER_ACCOUNT_FLAGS_ARE_MUTUALLY_EXCLUSIVE);
    assert_int_equal(ledger_batch_new_accounts(b, &na), 1);
}

static void test_account_chains(void **state)
{
    ledger_batch *b = *state;
    ledger_account ev[3] = {acct(70, 1, USD, LEDGER_AF_LINKED), acct(71, 1, USD, LEDGER_AF_LINKED),
                            acct(72, 1, 826, 0)};
    ledger_account_result r[3];
    assert_int_equal(ledger_batch_apply_accounts(b, ev, 3, NOW, r), 0);
    assert_ar(r[0], LEDGER_ACCOUNT_LINKED_EVENT_FAILED);
    assert_ar(r[1], LEDGER_ACCOUNT_LINKED_EVENT_FAILED);
    assert_ar(r[2], LEDGER_ACCOUNT_LEDGER_NOT_FOUND);
    assert_int_equal(ev[0].timestamp_us, 0);
    const ledger_account *const *na;
    assert_int_equal(ledger_batch_new_accounts(b, &na), 0);
    /* Account 70 does not exist. */
    ledger_transfer t = xfer(1500, 70, A1, 1);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);

    /* Fixed, the chain goes through; an open chain does nothing. */
    assert_int_equal(ledger_batch_add_ledger(b, 826), 0);
    ledger_account ev2[5] = {acct(70, 1, USD, LEDGER_AF_LINKED),
                             acct(71, 1, USD, LEDGER_AF_LINKED), acct(72, 1, 826, 0),
                             acct(73, 1, USD, LEDGER_AF_LINKED), acct(74, 1, USD, LEDGER_AF_LINKED)};
    ledger_account_result r2[5];
    assert_int_equal(ledger_batch_apply_accounts(b, ev2, 5, NOW, r2), 3);
    assert_ar(r2[0], LEDGER_ACCOUNT_OK);
    assert_ar(r2[1], LEDGER_ACCOUNT_OK);
    assert_ar(r2[2], LEDGER_ACCOUNT_OK);
    assert_ar(r2[3], LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN);
    assert_ar(r2[4], LEDGER_ACCOUNT_LINKED_EVENT_CHAIN_OPEN);
    assert_int_equal(ledger_batch_new_accounts(b, &na), 3);
    assert_ptr_equal(na[2], &ev2[2]);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_OK);
}

/* ------------------------------------------------------------------ */
/* Batch bounds and reset.                                             */

static void test_bounds_and_reset(void **state)
{
    (void)state;
    assert_null(ledger_batch_create(0));
    ledger_batch *b = ledger_batch_create(2);
    assert_non_null(b);
    for (uint64_t i = 1; i <= 4; i++) {
        ledger_account a = acct(i, 1, USD, 0);
        assert_int_equal(ledger_batch_add_account(b, &a), 0);
    }
    ledger_account a1 = acct(1, 1, USD, 0);
    assert_int_equal(ledger_batch_add_account(b, &a1), 0); /* known: kept */
    ledger_account a5 = acct(5, 1, USD, 0);
    assert_int_equal(ledger_batch_add_account(b, &a5), -1);
    ledger_transfer t1 = xfer(10, 1, 2, 1), t2 = xfer(11, 1, 2, 1), t3 = xfer(12, 1, 2, 1);
    assert_int_equal(ledger_batch_add_transfer(b, &t1), 0);
    assert_int_equal(ledger_batch_add_transfer(b, &t2), 0);
    assert_int_equal(ledger_batch_add_transfer(b, &t1), 0);
    assert_int_equal(ledger_batch_add_transfer(b, &t3), -1);
    ledger_pending_state st = {.status = LEDGER_PENDING_PENDING};
    ledger_transfer p1 = pend(20, 1, 2, 1, 0), p2 = pend(21, 1, 2, 1, 0), p3 = pend(22, 1, 2, 1, 0);
    assert_int_equal(ledger_batch_add_pending(b, &p1, &st), 0);
    assert_int_equal(ledger_batch_add_pending(b, &p2, &st), 0);
    assert_int_equal(ledger_batch_add_pending(b, &p3, &st), -1);
    assert_int_equal(ledger_batch_add_ledger(b, 0), -1);
    assert_int_equal(ledger_batch_add_ledger(b, -5), -1);
    assert_int_equal(ledger_batch_add_ledger(b, USD), 0);
    assert_int_equal(ledger_batch_add_ledger(b, USD), 0);

    ledger_transfer ev[2] = {xfer(30, 1, 2, 5), xfer(10, 1, 2, 1)};
    ledger_transfer_result r[2];
    assert_int_equal(ledger_batch_apply_transfers(b, ev, 2, NOW, r), 1);
    assert_tr(r[1], LEDGER_TRANSFER_EXISTS);
    assert_int_equal(n_changed(b), 2);

    /* After reset nothing is known and every output is empty. */
    ledger_batch_reset(b);
    assert_nothing_changed(b);
    const ledger_account *const *na;
    assert_int_equal(ledger_batch_new_accounts(b, &na), 0);
    ledger_transfer t = xfer(31, 1, 2, 5);
    assert_tr(apply1(b, &t, NOW), LEDGER_TRANSFER_DEBIT_ACCOUNT_NOT_FOUND);
    ledger_account na1 = acct(7, 1, USD, 0);
    ledger_account_result ar;
    assert_int_equal(ledger_batch_apply_accounts(b, &na1, 1, NOW, &ar), 0);
    assert_ar(ar, LEDGER_ACCOUNT_LEDGER_NOT_FOUND);
    /* The full bounds are available again. */
    ledger_batch_reset(b);
    for (uint64_t i = 11; i <= 14; i++) {
        ledger_account a = acct(i, 1, USD, 0);
        assert_int_equal(ledger_batch_add_account(b, &a), 0);
    }
    assert_int_equal(ledger_batch_add_transfer(b, &t1), 0);
    assert_int_equal(ledger_batch_add_transfer(b, &t2), 0);
    ledger_transfer two[2] = {xfer(40, 11, 12, 1), xfer(41, 13, 14, 1)};
    assert_int_equal(ledger_batch_apply_transfers(b, two, 2, NOW, r), 2);
    ledger_batch_free(b);
    ledger_batch_free(NULL);
}

/* ------------------------------------------------------------------ */
/* Randomized property test.                                           */

typedef struct model_acct {
    int64_t dp, dpo, cp, cpo;
} model_acct;

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
static uint64_t rnd_below(uint64_t n) { return rnd() % n; }

enum { P_ACCOUNTS = 10, P_EVENTS = 2000 };

static int model_index(const id128 *id)
{
    for (int i = 0; i < P_ACCOUNTS; i++) {
        id128 want = idn(5000 + (uint64_t)i);
        if (id128_equal(id, &want))
            return i;
    }
    return -1;
}

static void test_random_property(void **state)
{
    (void)state;
    rng_state = 0x9e3779b97f4a7c15ull;
    ledger_batch *b = ledger_batch_create(P_EVENTS + P_ACCOUNTS + 16);
    assert_non_null(b);
    assert_int_equal(ledger_batch_add_ledger(b, USD), 0);
    assert_int_equal(ledger_batch_add_ledger(b, EUR), 0);

    ledger_account accts[P_ACCOUNTS];
    for (int i = 0; i < P_ACCOUNTS; i++) {
        uint32_t flags = 0;
        if (i % 3 == 0)
            flags |= LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS;
        else if (i % 3 == 1 && i > 3)
            flags |= LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS;
        if (i % 2 == 0)
            flags |= LEDGER_AF_HISTORY;
        accts[i] = acct(5000 + (uint64_t)i, 1 + i % 2, i < 7 ? USD : EUR, flags);
    }
    ledger_account_result ar[P_ACCOUNTS];
    assert_int_equal(ledger_batch_apply_accounts(b, accts, P_ACCOUNTS, NOW, ar), P_ACCOUNTS);

    static ledger_transfer ev[P_EVENTS];
    static ledger_transfer_result res[P_EVENTS];
    static int pend_ids[P_EVENTS]; /* indexes of ok pending events */
    size_t n_pend = 0;
    model_acct model[P_ACCOUNTS];
    memset(model, 0, sizeof model);
    /* Model of pending transfers: by event index, 1 = still pending. */
    static int pend_open[P_EVENTS];
    memset(pend_open, 0, sizeof pend_open);
    memset(ev, 0, sizeof ev);

    int64_t now = NOW;
    size_t done = 0;
    size_t total_ok = 0, total_exists = 0, total_chain_failed = 0, total_expired = 0;
    size_t rows_expected = 0;
    while (done < P_EVENTS) {
        size_t count = 1 + rnd_below(20);
        if (count > P_EVENTS - done)
            count = P_EVENTS - done;
        for (size_t k = 0; k < count; k++) {
            size_t idx = done + k;
            ledger_transfer *t = &ev[idx];
            uint64_t kind = rnd_below(10);
            int d = (int)rnd_below(P_ACCOUNTS), c = (int)rnd_below(P_ACCOUNTS);
            if (kind < 5) {
                *t = xfer(100000 + idx, 5000 + (uint64_t)d, 5000 + (uint64_t)c,
                          1 + (int64_t)rnd_below(300));
                t->ledger = accts[d].ledger;
                if (rnd_below(4) == 0) /* fund the limited accounts */
                    t->debit_account_id = idn(5000 + (uint64_t)(d % 3 == 0 ? d + 1 : d));
            } else if (kind < 7) {
                *t = pend(100000 + idx, 5000 + (uint64_t)d, 5000 + (uint64_t)c,
                          1 + (int64_t)rnd_below(300), (uint32_t)rnd_below(3));
                t->ledger = accts[d].ledger;
            } else if (kind < 9 && n_pend > 0) {
                int target = pend_ids[rnd_below(n_pend)];
                int64_t amt = (int64_t)rnd_below(3) == 0 ? 0 : (int64_t)rnd_below(350);
                if (kind == 7)
                    *t = post(100000 + idx, 100000 + (uint64_t)target, amt);
                else
                    *t = voidp(100000 + idx, 100000 + (uint64_t)target);
            } else if (idx > 0) {
                /* A repeated id, sometimes with other fields. */
                size_t prev = rnd_below(idx);
                if (!ev[prev].timestamp_us) {
                    *t = xfer(100000 + idx, 5000, 5001, 1);
                } else {
                    *t = ev[prev];
                    t->timestamp_us = 0;
                    t->flags &= ~LEDGER_TF_LINKED;
                    if (rnd_below(2))
                        t->user_data_32 = 99;
                }
            } else {
                *t = xfer(100000 + idx, 5000, 5001, 1);
            }
            if (rnd_below(4) == 0)
                t->flags |= LEDGER_TF_LINKED;
        }
        now += (int64_t)rnd_below(700000);
        int64_t before[3] = {0, ledger_batch_net_sum(b, USD), ledger_batch_net_sum(b, EUR)};
        size_t ok = ledger_batch_apply_transfers(b, &ev[done], count, now, &res[done]);
        assert_int_equal(ledger_batch_net_sum(b, USD), before[1]);
        assert_int_equal(ledger_batch_net_sum(b, EUR), before[2]);

        /* Replay the outcome on the model. */
        size_t ok_seen = 0;
        for (size_t k = 0; k < count; k++) {
            size_t idx = done + k;
            ledger_transfer *t = &ev[idx];
            if (res[idx] == LEDGER_TRANSFER_EXISTS)
                total_exists++;
            if (res[idx] == LEDGER_TRANSFER_LINKED_EVENT_FAILED)
                total_chain_failed++;
            if (res[idx] != LEDGER_TRANSFER_OK) {
                assert_int_equal(t->timestamp_us, 0);
                continue;
            }
            ok_seen++;
            assert_true(t->timestamp_us >= now);
            int d = model_index(&t->debit_account_id), c = model_index(&t->credit_account_id);
            assert_true(d >= 0 && c >= 0 && d != c);
            rows_expected += (accts[d].flags & LEDGER_AF_HISTORY) ? 1 : 0;
            rows_expected += (accts[c].flags & LEDGER_AF_HISTORY) ? 1 : 0;
            if (t->flags & LEDGER_TF_PENDING) {
                model[d].dp += t->amount;
                model[c].cp += t->amount;
                pend_ids[n_pend++] = (int)idx;
                pend_open[idx] = 1;
            } else if (t->flags & (LEDGER_TF_POST_PENDING | LEDGER_TF_VOID_PENDING)) {
                size_t target = 0;
                for (; target < idx; target++)
                    if (id128_equal(&ev[target].id, &t->pending_id) &&
                        res[target] == LEDGER_TRANSFER_OK)
                        break;
                assert_true(target < idx);
                assert_int_equal(pend_open[target], 1);
                pend_open[target] = 0;
                model[d].dp -= ev[target].amount;
                model[c].cp -= ev[target].amount;
                if (t->flags & LEDGER_TF_POST_PENDING) {
                    assert_true(t->amount > 0 && t->amount <= ev[target].amount);
                    model[d].dpo += t->amount;
                    model[c].cpo += t->amount;
                } else {
                    assert_int_equal(t->amount, ev[target].amount);
                }
            } else {
                model[d].dpo += t->amount;
                model[c].cpo += t->amount;
            }
        }
        assert_int_equal(ok, ok_seen);
        total_ok += ok;

        /* Sometimes expire what is due. */
        if (rnd_below(5) == 0) {
            for (size_t i = 0; i < n_pend; i++) {
                size_t idx = (size_t)pend_ids[i];
                if (!pend_open[idx])
                    continue;
                ledger_transfer_result er = ledger_batch_expire(b, &ev[idx].id, now);
                bool due = ev[idx].timeout_s > 0 &&
                           now >= ev[idx].timestamp_us + (int64_t)ev[idx].timeout_s * 1000000;
                assert_tr(er, due ? LEDGER_TRANSFER_OK
                                  : LEDGER_TRANSFER_PENDING_TRANSFER_NOT_PENDING);
                if (er == LEDGER_TRANSFER_OK) {
                    int d = model_index(&ev[idx].debit_account_id);
                    int c = model_index(&ev[idx].credit_account_id);
                    model[d].dp -= ev[idx].amount;
                    model[c].cp -= ev[idx].amount;
                    pend_open[idx] = 0;
                    rows_expected += (accts[d].flags & LEDGER_AF_HISTORY) ? 1 : 0;
                    rows_expected += (accts[c].flags & LEDGER_AF_HISTORY) ? 1 : 0;
                    total_expired++;
                }
            }
        }

        /* Invariants against the model and per ledger. */
        int64_t sum_posted[2] = {0, 0}, sum_pending[2] = {0, 0};
        for (int i = 0; i < P_ACCOUNTS; i++) {
            const ledger_account *a = changed(b, 5000 + (uint64_t)i);
            model_acct got = {0, 0, 0, 0};
            if (a != NULL)
                got = (model_acct){a->debits_pending, a->debits_posted, a->credits_pending,
                                   a->credits_posted};
            assert_int_equal(got.dp, model[i].dp);
            assert_int_equal(got.dpo, model[i].dpo);
            assert_int_equal(got.cp, model[i].cp);
            assert_int_equal(got.cpo, model[i].cpo);
            if (accts[i].flags & LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS)
                assert_true(got.dp + got.dpo <= got.cpo);
            if (accts[i].flags & LEDGER_AF_CREDITS_MUST_NOT_EXCEED_DEBITS)
                assert_true(got.cp + got.cpo <= got.dpo);
            int l = accts[i].ledger == USD ? 0 : 1;
            sum_posted[l] += got.dpo - got.cpo;
            sum_pending[l] += got.dp - got.cp;
        }
        for (int l = 0; l < 2; l++) {
            assert_int_equal(sum_posted[l], 0);
            assert_int_equal(sum_pending[l], 0);
        }
        assert_int_equal(ledger_batch_net_sum(b, USD), 0);
        assert_int_equal(ledger_batch_net_sum(b, EUR), 0);
        assert_int_equal(n_new_transfers(b), total_ok);
        assert_int_equal(n_balance_rows(b), rows_expected);
        done += count;
    }
    print_message("random workload: %zu ok, %zu exists, %zu linked_event_failed, %zu expired\n",
                  total_ok, total_exists, total_chain_failed, total_expired);
    /* The workload really exercised the interesting paths. */
    assert_true(total_ok > 400);
    assert_true(total_exists > 10);
    assert_true(total_chain_failed > 50);
    assert_true(total_expired > 5);

    /* Timestamps of applied transfers strictly increase. */
    const ledger_transfer *const *nt;
    size_t n = ledger_batch_new_transfers(b, &nt);
    for (size_t i = 1; i < n; i++)
        assert_true(nt[i - 1]->timestamp_us < nt[i]->timestamp_us);
    ledger_batch_free(b);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_result_names),
        cmocka_unit_test(test_transfer_validate),
        cmocka_unit_test(test_account_validate),
        T(test_apply_stateless_failures),
        T(test_plain_transfer),
        T(test_account_and_ledger_checks),
        T(test_customer_scope),
        T(test_limit_debits_must_not_exceed_credits),
        T(test_limit_credits_must_not_exceed_debits),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_post_overflow),
        T(test_pending_then_post_full),
        T(test_partial_post),
        T(test_void),
        T(test_post_mismatches),
        T(test_expired_post),
        T(test_stored_pending_and_closed),
        T(test_chain_failure_changes_nothing),
        T(test_chain_failure_restores_pending_state),
        T(test_chain_ok_and_open),
        T(test_exists),
        T(test_timestamps_strictly_increase),
        T(test_changed_accounts_sorted),
        T(test_balance_rows),
        T(test_expire),
        T(test_create_accounts),
        T(test_account_chains),
        cmocka_unit_test(test_bounds_and_reset),
        cmocka_unit_test(test_random_property),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
