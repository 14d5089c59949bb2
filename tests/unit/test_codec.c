/*
 * test_codec.c — the JSON codec against docs/API.md.
 *
 * Every refusal the codec can produce is driven here from a real body
 * and checked for status, code and JSON pointer, and every refusal must
 * leave nothing allocated (the suite runs under ASan's leak checker).
 * Encoders are checked field by field and by round trip through the
 * decoders, including amounts above 2^53.
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

#define ID1 "7f1c2d3e-0000-4000-8000-000000000001"
#define ID2 "7f1c2d3e-0000-4000-8000-000000000002"
#define ID3 "7f1c2d3e-0000-4000-8000-000000000003"

/* A plain transfer with extra fields spliced in before the closing brace. */
#define XFER(extra)                                                              \
    "{\"transfers\":[{\"id\":\"" ID1 "\",\"debit_account_id\":\"" ID2            \
    "\",\"credit_account_id\":\"" ID3 "\",\"ledger\":840,\"code\":1" extra "}]}"

static json_t *parse(const char *body, codec_error *e)
{
    return codec_parse_body(body, strlen(body), e);
}

/* Parse and decode transfers; on success return 0 with the array and its count set. */
static int decode_transfers(const char *body, ledger_transfer **t, size_t *n,
                            codec_error *e)
{
    *t = NULL;
    *n = 0;
    json_t *root = parse(body, e);
    if (root == NULL)
        return -1;
    int rc = codec_decode_transfers(root, 7, t, n, e);
    json_decref(root);
    return rc;
}

/* Expect body to be refused with status/code/pointer (parse or decode). */
static void expect_transfer_error(const char *body, int status, const char *code,
                                  const char *pointer)
{
    ledger_transfer *t = (ledger_transfer *)1;
    size_t n = 99;
    codec_error e;
    memset(&e, 0, sizeof e);
    int rc = decode_transfers(body, &t, &n, &e);
    if (rc == 0)
        fail_msg("accepted: %.200s", body);
    assert_int_equal(rc, -1);
    assert_null(t);
    assert_int_equal(n, 0);
    assert_non_null(e.code);
    if (strcmp(e.code, code) != 0 || strcmp(e.pointer, pointer) != 0 || e.status != status)
        fail_msg("body %.200s: got %d %s %s (%s), want %d %s %s", body, e.status, e.code,
                 e.pointer, e.detail, status, code, pointer);
    assert_true(e.detail[0] != '\0');
}

/* Decode a single-transfer body that must be accepted. */
static ledger_transfer decode_one(const char *body, char **metadata_out)
{
    ledger_transfer *t = NULL;
    size_t n = 0;
    codec_error e;
    if (decode_transfers(body, &t, &n, &e) != 0)
        fail_msg("refused %.200s: %s %s %s", body, e.code, e.pointer, e.detail);
    assert_int_equal(n, 1);
    ledger_transfer copy = t[0];
    if (metadata_out != NULL)
        *metadata_out = t[0].metadata ? strdup(t[0].metadata) : NULL;
    copy.metadata = NULL;
    codec_transfers_free(t, n);
    return copy;
}

static void amount_case(const char *amount_text, int status, const char *code)
{
    char body[512];
    snprintf(body, sizeof body, XFER(",\"amount\":%s"), amount_text);
    expect_transfer_error(body, status, code, "/transfers/0/amount");
}

/* ---- Parsing. */

static void test_parse_malformed(void **state)
{
    (void)state;
    codec_error e;
    assert_null(parse("{\"transfers\": [", &e));
    assert_string_equal(e.code, "malformed_json");
    assert_int_equal(e.status, 400);
    assert_non_null(strstr(e.detail, "line 1"));
    assert_non_null(strstr(e.detail, "column"));
    assert_string_equal(e.pointer, "");

    assert_null(parse("{\"a\":1,}", &e));
    assert_string_equal(e.code, "malformed_json");
    assert_null(parse("{\n\"a\":\n tru}", &e));
    assert_string_equal(e.code, "malformed_json");
    assert_non_null(strstr(e.detail, "line 3"));
    assert_null(codec_parse_body("", 0, &e));
    assert_string_equal(e.code, "malformed_json");
    assert_null(parse("{\"a\":\"\xff\xfe\"}", &e)); /* invalid UTF-8 */
    assert_string_equal(e.code, "malformed_json");
    assert_null(parse("{\"a\":\"\\u0000\"}", &e));
    assert_string_equal(e.code, "malformed_json");
    assert_null(parse("{} {}", &e));
    assert_string_equal(e.code, "malformed_json");
    assert_null(parse("{\"a\":NaN}", &e));
    assert_string_equal(e.code, "malformed_json");
    /* The problem body of a parse error is valid JSON even when jansson
     * quoted raw bytes. */
    char *body = codec_problem_body(&e);
    assert_non_null(body);
    json_t *p = json_loads(body, 0, NULL);
    assert_non_null(p);
    json_decref(p);
    free(body);
}

static void test_parse_duplicate_key(void **state)
{
    (void)state;
    codec_error e;
    assert_null(parse("{\"a\":1,\"a\":2}", &e));
    assert_string_equal(e.code, "duplicate_key");
    assert_int_equal(e.status, 400);
    expect_transfer_error(XFER(",\"amount\":1,\"amount\":2"), 400, "duplicate_key", "");
    expect_transfer_error(XFER(",\"amount\":1,\"metadata\":{\"x\":1,\"x\":1}"), 400,
                          "duplicate_key", "");
}

