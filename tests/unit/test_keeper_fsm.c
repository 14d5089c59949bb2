/*
 * test_keeper_fsm.c — the keeper's decisions against a simulated cell.
 *
 * A fake world holds a fake clock, a fake etcd (leader key under a
 * lease, epoch, synchronous set, member keys with revisions) and a fake
 * PostgreSQL per node (running, in recovery, upstream, flushed LSN, the
 * synchronous names). Every tick each live keeper builds its view, asks
 * keeper_fsm_step, and the test carries out the action on the world, as
 * the real keeper does on real servers. A workload commits on whatever
 * node is writable; a commit is acknowledged only when a synchronous
 * standby streaming from that node flushes it.
 *
 * After every tick the checker asserts the invariants of DESIGN.md:
 * at most one node gets commits acknowledged, only while it holds an
 * unexpired lease (no acknowledged write by a fenced primary), and every
 * promoted node holds every acknowledged commit (no loss).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "keeper/fsm.h"
#include "keeper/syncset.h"

#define NODES_MAX 4
#define TICK_MS 100
#define TTL_MS 3000
#define MARGIN_MS 1000
#define LAG_MAX 1000
#define TLI_MAX 32

typedef struct fake_node {
    char name[KEEPER_NAME_MAX];
    bool keeper_alive; /* process exists */
    bool paused;       /* SIGSTOP of keeper and PostgreSQL */
    bool is_dr;        /* cross-region DR standby (region "eu"; others "us") */
    bool async_ok;     /* promoted by a regional failover: commits without a standby */
    int64_t home_seen_at_ms, caught_up_at_ms, leader_seen_at_ms;
    bool etcd_reachable;
    keeper_state state;
    int64_t etcd_ok_at_ms;
    bool holds_lease;
    int64_t lease_valid_until_ms;
    /* PostgreSQL */
    bool data, running, in_recovery, was_primary;
    int tli; /* the timeline its WAL is on (PostgreSQL's history) */
    char upstream[KEEPER_NAME_MAX];
    uint64_t flush_lsn;
    keeper_names pg_names;
    uint64_t names_changed_at_lsn;
    /* its member key in etcd */
    bool published;
    int64_t pub_ms, pub_rev;
    uint64_t pub_lsn;
    bool pub_healthy, pub_primary, pub_streaming;
    /* what it last read from etcd */
    keeper_view cached;
} fake_node;

typedef struct world {
    int64_t now_ms, rev;
    bool initialized;
    bool leader_present;
    char leader[KEEPER_NAME_MAX];
    int64_t lease_expires_ms, leader_deleted_rev, epoch;
    char last_leader[KEEPER_NAME_MAX];
    keeper_names syncset;
    char switchover_to[KEEPER_NAME_MAX];
    char failover_to[KEEPER_NAME_MAX];
    keeper_region_policy policy;
    bool partitioned; /* region us cut off from eu and the etcd majority */
    int64_t leader_lost_ms;
    uint64_t regional_loss; /* acknowledged LSNs a regional failover lost */
    /* Timelines: each promotion starts one, forked off its parent at the
     * promoted node's LSN. A standby whose WAL goes past that fork point
     * cannot stream from the new timeline (PostgreSQL refuses), only
     * pg_rewind brings it back. */
    int tli_count;
    int tli_parent[TLI_MAX + 1];
    uint64_t tli_fork_lsn[TLI_MAX + 1];
    int rewinds;
    int count;
    fake_node nodes[NODES_MAX];
    uint64_t acked_lsn_max, acked_count;
    int violations, promotions;
    char violation[256];
} world;

static fake_node *node_by_name(world *w, const char *name)
{
    for (int i = 0; i < w->count; i++)
        if (strcmp(w->nodes[i].name, name) == 0)
            return &w->nodes[i];
    return NULL;
}

/* Can a node whose WAL is on timeline tli up to lsn follow a server on
 * timeline leader_tli? Only if leader_tli's history passes through tli
 * and leaves it at or after lsn. */
static bool fake_diverged(const world *w, int tli, uint64_t lsn, int leader_tli)
{
    int child = 0;
    for (int t = leader_tli, hops = 0; t > 0 && hops <= TLI_MAX; hops++) {
        if (t == tli)
            return child != 0 && lsn > w->tli_fork_lsn[child];
        child = t;
        t = w->tli_parent[t];
    }
    return true; /* tli is not in the leader's history */
}

static void new_timeline(world *w, fake_node *n)
{
    assert_true(w->tli_count < TLI_MAX);
    int t = ++w->tli_count;
    w->tli_parent[t] = n->tli;
    w->tli_fork_lsn[t] = n->flush_lsn;
    n->tli = t;
}

static void violate(world *w, const char *what)
{
    w->violations++;
    snprintf(w->violation, sizeof w->violation, "t=%lld ms: %s", (long long)w->now_ms, what);
}

static void world_init(world *w)
{
    memset(w, 0, sizeof *w);
    static const char *names[NODES_MAX] = {"n1", "n2", "n3", "dr1"};
    w->count = 3;
    w->policy = KEEPER_REGION_FAILOVER_MANUAL;
    for (int i = 0; i < NODES_MAX; i++) {
        fake_node *n = &w->nodes[i];
        snprintf(n->name, sizeof n->name, "%s", names[i]);
        n->keeper_alive = true;
        n->etcd_reachable = true;
        n->state = KEEPER_INIT;
        n->is_dr = i == 3;
    }
}

