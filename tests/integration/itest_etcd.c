/*
 * itest_etcd.c — the etcd client (src/etcd) against a real 3-member
 * etcd 3.4 cluster started with scripts/etcd.sh.
 *
 * What the keepers and meridiand will rely on, checked for real: plain
 * keys and prefixes; a lease kept alive outlives its TTL and a lease left
 * alone takes its key with it within about its TTL; of two clients
 * racing to create the leader key exactly one wins; compare-and-swap on
 * mod_revision; the keeper's "become leader" transaction; a watch sees
 * PUT and DELETE events in order with their values, and reports history
 * lost to compaction; a member without a majority refuses at once; and
 * killing a member (the raft leader, the harder case) leaves both the
 * client and a running watch working through the others, no event lost
 * or repeated.
 *
 * The cluster lives in a fresh temporary directory, is started once for
 * the group and stopped by PID in the group teardown (and at exit); the
 * directory is removed when every test passed and kept, with its logs,
 * otherwise. It runs under ctest with the PostgreSQL fixture, which this
 * test does not use. Every wait is bounded.
 */
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "etcd/etcd.h"
#include "testlib.h"

#define REQUEST_TIMEOUT_MS 2000
#define WAIT_MS_MAX 10000
#define RACE_ROUNDS 20
#define EVENTS_MAX 64

static char g_dir[PATH_MAX];
static char g_script[PATH_MAX];
static char g_endpoints[512];
static bool g_started;

/* Run scripts/etcd.sh with up to two arguments after DIR; stdout is
 * captured into out (may be NULL). Returns the exit code. */
static int etcd_sh(const char *cmd, const char *arg, char **out) {
    const char *argv[] = {"/bin/bash", g_script, cmd, g_dir, arg, NULL};
    return tl_run(argv, out);
}

static void stop_cluster(void) {
    if (!g_started) return;
    if (etcd_sh("stop", NULL, NULL) != 0) fprintf(stderr, "itest_etcd: etcd.sh stop failed\n");
    g_started = false;
}

static int group_setup(void **state) {
    (void)state;
    tl_init();
    snprintf(g_script, sizeof g_script, "%s/scripts/etcd.sh", tl_env("MERIDIAN_SOURCE_DIR"));
    snprintf(g_dir, sizeof g_dir, "/tmp/itest-etcd-XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("itest_etcd: mkdtemp");
        return -1;
    }
    atexit(stop_cluster); /* also when something calls exit() */
    const char *init[] = {"/bin/bash", g_script, "init", g_dir, "3", NULL};
    if (tl_run(init, NULL) != 0) return -1;
    g_started = true; /* from here on, stop whatever did start */
    if (etcd_sh("start", NULL, NULL) != 0) return -1;
    char *out = NULL;
    if (etcd_sh("endpoints", NULL, &out) != 0 || out == NULL) {
        free(out);
        return -1;
    }
    out[strcspn(out, "\n")] = '\0';
    snprintf(g_endpoints, sizeof g_endpoints, "%s", out);
    free(out);
    printf("itest_etcd: cluster in %s, endpoints %s\n", g_dir, g_endpoints);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    stop_cluster();
    return 0;
}

static etcd_client *client(void) {
    char err[256];
    etcd_client *c = etcd_client_create(g_endpoints, REQUEST_TIMEOUT_MS, err, sizeof err);
    if (c == NULL) fail_msg("etcd_client_create: %s", err);
    return c;
}

/* Expect rc == ETCD_OK, printing the client's error otherwise. */
#define EXPECT_OK(c, call)                                                                     \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        if (rc_ != ETCD_OK)                                                                    \
            fail_msg("%s -> %s: %s", #call, etcd_strerror(rc_), etcd_client_last_error(c));   \
    } while (0)

static void test_client_create_rejects_bad_endpoints(void **state) {
    (void)state;
    char err[256] = "";
    assert_null(etcd_client_create("", 1000, err, sizeof err));
    assert_true(err[0] != '\0');
    assert_null(etcd_client_create("127.0.0.1:2379", 1000, err, sizeof err));
    assert_non_null(strstr(err, "bad etcd endpoint"));
    assert_null(etcd_client_create(g_endpoints, 0, err, sizeof err));
}