/* depth levels of {"a": ... } around 1. */
static char *nested(int depth)
{
    char *s = malloc((size_t)depth * 6 + 8);
    assert_non_null(s);
    size_t n = 0;
    for (int i = 0; i < depth; i++) {
        memcpy(s + n, "{\"a\":", 5);
        n += 5;
    }
    s[n++] = '1';
    for (int i = 0; i < depth; i++)
        s[n++] = '}';
    s[n] = '\0';
    return s;
}

static void test_parse_depth(void **state)
{
    (void)state;
    codec_error e;
    char *ok = nested(LIMIT_JSON_DEPTH_MAX);
    json_t *root = parse(ok, &e);
    assert_non_null(root);
    json_decref(root);
    free(ok);

    char *deep = nested(LIMIT_JSON_DEPTH_MAX + 1);
    assert_null(parse(deep, &e));
    assert_string_equal(e.code, "too_deep");
    assert_int_equal(e.status, 400);
    free(deep);

    /* Arrays count too; so does a huge unterminated nesting (no parse). */
    char arr[4096];
    memset(arr, '[', sizeof arr - 1);
    arr[sizeof arr - 1] = '\0';
    assert_null(parse(arr, &e));
    assert_string_equal(e.code, "too_deep");

    /* Brackets inside strings (with escaped quotes) do not count. */
    root = parse("{\"s\":\"\\\"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{\\\\\",\"t\":1}", &e);
    assert_non_null(root);
    assert_int_equal(json_integer_value(json_object_get(root, "t")), 1);
    json_decref(root);
}

static void test_parse_top_level(void **state)
{
    (void)state;
    codec_error e;
    const char *bodies[] = {"[1]", "\"x\"", "3", "null", "true"};
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        assert_null(parse(bodies[i], &e));
        assert_string_equal(e.code, "invalid_field");
        assert_int_equal(e.status, 400);
        assert_string_equal(e.pointer, "");
    }
}

/* ---- Amounts and integers. */

static void test_amounts_refused(void **state)
{
    (void)state;
    amount_case("-1", 400, "invalid_field");
    amount_case("9223372036854775808", 400, "invalid_field"); /* int64 overflow */
    amount_case("-9223372036854775809", 400, "invalid_field");
    amount_case("\"9223372036854775808\"", 400, "invalid_field");
    amount_case("\"99999999999999999999999999\"", 400, "invalid_field");
    amount_case("1.5", 400, "invalid_field");
    amount_case("1.0", 400, "invalid_field");
    amount_case("1e3", 400, "invalid_field");
    amount_case("\"1e3\"", 400, "invalid_field");
    amount_case("\"1.0\"", 400, "invalid_field");
    amount_case("\"+5\"", 400, "invalid_field");
    amount_case("\"-5\"", 400, "invalid_field");
    amount_case("\" 5\"", 400, "invalid_field");
    amount_case("\"5 \"", 400, "invalid_field");
    amount_case("\"\"", 400, "invalid_field");
    amount_case("\"012\"", 400, "invalid_field");
    amount_case("\"0x10\"", 400, "invalid_field");
    amount_case("true", 400, "invalid_field");
    amount_case("null", 400, "invalid_field");
    amount_case("[1]", 400, "invalid_field");

    /* The detail names the field and the range, as docs/API.md shows. */
    ledger_transfer *t = NULL;
    size_t n = 0;
    codec_error e;
    assert_int_equal(decode_transfers(XFER(",\"amount\":-1"), &t, &n, &e), -1);
    assert_string_equal(e.detail,
                        "transfers[0].amount: must be an integer between 0 and "
                        "9223372036854775807");
    /* Overflow of a bare JSON number is located by pointer too. */
    assert_int_equal(decode_transfers(XFER(",\"amount\":9223372036854775808"), &t, &n, &e),
                     -1);
    assert_string_equal(e.pointer, "/transfers/0/amount");
    assert_non_null(strstr(e.detail, "out of range"));
}

static void test_amounts_accepted(void **state)
{
    (void)state;
    ledger_transfer t = decode_one(XFER(",\"amount\":1250"), NULL);
    assert_int_equal(t.amount, 1250);
    t = decode_one(XFER(",\"amount\":\"300\""), NULL);
    assert_int_equal(t.amount, 300);
    t = decode_one(XFER(",\"amount\":0"), NULL);
    assert_int_equal(t.amount, 0);
    t = decode_one(XFER(",\"amount\":\"0\""), NULL);
    assert_int_equal(t.amount, 0);
    t = decode_one(XFER(",\"amount\":9223372036854775807"), NULL);
    assert_true(t.amount == INT64_MAX);
    t = decode_one(XFER(",\"amount\":\"9223372036854775807\""), NULL);
    assert_true(t.amount == INT64_MAX);
    /* 2^53 + 1: a double cannot hold it, the string form keeps it exact. */
    t = decode_one(XFER(",\"amount\":\"9007199254740993\""), NULL);
    assert_true(t.amount == INT64_C(9007199254740993));
    json_t *enc = codec_encode_transfer(&t, NULL);
    assert_non_null(enc);
    assert_string_equal(json_string_value(json_object_get(enc, "amount")),
                        "9007199254740993");
    json_decref(enc);
}

