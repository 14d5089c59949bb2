/*
 * cmd_lab.c — `meridianctl lab up|down|status|fault ...`: the multi-region
 * lab (docs/LAB.md). The lab is orchestration of processes (netem, etcd,
 * keepers, meridiand, HAProxy), which scripts/lab.sh does in bash driven
 * by the topology file; this command only finds that script and replaces
 * itself with it, passing the arguments through unchanged.
 *
 * The script is looked up like the drills look up scripts/cell.sh
 * ($MERIDIAN_SOURCE_DIR, else the source tree this binary was built
 * from). The binaries the lab runs are the ones next to this meridianctl:
 * MERIDIAN_BIN_DIR is set to this binary's directory. A global --json
 * given before `lab` is passed on as `--json`.
 *
 * Exit status: the script's (0 success, 1 failure, 2 bad arguments), or 1
 * when the script cannot be found or run, 2 for too many arguments.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "common/mrd_assert.h"
#include "drill/drill.h"

/* Arguments passed through to lab.sh, at most. */
#define CMD_LAB_ARGS_MAX 64
/* Longest path this command builds. */
#define CMD_LAB_PATH_BYTES 1024

/* The directory of the running binary. Returns 0, or -1. */
static int self_dir(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0 || (size_t)n >= size - 1)
        return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    return 0;
}

/* scripts/lab.sh next to the scripts/cell.sh the drill library finds.
 * Returns 0, or an exit code after printing why. */
static int locate_script(char *out, size_t size)
{
    char err[CMD_LAB_PATH_BYTES];
    if (drill_locate_cell_script(NULL, out, size, err, sizeof err) != 0)
        return cli_fail("set MERIDIAN_SOURCE_DIR to a Meridian source tree", "%s",
                        err[0] ? err : "cannot find the scripts directory");
    char *slash = strrchr(out, '/');
    mrd_assert(slash != NULL);
    size_t dir_len = (size_t)(slash - out) + 1;
    if (dir_len + sizeof "lab.sh" > size)
        return cli_fail(NULL, "source path too long: %s", out);
    memcpy(out + dir_len, "lab.sh", sizeof "lab.sh");
    if (access(out, R_OK) != 0)
        return cli_fail("update the source tree or set MERIDIAN_SOURCE_DIR", "cannot read %s: %s",
                        out, strerror(errno));
    return CLI_EXIT_OK;
}

int cmd_lab(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    if (argc == 0)
        return cli_usage_error(cmd, "missing subcommand: up, down, status or fault");
    if (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0 ||
        strcmp(argv[0], "help") == 0) {
        cli_print_help(cmd);
        return CLI_EXIT_OK;
    }
    if (argc > CMD_LAB_ARGS_MAX)
        return cli_usage_error(cmd, "too many arguments (at most %d)", CMD_LAB_ARGS_MAX);

    char script[CMD_LAB_PATH_BYTES];
    int rc = locate_script(script, sizeof script);
    if (rc != CLI_EXIT_OK)
        return rc;
    char bin_dir[CMD_LAB_PATH_BYTES];
    if (self_dir(bin_dir, sizeof bin_dir) != 0)
        return cli_fail(NULL, "cannot find the directory of this binary (/proc/self/exe)");
    if (setenv("MERIDIAN_BIN_DIR", bin_dir, 1) != 0)
        return cli_fail(NULL, "setenv: %s", strerror(errno));

    /* bash SCRIPT ARGS... [--json] NULL */
    char *args[CMD_LAB_ARGS_MAX + 4];
    int n = 0;
    args[n++] = "bash";
    args[n++] = script;
    for (int i = 0; i < argc; i++)
        args[n++] = argv[i];
    if (ctx->json && strcmp(argv[0], "status") == 0)
        args[n++] = "--json";
    args[n] = NULL;
    mrd_assert(n < (int)(sizeof args / sizeof args[0]));

    fflush(stdout);
    fflush(stderr);
    execvp("bash", args);
    return cli_fail("install bash", "cannot run bash %s: %s", script, strerror(errno));
}