static void build_view(world *w, fake_node *n, keeper_view *v)
{
    if (n->etcd_reachable) {
        memset(v, 0, sizeof *v);
        v->etcd_ok = true;
        n->etcd_ok_at_ms = w->now_ms;
        v->cell_initialized = w->initialized;
        v->leader_present = w->leader_present;
        snprintf(v->leader, sizeof v->leader, "%s", w->leader);
        v->epoch = w->epoch;
        snprintf(v->last_leader, sizeof v->last_leader, "%s", w->last_leader);
        snprintf(v->switchover_to, sizeof v->switchover_to, "%s", w->switchover_to);
        snprintf(v->failover_to, sizeof v->failover_to, "%s", w->failover_to);
        v->syncset_count = w->syncset.count;
        memcpy(v->syncset, w->syncset.names, sizeof v->syncset);
        fake_node *leader = w->leader_present ? node_by_name(w, w->leader) : NULL;
        for (int i = 0; i < w->count; i++) {
            fake_node *o = &w->nodes[i];
            if (o == n)
                continue;
            keeper_member *m = &v->members[v->member_count++];
            snprintf(m->name, sizeof m->name, "%s", o->name);
            m->present = o->published && w->now_ms - o->pub_ms < TTL_MS;
            m->healthy = o->pub_healthy;
            m->is_primary = o->pub_primary;
            m->flush_lsn = o->pub_lsn;
            /* The primary's keeper reads this from pg_stat_replication:
             * the truth, not the member's (possibly stale) key. */
            m->streaming = leader != NULL && leader == n && o->running && !o->paused &&
                           o->in_recovery && strcmp(o->upstream, leader->name) == 0;
            m->lag_bytes = leader && leader->flush_lsn > o->pub_lsn
                               ? leader->flush_lsn - o->pub_lsn : 0;
            m->fresh = o->pub_rev > w->leader_deleted_rev;
            m->is_dr = o->is_dr;
            if (m->present && !o->is_dr)
                n->home_seen_at_ms = w->now_ms;
        }
        if (w->leader_present)
            n->home_seen_at_ms = w->now_ms;
        /* The DR standby's lag as etcd shows it: the leader's published
         * LSN against its own; frozen when the leader's key goes. */
        if (n->is_dr && leader != NULL && leader != n && leader->published &&
            w->now_ms - leader->pub_ms < TTL_MS) {
            n->leader_seen_at_ms = w->now_ms;
            if (n->flush_lsn >= leader->pub_lsn)
                n->caught_up_at_ms = w->now_ms;
        }
        /* The keeper learns it lost the key when etcd names another. */
        if (!w->leader_present || strcmp(w->leader, n->name) != 0)
            n->holds_lease = false;
        n->cached = *v;
    } else {
        *v = n->cached;
        v->etcd_ok = false;
    }
    v->now_ms = w->now_ms;
    snprintf(v->self, sizeof v->self, "%s", n->name);
    v->etcd_ok_at_ms = n->etcd_ok_at_ms;
    v->holds_lease = n->holds_lease;
    v->lease_valid_until_ms = n->lease_valid_until_ms;
    v->pg_data_exists = n->data;
    v->pg_running = n->running;
    v->pg_in_recovery = n->in_recovery;
    v->pg_follows_leader = v->leader_present && strcmp(n->upstream, v->leader) == 0;
    v->pg_was_primary = n->was_primary;
    v->pg_flush_lsn = n->flush_lsn;
    {
        fake_node *l = v->leader_present ? node_by_name(w, v->leader) : NULL;
        v->pg_diverged = l != NULL && l != n && n->running && n->in_recovery &&
                         fake_diverged(w, n->tli, n->flush_lsn, l->tli);
    }
    v->etcd_lost_detach_ms = TTL_MS - MARGIN_MS;
    v->self_is_dr = n->is_dr;
    v->region_policy = w->policy;
    v->region_failover_after_ms = 5000;
    v->max_loss_ms = 1000;
    v->home_lost_ms = w->now_ms - n->home_seen_at_ms;
    v->dr_lag_ms = n->leader_seen_at_ms > n->caught_up_at_ms
                       ? n->leader_seen_at_ms - n->caught_up_at_ms : 0;
}

static void take_lease(world *w, fake_node *n)
{
    w->leader_present = true;
    snprintf(w->leader, sizeof w->leader, "%s", n->name);
    snprintf(w->last_leader, sizeof w->last_leader, "%s", n->name);
    w->epoch++;
    w->lease_expires_ms = w->now_ms + TTL_MS;
    n->holds_lease = true;
    n->lease_valid_until_ms = w->now_ms + TTL_MS - MARGIN_MS;
}

static void check_durable(world *w, fake_node *n)
{
    if (n->flush_lsn >= w->acked_lsn_max)
        return;
    if (n->is_dr) /* a regional failover: loss allowed, measured */
        w->regional_loss = w->acked_lsn_max - n->flush_lsn;
    else
        violate(w, "promoted a node that lacks acknowledged commits");
}

static void renew(world *w, fake_node *n, const keeper_view *v)
{
    if (!n->etcd_reachable)
        return;
    w->lease_expires_ms = w->now_ms + TTL_MS;
    n->lease_valid_until_ms = w->now_ms + TTL_MS - MARGIN_MS;

    keeper_names desired;
    keeper_sync_plan plan;
    keeper_sync_desired(v, LAG_MAX, &desired);
    keeper_sync_plan_next(v, &desired, &n->pg_names, &w->syncset,
                          n->names_changed_at_lsn, &plan);
    if (plan.kind == KEEPER_SYNC_WRITE_ETCD) {
        w->syncset = plan.names;
    } else if (plan.kind == KEEPER_SYNC_SET_PG) {
        n->pg_names = plan.names;
        n->names_changed_at_lsn = n->flush_lsn;
    }
}

