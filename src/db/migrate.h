/*
 * migrate.h — versioned schema migrations (sql/migrations/NNNN_name.sql).
 *
 * The SQL files are embedded into the binaries at build time
 * (cmake/embed_migrations.cmake), so meridianctl and meridiand carry the
 * schema they were built for. `meridianctl db migrate` applies the
 * missing ones, each in its own transaction, under an advisory lock so
 * two operators cannot race; meridiand refuses to start on a database
 * whose version differs from migrations_latest().
 */
#ifndef MERIDIAN_MIGRATE_H
#define MERIDIAN_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

typedef struct migration {
    int version;
    const char *name;
    const char *sql;
} migration;

extern const migration migrations[];
extern const size_t migrations_count;

/* The highest version embedded in this binary. */
int migrations_latest(void);

/* Current schema version of the database (0 when never migrated).
 * Returns 0 and writes *version, or -1 with a reason in err. */
int migrate_current_version(PGconn *conn, int *version, char *err, size_t err_size);

/* Apply every missing migration. progress (may be NULL) is called
 * before each one. Returns the number applied, or -1 with a reason in
 * err (the failing migration is rolled back; earlier ones stay). A
 * database newer than this binary is an error. */
int migrate_apply(PGconn *conn, void (*progress)(const migration *m, void *arg),
                  void *arg, char *err, size_t err_size);

#endif
