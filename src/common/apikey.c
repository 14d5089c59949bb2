/*
 * apikey.c — API keys: generation, shape check, the cell a key names,
 * keyed lookup hash.
 *
 * A key is "mk_" [+ CELL + "_"] followed by 32 CSPRNG bytes in unpadded
 * base64url (43 characters); apikey.h explains why the two shapes cannot
 * be confused. The database holds only BLAKE2b-256 of the key keyed with
 * the deployment's pepper, so the table alone neither authenticates nor
 * lets anyone test guesses offline. Keys carry 256 bits of entropy, so a
 * fast keyed hash is enough; a slow password hash would only add latency
 * to every request. The shape check decodes the base64 strictly
 * (libsodium refuses non-zero padding bits), so exactly one text spells
 * each key and malformed keys are refused before any database lookup.
 */
#include "common/apikey.h"

#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "common/mrd_assert.h"

#define APIKEY_PREFIX "mk_"
#define APIKEY_PREFIX_BYTES (sizeof APIKEY_PREFIX - 1)
#define APIKEY_RANDOM_BYTES 32
#define APIKEY_B64_CHARS APIKEY_RANDOM_CHARS

_Static_assert(APIKEY_LEGACY_LEN == APIKEY_PREFIX_BYTES + APIKEY_B64_CHARS,
               "a key naming no cell is mk_ + 43 characters");
_Static_assert(APIKEY_TEXT_SIZE == APIKEY_PREFIX_BYTES + APIKEY_CELL_MAX + 1 + APIKEY_B64_CHARS + 1,
               "the longest key fits APIKEY_TEXT_SIZE");

_Static_assert(sodium_base64_ENCODED_LEN(APIKEY_RANDOM_BYTES,
                                         sodium_base64_VARIANT_URLSAFE_NO_PADDING) ==
                   APIKEY_B64_CHARS + 1,
               "43 base64url characters (plus NUL) encode 32 bytes");
_Static_assert(APIKEY_HASH_SIZE >= crypto_generichash_BYTES_MIN &&
                   APIKEY_HASH_SIZE <= crypto_generichash_BYTES_MAX,
               "hash size supported by BLAKE2b");
_Static_assert(APIKEY_PEPPER_SIZE >= crypto_generichash_KEYBYTES_MIN &&
                   APIKEY_PEPPER_SIZE <= crypto_generichash_KEYBYTES_MAX,
               "pepper size supported as a BLAKE2b key");

int apikey_init(void)
{
    /* 0: initialised now, 1: already initialised, -1: failure. */
    return sodium_init() < 0 ? -1 : 0;
}

/* Write "mk_" + cell_len bytes of cell [+ "_"] + 43 random characters. */
static void generate(const char *cell, size_t cell_len, char out[APIKEY_TEXT_SIZE])
{
    mrd_assert(out != NULL && cell_len <= APIKEY_CELL_MAX);
    mrd_assert(sodium_init() >= 0);
    size_t at = 0;
    memcpy(out, APIKEY_PREFIX, APIKEY_PREFIX_BYTES);
    at += APIKEY_PREFIX_BYTES;
    if (cell_len > 0) {
        memcpy(out + at, cell, cell_len);
        at += cell_len;
        out[at++] = '_';
    }
    unsigned char raw[APIKEY_RANDOM_BYTES];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out + at, APIKEY_TEXT_SIZE - at, raw, sizeof raw,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    mrd_assert(strlen(out) == at + APIKEY_B64_CHARS);
}

void apikey_generate(char out[APIKEY_TEXT_SIZE])
{
    generate(NULL, 0, out);
}

int apikey_cell_name_check(const char *name)
{
    if (name == NULL)
        return -1;
    size_t len = strnlen(name, APIKEY_CELL_MAX + 1);
    if (len == 0 || len > APIKEY_CELL_MAX)
        return -1;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '-')))
            return -1;
    }
    return 0;
}

int apikey_generate_for_cell(const char *cell, char out[APIKEY_TEXT_SIZE])
{
    mrd_assert(out != NULL);
    if (cell == NULL || cell[0] == '\0') {
        generate(NULL, 0, out);
        return 0;
    }
    if (apikey_cell_name_check(cell) != 0) {
        out[0] = '\0';
        return -1;
    }
    generate(cell, strlen(cell), out);
    return 0;
}

/* The 43 random characters: base64url alphabet and canonical encoding of
 * exactly 32 bytes. Returns 0 or -1. */
