/*
 * drill.h — failover drills: `meridianctl drill node-loss | db-crash |
 * isolate-primary` (issue 3, item 9; docs/DRILLS.md).
 *
 * A drill runs a bank workload (workload.h) through the meridiand
 * processes of a cell started by scripts/cell.sh (cell.h), injects one
 * fault on the cell's leader, keeps the workload going until writes have
 * been acknowledged again for a few seconds, then measures what the issue
 * asks for: detection and promotion times (from the keepers' history in
 * etcd), RTO (fault -> first acknowledged transfer on the new primary),
 * RPO (acknowledged transfers missing afterwards, checked in the leader's
 * database) and every invariant (check.h). The report (report.h) is a
 * JSON object and a human summary.
 *
 * Everything is bounded: runs, clients, accounts, acknowledgements kept,
 * the wait for recovery (DRILL_RTO_LIMIT_MS: past it the run fails) and
 * every child process (cell.sh) has a deadline. The limits of this part
 * live here rather than in common/limits.h because nothing else uses
 * them.
 */
#ifndef MERIDIAN_DRILL_H
#define MERIDIAN_DRILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/* --- Limits and defaults. */
#define DRILL_RUNS_MAX 100
#define DRILL_CLIENTS_DEFAULT 8
#define DRILL_CLIENTS_MAX 64
#define DRILL_READERS_DEFAULT 2
#define DRILL_READERS_MAX 16
#define DRILL_ACCOUNTS_DEFAULT 10
#define DRILL_ACCOUNTS_MIN 3
#define DRILL_ACCOUNTS_MAX 64
/* --rate: new transfers per second over all writers (0: closed loop). */
#define DRILL_RATE_MAX 100000
/* meridiand processes the drill's own cell runs, and at most used. */
#define DRILL_MERIDIAND_DEFAULT 2
#define DRILL_URLS_MAX 8
/* Acknowledged transfers one run remembers; writers stop issuing new
 * transfers past it (counted as `ack_log_full`). */
#define DRILL_ACKS_MAX 1000000
/* Workload before the fault; acknowledged writes wanted after it. */
#define DRILL_WARMUP_MS 3000
#define DRILL_SETTLE_MS 3000
/* No acknowledged write this long after the fault: the run fails. */
#define DRILL_RTO_LIMIT_MS 60000
/* One transfer is retried (same id) at most this long, then given up
 * ("unresolved": its outcome is not known to the client). */
#define DRILL_TRANSFER_DEADLINE_MS 90000
/* One HTTP exchange with meridiand (it may hold a request through a
 * failover for its failover_wait_ms, 15 s by default). */
#define DRILL_HTTP_TIMEOUT_MS 20000
#define DRILL_HTTP_CONNECT_TIMEOUT_MS 1000
/* Largest answer read from meridiand (GET /v1/balances). */
#define DRILL_RESPONSE_BYTES_MAX (8u * 1024u * 1024u)
/* Waits on the cell. */
#define DRILL_HEALTHY_WAIT_S 120
#define DRILL_CELL_UP_TIMEOUT_MS 300000
#define DRILL_CELL_CMD_TIMEOUT_MS 150000
/* Longest path the drill builds. */
#define DRILL_PATH_MAX 1024

_Static_assert(DRILL_SETTLE_MS < DRILL_RTO_LIMIT_MS, "settling must fit in the RTO bound");
_Static_assert(DRILL_HTTP_TIMEOUT_MS < DRILL_TRANSFER_DEADLINE_MS,
               "a transfer must get several attempts");

/* Exit codes of a drill (the command returns them). */
#define DRILL_EXIT_PASS 0
#define DRILL_EXIT_FAIL 1        /* an invariant broke, RTO over the bound, or setup failed */
#define DRILL_EXIT_UNAVAILABLE 2 /* the scenario cannot run here (no `cell.sh isolate`) */

