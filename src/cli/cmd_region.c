/*
 * cmd_region.c — `meridianctl failover` (manual regional failover, issue
 * 4 item 5) and `meridianctl residency scan` (issue 4 item 11).
 *
 * failover promotes a cell's DR standby in another region when the home
 * region is lost: it prints the loss bound first (the WAL the DR standby
 * lacks, in bytes, as LSNs, its lag in time, and an estimate of the
 * transfers that may be lost), refuses while the cell still has a leader
 * elsewhere (a planned move is `switchover`), and only with --yes writes
 * the request the DR standby's keeper acts on (src/keeper/fsm.c,
 * g_region_failover), then follows it to the new leader and prints the
 * event's detection and promotion times. The handlers parse and print;
 * cli_region.c does the work.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "cli/cli_cell.h"
#include "cli/cli_out.h"
#include "cli/cli_region.h"
#include "cli/commands.h"
#include "common/clock.h"
#include "common/config.h"

#define CMD_REGION_ERR_BYTES 1024
#define CMD_REGION_TIMEOUT_S_DEFAULT 60
#define CMD_REGION_TIMEOUT_S_MAX 3600
/* How often failover looks at the cell while waiting. */
#define CMD_REGION_POLL_MS 200

/* etcd endpoints: --etcd, else `etcd` in --config, else the lab's
 * ETCD_DIRECT (--dir, else the default lab when it is up). Returns
 * CLI_EXIT_OK with out filled, or an exit code after printing why. */
static int resolve_etcd(cli_ctx *ctx, const cli_command *cmd, const char *etcd_flag,
                        const char *dir_flag, char *out, size_t size, char *origin,
                        size_t origin_size)
{
    if (etcd_flag != NULL) {
        snprintf(out, size, "%s", etcd_flag);
        snprintf(origin, origin_size, "--etcd");
        return CLI_EXIT_OK;
    }
    if (ctx->config_path != NULL && dir_flag == NULL) {
        const config *cfg = cli_ctx_config(ctx);
        if (cfg == NULL)
            return CLI_EXIT_FAIL;
        const char *e = config_get(cfg, "etcd");
        if (e != NULL && e[0] != '\0') {
            snprintf(out, size, "%s", e);
            snprintf(origin, origin_size, "etcd in %s", ctx->config_path);
            return CLI_EXIT_OK;
        }
    }
    char dir[CLI_REGION_PATH_BYTES], err[CMD_REGION_ERR_BYTES];
    if (dir_flag != NULL)
        snprintf(dir, sizeof dir, "%s", dir_flag);
    else if (cli_region_lab_default_dir(dir, sizeof dir, err, sizeof err) != 0)
        dir[0] = '\0';
    if (dir[0] != '\0') {
        cli_region_lab lab;
        if (cli_region_lab_open(dir, &lab, err, sizeof err) == 0) {
            const char *e = cli_region_lab_var_get(&lab, "ETCD_DIRECT");
            if (e != NULL && e[0] != '\0') {
                snprintf(out, size, "%s", e);
                snprintf(origin, origin_size, "ETCD_DIRECT in %s/env", lab.dir);
            }
            cli_region_lab_close(&lab);
            if (out[0] != '\0')
                return CLI_EXIT_OK;
        } else if (dir_flag != NULL) {
            return cli_fail(NULL, "%s", err);
        }
    }
    return cli_usage_error(cmd, "no etcd endpoints: pass --etcd URL[,URL...], --config FILE "
                                "(with `etcd = ...`) or --dir LABDIR");
}

static int etcd_fail(const char *endpoints, const char *origin, etcd_client *c, int rc)
{
    const char *reason = etcd_client_last_error(c);
    if (reason == NULL || reason[0] == '\0')
        reason = etcd_strerror(rc);
    if (rc == ETCD_E_UNAVAILABLE)
        return cli_fail("is the lab (or the cell's etcd) running? check the endpoints",
                        "cannot reach etcd at %s (%s): %s", endpoints, origin, reason);
    return cli_fail(NULL, "etcd at %s: %s (%s)", endpoints, reason, etcd_strerror(rc));
}

static void lsn_text(uint64_t lsn, char *out, size_t size)
{
    cli_cell_lsn_format(lsn, out, size);
}

