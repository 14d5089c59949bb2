/*
 * cli_cell.h — what meridianctl knows about a cell: one consistent read
 * of its etcd keys (written by the keepers, src/keeper/keeper.c), the
 * failover history, and the switchover request.
 *
 * A cell is three PostgreSQL nodes run by meridian-keepers that
 * coordinate through etcd under /meridian/<cell>/ (docs/FAILOVER.md).
 * This module turns those keys into structs, a status report (text or a
 * stable JSON object) and checks; it knows nothing of argv (the handlers
 * are in cmd_cell.c). Everything it reads is what the keepers published:
 * a member whose keeper is down has no key (its lease lapsed), and this
 * module says so rather than guessing.
 */
#ifndef MERIDIAN_CLI_CELL_H
#define MERIDIAN_CLI_CELL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "etcd/etcd.h"
#include "keeper/fsm.h"

/* Nodes one status shows: members with keys plus synchronous-set
 * members and the last leader without one. */
#define CLI_CELL_NODES_MAX (2 * KEEPER_NODES_MAX)
/* Longest cell name (same alphabet as node names: a-z 0-9 - _). */
#define CLI_CELL_NAME_MAX 63
/* Events one `history` shows at most (one per promotion). */
#define CLI_CELL_HISTORY_MAX 10000
/* Per-member etcd request timeout of meridianctl. */
#define CLI_CELL_ETCD_TIMEOUT_MS 2000
/* Exit code of `status` when the cell has no leader (0: it has one). */
#define CLI_CELL_EXIT_NO_LEADER 3
/* Lease of a switchover request: the keeper must act within it. */
#define CLI_CELL_SWITCHOVER_LEASE_S 30

/* One node as its keeper published it (members/<node>). */
typedef struct cli_cell_member {
    char name[KEEPER_NAME_MAX];
    bool present;          /* its member key exists (keeper alive, reaching etcd) */
    bool registered;       /* its registry key (nodes/<node>, no lease) exists */
    bool dr;               /* role "dr" in either key: a DR standby */
    bool in_syncset;
    char state[24];        /* keeper FSM state ("standby", ...) */
    bool healthy, primary, running, streaming;
    int64_t timeline;
    bool lsn_known;
    uint64_t flush_lsn;
    bool lag_known;
    uint64_t lag_bytes;    /* as published: behind the leader's last LSN it saw */
    bool dr_lag_known;
    int64_t dr_lag_ms;     /* DR only, as published: time behind the leader */
    char zone[64];
    char region[64];
    char upstream[256];    /* primary_conninfo as published ("" = none) */
    char host[64];
    int port;
    char why[256];         /* the sentence of its last FSM transition */
    int64_t updated_ms;    /* wall clock of its last publication */
    /* "addrs": how other regions reach its PostgreSQL (keeper --advertise;
     * in the lab, WAN-emulator links), so an upstream through one of them
     * is still recognised as this node. */
    size_t addr_count;
    struct {
        char region[64];
        char host[64];
        int port;
    } addrs[KEEPER_NODES_MAX];
    /* "replicas" (a primary only): the standbys streaming from it, by its
     * own pg_stat_replication — what the keeper's switchover guard uses. */
    bool replicas_known;
    size_t replica_count;
    char replicas[KEEPER_NODES_MAX][KEEPER_NAME_MAX];
} cli_cell_member;

/* The cell at one etcd revision. */
typedef struct cli_cell {
    char name[CLI_CELL_NAME_MAX + 1];
    int64_t revision;
    bool known;             /* any of its keys exists */
    bool initialized;
    char initialized_by[KEEPER_NAME_MAX];

    bool leader_present;
    char leader[KEEPER_NAME_MAX];
    int64_t leader_epoch;   /* epoch written in the leader key */
    char leader_host[64];
    int leader_port;
    char leader_region[64]; /* "" when the leader key has none */
    int64_t leader_lease;   /* lease id of the leader key */
    int64_t lease_ttl_s;    /* its remaining TTL; -1 unknown, 0 expired */

    int64_t epoch;          /* the epoch key (0 = absent) */
    char last_leader[KEEPER_NAME_MAX];

    size_t syncset_count;
    char syncset[KEEPER_NODES_MAX][KEEPER_NAME_MAX];
    bool syncset_present;

    bool switchover_present;
    char switchover_to[KEEPER_NAME_MAX];
    int64_t switchover_requested_at_ms;

    bool failover_present;  /* a regional failover request (cli_region.h) */
    char failover_to[KEEPER_NAME_MAX];

    size_t member_count;
    cli_cell_member members[CLI_CELL_NODES_MAX];
} cli_cell;