static void test_decode_int64_direct(void **state)
{
    (void)state;
    codec_error e;
    int64_t v = 0;
    json_t *j = json_string("-42");
    assert_int_equal(codec_decode_int64(j, INT64_MIN, INT64_MAX, "/x", &v, &e), 0);
    assert_true(v == -42);
    assert_int_equal(codec_decode_int64(j, 0, 100, "/x", &v, &e), -1);
    assert_string_equal(e.pointer, "/x");
    json_decref(j);
    j = json_string("-9223372036854775808");
    assert_int_equal(codec_decode_int64(j, INT64_MIN, INT64_MAX, "/x", &v, &e), 0);
    assert_true(v == INT64_MIN);
    json_decref(j);
    j = json_string("-9223372036854775809");
    assert_int_equal(codec_decode_int64(j, INT64_MIN, INT64_MAX, "/x", &v, &e), -1);
    json_decref(j);
    j = json_string("-0");
    assert_int_equal(codec_decode_int64(j, INT64_MIN, INT64_MAX, "/x", &v, &e), -1);
    json_decref(j);
    j = json_integer(101);
    v = 5;
    assert_int_equal(codec_decode_int64(j, 0, 100, "/y", &v, &e), -1);
    assert_true(v == 5); /* untouched on failure */
    assert_string_equal(e.code, "invalid_field");
    assert_string_equal(e.detail, "y: must be an integer between 0 and 100");
    json_decref(j);
}

/* ---- Field kinds. */

