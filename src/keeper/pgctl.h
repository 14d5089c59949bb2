/*
 * pgctl.h — the keeper's hands on its local PostgreSQL 15.
 *
 * Everything the state machine's actions need: initdb, pg_basebackup,
 * start/stop, promote, pg_rewind, reading the node's state (role,
 * timeline, LSNs), and changing synchronous_standby_names and
 * primary_conninfo at run time (ALTER SYSTEM + pg_reload_conf: both are
 * reloadable in PostgreSQL 15, so a standby follows a new primary without
 * a restart). PostgreSQL refuses to run as root: when the keeper runs as
 * root, every server binary is started as run_as_user (the Debian
 * `postgres` user) via fork + setgid/setuid + exec. Commands are bounded
 * by a timeout and their output goes to DATADIR/../<cmd>.log.
 */
#ifndef MERIDIAN_KEEPER_PGCTL_H
#define MERIDIAN_KEEPER_PGCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pgctl_config {
    const char *bindir;      /* /usr/lib/postgresql/15/bin */
    const char *basedir;     /* node directory: data/ and logs live under it */
    const char *run_as_user; /* used when running as root; NULL = "postgres" */
    const char *node_name;   /* application_name when streaming */
    int port;                /* 127.0.0.1:port */
    const char *database;    /* for pgctl_exec; NULL = "postgres" */
} pgctl_config;

typedef struct pgctl_state {
    bool running;
    bool in_recovery;
    uint32_t timeline;
    uint64_t flush_lsn;   /* primary: current flush LSN; standby: received+flushed */
    uint64_t replay_lsn;  /* standby: replayed */
    bool receiving;       /* standby: its WAL receiver is streaming (pg_stat_wal_receiver) */
    char upstream[256];   /* standby: primary_conninfo in force ("" when none) */
    char sync_names[256]; /* primary: synchronous_standby_names */
} pgctl_state;

/* Create DATADIR with data checksums, trust auth on 127.0.0.1 only, a
 * replication-ready configuration on cfg->port. Returns 0 or -1 with a
 * reason in err. */
int pgctl_initdb(const pgctl_config *cfg, char *err, size_t err_size);

/* Clone a running primary into an empty DATADIR (pg_basebackup -X stream
 * -R, application_name = node_name) and set this node's port. */
int pgctl_basebackup(const pgctl_config *cfg, const char *primary_host, int primary_port,
                     char *err, size_t err_size);

/* Start (waiting until it accepts connections, at most timeout_ms) and
 * stop ("fast" or "immediate"). Stopping a stopped server is success. */
int pgctl_start(const pgctl_config *cfg, int timeout_ms, char *err, size_t err_size);
int pgctl_stop(const pgctl_config *cfg, const char *mode, int timeout_ms, char *err,
               size_t err_size);

/* Configure a stopped data directory to start as a standby of host:port
 * (standby.signal + primary_conninfo; host NULL = no upstream yet). */
int pgctl_configure_standby(const pgctl_config *cfg, const char *host, int port, char *err,
                            size_t err_size);

/* True when the data directory exists (PG_VERSION) / is set up as a
 * standby (standby.signal). */
bool pgctl_data_exists(const pgctl_config *cfg);
bool pgctl_is_standby_dir(const pgctl_config *cfg);

/* Make a stopped former primary a standby of source (pg_rewind, then
 * standby.signal and primary_conninfo). */
int pgctl_rewind(const pgctl_config *cfg, const char *source_host, int source_port,
                 char *err, size_t err_size);

/* Before pgctl_rewind, on a stopped data directory: if it was not shut
 * down cleanly (a fenced primary is stopped with an immediate shutdown),
 * finish crash recovery in single-user mode, so its WAL is complete and
 * pg_rewind accepts it. Then *end_lsn = where its local WAL ends, as far
 * as pg_controldata tells (the later of the last checkpoint and the
 * minimum recovery ending location; a lower bound by the length of one
 * record). Returns 0, or -1 with the reason in err. */
int pgctl_prepare_rewind(const pgctl_config *cfg, uint64_t *end_lsn, char *err, size_t err_size);

/* Where the history of the server at host:port (on timeline
 * leader_tli) left timeline tli: the switch point recorded in its
 * timeline history file (read with pg_read_file as the superuser).
 * Returns 0 with *lsn set; 1 when tli is not in that history at all (the
 * two histories share nothing after some earlier point: rewinding is the
 * only way); -1 when it cannot be read (unreachable, no such file). */
int pgctl_timeline_switchpoint(const char *host, int port, uint32_t leader_tli, uint32_t tli,
                               uint64_t *lsn);

/* After pgctl_rewind: where the source and target histories diverged,
 * from pg_rewind's log ("servers diverged at WAL location X/Y"). Returns
 * 0 with *lsn set, or -1 when the last rewind found nothing to rewind or
 * the log cannot be read. */
int pgctl_last_rewind_divergence(const pgctl_config *cfg, uint64_t *lsn);

/* Read the node's state. A stopped or unreachable server gives 0 with
 * running = false (and, when stopped, flush_lsn = its last checkpoint's
 * LSN). Returns -1 only on a programming error. */
int pgctl_read_state(const pgctl_config *cfg, pgctl_state *out);

/* Promote the standby (pg_promote without its 100 ms wait loop; the end
 * of recovery is polled every 10 ms). Returns 0 once the node is
 * writable, -1 with err set when refused or not done within timeout_s. */
int pgctl_promote(const pgctl_config *cfg, int timeout_s, char *err, size_t err_size);

/* ALTER SYSTEM + reload. conninfo "" detaches a standby (stops its WAL
 * receiver, so it acknowledges nothing). */
int pgctl_set_primary_conninfo(const pgctl_config *cfg, const char *host, int port,
                               char *err, size_t err_size);
int pgctl_set_sync_names(const pgctl_config *cfg, const char *value, char *err,
                         size_t err_size);

/* Run SQL on the local node (superuser) in cfg->database. For the epoch
 * record and tests. */
int pgctl_exec(const pgctl_config *cfg, const char *sql, char *err, size_t err_size);

/* "16/B374D848" -> 64-bit LSN. Returns 0 or -1. */
int pgctl_parse_lsn(const char *text, uint64_t *out);

#endif
