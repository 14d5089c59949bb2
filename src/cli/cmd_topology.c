/*
 * cmd_topology.c — `meridianctl topology check FILE` and `meridianctl
 * topology show FILE`: validate a topology file and print what it lays
 * out (docs/TOPOLOGY.md).
 *
 * Both only parse arguments, call src/topology and print: every rule
 * lives in the module, so the lab, the drills and this command refuse
 * the same files with the same errors. Errors go to stderr, one per
 * line ("FILE: POINTER: MESSAGE [RULE]; hint: HINT"); with --json they
 * are one document on stdout instead. Exit 0 valid, 1 invalid or
 * unreadable, 2 bad arguments.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli_out.h"
#include "cli/commands.h"
#include "topology/topology.h"

/* One formatted error line. */
#define CMD_TOPOLOGY_LINE_BYTES 2048

/* Load path; on failure print the errors (text on stderr, or the --json
 * document on stdout) and return the exit code, else CLI_EXIT_OK. */
static int load(cli_ctx *ctx, const char *path, topology **out)
{
    topology_errors *errs = malloc(sizeof *errs);
    if (errs == NULL)
        return cli_fail(NULL, "out of memory");
    int rc = topology_load_errors(path, out, errs);
    if (rc == 0) {
        free(errs);
        return CLI_EXIT_OK;
    }
    size_t total = errs->count + errs->more;
    if (ctx->json) {
        json_t *list = json_array();
        for (size_t i = 0; list != NULL && i < errs->count; i++) {
            const topology_error *e = &errs->items[i];
            json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s}", "pointer", e->pointer,
                                                  "rule", e->rule, "message", e->message,
                                                  "hint", e->hint));
        }
        json_t *doc = json_pack("{s:b, s:s, s:I, s:o*}", "ok", 0, "file", path, "error_count",
                                (json_int_t)total, "errors", list);
        free(errs);
        if (cli_out_json(doc) != 0)
            return cli_fail(NULL, "cannot write JSON");
        return CLI_EXIT_FAIL;
    }
    char line[CMD_TOPOLOGY_LINE_BYTES];
    if (errs->count == 1 && strncmp(errs->items[0].rule, "file.", 5) == 0) {
        /* Unreadable: no rule was applied. */
        char hint[TOPOLOGY_HINT_BYTES];
        snprintf(hint, sizeof hint, "%s", errs->items[0].hint);
        snprintf(line, sizeof line, "%s: %s", path, errs->items[0].message);
        free(errs);
        return cli_fail(hint[0] ? hint : NULL, "%s", line);
    }
    for (size_t i = 0; i < errs->count; i++) {
        topology_error_format(path, &errs->items[i], line, sizeof line);
        fprintf(stderr, "%s\n", line);
    }
    if (errs->more > 0)
        fprintf(stderr, "%s: ... and %zu more errors\n", path, errs->more);
    free(errs);
    return cli_fail("each line names the element, the rule [in brackets] and a fix; "
                    "docs/TOPOLOGY.md explains every rule",
                    "%s is not a valid topology: %zu error%s", path, total,
                    total == 1 ? "" : "s");
}

int cmd_topology_check(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 1, 1, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    topology *t = NULL;
    int rc = load(ctx, pos[0], &t);
    if (rc != CLI_EXIT_OK)
        return rc;
    size_t cells = topology_cell_count(t), nodes = topology_node_count(t);
    size_t members = topology_etcd_member_count(t), regions = topology_region_count(t);
    topology_free(t);
    if (ctx->json) {
        json_t *doc = json_pack("{s:b, s:s, s:I, s:I, s:I, s:I}", "ok", 1, "file", pos[0],
                                "regions", (json_int_t)regions, "cells", (json_int_t)cells,
                                "nodes", (json_int_t)nodes, "etcd_members",
                                (json_int_t)members);
        return cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    }
    printf("ok: %zu cell%s, %zu node%s, %zu etcd member%s, %zu region%s (%s)\n", cells,
           cells == 1 ? "" : "s", nodes, nodes == 1 ? "" : "s", members,
           members == 1 ? "" : "s", regions, regions == 1 ? "" : "s", pos[0]);
    return CLI_EXIT_OK;
}

static const char *port_text(uint16_t port, char buf[8])
{
    if (port == TOPOLOGY_PORT_AUTO)
        return "auto";
    snprintf(buf, 8, "%u", port);
    return buf;
}

static void print_names(const char (*names)[TOPOLOGY_NAME_BYTES], size_t count)
{
    for (size_t i = 0; i < count; i++)
        printf("%s%s", i ? " " : "", names[i]);
}

