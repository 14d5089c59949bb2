/*
 * cli_cmd.c — dispatching meridianctl's command tables and parsing
 * arguments (see cli_cmd.h).
 *
 * Options are long only (--name VALUE, --name=VALUE, --flag); "--" ends
 * them. The global options are accepted anywhere, before or after the
 * command, because operators paste them wherever; later ones win.
 * Every mistake on the command line is reported the same way: what is
 * wrong, then the command's usage line, exit 2.
 */
#include "cli/cli_cmd.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli_config.h"
#include "cli/cli_db.h"
#include "common/mrd_assert.h"
#include "etcd/etcd.h"

#define CLI_ERR_BYTES 1024

/* The root table's usage, used for errors above any command. */
static const cli_command root_cmd = {
    .name = "",
    .summary = "",
    .usage = "COMMAND [ARGS]",
};

/* Length of the command path at the start of a usage string: the words
 * made of lower-case letters ("apikey create" in "apikey create
 * (--customer NAME | --admin)"). */
static int path_len(const char *usage)
{
    int end = 0;
    for (int i = 0; usage[i]; i++) {
        char c = usage[i];
        if (c == ' ')
            continue;
        if (c < 'a' || c > 'z')
            break;
        while (usage[i] >= 'a' && usage[i] <= 'z')
            i++;
        end = i;
        if (usage[i] == '\0')
            break;
    }
    return end;
}

static void print_usage_line(FILE *out, const cli_command *cmd)
{
    fprintf(out, "usage: " CLI_PROG " [--config FILE] [--dsn DSN] [--json] %s\n",
            cmd->usage);
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
    va_list ap;
    fputs(CLI_PROG ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (cmd == NULL)
        cmd = &root_cmd;
    print_usage_line(stderr, cmd);
    if (cmd == &root_cmd)
        fputs("Run '" CLI_PROG " help' for the list of commands.\n", stderr);
    else
        fprintf(stderr, "Run '" CLI_PROG " %.*s --help' for details.\n",
                path_len(cmd->usage), cmd->usage);
    return CLI_EXIT_USAGE;
}

int cli_fail(const char *hint, const char *fmt, ...)
{
    va_list ap;
    fputs(CLI_PROG ": error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (hint != NULL)
        fprintf(stderr, "hint: %s\n", hint);
    return CLI_EXIT_FAIL;
}

void cli_print_help(const cli_command *cmd)
{
    print_usage_line(stdout, cmd);
    printf("\n%s.\n", cmd->summary);
    if (cmd->help)
        printf("\n%s", cmd->help);
    printf("\nGlobal options:\n"
           "  --config FILE   configuration file (same file and keys as meridiand)\n"
           "  --dsn DSN       PostgreSQL connection string (overrides dsn in FILE)\n"
           "  --json          machine-readable output\n");
}

/* The command list of a table (a group's leaves are listed with it). */
static void print_group(FILE *out, const cli_command *table, const char *group)
{
    if (group[0] == '\0')
        fprintf(out, "usage: " CLI_PROG " [--config FILE] [--dsn DSN] [--json] "
                     "COMMAND [ARGS]\n\nCommands:\n");
    else
        fprintf(out, "usage: " CLI_PROG " [--config FILE] [--dsn DSN] [--json] "
                     "%s COMMAND [ARGS]\n\nCommands:\n", group);
    char path[128];
    for (const cli_command *c = table; c->name; c++) {
        if (c->children) {
            for (const cli_command *s = c->children; s->name; s++) {
                snprintf(path, sizeof path, "%s%s%s %s", group, group[0] ? " " : "",
                         c->name, s->name);
                fprintf(out, "  %-18s %s\n", path, s->summary);
            }
        } else {
            snprintf(path, sizeof path, "%s%s%s", group, group[0] ? " " : "", c->name);
            fprintf(out, "  %-18s %s\n", path, c->summary);
        }
    }
    fprintf(out, "\nGlobal options (anywhere on the line):\n"
                 "  --config FILE   configuration file (same file and keys as meridiand)\n"
                 "  --dsn DSN       PostgreSQL connection string (overrides dsn in FILE)\n"
                 "  --json          machine-readable output\n"
                 "Run '" CLI_PROG " COMMAND --help' for a command's options.\n");
}

/* Handle a global option at argv[*i]. Returns 1 when consumed (and
 * advances *i past a value), 0 when not global, -1 on a missing value. */
static int parse_global(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv,
                        int *i)
{
    const char *a = argv[*i];
    const char *names[] = {"config", "dsn"};
    const char **dests[] = {&ctx->config_path, &ctx->dsn_flag};
    if (strcmp(a, "--json") == 0) {
        ctx->json = true;
        return 1;
    }
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        size_t n = strlen(names[k]);
        if (strncmp(a, "--", 2) != 0 || strncmp(a + 2, names[k], n) != 0)
            continue;
        if (a[2 + n] == '=') {
            *dests[k] = a + 3 + n;
            return 1;
        }
        if (a[2 + n] != '\0')
            continue;
        if (*i + 1 >= argc) {
            cli_usage_error(cmd, "option --%s needs a value", names[k]);
            return -1;
        }
        *dests[k] = argv[++*i];
        return 1;
    }
    return 0;
}

int cli_parse(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv,
              const cli_opt *opts, int pos_min, int pos_max,
              const char *pos[CLI_POSITIONAL_MAX], int *npos)
{
    mrd_assert(pos_max <= CLI_POSITIONAL_MAX && pos_min <= pos_max);
    bool options_done = false;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || a[1] == '\0') {
            if (*npos >= pos_max) {
                cli_usage_error(cmd, "unexpected argument \"%s\"", a);
                return -1;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_print_help(cmd);
            return 1;
        }
        int g = parse_global(ctx, cmd, argc, argv, &i);
        if (g < 0)
            return -1;
        if (g > 0)
            continue;
        const cli_opt *o = NULL;
        const char *inline_value = NULL;
        for (const cli_opt *p = opts; p && p->name; p++) {
            size_t n = strlen(p->name);
            if (strncmp(a, "--", 2) == 0 && strncmp(a + 2, p->name, n) == 0 &&
                (a[2 + n] == '\0' || a[2 + n] == '=')) {
                o = p;
                inline_value = a[2 + n] == '=' ? a + 3 + n : NULL;
                break;
            }
        }
        if (o == NULL) {
            cli_usage_error(cmd, "unknown option \"%s\"", a);
            return -1;
        }
        if (o->flag) {
            if (inline_value) {
                cli_usage_error(cmd, "option --%s takes no value", o->name);
                return -1;
            }
            *o->flag = true;
        } else if (inline_value) {
            *o->value = inline_value;
        } else if (i + 1 < argc) {
            *o->value = argv[++i];
        } else {
            cli_usage_error(cmd, "option --%s needs a value", o->name);
            return -1;
        }
    }
    if (*npos < pos_min) {
        cli_usage_error(cmd, "missing argument");
        return -1;
    }
    return 0;
}

