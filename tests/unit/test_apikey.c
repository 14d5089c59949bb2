/*
 * test_apikey.c — API key generation, shape check and keyed hash.
 *
 * Generated keys must pass the shape check (and be distinct); anything
 * else — wrong prefix, length, alphabet, non-canonical base64 — must be
 * refused. The hash must be deterministic for one pepper, differ across
 * peppers, and match BLAKE2b-256 keyed with the pepper.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "common/apikey.h"

#define PEPPER_A "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define PEPPER_B "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

static int setup(void **state)
{
    (void)state;
    return apikey_init();
}

static void test_generate_and_check(void **state)
{
    (void)state;
    char prev[APIKEY_TEXT_SIZE] = "";
    for (int i = 0; i < 200; i++) {
        char key[APIKEY_TEXT_SIZE];
        memset(key, 'Z', sizeof key);
        apikey_generate(key);
        assert_int_equal(strlen(key), APIKEY_TEXT_SIZE - 1);
        assert_memory_equal(key, "mk_", 3);
        assert_int_equal(apikey_check_format(key), 0);
        assert_string_not_equal(key, prev);
        memcpy(prev, key, sizeof key);
    }
    assert_int_equal(apikey_init(), 0); /* idempotent */
}

static void test_check_rejects(void **state)
{
    (void)state;
    char key[APIKEY_TEXT_SIZE];
    apikey_generate(key);
    char bad[APIKEY_TEXT_SIZE + 8];

    assert_int_equal(apikey_check_format(NULL), -1);
    assert_int_equal(apikey_check_format(""), -1);
    assert_int_equal(apikey_check_format("mk_"), -1);

    memcpy(bad, key, sizeof key);
    bad[0] = 'x'; /* prefix */
    assert_int_equal(apikey_check_format(bad), -1);
    memcpy(bad, key, sizeof key);
    bad[2] = '-';
    assert_int_equal(apikey_check_format(bad), -1);

    memcpy(bad, key, sizeof key);
    bad[APIKEY_TEXT_SIZE - 2] = '\0'; /* one short */
    assert_int_equal(apikey_check_format(bad), -1);
    memcpy(bad, key, sizeof key);
    strcat(bad, "A"); /* one long */
    assert_int_equal(apikey_check_format(bad), -1);

    const char alien[] = {'+', '/', '=', ' ', '.', '\xc3'};
    for (size_t i = 0; i < sizeof alien; i++) {
        memcpy(bad, key, sizeof key);
        bad[10] = alien[i]; /* alphabet: base64url only */
        assert_int_equal(apikey_check_format(bad), -1);
    }

    /* 43 characters carry 258 bits: the last character's low 2 bits
     * must be zero, so "A" at the end is canonical and "B" is not. */
    memcpy(bad, key, sizeof key);
    bad[APIKEY_TEXT_SIZE - 2] = 'A';
    assert_int_equal(apikey_check_format(bad), 0);
    bad[APIKEY_TEXT_SIZE - 2] = 'B';
    assert_int_equal(apikey_check_format(bad), -1);

    /* A fixed, known-good key. */
    assert_int_equal(apikey_check_format("mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0);
    assert_int_equal(apikey_check_format("mk_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_4"), 0);
}

static void test_pepper_parse(void **state)
{
    (void)state;
    uint8_t p[APIKEY_PEPPER_SIZE];
    assert_int_equal(apikey_pepper_parse(PEPPER_A, p), 0);
    assert_int_equal(p[0], 0x00);
    assert_int_equal(p[1], 0x01);
    assert_int_equal(p[31], 0x1f);
    assert_int_equal(apikey_pepper_parse(
                         "FF0102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F", p),
                     0);
    assert_int_equal(p[0], 0xff);

    memset(p, 0xAA, sizeof p);
    assert_int_equal(apikey_pepper_parse(NULL, p), -1);
    assert_int_equal(apikey_pepper_parse("", p), -1);
    assert_int_equal(apikey_pepper_parse(PEPPER_A "00", p), -1); /* 66 digits */
    char short_hex[] = PEPPER_A;
    short_hex[62] = '\0'; /* 62 digits */
    assert_int_equal(apikey_pepper_parse(short_hex, p), -1);
    char nonhex[] = PEPPER_A;
    nonhex[40] = 'g';
    assert_int_equal(apikey_pepper_parse(nonhex, p), -1);
    nonhex[40] = ' ';
    assert_int_equal(apikey_pepper_parse(nonhex, p), -1);
    /* Failure leaves the output untouched. */
    for (size_t i = 0; i < sizeof p; i++)
        assert_int_equal(p[i], 0xAA);
}

static void test_hash(void **state)
{
    (void)state;
    uint8_t pa[APIKEY_PEPPER_SIZE], pb[APIKEY_PEPPER_SIZE];
    assert_int_equal(apikey_pepper_parse(PEPPER_A, pa), 0);
    assert_int_equal(apikey_pepper_parse(PEPPER_B, pb), 0);
    const char *key = "mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    uint8_t h1[APIKEY_HASH_SIZE], h2[APIKEY_HASH_SIZE], h3[APIKEY_HASH_SIZE],
        h4[APIKEY_HASH_SIZE], want[APIKEY_HASH_SIZE];
    apikey_hash(pa, key, h1);
    apikey_hash(pa, key, h2);
    assert_memory_equal(h1, h2, sizeof h1);
    apikey_hash(pb, key, h3);
    assert_memory_not_equal(h1, h3, sizeof h1);
    apikey_hash(pa, "mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ", h4);
    assert_memory_not_equal(h1, h4, sizeof h1);

    /* Independent computation: BLAKE2b-256 keyed with the pepper. */
    assert_int_equal(crypto_generichash(want, sizeof want, (const unsigned char *)key,
                                        strlen(key), pa, sizeof pa),
                     0);
    assert_memory_equal(h1, want, sizeof want);
    /* And not the unkeyed hash. */
    assert_int_equal(crypto_generichash(want, sizeof want, (const unsigned char *)key,
                                        strlen(key), NULL, 0),
                     0);
    assert_memory_not_equal(h1, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_and_check),
        cmocka_unit_test(test_check_rejects),
        cmocka_unit_test(test_pepper_parse),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