static void test_put_get_delete_prefix(void **state) {
    (void)state;
    etcd_client *c = client();
    const char bin[] = "x\0y";
    int64_t rev1 = 0, rev2 = 0;
    EXPECT_OK(c, etcd_put(c, "/it/kv/a", "one", 3, 0, &rev1));
    EXPECT_OK(c, etcd_put(c, "/it/kv/b", bin, 3, 0, &rev2));
    EXPECT_OK(c, etcd_put(c, "/it/kvx", "outside", 7, 0, NULL));
    assert_true(rev2 > rev1 && rev1 > 0);

    etcd_kv kv;
    EXPECT_OK(c, etcd_get(c, "/it/kv/a", &kv));
    assert_string_equal(kv.key, "/it/kv/a");
    assert_int_equal(kv.value_len, 3);
    assert_string_equal(kv.value, "one");
    assert_int_equal(kv.mod_revision, rev1);
    assert_int_equal(kv.create_revision, rev1);
    assert_int_equal(kv.version, 1);
    assert_int_equal(kv.lease, 0);
    etcd_kv_release(&kv);

    /* Overwrite: version 2, create_revision unchanged. */
    int64_t rev3 = 0;
    EXPECT_OK(c, etcd_put(c, "/it/kv/a", "", 0, 0, &rev3));
    EXPECT_OK(c, etcd_get(c, "/it/kv/a", &kv));
    assert_int_equal(kv.value_len, 0);
    assert_int_equal(kv.version, 2);
    assert_int_equal(kv.create_revision, rev1);
    assert_int_equal(kv.mod_revision, rev3);
    etcd_kv_release(&kv);

    etcd_kv *kvs = NULL;
    size_t count = 0;
    EXPECT_OK(c, etcd_get_prefix(c, "/it/kv/", &kvs, &count, 10));
    assert_int_equal(count, 2);
    assert_string_equal(kvs[0].key, "/it/kv/a");
    assert_string_equal(kvs[1].key, "/it/kv/b");
    assert_int_equal(kvs[1].value_len, 3);
    assert_memory_equal(kvs[1].value, bin, 3);
    etcd_kvs_free(kvs, count);
    assert_int_equal(etcd_get_prefix(c, "/it/kv/", &kvs, &count, 1), ETCD_E_LIMIT);
    assert_null(kvs);
    assert_int_equal(count, 0);

    EXPECT_OK(c, etcd_delete(c, "/it/kv/a"));
    assert_int_equal(etcd_get(c, "/it/kv/a", &kv), ETCD_E_NOT_FOUND);
    assert_null(kv.key);
    EXPECT_OK(c, etcd_delete(c, "/it/kv/a")); /* absent: still fine */
    EXPECT_OK(c, etcd_get_prefix(c, "/it/kv/", &kvs, &count, 10));
    assert_int_equal(count, 1);
    etcd_kvs_free(kvs, count);

    assert_int_equal(etcd_put(c, "", "v", 1, 0, NULL), ETCD_E_INVALID);
    assert_int_equal(etcd_get(c, "/it/absent", &kv), ETCD_E_NOT_FOUND);
    assert_non_null(strstr(etcd_client_last_error(c), "does not exist"));
    etcd_client_free(c);
}

static void test_lease_keepalive_keeps_key(void **state) {
    (void)state;
    etcd_client *c = client();
    int64_t lease = 0, ttl = 0;
    EXPECT_OK(c, etcd_lease_grant(c, 2, &lease));
    assert_true(lease != 0);
    EXPECT_OK(c, etcd_put(c, "/it/lease/kept", "me", 2, lease, NULL));
    /* Twice the TTL with renewals every 500 ms. */
    int64_t until = tl_now_ms() + 4000;
    while (tl_now_ms() < until) {
        EXPECT_OK(c, etcd_lease_keepalive(c, lease, &ttl));
        assert_int_equal(ttl, 2);
        tl_sleep_ms(500);
    }
    etcd_kv kv;
    EXPECT_OK(c, etcd_get(c, "/it/lease/kept", &kv));
    assert_true(kv.lease == lease);
    etcd_kv_release(&kv);
    EXPECT_OK(c, etcd_lease_ttl(c, lease, &ttl));
    assert_true(ttl >= 1 && ttl <= 2);

    /* Revoking deletes the key at once; the lease is then gone for good. */
    EXPECT_OK(c, etcd_lease_revoke(c, lease));
    assert_int_equal(etcd_get(c, "/it/lease/kept", &kv), ETCD_E_NOT_FOUND);
    assert_int_equal(etcd_lease_keepalive(c, lease, &ttl), ETCD_E_NOT_FOUND);
    assert_int_equal(etcd_lease_ttl(c, lease, &ttl), ETCD_E_NOT_FOUND);
    assert_int_equal(etcd_lease_revoke(c, lease), ETCD_E_NOT_FOUND);
    assert_int_equal(etcd_put(c, "/it/lease/kept", "x", 1, lease, NULL), ETCD_E_NOT_FOUND);
    assert_int_equal(etcd_lease_grant(c, 0, &lease), ETCD_E_INVALID);
    etcd_client_free(c);
}