int cli_parse_exit(int parse_result)
{
    mrd_assert(parse_result != 0);
    return parse_result > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
}

static bool is_help(const char *a)
{
    return strcmp(a, "help") == 0 || strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

int cli_dispatch(cli_ctx *ctx, const cli_command *table, const char *group, int argc,
                 char **argv)
{
    /* Global options before the command word. */
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && !is_help(argv[i]); i++) {
        int g = parse_global(ctx, NULL, argc, argv, &i);
        if (g < 0)
            return CLI_EXIT_USAGE;
        if (g == 0) {
            if (group[0])
                return cli_usage_error(NULL, "unknown option \"%s\" for %s", argv[i],
                                       group);
            return cli_usage_error(NULL, "unknown option \"%s\"", argv[i]);
        }
    }
    argc -= i;
    argv += i;
    if (argc == 0) {
        fprintf(stderr, CLI_PROG ": missing command\n");
        print_group(stderr, table, group);
        return CLI_EXIT_USAGE;
    }
    if (is_help(argv[0])) {
        /* "help db migrate" = "db migrate --help". */
        if (strcmp(argv[0], "help") == 0 && argc > 1) {
            char *again[CLI_POSITIONAL_MAX + 1];
            if (argc - 1 > CLI_POSITIONAL_MAX)
                return cli_usage_error(NULL, "too many arguments after help");
            for (int k = 1; k < argc; k++)
                again[k - 1] = argv[k];
            again[argc - 1] = "--help";
            return cli_dispatch(ctx, table, group, argc, again);
        }
        print_group(stdout, table, group);
        return CLI_EXIT_OK;
    }
    for (const cli_command *c = table; c->name; c++) {
        if (strcmp(c->name, argv[0]) != 0)
            continue;
        if (c->children)
            return cli_dispatch(ctx, c->children, c->name, argc - 1, argv + 1);
        mrd_assert(c->handler != NULL);
        return c->handler(ctx, c, argc - 1, argv + 1);
    }
    if (group[0])
        return cli_usage_error(NULL, "unknown command \"%s %s\"", group, argv[0]);
    return cli_usage_error(NULL, "unknown command \"%s\"", argv[0]);
}

config *cli_ctx_config(cli_ctx *ctx)
{
    if (ctx->cfg)
        return ctx->cfg;
    char err[CLI_ERR_BYTES];
    ctx->cfg = cli_config_load(ctx->config_path, err, sizeof err);
    if (ctx->cfg == NULL) {
        /* config_load's message already carries its hint. */
        cli_fail(NULL, "cannot load the configuration: %s", err);
        return NULL;
    }
    if (ctx->dsn_flag && config_set(ctx->cfg, "dsn", ctx->dsn_flag) != 0) {
        cli_fail(NULL, "out of memory");
        config_free(ctx->cfg);
        ctx->cfg = NULL;
        return NULL;
    }
    return ctx->cfg;
}

