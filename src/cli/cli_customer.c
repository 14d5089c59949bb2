/*
 * cli_customer.c — creating, finding and listing customers for
 * meridianctl (see cli_customer.h).
 *
 * Creation is a lookup, then INSERT ... ON CONFLICT DO NOTHING and a
 * second lookup when another session won the race, so two operators
 * creating the same customer at once both succeed and see one row.
 */
#include "cli/cli_customer.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_db.h"
#include "common/limits.h"
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

int cli_customer_name_check(const char *name)
{
    size_t n = strnlen(name, LIMIT_CUSTOMER_NAME_MAX + 1);
    if (n == 0 || n > LIMIT_CUSTOMER_NAME_MAX)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return -1;
    }
    return 0;
}

int cli_customer_find(PGconn *conn, const char *name, int64_t *id, char *err,
                      size_t err_size)
{
    mrd_assert(cli_customer_name_check(name) == 0);
    const char *params[1] = {name};
    PGresult *res = PQexecParams(conn, "SELECT id FROM customers WHERE name = $1", 1,
                                 NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not look up customer %s: %s", name,
             cli_db_message(conn, res));
        PQclear(res);
        return -1;
    }
    int found = PQntuples(res) == 1;
    if (found)
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return found;
}

int cli_customer_ensure(PGconn *conn, const char *name, int64_t *id, bool *created,
                        char *err, size_t err_size)
{
    mrd_assert(cli_customer_name_check(name) == 0);
    /* Look first: an INSERT that conflicts would still burn an id. */
    int found = cli_customer_find(conn, name, id, err, err_size);
    if (found < 0)
        return -1;
    if (found == 1) {
        *created = false;
        return 0;
    }
    const char *params[1] = {name};
    PGresult *res = PQexecParams(conn,
                                 "INSERT INTO customers (name) VALUES ($1)"
                                 " ON CONFLICT (name) DO NOTHING RETURNING id",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not create customer %s: %s", name,
             cli_db_message(conn, res));
        PQclear(res);
        return -1;
    }
    if (PQntuples(res) == 1) {
        *id = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        *created = true;
        PQclear(res);
        return 0;
    }
    PQclear(res);
    *created = false;
    found = cli_customer_find(conn, name, id, err, err_size);
    if (found < 0)
        return -1;
    if (found == 0)
        return fail(err, err_size, "customer %s vanished while being created", name);
    return 0;
}

PGresult *cli_customer_list(PGconn *conn, char *err, size_t err_size)
{
    PGresult *res = PQexec(
        conn,
        "SELECT c.id, c.name,"
        " to_char(c.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
        " (SELECT count(*) FROM api_keys k"
        "   WHERE k.customer_id = c.id AND k.revoked_at IS NULL),"
        " (SELECT count(*) FROM accounts a WHERE a.customer_id = c.id)"
        " FROM customers c ORDER BY c.name");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not list customers: %s", cli_db_message(conn, res));
        PQclear(res);
        return NULL;
    }
    return res;
}
