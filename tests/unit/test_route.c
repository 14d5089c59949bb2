/*
 * test_route.c — the leader route of meridiand (src/service/route.c)
 * without a live etcd: parsing of the leader key, the static route, the
 * connection strings built for a leader, and an etcd route whose cluster
 * cannot be reached (no leader: waits time out, no DSN is produced).
 * Following a real cell is tested by tests/integration/itest_follow.sh.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/log.h"
#include "service/route.h"

static void parses_leader_key(void **state)
{
    (void)state;
    const char *v = "{\"node\":\"n2\",\"epoch\":7,\"host\":\"127.0.0.1\",\"port\":25402}";
    route_snapshot s;
    memset(&s, 0, sizeof s);
    assert_int_equal(route_parse_leader(v, strlen(v), &s), 0);
    assert_true(s.has_leader);
    assert_string_equal(s.node, "n2");
    assert_string_equal(s.host, "127.0.0.1");
    assert_int_equal(s.port, 25402);
    assert_int_equal(s.epoch, 7);

    /* The epoch may come as a JSON string (int64 in etcd's JSON). */
    const char *str = "{\"node\":\"n1\",\"epoch\":\"12\",\"host\":\"db1\",\"port\":5432}";
    assert_int_equal(route_parse_leader(str, strlen(str), &s), 0);
    assert_int_equal(s.epoch, 12);
    assert_false(s.writable);

    /* The keeper marks the key once the promoted node takes writes. */
    const char *w = "{\"node\":\"n1\",\"epoch\":12,\"host\":\"db1\",\"port\":5432,"
                    "\"writable\":true}";
    assert_int_equal(route_parse_leader(w, strlen(w), &s), 0);
    assert_true(s.writable);
}

static void picks_the_address_advertised_for_our_region(void **state)
{
    (void)state;
    const char *v = "{\"node\":\"us-n1\",\"epoch\":3,\"host\":\"127.0.0.1\",\"port\":25401,"
                    "\"region\":\"us-east\",\"addrs\":{\"eu-west\":\"127.0.0.1:31001\"}}";
    route_snapshot s;
    memset(&s, 0, sizeof s);
    /* In eu-west: through the WAN link it advertises for eu-west. */
    assert_int_equal(route_parse_leader_in(v, strlen(v), "eu-west", &s), 0);
    assert_string_equal(s.host, "127.0.0.1");
    assert_int_equal(s.port, 31001);
    /* In its own region, or with no region: its own address. */
    assert_int_equal(route_parse_leader_in(v, strlen(v), "us-east", &s), 0);
    assert_int_equal(s.port, 25401);
    assert_int_equal(route_parse_leader_in(v, strlen(v), NULL, &s), 0);
    assert_int_equal(s.port, 25401);
    /* A malformed advertised address is ignored, not trusted. */
    const char *bad = "{\"node\":\"n\",\"epoch\":1,\"host\":\"h\",\"port\":1,"
                      "\"addrs\":{\"eu-west\":\"nonsense\"}}";
    assert_int_equal(route_parse_leader_in(bad, strlen(bad), "eu-west", &s), 0);
    assert_string_equal(s.host, "h");
    assert_int_equal(s.port, 1);
}

static void rejects_bad_leader_keys(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "not json",
        "[]",
        "{\"node\":\"n2\",\"host\":\"127.0.0.1\",\"port\":1}",               /* no epoch */
        "{\"node\":\"n2\",\"epoch\":0,\"host\":\"127.0.0.1\",\"port\":1}",   /* epoch 0 */
        "{\"node\":\"n2\",\"epoch\":1,\"host\":\"127.0.0.1\",\"port\":0}",   /* port 0 */
        "{\"node\":\"n2\",\"epoch\":1,\"host\":\"127.0.0.1\",\"port\":70000}",
        "{\"node\":\"n2\",\"epoch\":1,\"host\":\"\",\"port\":5432}",         /* empty host */
        /* A host that would inject conninfo keywords. */
        "{\"node\":\"n2\",\"epoch\":1,\"host\":\"h sslmode=disable\",\"port\":5432}",
        "{\"node\":\"n'2\",\"epoch\":1,\"host\":\"h\",\"port\":5432}",
        "{\"node\":\"n2\",\"epoch\":\"x\",\"host\":\"h\",\"port\":5432}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        route_snapshot s;
        memset(&s, 0, sizeof s);
        if (route_parse_leader(bad[i], strlen(bad[i]), &s) != -1)
            fail_msg("accepted bad leader key #%zu: %s", i, bad[i]);
        assert_false(s.has_leader);
    }
}

