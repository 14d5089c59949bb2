/*
 * cli_customer.h — customers: the owners of accounts and API keys.
 *
 * A customer is a name ([a-z0-9_-]{1,63}, the same rule as the
 * customers table's CHECK) and an id. meridianctl creates them
 * explicitly (`customer create`) or on the fly when a key is issued for
 * a new name (`apikey create --customer`).
 */
#ifndef MERIDIAN_CLI_CUSTOMER_H
#define MERIDIAN_CLI_CUSTOMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>

/* Returns 0 when name is a valid customer name, else -1. */
int cli_customer_name_check(const char *name);

/* Create the customer name, or find it when it exists. Returns 0 with
 * *id and *created, or -1 with the reason in err. Runs inside the
 * caller's transaction if there is one. */
int cli_customer_ensure(PGconn *conn, const char *name, int64_t *id, bool *created,
                        char *err, size_t err_size);

/* Look name up. Returns 1 and *id when found, 0 when there is no such
 * customer, -1 with the reason in err. */
int cli_customer_find(PGconn *conn, const char *name, int64_t *id, char *err,
                      size_t err_size);

/* Every customer, by name. Returns a result (PQclear it) with columns
 * id, name, created (ISO 8601 UTC), api_keys (active keys), accounts;
 * or NULL with the reason in err. */
PGresult *cli_customer_list(PGconn *conn, char *err, size_t err_size);

#endif
