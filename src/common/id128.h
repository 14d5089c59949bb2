/*
 * id128.h — 128-bit identifiers (accounts, transfers).
 *
 * Ids are chosen by clients (TigerBeetle's model: the id is the
 * idempotency key). On the wire and in PostgreSQL they are UUID-shaped:
 * 32 hex digits, with or without the 8-4-4-4-12 dashes, any case; stored
 * as the PostgreSQL uuid type, whose ordering is bytewise, the same as
 * id128_compare. Bytes are big-endian (bytes[0] is the most significant).
 */
#ifndef MERIDIAN_ID128_H
#define MERIDIAN_ID128_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct id128 {
    uint8_t bytes[16];
} id128;

/* Text form: 36 chars (dashed, lower case) + NUL. */
#define ID128_TEXT_SIZE 37

/* Parse 32 hex digits, optionally dashed as 8-4-4-4-12. Returns 0, or -1
 * (and leaves *out unchanged) when s is not exactly such a string. */
int id128_parse(const char *s, id128 *out);

/* Write the dashed lower-case form into buf (ID128_TEXT_SIZE bytes). */
void id128_format(const id128 *id, char buf[ID128_TEXT_SIZE]);

bool id128_is_zero(const id128 *id);
int id128_compare(const id128 *a, const id128 *b); /* <0, 0, >0 */
bool id128_equal(const id128 *a, const id128 *b);
uint64_t id128_hash(const id128 *id);

/* A random id from libsodium's CSPRNG (UUID version 4 bits set). */
void id128_random(id128 *out);

#endif
