/*
 * cli_apikey.c — API keys in the api_keys table (see cli_apikey.h).
 *
 * The key text never reaches PostgreSQL: only its keyed BLAKE2b-256
 * hash (lookup_hash, sent as a binary parameter) and its prefix ("mk_"
 * [+ cell + "_"] + 7 characters, apikey_prefix), which identifies a key
 * to an operator without letting anyone use it. The customer row (when new) and the
 * key row are written in one transaction, so a failure leaves neither.
 */
#include "cli/cli_apikey.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cli_customer.h"
#include "cli/cli_db.h"
#include "common/mrd_assert.h"

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

static int exec_command(PGconn *conn, const char *sql, char *err, size_t err_size)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fail(err, err_size, "%s failed: %s", sql, cli_db_message(conn, res));
    PQclear(res);
    return ok ? 0 : -1;
}

static int insert_key(PGconn *conn, const cli_apikey_new *k,
                      const uint8_t hash[APIKEY_HASH_SIZE], const char *label,
                      int64_t *id, char *err, size_t err_size)
{
    char customer_text[24];
    snprintf(customer_text, sizeof customer_text, "%" PRId64, k->customer_id);
    const char *params[5] = {
        k->customer_id > 0 ? customer_text : NULL,
        k->customer_id > 0 ? "customer" : "admin",
        (const char *)hash,
        k->prefix,
        label,
    };
    const int lengths[5] = {0, 0, APIKEY_HASH_SIZE, 0, 0};
    const int formats[5] = {0, 0, 1, 0, 0};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO api_keys"
                                 " (customer_id, scope, lookup_hash, prefix, label)"
                                 " VALUES ($1::bigint, $2, $3::bytea, $4, $5)"
                                 " RETURNING id",
                                 5, NULL, params, lengths, formats, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fail(err, err_size, "could not store the API key: %s", cli_db_message(conn, res));
        PQclear(res);
        return -1;
    }
    *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return 0;
}

int cli_apikey_create(PGconn *conn, const uint8_t pepper[APIKEY_PEPPER_SIZE],
                      const char *customer, const char *cell, const char *label,
                      cli_apikey_new *out, char *err, size_t err_size)
{
    mrd_assert(conn != NULL && pepper != NULL && label != NULL && out != NULL);
    mrd_assert(strlen(label) <= CLI_APIKEY_LABEL_MAX);
    memset(out, 0, sizeof *out);
    uint8_t hash[APIKEY_HASH_SIZE];

    if (apikey_init() != 0)
        return fail(err, err_size, "libsodium could not be initialised");
    if (apikey_generate_for_cell(cell, out->key) != 0)
        return fail(err, err_size,
                    "cell \"%.64s\" cannot be named in an API key: use 1 to %d characters "
                    "among a-z 0-9 _ -, starting with a letter or digit",
                    cell, APIKEY_CELL_MAX);
    mrd_assert(apikey_check_format(out->key) == 0);
    mrd_assert(apikey_prefix(out->key, out->prefix, sizeof out->prefix) == 0);
    mrd_assert(apikey_cell(out->key, out->cell, sizeof out->cell) >= 0);
    apikey_hash(pepper, out->key, hash);

    if (exec_command(conn, "BEGIN", err, err_size) != 0)
        goto fail;
    if (customer != NULL &&
        cli_customer_ensure(conn, customer, &out->customer_id, &out->customer_created,
                            err, err_size) != 0)
        goto rollback;
    if (insert_key(conn, out, hash, label, &out->id, err, err_size) != 0)
        goto rollback;
    if (exec_command(conn, "COMMIT", err, err_size) != 0)
        goto fail;
    sodium_memzero(hash, sizeof hash);
    return 0;
rollback: {
    PGresult *res = PQexec(conn, "ROLLBACK");
    PQclear(res);
}
fail:
    sodium_memzero(hash, sizeof hash);
    sodium_memzero(out, sizeof *out);
    return -1;
}

PGresult *cli_apikey_list(PGconn *conn, int64_t customer_id, char *err,
                          size_t err_size)
{
    char customer_text[24];
    snprintf(customer_text, sizeof customer_text, "%" PRId64, customer_id);
    const char *params[1] = {customer_text};
    PGresult *res = PQexecParams(
        conn,
        "SELECT k.id, k.prefix, k.scope, c.name, k.label,"
        " to_char(k.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " to_char(k.revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"
        " FROM api_keys k LEFT JOIN customers c ON c.id = k.customer_id"
        " WHERE $1::bigint = 0 OR k.customer_id = $1::bigint"
        " ORDER BY k.id",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not list API keys: %s", cli_db_message(conn, res));
        PQclear(res);
        return NULL;
    }
    return res;
}

int cli_apikey_revoke(PGconn *conn, int64_t id, char *prefix_out, size_t prefix_size,
                      char *err, size_t err_size)
{
    char id_text[24];
    snprintf(id_text, sizeof id_text, "%" PRId64, id);
    const char *params[1] = {id_text};
    /* One statement answers all three cases: the CTE revokes, the outer
     * query reports whether the key exists at all. */
    PGresult *res = PQexecParams(
        conn,
        "WITH r AS (UPDATE api_keys SET revoked_at = now()"
        "           WHERE id = $1::bigint AND revoked_at IS NULL RETURNING id)"
        " SELECT k.prefix, EXISTS (SELECT 1 FROM r) FROM api_keys k"
        " WHERE k.id = $1::bigint",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not revoke API key %" PRId64 ": %s", id,
             cli_db_message(conn, res));
        PQclear(res);
        return -1;
    }
    int rc;
    if (PQntuples(res) == 0) {
        rc = 2;
    } else {
        snprintf(prefix_out, prefix_size, "%s", PQgetvalue(res, 0, 0));
        rc = PQgetvalue(res, 0, 1)[0] == 't' ? 0 : 1;
    }
    PQclear(res);
    return rc;
}