static void test_lease_lapse_removes_key(void **state) {
    (void)state;
    etcd_client *c = client();
    int64_t lease = 0, ttl = 0;
    EXPECT_OK(c, etcd_lease_grant(c, 2, &lease));
    int64_t t0 = tl_now_ms();
    EXPECT_OK(c, etcd_put(c, "/it/lease/lapsed", "me", 2, lease, NULL));
    etcd_kv kv;
    int rc = ETCD_OK;
    int64_t gone_ms = -1;
    while (tl_now_ms() - t0 < WAIT_MS_MAX) {
        rc = etcd_get(c, "/it/lease/lapsed", &kv);
        if (rc == ETCD_E_NOT_FOUND) {
            gone_ms = tl_now_ms() - t0;
            break;
        }
        assert_int_equal(rc, ETCD_OK);
        etcd_kv_release(&kv);
        tl_sleep_ms(100);
    }
    printf("itest_etcd: key of a 2 s lease disappeared after %" PRId64 " ms\n", gone_ms);
    assert_true(gone_ms >= 1500);    /* not before its TTL (minus clock slack) */
    /* Within about its TTL: etcd checks expiry every 500 ms, then revokes
     * through raft; the slack is for a loaded 2-core CI machine. */
    assert_true(gone_ms <= 4000);
    assert_int_equal(etcd_lease_keepalive(c, lease, &ttl), ETCD_E_NOT_FOUND);
    etcd_client_free(c);
}

/* --- Two clients race to create the same key. */

typedef struct racer {
    etcd_client *c;
    pthread_barrier_t *barrier;
    const char *key;
    const char *value;
    int rc;
    bool created;
    etcd_kv current;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    pthread_barrier_wait(r->barrier);
    r->rc = etcd_create_if_absent(r->c, r->key, r->value, strlen(r->value), 0, &r->created,
                                  &r->current);
    return NULL;
}

static void test_create_if_absent_race(void **state) {
    (void)state;
    etcd_client *c1 = client(), *c2 = client();
    int wins1 = 0, wins2 = 0;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        char key[64];
        snprintf(key, sizeof key, "/it/race/%d", round);
        pthread_barrier_t barrier;
        pthread_barrier_init(&barrier, NULL, 2);
        racer a = {.c = c1, .barrier = &barrier, .key = key, .value = "node-a"};
        racer b = {.c = c2, .barrier = &barrier, .key = key, .value = "node-b"};
        pthread_t ta, tb;
        assert_int_equal(pthread_create(&ta, NULL, race, &a), 0);
        assert_int_equal(pthread_create(&tb, NULL, race, &b), 0);
        pthread_join(ta, NULL);
        pthread_join(tb, NULL);
        pthread_barrier_destroy(&barrier);
        assert_int_equal(a.rc, ETCD_OK);
        assert_int_equal(b.rc, ETCD_OK);
        assert_true(a.created != b.created); /* exactly one winner */
        racer *winner = a.created ? &a : &b, *loser = a.created ? &b : &a;
        wins1 += a.created;
        wins2 += b.created;
        /* The loser was told who holds the key; the winner got nothing. */
        assert_null(winner->current.key);
        assert_string_equal(loser->current.key, key);
        assert_string_equal(loser->current.value, winner->value);
        etcd_kv kv;
        EXPECT_OK(c1, etcd_get(c1, key, &kv));
        assert_string_equal(kv.value, winner->value);
        assert_int_equal(kv.version, 1);
        etcd_kv_release(&kv);
        etcd_kv_release(&loser->current);
    }
    printf("itest_etcd: create_if_absent race: client 1 won %d, client 2 won %d\n", wins1, wins2);
    assert_int_equal(wins1 + wins2, RACE_ROUNDS);

    /* Without *created a taken key is ETCD_E_FAILED. */
    assert_int_equal(etcd_create_if_absent(c1, "/it/race/0", "z", 1, 0, NULL, NULL),
                     ETCD_E_FAILED);
    etcd_client_free(c1);
    etcd_client_free(c2);
}

