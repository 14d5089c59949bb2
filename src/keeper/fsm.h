/*
 * fsm.h — the keeper's decisions, as a table.
 *
 * One meridian-keeper runs beside each PostgreSQL node. Every loop it
 * builds a keeper_view (what etcd says about the cell, what its own
 * PostgreSQL says, the local monotonic clock) and asks keeper_fsm_step
 * what to do. The decision logic is pure — no I/O, no clock of its own —
 * so it is tested with a fake clock, a fake etcd and a fake PostgreSQL
 * (tests/unit/test_keeper_fsm.c), and the same table drives the real
 * keeper. The rules are written as rows {from, to, why, guard, action}
 * (pg_auto_failover's fsm.c): the first row of the current state whose
 * guard holds wins; `meridianctl keeper fsm --dot` prints the table as a
 * Graphviz graph.
 *
 * The rules that make failover safe (docs/FAILOVER.md):
 *  - Only the holder of the cell's leader key (created under a lease by
 *    an etcd transaction that also bumps the epoch) may run a writable
 *    PostgreSQL.
 *  - A primary fences itself (stops PostgreSQL) once its lease may have
 *    expired by its own clock: lease_valid_until_ms is computed from the
 *    time the last successful keepalive was *sent*, minus a safety
 *    margin, so the primary stops before etcd can grant the lease to
 *    anyone else.
 *  - Only members of the synchronous set (the nodes that may hold every
 *    acknowledged commit, recorded in etcd before the primary changes
 *    synchronous_standby_names) may be promoted, and only when every
 *    other member of that set is known (so the most advanced can be
 *    chosen); otherwise nothing is promoted and the reason is published.
 *  - A standby whose keeper cannot reach etcd stops acknowledging
 *    (detaches from the primary), so an isolated primary cannot get a
 *    commit acknowledged.
 */
#ifndef MERIDIAN_KEEPER_FSM_H
#define MERIDIAN_KEEPER_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KEEPER_NODES_MAX 8
#define KEEPER_NAME_MAX 32

typedef enum {
    KEEPER_INIT = 0,   /* just started: nothing decided */
    KEEPER_BOOTSTRAP,  /* creating the cell's first primary (initdb) */
    KEEPER_CLONE,      /* copying the primary (pg_basebackup) */
    KEEPER_STANDBY,    /* streaming from the leader */
    KEEPER_DETACHED,   /* standby cut off from etcd: not acknowledging */
    KEEPER_PROMOTING,  /* won the leader key; promoting PostgreSQL */
    KEEPER_PRIMARY,    /* leader: writable, renewing the lease */
    KEEPER_FENCED,     /* was primary, lost (or may have lost) the lease */
    KEEPER_REWIND,     /* old primary rejoining with pg_rewind */
    KEEPER_STATE_COUNT
} keeper_state;

typedef enum {
    KEEPER_ACT_NONE = 0,
    KEEPER_ACT_INITDB_AND_LEAD, /* claim the cell, initdb, start, take the lease */
    KEEPER_ACT_BASEBACKUP,      /* pg_basebackup from the leader, start as standby */
    KEEPER_ACT_START_STANDBY,   /* start PostgreSQL as a standby of the leader */
    KEEPER_ACT_FOLLOW,          /* point primary_conninfo at the leader, reload */
    KEEPER_ACT_DETACH,          /* empty primary_conninfo, reload: stop acknowledging */
    KEEPER_ACT_ACQUIRE,         /* etcd txn: leader key + epoch+1 */
    KEEPER_ACT_PROMOTE,         /* pg_promote(), record epoch in the database */
    KEEPER_ACT_RENEW,           /* keep the lease alive, manage the sync set */
    KEEPER_ACT_START_PRIMARY,   /* start PostgreSQL (crash restart while leader) */
    KEEPER_ACT_FENCE,           /* stop PostgreSQL now (immediate) */
    KEEPER_ACT_REWIND,          /* pg_rewind from the leader, then start as standby */
    KEEPER_ACT_HANDOVER,        /* planned switchover: stop cleanly, publish, revoke the lease */
    KEEPER_ACT_COUNT
} keeper_action;

/* What this keeper knows about another member (from its etcd key). */
typedef struct keeper_member {
    char name[KEEPER_NAME_MAX];
    bool present;         /* its member key (under its lease) exists */
    bool healthy;         /* its PostgreSQL answers */
    bool is_primary;      /* reports itself writable */
    uint32_t timeline;
    uint64_t flush_lsn;   /* standbys: received and flushed; primary: current */
    bool streaming;       /* connected to the current leader and replicating */
    uint64_t lag_bytes;   /* behind the leader's current LSN */
    bool fresh;           /* published after the leader key vanished (etcd
                           * revision order), so flush_lsn is final */
    bool is_dr;           /* a cross-region disaster-recovery standby */
} keeper_member;

