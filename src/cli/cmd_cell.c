/*
 * cmd_cell.c — `meridianctl status | history | switchover | keeper fsm`:
 * the operator's view of a high-availability cell (docs/FAILOVER.md).
 *
 * The handlers parse arguments, find etcd (--etcd, else `etcd` in the
 * config file) and the cell (--cell, else `cell` in the file), then call
 * cli_cell.c and print text or --json. They never write to etcd except
 * the switchover request, which the primary's keeper carries out.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli_cell.h"
#include "cli/cli_out.h"
#include "cli/cmd_cell.h"
#include "common/clock.h"
#include "common/config.h"
#include "keeper/fsm.h"

#define CMD_CELL_ERR_BYTES 1024
/* Default cell name: the keeper's own default (keeper.c). */
#define CMD_CELL_DEFAULT "default"
#define CMD_CELL_SWITCHOVER_TIMEOUT_S_DEFAULT 60
#define CMD_CELL_SWITCHOVER_TIMEOUT_S_MAX 3600
/* How often switchover looks at the cell while waiting. */
#define CMD_CELL_POLL_MS 100

/* Where the cell is: resolved from flags and the config file. */
typedef struct cell_target {
    const char *etcd;
    const char *cell;
    const char *etcd_origin; /* "--etcd" or "etcd in FILE", for hints */
    char origin_text[512];
} cell_target;

/* Resolve etcd endpoints and the cell name. Returns CLI_EXIT_OK or an
 * exit code after printing why. cell_required: no default cell (for
 * commands that change something). */
static int resolve(cli_ctx *ctx, const cli_command *cmd, const char *etcd_flag,
                   const char *cell_flag, bool cell_required, cell_target *t)
{
    const config *cfg = NULL;
    if (ctx->config_path != NULL) {
        cfg = cli_ctx_config(ctx);
        if (cfg == NULL)
            return CLI_EXIT_FAIL;
    }
    t->etcd = etcd_flag;
    t->etcd_origin = "--etcd";
    if (t->etcd == NULL && cfg != NULL) {
        t->etcd = config_get(cfg, "etcd");
        snprintf(t->origin_text, sizeof t->origin_text, "etcd in %s", ctx->config_path);
        t->etcd_origin = t->origin_text;
    }
    if (t->etcd == NULL || t->etcd[0] == '\0')
        return cli_usage_error(cmd, "no etcd endpoints: pass --etcd URL[,URL...] or set "
                                    "`etcd = URL,...` in the --config file");
    t->cell = cell_flag;
    if (t->cell == NULL && cfg != NULL)
        t->cell = config_get(cfg, "cell");
    if (t->cell == NULL) {
        if (cell_required)
            return cli_usage_error(cmd, "say which cell: --cell NAME (or `cell = NAME` in "
                                        "the --config file)");
        t->cell = CMD_CELL_DEFAULT;
    }
    if (cli_cell_name_check(t->cell, CLI_CELL_NAME_MAX) != 0)
        return cli_usage_error(cmd,
                               "invalid cell name \"%s\": use 1 to %d characters among "
                               "a-z 0-9 _ -",
                               t->cell, CLI_CELL_NAME_MAX);
    return CLI_EXIT_OK;
}

static int open_client(const cli_command *cmd, const cell_target *t, etcd_client **out)
{
    char err[CMD_CELL_ERR_BYTES];
    *out = cli_cell_connect(t->etcd, err, sizeof err);
    if (*out == NULL)
        return cli_usage_error(cmd, "bad etcd endpoint list \"%s\": %s", t->etcd, err);
    return CLI_EXIT_OK;
}

/* Report a failed etcd request. */
static int etcd_fail(const cell_target *t, etcd_client *c, int rc)
{
    const char *reason = etcd_client_last_error(c);
    if (reason == NULL || reason[0] == '\0')
        reason = etcd_strerror(rc);
    if (rc == ETCD_E_UNAVAILABLE)
        return cli_fail(NULL,
                        "cannot reach etcd at %s: %s; is the cell running? check %s",
                        t->etcd, reason, t->etcd_origin);
    return cli_fail(NULL, "etcd at %s: %s (%s)", t->etcd, reason, etcd_strerror(rc));
}

/* ---- status */

