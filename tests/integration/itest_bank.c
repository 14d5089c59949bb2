/*
 * itest_bank.c — the bank workload with a checker (Jepsen's "bank"
 * test), against one meridiand and then two on the same database.
 *
 * Ten accounts of one customer in one ledger: account 0 is the bank
 * (no limits) and funds accounts 1..5, which may not go below zero
 * (debits_must_not_exceed_credits); 6..9 have no limits. Writer threads
 * send random transfers (1 to 3 per request, some as linked pairs,
 * amounts large enough that constrained accounts run dry and get
 * exceeds_credits) and record what the service told them about every
 * transfer id:
 *   acknowledged  result ok (or, on a retry after an ambiguous failure,
 *                 ok or exists)
 *   failed        a definite refusal (exceeds_credits, linked_event_failed)
 *   ambiguous     503 / transport error and no definite answer later
 * Ambiguous requests are retried with the same ids (on the other
 * meridiand when there are two); a retry must never say
 * exists_with_different_fields. Now and then an acknowledged request is
 * delivered again and must answer exists for what was applied.
 * Reader threads read GET /v1/balances all the time: every read must
 * balance per ledger (debits == credits, pending and posted), agree
 * with its own per-account rows, never show a constrained account
 * overdrawn and never go back in time.
 * The checker then reads PostgreSQL directly: every acknowledged id is
 * stored exactly once, nothing is stored that was refused or never
 * sent, and every account's balances equal the sums of its transfers.
 *
 * Phase (b) runs two meridiand processes on one database, writers and
 * readers split across them, and SIGKILLs one of them in the middle (a
 * process crash: in-flight requests become ambiguous) before starting
 * it again. The seed is printed; MERIDIAN_BANK_SEED replays a run's
 * random choices (thread timing still varies).
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "testlib.h"

#define USD 840
#define BANK_ACCOUNTS 10
#define BANK_CONSTRAINED_FIRST 1
#define BANK_CONSTRAINED_LAST 5
#define BANK_FUNDING 5000
#define BANK_AMOUNT_MAX 2000
#define BANK_BIG_AMOUNT_MAX 50000 /* one transfer in 10: more than any limited account holds */
#define WRITERS 8
#define READERS 2
#define OPS_PER_WRITER 300
#define EVENTS_PER_OP_MAX 3
#define ATTEMPTS_MAX 8           /* one try + retries of an ambiguous request */
#define REQUEST_TIMEOUT_MS 5000
#define PHASE_A_MS_MAX 15000     /* writers stop at this deadline even if not done */
#define PHASE_B_MS_MAX 20000
#define VIOLATIONS_KEPT 16
#define RECS_MAX (2 * WRITERS * OPS_PER_WRITER * EVENTS_PER_OP_MAX + 64)

typedef enum { REC_ACK = 1, REC_FAILED, REC_AMBIGUOUS } rec_state;

typedef struct rec {
    char id[TL_UUID_TEXT_SIZE];
    rec_state state;
} rec;

/* Shared by the threads of one phase. */
typedef struct bank_run {
    int ndaemons;
    pthread_mutex_t url_mu; /* urls change when a daemon restarts */
    char urls[2][TL_URL_SIZE];
    const char *key;
    int stop;               /* atomic */
    long ops_done;          /* atomic: requests answered or given up */
    int64_t deadline_ms;
    uint64_t seed;
    pthread_mutex_t v_mu;
    int violations;
    char v_msgs[VIOLATIONS_KEPT][600];
} bank_run;

typedef struct writer {
    bank_run *run;
    int index;
    uint64_t rng;
    rec recs[OPS_PER_WRITER * EVENTS_PER_OP_MAX];
    size_t nrecs;
    long requests, retries, redeliveries;
} writer;

typedef struct reader {
    bank_run *run;
    int index;
    long reads, unavailable;
} reader;

static tl_world W;
static PGconn *PG;
static char accounts[BANK_ACCOUNTS][TL_UUID_TEXT_SIZE];
static rec all_recs[RECS_MAX];
static size_t all_nrecs;
static uint64_t seed;

/* ---- Utilities. */