static void apply(world *w, fake_node *n, keeper_action a, const keeper_view *v)
{
    fake_node *leader = w->leader_present ? node_by_name(w, w->leader) : NULL;

    switch (a) {
    case KEEPER_ACT_NONE:
        break;
    case KEEPER_ACT_INITDB_AND_LEAD:
        if (!n->etcd_reachable || w->initialized)
            break; /* the init claim is an etcd transaction: one winner */
        w->initialized = true;
        n->data = n->running = true;
        n->in_recovery = false;
        n->tli = w->tli_count = 1;
        take_lease(w, n);
        break;
    case KEEPER_ACT_BASEBACKUP:
        if (leader == NULL || !leader->running)
            break;
        n->data = n->running = n->in_recovery = true;
        snprintf(n->upstream, sizeof n->upstream, "%s", leader->name);
        n->flush_lsn = leader->flush_lsn;
        n->tli = leader->tli;
        break;
    case KEEPER_ACT_START_STANDBY:
        n->running = n->in_recovery = true;
        snprintf(n->upstream, sizeof n->upstream, "%s", leader ? leader->name : "");
        break;
    case KEEPER_ACT_FOLLOW:
        snprintf(n->upstream, sizeof n->upstream, "%s", v->leader);
        break;
    case KEEPER_ACT_DETACH:
        n->upstream[0] = '\0';
        break;
    case KEEPER_ACT_ACQUIRE:
        /* An etcd transaction: leader key absent -> create it, epoch+1. */
        if (n->etcd_reachable && !w->leader_present)
            take_lease(w, n);
        break;
    case KEEPER_ACT_PROMOTE:
        check_durable(w, n);
        n->in_recovery = false;
        n->upstream[0] = '\0';
        new_timeline(w, n);
        /* The new primary starts acking from the standbys already in the
         * synchronous set: they are in etcd's set, so step 1 holds. */
        memset(&n->pg_names, 0, sizeof n->pg_names);
        for (size_t i = 0; i < w->syncset.count; i++)
            if (strcmp(w->syncset.names[i], n->name) != 0)
                snprintf(n->pg_names.names[n->pg_names.count++], KEEPER_NAME_MAX, "%s",
                         w->syncset.names[i]);
        n->names_changed_at_lsn = n->flush_lsn;
        if (n->is_dr) { /* nobody in its region to wait for: asynchronous */
            memset(&n->pg_names, 0, sizeof n->pg_names);
            n->async_ok = true;
            memset(&w->syncset, 0, sizeof w->syncset); /* nobody else holds it all */
        }
        w->promotions++;
        break;
    case KEEPER_ACT_RENEW:
        renew(w, n, v);
        break;
    case KEEPER_ACT_START_PRIMARY:
        check_durable(w, n);
        n->running = true;
        n->in_recovery = false;
        break;
    case KEEPER_ACT_FENCE:
        if (n->running && !n->in_recovery)
            n->was_primary = true;
        n->running = false;
        n->async_ok = false;
        break;
    case KEEPER_ACT_REWIND:
        if (leader == NULL || !leader->running)
            break;
        n->flush_lsn = leader->flush_lsn; /* rewound, then caught up */
        n->tli = leader->tli;
        w->rewinds++;
        n->running = n->in_recovery = true;
        n->was_primary = false;
        n->async_ok = false;
        snprintf(n->upstream, sizeof n->upstream, "%s", leader->name);
        break;
    case KEEPER_ACT_HANDOVER:
        /* Clean stop: connected standbys receive all WAL, the member key
         * shows the final LSN, then the lease is revoked. */
        for (int i = 0; i < w->count; i++) {
            fake_node *s = &w->nodes[i];
            if (s != n && s->running && s->in_recovery && strcmp(s->upstream, n->name) == 0 &&
                s->flush_lsn < n->flush_lsn)
                s->flush_lsn = n->flush_lsn;
        }
        n->was_primary = true;
        n->running = false;
        n->pub_lsn = n->flush_lsn;
        n->pub_healthy = n->pub_primary = false;
        n->pub_rev = ++w->rev;
        n->holds_lease = false;
        if (n->etcd_reachable && w->leader_present && strcmp(w->leader, n->name) == 0) {
            w->leader_present = false;
            w->leader_deleted_rev = ++w->rev;
        }
        break;
    case KEEPER_ACT_COUNT:
        fail();
    }
}

