/*
 * test_kmetrics.c — the keeper's Prometheus text (kmetrics.c): the state
 * gauges, and the replication lag a standby exports (bytes and seconds,
 * labelled by role, so the DR standby's lag — the RPO of a regional
 * failover — can be alerted on), absent on a primary.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "keeper/kmetrics.h"

static void test_dr_standby_exports_its_lag(void **state)
{
    (void)state;
    kmetrics_snapshot s = {.node = "us-dr1", .cell = "us", .state = "standby", .etcd_ok = true,
                           .pg_running = true, .pg_in_recovery = true, .epoch = 3,
                           .dr = true, .lag_known = true, .lag_bytes = 16384, .lag_ms = 250};
    kmetrics_publish(&s);
    char *text = kmetrics_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "meridian_keeper_state{cell=\"us\",node=\"us-dr1\",state=\"standby\"} 1\n"));
    assert_non_null(strstr(text, "meridian_keeper_replication_lag_bytes{cell=\"us\",node=\"us-dr1\",role=\"dr\"} 16384\n"));
    assert_non_null(strstr(text, "meridian_keeper_replication_lag_seconds{cell=\"us\",node=\"us-dr1\",role=\"dr\"} 0.250\n"));
    assert_non_null(strstr(text, "meridian_keeper_epoch{cell=\"us\",node=\"us-dr1\"} 3\n"));
    free(text);
}

static void test_primary_exports_no_lag_series(void **state)
{
    (void)state;
    kmetrics_snapshot s = {.node = "us-n1", .cell = "us", .state = "primary", .leader = true,
                           .etcd_ok = true, .pg_running = true, .epoch = 2,
                           .lease_left_ms = 4500, .sync_standbys = 2};
    kmetrics_publish(&s);
    char *text = kmetrics_render();
    assert_non_null(text);
    /* the HELP/TYPE lines stay, the series does not */
    assert_non_null(strstr(text, "# TYPE meridian_keeper_replication_lag_bytes gauge\n"));
    assert_null(strstr(text, "meridian_keeper_replication_lag_bytes{"));
    assert_null(strstr(text, "meridian_keeper_replication_lag_seconds{"));
    assert_non_null(strstr(text, "meridian_keeper_leader{cell=\"us\",node=\"us-n1\"} 1\n"));
    assert_non_null(strstr(text, "meridian_keeper_lease_left_seconds{cell=\"us\",node=\"us-n1\"} 4.500\n"));
    assert_non_null(strstr(text, "meridian_keeper_sync_standbys{cell=\"us\",node=\"us-n1\"} 2\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dr_standby_exports_its_lag),
        cmocka_unit_test(test_primary_exports_no_lag_series),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
