/*
 * meridianctl.c — the operator's CLI: main() and the command table.
 *
 * The table below is the whole surface of meridianctl. A command is a
 * row {name, handler, summary, usage, help}; a group (db, customer,
 * apikey, config) is a row whose children are another table. To add a
 * command (status, switchover, drill, lab, ...), write its handler in a
 * cmd_<name>.c (parse arguments with cli_parse, call a module, print),
 * declare it in commands.h, and add a row here: help, usage errors and
 * exit codes come with it.
 *
 * Exit codes: 0 success, 1 operational error (database unreachable,
 * missing row, ...), 2 bad arguments.
 */
#include <stdio.h>

#include "cli/cli_cmd.h"
#include "cli/commands.h"

static const cli_command db_commands[] = {
    {.name = "migrate",
     .handler = cmd_db_migrate,
     .summary = "Apply the schema migrations this binary carries",
     .usage = "db migrate",
     .help = "Applies every migration the database lacks, each in its own transaction,\n"
             "under an advisory lock (concurrent runs wait for each other). Running it\n"
             "again is a no-op. Refuses a database whose applied migrations differ from\n"
             "this binary's, or that is newer than this binary.\n"},
    {.name = "status",
     .handler = cmd_db_status,
     .summary = "Show the schema version and the pending migrations",
     .usage = "db status",
     .help = NULL},
    {0},
};

static const cli_command customer_commands[] = {
    {.name = "create",
     .handler = cmd_customer_create,
     .summary = "Create a customer",
     .usage = "customer create NAME",
     .help = "NAME is 1 to 63 characters among a-z 0-9 _ -. Fails if it exists.\n"},
    {.name = "list",
     .handler = cmd_customer_list,
     .summary = "List customers with their active keys and accounts",
     .usage = "customer list",
     .help = NULL},
    {0},
};

static const cli_command apikey_commands[] = {
    {.name = "create",
     .handler = cmd_apikey_create,
     .summary = "Issue an API key (shown once)",
     .usage = "apikey create (--customer NAME | --admin) [--label TEXT]",
     .help = "Options:\n"
             "  --customer NAME  a key of customer NAME (created if missing)\n"
             "  --admin          an admin key (sees every customer)\n"
             "  --label TEXT     a note for operators (at most 200 bytes)\n"
             "Needs api_key_pepper from --config FILE. The key is printed once; only\n"
             "its keyed hash is stored. --json prints\n"
             "{\"key\",\"prefix\",\"scope\",\"customer\",\"id\",\"customer_created\"}.\n"},
    {.name = "list",
     .handler = cmd_apikey_list,
     .summary = "List API keys (prefix, scope, customer, label, dates)",
     .usage = "apikey list [--customer NAME]",
     .help = "Options:\n"
             "  --customer NAME  only the keys of customer NAME\n"},
    {.name = "revoke",
     .handler = cmd_apikey_revoke,
     .summary = "Revoke an API key",
     .usage = "apikey revoke ID",
     .help = "ID is the ID column of `meridianctl apikey list`. Revoking twice is fine.\n"},
    {0},
};

static const cli_command config_commands[] = {
    {.name = "init",
     .handler = cmd_config_init,
     .summary = "Write a new config file with a fresh api_key_pepper",
     .usage = "config init --out FILE [--dsn DSN] [--listen HOST:PORT] [--force]",
     .help = "Options:\n"
             "  --out FILE          where to write (mode 0600)\n"
             "  --dsn DSN           the dsn to write into the file\n"
             "  --listen HOST:PORT  meridiand's HTTP address (default 127.0.0.1:8080)\n"
             "  --force             replace an existing FILE (its pepper is lost)\n"},
    {0},
};

static const cli_command root_commands[] = {
    {.name = "db", .children = db_commands, .summary = "Schema migrations", .usage = "db"},
    {.name = "customer",
     .children = customer_commands,
     .summary = "Customers",
     .usage = "customer"},
    {.name = "apikey", .children = apikey_commands, .summary = "API keys", .usage = "apikey"},
    {.name = "config",
     .children = config_commands,
     .summary = "Configuration files",
     .usage = "config"},
    {0},
};

int main(int argc, char **argv)
{
    cli_ctx ctx = {0};
    int rc = cli_dispatch(&ctx, root_commands, "", argc - 1, argv + 1);
    cli_ctx_release(&ctx);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
        rc = CLI_EXIT_FAIL;
    return rc;
}
