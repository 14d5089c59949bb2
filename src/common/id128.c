/*
 * id128.c — 128-bit identifiers: text form, ordering, hashing, random ids.
 *
 * Ids are client-chosen idempotency keys (see id128.h). The text form is
 * the UUID shape PostgreSQL prints; parsing is strict (exactly 32 hex
 * digits, dashes only all at 8-4-4-4-12 or none) so that one id has
 * exactly two accepted spellings per case and a typo is refused instead
 * of silently naming another id. Ordering is bytewise, the same as the
 * PostgreSQL uuid type, so "lock accounts in id order" means the same
 * thing in C and in SQL.
 */
#include "common/id128.h"

#include <string.h>

#include <sodium.h>

#include "common/mrd_assert.h"

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parse s into *out. Accepts "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" or 32
 * hex digits, any case. Returns 0, or -1 (out untouched) for anything
 * else, including NULL. */
int id128_parse(const char *s, id128 *out)
{
    if (s == NULL || out == NULL)
        return -1;
    size_t len = strnlen(s, 37);
    bool dashed;
    if (len == 32)
        dashed = false;
    else if (len == 36)
        dashed = true;
    else
        return -1;

    id128 id;
    size_t digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (dashed && (i == 8 || i == 13 || i == 18 || i == 23)) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int v = hex_value(s[i]);
        if (v < 0)
            return -1;
        mrd_assert(digits < 32);
        if (digits % 2 == 0)
            id.bytes[digits / 2] = (uint8_t)(v << 4);
        else
            id.bytes[digits / 2] |= (uint8_t)v;
        digits++;
    }
    mrd_assert(digits == 32);
    *out = id;
    return 0;
}

/* Write the dashed lower-case form (36 chars + NUL) into buf. */
void id128_format(const id128 *id, char buf[ID128_TEXT_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            buf[o++] = '-';
        buf[o++] = hex[id->bytes[i] >> 4];
        buf[o++] = hex[id->bytes[i] & 0x0f];
    }
    mrd_assert(o == ID128_TEXT_SIZE - 1);
    buf[o] = '\0';
}

bool id128_is_zero(const id128 *id)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < 16; i++)
        acc |= id->bytes[i];
    return acc == 0;
}

/* Bytewise order (big-endian): negative, zero or positive like memcmp. */
int id128_compare(const id128 *a, const id128 *b)
{
    return memcmp(a->bytes, b->bytes, sizeof a->bytes);
}

bool id128_equal(const id128 *a, const id128 *b)
{
    return memcmp(a->bytes, b->bytes, sizeof a->bytes) == 0;
}

static uint64_t load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

/* A well-mixed 64-bit hash for hash tables (not cryptographic: ids are
 * chosen by clients, but tables are bounded and probing is bounded, so
 * a crafted collision set costs time, never memory or correctness). The
 * two halves are combined and run through MurmurHash3's fmix64. */
uint64_t id128_hash(const id128 *id)
{
    uint64_t hi = load_be64(id->bytes);
    uint64_t lo = load_be64(id->bytes + 8);
    uint64_t h = hi * 0x9e3779b97f4a7c15ull ^ (lo + 0x632be59bd9b4e019ull);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* A random version-4 UUID from libsodium's CSPRNG. sodium_init is safe to
 * call repeatedly and from several threads; it only fails when the
 * system has no usable entropy source, which we cannot run without. */
void id128_random(id128 *out)
{
    int rc = sodium_init();
    mrd_assert(rc >= 0);
    randombytes_buf(out->bytes, sizeof out->bytes);
    out->bytes[6] = (uint8_t)((out->bytes[6] & 0x0f) | 0x40);
    out->bytes[8] = (uint8_t)((out->bytes[8] & 0x3f) | 0x80);
}