static void test_cas_by_mod_revision(void **state) {
    (void)state;
    etcd_client *c = client();
    bool ok = false;
    EXPECT_OK(c, etcd_delete(c, "/it/cas"));
    /* expected 0: "must not exist". */
    EXPECT_OK(c, etcd_put_if_mod_revision(c, "/it/cas", "v1", 2, 0, 0, &ok));
    assert_true(ok);
    EXPECT_OK(c, etcd_put_if_mod_revision(c, "/it/cas", "v1b", 3, 0, 0, &ok));
    assert_false(ok);
    etcd_kv kv;
    EXPECT_OK(c, etcd_get(c, "/it/cas", &kv));
    int64_t rev = kv.mod_revision;
    etcd_kv_release(&kv);

    EXPECT_OK(c, etcd_put_if_mod_revision(c, "/it/cas", "v2", 2, 0, rev, &ok));
    assert_true(ok);
    /* The same expectation again is now stale. */
    EXPECT_OK(c, etcd_put_if_mod_revision(c, "/it/cas", "v3", 2, 0, rev, &ok));
    assert_false(ok);
    assert_int_equal(etcd_put_if_mod_revision(c, "/it/cas", "v3", 2, 0, rev, NULL),
                     ETCD_E_FAILED);
    EXPECT_OK(c, etcd_get(c, "/it/cas", &kv));
    assert_string_equal(kv.value, "v2");
    assert_true(kv.mod_revision > rev);
    etcd_kv_release(&kv);
    etcd_client_free(c);
}

/* The keeper's "become leader": leader key absent AND epoch unchanged ->
 * leader key under our lease + epoch+1, atomically. */
static void test_txn_become_leader(void **state) {
    (void)state;
    etcd_client *c = client();
    const char *leader = "/it/cells/us/leader", *epoch = "/it/cells/us/epoch";
    int64_t epoch_rev = 0, lease = 0;
    EXPECT_OK(c, etcd_delete(c, leader));
    EXPECT_OK(c, etcd_put(c, epoch, "5", 1, 0, &epoch_rev));
    EXPECT_OK(c, etcd_lease_grant(c, 10, &lease));
    const etcd_compare cmp[] = {
        {.key = leader, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0},
        {.key = epoch, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .number = epoch_rev},
    };
    const etcd_op success[] = {
        {.kind = ETCD_OP_PUT, .key = leader, .value = "node-a", .value_len = 6,
         .lease_id = lease},
        {.kind = ETCD_OP_PUT, .key = epoch, .value = "6", .value_len = 1},
    };
    const etcd_op failure[] = {{.kind = ETCD_OP_GET, .key = leader},
                               {.kind = ETCD_OP_GET, .key = epoch}};
    const etcd_txn txn = {cmp, 2, success, 2, failure, 2};
    etcd_txn_result r;
    EXPECT_OK(c, etcd_txn_run(c, &txn, &r));
    assert_true(r.succeeded);
    assert_true(r.revision > epoch_rev);
    assert_int_equal(r.kv_count, 0);
    int64_t won_rev = r.revision;
    etcd_txn_result_release(&r);

    etcd_kv kv;
    EXPECT_OK(c, etcd_get(c, epoch, &kv));
    assert_string_equal(kv.value, "6");
    assert_int_equal(kv.mod_revision, won_rev); /* both writes in one revision */
    etcd_kv_release(&kv);
    EXPECT_OK(c, etcd_get(c, leader, &kv));
    assert_true(kv.lease == lease);
    assert_int_equal(kv.mod_revision, won_rev);
    etcd_kv_release(&kv);

    /* A second candidate with the same (now stale) view loses and reads
     * the current holder and epoch. */
    EXPECT_OK(c, etcd_txn_run(c, &txn, &r));
    assert_false(r.succeeded);
    assert_int_equal(r.kv_count, 2);
    assert_string_equal(r.kvs[0].value, "node-a");
    assert_string_equal(r.kvs[1].value, "6");
    etcd_txn_result_release(&r);
    EXPECT_OK(c, etcd_lease_revoke(c, lease));
    etcd_client_free(c);
}

