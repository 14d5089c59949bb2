/*
 * cli_db.h — meridianctl's database helpers: connecting, the schema
 * version check every data command does first, and `db status`.
 */
#ifndef MERIDIAN_CLI_DB_H
#define MERIDIAN_CLI_DB_H

#include <stddef.h>

#include <libpq-fe.h>

/* Seconds libpq waits for a connection unless the DSN says otherwise. */
#define CLI_DB_CONNECT_TIMEOUT_S "10"

/* Connect to dsn (a libpq connection string or URI; its own settings win
 * over our connect_timeout and application_name defaults). Returns the
 * connection (PQfinish it), or NULL with libpq's message in err. */
PGconn *cli_db_connect(const char *dsn, char *err, size_t err_size);

typedef struct cli_db_status {
    int version; /* the database's schema version, 0 when never migrated */
    int latest;  /* the newest version this binary embeds */
    size_t pending_count;
} cli_db_status;

/* Read the schema version. Returns 0, or -1 with the reason in err. */
int cli_db_status_read(PGconn *conn, cli_db_status *st, char *err, size_t err_size);

/* Check that the database is at exactly this binary's version. Returns 0,
 * or -1 with the reason in err and an operator hint in *hint. */
int cli_db_require_schema(PGconn *conn, char *err, size_t err_size, const char **hint);

/* libpq's last message on one line (no trailing newline). Owned by a
 * per-thread buffer, valid until the next call. */
const char *cli_db_message(const PGconn *conn, const PGresult *res);

#endif
