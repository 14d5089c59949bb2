/*
 * cli_db.c — connecting meridianctl to PostgreSQL and checking the
 * schema version (see cli_db.h).
 *
 * The DSN is passed to libpq as the expanded "dbname" parameter after
 * our defaults, so anything the operator wrote in it (including
 * connect_timeout) wins. The DSN itself is never printed: it may hold a
 * password.
 */
#include "cli/cli_db.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "common/mrd_assert.h"
#include "db/migrate.h"

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

const char *cli_db_message(const PGconn *conn, const PGresult *res)
{
    static _Thread_local char buf[1024];
    const char *m = res ? PQresultErrorMessage(res) : NULL;
    if (m == NULL || m[0] == '\0')
        m = conn ? PQerrorMessage(conn) : NULL;
    snprintf(buf, sizeof buf, "%s", m && m[0] ? m : "unknown error");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    /* libpq may report several lines (one per host tried, a tab before
     * its own hint): one line, single spaces. */
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        char c = buf[i] == '\n' || buf[i] == '\t' ? ' ' : buf[i];
        if (c == ' ' && w > 0 && buf[w - 1] == ' ')
            continue;
        buf[w++] = c;
    }
    buf[w] = '\0';
    return buf;
}

PGconn *cli_db_connect(const char *dsn, char *err, size_t err_size)
{
    mrd_assert(dsn != NULL);
    const char *const keys[] = {"connect_timeout", "fallback_application_name",
                                "dbname", NULL};
    const char *const values[] = {CLI_DB_CONNECT_TIMEOUT_S, "meridianctl", dsn, NULL};
    PGconn *conn = PQconnectdbParams(keys, values, 1);
    if (conn == NULL) {
        fail(err, err_size, "out of memory");
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        fail(err, err_size, "%s", cli_db_message(conn, NULL));
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

int cli_db_status_read(PGconn *conn, cli_db_status *st, char *err, size_t err_size)
{
    mrd_assert(conn != NULL && st != NULL);
    if (migrate_current_version(conn, &st->version, err, err_size) != 0)
        return -1;
    st->latest = migrations_latest();
    st->pending_count = 0;
    for (size_t i = 0; i < migrations_count; i++)
        if (migrations[i].version > st->version)
            st->pending_count++;
    return 0;
}

int cli_db_require_schema(PGconn *conn, char *err, size_t err_size, const char **hint)
{
    cli_db_status st;
    *hint = NULL;
    if (cli_db_status_read(conn, &st, err, err_size) != 0)
        return -1;
    if (st.version < st.latest) {
        *hint = "run `meridianctl db migrate` first";
        return fail(err, err_size,
                    "the database schema is at version %d, this meridianctl needs %d",
                    st.version, st.latest);
    }
    if (st.version > st.latest) {
        *hint = "upgrade meridianctl to the release that migrated this database";
        return fail(err, err_size,
                    "the database schema is at version %d, newer than this "
                    "meridianctl (%d)",
                    st.version, st.latest);
    }
    return 0;
}
