/*
 * commands.h — the handlers behind meridianctl's command table
 * (meridianctl.c). Each parses its own arguments with cli_parse, calls
 * a module (cli_db, cli_customer, cli_apikey, cli_config) and prints
 * the outcome, as text or, with --json, as one JSON document on stdout.
 * All return an exit code (cli_cmd.h).
 */
#ifndef MERIDIAN_COMMANDS_H
#define MERIDIAN_COMMANDS_H

#include "cli/cli_cmd.h"

/* cmd_db.c */
int cmd_db_migrate(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_db_status(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_customer.c */
int cmd_customer_create(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_customer_list(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_apikey.c */
int cmd_apikey_create(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_apikey_list(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_apikey_revoke(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_config.c */
int cmd_config_init(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_drill.c */
int cmd_drill(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_topology.c */
int cmd_topology_check(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_topology_show(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_lab.c */
int cmd_lab(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

/* cmd_region.c */
int cmd_failover(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_residency_scan(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

#endif
