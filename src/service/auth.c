/*
 * auth.c — API-key authentication with a short positive cache.
 *
 * Every request under /v1 presents a key. Hashing is cheap (keyed
 * BLAKE2b of a 256-bit random key), the database lookup is not, so a
 * direct-mapped table of AUTH_CACHE_SLOTS entries keyed by the hash
 * remembers recent successes for AUTH_CACHE_TTL_MS. A collision simply
 * evicts; the table never grows. The cache is what bounds revocation
 * latency: a key revoked in the database is refused by every meridiand
 * within AUTH_CACHE_TTL_MS. A key naming a cell other than the one set
 * with auth_set_cell is refused before hashing or lookup: the cell is
 * part of the key text (apikey.h), so this costs a string compare.
 */
#include "service/auth.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/mrd_assert.h"

typedef struct cache_entry {
    uint8_t hash[APIKEY_HASH_SIZE];
    int64_t expires_ns; /* 0: empty */
    auth_identity identity;
} cache_entry;

struct auth {
    reads *reads;
    char cell[APIKEY_CELL_SIZE]; /* "" = any cell */
    uint8_t pepper[APIKEY_PEPPER_SIZE];
    pthread_mutex_t mu;
    cache_entry cache[AUTH_CACHE_SLOTS];
};

auth *auth_create(reads *r, const uint8_t pepper[APIKEY_PEPPER_SIZE])
{
    mrd_assert(r != NULL);
    auth *a = calloc(1, sizeof *a);
    if (a == NULL) return NULL;
    a->reads = r;
    memcpy(a->pepper, pepper, APIKEY_PEPPER_SIZE);
    pthread_mutex_init(&a->mu, NULL);
    return a;
}

void auth_free(auth *a)
{
    if (a == NULL) return;
    pthread_mutex_destroy(&a->mu);
    sodium_memzero(a->pepper, sizeof a->pepper);
    free(a);
}

int auth_set_cell(auth *a, const char *cell)
{
    mrd_assert(a != NULL);
    if (cell == NULL || cell[0] == '\0') {
        a->cell[0] = '\0';
        return 0;
    }
    if (apikey_cell_name_check(cell) != 0) return -1;
    snprintf(a->cell, sizeof a->cell, "%s", cell);
    return 0;
}

static size_t slot_of(const uint8_t hash[APIKEY_HASH_SIZE])
{
    uint64_t v;
    memcpy(&v, hash, sizeof v);
    return (size_t)(v % AUTH_CACHE_SLOTS);
}

auth_status auth_check(auth *a, const char *authorization, auth_identity *out, char *why,
                       size_t why_size)
{
    static const char bearer[] = "Bearer ";
    if (authorization == NULL) {
        snprintf(why, why_size, "no API key: send the header 'Authorization: Bearer mk_...'");
        return AUTH_DENIED;
    }
    if (strncasecmp(authorization, bearer, sizeof bearer - 1) != 0) {
        snprintf(why, why_size,
                 "the Authorization header must be 'Bearer ' followed by an API key");
        return AUTH_DENIED;
    }
    const char *key = authorization + sizeof bearer - 1;
    while (*key == ' ') key++;
    char key_cell[APIKEY_CELL_SIZE];
    int named = apikey_cell(key, key_cell, sizeof key_cell);
    if (named < 0) {
        snprintf(why, why_size,
                 "malformed API key: expected mk_ (or mk_CELL_) followed by 43 base64url "
                 "characters");
        return AUTH_DENIED;
    }
    if (named == 1 && a->cell[0] != '\0' && strcmp(key_cell, a->cell) != 0) {
        snprintf(why, why_size,
                 "this API key is of cell %s, this is cell %s: send it to the global entry",
                 key_cell, a->cell);
        return AUTH_WRONG_CELL;
    }
    uint8_t hash[APIKEY_HASH_SIZE];
    apikey_hash(a->pepper, key, hash);
    size_t slot = slot_of(hash);
    int64_t now = clock_mono_ns();

    pthread_mutex_lock(&a->mu);
    cache_entry *e = &a->cache[slot];
    if (e->expires_ns > now && sodium_memcmp(e->hash, hash, APIKEY_HASH_SIZE) == 0) {
        *out = e->identity;
        pthread_mutex_unlock(&a->mu);
        return AUTH_OK;
    }
    pthread_mutex_unlock(&a->mu);

    reads_key k;
    reads_status rs = reads_api_key(a->reads, hash, &k);
    if (rs == READS_NOT_FOUND) {
        snprintf(why, why_size, "unknown or revoked API key");
        return AUTH_DENIED;
    }
    if (rs != READS_OK) return AUTH_UNAVAILABLE;

    memset(out, 0, sizeof *out);
    out->admin = k.admin;
    out->customer_id = k.customer_id;
    snprintf(out->customer_name, sizeof out->customer_name, "%s", k.customer_name);
    if (apikey_prefix(key, out->key_prefix, sizeof out->key_prefix) != 0)
        snprintf(out->key_prefix, sizeof out->key_prefix, "%.*s", APIKEY_PREFIX_LEN, key);

    pthread_mutex_lock(&a->mu);
    memcpy(e->hash, hash, APIKEY_HASH_SIZE);
    e->identity = *out;
    e->expires_ns = clock_mono_ns() + (int64_t)AUTH_CACHE_TTL_MS * 1000000LL;
    pthread_mutex_unlock(&a->mu);
    return AUTH_OK;
}
