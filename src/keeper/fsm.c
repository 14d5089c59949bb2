/*
 * fsm.c — the keeper's state machine table and its guards.
 *
 * See fsm.h for the model and docs/FAILOVER.md for the guarantees. Every
 * guard is a small pure predicate over a keeper_view; every row says in
 * a sentence why the transition is taken, and that sentence is what the
 * keeper logs and publishes, and what `meridianctl keeper fsm --dot`
 * draws. Rows of one state are tried in order: put the safety rows
 * (fencing, detaching) before the liveness rows.
 */
#include "keeper/fsm.h"

#include <stdio.h>
#include <string.h>

#include "common/mrd_assert.h"

/* ---- Small predicates. */

static bool leader_is_self(const keeper_view *v)
{
    return v->leader_present && strcmp(v->leader, v->self) == 0;
}

static bool leader_is_other(const keeper_view *v)
{
    return v->leader_present && strcmp(v->leader, v->self) != 0;
}

static bool lease_valid(const keeper_view *v)
{
    return v->holds_lease && v->now_ms < v->lease_valid_until_ms;
}

static bool in_syncset(const keeper_view *v, const char *name)
{
    for (size_t i = 0; i < v->syncset_count; i++)
        if (strcmp(v->syncset[i], name) == 0)
            return true;
    return false;
}

static const keeper_member *member(const keeper_view *v, const char *name)
{
    for (size_t i = 0; i < v->member_count; i++)
        if (strcmp(v->members[i].name, name) == 0)
            return &v->members[i];
    return NULL;
}

bool keeper_may_promote(const keeper_view *v, const char **why)
{
    const char *reason = NULL;

    if (!in_syncset(v, v->self)) {
        reason = "not in the synchronous set: may lack acknowledged commits";
        goto out;
    }
    if (!v->pg_running || !v->pg_in_recovery) {
        reason = "local PostgreSQL is not a running standby";
        goto out;
    }
    for (size_t i = 0; i < v->syncset_count; i++) {
        const char *name = v->syncset[i];
        if (strcmp(name, v->self) == 0 || strcmp(name, v->last_leader) == 0)
            continue;
        const keeper_member *m = member(v, name);
        if (m == NULL || !m->present || !m->healthy || !m->fresh) {
            reason = "another member of the synchronous set is unreachable: "
                     "it may hold commits this node lacks";
            goto out;
        }
        if (m->flush_lsn > v->pg_flush_lsn ||
            (m->flush_lsn == v->pg_flush_lsn && strcmp(m->name, v->self) < 0)) {
            reason = "another member of the synchronous set is more advanced";
            goto out;
        }
    }
out:
    if (why != NULL)
        *why = reason;
    return reason == NULL;
}

/* ---- Guards, named after the condition they test. */

static bool g_bootstrap(const keeper_view *v)
{
    /* A DR standby never creates the cell: it lives in another region. */
    return v->etcd_ok && !v->cell_initialized && !v->pg_data_exists && !v->self_is_dr;
}

static bool g_clone(const keeper_view *v)
{
    return v->etcd_ok && v->cell_initialized && !v->pg_data_exists && leader_is_other(v);
}

static bool g_restart_holding_lease(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && lease_valid(v) && leader_is_self(v);
}

static bool g_old_primary_other_leads(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && leader_is_other(v) && v->pg_was_primary;
}

static bool g_data_other_leads(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && leader_is_other(v);
}

static bool g_data_no_leader_was_last(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && !v->leader_present &&
           strcmp(v->last_leader, v->self) == 0 && v->pg_was_primary;
}

static bool g_data_no_leader(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && !v->leader_present;
}

static bool g_primary_ready(const keeper_view *v)
{
    return lease_valid(v) && v->pg_running && !v->pg_in_recovery;
}

static bool g_lost_bootstrap_race(const keeper_view *v)
{
    return v->etcd_ok && v->cell_initialized && leader_is_other(v) && !v->pg_data_exists;
}