/* --- Watch. */

typedef struct seen {
    pthread_mutex_t mu;
    size_t count;
    etcd_event_type type[EVENTS_MAX];
    int64_t revision[EVENTS_MAX];
    char key[EVENTS_MAX][64];
    char value[EVENTS_MAX][32];
} seen;

static void on_event(const etcd_event *ev, void *arg) {
    seen *s = arg;
    pthread_mutex_lock(&s->mu);
    if (s->count < EVENTS_MAX) {
        s->type[s->count] = ev->type;
        s->revision[s->count] = ev->revision;
        snprintf(s->key[s->count], sizeof s->key[0], "%s", ev->kv.key ? ev->kv.key : "");
        snprintf(s->value[s->count], sizeof s->value[0], "%.*s", (int)ev->kv.value_len,
                 ev->kv.value ? ev->kv.value : "");
    }
    s->count++;
    pthread_mutex_unlock(&s->mu);
}

static size_t seen_count(seen *s) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Wait (bounded) until at least n events arrived. */
static bool wait_events(seen *s, size_t n) {
    int64_t deadline = tl_now_ms() + WAIT_MS_MAX;
    while (tl_now_ms() < deadline) {
        if (seen_count(s) >= n) return true;
        tl_sleep_ms(20);
    }
    return false;
}

static void expect_event(seen *s, size_t i, etcd_event_type type, const char *key,
                         const char *value, int64_t revision) {
    assert_int_equal(s->type[i], type);
    assert_string_equal(s->key[i], key);
    assert_string_equal(s->value[i], value);
    assert_int_equal(s->revision[i], revision);
}

static void test_watch_put_delete_in_order(void **state) {
    (void)state;
    etcd_client *c = client();
    int64_t start = 0, r1 = 0, r2 = 0, r3 = 0, r4 = 0;
    EXPECT_OK(c, etcd_put(c, "/it/watch-marker", "m", 1, 0, &start));
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = etcd_watch_start(g_endpoints, "/it/w/", true, start + 1, on_event, &s);
    assert_non_null(w);
    EXPECT_OK(c, etcd_put(c, "/it/w/a", "1", 1, 0, &r1));
    EXPECT_OK(c, etcd_put(c, "/it/w/a", "2", 1, 0, &r2));
    EXPECT_OK(c, etcd_put(c, "/it/other", "x", 1, 0, NULL)); /* outside the prefix */
    EXPECT_OK(c, etcd_delete(c, "/it/w/a"));
    EXPECT_OK(c, etcd_put(c, "/it/w/b", "3", 1, 0, &r4));
    etcd_kv kv;
    assert_int_equal(etcd_get(c, "/it/w/a", &kv), ETCD_E_NOT_FOUND);
    r3 = r4 - 1; /* the delete sits between the puts */
    assert_true(wait_events(&s, 4));
    tl_sleep_ms(200); /* nothing else may follow */
    int64_t t0 = tl_now_ms();
    etcd_watch_stop(w); /* interrupts the idle stream at once */
    int64_t stop_ms = tl_now_ms() - t0;
    assert_int_equal(s.count, 4);
    expect_event(&s, 0, ETCD_EVENT_PUT, "/it/w/a", "1", r1);
    expect_event(&s, 1, ETCD_EVENT_PUT, "/it/w/a", "2", r2);
    expect_event(&s, 2, ETCD_EVENT_DELETE, "/it/w/a", "", r3);
    expect_event(&s, 3, ETCD_EVENT_PUT, "/it/w/b", "3", r4);
    printf("itest_etcd: watch stopped in %" PRId64 " ms\n", stop_ms);
    assert_true(stop_ms < 1000);

    /* A single-key watch from "now" sees only that key, and the keeper's
     * two-key transaction arrives as one revision. */
    seen s2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    w = etcd_watch_start(g_endpoints, "/it/w/b", false, 0, on_event, &s2);
    assert_non_null(w);
    tl_sleep_ms(300); /* let the stream set up: "from now" starts at creation */
    EXPECT_OK(c, etcd_put(c, "/it/w/bb", "no", 2, 0, NULL));
    EXPECT_OK(c, etcd_put(c, "/it/w/b", "4", 1, 0, &r1));
    assert_true(wait_events(&s2, 1));
    tl_sleep_ms(200);
    etcd_watch_stop(w);
    assert_int_equal(s2.count, 1);
    expect_event(&s2, 0, ETCD_EVENT_PUT, "/it/w/b", "4", r1);
    etcd_client_free(c);
}