static void test_wrong_types(void **state)
{
    (void)state;
    const char *P = "/transfers/0/";
    struct {
        const char *extra;
        const char *field;
    } cases[] = {
        {",\"amount\":1,\"pending_id\":12", "pending_id"},
        {",\"amount\":1,\"pending_id\":\"not-a-uuid\"", "pending_id"},
        {",\"amount\":1,\"pending_id\":\"" ID1 "0\"", "pending_id"},
        {",\"amount\":1,\"user_data_128\":null", "user_data_128"},
        {",\"amount\":1,\"user_data_64\":\"abc\"", "user_data_64"},
        {",\"amount\":1,\"user_data_64\":1.5", "user_data_64"},
        {",\"amount\":1,\"user_data_32\":2147483648", "user_data_32"},
        {",\"amount\":1,\"user_data_32\":\"5\"", "user_data_32"},
        {",\"amount\":1,\"timeout_s\":-1", "timeout_s"},
        {",\"amount\":1,\"timeout_s\":4294967296", "timeout_s"},
        {",\"amount\":1,\"timeout_s\":\"60\"", "timeout_s"},
        {",\"amount\":1,\"flags\":\"pending\"", "flags"},
        {",\"amount\":1,\"flags\":{}", "flags"},
        {",\"amount\":1,\"metadata\":\"x\"", "metadata"},
        {",\"amount\":1,\"metadata\":[1]", "metadata"},
        {",\"amount\":1,\"metadata\":null", "metadata"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[512], ptr[96];
        snprintf(body, sizeof body, XFER("%s"), cases[i].extra);
        snprintf(ptr, sizeof ptr, "%s%s", P, cases[i].field);
        expect_transfer_error(body, 400, "invalid_field", ptr);
    }
    /* ledger/code: JSON integers 0..INT32_MAX only. */
    const char *ledgers[] = {"\"840\"", "-1", "2147483648", "840.0", "null"};
    for (size_t i = 0; i < sizeof ledgers / sizeof ledgers[0]; i++) {
        char body[512];
        snprintf(body, sizeof body,
                 "{\"transfers\":[{\"id\":\"" ID1 "\",\"debit_account_id\":\"" ID2
                 "\",\"credit_account_id\":\"" ID3
                 "\",\"amount\":1,\"ledger\":%s,\"code\":1}]}",
                 ledgers[i]);
        expect_transfer_error(body, 400, "invalid_field", "/transfers/0/ledger");
        snprintf(body, sizeof body,
                 "{\"transfers\":[{\"id\":\"" ID1 "\",\"debit_account_id\":\"" ID2
                 "\",\"credit_account_id\":\"" ID3
                 "\",\"amount\":1,\"ledger\":840,\"code\":%s}]}",
                 ledgers[i]);
        expect_transfer_error(body, 400, "invalid_field", "/transfers/0/code");
    }
    expect_transfer_error("{\"transfers\":[{\"id\":5}]}", 400, "invalid_field",
                          "/transfers/0/id");
    expect_transfer_error("{\"transfers\":[5]}", 400, "invalid_field", "/transfers/0");
    expect_transfer_error("{\"transfers\":{}}", 400, "invalid_field", "/transfers");

    /* Accepted values of every kind land in the struct. */
    ledger_transfer t = decode_one(
        XFER(",\"amount\":5,\"user_data_64\":\"-9007199254740993\",\"user_data_32\":"
             "-2147483648,\"user_data_128\":\"00000000000000000000000000000abc\","
             "\"timeout_s\":4294967295,\"flags\":[\"pending\",\"linked\"]"),
        NULL);
    assert_true(t.user_data_64 == INT64_C(-9007199254740993));
    assert_true(t.user_data_32 == INT32_MIN);
    assert_int_equal(t.user_data_128.bytes[15], 0xbc);
    assert_int_equal(t.user_data_128.bytes[14], 0x0a);
    assert_int_equal(t.timeout_s, UINT32_MAX);
    assert_int_equal(t.flags, LEDGER_TF_PENDING | LEDGER_TF_LINKED);
    assert_int_equal(t.ledger, 840);
    assert_int_equal(t.code, 1);
    assert_true(t.customer_id == 7);
    assert_int_equal(t.id.bytes[15], 1);
    assert_int_equal(t.debit_account_id.bytes[15], 2);
    assert_int_equal(t.credit_account_id.bytes[15], 3);
}

static void test_unknown_and_missing(void **state)
{
    (void)state;
    expect_transfer_error(XFER(",\"amount\":1,\"amt\":1"), 400, "unknown_field",
                          "/transfers/0/amt");
    expect_transfer_error(XFER(",\"amount\":1,\"a/b~c\":1"), 400, "unknown_field",
                          "/transfers/0/a~1b~0c");
    expect_transfer_error("{\"transfers\":[{\"id\":\"" ID1 "\"}],\"extra\":true}", 400,
                          "unknown_field", "/extra");
    expect_transfer_error("{}", 400, "missing_field", "/transfers");
    expect_transfer_error("{\"transfer\":[]}", 400, "unknown_field", "/transfer");
    expect_transfer_error(XFER(""), 400, "missing_field", "/transfers/0/amount");
    expect_transfer_error("{\"transfers\":[{\"amount\":1}]}", 400, "missing_field",
                          "/transfers/0/id");
    expect_transfer_error("{\"transfers\":[{\"id\":\"" ID1 "\",\"amount\":1,\"ledger\":1,"
                          "\"code\":1,\"credit_account_id\":\"" ID2 "\"}]}",
                          400, "missing_field", "/transfers/0/debit_account_id");
    /* A pending transfer needs everything a plain one does. */
    expect_transfer_error("{\"transfers\":[{\"id\":\"" ID1 "\",\"flags\":[\"pending\"]}]}",
                          400, "missing_field", "/transfers/0/debit_account_id");
    /* The second element's error points at index 1. */
    expect_transfer_error("{\"transfers\":[{\"id\":\"" ID1 "\",\"pending_id\":\"" ID2
                          "\",\"flags\":[\"void_pending_transfer\"]},{\"id\":\"" ID3
                          "\",\"debit_account_id\":\"" ID1 "\",\"credit_account_id\":\"" ID2
                          "\",\"ledger\":840,\"code\":1}]}",
                          400, "missing_field", "/transfers/1/amount");

    /* Post and void may omit accounts, ledger, code and amount. */
    ledger_transfer t = decode_one("{\"transfers\":[{\"id\":\"" ID1 "\",\"pending_id\":\"" ID2
                                   "\",\"flags\":[\"post_pending_transfer\"],\"amount\":200}]}",
                                   NULL);
    assert_int_equal(t.flags, LEDGER_TF_POST_PENDING);
    assert_int_equal(t.amount, 200);
    assert_int_equal(t.ledger, 0);
    assert_int_equal(t.code, 0);
    assert_true(id128_is_zero(&t.debit_account_id));
    assert_true(id128_is_zero(&t.credit_account_id));
    assert_int_equal(t.pending_id.bytes[15], 2);
    t = decode_one("{\"transfers\":[{\"id\":\"" ID1 "\",\"pending_id\":\"" ID2
                   "\",\"flags\":[\"void_pending_transfer\"]}]}",
                   NULL);
    assert_int_equal(t.flags, LEDGER_TF_VOID_PENDING);
    assert_int_equal(t.amount, 0);
}

static void test_flags(void **state)
{
    (void)state;
    expect_transfer_error(XFER(",\"amount\":1,\"flags\":[\"linked\",\"bogus\"]"), 400,
                          "invalid_field", "/transfers/0/flags/1");
    expect_transfer_error(XFER(",\"amount\":1,\"flags\":[\"pending\",\"pending\"]"), 400,
                          "invalid_field", "/transfers/0/flags/1");
    expect_transfer_error(XFER(",\"amount\":1,\"flags\":[1]"), 400, "invalid_field",
                          "/transfers/0/flags/0");
    expect_transfer_error(XFER(",\"amount\":1,\"flags\":[\"Linked\"]"), 400,
                          "invalid_field", "/transfers/0/flags/0");
    ledger_transfer *t = NULL;
    size_t n = 0;
    codec_error e;
    assert_int_equal(decode_transfers(XFER(",\"amount\":1,\"flags\":[\"bogus\"]"), &t, &n,
                                      &e),
                     -1);
    assert_non_null(strstr(e.detail, "\"bogus\""));
    ledger_transfer ok = decode_one(XFER(",\"amount\":1,\"flags\":[]"), NULL);
    assert_int_equal(ok.flags, 0);
}

static char *metadata_body(size_t value_len)
{
    size_t cap = value_len + 512;
    char *body = malloc(cap);
    char *val = malloc(value_len + 1);
    assert_non_null(body);
    assert_non_null(val);
    memset(val, 'x', value_len);
    val[value_len] = '\0';
    snprintf(body, cap, XFER(",\"amount\":1,\"metadata\": {  \"k\" :  \"%s\"  }"), val);
    free(val);
    return body;
}

static void test_metadata(void **state)
{
    (void)state;
    char *meta = NULL;
    decode_one(XFER(",\"amount\":1,\"metadata\":{\"b\":1, \"a\":[1, 2],\"c\":{\"z\":null,"
                    "\"y\":\"\xc3\xa9\"}}"),
               &meta);
    assert_non_null(meta);
    assert_string_equal(meta, "{\"a\":[1,2],\"b\":1,\"c\":{\"y\":\"\xc3\xa9\",\"z\":null}}");
    free(meta);

    /* Canonical {"k":"xxx…"} is value_len + 8 bytes; the raw body has
     * extra spaces that do not count. */
    char *body = metadata_body(LIMIT_METADATA_BYTES_MAX - 8);
    decode_one(body, &meta);
    assert_int_equal(strlen(meta), LIMIT_METADATA_BYTES_MAX);
    free(meta);
    free(body);
    body = metadata_body(LIMIT_METADATA_BYTES_MAX - 7);
    expect_transfer_error(body, 413, "metadata_too_large", "/transfers/0/metadata");
    free(body);

    /* A huge integer inside metadata is named by its pointer. */
    expect_transfer_error(XFER(",\"amount\":1,\"metadata\":{\"a\":1,\"big\":"
                               "123456789012345678901234567890}"),
                          400, "invalid_field", "/transfers/0/metadata/big");

    ledger_transfer t = decode_one(XFER(",\"amount\":1,\"metadata\":{}"), &meta);
    assert_string_equal(meta, "{}");
    assert_true(t.metadata_len == 2);
    free(meta);
    decode_one(XFER(",\"amount\":1"), &meta);
    assert_null(meta);
}

/* {"transfers":[count valid transfers]} */
static char *batch_body(size_t count)
{
    size_t cap = count * 220 + 64;
    char *body = malloc(cap);
    assert_non_null(body);
    size_t n = (size_t)snprintf(body, cap, "{\"transfers\":[");
    for (size_t i = 0; i < count; i++) {
        n += (size_t)snprintf(body + n, cap - n,
                              "%s{\"id\":\"%032zx\",\"debit_account_id\":\"" ID2
                              "\",\"credit_account_id\":\"" ID3
                              "\",\"amount\":%zu,\"ledger\":840,\"code\":1}",
                              i ? "," : "", i + 1, i);
    }
    snprintf(body + n, cap - n, "]}");
    return body;
}

static void test_batch_limits(void **state)
{
    (void)state;
    char *body = batch_body(LIMIT_BATCH_EVENTS_MAX);
    ledger_transfer *t = NULL;
    size_t n = 0;
    codec_error e;
    assert_int_equal(decode_transfers(body, &t, &n, &e), 0);
    assert_int_equal(n, LIMIT_BATCH_EVENTS_MAX);
    assert_int_equal(t[LIMIT_BATCH_EVENTS_MAX - 1].amount, LIMIT_BATCH_EVENTS_MAX - 1);
    assert_int_equal(t[LIMIT_BATCH_EVENTS_MAX - 1].id.bytes[15],
                     (LIMIT_BATCH_EVENTS_MAX) & 0xff);
    codec_transfers_free(t, n);
    free(body);

    body = batch_body(LIMIT_BATCH_EVENTS_MAX + 1);
    expect_transfer_error(body, 413, "batch_too_large", "/transfers");
    free(body);

    expect_transfer_error("{\"transfers\":[]}", 400, "invalid_field", "/transfers");

    /* An error deep in a big batch frees the metadata decoded before it. */
    expect_transfer_error("{\"transfers\":[{\"id\":\"" ID1 "\",\"debit_account_id\":\"" ID2
                          "\",\"credit_account_id\":\"" ID3
                          "\",\"amount\":1,\"ledger\":840,\"code\":1,\"metadata\":{\"a\":1}},"
                          "{\"id\":\"" ID2 "\",\"debit_account_id\":\"" ID2
                          "\",\"credit_account_id\":\"" ID3
                          "\",\"amount\":-1,\"ledger\":840,\"code\":1,\"metadata\":{\"a\":1}}]}",
                          400, "invalid_field", "/transfers/1/amount");
}

/* ---- Accounts and ids. */

static int decode_accounts(const char *body, int64_t customer_id, int admin,
                           ledger_account **a, const char ***names, size_t *n,
                           json_t **root_out, codec_error *e)
{
    *root_out = parse(body, e);
    if (*root_out == NULL)
        return -1;
    return codec_decode_accounts(*root_out, customer_id, admin, a, names, n, e);
}

static void expect_account_error(const char *body, int64_t customer_id, int admin,
                                 const char *code, const char *pointer)
{
    ledger_account *a = (ledger_account *)1;
    const char **names = (const char **)1;
    size_t n = 9;
    json_t *root = NULL;
    codec_error e;
    assert_int_equal(decode_accounts(body, customer_id, admin, &a, &names, &n, &root, &e),
                     -1);
    json_decref(root);
    assert_null(a);
    assert_null(names);
    assert_int_equal(n, 0);
    if (strcmp(e.code, code) != 0 || strcmp(e.pointer, pointer) != 0)
        fail_msg("%s: got %s %s (%s), want %s %s", body, e.code, e.pointer, e.detail, code,
                 pointer);
    assert_int_equal(e.status, 400);
}

static void test_accounts(void **state)
{
    (void)state;
    ledger_account *a = NULL;
    const char **names = NULL;
    size_t n = 0;
    json_t *root = NULL;
    codec_error e;
    assert_int_equal(decode_accounts("{\"accounts\":[{\"id\":\"" ID1 "\",\"ledger\":840,"
                                     "\"code\":1,\"flags\":[\"debits_must_not_exceed_"
                                     "credits\",\"history\"],\"user_data_64\":\"12\"},"
                                     "{\"id\":\"" ID2 "\",\"ledger\":978,\"code\":0}]}",
                                     11, 0, &a, &names, &n, &root, &e),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(a[0].flags,
                     LEDGER_AF_DEBITS_MUST_NOT_EXCEED_CREDITS | LEDGER_AF_HISTORY);
    assert_int_equal(a[0].ledger, 840);
    assert_int_equal(a[0].user_data_64, 12);
    assert_true(a[0].customer_id == 11);
    assert_int_equal(a[1].ledger, 978);
    assert_int_equal(a[1].id.bytes[15], 2);
    assert_null(names[0]);
    assert_null(names[1]);
    free(a);
    free(names);
    json_decref(root);

    /* Admin: customer names point into root. */
    assert_int_equal(decode_accounts("{\"accounts\":[{\"id\":\"" ID1 "\",\"ledger\":840,"
                                     "\"code\":1,\"customer\":\"acme-eu_2\"}]}",
                                     0, 1, &a, &names, &n, &root, &e),
                     0);
    assert_string_equal(names[0], "acme-eu_2");
    assert_true(a[0].customer_id == 0);
    free(a);
    free(names);
    json_decref(root);

    const char *base = "{\"accounts\":[{\"id\":\"" ID1 "\",\"ledger\":840,\"code\":1";
    char body[512];
#define ACCT(extra) (snprintf(body, sizeof body, "%s%s}]}", base, extra), body)
    expect_account_error(ACCT(",\"customer\":\"acme\""), 11, 0, "unknown_field",
                         "/accounts/0/customer");
    expect_account_error(ACCT(""), 0, 1, "missing_field", "/accounts/0/customer");
    expect_account_error(ACCT(",\"customer\":\"Acme\""), 0, 1, "invalid_field",
                         "/accounts/0/customer");
    expect_account_error(ACCT(",\"customer\":\"\""), 0, 1, "invalid_field",
                         "/accounts/0/customer");
    expect_account_error(ACCT(",\"customer\":7"), 0, 1, "invalid_field",
                         "/accounts/0/customer");
    expect_account_error(ACCT(",\"customer\":\"a234567890123456789012345678901234567890123"
                              "456789012345678901234\""),
                         0, 1, "invalid_field", "/accounts/0/customer");
    expect_account_error(ACCT(",\"flags\":[\"closed\"]"), 11, 0, "invalid_field",
                         "/accounts/0/flags/0");
    expect_account_error(ACCT(",\"flags\":[\"pending\"]"), 11, 0, "invalid_field",
                         "/accounts/0/flags/0");
    expect_account_error(ACCT(",\"amount\":1"), 11, 0, "unknown_field", "/accounts/0/amount");
    expect_account_error(ACCT(",\"user_data_32\":1.5"), 11, 0, "invalid_field",
                         "/accounts/0/user_data_32");
    expect_account_error("{\"accounts\":[{\"id\":\"" ID1 "\",\"code\":1}]}", 11, 0,
                         "missing_field", "/accounts/0/ledger");
    expect_account_error("{\"accounts\":[{\"id\":\"" ID1 "\",\"ledger\":1}]}", 11, 0,
                         "missing_field", "/accounts/0/code");
    expect_account_error("{\"accounts\":[{\"ledger\":1,\"code\":1}]}", 11, 0,
                         "missing_field", "/accounts/0/id");
    expect_account_error("{\"accounts\":[]}", 11, 0, "invalid_field", "/accounts");
#undef ACCT

    /* Admin acting for a customer (customer_id set) may omit "customer". */
    assert_int_equal(decode_accounts("{\"accounts\":[{\"id\":\"" ID1 "\",\"ledger\":840,"
                                     "\"code\":1}]}",
                                     5, 1, &a, &names, &n, &root, &e),
                     0);
    assert_null(names[0]);
    free(a);
    free(names);
    json_decref(root);
}

static void test_ids(void **state)
{
    (void)state;
    codec_error e;
    id128 *ids = NULL;
    size_t n = 0;
    json_t *root = parse("{\"ids\":[\"" ID1 "\",\"" ID2 "\"]}", &e);
    assert_non_null(root);
    assert_int_equal(codec_decode_ids(root, &ids, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1].bytes[15], 2);
    free(ids);
    json_decref(root);

    root = parse("{\"ids\":[\"" ID1 "\",\"nope\"]}", &e);
    assert_int_equal(codec_decode_ids(root, &ids, &n, &e), -1);
    assert_null(ids);
    assert_string_equal(e.code, "invalid_field");
    assert_string_equal(e.pointer, "/ids/1");
    json_decref(root);

    root = parse("{\"ids\":[]}", &e);
    assert_int_equal(codec_decode_ids(root, &ids, &n, &e), -1);
    assert_string_equal(e.pointer, "/ids");
    json_decref(root);
}

/* ---- Encoders. */

static void test_encode_amount(void **state)
{
    (void)state;
    json_t *v = codec_amount(INT64_C(9007199254740992)); /* 2^53 */
    assert_true(json_is_integer(v));
    assert_true(json_integer_value(v) == INT64_C(9007199254740992));
    json_decref(v);
    v = codec_amount(INT64_C(9007199254740993));
    assert_string_equal(json_string_value(v), "9007199254740993");
    json_decref(v);
    v = codec_amount(INT64_MAX);
    assert_string_equal(json_string_value(v), "9223372036854775807");
    json_decref(v);
    v = codec_amount(0);
    assert_true(json_is_integer(v) && json_integer_value(v) == 0);
    json_decref(v);
}

static void test_encode_account(void **state)
{
    (void)state;
    ledger_account a;
    memset(&a, 0, sizeof a);
    a.id.bytes[15] = 1;
    a.ledger = 840;
    a.code = 3;
    a.flags = LEDGER_AF_HISTORY | LEDGER_AF_CLOSED;
    a.debits_posted = 500;
    a.credits_posted = INT64_MAX;
    a.user_data_32 = -4;
    a.timestamp_us = INT64_C(1764316800000000);
    json_t *o = codec_encode_account(&a, "acme");
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")),
                        "00000000-0000-0000-0000-000000000001");
    assert_string_equal(json_string_value(json_object_get(o, "customer")), "acme");
    assert_int_equal(json_integer_value(json_object_get(o, "ledger")), 840);
    assert_int_equal(json_integer_value(json_object_get(o, "code")), 3);
    json_t *flags = json_object_get(o, "flags");
    assert_int_equal(json_array_size(flags), 2);
    assert_string_equal(json_string_value(json_array_get(flags, 0)), "history");
    assert_string_equal(json_string_value(json_array_get(flags, 1)), "closed");
    assert_int_equal(json_integer_value(json_object_get(o, "debits_posted")), 500);
    assert_string_equal(json_string_value(json_object_get(o, "credits_posted")),
                        "9223372036854775807");
    assert_int_equal(json_integer_value(json_object_get(o, "user_data_32")), -4);
    assert_true(json_integer_value(json_object_get(o, "timestamp_us")) ==
                INT64_C(1764316800000000));
    json_decref(o);
    o = codec_encode_account(&a, NULL);
    assert_null(json_object_get(o, "customer"));
    json_decref(o);
}

static void test_encode_transfer_round_trip(void **state)
{
    (void)state;
    char *meta = NULL;
    ledger_transfer t = decode_one(
        XFER(",\"amount\":\"9223372036854775000\",\"flags\":[\"pending\"],\"timeout_s\":3600,"
             "\"user_data_64\":42,\"user_data_32\":-1,\"metadata\":{\"ref\":\"invoice 42\","
             "\"n\":[1,{\"b\":true}]}"),
        &meta);
    t.metadata = meta;
    t.metadata_len = strlen(meta);
    t.timestamp_us = 1764316800000123;
    ledger_pending_state st = {.status = LEDGER_PENDING_POSTED, .amount_posted = 200};
    json_t *o = codec_encode_transfer(&t, &st);
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "amount")),
                        "9223372036854775000");
    assert_string_equal(json_string_value(json_object_get(o, "pending_status")), "posted");
    assert_int_equal(json_integer_value(json_object_get(o, "amount_posted")), 200);
    assert_true(json_integer_value(json_object_get(o, "timestamp_us")) == 1764316800000123);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "metadata"), "ref")),
        "invoice 42");
    assert_null(json_object_get(o, "pending_id")); /* zero: not shown */

    /* Back through the decoder: the same transfer. */
    json_object_del(o, "timestamp_us");
    json_object_del(o, "pending_status");
    json_object_del(o, "amount_posted");
    json_t *root = json_pack("{s:[O]}", "transfers", o);
    assert_non_null(root);
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    json_decref(o);
    char *meta2 = NULL;
    ledger_transfer back = decode_one(text, &meta2);
    free(text);
    assert_memory_equal(&back.id, &t.id, sizeof t.id);
    assert_memory_equal(&back.debit_account_id, &t.debit_account_id, sizeof t.id);
    assert_memory_equal(&back.credit_account_id, &t.credit_account_id, sizeof t.id);
    assert_true(back.amount == INT64_C(9223372036854775000));
    assert_int_equal(back.flags, LEDGER_TF_PENDING);
    assert_int_equal(back.timeout_s, 3600);
    assert_int_equal(back.user_data_64, 42);
    assert_int_equal(back.user_data_32, -1);
    assert_string_equal(meta2, meta);
    assert_string_equal(meta, "{\"n\":[1,{\"b\":true}],\"ref\":\"invoice 42\"}");
    free(meta);
    free(meta2);

    /* A post shows its pending_id; no state: no pending_status. */
    ledger_transfer p;
    memset(&p, 0, sizeof p);
    p.pending_id.bytes[0] = 0xab;
    p.flags = LEDGER_TF_POST_PENDING;
    o = codec_encode_transfer(&p, NULL);
    assert_string_equal(json_string_value(json_object_get(o, "pending_id")),
                        "ab000000-0000-0000-0000-000000000000");
    assert_string_equal(json_string_value(json_array_get(json_object_get(o, "flags"), 0)),
                        "post_pending_transfer");
    assert_null(json_object_get(o, "pending_status"));
    assert_null(json_object_get(o, "metadata"));
    json_decref(o);
}

