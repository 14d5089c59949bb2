/*
 * test_codec_fastpath.c — the codec's fast paths equal jansson's output.
 *
 * codec_parse_body cuts long plain strings out before jansson parses a
 * body, and codec_canonical_json writes metadata text without
 * json_dumps. Both promise the very results of the plain jansson calls
 * (the tree with its key order, the canonical bytes, every error with
 * its line and column), which stored metadata and idempotent retries
 * rely on. Here seeded random trees, their texts in several layouts and
 * random mutations of those texts are run through both ways and compared.
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
#include "service/codec.h"

/* ---- Seeded generator (xorshift64*). */
static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * UINT64_C(2685821657736338717);
}

static size_t below(size_t n)
{
    return (size_t)(rnd() % n);
}

/* Append one random piece of text to buf (valid UTF-8 throughout). */
static size_t put_piece(char *buf, size_t at, int kind)
{
    static const char *const special[] = {"\"", "\\", "\n", "\t", "\x01", "\x1f", "\x7f",
                                          "/",  "\b", "\f", "\r", "\xc3\xa9",
                                          "\xe4\xb8\xad", "\xf0\x9f\x98\x80"};
    if (kind == 0 || below(100) >= 3) {
        buf[at] = (char)(0x20 + below(0x5f)); /* printable ASCII */
        if (buf[at] == '"' || buf[at] == '\\')
            buf[at] = 'q';
        return 1;
    }
    const char *s = special[below(sizeof special / sizeof special[0])];
    size_t n = strlen(s);
    memcpy(buf + at, s, n);
    return n;
}

/* A random string: short or long (fast path sized), plain or not, or a
 * text that looks like a placeholder ("0", "12"). */
static json_t *random_string(void)
{
    char buf[4096];
    size_t len = 0;
    int shape = (int)below(6);
    if (shape == 5) {
        snprintf(buf, sizeof buf, "%zu", below(20));
        return json_string(buf);
    }
    size_t target = shape <= 1 ? below(20) : 120 + below(700);
    int kind = shape == 2 || shape == 0 ? 0 : 1;
    while (len < target)
        len += put_piece(buf, len, kind);
    return json_stringn(buf, len);
}

static void random_key(char *out, size_t size)
{
    static const char *const fixed[] = {"a", "ab", "b", "", "A", "\xc3\xa9", "a\"b", "z\\"};
    if (below(3) == 0) {
        snprintf(out, size, "%s", fixed[below(sizeof fixed / sizeof fixed[0])]);
        return;
    }
    json_t *s = random_string();
    snprintf(out, size, "%s", json_string_value(s));
    json_decref(s);
}

static json_t *random_value(int depth)
{
    size_t pick = below(depth >= 5 ? 7 : 10);
    switch (pick) {
    case 0: return json_null();
    case 1: return json_true();
    case 2: return json_false();
    case 3: {
        static const json_int_t ints[] = {0, 1, -1, 42, INT64_MAX, INT64_MIN, 9007199254740993};
        return json_integer(below(2) ? ints[below(7)] : (json_int_t)(rnd() >> below(64)));
    }
    case 4: {
        static const double reals[] = {0.5, -2.25, 1e300, 0.1, 123456789.125, -0.0, 3e-10};
        return json_real(reals[below(7)]);
    }
    case 5:
    case 6: return random_string();
    case 7:
    case 8: {
        json_t *o = json_object();
        size_t n = below(6);
        for (size_t i = 0; i < n; i++) {
            char key[1024];
            random_key(key, sizeof key);
            json_object_set_new(o, key, random_value(depth + 1));
        }
        return o;
    }
    default: {
        json_t *a = json_array();
        size_t n = below(5);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, random_value(depth + 1));
        return a;
    }
    }
}

static json_t *random_object(void)
{
    json_t *o = json_object();
    size_t n = 1 + below(5);
    for (size_t i = 0; i < n; i++) {
        char key[1024];
        random_key(key, sizeof key);
        json_object_set_new(o, key, random_value(1));
    }
    return o;
}

/* ---- Canonical text. */

static void expect_canonical_equal(json_t *v)
{
    char *want = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    assert_non_null(want);
    size_t len = 0;
    char *got = codec_canonical_json(v, &len);
    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_string_equal(got, want);
    free(got);
    free(want);
}

