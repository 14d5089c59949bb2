/*
 * test_id128.c — unit tests for common/id128.c: the strict text form
 * (what the API accepts as an id), bytewise ordering (the lock order
 * shared with PostgreSQL), hashing and random ids.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/id128.h"

static const uint8_t sample_bytes[16] = {0x7f, 0x1c, 0x2d, 0x3e, 0x00, 0x00, 0x40, 0x00,
                                         0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};

static void test_parse_dashed_and_plain(void **state)
{
    (void)state;
    id128 a, b, c, d;
    assert_int_equal(id128_parse("7f1c2d3e-0000-4000-8000-000000000001", &a), 0);
    assert_memory_equal(a.bytes, sample_bytes, 16);
    assert_int_equal(id128_parse("7f1c2d3e000040008000000000000001", &b), 0);
    assert_memory_equal(b.bytes, sample_bytes, 16);
    assert_int_equal(id128_parse("7F1C2D3E-0000-4000-8000-000000000001", &c), 0);
    assert_memory_equal(c.bytes, sample_bytes, 16);
    assert_int_equal(id128_parse("7f1C2d3E000040008000000000000001", &d), 0);
    assert_memory_equal(d.bytes, sample_bytes, 16);
    assert_true(id128_equal(&a, &d));
}

static void test_format_round_trip(void **state)
{
    (void)state;
    id128 a;
    memcpy(a.bytes, sample_bytes, 16);
    char buf[ID128_TEXT_SIZE];
    memset(buf, 'x', sizeof buf);
    id128_format(&a, buf);
    assert_string_equal(buf, "7f1c2d3e-0000-4000-8000-000000000001");
    assert_int_equal(strlen(buf), 36);

    /* Every byte value survives format -> parse. */
    id128 all;
    for (int i = 0; i < 16; i++)
        all.bytes[i] = (uint8_t)(0xf0 + i * 17);
    for (int round = 0; round < 16; round++) {
        for (int i = 0; i < 16; i++)
            all.bytes[i] = (uint8_t)(all.bytes[i] + 16 * round + 1);
        id128 back;
        id128_format(&all, buf);
        assert_int_equal(id128_parse(buf, &back), 0);
        assert_memory_equal(back.bytes, all.bytes, 16);
    }

    id128 upper;
    assert_int_equal(id128_parse("ABCDEFABCDEFABCDEFABCDEFABCDEFAB", &upper), 0);
    id128_format(&upper, buf);
    assert_string_equal(buf, "abcdefab-cdef-abcd-efab-cdefabcdefab");
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "7f1c2d3e00004000800000000000001",     /* 31 digits */
        "7f1c2d3e0000400080000000000000011",   /* 33 digits */
        "7f1c2d3e-0000-4000-8000-00000000001", /* 35 chars dashed */
        "7f1c2d3e-0000-4000-8000-0000000000011",
        "7f1c2d3-e0000-4000-8000-000000000001", /* dash one early */
        "7f1c2d3e0-000-4000-8000-000000000001", /* dash one late */
        "7f1c2d3e-0000-40008000-0000000000001", /* missing dash, 35 chars */
        "7f1c2d3e-0000-4000-8000000000000001-", /* dash at the end */
        "7f1c2d3e-0000-4000-8000-00000000000g", /* non-hex */
        "7f1c2d3e00004000800000000000000g",
        "7f1c2d3e-0000-4000-8000+000000000001", /* wrong separator */
        " 7f1c2d3e00004000800000000000001",    /* leading space */
        "7f1c2d3e00004000800000000000001 ",    /* trailing space */
        "0x7f1c2d3e0000400080000000000001",
        "7f1c2d3e-0000-4000-8000-00000000000\xc3\xa9",
        "{7f1c2d3e-0000-4000-8000-0000000001}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        id128 out;
        memset(out.bytes, 0xaa, 16);
        assert_int_equal(id128_parse(bad[i], &out), -1);
        for (int k = 0; k < 16; k++)
            assert_int_equal(out.bytes[k], 0xaa); /* untouched */
    }
    id128 out;
    assert_int_equal(id128_parse(NULL, &out), -1);
    /* A string longer than any accepted form is refused without reading
     * past it. */
    char longer[100];
    memset(longer, 'a', sizeof longer - 1);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(id128_parse(longer, &out), -1);
}