/* A member cut off from the majority refuses at once ("no leader")
 * instead of hanging until the timeout: the keeper relies on this to
 * notice an isolated member quickly. Uses e1 alone, then restores. */
static void test_minority_member_refuses(void **state) {
    (void)state;
    char e1[128];
    snprintf(e1, sizeof e1, "%.*s", (int)strcspn(g_endpoints, ","), g_endpoints);
    assert_int_equal(etcd_sh("stop", "e2", NULL), 0);
    assert_int_equal(etcd_sh("stop", "e3", NULL), 0);
    char err[256];
    etcd_client *c = etcd_client_create(e1, REQUEST_TIMEOUT_MS, err, sizeof err);
    assert_non_null(c);
    /* e1 may still believe in a leader for up to an election timeout. */
    int rc = ETCD_OK;
    int64_t t0 = tl_now_ms(), call_ms = 0;
    while (tl_now_ms() - t0 < WAIT_MS_MAX) {
        int64_t t1 = tl_now_ms();
        rc = etcd_put(c, "/it/minority", "x", 1, 0, NULL);
        call_ms = tl_now_ms() - t1;
        if (rc != ETCD_OK && strstr(etcd_client_last_error(c), "no leader") != NULL) break;
        tl_sleep_ms(100);
    }
    printf("itest_etcd: minority member refused after %" PRId64 " ms: %s\n", tl_now_ms() - t0,
           etcd_client_last_error(c));
    assert_int_equal(rc, ETCD_E_UNAVAILABLE);
    assert_non_null(strstr(etcd_client_last_error(c), "no leader"));
    assert_true(call_ms < REQUEST_TIMEOUT_MS / 2); /* refused, not timed out */
    bool created = true;
    t0 = tl_now_ms();
    assert_int_equal(etcd_create_if_absent(c, "/it/minority", "x", 1, 0, &created, NULL),
                     ETCD_E_UNAVAILABLE);
    assert_true(tl_now_ms() - t0 < REQUEST_TIMEOUT_MS / 2);
    etcd_kv kv;
    assert_int_equal(etcd_get(c, "/it/minority", &kv), ETCD_E_UNAVAILABLE);

    /* Bring the majority back: e1 serves again. */
    assert_int_equal(etcd_sh("start", NULL, NULL), 0);
    rc = ETCD_E_UNAVAILABLE;
    t0 = tl_now_ms();
    while (rc != ETCD_OK && tl_now_ms() - t0 < WAIT_MS_MAX) {
        rc = etcd_put(c, "/it/minority", "y", 1, 0, NULL);
        if (rc != ETCD_OK) tl_sleep_ms(100);
    }
    if (rc != ETCD_OK) fail_msg("e1 does not serve after the majority is back: %s",
                                etcd_client_last_error(c));
    etcd_client_free(c);
}

/* The raft leader's name (e1..e3) and client URL, from etcd.sh leader. */
static void find_leader(char name[8], char url[128]) {
    char *out = NULL;
    if (etcd_sh("leader", NULL, &out) != 0 || out == NULL) fail_msg("etcd.sh leader failed");
    out[strcspn(out, "\n")] = '\0';
    snprintf(name, 8, "%s", out);
    free(out);
    int index = name[0] == 'e' ? atoi(name + 1) : 0;
    if (index < 1) fail_msg("unexpected leader name %s", name);
    /* Members are listed in g_endpoints in order e1, e2, e3. */
    const char *p = g_endpoints;
    for (int i = 1; i < index && p != NULL; i++) {
        p = strchr(p, ',');
        if (p != NULL) p++;
    }
    if (p == NULL) fail_msg("leader %s not in %s", name, g_endpoints);
    size_t n = strcspn(p, ",");
    snprintf(url, 128, "%.*s", (int)n, p);
}

/* Kill the raft leader while a client and a watch are using it: both
 * carry on through the other two members once they have elected a new
 * leader, the watch without losing or repeating an event. */
