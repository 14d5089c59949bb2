/*
 * cli_region.h — what `meridianctl failover` and `meridianctl residency
 * scan` know (issue 4 items 5 and 11; DESIGN.md "Regions, failover and
 * routing", invariant 4).
 *
 * Three parts, none of which knows argv (the handlers are in
 * cmd_region.c):
 *   - a cell's regional layout as its keepers publish it in etcd
 *     (/meridian/<cell>/: leader, members/, nodes/, failover,
 *     history/ — src/keeper/keeper.c): which nodes are DR standbys, in
 *     which region, how far behind; the loss bound of promoting one; the
 *     manual regional failover request the DR standby's keeper acts on;
 *   - the lab's own records (scripts/lab.sh, docs/LAB.md): DIR/env
 *     (ports, paths), DIR/procs (every process, its region and cell),
 *     DIR/cmd/<name> (command lines);
 *   - the residency scan: observed placements of each cell's data in a
 *     running lab (data directories, replication connections, WAL
 *     receivers, meridiand and their configs and logs, backup
 *     repositories and caches when the lab runs any), judged by
 *     topology_residency_violations against the topology the lab was
 *     started with.
 * What it reports is what it observed; anything it could not reach is
 * listed as unreachable, never assumed fine.
 */
#ifndef MERIDIAN_CLI_REGION_H
#define MERIDIAN_CLI_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "cli/cli_cell.h"
#include "etcd/etcd.h"
#include "topology/topology.h"

/* Lease of a regional failover request: the DR standby's keeper must act
 * within it, or the request lapses by itself. */
#define CLI_REGION_FAILOVER_LEASE_S 60
/* WAL one transfer writes, for the loss estimate: the requirements'
 * 5 KB average transfer plus its rows, index entries and record headers
 * (about 6 KB). An estimate, printed as one. */
#define CLI_REGION_TRANSFER_WAL_BYTES 6144
/* Exit code of `failover` without --yes: the bound was printed, nothing
 * was done. */
#define CLI_REGION_EXIT_CONFIRM 3
/* Text fields. */
#define CLI_REGION_TEXT_BYTES 64
#define CLI_REGION_PATH_BYTES 1024
#define CLI_REGION_EVIDENCE_BYTES 320
#define CLI_REGION_NOTE_BYTES 320

/* ---- A cell's regional layout in etcd. */

/* The cell is read with cli_cell_read (cli_cell.h): a member's dr,
 * lag_bytes and dr_lag_ms and the cell's leader_region and failover
 * request are what this part uses. */

/* The cell's DR standby in region (role dr, that region), or NULL. */
const cli_cell_member *cli_region_dr_in(const cli_cell *cell, const char *region);

/* What promoting dr may lose. */
typedef struct cli_region_bound {
    bool known;                   /* both LSNs known: gap_bytes is meaningful */
    uint64_t leader_lsn;          /* last known leader flush LSN */
    char leader_lsn_source[160];  /* where it came from, for the operator */
    uint64_t dr_lsn;              /* the DR standby's flush LSN */
    uint64_t gap_bytes;           /* leader_lsn - dr_lsn (0 when not behind) */
    int64_t dr_lag_ms;            /* the DR standby's published lag; -1 unknown */
    uint64_t transfers_estimate;  /* ceil(gap / CLI_REGION_TRANSFER_WAL_BYTES) */
    int64_t as_of_ms;             /* wall clock of the DR member key; 0 unknown */
} cli_region_bound;

/* The loss bound of promoting dr: the last known leader flush LSN is the
 * highest of the leader's member key, every published member LSN, and
 * what dr last saw of the leader (its flush LSN + lag_bytes, frozen when
 * the leader vanished); minus dr's flush LSN. Pure. */
void cli_region_loss_bound(const cli_cell *cell, const cli_cell_member *dr,
                           cli_region_bound *out);

/* Write /meridian/<cell>/failover = {"to","requested_at_ms"} under a
 * fresh CLI_REGION_FAILOVER_LEASE_S lease, only if no request exists.
 * *created says whether it was written; when not, the lease is revoked
 * and existing_to (may be NULL) receives the pending request's target.
 * Returns 0 or an ETCD_E_* code. */
int cli_region_failover_request(etcd_client *c, const char *cell, const char *to,
                                int64_t *lease_id, int64_t *requested_at_ms, bool *created,
                                char *existing_to, size_t existing_size);

/* One history event (history/<epoch>, zero-padded). Times 0 unknown. */
typedef struct cli_region_event {
    int64_t epoch;
    char kind[32];                /* bootstrap|failover|switchover|regional_failover */
    char node[KEEPER_NAME_MAX];
    int64_t leader_lost_at_ms;
    int64_t acquired_at_ms;
    int64_t promoted_at_ms;
} cli_region_event;

/* Read the event of one epoch. Returns 0, ETCD_E_NOT_FOUND, or another
 * ETCD_E_* code. */