/* What a cell's policy allows across regions (DESIGN.md "Regions,
 * failover and routing"). */
typedef enum {
    KEEPER_REGION_FAILOVER_MANUAL = 0,  /* only on an operator's request */
    KEEPER_REGION_FAILOVER_AUTOMATIC,   /* after the home region is lost for a while */
} keeper_region_policy;

/* Everything a decision may depend on. Built by the keeper each loop
 * (or by a test). */
typedef struct keeper_view {
    int64_t now_ms; /* monotonic */
    char self[KEEPER_NAME_MAX];

    /* etcd */
    bool etcd_ok;             /* the last round trip succeeded */
    int64_t etcd_ok_at_ms;    /* when it last succeeded */
    bool cell_initialized;    /* the cell's init key exists */
    bool leader_present;
    char leader[KEEPER_NAME_MAX];
    int64_t epoch;            /* current epoch (0 before the first leader) */
    char last_leader[KEEPER_NAME_MAX]; /* who held the key last ("" = nobody) */
    char switchover_to[KEEPER_NAME_MAX]; /* planned switchover target ("" = none) */
    bool holds_lease;         /* this keeper holds the leader key's lease */
    int64_t lease_valid_until_ms; /* see file comment; 0 when none */
    size_t syncset_count;     /* nodes that may hold every acknowledged commit */
    char syncset[KEEPER_NODES_MAX][KEEPER_NAME_MAX];
    size_t member_count;      /* the other members */
    keeper_member members[KEEPER_NODES_MAX];

    /* local PostgreSQL */
    bool pg_data_exists;
    bool pg_running;
    bool pg_in_recovery;
    bool pg_follows_leader;   /* primary_conninfo names the current leader */
    bool pg_was_primary;      /* data dir was a primary on a timeline the leader left */
    bool pg_diverged;         /* a running standby whose replayed WAL goes past the point
                               * where the leader's timeline left its own (the leader was
                               * promoted while this node still received WAL from the old
                               * primary, e.g. a regional failover): streaming from the
                               * leader cannot work, only pg_rewind brings it back */
    uint32_t pg_timeline;
    uint64_t pg_flush_lsn;

    /* cross-region disaster recovery (see fsm.c, "regional failover") */
    bool self_is_dr;          /* this node is its cell's DR standby */
    keeper_region_policy region_policy;
    int64_t region_failover_after_ms; /* home region gone this long -> automatic */
    int64_t max_loss_ms;      /* automatic only if the DR standby lagged at most this */
    int64_t home_lost_ms;     /* how long no home-region member nor leader was seen */
    int64_t dr_lag_ms;        /* DR: how far behind it was when the leader was lost */
    char failover_to[KEEPER_NAME_MAX]; /* operator's regional failover request */

    /* tuning */
    int64_t etcd_lost_detach_ms; /* standby detaches after this long without etcd */
} keeper_view;

typedef bool (*keeper_guard)(const keeper_view *v);

typedef struct keeper_transition {
    keeper_state from;
    keeper_state to;
    const char *why;
    keeper_guard guard;
    keeper_action action;
} keeper_transition;

/* The table, and its size. Rows of one state are contiguous and tried
 * in order. */
extern const keeper_transition keeper_fsm_table[];
extern const size_t keeper_fsm_table_count;

/* The decision for the current state: the first matching row, or NULL
 * when the keeper should stay where it is and do its state's routine
 * (RENEW for a primary, nothing otherwise). Pure. */
const keeper_transition *keeper_fsm_step(keeper_state cur, const keeper_view *v);

/* May this node be promoted without losing an acknowledged commit?
 * True when self is in the synchronous set, every other member of the
 * set is present and healthy with a known LSN (or is the failed leader),
 * and no such member is more advanced (ties: the smaller name wins).
 * When false and why is not NULL, *why names the reason (static text). */
bool keeper_may_promote(const keeper_view *v, const char **why);

/* DR-aware fencing (docs/FAILOVER.md "Partition and failback"): must a
 * writable primary fence now? Yes when dr_fence_ms > 0 and, for at least
 * dr_fence_ms, etcd has not answered (etcd_answered_ms) and the DR
 * standbys have not confirmed WAL (dr_confirmed_ms) — but not when the DR
 * standbys have been silent for two leases or more (they lag too far to
 * be promoted automatically). Times in ms on one monotonic clock. */
bool keeper_dr_fence_due(int64_t now_ms, int64_t etcd_answered_ms, int64_t dr_confirmed_ms,
                         int dr_fence_ms, int lease_ttl_s);

const char *keeper_state_name(keeper_state s);
const char *keeper_action_name(keeper_action a);

/* Write the table as a Graphviz digraph into buf. Returns the length it
 * needed (snprintf semantics). */
size_t keeper_fsm_dot(char *buf, size_t size);

#endif