static void test_encode_results(void **state)
{
    (void)state;
    ledger_transfer ev[2];
    memset(ev, 0, sizeof ev);
    ev[0].id.bytes[15] = 1;
    ev[0].timestamp_us = 1764316800000123;
    ev[1].id.bytes[15] = 2;
    ledger_transfer_result res[2] = {LEDGER_TRANSFER_OK, LEDGER_TRANSFER_EXCEEDS_CREDITS};
    json_t *o = codec_encode_transfer_results(ev, res, 2);
    assert_non_null(o);
    char *s = json_dumps(o, JSON_COMPACT);
    assert_string_equal(s, "{\"results\":[{\"index\":0,\"id\":\"00000000-0000-0000-0000-"
                           "000000000001\",\"result\":\"ok\",\"timestamp_us\":"
                           "1764316800000123},{\"index\":1,\"id\":\"00000000-0000-0000-"
                           "0000-000000000002\",\"result\":\"exceeds_credits\"}]}");
    free(s);
    json_decref(o);

    ledger_account acc[2];
    memset(acc, 0, sizeof acc);
    acc[0].id.bytes[15] = 9;
    acc[1].id.bytes[15] = 8;
    acc[1].timestamp_us = 5;
    ledger_account_result ares[2] = {LEDGER_ACCOUNT_LEDGER_NOT_FOUND, LEDGER_ACCOUNT_OK};
    o = codec_encode_account_results(acc, ares, 2);
    json_t *r = json_object_get(o, "results");
    assert_int_equal(json_array_size(r), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(r, 0), "result")),
                        "ledger_not_found");
    assert_null(json_object_get(json_array_get(r, 0), "timestamp_us"));
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 1), "index")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(r, 1), "timestamp_us")),
                     5);
    json_decref(o);

    o = codec_encode_transfer_results(NULL, NULL, 0);
    assert_int_equal(json_array_size(json_object_get(o, "results")), 0);
    json_decref(o);
}