static void secs_text(int64_t ms, char *out, size_t size)
{
    if (ms < 0)
        snprintf(out, size, "-");
    else
        snprintf(out, size, "%" PRId64 ".%03d s", ms / 1000, (int)(ms % 1000));
}

static json_t *bound_json(const cli_region_bound *b)
{
    char l[32], d[32];
    lsn_text(b->leader_lsn, l, sizeof l);
    lsn_text(b->dr_lsn, d, sizeof d);
    return json_pack("{s:b, s:o, s:o, s:s, s:o, s:o, s:o, s:o, s:I, s:o}", "known", b->known,
                     "leader_lsn", b->known ? json_string(l) : json_null(), "dr_lsn",
                     b->known ? json_string(d) : json_null(), "leader_lsn_source",
                     b->leader_lsn_source, "gap_bytes",
                     b->known ? json_integer((json_int_t)b->gap_bytes) : json_null(),
                     "dr_lag_ms",
                     b->dr_lag_ms >= 0 ? json_integer((json_int_t)b->dr_lag_ms) : json_null(),
                     "transfers_estimate",
                     b->known ? json_integer((json_int_t)b->transfers_estimate) : json_null(),
                     "as_of_ms", b->as_of_ms > 0 ? json_integer((json_int_t)b->as_of_ms)
                                                 : json_null(),
                     "bytes_per_transfer_estimate", (json_int_t)CLI_REGION_TRANSFER_WAL_BYTES,
                     "estimate_note",
                     json_string("transfers_estimate = gap_bytes / ~6 KB of WAL per transfer "
                                 "(the requirements' 5 KB average): an estimate, not a count"));
}

static void bound_print(const cli_cell *cell, const cli_cell_member *dr,
                        const cli_region_bound *b)
{
    char l[32], d[32], at[40];
    printf("loss bound of promoting %s (DR standby of cell %s in %s):\n", dr->name, cell->name,
           dr->region);
    if (!b->known) {
        printf("  unknown: %s\n", dr->lsn_known ? "no leader LSN was ever published"
                                                 : "the DR standby has not published its LSN");
    } else {
        lsn_text(b->leader_lsn, l, sizeof l);
        lsn_text(b->dr_lsn, d, sizeof d);
        printf("  last known leader flush LSN  %s  (%s)\n", l, b->leader_lsn_source);
        printf("  DR standby flush LSN         %s\n", d);
        printf("  WAL gap                      %" PRIu64 " bytes (%s .. %s)\n", b->gap_bytes, d,
               l);
    }
    if (b->dr_lag_ms >= 0)
        printf("  DR lag                       %" PRId64 " ms behind the leader when it was "
               "last seen\n",
               b->dr_lag_ms);
    else
        printf("  DR lag                       unknown (not published)\n");
    if (b->known)
        printf("  transfers that may be lost   about %" PRIu64
               " (an estimate: %" PRIu64 " bytes / ~%d bytes of WAL per transfer at the "
               "requirements' 5 KB average)\n",
               b->transfers_estimate, b->gap_bytes, CLI_REGION_TRANSFER_WAL_BYTES);
    cli_cell_iso8601(b->as_of_ms, at, sizeof at);
    printf("  as of                        %s (the DR standby's last publication); WAL the "
           "leader wrote after its own last publication is not in this number\n",
           at);
}

/* One progress line when what we watch changed. */
static void progress(const cli_cell *cell, const char *dr, int64_t t0_ms, char *last,
                     size_t last_size)
{
    char now[256];
    const cli_cell_member *n = cli_cell_find(cell, dr);
    const char *st = n == NULL || !n->present ? "unreachable" : n->state;
    if (cell->leader_present)
        snprintf(now, sizeof now, "leader %s (epoch %" PRId64 "); %s %s", cell->leader,
                 cell->epoch, dr, st);
    else
        snprintf(now, sizeof now, "no leader (epoch %" PRId64 "); %s %s%s", cell->epoch, dr,
                 st, cell->failover_present ? ", request pending" : "");
    if (strcmp(now, last) == 0)
        return;
    snprintf(last, last_size, "%s", now);
    int64_t el = clock_mono_ms() - t0_ms;
    printf("  +%" PRId64 ".%02d s  %s\n", el / 1000, (int)(el % 1000) / 10, now);
    fflush(stdout);
}