static void test_canonical_matches_json_dumps(void **state)
{
    (void)state;
    rng_state = UINT64_C(0x9e3779b97f4a7c15);
    for (int i = 0; i < 3000; i++) {
        json_t *v = random_object();
        expect_canonical_equal(v);
        json_decref(v);
    }
    /* Every byte below 0x20 (NUL included) and the two escaped ones. */
    char all[40];
    for (int c = 0; c < 0x20; c++)
        all[c] = (char)c;
    memcpy(all + 0x20, "\"\\/\x7f a\xc3\xa9", 8);
    json_t *o = json_object();
    json_object_set_new(o, "s", json_stringn(all, sizeof all));
    json_object_set_new(o, "e", json_object());
    json_object_set_new(o, "l", json_array());
    expect_canonical_equal(o);
    json_decref(o);
}

/* ---- Parsing. */

static void ascii_sanitize(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20u || (unsigned char)*s > 0x7Eu)
            *s = '?';
}

/* codec_parse_body(body) must agree with json_loadb(body). */
static void expect_parse_agrees(const char *body, size_t len)
{
    json_error_t err;
    json_t *want = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err);
    codec_error e;
    memset(&e, 0, sizeof e);
    json_t *got = codec_parse_body(body, len, &e);
    if (got == NULL && e.code != NULL && strcmp(e.code, "too_deep") == 0) {
        json_decref(want); /* the pre-scan, unchanged, spoke first */
        return;
    }
    if (want != NULL && json_is_object(want)) {
        assert_non_null(got);
        assert_true(json_equal(want, got));
        /* Same key order, same canonical text. */
        char *a = json_dumps(want, JSON_COMPACT);
        char *b = json_dumps(got, JSON_COMPACT);
        assert_string_equal(a, b);
        free(a);
        free(b);
        json_decref(want);
        json_decref(got);
        return;
    }
    assert_null(got);
    if (want != NULL) {
        assert_string_equal(e.code, "invalid_field");
        json_decref(want);
        return;
    }
    char detail[sizeof e.detail];
    switch (json_error_code(&err)) {
    case json_error_duplicate_key:
        assert_string_equal(e.code, "duplicate_key");
        snprintf(detail, sizeof detail, "an object repeats a key (line %d, column %d)", err.line,
                 err.column);
        assert_string_equal(e.detail, detail);
        break;
    case json_error_numeric_overflow:
        assert_string_equal(e.code, "invalid_field");
        break;
    default:
        assert_string_equal(e.code, "malformed_json");
        ascii_sanitize(err.text);
        snprintf(detail, sizeof detail, "%s (line %d, column %d)", err.text, err.line,
                 err.column);
        assert_string_equal(e.detail, detail);
        break;
    }
}

static void mutate(char *body, size_t *len, size_t cap)
{
    static const char bytes[] = "\"\\,:{}[] x\x01\xff" "0\n";
    size_t at = below(*len);
    switch (below(3)) {
    case 0:
        body[at] = bytes[below(sizeof bytes - 1)];
        break;
    case 1:
        memmove(body + at, body + at + 1, *len - at - 1);
        (*len)--;
        break;
    default:
        if (*len + 1 < cap) {
            memmove(body + at + 1, body + at, *len - at);
            body[at] = bytes[below(sizeof bytes - 1)];
            (*len)++;
        }
        break;
    }
}

static void test_parse_matches_jansson(void **state)
{
    (void)state;
    rng_state = UINT64_C(0x243f6a8885a308d3);
    static const size_t layouts[] = {JSON_COMPACT, 0, JSON_INDENT(2), JSON_INDENT(1) | JSON_COMPACT};
    for (int i = 0; i < 1500; i++) {
        json_t *v = random_object();
        char *text = json_dumps(v, layouts[below(4)] | (below(4) == 0 ? JSON_ENSURE_ASCII : 0));
        assert_non_null(text);
        size_t len = strlen(text);
        expect_parse_agrees(text, len);
        size_t cap = len + 16;
        char *m = malloc(cap);
        assert_non_null(m);
        for (int k = 0; k < 6; k++) {
            memcpy(m, text, len);
            size_t mlen = len;
            size_t edits = 1 + below(3);
            for (size_t j = 0; j < edits && mlen > 1; j++)
                mutate(m, &mlen, cap);
            expect_parse_agrees(m, mlen);
        }
        free(m);
        free(text);
        json_decref(v);
    }
}