/* One commit attempt on every writable node, then streaming. */
static void workload(world *w)
{
    int acked_by = 0;
    for (int i = 0; i < w->count; i++) {
        fake_node *p = &w->nodes[i];
        if (p->paused || !p->running || p->in_recovery)
            continue;
        p->flush_lsn++; /* committed locally */
        bool acked = false;
        for (size_t k = 0; k < p->pg_names.count; k++) {
            fake_node *s = node_by_name(w, p->pg_names.names[k]);
            if (s && !s->paused && s->running && s->in_recovery &&
                strcmp(s->upstream, p->name) == 0)
                acked = true;
        }
        if (p->async_ok)
            acked = true;
        if (!acked)
            continue;
        acked_by++;
        bool lease_ok = w->leader_present && strcmp(w->leader, p->name) == 0 &&
                        w->now_ms < w->lease_expires_ms;
        if (!lease_ok)
            violate(w, "a commit was acknowledged by a node without the lease");
        if (p->flush_lsn > w->acked_lsn_max)
            w->acked_lsn_max = p->flush_lsn;
        w->acked_count++;
    }
    if (acked_by > 1)
        violate(w, "two nodes got commits acknowledged in the same tick");
    /* Streaming: standbys receive what their upstream has. */
    for (int i = 0; i < w->count; i++) {
        fake_node *s = &w->nodes[i];
        fake_node *up = s->upstream[0] ? node_by_name(w, s->upstream) : NULL;
        if (s->paused || !s->running || !s->in_recovery || up == NULL || up->paused ||
            !up->running)
            continue;
        if (w->partitioned && s->is_dr != up->is_dr)
            continue; /* the WAN link is cut */
        if (fake_diverged(w, s->tli, s->flush_lsn, up->tli))
            continue; /* "forked off before current recovery point" */
        if (up->flush_lsn > s->flush_lsn)
            s->flush_lsn = up->flush_lsn;
        s->tli = up->tli;

    }
}

static void tick(world *w)
{
    w->now_ms += TICK_MS;
    if (w->leader_present && w->now_ms >= w->lease_expires_ms) {
        w->leader_present = false;
        w->leader_deleted_rev = ++w->rev;
        w->leader_lost_ms = w->now_ms;
    }
    for (int i = 0; i < w->count; i++) {
        fake_node *n = &w->nodes[i];
        if (!n->keeper_alive || n->paused)
            continue;
        if (n->etcd_reachable) { /* publish the member key first */
            n->published = true;
            n->pub_ms = w->now_ms;
            n->pub_rev = ++w->rev;
            n->pub_lsn = n->flush_lsn;
            n->pub_healthy = n->running;
            n->pub_primary = n->running && !n->in_recovery;
            n->pub_streaming = n->running && n->in_recovery && n->upstream[0];
        }
        keeper_view v;
        build_view(w, n, &v);
        const keeper_transition *t = keeper_fsm_step(n->state, &v);
        if (t != NULL) {
            n->state = t->to;
            apply(w, n, t->action, &v);
        } else if (n->state == KEEPER_PRIMARY) {
            apply(w, n, KEEPER_ACT_RENEW, &v);
        }
    }
    workload(w);
}

static void run_ticks(world *w, int count)
{
    for (int i = 0; i < count; i++)
        tick(w);
}

static int count_state(world *w, keeper_state s)
{
    int c = 0;
    for (int i = 0; i < w->count; i++)
        if (w->nodes[i].keeper_alive && w->nodes[i].state == s)
            c++;
    return c;
}

static fake_node *primary(world *w)
{
    for (int i = 0; i < w->count; i++)
        if (w->nodes[i].keeper_alive && w->nodes[i].state == KEEPER_PRIMARY)
            return &w->nodes[i];
    return NULL;
}

/* Ticks until a node other than old is PRIMARY; -1 if none within max. */
static int ticks_until_new_primary(world *w, const fake_node *old, int max)
{
    for (int i = 1; i <= max; i++) {
        tick(w);
        fake_node *p = primary(w);
        if (p != NULL && p != old && p->running && !p->in_recovery)
            return i;
    }
    return -1;
}

static void assert_healthy_cell(world *w)
{
    fake_node *p = primary(w);
    assert_non_null(p);
    assert_int_equal(count_state(w, KEEPER_PRIMARY), 1);
    for (int i = 0; i < w->count; i++) {
        fake_node *n = &w->nodes[i];
        if (n == p || !n->keeper_alive)
            continue;
        assert_int_equal(n->state, KEEPER_STANDBY);
        assert_string_equal(n->upstream, p->name);
        assert_true(n->flush_lsn + LAG_MAX >= p->flush_lsn);
        assert_int_equal(n->tli, p->tli); /* really streaming the leader's history */
    }
}

static void bootstrap(world *w)
{
    world_init(w);
    run_ticks(w, 40);
    if (w->violations)
        fail_msg("%s", w->violation);
}

/* ---- Tests. */

static void test_bootstrap_one_primary_two_standbys(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    assert_healthy_cell(&w);
    assert_int_equal(w.epoch, 1);
    assert_int_equal(w.syncset.count, 2);
    assert_true(w.acked_count > 10);
    char buf[128];
    assert_int_equal(keeper_sync_names_format(&primary(&w)->pg_names, buf, sizeof buf), 0);
    assert_true(strncmp(buf, "ANY 1 (\"", 8) == 0);
}

static void test_primary_node_loss_promotes_without_loss(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *old = primary(&w);
    uint64_t acked_before = w.acked_count;
    old->keeper_alive = false;
    old->running = false;
    int ticks = ticks_until_new_primary(&w, old, 100);
    assert_true(ticks > 0);
    /* Detection waits for the lease: TTL plus a few loops, not more. */
    assert_true(ticks * TICK_MS <= TTL_MS + 1000);
    assert_int_equal(w.violations, 0);
    assert_int_equal(w.epoch, 2);
    run_ticks(&w, 30);
    assert_int_equal(w.violations, 0);
    assert_true(w.acked_count > acked_before);
    fake_node *p = primary(&w);
    for (int i = 0; i < w.count; i++)
        if (&w.nodes[i] != p && w.nodes[i].keeper_alive)
            assert_string_equal(w.nodes[i].upstream, p->name);
}