const char *cli_ctx_dsn(cli_ctx *ctx, const cli_command *cmd, int *exit_code)
{
    config *cfg = cli_ctx_config(ctx);
    if (cfg == NULL) {
        *exit_code = CLI_EXIT_FAIL;
        return NULL;
    }
    const char *dsn = config_get(cfg, "dsn");
    if (dsn == NULL || dsn[0] == '\0') {
        if (ctx->config_path)
            *exit_code = cli_fail("add `dsn = ...` to the file or pass --dsn DSN",
                                  "no dsn in %s", ctx->config_path);
        else
            *exit_code = cli_usage_error(cmd, "no database: pass --dsn DSN or "
                                              "--config FILE");
        return NULL;
    }
    return dsn;
}

/* With `etcd` and `cell` in the config (a cell run by keepers), the
 * database is wherever the cell's leader is now, as meridiand finds it:
 * append the leader's host and port (its address for `region` when it
 * advertises one) to dsn. Returns 0 with the new string in buf, or -1
 * when there is no such config or no leader (dsn is then used as is). */
static int leader_dsn(cli_ctx *ctx, const char *dsn, char *buf, size_t size)
{
    config *cfg = ctx->cfg;
    const char *endpoints = cfg ? config_get(cfg, "etcd") : NULL;
    const char *cell = cfg ? config_get(cfg, "cell") : NULL;
    const char *region = cfg ? config_get(cfg, "region") : NULL;
    if (ctx->dsn_flag != NULL || endpoints == NULL || endpoints[0] == '\0' || cell == NULL)
        return -1;
    char err[256], key[160];
    etcd_client *c = etcd_client_create(endpoints, 2000, err, sizeof err);
    if (c == NULL)
        return -1;
    snprintf(key, sizeof key, "/meridian/%s/leader", cell);
    etcd_kv kv;
    int rc = -1;
    if (etcd_get(c, key, &kv) == ETCD_OK) {
        json_t *j = json_loadb(kv.value, kv.value_len, 0, NULL);
        const char *host = json_string_value(json_object_get(j, "host"));
        json_int_t port = json_integer_value(json_object_get(j, "port"));
        const char *adv = region ? json_string_value(json_object_get(json_object_get(j, "addrs"), region)) : NULL;
        char ahost[64];
        const char *colon = adv ? strrchr(adv, ':') : NULL;
        if (colon != NULL && colon > adv && (size_t)(colon - adv) < sizeof ahost && atoi(colon + 1) > 0) {
            memcpy(ahost, adv, (size_t)(colon - adv));
            ahost[colon - adv] = '\0';
            host = ahost;
            port = atoi(colon + 1);
        }
        if (host != NULL && strspn(host, "0123456789abcdefghijklmnopqrstuvwxyz.-:") == strlen(host) &&
            port > 0 && port <= 65535) {
            int n = snprintf(buf, size, "%s host=%s port=%d", dsn, host, (int)port);
            rc = n > 0 && (size_t)n < size ? 0 : -1;
        }
        json_decref(j);
        etcd_kv_release(&kv);
    }
    etcd_client_free(c);
    return rc;
}

int cli_ctx_connect(cli_ctx *ctx, const cli_command *cmd, PGconn **out)
{
    int code = CLI_EXIT_FAIL;
    const char *dsn = cli_ctx_dsn(ctx, cmd, &code);
    if (dsn == NULL)
        return code;
    char err[CLI_ERR_BYTES];
    char routed[1024];
    if (leader_dsn(ctx, dsn, routed, sizeof routed) == 0)
        dsn = routed;
    *out = cli_db_connect(dsn, err, sizeof err);
    if (*out == NULL) {
        char hint[512];
        if (ctx->config_path && ctx->dsn_flag == NULL)
            snprintf(hint, sizeof hint,
                     "is PostgreSQL running? check --dsn / dsn in %s", ctx->config_path);
        else
            snprintf(hint, sizeof hint, "is PostgreSQL running? check --dsn");
        return cli_fail(hint, "cannot connect to the database: %s", err);
    }
    return CLI_EXIT_OK;
}

int cli_ctx_connect_migrated(cli_ctx *ctx, const cli_command *cmd, PGconn **out)
{
    int rc = cli_ctx_connect(ctx, cmd, out);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CLI_ERR_BYTES];
    const char *hint = NULL;
    if (cli_db_require_schema(*out, err, sizeof err, &hint) != 0) {
        PQfinish(*out);
        *out = NULL;
        return cli_fail(hint, "%s", err);
    }
    return CLI_EXIT_OK;
}

void cli_ctx_release(cli_ctx *ctx)
{
    if (ctx->cfg)
        config_free(ctx->cfg);
    ctx->cfg = NULL;
}
