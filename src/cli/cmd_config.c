/*
 * cmd_config.c — `meridianctl config init --out FILE [--dsn DSN]
 * [--listen HOST:PORT] [--force]`: a first configuration file with a
 * new api_key_pepper (cli_config.c writes it).
 */
#include <stdio.h>

#include <jansson.h>

#include "cli/cli_config.h"
#include "cli/cli_out.h"
#include "cli/commands.h"

#define CMD_CONFIG_ERR_BYTES 1024

int cmd_config_init(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *out = NULL;
    const char *listen = NULL;
    bool force = false;
    const cli_opt opts[] = {
        {.name = "out", .value = &out},
        {.name = "listen", .value = &listen},
        {.name = "force", .flag = &force},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (out == NULL || out[0] == '\0')
        return cli_usage_error(cmd, "--out FILE is required");
    if (listen && cli_config_check_listen(listen) != 0)
        return cli_usage_error(cmd, "invalid --listen \"%s\": expected HOST:PORT",
                               listen);

    char err[CMD_CONFIG_ERR_BYTES];
    int rc = cli_config_write_new(out, ctx->dsn_flag, listen, force, err, sizeof err);
    if (rc == CLI_CONFIG_EXISTS)
        return cli_fail("pass --force to replace it (its api_key_pepper is lost with "
                        "it: every API key hashed with it stops working)",
                        "%s already exists: not overwritten", out);
    if (rc != 0)
        return cli_fail(NULL, "%s", err);
    const char *used_listen = listen ? listen : CLI_CONFIG_LISTEN_DEFAULT;
    if (ctx->json) {
        json_t *doc = json_pack("{s:s, s:s, s:b}", "path", out, "listen", used_listen,
                                "dsn_set", ctx->dsn_flag != NULL);
        return cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    }
    printf("wrote %s (mode 0600) with a new api_key_pepper; listen = %s\n", out,
           used_listen);
    if (ctx->dsn_flag == NULL)
        printf("set dsn in it (or pass --dsn) before `meridianctl --config %s db "
               "migrate`\n",
               out);
    return CLI_EXIT_OK;
}