static bool g_standby_running(const keeper_view *v)
{
    return v->pg_running && v->pg_in_recovery;
}

static bool g_etcd_lost(const keeper_view *v)
{
    return !v->etcd_ok && v->now_ms - v->etcd_ok_at_ms >= v->etcd_lost_detach_ms;
}

/* A planned switchover's target may lead once it has everything every
 * other member published (the old primary publishes the LSN of its
 * shutdown checkpoint before it lets the lease go). */
static bool switchover_target_ready(const keeper_view *v)
{
    if (!in_syncset(v, v->self) || !v->pg_running || !v->pg_in_recovery)
        return false;
    for (size_t i = 0; i < v->member_count; i++) {
        const keeper_member *m = &v->members[i];
        if (m->present && m->flush_lsn > v->pg_flush_lsn)
            return false;
    }
    return true;
}

static bool g_may_lead(const keeper_view *v)
{
    if (!v->etcd_ok || v->leader_present)
        return false;
    if (v->switchover_to[0] != '\0') {
        if (strcmp(v->switchover_to, v->self) == 0 && switchover_target_ready(v))
            return true;
        /* Others wait for the target; if it cannot lead, the request's
         * lease expires and the normal election rules apply again. */
        if (strcmp(v->switchover_to, v->self) != 0)
            return false;
    }
    return keeper_may_promote(v, NULL);
}

/* Regional failover: the DR standby takes the cell when the operator
 * asks for it, or — under the automatic policy — when the home region has
 * been gone (no leader, no home member) for region_failover_after_ms and
 * the DR standby was at most max_loss_ms behind when the leader was
 * lost. Either way there is no leader: the home region's primary, cut
 * off from the etcd majority, has fenced itself (rule 1). */
static bool g_region_failover(const keeper_view *v)
{
    if (!v->self_is_dr || !v->etcd_ok || v->leader_present || !v->pg_running ||
        !v->pg_in_recovery)
        return false;
    if (v->failover_to[0] != '\0')
        return strcmp(v->failover_to, v->self) == 0;
    return v->region_policy == KEEPER_REGION_FAILOVER_AUTOMATIC &&
           v->home_lost_ms >= v->region_failover_after_ms && v->dr_lag_ms <= v->max_loss_ms;
}

static bool g_switchover_away(const keeper_view *v)
{
    if (!v->etcd_ok || !lease_valid(v) || v->switchover_to[0] == '\0' ||
        strcmp(v->switchover_to, v->self) == 0 || !in_syncset(v, v->switchover_to))
        return false;
    const keeper_member *m = member(v, v->switchover_to);
    return m != NULL && m->present && m->healthy && m->streaming;
}

static bool g_leader_moved(const keeper_view *v)
{
    return v->etcd_ok && leader_is_other(v) && !v->pg_follows_leader;
}

/* The leader is on a timeline that left ours before our last replayed
 * WAL: PostgreSQL refuses to follow it ("forked off ... before current
 * recovery point"); rewind instead. What is thrown away was never
 * acknowledged (rule 2) and is reported in rewinds/. */
static bool g_diverged_other_leads(const keeper_view *v)
{
    return v->etcd_ok && v->pg_data_exists && leader_is_other(v) && v->pg_diverged;
}

static bool g_standby_pg_down(const keeper_view *v)
{
    return v->etcd_ok && !v->pg_running;
}

static bool g_etcd_back_other_leads(const keeper_view *v)
{
    return v->etcd_ok && leader_is_other(v);
}

static bool g_lease_gone(const keeper_view *v)
{
    return !lease_valid(v);
}

static bool g_promote_needed(const keeper_view *v)
{
    return lease_valid(v) && v->pg_running && v->pg_in_recovery;
}

static bool g_promote_start_needed(const keeper_view *v)
{
    return lease_valid(v) && !v->pg_running;
}

static bool g_lost_leader_race(const keeper_view *v)
{
    return v->etcd_ok && leader_is_other(v);
}

