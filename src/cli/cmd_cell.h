/*
 * cmd_cell.h — the handlers of meridianctl's cell commands (cmd_cell.c):
 * status, history, switchover and keeper fsm. Kept apart from
 * commands.h so the high-availability commands live in files of their
 * own; the rows are in meridianctl.c like every other command's. Each
 * returns an exit code (cli_cmd.h; status also CLI_CELL_EXIT_NO_LEADER).
 */
#ifndef MERIDIAN_CMD_CELL_H
#define MERIDIAN_CMD_CELL_H

#include "cli/cli_cmd.h"

int cmd_status(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_history(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_switchover(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);
int cmd_keeper_fsm(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv);

#endif