typedef enum {
    DRILL_NODE_LOSS = 0,   /* SIGKILL the leader's keeper and postmaster */
    DRILL_DB_CRASH,        /* SIGKILL the leader's postmaster only */
    DRILL_ISOLATE_PRIMARY, /* cut the leader's keeper off from etcd */
    DRILL_REGION_LOSS,     /* lab only: lose the home region of cell us (us-east) */
    DRILL_AZ_LOSS,         /* lab only: lose the zone of cell us's leader */
    DRILL_DB_FAILURE,      /* lab only: the leader's node, then every us-east node of cell us */
    DRILL_PARTITION,       /* lab only: cut us-east off, then heal */
    DRILL_ETCD_MAJORITY_LOSS, /* lab only: freeze two of the three etcd members, then heal */
} drill_scenario;

/* --- Lab drills (`--lab`, scripts/lab.sh, docs/LAB.md): the cell
 * drilled, the region lost, and the bounds. A regional failover waits
 * for the home leader's lease (6 s in the lab) and the policy's
 * region_failover_after_s (10 s) before the DR standby promotes, and
 * the global entry's health checks then move traffic: hence the longer
 * bound for writes to come back. */
#define DRILL_LAB_CELL "us"
#define DRILL_LAB_HOME_REGION "us-east"
#define DRILL_REGION_RTO_LIMIT_MS 120000
/* Loss bound when the topology names no max_loss_s for the cell. */
#define DRILL_REGION_LOSS_BOUND_DEFAULT_MS 1000
#define DRILL_LAB_UP_TIMEOUT_MS 400000
#define DRILL_LAB_CMD_TIMEOUT_MS 150000

/* Parse "node-loss", "db-crash", "isolate-primary", "region-loss",
 * "az-loss", "db-failure", "partition", "etcd-majority-loss". Returns 0
 * or -1. */
int drill_scenario_parse(const char *name, drill_scenario *out);
/* The scenario's name (static). */
const char *drill_scenario_name(drill_scenario s);

typedef struct drill_options {
    drill_scenario scenario;
    int runs;               /* 1..DRILL_RUNS_MAX */
    const char *cell_dir;   /* a running cell, or NULL: start one in /tmp */
    const char *build_dir;  /* where meridian-keeper, meridiand, meridianctl are */
    const char *source_dir; /* holds scripts/cell.sh; NULL: env, then compiled in */
    int clients;            /* writer threads */
    int readers;            /* reader threads */
    int accounts;           /* accounts per run */
    bool keep;              /* keep a drill-made cell (and its logs) */
    bool lab;               /* drill the two-region lab (region-loss needs it) */
    const char *lab_dir;    /* a running lab (then runs == 1), or NULL: `lab up` one
                             * per run in /tmp */
    int rate_per_s;         /* 0: writers in a closed loop; else paced to this many
                             * new transfers per second (0..DRILL_RATE_MAX) */
} drill_options;

/* Does the scenario run on the two-region lab (`--lab`) rather than on
 * a single cell? */
bool drill_scenario_needs_lab(drill_scenario s);

/* Defaults: node-loss, 1 run, DRILL_*_DEFAULT. */
void drill_options_init(drill_options *o);

/* Run the drill described by o. Progress goes to stderr. On return
 * *report (never NULL unless out of memory; the caller decrefs it) holds
 * the report (report.h), also when the drill could not start (then with
 * "error"). Returns DRILL_EXIT_PASS, DRILL_EXIT_FAIL or
 * DRILL_EXIT_UNAVAILABLE. A cell the drill started is stopped and removed
 * before returning, also after SIGINT/SIGTERM (which end the drill early,
 * failed). */
int drill_run(const drill_options *o, json_t **report);

/* Where scripts/cell.sh is: o->source_dir, else $MERIDIAN_SOURCE_DIR,
 * else the source tree this binary was built from. Writes the path into
 * out and returns 0, or -1 with a hint in err when none holds it. */
int drill_locate_cell_script(const char *source_dir, char *out, size_t out_size, char *err,
                             size_t err_size);


/* true once SIGINT or SIGTERM arrived during drill_run. */
bool drill_interrupted(void);

/* Progress line on stderr: "[drill   12.3s] " + the message. */
void drill_progress(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
