/*
 * test_etcd_codec.c — the JSON spoken with etcd 3.4's v3 gateway.
 *
 * Requests are compared whole (the builders sort keys), so a field with
 * the wrong name, a number sent as a JSON number where etcd wants a
 * string or a forgotten range_end fails. Answers are etcd's real shapes
 * (captured from etcd 3.4.23 with curl): base64 keys and values, 64-bit
 * numbers as strings, default-valued fields omitted — and the edge
 * cases the keeper relies on, above all a keepalive answer without a TTL
 * meaning the lease is gone.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/limits.h"
#include "etcd/etcd_codec.h"

#define LEADER_B64 "L21lcmlkaWFuL2NlbGxzL3VzL2xlYWRlcg=="
#define EPOCH_B64 "L21lcmlkaWFuL2NlbGxzL3VzL2Vwb2No"
#define HEADER                                                                                 \
    "\"header\":{\"cluster_id\":\"13455796455940752355\",\"member_id\":\"443629905751424238\"," \
    "\"revision\":\"12\",\"raft_term\":\"2\"}"

static char err[256];

static int setup(void **state) {
    (void)state;
    assert_true(sodium_init() >= 0);
    return 0;
}

/* Compare a built request with the expected text, then free it. */
static void expect_json(char *got, const char *want) {
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_base64_roundtrip(void **state) {
    (void)state;
    const char bin[] = "\0bin\xff" "ary";
    char *b64 = NULL;
    assert_int_equal(etcd_codec_b64_encode(bin, sizeof bin - 1, &b64), ETCD_OK);
    assert_string_equal(b64, "AGJpbv9hcnk=");
    char *back = NULL;
    size_t len = 0;
    assert_int_equal(etcd_codec_b64_decode(b64, &back, &len), ETCD_OK);
    assert_int_equal(len, sizeof bin - 1);
    assert_memory_equal(back, bin, len);
    assert_int_equal(back[len], '\0');
    free(b64);
    free(back);

    assert_int_equal(etcd_codec_b64_encode(NULL, 0, &b64), ETCD_OK);
    assert_string_equal(b64, "");
    assert_int_equal(etcd_codec_b64_decode(b64, &back, &len), ETCD_OK);
    assert_int_equal(len, 0);
    free(b64);
    free(back);

    /* Unpadded, URL-safe or junk: not what etcd sends. */
    assert_int_equal(etcd_codec_b64_decode("YQ", &back, &len), ETCD_E_PROTOCOL);
    assert_null(back);
    assert_int_equal(etcd_codec_b64_decode("a-b_", &back, &len), ETCD_E_PROTOCOL);
    assert_int_equal(etcd_codec_b64_decode("YQ==YQ==", &back, &len), ETCD_E_PROTOCOL);
}

static void test_decimal(void **state) {
    (void)state;
    int64_t v = 42;
    assert_int_equal(etcd_codec_parse_decimal("0", &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(etcd_codec_parse_decimal("-1", &v), 0);
    assert_int_equal(v, -1);
    assert_int_equal(etcd_codec_parse_decimal("9223372036854775807", &v), 0);
    assert_true(v == INT64_MAX);
    assert_int_equal(etcd_codec_parse_decimal("-9223372036854775808", &v), 0);
    assert_true(v == INT64_MIN);
    v = 7;
    const char *bad[] = {"9223372036854775808", "-9223372036854775809", "", "-", "+1", "1a",
                         " 1", "1 ", "12345678901234567890", "0x10", "1.0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(etcd_codec_parse_decimal(bad[i], &v), -1);
        assert_int_equal(v, 7); /* untouched on failure */
    }
}

static void test_int64_fields(void **state) {
    (void)state;
    int64_t v = 1;
    json_t *s = json_string("7587873920451112345");
    json_t *i = json_integer(12);
    json_t *b = json_true();
    json_t *over = json_string("99999999999999999999");
    assert_int_equal(etcd_codec_int64(s, &v), ETCD_OK);
    assert_true(v == INT64_C(7587873920451112345));
    assert_int_equal(etcd_codec_int64(i, &v), ETCD_OK);
    assert_int_equal(v, 12);
    assert_int_equal(etcd_codec_int64(NULL, &v), ETCD_OK); /* omitted = default */
    assert_int_equal(v, 0);
    assert_int_equal(etcd_codec_int64(b, &v), ETCD_E_PROTOCOL);
    assert_int_equal(etcd_codec_int64(over, &v), ETCD_E_PROTOCOL);
    json_decref(s);
    json_decref(i);
    json_decref(b);
    json_decref(over);
}

static void test_prefix_end(void **state) {
    (void)state;
    struct {
        const char *prefix;
        const char *end;
        size_t end_len;
    } cases[] = {
        {"/meridian/cells/", "/meridian/cells0", 16},
        {"a", "b", 1},
        {"a\xff", "b", 1},
        {"a\xff\xff", "b", 1},
        {"", "", 1},         /* "\0": the whole key space */
        {"\xff\xff", "", 1}, /* nothing above: to the end */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *end = NULL;
        size_t len = 0;
        assert_int_equal(etcd_codec_prefix_end(cases[i].prefix, &end, &len), 0);
        assert_int_equal(len, cases[i].end_len);
        assert_memory_equal(end, cases[i].end, len);
        free(end);
    }
}

static void test_range_and_put_requests(void **state) {
    (void)state;
    expect_json(etcd_codec_range_request("/meridian/cells/us/leader", false, 0),
                "{\"key\":\"" LEADER_B64 "\"}");
    expect_json(etcd_codec_range_request("/meridian/cells/", true, 100),
                "{\"key\":\"L21lcmlkaWFuL2NlbGxzLw==\",\"limit\":\"100\","
                "\"range_end\":\"L21lcmlkaWFuL2NlbGxzMA==\"}");
    /* The whole key space: key "\0", range_end "\0". */
    expect_json(etcd_codec_range_request("", true, 0),
                "{\"key\":\"AA==\",\"range_end\":\"AA==\"}");
    expect_json(etcd_codec_put_request("a", "node-a", 6, INT64_C(7587873920451112345)),
                "{\"key\":\"YQ==\",\"lease\":\"7587873920451112345\",\"value\":\"bm9kZS1h\"}");
    expect_json(etcd_codec_put_request("a", "", 0, 0), "{\"key\":\"YQ==\",\"value\":\"\"}");
    expect_json(etcd_codec_delete_request("a", false), "{\"key\":\"YQ==\"}");
    expect_json(etcd_codec_delete_request("a", true), "{\"key\":\"YQ==\",\"range_end\":\"Yg==\"}");
}

/* The keeper's "become leader": leader key absent AND epoch unchanged ->
 * leader key under the lease + epoch 6; otherwise read the leader. */
static void test_txn_request(void **state) {
    (void)state;
    const etcd_compare cmp[] = {
        {.key = "/meridian/cells/us/leader", .target = ETCD_CMP_CREATE,
         .result = ETCD_CMP_EQUAL, .number = 0},
        {.key = "/meridian/cells/us/epoch", .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL,
         .number = 41},
    };
    const etcd_op success[] = {
        {.kind = ETCD_OP_PUT, .key = "/meridian/cells/us/leader", .value = "node-a",
         .value_len = 6, .lease_id = 1766684586},
        {.kind = ETCD_OP_PUT, .key = "/meridian/cells/us/epoch", .value = "6", .value_len = 1},
    };
    const etcd_op failure[] = {{.kind = ETCD_OP_GET, .key = "/meridian/cells/us/leader"}};
    const etcd_txn txn = {cmp, 2, success, 2, failure, 1};
    expect_json(etcd_codec_txn_request(&txn),
                "{\"compare\":["
                "{\"create_revision\":\"0\",\"key\":\"" LEADER_B64
                "\",\"result\":\"EQUAL\",\"target\":\"CREATE\"},"
                "{\"key\":\"" EPOCH_B64
                "\",\"mod_revision\":\"41\",\"result\":\"EQUAL\",\"target\":\"MOD\"}],"
                "\"failure\":[{\"request_range\":{\"key\":\"" LEADER_B64 "\"}}],"
                "\"success\":["
                "{\"request_put\":{\"key\":\"" LEADER_B64
                "\",\"lease\":\"1766684586\",\"value\":\"bm9kZS1h\"}},"
                "{\"request_put\":{\"key\":\"" EPOCH_B64 "\",\"value\":\"Ng==\"}}]}");

    /* Value and lease comparisons, a prefix delete, no failure branch. */
    const etcd_compare cmp2[] = {
        {.key = "a", .target = ETCD_CMP_VALUE, .result = ETCD_CMP_NOT_EQUAL, .value = "b",
         .value_len = 1},
        {.key = "a", .target = ETCD_CMP_LEASE, .result = ETCD_CMP_GREATER, .number = 3},
        {.key = "a", .target = ETCD_CMP_VERSION, .result = ETCD_CMP_LESS, .number = 2},
    };
    const etcd_op del = {.kind = ETCD_OP_DELETE, .key = "a", .prefix = true};
    const etcd_txn txn2 = {cmp2, 3, &del, 1, NULL, 0};
    expect_json(etcd_codec_txn_request(&txn2),
                "{\"compare\":["
                "{\"key\":\"YQ==\",\"result\":\"NOT_EQUAL\",\"target\":\"VALUE\",\"value\":\"Yg==\"},"
                "{\"key\":\"YQ==\",\"lease\":\"3\",\"result\":\"GREATER\",\"target\":\"LEASE\"},"
                "{\"key\":\"YQ==\",\"result\":\"LESS\",\"target\":\"VERSION\",\"version\":\"2\"}],"
                "\"success\":[{\"request_delete_range\":{\"key\":\"YQ==\",\"range_end\":\"Yg==\"}}]}");
}

static void test_lease_and_watch_requests(void **state) {
    (void)state;
    expect_json(etcd_codec_lease_grant_request(10), "{\"TTL\":10}");
    expect_json(etcd_codec_lease_id_request(INT64_C(4390624949798744071), false),
                "{\"ID\":\"4390624949798744071\"}");
    expect_json(etcd_codec_lease_id_request(123, true), "{\"ID\":\"123\",\"keys\":true}");
    expect_json(etcd_codec_watch_request("/meridian/cells/us/leader", false, 0),
                "{\"create_request\":{\"key\":\"" LEADER_B64 "\",\"progress_notify\":true}}");
    expect_json(etcd_codec_watch_request("a", true, 42),
                "{\"create_request\":{\"key\":\"YQ==\",\"progress_notify\":true,"
                "\"range_end\":\"Yg==\",\"start_revision\":\"42\"}}");
}

static void test_parse_range(void **state) {
    (void)state;
    /* Second kv: lease set, value omitted (empty), version as a string. */
    const char *body =
        "{" HEADER ",\"kvs\":["
        "{\"key\":\"" LEADER_B64 "\",\"create_revision\":\"10\",\"mod_revision\":\"11\","
        "\"version\":\"2\",\"value\":\"AGJpbv9hcnk=\",\"lease\":\"7587873920451112345\"},"
        "{\"key\":\"" EPOCH_B64 "\",\"create_revision\":\"3\",\"mod_revision\":\"3\","
        "\"version\":\"1\"}],\"count\":\"2\"}";
    etcd_kv *kvs = NULL;
    size_t count = 0;
    assert_int_equal(etcd_codec_parse_range_response(body, strlen(body), 10, &kvs, &count, err,
                                                     sizeof err),
                     ETCD_OK);
    assert_int_equal(count, 2);
    assert_string_equal(kvs[0].key, "/meridian/cells/us/leader");
    assert_int_equal(kvs[0].value_len, 8);
    assert_memory_equal(kvs[0].value, "\0bin\xff" "ary", 8);
    assert_int_equal(kvs[0].create_revision, 10);
    assert_int_equal(kvs[0].mod_revision, 11);
    assert_int_equal(kvs[0].version, 2);
    assert_true(kvs[0].lease == INT64_C(7587873920451112345));
    assert_string_equal(kvs[1].key, "/meridian/cells/us/epoch");
    assert_int_equal(kvs[1].value_len, 0);
    assert_string_equal(kvs[1].value, "");
    assert_int_equal(kvs[1].lease, 0);
    etcd_kvs_free(kvs, count);

    /* More pairs than allowed, or etcd saying "more": a limit error. */
    assert_int_equal(etcd_codec_parse_range_response(body, strlen(body), 1, &kvs, &count, err,
                                                     sizeof err),
                     ETCD_E_LIMIT);
    assert_null(kvs);
    assert_int_equal(count, 0);
    const char *more = "{" HEADER ",\"kvs\":[{\"key\":\"YQ==\",\"mod_revision\":\"4\"}],"
                       "\"more\":true,\"count\":\"5\"}";
    assert_int_equal(etcd_codec_parse_range_response(more, strlen(more), 1, &kvs, &count, err,
                                                     sizeof err),
                     ETCD_E_LIMIT);

    /* Absent key: no kvs at all. */
    const char *none = "{" HEADER "}";
    assert_int_equal(etcd_codec_parse_range_response(none, strlen(none), 1, &kvs, &count, err,
                                                     sizeof err),
                     ETCD_OK);
    assert_int_equal(count, 0);
    assert_null(kvs);
}

static void test_parse_range_malformed(void **state) {
    (void)state;
    etcd_kv *kvs = NULL;
    size_t count = 0;
    const char *bad[] = {
        "{\"kvs\":[{\"key\":\"YQ==\"},",                                     /* truncated */
        "[1,2]",                                                             /* not an object */
        "{\"kvs\":{}}",                                                      /* kvs not a list */
        "{\"kvs\":[{\"key\":\"Y\"}]}",                                       /* bad base64 */
        "{\"kvs\":[{\"value\":\"YQ==\"}]}",                                  /* no key */
        "{\"kvs\":[{\"key\":\"YQ==\",\"mod_revision\":\"99999999999999999999\"}]}", /* overflow */
        "{\"kvs\":[{\"key\":\"YQ==\"},{\"key\":\"YQ==\",\"version\":\"x\"}]}", /* 2nd bad */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(etcd_codec_parse_range_response(bad[i], strlen(bad[i]), 10, &kvs,
                                                         &count, err, sizeof err),
                         ETCD_E_PROTOCOL);
        assert_null(kvs);
        assert_int_equal(count, 0);
        assert_true(err[0] != '\0');
    }
}

static void test_parse_txn(void **state) {
    (void)state;
    etcd_txn_result r;
    const char *won = "{" HEADER ",\"succeeded\":true,\"responses\":["
                      "{\"response_put\":{\"header\":{\"revision\":\"12\"}}},"
                      "{\"response_put\":{\"header\":{\"revision\":\"12\"}}}]}";
    assert_int_equal(etcd_codec_parse_txn_response(won, strlen(won), &r, err, sizeof err),
                     ETCD_OK);
    assert_true(r.succeeded);
    assert_int_equal(r.revision, 12);
    assert_int_equal(r.kv_count, 0);
    etcd_txn_result_release(&r);

    /* Lost: "succeeded" is omitted (false is the default); the failure
     * branch read the current holder. */
    const char *lost = "{" HEADER ",\"responses\":[{\"response_range\":{\"header\":"
                       "{\"revision\":\"12\"},\"kvs\":[{\"key\":\"" LEADER_B64
                       "\",\"create_revision\":\"9\",\"mod_revision\":\"9\",\"version\":\"1\","
                       "\"value\":\"bm9kZS1i\",\"lease\":\"55\"}],\"count\":\"1\"}}]}";
    assert_int_equal(etcd_codec_parse_txn_response(lost, strlen(lost), &r, err, sizeof err),
                     ETCD_OK);
    assert_false(r.succeeded);
    assert_int_equal(r.kv_count, 1);
    assert_string_equal(r.kvs[0].key, "/meridian/cells/us/leader");
    assert_string_equal(r.kvs[0].value, "node-b");
    assert_int_equal(r.kvs[0].lease, 55);
    etcd_txn_result_release(&r);
    assert_null(r.kvs);

    const char *bad = "{\"succeeded\":\"yes\"}";
    assert_int_equal(etcd_codec_parse_txn_response(bad, strlen(bad), &r, err, sizeof err),
                     ETCD_E_PROTOCOL);
}

static void test_parse_leases(void **state) {
    (void)state;
    int64_t id = 0, ttl = 0;
    const char *grant = "{" HEADER ",\"ID\":\"4390624949798744069\",\"TTL\":\"5\"}";
    assert_int_equal(etcd_codec_parse_lease_grant_response(grant, strlen(grant), &id, &ttl, err,
                                                           sizeof err),
                     ETCD_OK);
    assert_true(id == INT64_C(4390624949798744069));
    assert_int_equal(ttl, 5);
    const char *no_id = "{" HEADER ",\"TTL\":\"5\",\"error\":\"too many leases\"}";
    assert_int_equal(etcd_codec_parse_lease_grant_response(no_id, strlen(no_id), &id, &ttl, err,
                                                           sizeof err),
                     ETCD_E_PROTOCOL);
    assert_int_equal(id, 0);
    assert_non_null(strstr(err, "too many leases"));

    const char *alive = "{\"result\":{" HEADER ",\"ID\":\"4390624949798744071\",\"TTL\":\"5\"}}";
    assert_int_equal(etcd_codec_parse_keepalive_response(alive, strlen(alive), &ttl, err,
                                                         sizeof err),
                     ETCD_OK);
    assert_int_equal(ttl, 5);
    /* What etcd answers for an expired or revoked lease: no TTL at all. */
    const char *gone = "{\"result\":{" HEADER ",\"ID\":\"123\"}}";
    ttl = 9;
    assert_int_equal(etcd_codec_parse_keepalive_response(gone, strlen(gone), &ttl, err,
                                                         sizeof err),
                     ETCD_E_NOT_FOUND);
    assert_int_equal(ttl, 0);
    const char *stream_err =
        "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}";
    assert_int_equal(etcd_codec_parse_keepalive_response(stream_err, strlen(stream_err), &ttl,
                                                         err, sizeof err),
                     ETCD_E_PROTOCOL);
    assert_non_null(strstr(err, "no leader"));

    const char *ttl_live = "{" HEADER ",\"ID\":\"123\",\"TTL\":\"3\",\"grantedTTL\":\"5\"}";
    assert_int_equal(etcd_codec_parse_timetolive_response(ttl_live, strlen(ttl_live), &ttl, err,
                                                          sizeof err),
                     ETCD_OK);
    assert_int_equal(ttl, 3);
    const char *ttl_gone = "{" HEADER ",\"ID\":\"123\",\"TTL\":\"-1\"}";
    assert_int_equal(etcd_codec_parse_timetolive_response(ttl_gone, strlen(ttl_gone), &ttl, err,
                                                          sizeof err),
                     ETCD_E_NOT_FOUND);
}

static void test_parse_write_and_error(void **state) {
    (void)state;
    int64_t rev = 0, deleted = 0;
    const char *put = "{" HEADER "}";
    assert_int_equal(etcd_codec_parse_write_response(put, strlen(put), &rev, &deleted, err,
                                                     sizeof err),
                     ETCD_OK);
    assert_int_equal(rev, 12);
    assert_int_equal(deleted, 0);
    const char *del = "{" HEADER ",\"deleted\":\"1\"}";
    assert_int_equal(etcd_codec_parse_write_response(del, strlen(del), &rev, &deleted, err,
                                                     sizeof err),
                     ETCD_OK);
    assert_int_equal(deleted, 1);

    int code = 0;
    char msg[128];
    const char *notfound = "{\"error\":\"etcdserver: requested lease not found\","
                           "\"message\":\"etcdserver: requested lease not found\",\"code\":5}";
    etcd_codec_parse_error(notfound, strlen(notfound), &code, msg, sizeof msg);
    assert_int_equal(code, 5);
    assert_string_equal(msg, "etcdserver: requested lease not found");
    etcd_codec_parse_error("<html>bad gateway</html>", 24, &code, msg, sizeof msg);
    assert_int_equal(code, -1);
    assert_string_equal(msg, "<html>bad gateway</html>");
    etcd_codec_parse_error("", 0, &code, msg, sizeof msg);
    assert_string_equal(msg, "(empty answer)");
}

static void test_parse_watch(void **state) {
    (void)state;
    etcd_watch_msg m;
    const char *created = "{\"result\":{" HEADER ",\"created\":true}}";
    assert_int_equal(etcd_codec_parse_watch_message(created, strlen(created), &m, err, sizeof err),
                     ETCD_OK);
    assert_true(m.created);
    assert_false(m.canceled);
    assert_int_equal(m.header_revision, 12);
    assert_int_equal(m.event_count, 0);
    etcd_watch_msg_release(&m);

    /* A PUT has no "type" (PUT is the default); a DELETE's kv has only the
     * key and mod_revision. */
    const char *events =
        "{\"result\":{" HEADER ",\"events\":["
        "{\"kv\":{\"key\":\"YQ==\",\"create_revision\":\"5\",\"mod_revision\":\"5\","
        "\"version\":\"1\",\"value\":\"bm9kZS1h\"}},"
        "{\"type\":\"DELETE\",\"kv\":{\"key\":\"YQ==\",\"mod_revision\":\"6\"}}]}}";
    assert_int_equal(etcd_codec_parse_watch_message(events, strlen(events), &m, err, sizeof err),
                     ETCD_OK);
    assert_int_equal(m.event_count, 2);
    assert_int_equal(m.events[0].type, ETCD_EVENT_PUT);
    assert_int_equal(m.events[0].revision, 5);
    assert_string_equal(m.events[0].kv.key, "a");
    assert_string_equal(m.events[0].kv.value, "node-a");
    assert_int_equal(m.events[1].type, ETCD_EVENT_DELETE);
    assert_int_equal(m.events[1].revision, 6);
    assert_int_equal(m.events[1].kv.value_len, 0);
    etcd_watch_msg_release(&m);

    const char *compacted = "{\"result\":{\"header\":{\"raft_term\":\"2\"},\"canceled\":true,"
                            "\"compact_revision\":\"4\"}}";
    assert_int_equal(
        etcd_codec_parse_watch_message(compacted, strlen(compacted), &m, err, sizeof err),
        ETCD_OK);
    assert_true(m.canceled);
    assert_int_equal(m.compact_revision, 4);
    etcd_watch_msg_release(&m);

    const char *error = "{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}";
    assert_int_equal(etcd_codec_parse_watch_message(error, strlen(error), &m, err, sizeof err),
                     ETCD_OK);
    assert_true(m.error);
    assert_string_equal(m.reason, "etcdserver: no leader");
    etcd_watch_msg_release(&m);

    const char *bad_type = "{\"result\":{\"events\":[{\"type\":\"MERGE\",\"kv\":{\"key\":\"YQ==\","
                           "\"mod_revision\":\"3\"}}]}}";
    assert_int_equal(etcd_codec_parse_watch_message(bad_type, strlen(bad_type), &m, err,
                                                    sizeof err),
                     ETCD_E_PROTOCOL);
    assert_null(m.events);
    const char *no_rev = "{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\"}}]}}";
    assert_int_equal(etcd_codec_parse_watch_message(no_rev, strlen(no_rev), &m, err, sizeof err),
                     ETCD_E_PROTOCOL);
    assert_int_equal(etcd_codec_parse_watch_message("{\"x\":1}", 7, &m, err, sizeof err),
                     ETCD_E_PROTOCOL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base64_roundtrip),
        cmocka_unit_test(test_decimal),
        cmocka_unit_test(test_int64_fields),
        cmocka_unit_test(test_prefix_end),
        cmocka_unit_test(test_range_and_put_requests),
        cmocka_unit_test(test_txn_request),
        cmocka_unit_test(test_lease_and_watch_requests),
        cmocka_unit_test(test_parse_range),
        cmocka_unit_test(test_parse_range_malformed),
        cmocka_unit_test(test_parse_txn),
        cmocka_unit_test(test_parse_leases),
        cmocka_unit_test(test_parse_write_and_error),
        cmocka_unit_test(test_parse_watch),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
