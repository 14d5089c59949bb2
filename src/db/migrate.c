/*
 * migrate.c — apply the embedded schema migrations (see migrate.h).
 *
 * The database records every applied migration in
 * meridian_schema_migrations (version, name, checksum, applied_at). The
 * checksum is the BLAKE2b-256 (libsodium crypto_generichash) of the SQL
 * text, in hex: a migration that was edited after it was applied
 * somewhere is detected and refused, because the databases that ran the
 * old text and the ones that would run the new text would silently
 * differ. The rule is the usual one: never edit an applied migration,
 * add a new one.
 *
 * Concurrency: the whole run holds a session advisory lock with a fixed
 * key, so two operators (or two deploy jobs) migrating at once
 * serialise; the second one finds the work done. Each migration runs in
 * its own transaction together with the row that records it, so a
 * failure leaves the database at the previous version, never half-way.
 * The SQL is sent with PQexec, which accepts several statements; a
 * migration must therefore not contain BEGIN/COMMIT itself.
 */
#include "db/migrate.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "common/mrd_assert.h"

/* pg_advisory_lock key of `db migrate`: "MRDNMIGR" as a big-endian int64. */
#define MIGRATE_LOCK_KEY "5571590792105510738"

#define MIGRATE_CHECKSUM_HEX_SIZE (2 * crypto_generichash_BYTES + 1)

/* Recorded rows read at once; far above any real number of migrations. */
#define MIGRATE_RECORDED_MAX 10000

static const char create_table_sql[] =
    "BEGIN;"
    "SET LOCAL client_min_messages = warning;"
    "CREATE TABLE IF NOT EXISTS meridian_schema_migrations ("
    "  version     integer PRIMARY KEY,"
    "  name        text NOT NULL,"
    "  checksum    text NOT NULL,"
    "  applied_at  timestamptz NOT NULL DEFAULT now());"
    "COMMIT;";

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

/* libpq's messages end with a newline; ours are one line. */
static const char *pq_message(const PGconn *conn, const PGresult *res)
{
    static _Thread_local char buf[512];
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (m == NULL || m[0] == '\0')
        m = PQerrorMessage(conn);
    snprintf(buf, sizeof buf, "%s", m ? m : "unknown error");
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    return buf;
}

static void checksum_hex(const char *sql, char out[MIGRATE_CHECKSUM_HEX_SIZE])
{
    unsigned char digest[crypto_generichash_BYTES];
    crypto_generichash(digest, sizeof digest, (const unsigned char *)sql,
                       strlen(sql), NULL, 0);
    sodium_bin2hex(out, MIGRATE_CHECKSUM_HEX_SIZE, digest, sizeof digest);
}

static const migration *find_embedded(int version)
{
    for (size_t i = 0; i < migrations_count; i++)
        if (migrations[i].version == version)
            return &migrations[i];
    return NULL;
}

int migrations_latest(void)
{
    int latest = 0;
    for (size_t i = 0; i < migrations_count; i++)
        if (migrations[i].version > latest)
            latest = migrations[i].version;
    return latest;
}

/* 1 when the bookkeeping table exists, 0 when not, -1 on error. */
static int table_exists(PGconn *conn, char *err, size_t err_size)
{
    PGresult *res =
        PQexec(conn, "SELECT to_regclass('meridian_schema_migrations') IS NOT NULL");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fail(err, err_size, "could not read the schema version: %s",
             pq_message(conn, res));
        PQclear(res);
        return -1;
    }
    int exists = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return exists;
}

int migrate_current_version(PGconn *conn, int *version, char *err, size_t err_size)
{
    mrd_assert(conn != NULL && version != NULL);
    int exists = table_exists(conn, err, err_size);
    if (exists < 0)
        return -1;
    if (!exists) {
        *version = 0;
        return 0;
    }
    PGresult *res =
        PQexec(conn, "SELECT coalesce(max(version), 0) FROM meridian_schema_migrations");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fail(err, err_size, "could not read the schema version: %s",
             pq_message(conn, res));
        PQclear(res);
        return -1;
    }
    *version = atoi(PQgetvalue(res, 0, 0));
    PQclear(res);
    return 0;
}

/* Check what the database recorded against what this binary embeds.
 * Fills applied[i] for every embedded migration already recorded.
 * Returns 0 or -1 with the reason. */
