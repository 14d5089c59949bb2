/*
 * test_drill_html.c — the HTML drill report renders what the JSON says:
 * verdict, numbers, one timeline per run, and escaped text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drill/html.h"

static char *render(const char *json_text)
{
    json_error_t e;
    json_t *rep = json_loads(json_text, 0, &e);
    assert_non_null(rep);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(drill_report_html(f, rep), 0);
    fclose(f);
    json_decref(rep);
    return buf;
}

static void renders_a_passing_drill(void **state)
{
    (void)state;
    char *html = render(
        "{\"scenario\":\"node-loss\",\"runs\":2,\"runs_wanted\":2,\"rto_s_median\":4.5,"
        "\"rto_s_max\":5.25,\"detection_s_median\":3.1,\"promotion_s_median\":4.2,"
        "\"acked_total\":1234,\"acked_lost\":0,\"doubled\":0,\"invariant_violations\":0,"
        "\"end_state_healthy\":true,\"pass\":true,\"details\":["
        "{\"run\":1,\"fault\":\"kill-node\",\"leader_before\":\"n1\",\"leader_after\":\"n2\","
        "\"epoch_before\":1,\"epoch_after\":2,\"rto_s\":4.5,\"detection_s\":3.1,\"promotion_s\":4.2,"
        "\"acked\":600,\"db\":{\"acked_missing\":0,\"acked_doubled\":0},"
        "\"invariant_violations\":0,\"end_state_healthy\":true,\"pass\":true},"
        "{\"run\":2,\"fault\":\"kill-node\",\"leader_before\":\"n2\",\"leader_after\":\"n1\","
        "\"epoch_before\":2,\"epoch_after\":3,\"rto_s\":5.25,\"detection_s\":3.0,\"promotion_s\":4.9,"
        "\"acked\":634,\"db\":{\"acked_missing\":0,\"acked_doubled\":0},"
        "\"invariant_violations\":0,\"end_state_healthy\":true,\"pass\":true}]}");
    assert_non_null(strstr(html, "<!DOCTYPE html>"));
    assert_non_null(strstr(html, "class=\"pass\""));
    assert_null(strstr(html, "class=\"fail\""));
    assert_non_null(strstr(html, "4.500 s"));  /* median RTO */
    assert_non_null(strstr(html, "5.250 s"));  /* worst RTO */
    assert_non_null(strstr(html, "<td>1234</td>"));
    /* one SVG timeline per run, with its markers */
    const char *p = html;
    int svgs = 0;
    while ((p = strstr(p, "<svg")) != NULL) {
        svgs++;
        p++;
    }
    assert_int_equal(svgs, 2);
    assert_non_null(strstr(html, "first write acknowledged (RTO) 4.50 s"));
    assert_non_null(strstr(html, "promoted 4.90 s"));
    assert_non_null(strstr(html, "epoch 2 &rarr; 3"));
    /* self-contained: no scripts, no external resources */
    assert_null(strstr(html, "<script"));
    assert_null(strstr(html, "http://"));
    assert_null(strstr(html, "https://"));
    free(html);
}

static void marks_failure_and_escapes_text(void **state)
{
    (void)state;
    char *html = render(
        "{\"scenario\":\"db-crash\",\"runs\":1,\"runs_wanted\":1,\"rto_s_median\":null,"
        "\"acked_total\":10,\"acked_lost\":3,\"doubled\":0,\"invariant_violations\":3,"
        "\"end_state_healthy\":false,\"pass\":false,\"error\":\"node <n1> & co\","
        "\"details\":[{\"run\":1,\"fault\":\"kill-db\",\"leader_before\":\"n1\","
        "\"leader_after\":null,\"epoch_before\":1,\"epoch_after\":1,\"rto_s\":null,"
        "\"waited_s\":60.0,\"acked\":10,\"db\":{\"acked_missing\":3,\"acked_doubled\":0},"
        "\"invariant_violations\":3,\"end_state_healthy\":false,\"pass\":false}]}");
    assert_non_null(strstr(html, "class=\"fail\""));
    assert_non_null(strstr(html, "node &lt;n1&gt; &amp; co"));
    assert_null(strstr(html, "<n1>"));
    assert_non_null(strstr(html, "<td>&ndash;</td>")); /* RTO not measured */
    assert_non_null(strstr(html, "<td>3</td>"));       /* lost */
    assert_non_null(strstr(html, "not healthy"));
    free(html);
}

static void refuses_a_non_object(void **state)
{
    (void)state;
    json_t *a = json_array();
    assert_int_equal(drill_report_html(stdout, a), -1);
    assert_int_equal(drill_report_html(NULL, a), -1);
    json_decref(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(renders_a_passing_drill),
        cmocka_unit_test(marks_failure_and_escapes_text),
        cmocka_unit_test(refuses_a_non_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
