/*
 * apikey.h — API keys: generation, shape, the cell a key names, and
 * keyed lookup hashes.
 *
 * Two shapes are valid:
 *   "mk_" + 43 base64url characters                  (no cell; 46 characters)
 *   "mk_" + CELL + "_" + 43 base64url characters     (names its cell)
 * The 43 characters are 32 random bytes from libsodium. CELL is 1 to
 * APIKEY_CELL_MAX characters among a-z 0-9 _ -, starting with a letter or
 * a digit (the topology's name rule). The two shapes never collide: a key
 * without a cell is exactly 46 characters, a key with one at least 48, and
 * the random part is always the last 43 characters, preceded by '_' when
 * a cell is named — so a cell may even contain '_'. The cell lets a
 * global entry route by the Authorization header alone and lets meridiand
 * refuse a key of another cell before any database lookup.
 *
 * A key is shown once; the database stores only BLAKE2b-256(key) keyed
 * with the deployment's pepper (32 bytes, hex in the config file as
 * api_key_pepper), so a stolen table alone does not let anyone use or
 * verify keys. Keys are 256-bit random values, so a fast keyed hash is
 * the right tool (argon2id is for low-entropy passwords).
 */
#ifndef MERIDIAN_APIKEY_H
#define MERIDIAN_APIKEY_H

#include <stddef.h>
#include <stdint.h>

#define APIKEY_CELL_MAX 32      /* longest cell name a key may carry */
#define APIKEY_RANDOM_CHARS 43  /* base64url of 32 random bytes */
#define APIKEY_LEGACY_LEN 46    /* "mk_" + 43: a key naming no cell */
/* Buffer for any key text: "mk_" + cell + "_" + 43 + NUL. */
#define APIKEY_TEXT_SIZE (3 + APIKEY_CELL_MAX + 1 + APIKEY_RANDOM_CHARS + 1)
#define APIKEY_HASH_SIZE 32
#define APIKEY_PEPPER_SIZE 32
#define APIKEY_PREFIX_LEN 10 /* random characters shown to operators: 7 after "mk_" */
/* Buffer for the operator-visible prefix of any key: "mk_" [+ cell + "_"]
 * + 7 random characters + NUL (apikey_prefix). */
#define APIKEY_PREFIX_SIZE (3 + APIKEY_CELL_MAX + 1 + (APIKEY_PREFIX_LEN - 3) + 1)
#define APIKEY_CELL_SIZE (APIKEY_CELL_MAX + 1)

/* Initialise libsodium. Returns 0 or -1. Idempotent. */
int apikey_init(void);

/* Generate a new key naming no cell ("mk_" + 43) into out. */
void apikey_generate(char out[APIKEY_TEXT_SIZE]);

/* Generate a new key naming cell ("mk_<cell>_" + 43) into out; cell NULL
 * or "" generates a key naming no cell. Returns 0, or -1 (out set to "")
 * when cell is not a valid cell name (apikey_cell_name_check). */
int apikey_generate_for_cell(const char *cell, char out[APIKEY_TEXT_SIZE]);

/* Is name a cell name a key may carry: 1..APIKEY_CELL_MAX characters
 * among a-z 0-9 _ -, the first a letter or digit? Returns 0 or -1. */
int apikey_cell_name_check(const char *name);

/* Check the shape of a presented key: either shape above (prefix, cell
 * name, separator, length, alphabet, canonical base64). Returns 0 or -1. */
int apikey_check_format(const char *key);

/* The cell a key names. Returns 1 and copies the cell (NUL-terminated)
 * into cell[cell_size] when the key is well formed and names one; 0 with
 * cell set to "" when it is well formed and names none; -1 (cell "") when
 * the key is malformed or cell_size is too small for its cell. */
int apikey_cell(const char *key, char *cell, size_t cell_size);

/* The part of a well-formed key operators may see: everything up to and
 * including the cell separator plus the first 7 random characters
 * ("mk_AbCdEfG", "mk_us_AbCdEfG"). Returns 0, or -1 (out "") when the
 * key is malformed or out_size < APIKEY_PREFIX_SIZE would truncate it. */
int apikey_prefix(const char *key, char *out, size_t out_size);

/* Keyed hash of key into hash. */
void apikey_hash(const uint8_t pepper[APIKEY_PEPPER_SIZE], const char *key,
                 uint8_t hash[APIKEY_HASH_SIZE]);

/* Parse a 64-hex-digit pepper. Returns 0 or -1. */
int apikey_pepper_parse(const char *hex, uint8_t pepper[APIKEY_PEPPER_SIZE]);

#endif