static bool g_acquire_failed(const keeper_view *v)
{
    return v->etcd_ok && !v->leader_present && !v->holds_lease;
}

static bool g_other_holds_key(const keeper_view *v)
{
    return v->etcd_ok && leader_is_other(v);
}

static bool g_primary_pg_down(const keeper_view *v)
{
    return lease_valid(v) && !v->pg_running;
}

static bool g_last_leader_no_leader(const keeper_view *v)
{
    /* Not while a planned switchover hands the cell to another node. */
    return v->etcd_ok && !v->leader_present && strcmp(v->last_leader, v->self) == 0 &&
           (v->switchover_to[0] == '\0' || strcmp(v->switchover_to, v->self) == 0);
}

static bool g_retry_copy(const keeper_view *v)
{
    return v->etcd_ok && leader_is_other(v) && !v->pg_running;
}

static bool g_rewound(const keeper_view *v)
{
    return v->pg_running && v->pg_in_recovery && v->pg_follows_leader;
}

/* ---- The table. Safety rows first within each state. */

const keeper_transition keeper_fsm_table[] = {
    {KEEPER_INIT, KEEPER_BOOTSTRAP,
     "the cell has no data yet: this node creates the first primary",
     g_bootstrap, KEEPER_ACT_INITDB_AND_LEAD},
    {KEEPER_INIT, KEEPER_CLONE,
     "no local data: copy the leader with pg_basebackup",
     g_clone, KEEPER_ACT_BASEBACKUP},
    {KEEPER_INIT, KEEPER_PRIMARY,
     "restarted while still holding the leader lease: start the primary",
     g_restart_holding_lease, KEEPER_ACT_START_PRIMARY},
    {KEEPER_INIT, KEEPER_REWIND,
     "local data is a former primary and another node leads: pg_rewind",
     g_old_primary_other_leads, KEEPER_ACT_REWIND},
    {KEEPER_INIT, KEEPER_STANDBY,
     "local data present and another node leads: start as its standby",
     g_data_other_leads, KEEPER_ACT_START_STANDBY},
    {KEEPER_INIT, KEEPER_FENCED,
     "no leader and this node led last: keep PostgreSQL stopped until elected",
     g_data_no_leader_was_last, KEEPER_ACT_FENCE},
    {KEEPER_INIT, KEEPER_STANDBY,
     "no leader: start as a standby and take part in the election",
     g_data_no_leader, KEEPER_ACT_START_STANDBY},

    {KEEPER_BOOTSTRAP, KEEPER_PRIMARY,
     "first primary initialised and the lease is held",
     g_primary_ready, KEEPER_ACT_NONE},
    {KEEPER_BOOTSTRAP, KEEPER_CLONE,
     "another node bootstrapped the cell first: copy it",
     g_lost_bootstrap_race, KEEPER_ACT_BASEBACKUP},

    {KEEPER_CLONE, KEEPER_STANDBY,
     "base backup restored and streaming",
     g_standby_running, KEEPER_ACT_NONE},
    {KEEPER_CLONE, KEEPER_CLONE,
     "the copy did not finish: copy the leader again",
     g_retry_copy, KEEPER_ACT_BASEBACKUP},

    {KEEPER_STANDBY, KEEPER_DETACHED,
     "etcd unreachable: stop acknowledging so an isolated primary cannot commit",
     g_etcd_lost, KEEPER_ACT_DETACH},
    {KEEPER_STANDBY, KEEPER_PROMOTING,
     "leader lease lapsed and this node is the most advanced of the synchronous set",
     g_may_lead, KEEPER_ACT_ACQUIRE},
    {KEEPER_STANDBY, KEEPER_PROMOTING,
     "home region lost (or operator request) and the DR standby is within the loss bound: "
     "regional failover",
     g_region_failover, KEEPER_ACT_ACQUIRE},
    {KEEPER_STANDBY, KEEPER_REWIND,
     "the leader's timeline forked off this node's before its last replayed WAL: "
     "rejoin with pg_rewind",
     g_diverged_other_leads, KEEPER_ACT_REWIND},
    {KEEPER_STANDBY, KEEPER_STANDBY,
     "the leader changed: follow the new primary",
     g_leader_moved, KEEPER_ACT_FOLLOW},
    {KEEPER_STANDBY, KEEPER_STANDBY,
     "PostgreSQL is down: restart it as a standby",
     g_standby_pg_down, KEEPER_ACT_START_STANDBY},

    {KEEPER_DETACHED, KEEPER_PROMOTING,
     "etcd back, no leader, and this node is the most advanced of the synchronous set",
     g_may_lead, KEEPER_ACT_ACQUIRE},
    {KEEPER_DETACHED, KEEPER_PROMOTING,
     "etcd back, home region lost (or operator request): regional failover",
     g_region_failover, KEEPER_ACT_ACQUIRE},
    {KEEPER_DETACHED, KEEPER_REWIND,
     "etcd back and the leader's timeline forked off this node's before its last replayed "
     "WAL (it was promoted while we were cut off): rejoin with pg_rewind",
     g_diverged_other_leads, KEEPER_ACT_REWIND},
    {KEEPER_DETACHED, KEEPER_STANDBY,
     "etcd reachable again: follow the leader",
     g_etcd_back_other_leads, KEEPER_ACT_FOLLOW},

    {KEEPER_PROMOTING, KEEPER_STANDBY,
     "another node won the leader key: follow it",
     g_lost_leader_race, KEEPER_ACT_FOLLOW},
    {KEEPER_PROMOTING, KEEPER_STANDBY,
     "could not take the leader key: stay a standby and retry",
     g_acquire_failed, KEEPER_ACT_NONE},
    {KEEPER_PROMOTING, KEEPER_FENCED,
     "the lease may have expired during promotion: stop writes",
     g_lease_gone, KEEPER_ACT_FENCE},
    {KEEPER_PROMOTING, KEEPER_PRIMARY,
     "promotion finished: writable under the new epoch",
     g_primary_ready, KEEPER_ACT_NONE},
    {KEEPER_PROMOTING, KEEPER_PROMOTING,
     "leader key held: promote PostgreSQL and record the epoch",
     g_promote_needed, KEEPER_ACT_PROMOTE},
    {KEEPER_PROMOTING, KEEPER_PROMOTING,
     "leader key held and PostgreSQL stopped: start it",
     g_promote_start_needed, KEEPER_ACT_START_PRIMARY},

    {KEEPER_PRIMARY, KEEPER_FENCED,
     "lease not renewed in time: stop writes before it can be granted elsewhere",
     g_lease_gone, KEEPER_ACT_FENCE},
    {KEEPER_PRIMARY, KEEPER_FENCED,
     "another node holds the leader key: stop writes",
     g_other_holds_key, KEEPER_ACT_FENCE},
    {KEEPER_PRIMARY, KEEPER_PRIMARY,
     "PostgreSQL died while this node leads: restart it",
     g_primary_pg_down, KEEPER_ACT_START_PRIMARY},
    {KEEPER_PRIMARY, KEEPER_FENCED,
     "switchover requested to a healthy synchronous standby: stop cleanly and hand over",
     g_switchover_away, KEEPER_ACT_HANDOVER},

    {KEEPER_FENCED, KEEPER_REWIND,
     "a new leader exists: rejoin as its standby with pg_rewind",
     g_etcd_back_other_leads, KEEPER_ACT_REWIND},
    {KEEPER_FENCED, KEEPER_PROMOTING,
     "no leader and this node led last, so it holds every commit: lead again",
     g_last_leader_no_leader, KEEPER_ACT_ACQUIRE},

    {KEEPER_REWIND, KEEPER_STANDBY,
     "rewound and streaming from the leader",
     g_rewound, KEEPER_ACT_NONE},
    {KEEPER_REWIND, KEEPER_STANDBY,
     "rewound and running, but the leader moved meanwhile: follow it",
     g_standby_running, KEEPER_ACT_FOLLOW},
    {KEEPER_REWIND, KEEPER_REWIND,
     "the rewind did not finish: try again against the leader",
     g_retry_copy, KEEPER_ACT_REWIND},
};
const size_t keeper_fsm_table_count = sizeof keeper_fsm_table / sizeof keeper_fsm_table[0];