/* One promotion (history/<epoch>). A time is 0 when unknown. */
typedef struct cli_cell_event {
    int64_t epoch;
    char kind[24];          /* bootstrap | failover | switchover | regional_failover */
    char node[KEEPER_NAME_MAX];
    int64_t leader_lost_at_ms;
    int64_t acquired_at_ms;
    int64_t promoted_at_ms;
    int64_t first_write_at_ms;  /* first write acknowledged under this epoch (meridiand) */
    int64_t routed_at_ms;       /* the global entry moved to the leader's region (lab follower) */
    char routed_region[KEEPER_NAME_MAX];
    bool loss_bound_known;      /* regional failover: what the DR standby lacked */
    int64_t loss_bound_bytes, loss_bound_ms;
    int64_t rewinds;            /* nodes that rejoined under this epoch by pg_rewind */
    int64_t discarded_wal_bytes; /* WAL they threw away: never reached the new primary */
} cli_cell_event;

/* Longest etcd key the CLI builds. */
#define CLI_CELL_KEY_BYTES 256

/* /meridian/<cell>/<suffix> into out (CLI_CELL_KEY_BYTES; asserts it fits). */
void cli_cell_key(char *out, const char *cell, const char *suffix);
/* A string member of a JSON object into dst ("" when absent or not a
 * string; cut to size). */
void cli_json_copy_str(char *dst, size_t size, json_t *o, const char *key);
/* An integer member (a JSON integer or a decimal string); 0 when absent. */
int64_t cli_json_int(json_t *o, const char *key);

/* Check a cell or node name: 1..max bytes among a-z 0-9 - _. Returns 0
 * or -1. */
int cli_cell_name_check(const char *name, size_t max);

/* A client for the comma-separated endpoints (CLI_CELL_ETCD_TIMEOUT_MS
 * per member). Returns NULL with the reason in err. */
etcd_client *cli_cell_connect(const char *endpoints, char *err, size_t err_size);

/* Read cell `name` in one etcd transaction (so every key is from the
 * same revision), then the leader lease's remaining TTL. Members are
 * those with a member or registry key plus the synchronous set, the
 * last leader and the leader (present/registered false when keyless),
 * sorted by name. Returns 0, or
 * an ETCD_E_* code (etcd_client_last_error(c) says why); *out is
 * filled either way (empty on failure). A malformed value is skipped
 * (the keeper will rewrite it), never fatal. */
int cli_cell_read(etcd_client *c, const char *name, cli_cell *out);

/* The node called name, or NULL. */
const cli_cell_member *cli_cell_find(const cli_cell *cell, const char *name);

/* Role shown for m: "leader" (named by the leader key and writable;
 * "leader(promoting)", "leader(not writable)" or "leader(down)" while
 * it is not yet or no longer writable), "primary!"
 * (writable without the key: should never last), "standby", "down"
 * (keeper up, PostgreSQL not running) or "unreachable" (no member key). */
const char *cli_cell_role(const cli_cell *cell, const cli_cell_member *m);

/* Bytes m's flush LSN is behind the leader's published one; -1 when
 * there is no leader or either LSN is unknown. 0 for the leader. */
int64_t cli_cell_lag_bytes(const cli_cell *cell, const cli_cell_member *m);

/* The node m streams from, by matching its upstream host/port with the
 * members' ("" when none; the raw conninfo host:port when no member
 * matches). */
void cli_cell_upstream_name(const cli_cell *cell, const cli_cell_member *m, char *out,
                            size_t out_size);

/* PostgreSQL's X/Y notation of an LSN. */
void cli_cell_lsn_format(uint64_t lsn, char *out, size_t out_size);