static void test_leader_failure(void **state) {
    (void)state;
    char leader[8], leader_url[128], eps[sizeof g_endpoints + 160];
    find_leader(leader, leader_url);
    /* The leader first, so the client and the watch start on it (the
     * client drops the duplicate). */
    snprintf(eps, sizeof eps, "%s,%s", leader_url, g_endpoints);
    char err[256];
    etcd_client *c = etcd_client_create(eps, REQUEST_TIMEOUT_MS, err, sizeof err);
    assert_non_null(c);
    assert_string_equal(etcd_client_endpoint(c), leader_url);
    int64_t start = 0;
    EXPECT_OK(c, etcd_put(c, "/it/fo/marker", "m", 1, 0, &start));
    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = etcd_watch_start(eps, "/it/fo/k", false, start + 1, on_event, &s);
    assert_non_null(w);
    int64_t r1 = 0;
    EXPECT_OK(c, etcd_put(c, "/it/fo/k", "before", 6, 0, &r1));
    assert_true(wait_events(&s, 1));

    printf("itest_etcd: killing the raft leader %s (%s)\n", leader, leader_url);
    int64_t t0 = tl_now_ms();
    assert_int_equal(etcd_sh("kill", leader, NULL), 0); /* returns once it is gone */
    printf("itest_etcd: %s gone after %" PRId64 " ms\n", leader, tl_now_ms() - t0);

    /* Until the survivors elect a leader (about one election timeout)
     * they refuse writes at once ("no leader"): retry, bounded. */
    int rc = ETCD_E_UNAVAILABLE;
    int64_t r2 = 0;
    int attempts = 0;
    while (rc != ETCD_OK && tl_now_ms() - t0 < WAIT_MS_MAX) {
        attempts++;
        rc = etcd_put(c, "/it/fo/k", "after", 5, 0, &r2);
        if (rc != ETCD_OK) {
            assert_int_equal(rc, ETCD_E_UNAVAILABLE);
            tl_sleep_ms(100);
        }
    }
    if (rc != ETCD_OK) fail_msg("no write after killing the leader: %s", etcd_client_last_error(c));
    printf("itest_etcd: first write %" PRId64 " ms after the kill (%d attempts), via %s\n",
           tl_now_ms() - t0, attempts, etcd_client_endpoint(c));
    assert_string_not_equal(etcd_client_endpoint(c), leader_url);

    /* Reads, transactions and leases work through the survivors. */
    etcd_kv kv;
    EXPECT_OK(c, etcd_get(c, "/it/fo/k", &kv));
    assert_string_equal(kv.value, "after");
    etcd_kv_release(&kv);
    bool ok = false;
    EXPECT_OK(c, etcd_put_if_mod_revision(c, "/it/fo/k", "cas", 3, 0, r2, &ok));
    assert_true(ok);
    int64_t lease = 0, ttl = 0;
    EXPECT_OK(c, etcd_lease_grant(c, 5, &lease));
    EXPECT_OK(c, etcd_lease_keepalive(c, lease, &ttl));
    EXPECT_OK(c, etcd_lease_revoke(c, lease));

    /* A fresh client whose first endpoint is dead fails over at once. */
    etcd_client *c2 = etcd_client_create(eps, REQUEST_TIMEOUT_MS, err, sizeof err);
    assert_non_null(c2);
    EXPECT_OK(c2, etcd_get(c2, "/it/fo/k", &kv));
    assert_string_equal(kv.value, "cas");
    etcd_kv_release(&kv);
    etcd_client_free(c2);

    /* The watch reconnected to a survivor and saw both later writes,
     * each exactly once. */
    assert_true(wait_events(&s, 3));
    tl_sleep_ms(300);
    etcd_watch_stop(w);
    assert_int_equal(s.count, 3);
    expect_event(&s, 0, ETCD_EVENT_PUT, "/it/fo/k", "before", r1);
    expect_event(&s, 1, ETCD_EVENT_PUT, "/it/fo/k", "after", r2);
    assert_string_equal(s.value[2], "cas");
    assert_true(s.revision[2] > r2);

    /* Restart the killed member: it rejoins and serves again. */
    assert_int_equal(etcd_sh("start", leader, NULL), 0);
    etcd_client *c3 = etcd_client_create(leader_url, REQUEST_TIMEOUT_MS, err, sizeof err);
    assert_non_null(c3);
    rc = ETCD_E_UNAVAILABLE;
    t0 = tl_now_ms();
    while (rc != ETCD_OK && tl_now_ms() - t0 < WAIT_MS_MAX) {
        rc = etcd_get(c3, "/it/fo/k", &kv);
        if (rc != ETCD_OK) tl_sleep_ms(100);
    }
    if (rc != ETCD_OK) fail_msg("restarted %s does not serve: %s", leader, etcd_client_last_error(c3));
    assert_string_equal(kv.value, "cas");
    etcd_kv_release(&kv);
    etcd_client_free(c3);
    etcd_client_free(c);
}

