/*
 * test_metrics.c — the Prometheus text rendered by metrics.c.
 *
 * The metrics are process-wide, so each test uses its own series (a
 * route, a result code) or checks values relative to a first render.
 * Expected lines are compared whole: a wrong value, a missing +Inf
 * bucket or a non-cumulative bucket fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "service/metrics.h"

/* The value on the line that starts with series + ' ', or -1 when the
 * series is absent. */
static long long series_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    const char *p = text;
    while (p != NULL && *p != '\0') {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') return atoll(p + n + 1);
        p = strchr(p, '\n');
        if (p != NULL) p++;
    }
    return -1;
}

static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    const char *p = text;
    while (p != NULL && *p != '\0') {
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0')) return 1;
        p = strchr(p, '\n');
        if (p != NULL) p++;
    }
    return 0;
}

static void expect_series(const char *text, const char *series, long long want)
{
    long long got = series_value(text, series);
    if (got != want) {
        print_error("series %s: want %lld, got %lld\n", series, want, got);
        fail();
    }
}

static void test_http_requests_and_duration(void **state)
{
    (void)state;
    metrics_http_observe("transfers_create", 200, 0.0003);
    metrics_http_observe("transfers_create", 200, 0.003);
    metrics_http_observe("transfers_create", 400, 20.0);
    char *t = metrics_render();
    assert_non_null(t);
    expect_series(t, "meridian_http_requests_total{route=\"transfers_create\",status=\"200\"}", 2);
    expect_series(t, "meridian_http_requests_total{route=\"transfers_create\",status=\"400\"}", 1);
    const char *h = "meridian_http_request_duration_seconds_bucket{route=\"transfers_create\",le=";
    char s[256];
    snprintf(s, sizeof s, "%s\"0.0005\"}", h);
    expect_series(t, s, 1);
    snprintf(s, sizeof s, "%s\"0.001\"}", h);
    expect_series(t, s, 1);
    snprintf(s, sizeof s, "%s\"0.005\"}", h);
    expect_series(t, s, 2);
    snprintf(s, sizeof s, "%s\"10\"}", h);
    expect_series(t, s, 2);
    snprintf(s, sizeof s, "%s\"+Inf\"}", h);
    expect_series(t, s, 3);
    expect_series(t, "meridian_http_request_duration_seconds_count{route=\"transfers_create\"}", 3);
    assert_true(has_line(t, "meridian_http_request_duration_seconds_sum{route=\"transfers_create\"} 20.003300000"));
    assert_true(has_line(t, "# TYPE meridian_http_requests_total counter"));
    assert_true(has_line(t, "# TYPE meridian_http_request_duration_seconds histogram"));
    free(t);
}

static void test_unknown_route_is_other(void **state)
{
    (void)state;
    char *before = metrics_render();
    assert_non_null(before);
    long long b = series_value(before, "meridian_http_requests_total{route=\"other\",status=\"404\"}");
    if (b < 0) b = 0;
    metrics_http_observe("no-such-route", 404, 0.001);
    metrics_http_observe(NULL, 404, 0.001);
    metrics_http_observe("other", 999, 0.001);
    char *t = metrics_render();
    assert_non_null(t);
    expect_series(t, "meridian_http_requests_total{route=\"other\",status=\"404\"}", b + 2);
    expect_series(t, "meridian_http_requests_total{route=\"other\",status=\"other\"}", 1);
    assert_null(strstr(t, "no-such-route"));
    free(before);
    free(t);
}

