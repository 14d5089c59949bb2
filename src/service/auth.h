/*
 * auth.h — who is calling: API keys presented as "Authorization: Bearer".
 *
 * A key is checked for shape, hashed with the deployment's pepper
 * (keyed BLAKE2b, apikey.h) and looked up by hash among the live keys.
 * Positive answers are cached in a bounded in-memory table for
 * AUTH_CACHE_TTL_MS, so a revoked key keeps working on a running
 * meridiand for at most that long (documented in src/service/README.md).
 * Unknown keys are never cached: a key created a moment ago works at
 * once. A key that names a cell ("mk_<cell>_...", apikey.h) other than
 * the cell this meridiand serves (auth_set_cell) is refused before any
 * lookup with AUTH_WRONG_CELL: it was sent to the wrong place, and the
 * client should hear that rather than "unknown key".
 */
#ifndef MERIDIAN_AUTH_H
#define MERIDIAN_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "common/apikey.h"
#include "common/limits.h"
#include "service/reads.h"

#define AUTH_CACHE_TTL_MS 5000
#define AUTH_CACHE_SLOTS 1024

typedef struct auth_identity {
    bool admin;
    int64_t customer_id; /* > 0 for customer keys, 0 for admin keys */
    char customer_name[LIMIT_CUSTOMER_NAME_MAX + 1]; /* "" for admin keys */
    char key_prefix[APIKEY_PREFIX_SIZE];             /* for logs */
} auth_identity;

typedef enum {
    AUTH_OK = 0,
    AUTH_DENIED = -1,      /* missing, malformed, unknown or revoked: 401 */
    AUTH_UNAVAILABLE = -2, /* the key could not be checked: 503 */
    AUTH_WRONG_CELL = -3,  /* the key names another cell: 421 wrong_cell */
} auth_status;

typedef struct auth auth;

/* r is borrowed (must outlive the auth). pepper is copied. Returns NULL
 * on allocation failure. */
auth *auth_create(reads *r, const uint8_t pepper[APIKEY_PEPPER_SIZE]);
void auth_free(auth *a);

/* The cell this meridiand serves (copied; NULL or "" = accept keys of
 * any cell, the default). Call before serving requests. Returns 0, or -1
 * when cell is not a name a key can carry (nothing changes then). */
int auth_set_cell(auth *a, const char *cell);

/* Check the value of an Authorization header (may be NULL). On AUTH_OK
 * *out says who; on AUTH_DENIED and AUTH_WRONG_CELL why[] holds a
 * sentence for the client. */
auth_status auth_check(auth *a, const char *authorization, auth_identity *out, char *why,
                       size_t why_size);

#endif