static void test_problem_body_fields(void **state)
{
    (void)state;
    codec_error e;
    assert_int_equal(codec_fail(&e, 400, "invalid_field", "/transfers/3/amount",
                                "transfers[3].amount: must be an integer between %d and %s",
                                0, "9223372036854775807"),
                     -1);
    char *s = codec_problem_body(&e);
    assert_non_null(s);
    json_t *p = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(p);
    assert_string_equal(json_string_value(json_object_get(p, "type")),
                        "https://meridian.dev/problems/invalid_field");
    assert_string_equal(json_string_value(json_object_get(p, "title")), "Invalid field");
    assert_int_equal(json_integer_value(json_object_get(p, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(p, "code")), "invalid_field");
    assert_string_equal(json_string_value(json_object_get(p, "detail")),
                        "transfers[3].amount: must be an integer between 0 and "
                        "9223372036854775807");
    assert_string_equal(json_string_value(json_object_get(p, "pointer")),
                        "/transfers/3/amount");
    json_decref(p);

    codec_fail(&e, 413, "batch_too_large", "", "too many");
    s = codec_problem_body(&e);
    p = json_loads(s, 0, NULL);
    free(s);
    assert_string_equal(json_string_value(json_object_get(p, "title")), "Batch too large");
    assert_int_equal(json_integer_value(json_object_get(p, "status")), 413);
    assert_null(json_object_get(p, "pointer"));
    json_decref(p);

    /* Detail cut mid-character stays valid UTF-8. */
    char longtext[400];
    memset(longtext, 0, sizeof longtext);
    for (size_t i = 0; i + 2 < sizeof longtext; i += 2)
        memcpy(longtext + i, "\xc3\xa9", 2);
    codec_fail(&e, 400, "invalid_field", "", "x%s", longtext);
    s = codec_problem_body(&e);
    p = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(p);
    assert_true(strlen(json_string_value(json_object_get(p, "detail"))) < sizeof e.detail);
    json_decref(p);

    assert_string_equal(codec_pending_status_name(LEDGER_PENDING_PENDING), "pending");
    assert_string_equal(codec_pending_status_name(LEDGER_PENDING_EXPIRED), "expired");
    assert_string_equal(codec_pending_status_name(LEDGER_PENDING_VOIDED), "voided");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_parse_duplicate_key),
        cmocka_unit_test(test_parse_depth),
        cmocka_unit_test(test_parse_top_level),
        cmocka_unit_test(test_amounts_refused),
        cmocka_unit_test(test_amounts_accepted),
        cmocka_unit_test(test_decode_int64_direct),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_unknown_and_missing),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_batch_limits),
        cmocka_unit_test(test_accounts),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_encode_amount),
        cmocka_unit_test(test_encode_account),
        cmocka_unit_test(test_encode_transfer_round_trip),
        cmocka_unit_test(test_encode_results),
        cmocka_unit_test(test_problem_body_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