static int check_recorded(PGconn *conn, bool *applied, char *err, size_t err_size)
{
    int rc = -1;
    PGresult *res = PQexec(conn, "SELECT version, name, checksum"
                                 " FROM meridian_schema_migrations ORDER BY version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not read meridian_schema_migrations: %s",
             pq_message(conn, res));
        goto out;
    }
    int rows = PQntuples(res);
    if (rows > MIGRATE_RECORDED_MAX) {
        fail(err, err_size, "meridian_schema_migrations holds %d rows (limit %d)",
             rows, MIGRATE_RECORDED_MAX);
        goto out;
    }
    int latest = migrations_latest();
    if (rows > 0) {
        int newest = atoi(PQgetvalue(res, rows - 1, 0));
        if (newest > latest) {
            fail(err, err_size,
                 "the database schema is at version %d, newer than this binary "
                 "(it knows versions up to %d): upgrade meridianctl to the release "
                 "that migrated this database",
                 newest, latest);
            goto out;
        }
    }
    for (int r = 0; r < rows; r++) {
        int version = atoi(PQgetvalue(res, r, 0));
        const char *name = PQgetvalue(res, r, 1);
        const char *recorded = PQgetvalue(res, r, 2);
        const migration *m = find_embedded(version);
        if (m == NULL) {
            fail(err, err_size,
                 "migration %s (version %d) is recorded in the database but not "
                 "part of this binary: build from the source tree that applied it",
                 name, version);
            goto out;
        }
        char sum[MIGRATE_CHECKSUM_HEX_SIZE];
        checksum_hex(m->sql, sum);
        if (strcmp(sum, recorded) != 0) {
            fail(err, err_size,
                 "migration %s was changed after it was applied (checksum %.64s "
                 "recorded, %s embedded): never edit an applied migration; add a "
                 "new one",
                 m->name, recorded, sum);
            goto out;
        }
        applied[m - migrations] = true;
    }
    /* A missing migration below the newest applied one means the binary
     * and the database took different histories: applying it now would
     * run it in a different order than everywhere else. */
    for (size_t i = 0; i < migrations_count; i++) {
        if (applied[i])
            continue;
        for (size_t j = 0; j < migrations_count; j++) {
            if (applied[j] && migrations[j].version > migrations[i].version) {
                fail(err, err_size,
                     "migration %s is not applied but the later %s is: the "
                     "database and this binary have different migration histories",
                     migrations[i].name, migrations[j].name);
                goto out;
            }
        }
    }
    rc = 0;
out:
    PQclear(res);
    return rc;
}

static int exec_ok(PGconn *conn, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    PQclear(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? 0 : -1;
}

/* Apply one migration and record it in the same transaction. */
static int apply_one(PGconn *conn, const migration *m, char *err, size_t err_size)
{
    char sum[MIGRATE_CHECKSUM_HEX_SIZE];
    checksum_hex(m->sql, sum);

    if (exec_ok(conn, "BEGIN") != 0)
        return fail(err, err_size, "could not start a transaction for %s: %s",
                    m->name, pq_message(conn, NULL));
    PGresult *res = PQexec(conn, m->sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        fail(err, err_size, "migration %s failed: %s", m->name, pq_message(conn, res));
        PQclear(res);
        goto fail;
    }
    PQclear(res);

    char version_text[16];
    snprintf(version_text, sizeof version_text, "%d", m->version);
    const char *params[3] = {version_text, m->name, sum};
    res = PQexecParams(conn,
                       "INSERT INTO meridian_schema_migrations (version, name, checksum)"
                       " VALUES ($1::integer, $2, $3)",
                       3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail(err, err_size, "could not record migration %s: %s", m->name,
             pq_message(conn, res));
        PQclear(res);
        goto fail;
    }
    PQclear(res);

    res = PQexec(conn, "COMMIT");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail(err, err_size, "could not commit migration %s: %s", m->name,
             pq_message(conn, res));
        PQclear(res);
        goto fail;
    }
    PQclear(res);
    return 0;
fail:
    (void)exec_ok(conn, "ROLLBACK");
    return -1;
}

int migrate_apply(PGconn *conn, void (*progress)(const migration *m, void *arg),
                  void *arg, char *err, size_t err_size)
{
    mrd_assert(conn != NULL && err != NULL);
    int applied_count = -1;
    bool *applied = NULL;
    bool locked = false;

    if (sodium_init() < 0)
        return fail(err, err_size, "libsodium could not be initialised");
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return fail(err, err_size, "migrate_apply needs a connection outside a transaction");

    PGresult *res = PQexec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(err, err_size, "could not take the migration lock: %s", pq_message(conn, res));
        PQclear(res);
        goto out;
    }
    PQclear(res);
    locked = true;

    res = PQexec(conn, create_table_sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fail(err, err_size, "could not create meridian_schema_migrations: %s",
             pq_message(conn, res));
        PQclear(res);
        (void)exec_ok(conn, "ROLLBACK");
        goto out;
    }
    PQclear(res);

    applied = calloc(migrations_count ? migrations_count : 1, sizeof *applied);
    if (applied == NULL) {
        fail(err, err_size, "out of memory");
        goto out;
    }
    if (check_recorded(conn, applied, err, err_size) != 0)
        goto out;

    /* migrations[] is sorted by file name, hence by version. */
    int count = 0;
    for (size_t i = 0; i < migrations_count; i++) {
        if (applied[i])
            continue;
        if (progress)
            progress(&migrations[i], arg);
        if (apply_one(conn, &migrations[i], err, err_size) != 0)
            goto out;
        count++;
    }
    applied_count = count;
out:
    if (locked) {
        /* Best effort: a broken connection releases the lock anyway. */
        (void)exec_ok(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
    }
    free(applied);
    return applied_count;
}
