/*
 * syncset.h — how a primary changes its synchronous standbys without
 * ever losing track of who holds the acknowledged commits.
 *
 * The primary commits with synchronous_standby_names = 'ANY 1 (names)':
 * every acknowledged commit is flushed on the primary and on at least
 * one of `names`. Since WAL streams in order, the most advanced of
 * `names` holds every acknowledged commit — provided all of them can be
 * asked. So etcd keeps the *synchronous set* S (a superset of every
 * `names` in force since the last promotion), and a failover promotes
 * only the most advanced member of S, and only when every member of S
 * answers (keeper_may_promote). Changing `names` to a desired D follows
 * three steps, one per call:
 *   1. grow S first: S := S u D in etcd (before PostgreSQL can ack via D);
 *   2. then set PostgreSQL's names := D (reload), noting the LSN L then;
 *   3. shrink S := D only once every member of D has flushed L, i.e.
 *      holds everything acknowledged under the old names.
 * D never becomes empty: with no healthy standby the primary keeps its
 * names and writes wait (durability over availability: invariant 2).
 */
#ifndef MERIDIAN_KEEPER_SYNCSET_H
#define MERIDIAN_KEEPER_SYNCSET_H

#include <stddef.h>
#include <stdint.h>

#include "keeper/fsm.h"

typedef struct keeper_names {
    size_t count;
    char names[KEEPER_NODES_MAX][KEEPER_NAME_MAX];
} keeper_names;

typedef enum {
    KEEPER_SYNC_NOOP = 0,
    KEEPER_SYNC_WRITE_ETCD, /* store names as the cell's synchronous set */
    KEEPER_SYNC_SET_PG,     /* set synchronous_standby_names to names */
} keeper_sync_kind;

typedef struct keeper_sync_plan {
    keeper_sync_kind kind;
    keeper_names names;
} keeper_sync_plan;

/* Standbys that should be synchronous now: present, healthy, streaming
 * from this primary and at most lag_bytes_max behind; sorted by name. */
void keeper_sync_desired(const keeper_view *v, uint64_t lag_bytes_max, keeper_names *out);

/* The next step from (pg_names, etcd set) towards desired. changed_at_lsn
 * is the primary's LSN when pg_names was last set (step 3's L). Pure. */
void keeper_sync_plan_next(const keeper_view *v, const keeper_names *desired,
                           const keeper_names *pg_names, const keeper_names *etcd_set,
                           uint64_t changed_at_lsn, keeper_sync_plan *out);

/* "ANY 1 (\"a\", \"b\")" (names quoted: they may hold hyphens) into buf; "" when names is empty. Returns 0 or -1 when
 * buf is too small. */
int keeper_sync_names_format(const keeper_names *names, char *buf, size_t size);

#endif