static void test_isolated_primary_fences_then_rejoins(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *old = primary(&w);
    old->etcd_reachable = false;
    int ticks = ticks_until_new_primary(&w, old, 100);
    assert_true(ticks > 0);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_int_equal(old->state, KEEPER_FENCED);
    assert_false(old->running);
    /* Heal: the old primary rewinds and follows the new one. */
    old->etcd_reachable = true;
    run_ticks(&w, 40);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_healthy_cell(&w);
    assert_true(primary(&w) != old);
    assert_false(old->was_primary);
}

static void test_paused_primary_for_twice_ttl(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *old = primary(&w);
    old->paused = true;
    run_ticks(&w, 2 * TTL_MS / TICK_MS);
    assert_true(primary(&w) != NULL);
    old->paused = false; /* SIGCONT: its clock says the lease is gone */
    run_ticks(&w, 60);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_healthy_cell(&w);
    assert_true(primary(&w) != old);
    assert_int_equal(w.epoch, 2);
}

static void test_sync_standby_down_then_primary_dies(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *p = primary(&w);
    fake_node *a = NULL, *b = NULL;
    for (int i = 0; i < w.count; i++)
        if (&w.nodes[i] != p)
            *(a == NULL ? &a : &b) = &w.nodes[i];
    b->keeper_alive = false;
    b->running = false;
    run_ticks(&w, 50); /* the primary shrinks its set to {a} */
    assert_int_equal(w.syncset.count, 1);
    assert_string_equal(w.syncset.names[0], a->name);
    p->keeper_alive = false;
    p->running = false;
    int ticks = ticks_until_new_primary(&w, p, 100);
    assert_true(ticks > 0);
    assert_ptr_equal(primary(&w), a);
    if (w.violations)
        fail_msg("%s", w.violation);
    /* b returns and follows a; it was never promotable. */
    b->keeper_alive = true;
    run_ticks(&w, 50);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_healthy_cell(&w);
}

static void test_no_promotion_when_set_member_missing(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *p = primary(&w);
    fake_node *a = NULL, *b = NULL;
    for (int i = 0; i < w.count; i++)
        if (&w.nodes[i] != p)
            *(a == NULL ? &a : &b) = &w.nodes[i];
    /* Primary and one synchronous standby die together: the survivor
     * cannot know it holds every acknowledged commit. */
    p->keeper_alive = false;
    p->running = false;
    a->keeper_alive = false;
    a->running = false;
    assert_int_equal(ticks_until_new_primary(&w, p, 100), -1);
    assert_int_equal(w.promotions, 0);
    keeper_view v;
    build_view(&w, b, &v);
    const char *why = NULL;
    assert_false(keeper_may_promote(&v, &why));
    assert_non_null(why);
    assert_non_null(strstr(why, "unreachable"));
    /* The standby comes back: now the most advanced one promotes. */
    a->keeper_alive = true;
    assert_true(ticks_until_new_primary(&w, p, 100) > 0);
    if (w.violations)
        fail_msg("%s", w.violation);
}

static void test_flapping_etcd_link_no_failover(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *p = primary(&w);
    for (int i = 0; i < 200; i++) {
        p->etcd_reachable = (i % 5) != 0; /* 100 ms gaps, well under the margin */
        tick(&w);
    }
    p->etcd_reachable = true;
    run_ticks(&w, 5);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_ptr_equal(primary(&w), p);
    assert_int_equal(w.epoch, 1);
    assert_int_equal(w.promotions, 0);
}

static void test_long_etcd_outage_of_standby_detaches(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *p = primary(&w);
    fake_node *s = (&w.nodes[0] == p) ? &w.nodes[1] : &w.nodes[0];
    s->etcd_reachable = false;
    run_ticks(&w, (TTL_MS - MARGIN_MS) / TICK_MS + 2);
    assert_int_equal(s->state, KEEPER_DETACHED);
    assert_string_equal(s->upstream, "");
    s->etcd_reachable = true;
    run_ticks(&w, 20);
    assert_healthy_cell(&w);
}

static void test_candidate_race_one_winner(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *p = primary(&w);
    p->keeper_alive = false;
    p->running = false;
    /* Equal LSNs: the tie-break by name lets exactly one candidate go. */
    run_ticks(&w, TTL_MS / TICK_MS + 1);
    int may = 0;
    for (int i = 0; i < w.count; i++) {
        fake_node *n = &w.nodes[i];
        if (n == p || n->state != KEEPER_STANDBY)
            continue;
        keeper_view v;
        build_view(&w, n, &v);
        if (keeper_may_promote(&v, NULL))
            may++;
    }
    assert_true(may <= 1);
    /* Force both to try at once: the etcd transaction admits one. */
    for (int i = 0; i < w.count; i++) {
        fake_node *n = &w.nodes[i];
        if (n == p)
            continue;
        keeper_view v;
        build_view(&w, n, &v);
        n->state = KEEPER_PROMOTING;
        apply(&w, n, KEEPER_ACT_ACQUIRE, &v);
    }
    run_ticks(&w, 30);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_int_equal(count_state(&w, KEEPER_PRIMARY), 1);
    assert_int_equal(w.epoch, 2);
}