static int check_random_part(const char *b64)
{
    for (size_t i = 0; i < APIKEY_B64_CHARS; i++) {
        char c = b64[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok)
            return -1;
    }
    unsigned char raw[APIKEY_RANDOM_BYTES];
    size_t raw_len = 0;
    const char *end = NULL;
    int rc = sodium_base642bin(raw, sizeof raw, b64, APIKEY_B64_CHARS, NULL, &raw_len, &end,
                               sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    if (rc != 0 || raw_len != APIKEY_RANDOM_BYTES || end != b64 + APIKEY_B64_CHARS)
        return -1;
    return 0;
}

/* Split a key: *cell_len is the length of its cell (0 when it names
 * none). Returns 0 when the key has either valid shape, else -1. */
static int parse(const char *key, size_t *cell_len)
{
    *cell_len = 0;
    if (key == NULL)
        return -1;
    size_t len = strnlen(key, APIKEY_TEXT_SIZE);
    if (len >= APIKEY_TEXT_SIZE || len < APIKEY_LEGACY_LEN)
        return -1;
    if (memcmp(key, APIKEY_PREFIX, APIKEY_PREFIX_BYTES) != 0)
        return -1;
    if (len > APIKEY_LEGACY_LEN) {
        /* "mk_" + cell + "_" + 43: the cell is what lies in between. */
        size_t n = len - APIKEY_LEGACY_LEN - 1;
        if (n == 0 || key[APIKEY_PREFIX_BYTES + n] != '_')
            return -1;
        char cell[APIKEY_CELL_SIZE];
        mrd_assert(n <= APIKEY_CELL_MAX);
        memcpy(cell, key + APIKEY_PREFIX_BYTES, n);
        cell[n] = '\0';
        if (apikey_cell_name_check(cell) != 0)
            return -1;
        *cell_len = n;
    }
    return check_random_part(key + len - APIKEY_B64_CHARS);
}

int apikey_check_format(const char *key)
{
    size_t cell_len;
    return parse(key, &cell_len);
}

int apikey_cell(const char *key, char *cell, size_t cell_size)
{
    mrd_assert(cell != NULL && cell_size > 0);
    cell[0] = '\0';
    size_t n;
    if (parse(key, &n) != 0)
        return -1;
    if (n == 0)
        return 0;
    if (n >= cell_size)
        return -1;
    memcpy(cell, key + APIKEY_PREFIX_BYTES, n);
    cell[n] = '\0';
    return 1;
}

int apikey_prefix(const char *key, char *out, size_t out_size)
{
    mrd_assert(out != NULL && out_size > 0);
    out[0] = '\0';
    size_t n;
    if (parse(key, &n) != 0)
        return -1;
    size_t len = APIKEY_PREFIX_BYTES + (n > 0 ? n + 1 : 0) + (APIKEY_PREFIX_LEN - APIKEY_PREFIX_BYTES);
    if (len >= out_size)
        return -1;
    memcpy(out, key, len);
    out[len] = '\0';
    return 0;
}

void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_SIZE], const char *key,
                 uint8_t hash[APIKEY_HASH_SIZE])
{
    mrd_assert(pepper != NULL && key != NULL && hash != NULL);
    int rc = crypto_generichash(hash, APIKEY_HASH_SIZE, (const unsigned char *)key,
                                strlen(key), pepper, APIKEY_PEPPER_SIZE);
    mrd_assert(rc == 0);
}

int apikey_pepper_parse(const char *hex, uint8_t pepper[APIKEY_PEPPER_SIZE])
{
    mrd_assert(pepper != NULL);
    if (hex == NULL || strnlen(hex, APIKEY_PEPPER_SIZE * 2 + 1) != APIKEY_PEPPER_SIZE * 2)
        return -1;
    uint8_t tmp[APIKEY_PEPPER_SIZE];
    size_t len = 0;
    const char *end = NULL;
    int rc = sodium_hex2bin(tmp, sizeof tmp, hex, APIKEY_PEPPER_SIZE * 2, NULL, &len, &end);
    if (rc != 0 || len != APIKEY_PEPPER_SIZE || end != hex + APIKEY_PEPPER_SIZE * 2) {
        sodium_memzero(tmp, sizeof tmp);
        return -1;
    }
    memcpy(pepper, tmp, sizeof tmp);
    sodium_memzero(tmp, sizeof tmp);
    return 0;
}