int cli_region_event_get(etcd_client *c, const char *cell, int64_t epoch,
                         cli_region_event *out);

/* ---- The lab's records. */

/* One process of DIR/procs (NAME|KIND|REGION|ZONE|CELL|PIDFILE). */
typedef struct cli_region_proc {
    char name[96];
    char kind[24];
    char region[CLI_REGION_TEXT_BYTES];
    char zone[CLI_REGION_TEXT_BYTES];
    char cell[CLI_REGION_TEXT_BYTES];
    char pidfile[CLI_REGION_PATH_BYTES];
    int pid;                      /* 0 when not running */
    bool alive;                   /* pid alive and its command line names DIR */
} cli_region_proc;

typedef struct cli_region_lab_var {
    char name[96];
    char value[CLI_REGION_PATH_BYTES];
} cli_region_lab_var;

typedef struct cli_region_lab {
    char dir[CLI_REGION_PATH_BYTES];
    size_t var_count;
    cli_region_lab_var *vars;     /* owned */
    size_t proc_count;
    cli_region_proc *procs;       /* owned */
} cli_region_lab;

/* The lab directory scripts/lab.sh uses by default: $LAB_DIR, else
 * <source>/.lab, else /var/tmp/meridian-lab-<hash of the source path>,
 * whichever holds an env file (the first candidate when none does).
 * Returns 0, or -1 with the reason in err. */
int cli_region_lab_default_dir(char *out, size_t out_size, char *err, size_t err_size);

/* Read DIR/env (bash `%q` values unquoted) and DIR/procs (with each
 * process's liveness). Returns 0, or -1 with the reason in err (no lab
 * there, a lab that is down, unreadable files). Free with
 * cli_region_lab_close. */
int cli_region_lab_open(const char *dir, cli_region_lab *out, char *err, size_t err_size);
void cli_region_lab_close(cli_region_lab *lab);

/* The value of variable name in DIR/env, or NULL. */
const char *cli_region_lab_var_get(const cli_region_lab *lab, const char *name);
/* The process called name, or NULL. */
const cli_region_proc *cli_region_lab_proc(const cli_region_lab *lab, const char *name);
/* lab.sh's variable name of an object name: "us-n1" -> "US_N1". */
void cli_region_lab_vn(const char *name, char *out, size_t out_size);

/* ---- The residency scan. */

/* One object found holding a cell's data. */
typedef struct cli_region_object {
    char kind[24];                /* data-directory, replication, wal-receiver,
                                     meridiand, log, backup, cache */
    char object[TOPOLOGY_OBJECT_BYTES];
    char cell[CLI_REGION_TEXT_BYTES];
    char region[CLI_REGION_TEXT_BYTES];
    char evidence[CLI_REGION_EVIDENCE_BYTES]; /* how cell and region were established */
    bool live;                    /* a running process / open connection (else at rest) */
    bool cross_region;            /* replication that crosses regions */
    bool allowed;
    const char *rule;             /* the rule broken when !allowed (static) */
    char detail[TOPOLOGY_MESSAGE_BYTES];
} cli_region_object;

#define CLI_REGION_SCAN_OBJECTS_MAX 512
#define CLI_REGION_SCAN_NOTES_MAX 128

typedef struct cli_region_scan {
    char lab_dir[CLI_REGION_PATH_BYTES];
    char topology_path[CLI_REGION_PATH_BYTES];
    char topology_name[TOPOLOGY_NAME_BYTES];
    bool etcd_ok;                 /* the node registry was read */
    size_t object_count;
    cli_region_object *objects;   /* owned */
    size_t unreachable_count;     /* things that could not be checked */
    char (*unreachable)[CLI_REGION_NOTE_BYTES];
    size_t not_running_count;     /* object kinds the lab does not run */
    char (*not_running)[CLI_REGION_NOTE_BYTES];
    /* Counts by kind. */
    size_t data_directories, nodes_alive, replication, replication_cross_region,
        wal_receivers, meridiand, logs, backups, caches;
    size_t violation_count;
} cli_region_scan;

/* Scan the lab in lab_dir against the topology at topology_path (NULL:
 * DIR/topology.json, the normalized copy `lab up` wrote, else the
 * TOPOLOGY file named in DIR/env). Parts of the lab that are down are
 * reported in out->unreachable; the scan itself fails (-1, reason in err)
 * only when there is no lab or no loadable topology. Free with
 * cli_region_scan_free. */
int cli_region_scan_run(const char *lab_dir, const char *topology_path, cli_region_scan *out,
                        char *err, size_t err_size);
void cli_region_scan_free(cli_region_scan *s);

/* The scan as text (a table of every object checked, then the
 * unreachable and not-running parts, then "0 violations" or each
 * violation with its rule) or as a new JSON object (NULL on OOM). */
void cli_region_scan_print(FILE *out, const cli_region_scan *s);
json_t *cli_region_scan_json(const cli_region_scan *s);

#endif