static void test_zero_compare_equal(void **state)
{
    (void)state;
    id128 z = {{0}};
    assert_true(id128_is_zero(&z));
    id128 one = {{0}};
    one.bytes[15] = 1;
    assert_false(id128_is_zero(&one));
    id128 high = {{0}};
    high.bytes[0] = 1;
    id128 mid = {{0}};
    mid.bytes[1] = 0xff;
    mid.bytes[15] = 0xff;

    /* Big-endian bytewise: bytes[0] is the most significant. */
    assert_true(id128_compare(&z, &one) < 0);
    assert_true(id128_compare(&one, &z) > 0);
    assert_true(id128_compare(&mid, &high) < 0);
    assert_true(id128_compare(&high, &mid) > 0);
    assert_int_equal(id128_compare(&mid, &mid), 0);
    assert_true(id128_equal(&mid, &mid));
    assert_false(id128_equal(&mid, &high));

    /* Same order as the text form (what PostgreSQL's uuid compares). */
    char ta[ID128_TEXT_SIZE], tb[ID128_TEXT_SIZE];
    id128_format(&mid, ta);
    id128_format(&high, tb);
    assert_true(strcmp(ta, tb) < 0);
}

static void test_hash(void **state)
{
    (void)state;
    id128 a, b;
    memcpy(a.bytes, sample_bytes, 16);
    memcpy(b.bytes, sample_bytes, 16);
    assert_true(id128_hash(&a) == id128_hash(&b));
    b.bytes[15] ^= 1;
    assert_true(id128_hash(&a) != id128_hash(&b));
    b.bytes[15] ^= 1;
    b.bytes[0] ^= 1;
    assert_true(id128_hash(&a) != id128_hash(&b));

    /* Sequential ids (a common client pattern) spread over the low bits
     * the tables use: 16384 ids into 1024 buckets, expected 16 each. */
    enum { IDS = 16384, BUCKETS = 1024 };
    static unsigned counts[BUCKETS];
    memset(counts, 0, sizeof counts);
    for (unsigned i = 0; i < IDS; i++) {
        id128 id = {{0}};
        id.bytes[12] = (uint8_t)(i >> 24);
        id.bytes[13] = (uint8_t)(i >> 16);
        id.bytes[14] = (uint8_t)(i >> 8);
        id.bytes[15] = (uint8_t)i;
        counts[id128_hash(&id) & (BUCKETS - 1)]++;
    }
    unsigned max = 0, empty = 0;
    for (unsigned i = 0; i < BUCKETS; i++) {
        if (counts[i] > max)
            max = counts[i];
        if (counts[i] == 0)
            empty++;
    }
    assert_true(max < 48);
    assert_true(empty < 8);
}

static void test_random(void **state)
{
    (void)state;
    id128 a, b;
    id128_random(&a);
    id128_random(&b);
    assert_false(id128_equal(&a, &b));
    assert_false(id128_is_zero(&a));
    for (int i = 0; i < 64; i++) {
        id128 r;
        id128_random(&r);
        assert_int_equal(r.bytes[6] >> 4, 4);      /* version 4 */
        assert_int_equal(r.bytes[8] & 0xc0, 0x80); /* RFC 4122 variant */
        char buf[ID128_TEXT_SIZE];
        id128_format(&r, buf);
        assert_int_equal(buf[14], '4');
        id128 back;
        assert_int_equal(id128_parse(buf, &back), 0);
        assert_true(id128_equal(&back, &r));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_dashed_and_plain),
        cmocka_unit_test(test_format_round_trip),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_zero_compare_equal),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
