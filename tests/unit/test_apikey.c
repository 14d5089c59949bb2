/*
 * test_apikey.c — API key generation, shape check, the cell a key
 * names, and the keyed hash.
 *
 * Generated keys of both shapes ("mk_" + 43, "mk_<cell>_" + 43) must pass
 * the shape check (and be distinct), and the cell must come back out of
 * them; anything else — wrong prefix, length, alphabet, non-canonical
 * base64, a malformed or missing cell, a missing separator — must be
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
        assert_int_equal(strlen(key), APIKEY_LEGACY_LEN);
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
    bad[APIKEY_LEGACY_LEN - 1] = '\0'; /* one short */
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
    bad[APIKEY_LEGACY_LEN - 1] = 'A';
    assert_int_equal(apikey_check_format(bad), 0);
    bad[APIKEY_LEGACY_LEN - 1] = 'B';
    assert_int_equal(apikey_check_format(bad), -1);

    /* A fixed, known-good key. */
    assert_int_equal(apikey_check_format("mk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), 0);
    assert_int_equal(apikey_check_format("mk_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_4"), 0);
}

#define R43 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

static void test_cell_keys(void **state)
{
    (void)state;
    char key[APIKEY_TEXT_SIZE], cell[APIKEY_CELL_SIZE], prev[APIKEY_TEXT_SIZE] = "";
    for (int i = 0; i < 100; i++) {
        assert_int_equal(apikey_generate_for_cell("us", key), 0);
        assert_int_equal(strlen(key), APIKEY_LEGACY_LEN + 3);
        assert_memory_equal(key, "mk_us_", 6);
        assert_int_equal(apikey_check_format(key), 0);
        assert_int_equal(apikey_cell(key, cell, sizeof cell), 1);
        assert_string_equal(cell, "us");
        assert_string_not_equal(key, prev);
        memcpy(prev, key, sizeof key);
    }
    /* The longest cell name fits the buffer; names with '-' and '_'. */
    const char *longest = "abcdefghijklmnopqrstuvwxyz012345";
    assert_int_equal(strlen(longest), APIKEY_CELL_MAX);
    assert_int_equal(apikey_generate_for_cell(longest, key), 0);
    assert_int_equal(strlen(key), APIKEY_TEXT_SIZE - 1);
    assert_int_equal(apikey_cell(key, cell, sizeof cell), 1);
    assert_string_equal(cell, longest);
    assert_int_equal(apikey_generate_for_cell("eu-west_2", key), 0);
    assert_int_equal(apikey_cell(key, cell, sizeof cell), 1);
    assert_string_equal(cell, "eu-west_2");
    /* A cell too long for the caller's buffer is refused, not cut. */
    char small[3];
    assert_int_equal(apikey_cell(key, small, sizeof small), -1);
    assert_string_equal(small, "");

    /* No cell: today's shape, and apikey_cell says "none". */
    assert_int_equal(apikey_generate_for_cell(NULL, key), 0);
    assert_int_equal(strlen(key), APIKEY_LEGACY_LEN);
    assert_int_equal(apikey_cell(key, cell, sizeof cell), 0);
    assert_string_equal(cell, "");
    assert_int_equal(apikey_generate_for_cell("", key), 0);
    assert_int_equal(strlen(key), APIKEY_LEGACY_LEN);
    /* A legacy key whose random part contains '_' names no cell. */
    assert_int_equal(apikey_cell("mk_ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", cell, sizeof cell), 0);

    /* Fixed known-good keys of the cell shape. */
    assert_int_equal(apikey_check_format("mk_us_" R43), 0);
    assert_int_equal(apikey_check_format("mk_0_" R43), 0);
    assert_int_equal(apikey_check_format("mk_a_b_" R43), 0); /* cell "a_b" */
    assert_int_equal(apikey_cell("mk_a_b_" R43, cell, sizeof cell), 1);
    assert_string_equal(cell, "a_b");
    assert_int_equal(apikey_cell("mk_us_" "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_4", cell, sizeof cell), 1);
    assert_string_equal(cell, "us");
}

static void test_cell_keys_reject(void **state)
{
    (void)state;
    char key[APIKEY_TEXT_SIZE], cell[APIKEY_CELL_SIZE];
    /* Bad cell names are refused at generation. */
    const char *bad_names[] = {"US", "u s", "-us", "_us", "us.", "ü", "abcdefghijklmnopqrstuvwxyz0123456"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        memset(key, 'Z', sizeof key);
        assert_int_equal(apikey_cell_name_check(bad_names[i]), -1);
        assert_int_equal(apikey_generate_for_cell(bad_names[i], key), -1);
        assert_string_equal(key, "");
    }
    assert_int_equal(apikey_cell_name_check(NULL), -1);
    assert_int_equal(apikey_cell_name_check(""), -1);
    assert_int_equal(apikey_cell_name_check("us"), 0);
    assert_int_equal(apikey_cell_name_check("9-x_y"), 0);

    /* Bad shapes. */
    const char *bad[] = {
        "mk__" R43,                 /* empty cell */
        "mk_US_" R43,               /* capitals */
        "mk_u.s_" R43,              /* '.' in the cell */
        "mk_-us_" R43,              /* cell starts with '-' */
        "mk__us_" R43,              /* cell starts with '_' */
        "mk_us-" R43,               /* no '_' before the random part */
        "mk_us" R43,                /* no separator at all */
        "mk_us_" R43 "A",           /* random part one long */
        "mk_us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAB", /* non-canonical */
        "mk_us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", /* '+' */
        "mk_us_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", /* '=' */
        "mk_abcdefghijklmnopqrstuvwxyz0123456_" R43, /* 33-character cell */
        "xk_us_" R43,               /* prefix */
        "MK_us_" R43,
        "mk_us_" R43 "\n",
        "mk_us_ " R43,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(apikey_check_format(bad[i]), -1);
        memset(cell, 'Z', sizeof cell);
        assert_int_equal(apikey_cell(bad[i], cell, sizeof cell), -1);
        assert_string_equal(cell, "");
    }
    /* A far too long text is refused without reading past the buffer. */
    char huge[256];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    memcpy(huge, "mk_", 3);
    assert_int_equal(apikey_check_format(huge), -1);
}

static void test_prefix(void **state)
{
    (void)state;
    char p[APIKEY_PREFIX_SIZE];
    assert_int_equal(apikey_prefix("mk_us_" R43, p, sizeof p), 0);
    assert_string_equal(p, "mk_us_AAAAAAA");
    assert_int_equal(apikey_prefix("mk_" R43, p, sizeof p), 0);
    assert_string_equal(p, "mk_AAAAAAA");
    assert_int_equal(strlen(p), APIKEY_PREFIX_LEN);
    char key[APIKEY_TEXT_SIZE];
    assert_int_equal(apikey_generate_for_cell("abcdefghijklmnopqrstuvwxyz012345", key), 0);
    assert_int_equal(apikey_prefix(key, p, sizeof p), 0);
    assert_int_equal(strlen(p), APIKEY_PREFIX_SIZE - 1);
    char small[8];
    assert_int_equal(apikey_prefix("mk_us_" R43, small, sizeof small), -1);
    assert_string_equal(small, "");
    assert_int_equal(apikey_prefix("mk_us" R43, p, sizeof p), -1);
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
        cmocka_unit_test(test_cell_keys),
        cmocka_unit_test(test_cell_keys_reject),
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_pepper_parse),
        cmocka_unit_test(test_hash),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