/* A watch from a revision that was compacted away reports the loss
 * (ETCD_EVENT_COMPACTED) and carries on from the oldest revision kept. */
static void test_watch_after_compaction(void **state) {
    (void)state;
    etcd_client *c = client();
    int64_t r1 = 0, r2 = 0, r3 = 0, r4 = 0;
    EXPECT_OK(c, etcd_put(c, "/it/compact/k", "1", 1, 0, &r1));
    EXPECT_OK(c, etcd_put(c, "/it/compact/k", "2", 1, 0, &r2));
    EXPECT_OK(c, etcd_put(c, "/it/compact/k", "3", 1, 0, &r3));
    char rev[24];
    snprintf(rev, sizeof rev, "%" PRId64, r3);
    const char *argv[] = {"/bin/bash", g_script, "ctl", g_dir, "compaction", rev, NULL};
    char *out = NULL;
    assert_int_equal(tl_run(argv, &out), 0);
    free(out);

    seen s = {.mu = PTHREAD_MUTEX_INITIALIZER};
    etcd_watch *w = etcd_watch_start(g_endpoints, "/it/compact/k", false, r1, on_event, &s);
    assert_non_null(w);
    assert_true(wait_events(&s, 2));
    EXPECT_OK(c, etcd_put(c, "/it/compact/k", "4", 1, 0, &r4));
    assert_true(wait_events(&s, 3));
    tl_sleep_ms(200);
    etcd_watch_stop(w);
    assert_int_equal(s.count, 3);
    expect_event(&s, 0, ETCD_EVENT_COMPACTED, "", "", r3);
    expect_event(&s, 1, ETCD_EVENT_PUT, "/it/compact/k", "3", r3);
    expect_event(&s, 2, ETCD_EVENT_PUT, "/it/compact/k", "4", r4);
    etcd_client_free(c);
}

/* Nothing listens: ETCD_E_UNAVAILABLE with a message, within the bound. */
static void test_no_member_answers(void **state) {
    (void)state;
    char eps[128];
    int p1 = tl_free_port(), p2 = tl_free_port();
    assert_true(p1 > 0 && p2 > 0);
    snprintf(eps, sizeof eps, "http://127.0.0.1:%d,http://127.0.0.1:%d", p1, p2);
    char err[256];
    etcd_client *c = etcd_client_create(eps, 500, err, sizeof err);
    assert_non_null(c);
    etcd_kv kv;
    int64_t t0 = tl_now_ms();
    assert_int_equal(etcd_get(c, "/it/x", &kv), ETCD_E_UNAVAILABLE);
    assert_true(tl_now_ms() - t0 < 2000);
    assert_non_null(strstr(etcd_client_last_error(c), "no etcd member answered"));
    bool created = true;
    assert_int_equal(etcd_create_if_absent(c, "/it/x", "v", 1, 0, &created, NULL),
                     ETCD_E_UNAVAILABLE);
    assert_false(created);
    etcd_client_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_create_rejects_bad_endpoints),
        cmocka_unit_test(test_put_get_delete_prefix),
        cmocka_unit_test(test_lease_keepalive_keeps_key),
        cmocka_unit_test(test_lease_lapse_removes_key),
        cmocka_unit_test(test_create_if_absent_race),
        cmocka_unit_test(test_cas_by_mod_revision),
        cmocka_unit_test(test_txn_become_leader),
        cmocka_unit_test(test_watch_put_delete_in_order),
        cmocka_unit_test(test_watch_after_compaction),
        cmocka_unit_test(test_no_member_answers),
        cmocka_unit_test(test_minority_member_refuses),
        cmocka_unit_test(test_leader_failure), /* last: kills and restarts a member */
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    stop_cluster();
    if (failed == 0 && g_dir[0] != '\0') {
        const char *argv[] = {"/bin/rm", "-rf", g_dir, NULL};
        tl_run(argv, NULL);
    } else if (g_dir[0] != '\0') {
        fprintf(stderr, "itest_etcd: cluster directory and logs kept in %s\n", g_dir);
    }
    tl_shutdown();
    return failed == 0 ? 0 : 1;
}
