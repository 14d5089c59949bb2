/*
 * apikey.c — API keys: generation, shape check, keyed lookup hash.
 *
 * A key is "mk_" followed by 32 CSPRNG bytes in unpadded base64url (43
 * characters). The database holds only BLAKE2b-256 of the key keyed with
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
#define APIKEY_B64_CHARS (APIKEY_TEXT_SIZE - 1 - APIKEY_PREFIX_BYTES)

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

void apikey_generate(char out[APIKEY_TEXT_SIZE])
{
    mrd_assert(out != NULL);
    mrd_assert(sodium_init() >= 0);
    unsigned char raw[APIKEY_RANDOM_BYTES];
    randombytes_buf(raw, sizeof raw);
    memcpy(out, APIKEY_PREFIX, APIKEY_PREFIX_BYTES);
    sodium_bin2base64(out + APIKEY_PREFIX_BYTES, APIKEY_TEXT_SIZE - APIKEY_PREFIX_BYTES, raw,
                      sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    mrd_assert(strlen(out) == APIKEY_TEXT_SIZE - 1);
}

int apikey_check_format(const char *key)
{
    if (key == NULL)
        return -1;
    if (strnlen(key, APIKEY_TEXT_SIZE) != APIKEY_TEXT_SIZE - 1)
        return -1;
    if (memcmp(key, APIKEY_PREFIX, APIKEY_PREFIX_BYTES) != 0)
        return -1;
    const char *b64 = key + APIKEY_PREFIX_BYTES;
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
