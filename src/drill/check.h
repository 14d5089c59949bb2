/*
 * check.h — what the drill verifies after a fault: the leader's database
 * against what the workload's clients were told (libpq), and the
 * keepers' account of the failover (etcd: leader, epoch, history).
 *
 * The database check is the bank checker of Jepsen-style tests, made
 * exact by client-chosen ids: every acknowledged transfer must be there
 * exactly once with the fields that were sent (else it was lost or
 * changed), every refused one must be absent, no transfer may touch the
 * workload's accounts unless the client sent it, each account's balance
 * must equal the sums recomputed from the transfers table, no limited
 * account may be over its limit, and the workload's ledger must balance.
 */
#ifndef MERIDIAN_DRILL_CHECK_H
#define MERIDIAN_DRILL_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "drill/workload.h"
#include "etcd/etcd.h"

typedef struct drill_db_check {
    int64_t acked;              /* acknowledged transfers checked */
    int64_t acked_found;        /* present (each counted once) */
    int64_t acked_missing;      /* RPO: acknowledged but absent */
    int64_t acked_missing_sent_max_ms; /* latest send time (wall ms) of a missing
                                        * acknowledged transfer's answered attempt; 0: none */
    int64_t acked_missing_answer_min_ms; /* answer times (wall ms) of the missing ones: */
    int64_t acked_missing_answer_max_ms; /* the window of traffic lost; 0: none */
    int64_t acked_doubled;      /* rows beyond the first for one id */
    int64_t acked_mismatched;   /* present with other accounts or amount */
    int64_t refused;            /* refused or 4xx: must be absent */
    int64_t refused_applied;
    int64_t unresolved;         /* outcome unknown to the client */
    int64_t unresolved_applied; /* of those, present (allowed) */
    int64_t rows;               /* transfers touching the workload's accounts */
    int64_t phantom;            /* rows no client request accounts for */
    int64_t accounts_missing;
    int64_t balance_mismatches; /* balance != sums of its transfers */
    int64_t limit_violations;   /* limited account with debits > credits */
    bool ledger_balanced;       /* sum of debits == sum of credits */
    char first_problem[256];    /* "" when none */
} drill_db_check;

/* Invariant violations found by a database check (everything above
 * that must be zero, plus 1 when the ledger does not balance). */
int64_t drill_db_check_violations(const drill_db_check *c);

/* Run every check against the database at conninfo for the (stopped)
 * workload w. Returns 0 with *out filled, or -1 with the reason in err
 * when the database cannot be reached or a query fails. */
int drill_check_db(const char *conninfo, const workload *w, drill_db_check *out, char *err,
                   size_t err_size);

/* When the PostgreSQL at conninfo started (pg_postmaster_start_time, wall
 * ms). Returns 0, or -1 when it cannot be reached (it may be down). */
int drill_db_started_ms(const char *conninfo, int64_t *started_ms);

/* The cell's leader key. */
typedef struct drill_leader {
    bool present;
    char node[64];
    int64_t epoch;
    char host[64];
    int port;
} drill_leader;

/* Read /meridian/<cell>/leader. Returns 0 (out->present false when
 * there is none), or -1 when etcd cannot be read. */
int drill_etcd_leader(etcd_client *c, const char *cell, drill_leader *out);

/* Read /meridian/<cell>/epoch (0 when absent). Returns 0 or -1. */
int drill_etcd_epoch(etcd_client *c, const char *cell, int64_t *epoch);

/* One history/<epoch> event; a time is 0 when not (yet) recorded. */
typedef struct drill_event {
    int64_t epoch;
    char node[64];
    char kind[32];
    int64_t leader_lost_at_ms;
    int64_t acquired_at_ms;
    int64_t promoted_at_ms;
} drill_event;

/* The history events with epoch > after, in epoch order, at most max.
 * Returns 0 with *count set, or -1 when etcd cannot be read. */
int drill_etcd_history_after(etcd_client *c, const char *cell, int64_t after, drill_event *out,
                             size_t max, size_t *count);

#endif