static void static_route_is_the_dsn(void **state)
{
    (void)state;
    char err[256];
    assert_null(route_create_static("", err, sizeof err));
    route_source *r = route_create_static("host=/tmp dbname=x", err, sizeof err);
    assert_non_null(r);
    assert_false(route_is_etcd(r));
    route_snapshot s;
    route_current(r, &s);
    assert_true(s.has_leader);
    assert_int_equal(s.generation, 1);
    assert_int_equal(s.epoch, 0);
    assert_int_equal(route_wait_leader(r, 0, &s), 0);
    /* Nothing ever changes a static route. */
    assert_int_equal(route_wait_change(r, 1, 20, &s), -1);
    char dsn[ROUTE_DSN_MAX];
    assert_int_equal(route_dsn(r, &s, dsn, sizeof dsn), 0);
    assert_string_equal(dsn, "host=/tmp dbname=x");
    char tiny[4];
    assert_int_equal(route_dsn(r, &s, tiny, sizeof tiny), -1);
    route_free(r);
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void unreachable_etcd_means_no_leader(void **state)
{
    (void)state;
    char err[256];
    /* Bad arguments. */
    assert_null(route_create_etcd("", "c1", "dbname=x", err, sizeof err));
    assert_null(route_create_etcd("http://127.0.0.1:1", "bad cell", "dbname=x", err, sizeof err));
    assert_null(route_create_etcd("http://127.0.0.1:1", "c1", "postgresql://h/x", err,
                                  sizeof err));
    assert_non_null(strstr(err, "keyword=value"));

    /* Port 1 refuses at once: the route starts without a leader. */
    route_source *r = route_create_etcd("http://127.0.0.1:1", "c1", "user=postgres dbname=x",
                                        err, sizeof err);
    assert_non_null(r);
    assert_true(route_is_etcd(r));
    assert_string_equal(route_cell(r), "c1");
    route_snapshot s;
    route_current(r, &s);
    assert_false(s.has_leader);
    char dsn[ROUTE_DSN_MAX];
    assert_int_equal(route_dsn(r, &s, dsn, sizeof dsn), -1);
    double t0 = mono_s();
    assert_int_equal(route_wait_leader(r, 300, &s), -1);
    double waited = mono_s() - t0;
    assert_true(waited >= 0.25 && waited < 5.0);
    assert_false(s.has_leader);
    route_free(r);
}

static void etcd_route_dsn_appends_host_and_port(void **state)
{
    (void)state;
    char err[256];
    route_source *r = route_create_etcd("http://127.0.0.1:1", "c1", "user=postgres dbname=x",
                                        err, sizeof err);
    assert_non_null(r);
    const char *v = "{\"node\":\"n3\",\"epoch\":3,\"host\":\"127.0.0.1\",\"port\":25403}";
    route_snapshot s;
    memset(&s, 0, sizeof s);
    assert_int_equal(route_parse_leader(v, strlen(v), &s), 0);
    char dsn[ROUTE_DSN_MAX];
    assert_int_equal(route_dsn(r, &s, dsn, sizeof dsn), 0);
    assert_string_equal(dsn, "user=postgres dbname=x host=127.0.0.1 port=25403");
    route_free(r);
}

int main(void)
{
    log_init(LOG_ERROR, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_leader_key),
        cmocka_unit_test(rejects_bad_leader_keys),
        cmocka_unit_test(picks_the_address_advertised_for_our_region),
        cmocka_unit_test(static_route_is_the_dsn),
        cmocka_unit_test(unreachable_etcd_means_no_leader),
        cmocka_unit_test(etcd_route_dsn_appends_host_and_port),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
