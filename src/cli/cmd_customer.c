/*
 * cmd_customer.c — `meridianctl customer create NAME` and
 * `meridianctl customer list`.
 */
#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

#include "cli/cli_customer.h"
#include "cli/cli_out.h"
#include "cli/commands.h"

#define CMD_CUSTOMER_ERR_BYTES 1024

static const cli_col customer_cols[] = {
    {"ID", "id", CLI_COL_INT},
    {"NAME", "name", CLI_COL_TEXT},
    {"CREATED", "created", CLI_COL_TEXT},
    {"KEYS", "api_keys", CLI_COL_INT},
    {"ACCOUNTS", "accounts", CLI_COL_INT},
};

int cmd_customer_create(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 1, 1, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    const char *name = pos[0];
    if (cli_customer_name_check(name) != 0)
        return cli_usage_error(cmd,
                               "invalid customer name \"%s\": use 1 to 63 characters "
                               "among a-z 0-9 _ -",
                               name);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect_migrated(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CMD_CUSTOMER_ERR_BYTES];
    int64_t id = 0;
    bool created = false;
    if (cli_customer_ensure(conn, name, &id, &created, err, sizeof err) != 0) {
        rc = cli_fail(NULL, "%s", err);
    } else if (!created) {
        rc = cli_fail("see `meridianctl customer list`",
                      "customer %s already exists (id %" PRId64 ")", name, id);
    } else if (ctx->json) {
        json_t *doc = json_pack("{s:I, s:s}", "id", (json_int_t)id, "name", name);
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    } else {
        printf("created customer %s (id %" PRId64 ")\n", name, id);
        rc = CLI_EXIT_OK;
    }
    PQfinish(conn);
    return rc;
}

int cmd_customer_list(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect_migrated(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CMD_CUSTOMER_ERR_BYTES];
    PGresult *res = cli_customer_list(conn, err, sizeof err);
    int ncols = (int)(sizeof customer_cols / sizeof customer_cols[0]);
    if (res == NULL) {
        rc = cli_fail(NULL, "%s", err);
    } else if (ctx->json) {
        rc = cli_out_json(cli_out_rows_json(res, customer_cols, ncols)) == 0
                 ? CLI_EXIT_OK
                 : cli_fail(NULL, "cannot write JSON");
    } else {
        cli_out_table(stdout, res, customer_cols, ncols,
                      "no customers (create one with `meridianctl customer create NAME`)");
        rc = CLI_EXIT_OK;
    }
    PQclear(res);
    PQfinish(conn);
    return rc;
}
