/*
 * cmd_apikey.c — `meridianctl apikey create|list|revoke`.
 *
 * The key is printed exactly once, here, and wiped from memory right
 * after; the database only ever sees its hash (cli_apikey.c). A key
 * names its cell ("mk_<cell>_...") when --cell or the config's `cell`
 * key gives one, so the global entry can route it by the key alone.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "cli/cli_apikey.h"
#include "cli/cli_config.h"
#include "cli/cli_customer.h"
#include "cli/cli_out.h"
#include "cli/commands.h"

#define CMD_APIKEY_ERR_BYTES 1024

static const cli_col apikey_cols[] = {
    {"ID", "id", CLI_COL_INT},
    {"PREFIX", "prefix", CLI_COL_TEXT},
    {"SCOPE", "scope", CLI_COL_TEXT},
    {"CUSTOMER", "customer", CLI_COL_TEXT},
    {"LABEL", "label", CLI_COL_TEXT},
    {"CREATED", "created", CLI_COL_TEXT},
    {"REVOKED", "revoked", CLI_COL_TEXT},
};

static int print_created(const cli_ctx *ctx, const cli_apikey_new *k,
                         const char *customer)
{
    if (ctx->json) {
        json_t *doc = json_pack("{s:s, s:s, s:s, s:o, s:o, s:I, s:b}", "key", k->key,
                                "prefix", k->prefix, "scope",
                                customer ? "customer" : "admin", "customer",
                                customer ? json_string(customer) : json_null(), "cell",
                                k->cell[0] ? json_string(k->cell) : json_null(), "id",
                                (json_int_t)k->id, "customer_created",
                                k->customer_created);
        return cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    }
    if (k->customer_created)
        printf("created customer %s (id %" PRId64 ")\n", customer, k->customer_id);
    char of_cell[APIKEY_CELL_SIZE + 16] = "";
    if (k->cell[0] != '\0')
        snprintf(of_cell, sizeof of_cell, " of cell %s", k->cell);
    if (customer)
        printf("API key %" PRId64 " for customer %s%s (prefix %s):\n\n", k->id, customer,
               of_cell, k->prefix);
    else
        printf("admin API key %" PRId64 "%s (prefix %s):\n\n", k->id, of_cell, k->prefix);
    printf("    %s\n\nstore it now: it cannot be shown again\n", k->key);
    return CLI_EXIT_OK;
}

int cmd_apikey_create(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *customer = NULL;
    const char *label = "";
    const char *cell = NULL;
    bool admin = false;
    const cli_opt opts[] = {
        {.name = "customer", .value = &customer},
        {.name = "admin", .flag = &admin},
        {.name = "label", .value = &label},
        {.name = "cell", .value = &cell},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (customer && admin)
        return cli_usage_error(cmd, "--customer and --admin exclude each other: a key "
                                    "is either a customer's or an admin's");
    if (!customer && !admin)
        return cli_usage_error(cmd, "say whose key it is: --customer NAME or --admin");
    if (customer && cli_customer_name_check(customer) != 0)
        return cli_usage_error(cmd,
                               "invalid customer name \"%s\": use 1 to 63 characters "
                               "among a-z 0-9 _ -",
                               customer);
    if (strlen(label) > CLI_APIKEY_LABEL_MAX)
        return cli_usage_error(cmd, "--label is longer than %d bytes",
                               CLI_APIKEY_LABEL_MAX);
    if (cell != NULL && cell[0] != '\0' && apikey_cell_name_check(cell) != 0)
        return cli_usage_error(cmd,
                               "invalid --cell \"%s\": use 1 to %d characters among a-z 0-9 "
                               "_ -, starting with a letter or digit",
                               cell, APIKEY_CELL_MAX);

    /* The pepper first: no point connecting without it. */
    config *cfg = cli_ctx_config(ctx);
    if (cfg == NULL)
        return CLI_EXIT_FAIL;
    /* The key names the cell of --cell (--cell "": none), else the
     * config's `cell`. */
    if (cell == NULL) {
        cell = config_get(cfg, "cell");
        if (cell != NULL && cell[0] != '\0' && apikey_cell_name_check(cell) != 0)
            return cli_fail("fix `cell` in the config file or pass --cell NAME",
                            "the config's cell \"%.64s\" cannot be named in an API key",
                            cell);
    }
    char err[CMD_APIKEY_ERR_BYTES];
    uint8_t pepper[APIKEY_PEPPER_SIZE];
    if (cli_config_pepper(cfg, pepper, err, sizeof err) != 0)
        return cli_fail("set api_key_pepper in the --config file (meridiand must use "
                        "the same one); generate one with `meridianctl config init`",
                        "%s", err);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect_migrated(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        goto out;
    cli_apikey_new k;
    if (cli_apikey_create(conn, pepper, customer, cell, label, &k, err, sizeof err) != 0) {
        rc = cli_fail(NULL, "%s", err);
        goto out;
    }
    rc = print_created(ctx, &k, customer);
    fflush(stdout);
    sodium_memzero(&k, sizeof k);
out:
    sodium_memzero(pepper, sizeof pepper);
    PQfinish(conn);
    return rc;
}

