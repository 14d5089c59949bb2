/*
 * cli_apikey.h — issuing, listing and revoking API keys.
 *
 * A key is generated here (common/apikey.h), stored only as its keyed
 * hash with the deployment's pepper, and handed back once to the
 * caller, who shows it to the operator and then wipes it. A key issued
 * for a cell names it ("mk_<cell>_..."), so a global entry can route it
 * and a meridiand of another cell refuses it.
 */
#ifndef MERIDIAN_CLI_APIKEY_H
#define MERIDIAN_CLI_APIKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "common/apikey.h"

/* Longest label an operator may attach to a key. */
#define CLI_APIKEY_LABEL_MAX 200

typedef struct cli_apikey_new {
    char key[APIKEY_TEXT_SIZE];              /* the secret: wipe after use */
    char prefix[APIKEY_PREFIX_SIZE];         /* what operators see later */
    char cell[APIKEY_CELL_SIZE];             /* the cell the key names, "" for none */
    int64_t id;
    int64_t customer_id;                     /* 0 for an admin key */
    bool customer_created;
} cli_apikey_new;

/* Issue a key: for customer (created when missing) or, when customer is
 * NULL, an admin key. cell names the cell the key belongs to ("mk_<cell>_"
 * shape); NULL or "" issues a key naming no cell. label may be "" (at
 * most CLI_APIKEY_LABEL_MAX bytes). Everything happens in one
 * transaction. Returns 0 with out filled, or -1 with the reason in err
 * (nothing stored, out wiped; an invalid cell name is refused before
 * anything is written). */
int cli_apikey_create(PGconn *conn, const uint8_t pepper[APIKEY_PEPPER_SIZE],
                      const char *customer, const char *cell, const char *label,
                      cli_apikey_new *out, char *err, size_t err_size);

/* Keys, oldest first; only those of customer_id when it is > 0. Returns a
 * result (PQclear it) with columns id, prefix, scope, customer (NULL for
 * admin), label, created, revoked (NULL while active), or NULL with the
 * reason in err. */
PGresult *cli_apikey_list(PGconn *conn, int64_t customer_id, char *err,
                          size_t err_size);

/* Revoke key id. Returns 0 when revoked now, 1 when it already was
 * revoked, 2 when there is no such key, -1 with the reason in err. */
int cli_apikey_revoke(PGconn *conn, int64_t id, char *prefix_out,
                      size_t prefix_size, char *err, size_t err_size);

#endif