/* ms since the epoch as ISO-8601 UTC with milliseconds
 * ("2024-05-01T12:00:00.123Z"); "-" for 0. */
void cli_cell_iso8601(int64_t ms, char *out, size_t out_size);

/* When the cell has no leader: whether each synchronous-set member may
 * be promoted by what the members published (the keeper's own rule,
 * keeper_may_promote), and why not. Writes up to max entries; returns
 * how many. why points to static text or is NULL when it may. */
typedef struct cli_cell_candidate {
    char node[KEEPER_NAME_MAX];
    bool may_promote;
    const char *why;
} cli_cell_candidate;
size_t cli_cell_candidates(const cli_cell *cell, cli_cell_candidate *out, size_t max);

/* The status report. Text on out; JSON as a new object (NULL on OOM)
 * with the keys documented in docs/OPERATIONS.md ("meridianctl
 * status"). endpoints is printed as given. */
void cli_cell_status_print(FILE *out, const cli_cell *cell, const char *endpoints);
json_t *cli_cell_status_json(const cli_cell *cell, const char *endpoints);

/* Read every history event of the cell, sorted by epoch, into a new
 * array (*out, free() it; NULL when none). Returns 0 or an ETCD_E_*
 * code (ETCD_E_LIMIT past CLI_CELL_HISTORY_MAX). */
int cli_cell_history_read(etcd_client *c, const char *name, cli_cell_event **out,
                          size_t *count);

/* May the cell be switched over to `to`? Returns 0, or -1 with the
 * refusal (what is wrong and what to do) in err: no leader, unknown
 * node, already the leader, not present/healthy/streaming, not in the
 * synchronous set. */
int cli_cell_switchover_check(const cli_cell *cell, const char *to, char *err,
                              size_t err_size);

/* Does m stream from the cell's current leader? By the leader's own
 * pg_stat_replication when it publishes it ("replicas"), else by m's key
 * (streaming, upstream naming the leader). */
bool cli_cell_streams_from_leader(const cli_cell *cell, const cli_cell_member *m);

/* Regions named by any node of any cell (registry and member keys under
 * /meridian/), sorted, at most max of CLI_CELL_REGION_BYTES each.
 * Returns 0 with *count set, or an ETCD_E_* code (ETCD_E_LIMIT when the
 * key space is too large to scan). */
#define CLI_CELL_REGION_BYTES 64
int cli_cell_known_regions(etcd_client *c, char (*out)[CLI_CELL_REGION_BYTES], size_t max,
                           size_t *count);

/* `switchover --to-region`: the best node of the cell in region to lead
 * — present, healthy, running, streaming from the current leader, in the
 * synchronous set; of those, the most advanced flush LSN (ties: the
 * smaller name). known_regions (may be NULL when unknown) tells "unknown
 * region" apart from "no node of the cell there". Returns 0 with the node
 * in to, or -1 with the refusal in err (what failed, why, what to do):
 * no leader, unknown region, the leader is in region already, no node of
 * the cell there, none ready (each node's state and what it lacks). */
int cli_cell_switchover_pick(const cli_cell *cell, const char *region,
                             const char (*known_regions)[CLI_CELL_REGION_BYTES],
                             size_t known_count, char *to, size_t to_size, char *err,
                             size_t err_size);

/* Write the switchover request {"to","requested_at_ms"} under a fresh
 * CLI_CELL_SWITCHOVER_LEASE_S lease, only if no request exists. On
 * success *lease_id and *requested_at_ms are set and *created tells
 * whether it was written; when not, the lease is revoked and
 * existing_to (may be NULL) receives the pending request's target.
 * Returns 0 or an ETCD_E_* code. */
int cli_cell_switchover_request(etcd_client *c, const char *cell, const char *to,
                                int64_t *lease_id, int64_t *requested_at_ms,
                                bool *created, char *existing_to, size_t existing_size);

/* Sleep ms milliseconds (an interrupted sleep returns early). */
void cli_cell_sleep_ms(int ms);

/* The value of --timeout-s: def when text is NULL, else a whole number
 * of seconds in 1..max. Returns 0 with *out set, or -1 (the caller
 * prints the usage error). */
int cli_cell_timeout_s_parse(const char *text, long def, long max, long *out);

#endif
