/*
 * cli_cmd.h — meridianctl's command tables, argument parsing and the
 * three ways a command ends (success, usage error, operational error).
 *
 * Every command is a row {name, handler, summary, usage, help} in a
 * table; a group (`db`, `apikey`, ...) is a row whose children are
 * another table. Adding a command is adding a row (see meridianctl.c)
 * and a handler that parses its arguments with cli_parse and calls a
 * module (cli_db, cli_apikey, ...). Handlers never print usage or
 * connection errors themselves: cli_usage_error and cli_fail do, so
 * every command reports the same way and exits with the same codes.
 */
#ifndef MERIDIAN_CLI_CMD_H
#define MERIDIAN_CLI_CMD_H

#include <stdbool.h>

#include <libpq-fe.h>

#include "common/config.h"

#define CLI_PROG "meridianctl"

/* Exit codes. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1  /* operational: database down, row missing, ... */
#define CLI_EXIT_USAGE 2 /* bad arguments */

/* Positional arguments one command accepts, at most. */
#define CLI_POSITIONAL_MAX 8

/* Global options and lazily loaded state, one per run. */
typedef struct cli_ctx {
    const char *config_path; /* --config FILE, or NULL */
    const char *dsn_flag;    /* --dsn DSN, or NULL */
    bool json;               /* --json */
    config *cfg;             /* loaded by cli_ctx_config */
} cli_ctx;

typedef struct cli_command cli_command;

/* A handler gets the arguments after its name (argv[0] is the first
 * argument, not the command). It returns an exit code. */
typedef int (*cli_handler)(cli_ctx *ctx, const cli_command *cmd, int argc,
                           char **argv);

struct cli_command {
    const char *name;
    cli_handler handler;            /* NULL for a group */
    const cli_command *children;    /* a group's table, else NULL */
    const char *summary;            /* one line for the command list */
    const char *usage;              /* full path and arguments: "db migrate" */
    const char *help;               /* extra lines for --help, or NULL */
};

/* One option of a command. Exactly one of value/flag is set. */
typedef struct cli_opt {
    const char *name;    /* without the dashes: "customer" */
    const char **value;  /* --name VALUE or --name=VALUE; last one wins */
    bool *flag;          /* --name */
} cli_opt;

/* Run argv[0..argc) against table (a NULL-name terminated array). Prints
 * the help of table's group when argv is empty or asks for help. group
 * is the command path so far ("" at the root, "db" below). Returns the
 * exit code. */
int cli_dispatch(cli_ctx *ctx, const cli_command *table, const char *group,
                 int argc, char **argv);

/* Parse a handler's arguments: the command's opts (array terminated by
 * a NULL name; may be NULL), the global options (--config, --dsn,
 * --json, anywhere on the line), --help, and between pos_min and
 * pos_max positional arguments stored in pos (count in *npos).
 * Returns 0 to go on, 1 when help was printed (exit 0), or -1 after
 * printing a usage error (exit 2). cli_parse_exit maps these. */
int cli_parse(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv,
              const cli_opt *opts, int pos_min, int pos_max,
              const char *pos[CLI_POSITIONAL_MAX], int *npos);
int cli_parse_exit(int parse_result);

/* Print "meridianctl: MESSAGE", the command's usage line and where to
 * find help on stderr. Returns CLI_EXIT_USAGE. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print "meridianctl: error: MESSAGE" and, when hint is not NULL,
 * "hint: HINT" on stderr. Returns CLI_EXIT_FAIL. */
int cli_fail(const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Print a command's full help on stdout. */
void cli_print_help(const cli_command *cmd);

/* The configuration: the --config file (loaded once, on first use) with
 * --dsn applied over it, or an empty one without --config. Returns NULL
 * after printing the error (exit 1). Owned by ctx. */
config *cli_ctx_config(cli_ctx *ctx);

/* The DSN to use (--dsn, else dsn in the config), or NULL after
 * printing why there is none; *exit_code tells how to exit then. */
const char *cli_ctx_dsn(cli_ctx *ctx, const cli_command *cmd, int *exit_code);

/* Connect with the resolved DSN. Returns 0 and *out (PQfinish it), or an
 * exit code after printing libpq's message and a hint. */
int cli_ctx_connect(cli_ctx *ctx, const cli_command *cmd, PGconn **out);

/* Like cli_ctx_connect, then check the schema is at this binary's
 * version (hint: run `meridianctl db migrate`). */
int cli_ctx_connect_migrated(cli_ctx *ctx, const cli_command *cmd, PGconn **out);

/* Release what ctx loaded. */
void cli_ctx_release(cli_ctx *ctx);

#endif