static int64_t span(int64_t a, int64_t b)
{
    return a > 0 && b >= a ? b - a : -1;
}

static json_t *ms_or_null(int64_t v)
{
    return v >= 0 ? json_integer((json_int_t)v) : json_null();
}

/* The DR standbys of the cell, "us-dr1 in eu-west, ...", or "none". */
static void dr_list(const cli_cell *cell, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cell->member_count && used < size; i++) {
        const cli_cell_member *n = &cell->members[i];
        if (!n->dr)
            continue;
        int w = snprintf(out + used, size - used, "%s%s in %s", used ? ", " : "", n->name,
                         n->region[0] ? n->region : "?");
        if (w < 0)
            break;
        used += (size_t)w;
    }
    if (out[0] == '\0')
        snprintf(out, size, "none");
}

int cmd_failover(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *cell_flag = NULL, *region = NULL, *etcd_flag = NULL, *dir_flag = NULL,
               *timeout_text = NULL;
    bool yes = false;
    const cli_opt opts[] = {
        {.name = "cell", .value = &cell_flag},
        {.name = "to-region", .value = &region},
        {.name = "yes", .flag = &yes},
        {.name = "timeout-s", .value = &timeout_text},
        {.name = "etcd", .value = &etcd_flag},
        {.name = "dir", .value = &dir_flag},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    if (cell_flag == NULL)
        return cli_usage_error(cmd, "say which cell: --cell NAME");
    if (region == NULL)
        return cli_usage_error(cmd, "say where to: --to-region REGION");
    if (cli_cell_name_check(cell_flag, CLI_CELL_NAME_MAX) != 0)
        return cli_usage_error(cmd, "invalid cell name \"%s\": use 1 to %d characters among "
                                    "a-z 0-9 _ -",
                               cell_flag, CLI_CELL_NAME_MAX);
    if (cli_cell_name_check(region, LIMIT_TOPOLOGY_NAME_MAX) != 0)
        return cli_usage_error(cmd, "invalid region name \"%s\": use 1 to %d characters among "
                                    "a-z 0-9 _ -",
                               region, LIMIT_TOPOLOGY_NAME_MAX);
    long timeout_s = 0;
    if (cli_cell_timeout_s_parse(timeout_text, CMD_REGION_TIMEOUT_S_DEFAULT,
                                 CMD_REGION_TIMEOUT_S_MAX, &timeout_s) != 0)
        return cli_usage_error(cmd, "--timeout-s must be a whole number of seconds in 1..%d",
                               CMD_REGION_TIMEOUT_S_MAX);
    char endpoints[CLI_REGION_PATH_BYTES] = "", origin[CLI_REGION_PATH_BYTES + 32] = "";
    int rc = resolve_etcd(ctx, cmd, etcd_flag, dir_flag, endpoints, sizeof endpoints, origin,
                          sizeof origin);
    if (rc != CLI_EXIT_OK)
        return rc;
    char err[CMD_REGION_ERR_BYTES];
    etcd_client *c = cli_cell_connect(endpoints, err, sizeof err);
    if (c == NULL)
        return cli_usage_error(cmd, "bad etcd endpoint list \"%s\": %s", endpoints, err);
    cli_cell *cell = malloc(sizeof *cell);
    if (cell == NULL) {
        etcd_client_free(c);
        return cli_fail(NULL, "out of memory");
    }
    const char *name = cell_flag;
    int erc = cli_cell_read(c, name, cell);
    if (erc != ETCD_OK) {
        rc = etcd_fail(endpoints, origin, c, erc);
        goto out;
    }
    if (!cell->known) {
        rc = cli_fail("check the name (`meridianctl lab status` lists the lab's cells)",
                      "unknown cell %s: etcd at %s has no keys under /meridian/%s/", name,
                      endpoints, name);
        goto out;
    }
    char drs[512];
    dr_list(cell, drs, sizeof drs);
    const cli_cell_member *dr = cli_region_dr_in(cell, region);
    if (dr == NULL) {
        rc = cli_fail("a regional failover promotes the cell's DR standby in that region "
                      "(topology: a node with role dr-standby)",
                      "cell %s has no DR standby in %s (its DR standbys: %s)", name, region,
                      drs);
        goto out;
    }
    char dr_name[KEEPER_NAME_MAX];
    snprintf(dr_name, sizeof dr_name, "%s", dr->name);
    if (cell->leader_present) {
        if (strcmp(cell->leader_region, region) == 0 || strcmp(cell->leader, dr_name) == 0) {
            if (ctx->json)
                rc = cli_out_json(json_pack("{s:b, s:b, s:s, s:s, s:s, s:I}", "ok", 1,
                                            "already", 1, "cell", name, "to_region", region,
                                            "leader", cell->leader, "epoch",
                                            (json_int_t)cell->epoch)) == 0
                         ? CLI_EXIT_OK
                         : cli_fail(NULL, "cannot write JSON");
            else {
                printf("cell %s is already led from %s by %s (epoch %" PRId64
                       "): nothing to fail over\n",
                       name, region, cell->leader, cell->epoch);
                rc = CLI_EXIT_OK;
            }
            goto out;
        }
        char hint[256];
        if (cell->lease_ttl_s >= 0)
            snprintf(hint, sizeof hint,
                     "its leader key lives on a lease with %" PRId64
                     " s left: if the home region is really lost, the key lapses by then "
                     "and this command can go ahead",
                     cell->lease_ttl_s);
        else
            snprintf(hint, sizeof hint, "`meridianctl status --cell %s` shows the cell", name);
        rc = cli_fail(hint,
                      "the cell has a leader (%s, epoch %" PRId64 "): use `switchover` for a "
                      "planned move; a regional failover is for a lost home region",
                      cell->leader, cell->epoch);
        goto out;
    }
    if (!dr->present) {
        rc = cli_fail("start its keeper (or restore its link to etcd) and try again",
                      "DR standby %s in %s publishes no state (its keeper is down or cut off "
                      "from etcd): it cannot act on a failover request",
                      dr_name, region);
        goto out;
    }
    if (!dr->running) {
        rc = cli_fail("its keeper restarts PostgreSQL; check `meridianctl status --cell` and "
                      "the keeper's log",
                      "DR standby %s: its PostgreSQL is not running", dr_name);
        goto out;
    }
    if (cell->failover_present && strcmp(cell->failover_to, dr_name) != 0) {
        rc = cli_fail("it lapses after 60 s",
                      "a regional failover request to %s is already pending in cell %s",
                      cell->failover_to, name);
        goto out;
    }
    cli_region_bound bound;
    cli_region_loss_bound(cell, dr, &bound);
    int64_t old_epoch = cell->epoch;

    if (!yes) {
        if (ctx->json) {
            json_t *b = bound_json(&bound);
            rc = cli_out_json(json_pack("{s:b, s:b, s:s, s:s, s:s, s:I, s:o, s:s}", "ok", 0,
                                        "needs_confirmation", 1, "cell", name, "to_region",
                                        region, "dr_node", dr_name, "epoch",
                                        (json_int_t)old_epoch, "loss_bound",
                                        b ? b : json_null(), "message",
                                        "re-run with --yes to promote the DR standby")) == 0
                     ? CLI_REGION_EXIT_CONFIRM
                     : cli_fail(NULL, "cannot write JSON");
        } else {
            printf("cell %s has no leader (last leader %s, epoch %" PRId64 ")\n", name,
                   cell->last_leader[0] ? cell->last_leader : "-", old_epoch);
            bound_print(cell, dr, &bound);
            printf("\nre-run with --yes to promote DR in %s (%s)\n", region, dr_name);
            rc = CLI_REGION_EXIT_CONFIRM;
        }
        goto out;
    }

    if (!ctx->json) {
        printf("cell %s has no leader (last leader %s, epoch %" PRId64 ")\n", name,
               cell->last_leader[0] ? cell->last_leader : "-", old_epoch);
        bound_print(cell, dr, &bound);
        printf("\n");
    }
    int64_t lease = 0, requested_at_ms = 0;
    bool created = false;
    if (cell->failover_present) {
        requested_at_ms = clock_wall_ms();
        if (!ctx->json)
            printf("a request to promote %s is already pending: waiting for it\n", dr_name);
    } else {
        char existing[KEEPER_NAME_MAX];
        erc = cli_region_failover_request(c, name, dr_name, &lease, &requested_at_ms, &created,
                                          existing, sizeof existing);
        if (erc != ETCD_OK) {
            rc = etcd_fail(endpoints, origin, c, erc);
            goto out;
        }
        if (!created && strcmp(existing, dr_name) != 0) {
            rc = cli_fail(NULL, "a regional failover request to %s appeared meanwhile",
                          existing[0] ? existing : "?");
            goto out;
        }
        if (!ctx->json)
            printf("regional failover of cell %s to %s (%s) requested (lease %" PRIx64
                   ", %d s)\n",
                   name, dr_name, region, (uint64_t)lease, CLI_REGION_FAILOVER_LEASE_S);
    }
    fflush(stdout);

    int64_t t0 = clock_mono_ms();
    int64_t deadline = t0 + (int64_t)timeout_s * 1000;
    char last[256] = "";
    int64_t seen_ms = 0;
    bool other = false;
    while (clock_mono_ms() < deadline) {
        erc = cli_cell_read(c, name, cell);
        if (erc == ETCD_OK) {
            if (!ctx->json)
                progress(cell, dr_name, t0, last, sizeof last);
            if (cell->leader_present && strcmp(cell->leader, dr_name) == 0 &&
                cell->epoch > old_epoch) {
                seen_ms = clock_wall_ms();
                break;
            }
            if (cell->leader_present && strcmp(cell->leader, dr_name) != 0) {
                other = true;
                break;
            }
        }
        cli_cell_sleep_ms(CMD_REGION_POLL_MS);
    }
    if (seen_ms == 0) {
        bool withdrawn = false;
        if (lease != 0 && !other && erc == ETCD_OK && !cell->leader_present)
            withdrawn = etcd_lease_revoke(c, lease) == ETCD_OK;
        if (ctx->json)
            cli_out_json(json_pack("{s:b, s:s, s:s, s:s, s:b}", "ok", 0, "error",
                                   other ? "another node took the lead" : "timeout", "cell",
                                   name, "dr_node", dr_name, "withdrawn", withdrawn));
        if (other)
            rc = cli_fail("the home region may be back: see `meridianctl status` and "
                          "`history`",
                          "%s did not take over: %s leads cell %s at epoch %" PRId64, dr_name,
                          cell->leader, name, cell->epoch);
        else
            rc = cli_fail(withdrawn ? "the request was withdrawn; see the DR keeper's log and "
                                      "`meridianctl status`"
                                    : "check `meridianctl status` again",
                          "%s did not take the leader key within %ld s", dr_name, timeout_s);
        goto out;
    }

    /* The keeper records the event when it takes the key and again once
     * PostgreSQL is promoted: wait (within the deadline) for the second. */
    cli_region_event ev;
    memset(&ev, 0, sizeof ev);
    int64_t new_epoch = cell->epoch;
    bool have_event = false;
    int64_t ev_deadline = clock_mono_ms() + 30000;
    while (true) {
        if (cli_region_event_get(c, name, new_epoch, &ev) == ETCD_OK) {
            have_event = true;
            if (ev.promoted_at_ms > 0)
                break;
        }
        int64_t now = clock_mono_ms();
        if (now >= ev_deadline || now >= deadline + 30000)
            break;
        cli_cell_sleep_ms(CMD_REGION_POLL_MS);
    }
    int64_t detection = have_event ? span(ev.leader_lost_at_ms, ev.acquired_at_ms) : -1;
    int64_t promotion = have_event ? span(ev.acquired_at_ms, ev.promoted_at_ms) : -1;
    int64_t outage = have_event ? span(ev.leader_lost_at_ms, ev.promoted_at_ms) : -1;
    int64_t since_request = span(requested_at_ms, have_event && ev.promoted_at_ms > 0
                                                      ? ev.promoted_at_ms
                                                      : seen_ms);
    if (ctx->json) {
        json_t *b = bound_json(&bound);
        json_t *e = have_event
                        ? json_pack("{s:I, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "epoch",
                                    (json_int_t)ev.epoch, "kind", ev.kind, "node", ev.node,
                                    "leader_lost_at_ms", ms_or_null(ev.leader_lost_at_ms > 0
                                                                        ? ev.leader_lost_at_ms
                                                                        : -1),
                                    "acquired_at_ms",
                                    ms_or_null(ev.acquired_at_ms > 0 ? ev.acquired_at_ms : -1),
                                    "promoted_at_ms",
                                    ms_or_null(ev.promoted_at_ms > 0 ? ev.promoted_at_ms : -1),
                                    "detection_ms", ms_or_null(detection), "promotion_ms",
                                    ms_or_null(promotion), "leader_lost_to_promoted_ms",
                                    ms_or_null(outage))
                        : json_null();
        rc = cli_out_json(json_pack("{s:b, s:s, s:s, s:s, s:I, s:I, s:o, s:I, s:I, s:o, s:o}",
                                    "ok", 1, "cell", name, "to_region", region, "dr_node",
                                    dr_name, "old_epoch", (json_int_t)old_epoch, "epoch",
                                    (json_int_t)new_epoch, "loss_bound", b ? b : json_null(),
                                    "requested_at_ms", (json_int_t)requested_at_ms,
                                    "leader_seen_at_ms", (json_int_t)seen_ms,
                                    "request_to_promoted_ms", ms_or_null(since_request),
                                    "event", e ? e : json_null())) == 0
                 ? CLI_EXIT_OK
                 : cli_fail(NULL, "cannot write JSON");
        goto out;
    }
    char lost[40], acq[40], prom[40], t1[32], t2[32], t3[32], t4[32];
    printf("\nregional failover done: %s leads cell %s from %s at epoch %" PRId64 "\n",
           dr_name, name, region, new_epoch);
    if (have_event) {
        cli_cell_iso8601(ev.leader_lost_at_ms, lost, sizeof lost);
        cli_cell_iso8601(ev.acquired_at_ms, acq, sizeof acq);
        cli_cell_iso8601(ev.promoted_at_ms, prom, sizeof prom);
        secs_text(detection, t1, sizeof t1);
        secs_text(promotion, t2, sizeof t2);
        secs_text(outage, t3, sizeof t3);
        printf("  history kind     %s (epoch %" PRId64 ")\n", ev.kind[0] ? ev.kind : "-",
               ev.epoch);
        printf("  leader lost at   %s (as %s saw the leader key gone)\n", lost, dr_name);
        printf("  key taken at     %s (leader lost -> key taken %s, including any wait for an "
               "operator)\n",
               acq, t1);
        printf("  promoted at      %s (promotion %s; leader lost -> promoted %s)\n", prom, t2,
               t3);
    } else {
        printf("  (the history event of epoch %" PRId64 " is not readable yet: see "
               "`meridianctl history --cell %s`)\n",
               new_epoch, name);
    }
    secs_text(since_request, t4, sizeof t4);
    printf("  request -> promoted %s\n", t4);
    if (bound.known)
        printf("  loss bound printed above: %" PRIu64 " bytes of WAL, about %" PRIu64
               " transfers (estimate)\n",
               bound.gap_bytes, bound.transfers_estimate);
    printf("  commits on %s are asynchronous until standbys of the cell run in %s again\n",
           dr_name, region);
    rc = CLI_EXIT_OK;
out:
    free(cell);
    etcd_client_free(c);
    return rc;
}

int cmd_residency_scan(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *dir_flag = NULL, *topo_flag = NULL;
    const cli_opt opts[] = {
        {.name = "dir", .value = &dir_flag},
        {.name = "topology", .value = &topo_flag},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 0, 0, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);
    char dir[CLI_REGION_PATH_BYTES], err[CMD_REGION_ERR_BYTES * 4];
    if (dir_flag != NULL)
        snprintf(dir, sizeof dir, "%s", dir_flag);
    else if (cli_region_lab_default_dir(dir, sizeof dir, err, sizeof err) != 0)
        return cli_usage_error(cmd, "%s: pass --dir LABDIR", err);
    cli_region_scan scan;
    if (cli_region_scan_run(dir, topo_flag, &scan, err, sizeof err) != 0)
        return cli_fail(NULL, "%s", err);
    int rc;
    if (ctx->json) {
        rc = cli_out_json(cli_region_scan_json(&scan)) == 0 ? CLI_EXIT_OK
                                                             : cli_fail(NULL, "cannot write JSON");
    } else {
        cli_region_scan_print(stdout, &scan);
        rc = CLI_EXIT_OK;
    }
    if (rc == CLI_EXIT_OK && scan.violation_count > 0)
        rc = CLI_EXIT_FAIL;
    cli_region_scan_free(&scan);
    return rc;
}