const keeper_transition *keeper_fsm_step(keeper_state cur, const keeper_view *v)
{
    mrd_assert(cur < KEEPER_STATE_COUNT);
    mrd_assert(v != NULL);
    for (size_t i = 0; i < keeper_fsm_table_count; i++) {
        const keeper_transition *t = &keeper_fsm_table[i];
        if (t->from == cur && t->guard(v))
            return t;
    }
    return NULL;
}

static const char *const state_names[KEEPER_STATE_COUNT] = {
    [KEEPER_INIT] = "init",         [KEEPER_BOOTSTRAP] = "bootstrap",
    [KEEPER_CLONE] = "clone",       [KEEPER_STANDBY] = "standby",
    [KEEPER_DETACHED] = "detached", [KEEPER_PROMOTING] = "promoting",
    [KEEPER_PRIMARY] = "primary",   [KEEPER_FENCED] = "fenced",
    [KEEPER_REWIND] = "rewind",
};

static const char *const action_names[KEEPER_ACT_COUNT] = {
    [KEEPER_ACT_NONE] = "none",
    [KEEPER_ACT_INITDB_AND_LEAD] = "initdb_and_lead",
    [KEEPER_ACT_BASEBACKUP] = "basebackup",
    [KEEPER_ACT_START_STANDBY] = "start_standby",
    [KEEPER_ACT_FOLLOW] = "follow",
    [KEEPER_ACT_DETACH] = "detach",
    [KEEPER_ACT_ACQUIRE] = "acquire",
    [KEEPER_ACT_PROMOTE] = "promote",
    [KEEPER_ACT_RENEW] = "renew",
    [KEEPER_ACT_START_PRIMARY] = "start_primary",
    [KEEPER_ACT_FENCE] = "fence",
    [KEEPER_ACT_REWIND] = "rewind",
    [KEEPER_ACT_HANDOVER] = "handover",
};