int cmd_apikey_list(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *customer = NULL;
    const cli_opt opts[] = {
        {.name = "customer", .value = &customer},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (customer && cli_customer_name_check(customer) != 0)
        return cli_usage_error(cmd,
                               "invalid customer name \"%s\": use 1 to 63 characters "
                               "among a-z 0-9 _ -",
                               customer);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect_migrated(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CMD_APIKEY_ERR_BYTES];
    PGresult *res = NULL;
    int64_t customer_id = 0;
    if (customer) {
        int found = cli_customer_find(conn, customer, &customer_id, err, sizeof err);
        if (found < 0) {
            rc = cli_fail(NULL, "%s", err);
            goto out;
        }
        if (found == 0) {
            rc = cli_fail("see `meridianctl customer list`", "no customer named %s",
                          customer);
            goto out;
        }
    }
    res = cli_apikey_list(conn, customer_id, err, sizeof err);
    int ncols = (int)(sizeof apikey_cols / sizeof apikey_cols[0]);
    if (res == NULL) {
        rc = cli_fail(NULL, "%s", err);
    } else if (ctx->json) {
        rc = cli_out_json(cli_out_rows_json(res, apikey_cols, ncols)) == 0
                 ? CLI_EXIT_OK
                 : cli_fail(NULL, "cannot write JSON");
    } else {
        cli_out_table(stdout, res, apikey_cols, ncols, "no API keys");
        rc = CLI_EXIT_OK;
    }
out:
    PQclear(res);
    PQfinish(conn);
    return rc;
}

int cmd_apikey_revoke(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 1, 1, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    char *end = NULL;
    errno = 0;
    long long id = strtoll(pos[0], &end, 10);
    if (errno != 0 || end == pos[0] || *end != '\0' || id <= 0)
        return cli_usage_error(cmd,
                               "invalid key id \"%s\": give the ID column of "
                               "`meridianctl apikey list`",
                               pos[0]);

    PGconn *conn = NULL;
    int rc = cli_ctx_connect_migrated(ctx, cmd, &conn);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CMD_APIKEY_ERR_BYTES];
    char prefix[APIKEY_PREFIX_SIZE + 8] = "";
    int got = cli_apikey_revoke(conn, (int64_t)id, prefix, sizeof prefix, err, sizeof err);
    if (got < 0) {
        rc = cli_fail(NULL, "%s", err);
    } else if (got == 2) {
        rc = cli_fail("see `meridianctl apikey list`", "no API key with id %lld", id);
    } else if (ctx->json) {
        json_t *doc = json_pack("{s:I, s:s, s:b}", "id", (json_int_t)id, "prefix", prefix,
                                "already_revoked", got == 1);
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    } else {
        if (got == 1)
            printf("API key %lld (%s) was already revoked\n", id, prefix);
        else
            printf("revoked API key %lld (%s)\n", id, prefix);
        rc = CLI_EXIT_OK;
    }
    PQfinish(conn);
    return rc;
}