static void test_planned_switchover(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *old = primary(&w);
    fake_node *target = (&w.nodes[2] == old) ? &w.nodes[1] : &w.nodes[2];
    uint64_t acked_before = w.acked_count;
    snprintf(w.switchover_to, sizeof w.switchover_to, "%s", target->name);
    int ticks = ticks_until_new_primary(&w, old, 50);
    assert_true(ticks > 0);
    assert_ptr_equal(primary(&w), target);
    /* Planned: no lease expiry needed, the pause is a few loops. */
    assert_true(ticks * TICK_MS < TTL_MS);
    w.switchover_to[0] = '\0'; /* the new leader deletes the request */
    run_ticks(&w, 40);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_int_equal(w.epoch, 2);
    assert_true(w.acked_count > acked_before);
    assert_healthy_cell(&w);
    assert_string_equal(old->upstream, target->name);
}

static void test_switchover_to_unhealthy_target_is_ignored(void **state)
{
    (void)state;
    world w;
    bootstrap(&w);
    fake_node *old = primary(&w);
    fake_node *target = (&w.nodes[2] == old) ? &w.nodes[1] : &w.nodes[2];
    target->keeper_alive = false;
    target->running = false;
    snprintf(w.switchover_to, sizeof w.switchover_to, "%s", target->name);
    run_ticks(&w, 20);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_ptr_equal(primary(&w), old);
    assert_int_equal(w.epoch, 1);
}

/* ---- Cross-region: a 4th node, dr1, is the cell's DR standby in another
 * region (asynchronous, never in the synchronous set). */

static void bootstrap_with_dr(world *w, keeper_region_policy policy)
{
    world_init(w);
    w->count = 4;
    w->policy = policy;
    run_ticks(w, 50);
    if (w->violations)
        fail_msg("%s", w->violation);
}

static void partition_home_region(world *w, bool cut)
{
    w->partitioned = cut;
    for (int i = 0; i < w->count; i++)
        if (!w->nodes[i].is_dr)
            w->nodes[i].etcd_reachable = !cut; /* etcd majority is eu + witness */
}

static void test_dr_standby_is_async_and_never_elected_in_region(void **state)
{
    (void)state;
    world w;
    bootstrap_with_dr(&w, KEEPER_REGION_FAILOVER_AUTOMATIC);
    fake_node *dr = &w.nodes[3];
    fake_node *p = primary(&w);
    assert_false(p->is_dr);
    assert_int_equal(dr->state, KEEPER_STANDBY);
    assert_string_equal(dr->upstream, p->name);
    for (size_t i = 0; i < w.syncset.count; i++)
        assert_string_not_equal(w.syncset.names[i], "dr1");
    /* Losing the primary node promotes an in-region standby, not dr1. */
    p->keeper_alive = false;
    p->running = false;
    assert_true(ticks_until_new_primary(&w, p, 100) > 0);
    assert_false(primary(&w)->is_dr);
    run_ticks(&w, 20);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_string_equal(dr->upstream, primary(&w)->name);
}

static void test_regional_failover_automatic_then_heal_and_failback(void **state)
{
    (void)state;
    world w;
    bootstrap_with_dr(&w, KEEPER_REGION_FAILOVER_AUTOMATIC);
    fake_node *old = primary(&w);
    fake_node *dr = &w.nodes[3];
    partition_home_region(&w, true);
    int ticks = ticks_until_new_primary(&w, old, 200);
    assert_true(ticks > 0);
    assert_ptr_equal(primary(&w), dr);
    /* Not before the lease expired and the policy's wait passed. */
    assert_true(ticks * TICK_MS >= TTL_MS + 5000);
    if (w.violations) /* one writer, no ack without the lease */
        fail_msg("%s", w.violation);
    assert_false(old->running); /* fenced when it lost etcd */
    /* What the home primary acknowledged (through its in-region standbys)
     * between the cut and its fence never crossed the WAN: the loss is
     * bounded by the fence deadline, TTL - margin after the last renewal,
     * one commit per tick here. */
    assert_true(w.regional_loss <= (TTL_MS - MARGIN_MS) / TICK_MS + 1);
    uint64_t acked = w.acked_count;
    run_ticks(&w, 10);
    assert_true(w.acked_count > acked); /* the EU primary takes writes */
    /* Heal: the home region's nodes rejoin as standbys of dr1. */
    partition_home_region(&w, false);
    run_ticks(&w, 60);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_ptr_equal(primary(&w), dr);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w.nodes[i].state, KEEPER_STANDBY);
        assert_string_equal(w.nodes[i].upstream, "dr1");
    }
    /* Failback: a planned switchover to a home-region node, zero loss. */
    snprintf(w.switchover_to, sizeof w.switchover_to, "%s", "n1");
    assert_true(ticks_until_new_primary(&w, dr, 60) > 0);
    w.switchover_to[0] = '\0';
    run_ticks(&w, 40);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_string_equal(primary(&w)->name, "n1");
    assert_int_equal(dr->state, KEEPER_STANDBY);
}

static void test_regional_failover_manual_waits_for_the_operator(void **state)
{
    (void)state;
    world w;
    bootstrap_with_dr(&w, KEEPER_REGION_FAILOVER_MANUAL);
    fake_node *old = primary(&w);
    partition_home_region(&w, true);
    assert_int_equal(ticks_until_new_primary(&w, old, 200), -1); /* 20 s: nothing */
    assert_int_equal(w.promotions, 0);
    snprintf(w.failover_to, sizeof w.failover_to, "%s", "dr1");
    assert_true(ticks_until_new_primary(&w, old, 20) > 0);
    assert_string_equal(primary(&w)->name, "dr1");
    if (w.violations)
        fail_msg("%s", w.violation);
}