static void test_commit_histograms(void **state)
{
    (void)state;
    metrics_commit_observe(1, 0.002);
    metrics_commit_observe(3, 0.004);
    metrics_commit_observe(8190, 0.2);
    metrics_commit_observe(9000, 0.2); /* above the largest bucket: +Inf only */
    metrics_commit_retry();
    metrics_commit_retry();
    char *t = metrics_render();
    assert_non_null(t);
    expect_series(t, "meridian_commit_events_bucket{le=\"1\"}", 1);
    expect_series(t, "meridian_commit_events_bucket{le=\"2\"}", 1);
    expect_series(t, "meridian_commit_events_bucket{le=\"4\"}", 2);
    expect_series(t, "meridian_commit_events_bucket{le=\"4096\"}", 2);
    expect_series(t, "meridian_commit_events_bucket{le=\"8192\"}", 3);
    expect_series(t, "meridian_commit_events_bucket{le=\"+Inf\"}", 4);
    expect_series(t, "meridian_commit_events_sum", 1 + 3 + 8190 + 9000);
    expect_series(t, "meridian_commit_events_count", 4);
    expect_series(t, "meridian_commit_duration_seconds_bucket{le=\"0.0025\"}", 1);
    expect_series(t, "meridian_commit_duration_seconds_bucket{le=\"0.005\"}", 2);
    expect_series(t, "meridian_commit_duration_seconds_bucket{le=\"0.25\"}", 4);
    expect_series(t, "meridian_commit_duration_seconds_count", 4);
    assert_true(has_line(t, "meridian_commit_duration_seconds_sum 0.406000000"));
    expect_series(t, "meridian_commit_retries_total", 2);
    free(t);
}

static void test_results_and_gauges(void **state)
{
    (void)state;
    ledger_transfer_result tr[] = {LEDGER_TRANSFER_OK, LEDGER_TRANSFER_EXCEEDS_CREDITS,
                                   LEDGER_TRANSFER_OK};
    ledger_account_result ar[] = {LEDGER_ACCOUNT_EXISTS};
    metrics_transfer_results(tr, 3);
    metrics_account_results(ar, 1);
    metrics_queue_depth_set(7);
    metrics_db_up_set(1);
    char *t = metrics_render();
    assert_non_null(t);
    expect_series(t, "meridian_transfers_total{result=\"ok\"}", 2);
    expect_series(t, "meridian_transfers_total{result=\"exceeds_credits\"}", 1);
    /* Zero-valued results other than ok are omitted. */
    assert_null(strstr(t, "result=\"exceeds_debits\""));
    expect_series(t, "meridian_accounts_total{result=\"ok\"}", 0);
    expect_series(t, "meridian_accounts_total{result=\"exists\"}", 1);
    expect_series(t, "meridian_queue_depth", 7);
    expect_series(t, "meridian_db_up", 1);
    metrics_db_up_set(0);
    metrics_queue_depth_set(0);
    free(t);
    t = metrics_render();
    assert_non_null(t);
    expect_series(t, "meridian_db_up", 0);
    expect_series(t, "meridian_queue_depth", 0);
    free(t);
}

/* Every sample line belongs to a family announced by # TYPE, every
 * line ends with a newline, and every family has # HELP. */
static void test_text_format_shape(void **state)
{
    (void)state;
    char *t = metrics_render();
    assert_non_null(t);
    size_t len = strlen(t);
    assert_true(len > 0);
    assert_int_equal(t[len - 1], '\n');
    char family[128] = "";
    for (char *line = t; *line != '\0';) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        *end = '\0';
        if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_int_equal(sscanf(line + 7, "%127s", family), 1);
        } else if (strncmp(line, "# HELP ", 7) == 0) {
            /* next TYPE must name the same family: checked by order below */
        } else {
            assert_true(family[0] != '\0');
            size_t n = strlen(family);
            if (strncmp(line, family, n) != 0) {
                print_error("sample outside its family %s: %s\n", family, line);
                fail();
            }
            char *space = strrchr(line, ' ');
            assert_non_null(space);
            char *num_end = NULL;
            (void)strtod(space + 1, &num_end);
            assert_true(num_end != space + 1 && *num_end == '\0');
        }
        line = end + 1;
    }
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_requests_and_duration),
        cmocka_unit_test(test_unknown_route_is_other),
        cmocka_unit_test(test_commit_histograms),
        cmocka_unit_test(test_results_and_gauges),
        cmocka_unit_test(test_text_format_shape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