/* Hand-written layouts: whitespace before ':', long keys, long values
 * that are not objects' members, a long string at the top. */
static void test_parse_edge_layouts(void **state)
{
    (void)state;
    char plain[300]; /* stands for each '@' of the forms below */
    memset(plain, 'p', sizeof plain);
    char body[2048];
    const char *const forms[] = {
        "{\"k\"  :  \"@\"}",
        "{\"@\" \n\t: \"@\", \"b\": [\"@\", 1, {\"c\" :\"@\"}]}",
        "{\"@\":1}",
        "\"@\"",
        "[\"@\"]",
        "{\"a\":\"@\",\"a\":\"@\"}",
        "{\"a\":\"@\" \"b\":1}",
        "{\"a\":\"@\",}",
        "{\"a\":\"@\"",
        "{\"a\":\"@\",\"n\":99999999999999999999}",
        "{\"0\":\"@\",\"1\":\"0\",\"x\":[\"1\",\"@\",\"0\"]}",
        "{\"a\":\"@\"} trailing",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        size_t n = 0;
        for (const char *f = forms[i]; *f != '\0'; f++) {
            if (*f == '@') {
                assert_true(n + 300 < sizeof body);
                memcpy(body + n, plain, 300);
                n += 300;
            } else {
                assert_true(n + 1 < sizeof body);
                body[n++] = *f;
            }
        }
        expect_parse_agrees(body, n);
    }
}

/* The transfer path end to end: a 5 KB note decodes to the canonical
 * text json_dumps would give, and is held in full. */
static void test_transfer_metadata_fast(void **state)
{
    (void)state;
    static char note[5001];
    for (size_t i = 0; i < 5000; i++)
        note[i] = (char)('a' + i % 26);
    static char body[6000];
    int n = snprintf(body, sizeof body,
                     "{\"transfers\":[{\"id\":\"7f1c2d3e-0000-4000-8000-000000000001\","
                     "\"debit_account_id\":\"7f1c2d3e-0000-4000-8000-000000000002\","
                     "\"credit_account_id\":\"7f1c2d3e-0000-4000-8000-000000000003\","
                     "\"amount\":7,\"ledger\":840,\"code\":1,\"metadata\":{\"seq\":3,"
                     "\"note\":\"%s\",\"a\":\"x\"}}]}",
                     note);
    codec_error e;
    memset(&e, 0, sizeof e);
    json_t *root = codec_parse_body(body, (size_t)n, &e);
    assert_non_null(root);
    ledger_transfer *t = NULL;
    size_t count = 0;
    assert_int_equal(codec_decode_transfers(root, 5, &t, &count, &e), 0);
    char want[5100];
    snprintf(want, sizeof want, "{\"a\":\"x\",\"note\":\"%s\",\"seq\":3}", note);
    assert_int_equal(count, 1);
    assert_string_equal(t[0].metadata, want);
    assert_int_equal(t[0].metadata_len, strlen(want));
    codec_transfers_free(t, count);
    json_decref(root);
}

/* The answer to POST /v1/transfers, written directly, is the text of
 * the tree codec_encode_transfer_results builds. */
static void test_transfer_results_text(void **state)
{
    (void)state;
    rng_state = UINT64_C(0x13198a2e03707344);
    enum { N = 40 };
    ledger_transfer events[N];
    ledger_transfer_result results[N];
    memset(events, 0, sizeof events);
    for (size_t i = 0; i < N; i++) {
        for (size_t k = 0; k < sizeof events[i].id.bytes; k++)
            events[i].id.bytes[k] = (uint8_t)rnd();
        events[i].timestamp_us = i % 3 == 0 ? INT64_MAX : (int64_t)(rnd() >> 1);
        results[i] = (ledger_transfer_result)(i % LEDGER_TRANSFER_RESULT_COUNT);
    }
    for (size_t count = 1; count <= N; count += 13) {
        json_t *j = codec_encode_transfer_results(events, results, count);
        assert_non_null(j);
        char *want = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        char *got = codec_transfer_results_text(events, results, count);
        assert_non_null(got);
        assert_string_equal(got, want);
        free(got);
        free(want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_matches_json_dumps),
        cmocka_unit_test(test_parse_matches_jansson),
        cmocka_unit_test(test_parse_edge_layouts),
        cmocka_unit_test(test_transfer_metadata_fast),
        cmocka_unit_test(test_transfer_results_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