static void test_regional_failover_refused_beyond_loss_bound(void **state)
{
    (void)state;
    world w;
    bootstrap_with_dr(&w, KEEPER_REGION_FAILOVER_AUTOMATIC);
    fake_node *old = primary(&w);
    fake_node *dr = &w.nodes[3];
    /* The WAN link breaks first: dr1 falls behind while writes go on. */
    w.partitioned = true;
    run_ticks(&w, 30);
    partition_home_region(&w, true);
    assert_int_equal(ticks_until_new_primary(&w, old, 200), -1);
    assert_int_equal(dr->state, KEEPER_STANDBY);
    keeper_view v;
    build_view(&w, dr, &v);
    assert_true(v.dr_lag_ms > v.max_loss_ms);
}

/* Issue 4 items 6 and 7 on the simulated cell: the home region is cut
 * off, dr1 takes over; on heal n1 (fenced) and the synchronous standbys
 * n2/n3 — which received WAL from n1 after dr1 last did — are past the
 * fork point of dr1's timeline, so following alone would never stream:
 * each rewinds; then a planned switchover brings the cell home with no
 * loss and dr1 follows as a DR standby again. */
static void test_partition_heal_rewinds_everyone_then_failback(void **state)
{
    (void)state;
    world w;
    bootstrap_with_dr(&w, KEEPER_REGION_FAILOVER_AUTOMATIC);
    fake_node *old = primary(&w);
    fake_node *dr = &w.nodes[3];
    partition_home_region(&w, true);
    assert_true(ticks_until_new_primary(&w, old, 200) > 0);
    assert_ptr_equal(primary(&w), dr);
    /* Async until the home region streams again: nobody else may be
     * elected meanwhile. */
    assert_int_equal(w.syncset.count, 0);
    for (int i = 0; i < 3; i++)
        assert_true(w.nodes[i].flush_lsn > w.tli_fork_lsn[dr->tli]);
    run_ticks(&w, 20);
    partition_home_region(&w, false);
    run_ticks(&w, 80);
    if (w.violations)
        fail_msg("%s", w.violation);
    assert_int_equal(w.rewinds, 3); /* n1, and n2/n3 which were ahead of dr1 */
    assert_healthy_cell(&w);
    assert_ptr_equal(primary(&w), dr);
    assert_int_equal(w.syncset.count, 3); /* the home nodes are synchronous again */
    /* Failback to n2: dr1 hands over and follows n2 as a DR standby. */
    uint64_t acked = w.acked_count;
    int64_t epoch = w.epoch;
    snprintf(w.switchover_to, sizeof w.switchover_to, "%s", "n2");
    int ticks = ticks_until_new_primary(&w, dr, 60);
    assert_true(ticks > 0);
    assert_true(ticks * TICK_MS < TTL_MS); /* planned: no lease expiry */
    w.switchover_to[0] = '\0';
    run_ticks(&w, 40);
    if (w.violations) /* check_durable: n2 holds every acknowledged commit */
        fail_msg("%s", w.violation);
    assert_string_equal(primary(&w)->name, "n2");
    assert_int_equal(w.epoch, epoch + 1);
    assert_true(w.acked_count > acked);
    assert_healthy_cell(&w);
    assert_int_equal(dr->state, KEEPER_STANDBY);
    for (size_t i = 0; i < w.syncset.count; i++)
        assert_string_not_equal(w.syncset.names[i], "dr1");
}

/* The row itself: a standby past the fork rewinds instead of following,
 * in either state it may be in when the new leader shows up. */
static void test_diverged_standby_rewinds_instead_of_following(void **state)
{
    (void)state;
    keeper_view v;
    memset(&v, 0, sizeof v);
    v.etcd_ok = true;
    v.cell_initialized = true;
    v.leader_present = true;
    snprintf(v.self, sizeof v.self, "n2");
    snprintf(v.leader, sizeof v.leader, "dr1");
    v.epoch = 2;
    v.pg_data_exists = v.pg_running = v.pg_in_recovery = true;
    v.now_ms = v.etcd_ok_at_ms = 10000;
    v.etcd_lost_detach_ms = 2000;
    const keeper_transition *t = keeper_fsm_step(KEEPER_STANDBY, &v);
    assert_non_null(t);
    assert_int_equal(t->action, KEEPER_ACT_FOLLOW);
    v.pg_diverged = true;
    t = keeper_fsm_step(KEEPER_STANDBY, &v);
    assert_non_null(t);
    assert_int_equal(t->to, KEEPER_REWIND);
    assert_int_equal(t->action, KEEPER_ACT_REWIND);
    t = keeper_fsm_step(KEEPER_DETACHED, &v);
    assert_non_null(t);
    assert_int_equal(t->action, KEEPER_ACT_REWIND);
    /* Rewound and streaming: a standby again. */
    v.pg_diverged = false;
    v.pg_follows_leader = true;
    t = keeper_fsm_step(KEEPER_REWIND, &v);
    assert_non_null(t);
    assert_int_equal(t->to, KEEPER_STANDBY);
    /* No leader: never rewind (nothing to rewind against). */
    v.leader_present = false;
    v.pg_diverged = true;
    t = keeper_fsm_step(KEEPER_DETACHED, &v);
    assert_true(t == NULL || t->action != KEEPER_ACT_REWIND);
}