int cmd_status(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *cell_flag = NULL, *etcd_flag = NULL;
    const cli_opt opts[] = {
        {.name = "cell", .value = &cell_flag},
        {.name = "etcd", .value = &etcd_flag},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    cell_target t;
    int rc = resolve(ctx, cmd, etcd_flag, cell_flag, false, &t);
    if (rc != CLI_EXIT_OK)
        return rc;
    etcd_client *c = NULL;
    rc = open_client(cmd, &t, &c);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_cell *cell = malloc(sizeof *cell);
    if (cell == NULL) {
        etcd_client_free(c);
        return cli_fail(NULL, "out of memory");
    }
    int erc = cli_cell_read(c, t.cell, cell);
    if (erc != ETCD_OK) {
        rc = etcd_fail(&t, c, erc);
        goto out;
    }
    if (ctx->json) {
        if (cli_out_json(cli_cell_status_json(cell, t.etcd)) != 0) {
            rc = cli_fail(NULL, "cannot write JSON");
            goto out;
        }
    } else {
        cli_cell_status_print(stdout, cell, t.etcd);
    }
    rc = cell->leader_present ? CLI_EXIT_OK : CLI_CELL_EXIT_NO_LEADER;
out:
    free(cell);
    etcd_client_free(c);
    return rc;
}

/* ---- history */

static json_t *ms_or_null(int64_t ms)
{
    return ms > 0 ? json_integer((json_int_t)ms) : json_null();
}

static json_t *iso_or_null(int64_t ms)
{
    char at[40];
    cli_cell_iso8601(ms, at, sizeof at);
    return ms > 0 ? json_string(at) : json_null();
}

/* b - a when both are known and in order, else -1. */
static int64_t span_ms(int64_t a, int64_t b)
{
    return a > 0 && b >= a ? b - a : -1;
}

/* Detection: from the moment the keeper saw the leader key gone to the
 * new key. A bootstrap had no leader to lose. */
static int64_t detection_ms(const cli_cell_event *e)
{
    if (strcmp(e->kind, "bootstrap") == 0)
        return -1;
    return span_ms(e->leader_lost_at_ms, e->acquired_at_ms);
}

/* From the leader's loss to a later moment (first write, routing switch);
 * -1 for a bootstrap, which lost no leader. */
static int64_t since_loss_ms(const cli_cell_event *e, int64_t at_ms)
{
    if (strcmp(e->kind, "bootstrap") == 0)
        return -1;
    return span_ms(e->leader_lost_at_ms, at_ms);
}

static json_t *event_json(const cli_cell_event *e)
{
    int64_t det = detection_ms(e);
    int64_t prom = span_ms(e->acquired_at_ms, e->promoted_at_ms);
    int64_t first = since_loss_ms(e, e->first_write_at_ms);
    int64_t routed = since_loss_ms(e, e->routed_at_ms);
    json_t *o = json_pack("{s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                          "epoch", (json_int_t)e->epoch, "kind", e->kind, "node", e->node,
                          "leader_lost_at", iso_or_null(e->leader_lost_at_ms), "acquired_at",
                          iso_or_null(e->acquired_at_ms), "promoted_at",
                          iso_or_null(e->promoted_at_ms), "first_write_at",
                          iso_or_null(e->first_write_at_ms), "leader_lost_at_ms",
                          ms_or_null(e->leader_lost_at_ms), "acquired_at_ms",
                          ms_or_null(e->acquired_at_ms), "promoted_at_ms",
                          ms_or_null(e->promoted_at_ms), "first_write_at_ms",
                          ms_or_null(e->first_write_at_ms), "detection_ms",
                          det >= 0 ? json_integer((json_int_t)det) : json_null(), "promotion_ms",
                          prom >= 0 ? json_integer((json_int_t)prom) : json_null(),
                          "first_write_after_loss_ms",
                          first >= 0 ? json_integer((json_int_t)first) : json_null());
    if (o == NULL)
        return NULL;
    /* RTO as the cell saw it: leader lost -> first acknowledged write. */
    json_object_set_new(o, "rto_ms", first >= 0 ? json_integer((json_int_t)first) : json_null());
    json_object_set_new(o, "routed_at_ms", ms_or_null(e->routed_at_ms));
    json_object_set_new(o, "routed_region",
                        e->routed_region[0] ? json_string(e->routed_region) : json_null());
    json_object_set_new(o, "routing_switch_ms",
                        routed >= 0 ? json_integer((json_int_t)routed) : json_null());
    json_object_set_new(o, "loss_bound_bytes", e->loss_bound_known
                                                   ? json_integer((json_int_t)e->loss_bound_bytes)
                                                   : json_null());
    json_object_set_new(o, "loss_bound_ms", e->loss_bound_known
                                                ? json_integer((json_int_t)e->loss_bound_ms)
                                                : json_null());
    json_object_set_new(o, "rewinds", json_integer((json_int_t)e->rewinds));
    json_object_set_new(o, "discarded_wal_bytes", json_integer((json_int_t)e->discarded_wal_bytes));
    return o;
}

static void span_text(int64_t ms, char *out, size_t size)
{
    if (ms < 0)
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%" PRId64 ".%03d s", ms / 1000, (int)(ms % 1000));
}

static void print_history(const cli_cell_event *ev, size_t n)
{
    if (n == 0) {
        printf("no events: the cell has never had a leader\n");
        return;
    }
    printf("%-6s  %-17s  %-8s  %-24s  %-9s  %-9s  %-9s  %s\n", "EPOCH", "KIND", "NODE",
           "ACQUIRED_AT", "DETECTION", "PROMOTION", "RTO", "ROUTING / LOSS");
    for (size_t i = 0; i < n; i++) {
        const cli_cell_event *e = &ev[i];
        char acq[40], det[32], prom[32], rto[32], routed[32], extra[256] = "";
        cli_cell_iso8601(e->acquired_at_ms, acq, sizeof acq);
        span_text(detection_ms(e), det, sizeof det);
        span_text(span_ms(e->acquired_at_ms, e->promoted_at_ms), prom, sizeof prom);
        span_text(since_loss_ms(e, e->first_write_at_ms), rto, sizeof rto);
        span_text(since_loss_ms(e, e->routed_at_ms), routed, sizeof routed);
        size_t used = 0;
        if (e->routed_at_ms > 0)
            used += (size_t)snprintf(extra + used, sizeof extra - used, "routed to %s%s%s",
                                     e->routed_region[0] ? e->routed_region : "?",
                                     strcmp(routed, "-") != 0 ? " after " : "",
                                     strcmp(routed, "-") != 0 ? routed : "");
        if (e->loss_bound_known && used < sizeof extra)
            used += (size_t)snprintf(extra + used, sizeof extra - used,
                                     "%sloss bound %" PRId64 " bytes / %" PRId64 " ms",
                                     used ? "; " : "", e->loss_bound_bytes, e->loss_bound_ms);
        if (e->rewinds > 0 && used < sizeof extra)
            snprintf(extra + used, sizeof extra - used,
                     "%s%" PRId64 " rewinds, %" PRId64 " WAL bytes discarded", used ? "; " : "",
                     e->rewinds, e->discarded_wal_bytes);
        printf("%-6" PRId64 "  %-17s  %-8s  %-24s  %-9s  %-9s  %-9s  %s\n", e->epoch,
               e->kind[0] ? e->kind : "-", e->node[0] ? e->node : "-", acq, det, prom, rto,
               extra[0] ? extra : "-");
    }
}

int cmd_history(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *cell_flag = NULL, *etcd_flag = NULL;
    const cli_opt opts[] = {
        {.name = "cell", .value = &cell_flag},
        {.name = "etcd", .value = &etcd_flag},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    cell_target t;
    int rc = resolve(ctx, cmd, etcd_flag, cell_flag, false, &t);
    if (rc != CLI_EXIT_OK)
        return rc;
    etcd_client *c = NULL;
    rc = open_client(cmd, &t, &c);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_cell_event *ev = NULL;
    size_t n = 0;
    int erc = cli_cell_history_read(c, t.cell, &ev, &n);
    if (erc != ETCD_OK) {
        rc = etcd_fail(&t, c, erc);
        goto out;
    }
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < n; i++) {
            json_t *e = event_json(&ev[i]);
            if (e == NULL || json_array_append_new(arr, e) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        json_t *doc = arr ? json_pack("{s:s, s:o}", "cell", t.cell, "events", arr) : NULL;
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    } else {
        print_history(ev, n);
        rc = CLI_EXIT_OK;
    }
out:
    free(ev);
    etcd_client_free(c);
    return rc;
}

/* ---- switchover */

static const char *state_of(const cli_cell *cell, const char *node)
{
    const cli_cell_member *m = cli_cell_find(cell, node);
    return m == NULL || !m->present ? "unreachable" : m->state;
}

/* One progress line when what we watch changed. */
static void progress(const cli_cell *cell, const char *from, const char *to, int64_t t0_ms,
                     char *last, size_t last_size)
{
    char now[256];
    if (cell->leader_present)
        snprintf(now, sizeof now, "leader %s (epoch %" PRId64 "); %s %s, %s %s", cell->leader,
                 cell->epoch, from, state_of(cell, from), to, state_of(cell, to));
    else
        snprintf(now, sizeof now, "no leader (epoch %" PRId64 "); %s %s, %s %s", cell->epoch,
                 from, state_of(cell, from), to, state_of(cell, to));
    if (strcmp(now, last) == 0)
        return;
    snprintf(last, last_size, "%s", now);
    int64_t el = clock_mono_ms() - t0_ms;
    printf("  +%" PRId64 ".%02d s  %s\n", el / 1000, (int)(el % 1000) / 10, now);
    fflush(stdout);
}

int cmd_switchover(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *cell_flag = NULL, *etcd_flag = NULL, *to_flag = NULL, *timeout_text = NULL;
    const char *to_region = NULL;
    const cli_opt opts[] = {
        {.name = "cell", .value = &cell_flag},
        {.name = "etcd", .value = &etcd_flag},
        {.name = "to", .value = &to_flag},
        {.name = "to-region", .value = &to_region},
        {.name = "timeout-s", .value = &timeout_text},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (to_flag == NULL && to_region == NULL)
        return cli_usage_error(cmd, "say where the leader should go: --to NODE, or --to-region "
                                    "REGION to let meridianctl pick the best node there");
    if (to_flag != NULL && to_region != NULL)
        return cli_usage_error(cmd, "--to NODE and --to-region REGION exclude each other: "
                                    "name the node, or the region and let meridianctl pick");
    if (to_flag != NULL && cli_cell_name_check(to_flag, KEEPER_NAME_MAX - 1) != 0)
        return cli_usage_error(cmd, "invalid node name \"%s\": use 1 to %d characters among "
                                    "a-z 0-9 _ -",
                               to_flag, KEEPER_NAME_MAX - 1);
    if (to_region != NULL && cli_cell_name_check(to_region, CLI_CELL_REGION_BYTES - 1) != 0)
        return cli_usage_error(cmd, "invalid region name \"%s\": use 1 to %d characters among "
                                    "a-z 0-9 _ -",
                               to_region, CLI_CELL_REGION_BYTES - 1);
    long timeout_s = 0;
    if (cli_cell_timeout_s_parse(timeout_text, CMD_CELL_SWITCHOVER_TIMEOUT_S_DEFAULT,
                                 CMD_CELL_SWITCHOVER_TIMEOUT_S_MAX, &timeout_s) != 0)
        return cli_usage_error(cmd, "--timeout-s must be a whole number of seconds in 1..%d",
                               CMD_CELL_SWITCHOVER_TIMEOUT_S_MAX);
    cell_target t;
    int rc = resolve(ctx, cmd, etcd_flag, cell_flag, true, &t);
    if (rc != CLI_EXIT_OK)
        return rc;
    etcd_client *c = NULL;
    rc = open_client(cmd, &t, &c);
    if (rc != CLI_EXIT_OK)
        return rc;
    cli_cell *cell = malloc(sizeof *cell);
    if (cell == NULL) {
        etcd_client_free(c);
        return cli_fail(NULL, "out of memory");
    }
    char err[CMD_CELL_ERR_BYTES];
    char from[KEEPER_NAME_MAX];
    char to[KEEPER_NAME_MAX];
    snprintf(to, sizeof to, "%s", to_flag != NULL ? to_flag : "");
    int erc = cli_cell_read(c, t.cell, cell);
    if (erc != ETCD_OK) {
        rc = etcd_fail(&t, c, erc);
        goto out;
    }
    if (to_region != NULL) {
        /* Pick the node: the regions of every cell tell an unknown region
         * from one where this cell has no node (best effort). */
        char(*regions)[CLI_CELL_REGION_BYTES] = calloc(KEEPER_NODES_MAX * 4, sizeof *regions);
        size_t nregions = 0;
        bool regions_ok = regions != NULL &&
                          cli_cell_known_regions(c, regions, KEEPER_NODES_MAX * 4, &nregions) ==
                              ETCD_OK;
        int prc = cli_cell_switchover_pick(cell, to_region,
                                           regions_ok ? (const char(*)[CLI_CELL_REGION_BYTES])regions
                                                      : NULL,
                                           nregions, to, sizeof to, err, sizeof err);
        free(regions);
        if (prc != 0) {
            rc = cli_fail("`meridianctl status` shows the cell", "switchover refused: %s", err);
            goto out;
        }
        const cli_cell_member *pm = cli_cell_find(cell, to);
        if (!ctx->json && pm != NULL) {
            char lsn[32];
            cli_cell_lsn_format(pm->flush_lsn, lsn, sizeof lsn);
            printf("picked %s in %s: streaming from %s, synchronous, flush LSN %s (the most "
                   "advanced there)\n",
                   to, to_region, cell->leader, lsn);
        }
    }
    if (cli_cell_switchover_check(cell, to, err, sizeof err) != 0) {
        rc = cli_fail("`meridianctl status` shows the cell", "switchover refused: %s", err);
        goto out;
    }
    snprintf(from, sizeof from, "%s", cell->leader);
    int64_t old_epoch = cell->epoch;

    int64_t lease = 0, requested_at_ms = 0;
    bool created = false;
    char existing[KEEPER_NAME_MAX];
    erc = cli_cell_switchover_request(c, t.cell, to, &lease, &requested_at_ms, &created,
                                      existing, sizeof existing);
    if (erc != ETCD_OK) {
        rc = etcd_fail(&t, c, erc);
        goto out;
    }
    if (!created) {
        rc = cli_fail("wait for it to finish (its request lapses after 30 s) and check "
                      "`meridianctl status`",
                      "a switchover is already in progress in cell %s (to %s)", t.cell,
                      existing[0] ? existing : "?");
        goto out;
    }
    int64_t t0 = clock_mono_ms();
    if (!ctx->json) {
        printf("switchover of cell %s from %s to %s requested (epoch %" PRId64
               "; request lease %" PRIx64 ", %d s)\n",
               t.cell, from, to, old_epoch, (uint64_t)lease, CLI_CELL_SWITCHOVER_LEASE_S);
        fflush(stdout);
    }

    /* Wait, bounded, for the leader key to name `to`. */
    char last[256] = "";
    int64_t deadline = t0 + (int64_t)timeout_s * 1000;
    int64_t absent_first_ms = 0; /* wall clock when we first saw no leader */
    int64_t seen_ms = 0;
    bool wrong_node = false;
    while (clock_mono_ms() < deadline) {
        erc = cli_cell_read(c, t.cell, cell);
        if (erc == ETCD_OK) {
            if (!ctx->json)
                progress(cell, from, to, t0, last, sizeof last);
            if (!cell->leader_present && absent_first_ms == 0)
                absent_first_ms = clock_wall_ms();
            if (cell->leader_present && strcmp(cell->leader, to) == 0 &&
                cell->epoch > old_epoch) {
                seen_ms = clock_wall_ms();
                break;
            }
            if (cell->leader_present && strcmp(cell->leader, from) != 0 &&
                strcmp(cell->leader, to) != 0) {
                wrong_node = true;
                break;
            }
        }
        cli_cell_sleep_ms(CMD_CELL_POLL_MS);
    }

    if (seen_ms == 0) {
        /* Nothing happened yet: withdraw the request so a keeper does
         * not act on it after we gave up. Otherwise leave it: the new
         * leader deletes it, and its lease ends it anyway. */
        bool withdrawn = false;
        if (!wrong_node && erc == ETCD_OK && cell->leader_present &&
            strcmp(cell->leader, from) == 0 && cell->epoch == old_epoch)
            withdrawn = etcd_lease_revoke(c, lease) == ETCD_OK;
        if (ctx->json) {
            json_t *st = erc == ETCD_OK ? cli_cell_status_json(cell, t.etcd) : json_null();
            json_t *doc = json_pack("{s:b, s:s, s:s, s:s, s:s, s:b, s:o}", "ok", 0, "error",
                                    wrong_node ? "another node took the lead" : "timeout",
                                    "cell", t.cell, "from", from, "to", to, "withdrawn",
                                    withdrawn, "status", st ? st : json_null());
            if (doc != NULL && to_region != NULL)
                json_object_set_new(doc, "to_region", json_string(to_region));
            cli_out_json(doc);
        } else if (erc == ETCD_OK) {
            printf("\n");
            cli_cell_status_print(stdout, cell, t.etcd);
        }
        if (wrong_node)
            rc = cli_fail("see `meridianctl history` and the keepers' logs",
                          "switchover to %s did not happen: %s leads at epoch %" PRId64,
                          to, cell->leader, cell->epoch);
        else
            rc = cli_fail(withdrawn ? "the request was withdrawn; the old leader still leads"
                                    : "the cell is changing leader: check `meridianctl "
                                      "status` again",
                          "switchover to %s did not finish within %ld s", to, timeout_s);
        goto out;
    }

    int64_t pause_ms = seen_ms - requested_at_ms;
    int64_t absent_ms = absent_first_ms > 0 ? seen_ms - absent_first_ms : -1;
    if (ctx->json) {
        char at[40];
        cli_cell_iso8601(requested_at_ms, at, sizeof at);
        json_t *doc = json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:o}",
                                "ok", 1, "cell", t.cell, "from", from, "to", to,
                                "old_epoch", (json_int_t)old_epoch, "epoch",
                                (json_int_t)cell->epoch, "requested_at", at,
                                "requested_at_ms", (json_int_t)requested_at_ms,
                                "leader_seen_at_ms", (json_int_t)seen_ms, "write_pause_ms",
                                (json_int_t)pause_ms, "leader_absent_ms",
                                absent_ms >= 0 ? json_integer((json_int_t)absent_ms)
                                               : json_null());
        if (doc != NULL && to_region != NULL) {
            /* --to-region: the region asked for and the node picked there
             * ("to" is that node too; "chosen" says it was picked). */
            json_object_set_new(doc, "to_region", json_string(to_region));
            json_object_set_new(doc, "chosen", json_string(to));
        }
        rc = cli_out_json(doc) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    } else {
        printf("switchover done: %s leads cell %s at epoch %" PRId64 "\n", to, t.cell,
               cell->epoch);
        printf("write pause: %" PRId64 ".%03d s (request to new leader key seen, polled "
               "every %d ms)\n",
               pause_ms / 1000, (int)(pause_ms % 1000), CMD_CELL_POLL_MS);
        if (absent_ms >= 0)
            printf("leader key absent for about %" PRId64 ".%03d s\n", absent_ms / 1000,
                   (int)(absent_ms % 1000));
        rc = CLI_EXIT_OK;
    }
out:
    free(cell);
    etcd_client_free(c);
    return rc;
}

/* ---- keeper fsm */

int cmd_keeper_fsm(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    bool dot = false;
    const cli_opt opts[] = {
        {.name = "dot", .flag = &dot},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (dot && ctx->json)
        return cli_usage_error(cmd, "--dot and --json exclude each other");
    if (dot) {
        size_t need = keeper_fsm_dot(NULL, 0);
        char *buf = malloc(need + 1);
        if (buf == NULL)
            return cli_fail(NULL, "out of memory");
        keeper_fsm_dot(buf, need + 1);
        fputs(buf, stdout);
        free(buf);
        return CLI_EXIT_OK;
    }
    if (ctx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < keeper_fsm_table_count; i++) {
            const keeper_transition *t = &keeper_fsm_table[i];
            json_t *row = json_pack("{s:s, s:s, s:s, s:s}", "from",
                                    keeper_state_name(t->from), "to",
                                    keeper_state_name(t->to), "action",
                                    keeper_action_name(t->action), "why", t->why);
            if (row == NULL || json_array_append_new(arr, row) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        }
        return cli_out_json(arr) == 0 ? CLI_EXIT_OK : cli_fail(NULL, "cannot write JSON");
    }
    printf("The keeper's decision table (src/keeper/fsm.c): in each state, the first row\n"
           "whose condition holds fires; safety rows come first.\n\n");
    printf("%-10s    %-10s  %-16s  %s\n", "FROM", "TO", "ACTION", "WHY");
    for (size_t i = 0; i < keeper_fsm_table_count; i++) {
        const keeper_transition *t = &keeper_fsm_table[i];
        printf("%-10s -> %-10s  %-16s  %s\n", keeper_state_name(t->from),
               keeper_state_name(t->to), keeper_action_name(t->action), t->why);
    }
    return CLI_EXIT_OK;
}