/* One region of a cell: its nodes by zone, then the other objects. */
static void show_cell_region(const topology *t, const topology_cell *c, const char *region)
{
    const topology_region *r = topology_region_find(t, region);
    bool home = strcmp(region, c->home_region) == 0;
    printf("  %s (%s%s)\n", region, home ? "home, " : "", r ? r->jurisdiction : "?");
    char p1[8], p2[8];
    for (size_t z = 0; r != NULL && z < r->zone_count; z++) {
        for (size_t i = 0; i < c->node_count; i++) {
            const topology_node *n = &c->nodes[i];
            if (strcmp(n->region, region) != 0 || strcmp(n->zone, r->zones[z]) != 0)
                continue;
            printf("    %-5s %-14s %-17s pg %s, keeper %s\n", n->zone, n->name,
                   topology_node_role_name(n->role), port_text(n->pg_port, p1),
                   port_text(n->keeper_port, p2));
        }
    }
    for (size_t i = 0; i < c->backup_count; i++)
        if (strcmp(c->backups[i].region, region) == 0)
            printf("    backup repository %s\n", c->backups[i].name);
    for (size_t i = 0; i < c->cache_count; i++)
        if (strcmp(c->caches[i].region, region) == 0)
            printf("    cache %s in %s, port %s\n", c->caches[i].name, c->caches[i].zone,
                   port_text(c->caches[i].port, p1));
    for (size_t i = 0; i < c->meridiand_count; i++)
        if (strcmp(c->meridiand[i].region, region) == 0)
            printf("    meridiand x%" PRIu32 ", port %s\n", c->meridiand[i].instances,
                   port_text(c->meridiand[i].port, p1));
}

static void show_text(const topology *t, const char *path)
{
    char p1[8], p2[8];
    printf("topology %s%s%s(%s): %zu regions, %zu cells, %zu nodes, %zu etcd members\n",
           topology_name(t)[0] ? "'" : "", topology_name(t), topology_name(t)[0] ? "' " : "",
           path, topology_region_count(t), topology_cell_count(t), topology_node_count(t),
           topology_etcd_member_count(t));
    printf("ports: base %s\n\nregions\n", port_text(topology_port_base(t), p1));
    for (size_t i = 0; i < topology_region_count(t); i++) {
        const topology_region *r = topology_region_at(t, i);
        printf("  %-12s %-4s %-10s zones ", r->name, r->jurisdiction,
               topology_region_role_name(r->role));
        print_names(r->zones, r->zone_count);
        printf("\n");
    }
    size_t members = topology_etcd_member_count(t);
    printf("\netcd: %zu members, quorum %zu\n", members, members / 2 + 1);
    for (size_t i = 0; i < members; i++) {
        const topology_etcd_member *m = topology_etcd_member_at(t, i);
        printf("  %-14s %s/%s, client %s, peer %s\n", m->name, m->region, m->zone,
               port_text(m->client_port, p1), port_text(m->peer_port, p2));
    }
    printf("\nWAN links (one-way delay; unlisted pairs: %d ms)\n",
           LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT);
    for (size_t i = 0; i < topology_wan_link_count(t); i++) {
        const topology_wan_link *w = topology_wan_link_at(t, i);
        printf("  %s <-> %s: %" PRIu32 " ms, jitter %" PRIu32 " ms\n", w->a, w->b,
               w->one_way_delay_ms, w->jitter_ms);
    }
    for (size_t ci = 0; ci < topology_cell_count(t); ci++) {
        const topology_cell *c = topology_cell_at(t, ci);
        printf("\ncell %s: jurisdiction %s, home %s, allowed regions ", c->name,
               c->jurisdiction, c->home_region);
        print_names(c->allowed_regions, c->allowed_region_count);
        if (c->cross_border_count > 0) {
            printf(", cross-border to");
            for (size_t i = 0; i < c->cross_border_count; i++)
                printf(" %s", c->cross_border_jurisdictions[i]);
        }
        printf("\n");
        if (c->failover.mode == TOPOLOGY_FAILOVER_AUTOMATIC)
            printf("  failover: automatic: promote the DR standby once %s has lost the etcd "
                   "majority for %" PRIu32 " s, if its lag is within %" PRIu32 " s\n",
                   c->home_region, c->failover.region_failover_after_s,
                   c->failover.max_loss_s);
        else
            printf("  failover: manual: an operator runs `meridianctl failover --cell %s "
                   "--to-region REGION`\n",
                   c->name);
        for (size_t i = 0; i < c->allowed_region_count; i++)
            show_cell_region(t, c, c->allowed_regions[i]);
    }
}

int cmd_topology_show(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, NULL, 1, 1, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    topology *t = NULL;
    int rc = load(ctx, pos[0], &t);
    if (rc != CLI_EXIT_OK)
        return rc;
    if (ctx->json) {
        json_t *doc = topology_to_json(t);
        topology_free(t);
        return cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    }
    show_text(t, pos[0]);
    topology_free(t);
    return CLI_EXIT_OK;
}