static uint64_t rng_next(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void violation(bank_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void violation(bank_run *run, const char *fmt, ...)
{
    pthread_mutex_lock(&run->v_mu);
    if (run->violations < VIOLATIONS_KEPT) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(run->v_msgs[run->violations], sizeof run->v_msgs[0], fmt, ap);
        va_end(ap);
    }
    run->violations++;
    pthread_mutex_unlock(&run->v_mu);
}

static void current_url(bank_run *run, int slot, const char *path, char *out, size_t size)
{
    pthread_mutex_lock(&run->url_mu);
    snprintf(out, size, "%s%s", run->urls[slot % run->ndaemons], path);
    pthread_mutex_unlock(&run->url_mu);
}

static bool is_constrained(int i)
{
    return i >= BANK_CONSTRAINED_FIRST && i <= BANK_CONSTRAINED_LAST;
}

static int account_index(const char *id)
{
    for (int i = 0; i < BANK_ACCOUNTS; i++)
        if (id != NULL && strcmp(accounts[i], id) == 0)
            return i;
    return -1;
}

static bool is_ok_or_exists(const char *r)
{
    return strcmp(r, "ok") == 0 || strcmp(r, "exists") == 0;
}

static bool is_definite_refusal(const char *r)
{
    return strcmp(r, "exceeds_credits") == 0 || strcmp(r, "linked_event_failed") == 0;
}

/* ---- Writers. */

typedef struct op {
    size_t n;
    bool linked_pair; /* events 0 and 1 form a chain */
    bool resolution;  /* a post or void of an acknowledged pending transfer */
    size_t rec_index[EVENTS_PER_OP_MAX];
    char *body;
} op;

/* Check one 200 answer to op. attempt: 0 for the first delivery of a
 * fresh request, > 0 for a retry after an ambiguous failure; redelivery
 * is a deliberate duplicate of an answered request. Updates the records. */
static void handle_results(writer *w, const op *o, const tl_resp *r, int attempt,
                           bool redelivery)
{
    bank_run *run = w->run;
    json_t *results = json_object_get(r->json, "results");
    if (!json_is_array(results) || json_array_size(results) != o->n) {
        violation(run, "writer %d: %zu events answered with %.400s", w->index, o->n, r->body);
        for (size_t i = 0; i < o->n; i++)
            w->recs[o->rec_index[i]].state = REC_AMBIGUOUS;
        return;
    }
    const char *res[EVENTS_PER_OP_MAX] = {0};
    for (size_t i = 0; i < o->n; i++) {
        json_t *e = json_array_get(results, i);
        rec *rc = &w->recs[o->rec_index[i]];
        int64_t index = -1;
        const char *id = tl_field_str(e, "id");
        res[i] = tl_field_str(e, "result");
        if (tl_field_i64(e, "index", &index) != 0 || index != (int64_t)i || id == NULL ||
            strcmp(id, rc->id) != 0 || res[i] == NULL) {
            violation(run, "writer %d: result %zu malformed: %.400s", w->index, i, r->body);
            rc->state = REC_AMBIGUOUS;
            res[i] = NULL;
            continue;
        }
        if (strcmp(res[i], "exists_with_different_fields") == 0) {
            violation(run, "writer %d: %s answered exists_with_different_fields on %s %d",
                      w->index, rc->id, redelivery ? "redelivery" : "attempt", attempt);
            continue;
        }
        if (redelivery) {
            /* What was applied must now exist; what was refused was
             * never stored, so it may be applied now or refused again. */
            if (rc->state == REC_ACK && strcmp(res[i], "exists") != 0)
                violation(run, "writer %d: acknowledged %s redelivered got %s, want exists",
                          w->index, rc->id, res[i]);
            else if (rc->state == REC_FAILED && strcmp(res[i], "exists") == 0)
                violation(run, "writer %d: refused %s redelivered got exists: it was stored",
                          w->index, rc->id);
            else if (rc->state != REC_ACK && is_ok_or_exists(res[i]))
                rc->state = REC_ACK; /* applied now (or, if ambiguous, earlier) */
            else if (rc->state != REC_ACK && !is_definite_refusal(res[i]))
                violation(run, "writer %d: %s redelivered got unexpected %s", w->index, rc->id,
                          res[i]);
            continue;
        }
        if (attempt == 0) {
            if (strcmp(res[i], "ok") == 0) {
                rc->state = REC_ACK;
            } else if (is_definite_refusal(res[i]) && !o->resolution) {
                rc->state = REC_FAILED;
            } else {
                violation(run, "writer %d: fresh %s got unexpected result %s", w->index, rc->id,
                          res[i]);
                rc->state = REC_AMBIGUOUS;
            }
        } else {
            /* After an ambiguous attempt: ok/exists means it is stored
             * (once); a refusal means it is not stored now, but the lost
             * attempt could still be in flight: it stays ambiguous. */
            if (is_ok_or_exists(res[i])) {
                rc->state = REC_ACK;
            } else if (is_definite_refusal(res[i]) && !o->resolution) {
                rc->state = REC_AMBIGUOUS;
            } else {
                violation(run, "writer %d: retried %s got unexpected result %s", w->index, rc->id,
                          res[i]);
                rc->state = REC_AMBIGUOUS;
            }
        }
    }
    /* A linked pair is all or nothing, on every delivery. */
    if (o->linked_pair && res[0] != NULL && res[1] != NULL) {
        bool applied0 = is_ok_or_exists(res[0]);
        bool applied1 = is_ok_or_exists(res[1]);
        if (applied0 != applied1 || (applied0 && strcmp(res[0], res[1]) != 0))
            violation(run, "writer %d: linked pair %s/%s answered %s/%s", w->index,
                      w->recs[o->rec_index[0]].id, w->recs[o->rec_index[1]].id, res[0], res[1]);
    }
}

/* Send op until a definite answer or ATTEMPTS_MAX; returns true when
 * some attempt got a 200. */
static bool deliver(writer *w, op *o)
{
    bank_run *run = w->run;
    for (int attempt = 0; attempt < ATTEMPTS_MAX; attempt++) {
        char url[TL_URL_SIZE + 32];
        current_url(run, w->index + attempt, "/v1/transfers", url, sizeof url);
        tl_req req = {.method = "POST",
                      .url = url,
                      .api_key = run->key,
                      .body = o->body,
                      .body_len = strlen(o->body),
                      .timeout_ms = REQUEST_TIMEOUT_MS};
        tl_resp r;
        int rc = tl_http_req(&req, &r);
        w->requests++;
        if (attempt > 0)
            w->retries++;
        if (rc == 0 && r.status == 200) {
            handle_results(w, o, &r, attempt, false);
            tl_resp_release(&r);
            return true;
        }
        bool ambiguous = rc != 0 || r.status == 503;
        if (!ambiguous) {
            violation(run, "writer %d: HTTP %ld: %.400s", w->index, r.status, r.body);
            tl_resp_release(&r);
            return false;
        }
        tl_resp_release(&r);
        tl_sleep_ms(20LL << (attempt < 5 ? attempt : 5));
    }
    return false;
}

/* Deliver o (o->body is freed), now and then twice. */
static void send_op(writer *w, op *o)
{
    bank_run *run = w->run;
    bool answered = deliver(w, o);
    if (answered && rng_next(&w->rng) % 20 == 0) {
        /* Duplicate delivery (a client that retries an answered
         * request), to the other meridiand when there are two. */
        char url[TL_URL_SIZE + 32];
        current_url(run, w->index + 1, "/v1/transfers", url, sizeof url);
        tl_req req = {.method = "POST",
                      .url = url,
                      .api_key = run->key,
                      .body = o->body,
                      .body_len = strlen(o->body),
                      .timeout_ms = REQUEST_TIMEOUT_MS};
        tl_resp r;
        if (tl_http_req(&req, &r) == 0 && r.status == 200) {
            w->redeliveries++;
            handle_results(w, o, &r, 0, true);
        }
        tl_resp_release(&r);
    }
    free(o->body);
    o->body = NULL;
}

static int64_t random_amount(writer *w)
{
    uint64_t max = rng_next(&w->rng) % 10 == 0 ? BANK_BIG_AMOUNT_MAX : BANK_AMOUNT_MAX;
    return 1 + (int64_t)(rng_next(&w->rng) % max);
}

/* A fresh record (ambiguous until an answer says otherwise). */
static rec *new_rec(writer *w, op *o, size_t i)
{
    rec *rc = &w->recs[w->nrecs];
    o->rec_index[i] = w->nrecs++;
    tl_uuid_random(rc->id);
    rc->state = REC_AMBIGUOUS;
    return rc;
}

static void random_pair(writer *w, int *d, int *c)
{
    *d = (int)(rng_next(&w->rng) % BANK_ACCOUNTS);
    *c = (int)(rng_next(&w->rng) % (BANK_ACCOUNTS - 1));
    if (*c >= *d)
        (*c)++;
}

/* Two-phase: reserve, then (two times in three) post part or all of it,
 * or void it; the rest stays pending to the end. */
static void two_phase(writer *w)
{
    int d, c;
    random_pair(w, &d, &c);
    int64_t amount = random_amount(w);
    op o = {.n = 1};
    rec *p = new_rec(w, &o, 0);
    json_t *t = tl_transfer(p->id, accounts[d], accounts[c], amount, USD, "pending");
    json_object_set_new(t, "timeout_s", json_integer(3600));
    o.body = tl_dump(json_pack("{s:[o]}", "transfers", t));
    if (o.body == NULL)
        return;
    send_op(w, &o);
    if (p->state != REC_ACK || rng_next(&w->rng) % 3 == 0)
        return;
    char pending_id[TL_UUID_TEXT_SIZE];
    snprintf(pending_id, sizeof pending_id, "%s", p->id);
    op r = {.n = 1, .resolution = true};
    rec *q = new_rec(w, &r, 0);
    uint64_t how = rng_next(&w->rng) % 3;
    json_t *e = json_pack("{s:s,s:s,s:o}", "id", q->id, "pending_id", pending_id, "flags",
                          tl_flags(how == 2 ? "void_pending_transfer" : "post_pending_transfer"));
    if (how == 1) /* partial post */
        json_object_set_new(e, "amount", json_integer(1 + (json_int_t)(rng_next(&w->rng) %
                                                                       (uint64_t)amount)));
    r.body = tl_dump(json_pack("{s:[o]}", "transfers", e));
    if (r.body != NULL)
        send_op(w, &r);
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    bank_run *run = w->run;
    for (int opn = 0; opn < OPS_PER_WRITER; opn++) {
        if (__atomic_load_n(&run->stop, __ATOMIC_RELAXED) || tl_now_ms() >= run->deadline_ms)
            break;
        if (rng_next(&w->rng) % 6 == 0) {
            two_phase(w);
        } else {
            op o = {0};
            o.n = 1 + (size_t)(rng_next(&w->rng) % EVENTS_PER_OP_MAX);
            o.linked_pair = o.n >= 2 && rng_next(&w->rng) % 4 == 0;
            json_t *arr = json_array();
            for (size_t i = 0; i < o.n; i++) {
                int d, c;
                random_pair(w, &d, &c);
                rec *rc = new_rec(w, &o, i);
                json_array_append_new(arr,
                                      tl_transfer(rc->id, accounts[d], accounts[c],
                                                  random_amount(w), USD,
                                                  o.linked_pair && i == 0 ? "linked" : NULL));
            }
            o.body = tl_dump(json_pack("{s:o}", "transfers", arr));
            if (o.body == NULL)
                break;
            send_op(w, &o);
        }
        __atomic_add_fetch(&run->ops_done, 1, __ATOMIC_RELAXED);
    }
    tl_http_thread_end();
    return NULL;
}

/* ---- Readers. */

static void check_snapshot(reader *rd, const tl_resp *r, int64_t last[BANK_ACCOUNTS][2])
{
    bank_run *run = rd->run;
    json_t *accs = json_object_get(r->json, "accounts");
    json_t *totals = json_object_get(r->json, "totals");
    if (!json_is_array(accs) || json_array_size(accs) != BANK_ACCOUNTS || !json_is_array(totals)) {
        violation(run, "reader %d: unexpected balances body: %.400s", rd->index, r->body);
        return;
    }
    int64_t sum[4] = {0};
    int64_t seen[BANK_ACCOUNTS][2];
    bool found[BANK_ACCOUNTS] = {0};
    for (size_t i = 0; i < BANK_ACCOUNTS; i++) {
        json_t *a = json_array_get(accs, i);
        int idx = account_index(tl_field_str(a, "id"));
        int64_t v[4];
        if (idx < 0 || found[idx] || tl_field_i64(a, "debits_pending", &v[0]) != 0 ||
            tl_field_i64(a, "debits_posted", &v[1]) != 0 ||
            tl_field_i64(a, "credits_pending", &v[2]) != 0 ||
            tl_field_i64(a, "credits_posted", &v[3]) != 0) {
            violation(run, "reader %d: bad account row %zu: %.400s", rd->index, i, r->body);
            return;
        }
        found[idx] = true;
        for (int k = 0; k < 4; k++)
            sum[k] += v[k];
        if (is_constrained(idx) && v[1] + v[0] > v[3])
            violation(run,
                      "reader %d: constrained account %s overdrawn: debits %" PRId64
                      "+%" PRId64 " > credits %" PRId64,
                      rd->index, accounts[idx], v[1], v[0], v[3]);
        seen[idx][0] = v[1];
        seen[idx][1] = v[3];
    }
    /* Posted balances only grow: a later read never shows less. */
    for (int i = 0; i < BANK_ACCOUNTS; i++) {
        if (seen[i][0] < last[i][0] || seen[i][1] < last[i][1])
            violation(run,
                      "reader %d: %s went back in time: debits %" PRId64 " -> %" PRId64
                      ", credits %" PRId64 " -> %" PRId64,
                      rd->index, accounts[i], last[i][0], seen[i][0], last[i][1], seen[i][1]);
        last[i][0] = seen[i][0];
        last[i][1] = seen[i][1];
    }
    if (sum[1] != sum[3] || sum[0] != sum[2])
        violation(run,
                  "reader %d: accounts do not balance: debits %" PRId64 "/%" PRId64
                  " credits %" PRId64 "/%" PRId64,
                  rd->index, sum[0], sum[1], sum[2], sum[3]);
    bool usd = false;
    for (size_t t = 0; t < json_array_size(totals); t++) {
        json_t *tot = json_array_get(totals, t);
        int64_t ledger = 0, v[4];
        if (tl_field_i64(tot, "ledger", &ledger) != 0 || ledger != USD)
            continue;
        usd = true;
        if (tl_field_i64(tot, "debits_pending", &v[0]) != 0 ||
            tl_field_i64(tot, "debits_posted", &v[1]) != 0 ||
            tl_field_i64(tot, "credits_pending", &v[2]) != 0 ||
            tl_field_i64(tot, "credits_posted", &v[3]) != 0 || v[1] != v[3] || v[0] != v[2] ||
            v[1] != sum[1] || v[3] != sum[3] || v[0] != sum[0])
            violation(run, "reader %d: totals wrong (sums of rows %" PRId64 "/%" PRId64 "): %.300s",
                      rd->index, sum[1], sum[3], r->body);
    }
    if (!usd)
        violation(run, "reader %d: no USD totals: %.300s", rd->index, r->body);
}

static void *reader_main(void *arg)
{
    reader *rd = arg;
    bank_run *run = rd->run;
    int64_t last[BANK_ACCOUNTS][2] = {{0}};
    for (long i = 0; !__atomic_load_n(&run->stop, __ATOMIC_RELAXED); i++) {
        char url[TL_URL_SIZE + 32];
        current_url(run, rd->index + (int)i, "/v1/balances", url, sizeof url);
        tl_req req = {.method = "GET", .url = url, .api_key = run->key,
                      .timeout_ms = REQUEST_TIMEOUT_MS};
        tl_resp r;
        int rc = tl_http_req(&req, &r);
        if (rc != 0 || r.status == 503) {
            rd->unavailable++;
            tl_resp_release(&r);
            tl_sleep_ms(50);
            continue;
        }
        if (r.status != 200)
            violation(run, "reader %d: HTTP %ld: %.400s", rd->index, r.status, r.body);
        else {
            rd->reads++;
            check_snapshot(rd, &r, last);
        }
        tl_resp_release(&r);
        tl_sleep_ms(5);
    }
    tl_http_thread_end();
    return NULL;
}

/* ---- Phases. */

/* Run writers and readers against daemons d[0..n-1]. When nemesis is
 * set, d[1] is SIGKILLed at about a third of the run and restarted on a
 * new port. */
static void run_phase(const char *name, tl_daemon *d, int n, int64_t duration_ms,
                      bool nemesis)
{
    static bank_run run;
    static writer writers[WRITERS];
    static reader readers[READERS];
    memset(&run, 0, sizeof run);
    pthread_mutex_init(&run.url_mu, NULL);
    pthread_mutex_init(&run.v_mu, NULL);
    run.ndaemons = n;
    _Static_assert(sizeof run.urls[0] == sizeof d[0].base_url, "URL buffers match");
    for (int i = 0; i < n; i++) {
        memcpy(run.urls[i], d[i].base_url, sizeof run.urls[i]);
        run.urls[i][sizeof run.urls[i] - 1] = '\0';
    }
    run.key = W.key_acme;
    run.seed = seed;
    int64_t start_ms = tl_now_ms();
    run.deadline_ms = start_ms + duration_ms;

    pthread_t wt[WRITERS], rt[READERS];
    for (int i = 0; i < WRITERS; i++) {
        memset(&writers[i], 0, sizeof writers[i]);
        writers[i].run = &run;
        writers[i].index = i;
        writers[i].rng = seed ^ ((uint64_t)(i + 1) * 0x100000001b3ULL) ^ (uint64_t)name[0];
        assert_int_equal(pthread_create(&wt[i], NULL, writer_main, &writers[i]), 0);
    }
    for (int i = 0; i < READERS; i++) {
        memset(&readers[i], 0, sizeof readers[i]);
        readers[i].run = &run;
        readers[i].index = i;
        assert_int_equal(pthread_create(&rt[i], NULL, reader_main, &readers[i]), 0);
    }

    int restart_rc = 0;
    if (nemesis && n == 2) {
        /* Strike a third of the way in (by progress or by time). */
        while (tl_now_ms() < start_ms + duration_ms / 3 &&
               __atomic_load_n(&run.ops_done, __ATOMIC_RELAXED) < WRITERS * OPS_PER_WRITER / 3)
            tl_sleep_ms(10);
        print_message("[%s] nemesis: SIGKILL meridiand pid %d (port %d)\n", name, (int)d[1].pid,
                      d[1].port);
        tl_meridiand_kill(&d[1]);
        tl_sleep_ms(500);
        int port = tl_free_port();
        restart_rc = tl_meridiand_start(W.config_path, port, W.tmp_dir, &d[1]);
        if (restart_rc == 0) {
            pthread_mutex_lock(&run.url_mu);
            snprintf(run.urls[1], sizeof run.urls[1], "%s", d[1].base_url);
            pthread_mutex_unlock(&run.url_mu);
            print_message("[%s] nemesis: meridiand restarted on port %d\n", name, port);
        }
    }
    for (int i = 0; i < WRITERS; i++)
        pthread_join(wt[i], NULL);
    __atomic_store_n(&run.stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < READERS; i++)
        pthread_join(rt[i], NULL);

    long req = 0, retries = 0, acked = 0, failed = 0, ambiguous = 0, redel = 0, reads = 0,
         unavailable = 0;
    for (int i = 0; i < WRITERS; i++) {
        writer *w = &writers[i];
        req += w->requests;
        retries += w->retries;
        redel += w->redeliveries;
        for (size_t k = 0; k < w->nrecs; k++) {
            acked += w->recs[k].state == REC_ACK;
            failed += w->recs[k].state == REC_FAILED;
            ambiguous += w->recs[k].state == REC_AMBIGUOUS;
            assert_true(all_nrecs < RECS_MAX);
            all_recs[all_nrecs++] = w->recs[k];
        }
    }
    for (int i = 0; i < READERS; i++) {
        reads += readers[i].reads;
        unavailable += readers[i].unavailable;
    }
    print_message("[%s] %" PRId64 " ms: %ld requests (%ld retries, %ld redeliveries), transfers "
                  "acknowledged %ld, refused %ld, ambiguous %ld; %ld balance reads (%ld "
                  "unavailable)\n",
                  name, tl_now_ms() - start_ms, req, retries, redel, acked, failed, ambiguous,
                  reads, unavailable);
    for (int i = 0; i < run.violations && i < VIOLATIONS_KEPT; i++)
        print_error("[%s] violation: %s\n", name, run.v_msgs[i]);
    pthread_mutex_destroy(&run.url_mu);
    pthread_mutex_destroy(&run.v_mu);
    assert_int_equal(restart_rc, 0);
    assert_int_equal(run.violations, 0);
    assert_true(acked > 100);  /* the workload really ran */
    assert_true(failed > 0);   /* and the limits were really hit */
    assert_true(reads > 5);
}

static int rec_cmp(const void *a, const void *b)
{
    return strcmp(((const rec *)a)->id, ((const rec *)b)->id);
}

/* The checker: PostgreSQL against what clients were told. */
static void check_database(const char *name)
{
    qsort(all_recs, all_nrecs, sizeof all_recs[0], rec_cmp);
    for (size_t i = 1; i < all_nrecs; i++)
        assert_string_not_equal(all_recs[i - 1].id, all_recs[i].id);

    PGresult *res = PQexec(PG, "SELECT id::text FROM transfers ORDER BY id::text");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    int rows = PQntuples(res);
    int problems = 0;
    size_t acked = 0, ambiguous_present = 0, ambiguous = 0;
    size_t j = 0; /* index into all_recs, both sorted by id text */
    for (int i = 0; i < rows; i++) {
        const char *id = PQgetvalue(res, i, 0);
        if (i > 0 && strcmp(id, PQgetvalue(res, i - 1, 0)) == 0 && problems++ < 10)
            print_error("[%s] transfer %s stored twice\n", name, id);
        while (j < all_nrecs && strcmp(all_recs[j].id, id) < 0) {
            if (all_recs[j].state == REC_ACK && problems++ < 10)
                print_error("[%s] acknowledged transfer %s is missing\n", name, all_recs[j].id);
            j++;
        }
        if (j >= all_nrecs || strcmp(all_recs[j].id, id) != 0) {
            if (problems++ < 10)
                print_error("[%s] transfer %s stored but never sent\n", name, id);
            continue;
        }
        if (all_recs[j].state == REC_FAILED && problems++ < 10)
            print_error("[%s] transfer %s stored although it was refused\n", name, id);
        if (all_recs[j].state == REC_AMBIGUOUS)
            ambiguous_present++;
        j++;
    }
    for (; j < all_nrecs; j++)
        if (all_recs[j].state == REC_ACK && problems++ < 10)
            print_error("[%s] acknowledged transfer %s is missing\n", name, all_recs[j].id);
    for (size_t k = 0; k < all_nrecs; k++) {
        acked += all_recs[k].state == REC_ACK;
        ambiguous += all_recs[k].state == REC_AMBIGUOUS;
    }
    PQclear(res);
    print_message("[%s] checker: %d transfers stored, %zu acknowledged, %zu ambiguous (%zu of "
                  "them stored)\n",
                  name, rows, acked, ambiguous, ambiguous_present);

    /* Balances equal the sums of the transfers: posted = plain and post
     * rows (flags without pending 2 / void 8); pending = reservations
     * still in status 1. */
    res = PQexec(PG,
                 "SELECT * FROM (SELECT a.id, a.debits_posted, a.credits_posted,"
                 "  a.debits_pending, a.credits_pending,"
                 "  (SELECT coalesce(sum(amount), 0) FROM transfers t"
                 "    WHERE t.debit_account_id = a.id AND t.flags & 10 = 0) AS dpo,"
                 "  (SELECT coalesce(sum(amount), 0) FROM transfers t"
                 "    WHERE t.credit_account_id = a.id AND t.flags & 10 = 0) AS cpo,"
                 "  (SELECT coalesce(sum(t.amount), 0) FROM transfers t JOIN pending_transfers p"
                 "    ON p.id = t.id WHERE t.debit_account_id = a.id AND p.status = 1) AS dpe,"
                 "  (SELECT coalesce(sum(t.amount), 0) FROM transfers t JOIN pending_transfers p"
                 "    ON p.id = t.id WHERE t.credit_account_id = a.id AND p.status = 1) AS cpe"
                 "  FROM accounts a) x"
                 " WHERE debits_posted <> dpo OR credits_posted <> cpo"
                 "    OR debits_pending <> dpe OR credits_pending <> cpe");
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    for (int i = 0; i < PQntuples(res); i++) {
        problems++;
        print_error("[%s] account %s: posted debits %s credits %s, pending %s/%s; transfers "
                    "say posted %s/%s, pending %s/%s\n",
                    name, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
                    PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
                    PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8));
    }
    PQclear(res);
    int64_t n = -1;
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT count(*) FROM accounts WHERE flags & 2 <> 0 AND "
                               "debits_posted + debits_pending > credits_posted",
                               &n),
                     0);
    if (n != 0) {
        problems++;
        print_error("[%s] %" PRId64 " constrained accounts overdrawn\n", name, n);
    }
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT (SELECT coalesce(sum(debits_posted), 0) - "
                               "coalesce(sum(credits_posted), 0) FROM accounts)",
                               &n),
                     0);
    if (n != 0) {
        problems++;
        print_error("[%s] ledger does not balance: debits - credits = %" PRId64 "\n", name, n);
    }
    /* Every reservation is resolved at most once, and a posted one by
     * exactly the amount its post transfer moved. */
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT count(*) FROM (SELECT pending_id FROM transfers"
                               " WHERE pending_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) x",
                               &n),
                     0);
    if (n != 0) {
        problems++;
        print_error("[%s] %" PRId64 " pending transfers resolved more than once\n", name, n);
    }
    assert_int_equal(tl_pg_i64(PG,
                               "SELECT count(*) FROM pending_transfers p WHERE"
                               " (p.status = 2) <> EXISTS (SELECT 1 FROM transfers t WHERE"
                               "   t.pending_id = p.id AND t.flags & 4 <> 0"
                               "   AND t.amount = p.amount_posted)"
                               " OR (p.status = 3) <> EXISTS (SELECT 1 FROM transfers t WHERE"
                               "   t.pending_id = p.id AND t.flags & 8 <> 0)",
                               &n),
                     0);
    if (n != 0) {
        problems++;
        print_error("[%s] %" PRId64 " pending states disagree with their post/void rows\n",
                    name, n);
    }
    assert_int_equal(problems, 0);
}

