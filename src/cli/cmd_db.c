/*
 * cmd_db.c — `meridianctl db migrate` and `meridianctl db status`.
 *
 * migrate prints one line per migration as it runs ("applying
 * 0001_init.sql ... done (12 ms)") so an operator watching a slow
 * migration sees which one is running; the work itself is
 * db/migrate.c.
 */
#include <stdio.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli_db.h"
#include "cli/cli_out.h"
#include "cli/commands.h"
#include "db/migrate.h"

#define CMD_DB_ERR_BYTES 1024

typedef struct migrate_progress {
    bool json;
    bool line_open;        /* "applying X ... " printed, outcome not yet */
    struct timespec start; /* of the running migration */
    json_t *applied;       /* --json: [{version, name, ms}] */
    const migration *running;
} migrate_progress;

static double elapsed_ms(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - since->tv_sec) * 1e3 +
           (double)(now.tv_nsec - since->tv_nsec) / 1e6;
}

/* Close the previous migration's line: it succeeded, since migrate_apply
 * only moves on after a commit. */
static void progress_finish(migrate_progress *p)
{
    if (p->running == NULL)
        return;
    double ms = elapsed_ms(&p->start);
    if (p->json) {
        json_t *o = json_pack("{s:i, s:s, s:f}", "version", p->running->version,
                              "name", p->running->name, "ms", ms);
        if (o)
            json_array_append_new(p->applied, o);
    } else {
        printf("done (%.0f ms)\n", ms);
        fflush(stdout);
    }
    p->line_open = false;
    p->running = NULL;
}

static void on_progress(const migration *m, void *arg)
{
    migrate_progress *p = arg;
    progress_finish(p);
    if (!p->json) {
        printf("applying %s ... ", m->name);
        fflush(stdout);
        p->line_open = true;
    }
    p->running = m;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
}

int cmd_db_migrate(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;

    char err[CMD_DB_ERR_BYTES];
    migrate_progress p = {.json = ctx->json, .applied = json_array()};
    int before = 0;
    if (p.applied == NULL) {
        rc = cli_fail(NULL, "out of memory");
        goto out;
    }
    if (migrate_current_version(conn, &before, err, sizeof err) != 0) {
        rc = cli_fail(NULL, "%s", err);
        goto out;
    }
    int applied = migrate_apply(conn, on_progress, &p, err, sizeof err);
    if (applied < 0) {
        if (p.line_open)
            printf("failed\n");
        fflush(stdout);
        rc = cli_fail(NULL, "%s", err);
        goto out;
    }
    progress_finish(&p);
    int version = 0;
    if (migrate_current_version(conn, &version, err, sizeof err) != 0) {
        rc = cli_fail(NULL, "%s", err);
        goto out;
    }
    if (ctx->json) {
        json_t *doc = json_pack("{s:i, s:i, s:O}", "version", version, "previous_version",
                                before, "applied", p.applied);
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    } else {
        if (applied == 0)
            printf("database already at version %d\n", version);
        else
            printf("database at version %d\n", version);
        rc = CLI_EXIT_OK;
    }
out:
    json_decref(p.applied);
    PQfinish(conn);
    return rc;
}

int cmd_db_status(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;

    char err[CMD_DB_ERR_BYTES];
    cli_db_status st;
    if (cli_db_status_read(conn, &st, err, sizeof err) != 0) {
        rc = cli_fail(NULL, "%s", err);
        goto out;
    }
    if (ctx->json) {
        json_t *pending = json_array();
        for (size_t i = 0; pending && i < migrations_count; i++)
            if (migrations[i].version > st.version)
                json_array_append_new(pending, json_string(migrations[i].name));
        json_t *doc = json_pack("{s:i, s:i, s:o, s:b}", "version", st.version, "latest",
                                st.latest, "pending", pending, "up_to_date",
                                st.version == st.latest);
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
        goto out;
    }
    printf("database version  %d\n", st.version);
    printf("binary latest     %d\n", st.latest);
    if (st.pending_count == 0) {
        printf("pending           none\n");
    } else {
        printf("pending           %zu:", st.pending_count);
        for (size_t i = 0; i < migrations_count; i++)
            if (migrations[i].version > st.version)
                printf(" %s", migrations[i].name);
        printf("\n");
        printf("run `meridianctl db migrate` to apply them\n");
    }
    if (st.version > st.latest)
        printf("the database is newer than this meridianctl: upgrade meridianctl\n");
    rc = CLI_EXIT_OK;
out:
    PQfinish(conn);
    return rc;
}
