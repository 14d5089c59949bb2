/*
 * apikey.h — API keys: generation and keyed lookup hashes.
 *
 * A key is "mk_" + 43 base64url characters (32 random bytes from
 * libsodium). It is shown once; the database stores only
 * BLAKE2b-256(key) keyed with the deployment's pepper (32 bytes, hex in
 * the config file as api_key_pepper), so a stolen table alone does not
 * let anyone use or verify keys. Keys are 256-bit random values, so a
 * fast keyed hash is the right tool (argon2id is for low-entropy
 * passwords).
 */
#ifndef MERIDIAN_APIKEY_H
#define MERIDIAN_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define APIKEY_TEXT_SIZE 47 /* "mk_" + 43 + NUL */
#define APIKEY_HASH_SIZE 32
#define APIKEY_PEPPER_SIZE 32
#define APIKEY_PREFIX_LEN 10 /* shown to operators: "mk_" + 7 */

/* Initialise libsodium. Returns 0 or -1. Idempotent. */
int apikey_init(void);

/* Generate a new key into out. */
void apikey_generate(char out[APIKEY_TEXT_SIZE]);

/* Check the shape of a presented key (prefix, length, alphabet).
 * Returns 0 or -1. */
int apikey_check_format(const char *key);

/* Keyed hash of key into hash. */
void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_SIZE], const char *key,
                 uint8_t hash[APIKEY_HASH_SIZE]);

/* Parse a 64-hex-digit pepper. Returns 0 or -1. */
int apikey_pepper_parse(const char *hex, uint8_t pepper[APIKEY_PEPPER_SIZE]);

#endif