static void test_syncset_plan_steps(void **state)
{
    (void)state;
    keeper_view v;
    memset(&v, 0, sizeof v);
    v.member_count = 2;
    snprintf(v.members[0].name, KEEPER_NAME_MAX, "a");
    snprintf(v.members[1].name, KEEPER_NAME_MAX, "b");
    for (int i = 0; i < 2; i++) {
        v.members[i].present = v.members[i].healthy = v.members[i].streaming = true;
        v.members[i].flush_lsn = 100;
    }
    keeper_names desired, pg = {0}, etcd = {0};
    keeper_sync_plan plan;
    keeper_sync_desired(&v, 10, &desired);
    assert_int_equal(desired.count, 2);
    /* Grow etcd first. */
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 0, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_WRITE_ETCD);
    assert_int_equal(plan.names.count, 2);
    etcd = plan.names;
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 0, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_SET_PG);
    pg = plan.names;
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 0, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_NOOP);
    /* b fails: PostgreSQL first, etcd only once a holds LSN 150. */
    v.members[1].healthy = false;
    keeper_sync_desired(&v, 10, &desired);
    assert_int_equal(desired.count, 1);
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 0, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_SET_PG);
    pg = plan.names;
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 150, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_NOOP);
    v.members[0].flush_lsn = 150;
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 150, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_WRITE_ETCD);
    assert_int_equal(plan.names.count, 1);
    assert_string_equal(plan.names.names[0], "a");
    /* No healthy standby at all: never shrink to nothing. */
    v.members[0].healthy = false;
    keeper_sync_desired(&v, 10, &desired);
    assert_int_equal(desired.count, 0);
    etcd = plan.names;
    keeper_sync_plan_next(&v, &desired, &pg, &etcd, 150, &plan);
    assert_int_equal(plan.kind, KEEPER_SYNC_NOOP);
    char buf[8];
    assert_int_equal(keeper_sync_names_format(&pg, buf, sizeof buf), -1);
}

static void test_dot_names_every_state(void **state)
{
    (void)state;
    char buf[16384];
    size_t len = keeper_fsm_dot(buf, sizeof buf);
    assert_true(len < sizeof buf);
    assert_non_null(strstr(buf, "digraph keeper"));
    for (int s = 0; s < KEEPER_STATE_COUNT; s++)
        assert_non_null(strstr(buf, keeper_state_name((keeper_state)s)));
    assert_non_null(strstr(buf, "primary -> fenced"));
    /* A too-small buffer reports the size it needs and stays terminated. */
    char small[16];
    assert_int_equal(keeper_fsm_dot(small, sizeof small), len);
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* DR-aware fencing: only when etcd AND the DR standbys are silent for
 * dr_fence_ms, and the DR standbys went silent recently. */
static void test_dr_fence_due_only_when_both_are_silent(void **state)
{
    (void)state;
    const int f = 500, ttl = 6;
    /* off */
    assert_false(keeper_dr_fence_due(10000, 0, 0, 0, ttl));
    /* both silent 600 ms: fence */
    assert_true(keeper_dr_fence_due(10000, 9400, 9400, f, ttl));
    /* etcd silent, the DR standby confirming: its lag bounds the loss */
    assert_false(keeper_dr_fence_due(10000, 9000, 9950, f, ttl));
    /* the DR link down, etcd answering: nobody else can take the cell */
    assert_false(keeper_dr_fence_due(10000, 9900, 9000, f, ttl));
    /* just under the threshold on one side */
    assert_false(keeper_dr_fence_due(10000, 9501, 9000, f, ttl));
    assert_true(keeper_dr_fence_due(10000, 9500, 9500, f, ttl));
    /* the DR standby silent for two leases: too far behind to be
     * promoted automatically, the lease deadline suffices */
    assert_false(keeper_dr_fence_due(20000, 5000, 20000 - 12000, f, ttl));
    assert_true(keeper_dr_fence_due(20000, 5000, 20000 - 11999, f, ttl));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bootstrap_one_primary_two_standbys),
        cmocka_unit_test(test_primary_node_loss_promotes_without_loss),
        cmocka_unit_test(test_isolated_primary_fences_then_rejoins),
        cmocka_unit_test(test_paused_primary_for_twice_ttl),
        cmocka_unit_test(test_sync_standby_down_then_primary_dies),
        cmocka_unit_test(test_no_promotion_when_set_member_missing),
        cmocka_unit_test(test_flapping_etcd_link_no_failover),
        cmocka_unit_test(test_long_etcd_outage_of_standby_detaches),
        cmocka_unit_test(test_candidate_race_one_winner),
        cmocka_unit_test(test_planned_switchover),
        cmocka_unit_test(test_switchover_to_unhealthy_target_is_ignored),
        cmocka_unit_test(test_dr_standby_is_async_and_never_elected_in_region),
        cmocka_unit_test(test_regional_failover_automatic_then_heal_and_failback),
        cmocka_unit_test(test_regional_failover_manual_waits_for_the_operator),
        cmocka_unit_test(test_regional_failover_refused_beyond_loss_bound),
        cmocka_unit_test(test_partition_heal_rewinds_everyone_then_failback),
        cmocka_unit_test(test_diverged_standby_rewinds_instead_of_following),
        cmocka_unit_test(test_dr_fence_due_only_when_both_are_silent),
        cmocka_unit_test(test_syncset_plan_steps),
        cmocka_unit_test(test_dot_names_every_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