/* ---- Tests. */

static tl_daemon daemons[2];

static void test_bank_one_service(void **state)
{
    (void)state;
    run_phase("one meridiand", daemons, 1, PHASE_A_MS_MAX, false);
    check_database("one meridiand");
}

static void test_bank_two_services_with_crash(void **state)
{
    (void)state;
    int port = tl_free_port();
    assert_int_equal(tl_meridiand_start(W.config_path, port, W.tmp_dir, &daemons[1]), 0);
    run_phase("two meridiand", daemons, 2, PHASE_B_MS_MAX, true);
    check_database("two meridiand");
    /* Both stop cleanly on SIGTERM (the second one is the restarted one). */
    assert_int_equal(tl_meridiand_stop(&daemons[1]), 0);
    assert_int_equal(tl_meridiand_stop(&daemons[0]), 0);
}

static int setup(void **state)
{
    (void)state;
    const char *s = getenv("MERIDIAN_BANK_SEED");
    seed = s ? strtoull(s, NULL, 0) : ((uint64_t)tl_wall_us() ^ ((uint64_t)getpid() << 32));
    print_message("itest_bank: seed %" PRIu64 " (replay with MERIDIAN_BANK_SEED=%" PRIu64 ")\n",
                  seed, seed);
    if (tl_setup_db_and_keys(&W) != 0)
        return -1;
    if (tl_meridiand_start(W.config_path, W.port, W.tmp_dir, &daemons[0]) != 0)
        return -1;
    PG = tl_pg_connect(W.dsn);
    if (PG == NULL)
        return -1;
    json_t *accs = json_array();
    for (int i = 0; i < BANK_ACCOUNTS; i++) {
        tl_uuid_random(accounts[i]);
        json_array_append_new(accs, tl_account(accounts[i], USD, 1,
                                               is_constrained(i) ? "debits_must_not_exceed_credits"
                                                                 : NULL));
    }
    tl_resp r;
    tl_post(&daemons[0], "/v1/accounts", W.key_acme, json_pack("{s:o}", "accounts", accs), &r);
    int rc = r.status == 200 && tl_results_count(&r) == BANK_ACCOUNTS ? 0 : -1;
    if (rc != 0)
        fprintf(stderr, "setup: accounts: HTTP %ld %s\n", r.status, r.body);
    tl_resp_release(&r);
    if (rc != 0)
        return -1;
    json_t *fund = json_array();
    for (int i = BANK_CONSTRAINED_FIRST; i <= BANK_CONSTRAINED_LAST; i++) {
        rec *rc_ = &all_recs[all_nrecs++];
        tl_uuid_random(rc_->id);
        rc_->state = REC_ACK;
        json_array_append_new(fund, tl_transfer(rc_->id, accounts[0], accounts[i], BANK_FUNDING,
                                                USD, NULL));
    }
    tl_post(&daemons[0], "/v1/transfers", W.key_acme, json_pack("{s:o}", "transfers", fund), &r);
    for (size_t i = 0; i < BANK_CONSTRAINED_LAST; i++)
        if (tl_result(&r, i) == NULL || strcmp(tl_result(&r, i), "ok") != 0)
            rc = -1;
    if (rc != 0)
        fprintf(stderr, "setup: funding: HTTP %ld %s\n", r.status, r.body);
    tl_resp_release(&r);
    return rc;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        if (daemons[i].pid > 0)
            tl_meridiand_stop(&daemons[i]);
    PQfinish(PG);
    PG = NULL;
    return 0;
}

int main(void)
{
    tl_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bank_one_service),
        cmocka_unit_test(test_bank_two_services_with_crash),
    };
    int failed = cmocka_run_group_tests_name("itest_bank", tests, setup, teardown);
    tl_world_release(&W, failed != 0);
    tl_shutdown();
    return failed == 0 ? 0 : 1;
}
