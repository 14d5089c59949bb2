/*
 * cell.h — the drill's hands on a cell: scripts/cell.sh run as a child
 * process (up, down, wait-healthy and the faults: kill-node, kill-db,
 * isolate/heal, start-node), the cell's env file, and an API key made
 * with meridianctl.
 *
 * Design: the drill never signals cell processes itself; cell.sh knows
 * the PIDs (its files under DIR) and how to stop them, so the drill and
 * the tests inject faults the same way. Each child runs in its own
 * process group (a Ctrl-C meant for the drill does not kill the cell
 * before the drill can take it down), with stdin from /dev/null, its
 * output appended to DIR/drill.log, and a deadline after which the child
 * (only the script, never the daemons it started) is killed by PID.
 */
#ifndef MERIDIAN_DRILL_CELL_H
#define MERIDIAN_DRILL_CELL_H

#include <stdbool.h>
#include <stddef.h>

#include "drill/drill.h"

#define DRILL_CELL_NODES_MAX 8
#define DRILL_CELL_NAME_MAX 64

/* A cell as its DIR/env describes it. */
typedef struct drill_cell {
    char dir[DRILL_PATH_MAX];
    char script[DRILL_PATH_MAX];  /* scripts/cell.sh */
    char build[DRILL_PATH_MAX];   /* BUILD of the env (binaries) */
    char log_path[DRILL_PATH_MAX];/* DIR/drill.log: output of the children */
    char name[DRILL_CELL_NAME_MAX];
    char etcd[1024];              /* ETCD_ENDPOINTS */
    char config[DRILL_PATH_MAX];  /* CONFIG */
    size_t url_count;
    char urls[DRILL_URLS_MAX][128];
    size_t node_count;
    char nodes[DRILL_CELL_NODES_MAX][32];
    int pg_ports[DRILL_CELL_NODES_MAX];
    int lease_ttl_s;              /* lab: the keepers' lease (LEASE_TTL_S); 0 unknown */
    bool dr_fence;                /* lab: home keepers run with --dr-fence-ms (KEEPER_DR_FENCE) */
} drill_cell;

/* Start a new cell in dir (which must exist and hold no cell) with
 * `cell.sh up DIR --meridiand M --build BUILD [--netem]`, then read its
 * env into *c. Returns 0, or -1 with the reason (and the log's path) in
 * err. */
int drill_cell_up(drill_cell *c, const char *script, const char *dir, const char *build,
                  int meridiand, bool netem, char *err, size_t err_size);

/* Read an existing cell's DIR/env into *c. Returns 0 or -1 (err). */
int drill_cell_open(drill_cell *c, const char *script, const char *dir, char *err,
                    size_t err_size);

/* `cell.sh down DIR`. Returns 0 or -1. */
int drill_cell_down(const drill_cell *c);

/* `cell.sh wait-healthy DIR SECONDS`: 0 when the cell has a leader with
 * every other node a streaming synchronous standby, -1 otherwise. */
int drill_cell_wait_healthy(const drill_cell *c, int seconds);

/* `cell.sh VERB DIR NODE` (kill-node, kill-db, start-node, isolate,
 * heal, ...). Returns 0, or -1 with the script's exit status in err. */
int drill_cell_do(const drill_cell *c, const char *verb, const char *node, char *err,
                  size_t err_size);

/* Does the script know `cell.sh VERB` (and, for isolation, `up
 * --netem`)? Reads the script's text. */
bool drill_cell_script_has(const char *script, const char *verb);

/* PostgreSQL port of node, or -1 when the env does not name it. */
int drill_cell_pg_port(const drill_cell *c, const char *node);

/* A customer API key for customer `customer`, made with
 * `BUILD/meridianctl --config CONFIG --dsn DSN apikey create --json`.
 * Returns 0 with the key in key, or -1 (err). */
int drill_cell_apikey(const drill_cell *c, const char *dsn, const char *customer, char *key,
                      size_t key_size, char *err, size_t err_size);

/* --- The two-region lab (scripts/lab.sh, docs/LAB.md) as a "cell":
 * dir is the lab's DIR, script is lab.sh, name the cell drilled, etcd
 * the lab's ETCD_DIRECT, config DIR/cells/<cell>/meridiand.conf and
 * urls[0] the global entry's port for that cell (GLOBAL_<CELL>), so the
 * workload reaches the cell wherever it is served. node_count is 0. */

/* Start a lab with `lab.sh up --dir DIR` (DIR is emptied or created by
 * lab.sh; binaries from build, passed as $MERIDIAN_BIN_DIR), then open
 * it. The children's output goes to DIR.drill.log (beside DIR). Returns
 * 0, or -1 with the reason in err. */
int drill_lab_up(drill_cell *c, const char *script, const char *dir, const char *build,
                 const char *cell, char *err, size_t err_size);

/* Read a running lab's DIR/env into *c for cell `cell` (the children's
 * output goes to DIR/logs/drill.log). Returns 0 or -1 (err). */
int drill_lab_open(drill_cell *c, const char *script, const char *dir, const char *build,
                   const char *cell, char *err, size_t err_size);

/* `lab.sh ARGS... ` with `--dir DIR` inserted after the first argument
 * (the subcommand), output appended to c->log_path, bounded by
 * timeout_ms. Returns 0, or -1 with the exit status in err. */
int drill_lab_do(const drill_cell *c, const char *const args[], size_t nargs, int timeout_ms,
                 char *err, size_t err_size);

/* Region and zone of a lab node (DIR/nodes.tsv). Returns 0, or -1 when
 * the lab does not name the node. */
int drill_lab_node_place(const drill_cell *c, const char *node, char *region,
                         size_t region_size, char *zone, size_t zone_size);

/* The nodes of cell `cell` in `region` that are not DR standbys (DIR/
 * nodes.tsv), at most max, into names. Returns the count (0..max), or -1
 * when nodes.tsv cannot be read. */
int drill_lab_cell_nodes(const drill_cell *c, const char *cell, const char *region,
                         char names[][32], size_t max);

/* Remove a directory tree (a drill-made cell). Returns 0 or -1. */
int drill_rmtree(const char *dir);

#endif