const char *keeper_state_name(keeper_state s)
{
    return s < KEEPER_STATE_COUNT ? state_names[s] : "unknown";
}

const char *keeper_action_name(keeper_action a)
{
    return a < KEEPER_ACT_COUNT ? action_names[a] : "unknown";
}

size_t keeper_fsm_dot(char *buf, size_t size)
{
    size_t used = 0;
    int n;

#define DOT_APPEND(...)                                                        \
    do {                                                                       \
        n = snprintf(used < size ? buf + used : NULL,                          \
                     used < size ? size - used : 0, __VA_ARGS__);              \
        mrd_assert(n >= 0);                                                    \
        used += (size_t)n;                                                     \
    } while (0)

    DOT_APPEND("digraph keeper {\n  rankdir=LR;\n  node [shape=box];\n");
    for (size_t i = 0; i < keeper_fsm_table_count; i++) {
        const keeper_transition *t = &keeper_fsm_table[i];
        DOT_APPEND("  %s -> %s [label=\"%s\\n(%s)\"];\n", keeper_state_name(t->from),
                   keeper_state_name(t->to), keeper_action_name(t->action), t->why);
    }
    DOT_APPEND("}\n");
#undef DOT_APPEND
    return used;
}

bool keeper_dr_fence_due(int64_t now_ms, int64_t etcd_answered_ms, int64_t dr_confirmed_ms,
                         int dr_fence_ms, int lease_ttl_s)
{
    if (dr_fence_ms <= 0)
        return false;
    int64_t etcd_silent = now_ms - etcd_answered_ms, dr_silent = now_ms - dr_confirmed_ms;
    return etcd_silent >= dr_fence_ms && dr_silent >= dr_fence_ms &&
           dr_silent < 2000LL * lease_ttl_s;
}
