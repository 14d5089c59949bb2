/*
 * keeper.c — meridian-keeper's loop: observe etcd and PostgreSQL, decide
 * with the table of fsm.c, act with pgctl.c, publish.
 *
 * Two threads. The loop thread does everything that may block (etcd
 * requests, PostgreSQL commands). The fence thread does one thing: when
 * this node runs a writable PostgreSQL and its lease deadline
 * (lease_valid_until_ms, see fsm.h) passes, it stops PostgreSQL at once —
 * even if the loop thread is stuck in a slow etcd request. That keeps
 * rule 1 (one writer) independent of how long any request takes.
 *
 * etcd keys (prefix /meridian/<cell>/): leader, epoch, last_leader,
 * syncset, initialized, members/<node>, history/<epoch>.
 */
#include "keeper/keeper.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "etcd/etcd.h"
#include "keeper/kmetrics.h"
#include "keeper/syncset.h"

#define COMP "keeper"
#define KEY_MAX 256
#define ETCD_TIMEOUT_MS 400

typedef struct leader_info {
    char host[64];
    int port;
} leader_info;

typedef struct keeper {
    const keeper_config *cfg;
    pgctl_config pg;
    etcd_client *etcd;
    char prefix[KEY_MAX];

    keeper_state state;
    /* The leader lease is renewed by its own thread (lease_thread) with its
     * own etcd client, so a slow action of the loop (a crash recovery
     * inside pg_ctl start, a rewind) never lets the lease lapse while the
     * keeper is alive and reaches etcd. */
    _Atomic int64_t lease_id;
    _Atomic bool holds_lease;
    etcd_client *lease_etcd;
    _Atomic int64_t lease_valid_until_ms; /* read by the fence thread */
    _Atomic int writable;                 /* this node runs a writable PostgreSQL */
    _Atomic int stopping;
    /* Set by the watch on the leader key: a change (a lapsed lease, a new
     * leader) cuts the loop's sleep short, so detection does not wait for
     * the rest of a loop period. */
    _Atomic int wake;
    int64_t member_lease_id;
    int64_t etcd_ok_at_ms;
    int64_t leader_absent_rev;    /* revision at which we first saw no leader */
    int64_t leader_lost_wall_ms;  /* wall clock of that moment (history) */
    int64_t leader_lost_mono_ms;  /* monotonic clock of that moment (election pace) */
    keeper_view cached;           /* the etcd part of the last good view */
    leader_info leader;
    keeper_names etcd_syncset;
    keeper_names pg_names;        /* what we set as synchronous names */
    uint64_t names_changed_at_lsn;
    const char *last_why;
    /* the event being recorded in history/<epoch> */
    int64_t event_epoch, event_lost_ms, event_acquired_ms;
    const char *event_kind;
    bool event_promoted; /* its promoted_at_ms is recorded */
    bool event_loss_known; /* regional failover: the loss bound below is known */
    uint64_t event_loss_bytes;
    int64_t event_loss_ms;
    uint64_t transitions, promotions; /* for /metrics */
    _Atomic uint64_t fences;          /* also counted by the fence thread */
    /* DR-aware fencing (cfg->dr_fence_ms): the loop publishes when etcd
     * last answered and which members are DR standbys; the DR watch
     * thread publishes when the DR standbys last confirmed our WAL. */
    _Atomic int64_t etcd_answered_ms;
    _Atomic int64_t dr_confirmed_ms;
    pthread_mutex_t dr_mu;
    keeper_names dr_names;
    /* regional failover inputs (DR standby) */
    int64_t home_seen_at_ms, leader_seen_at_ms, caught_up_at_ms;
    uint64_t leader_flush_lsn; /* as the leader last published it */
    uint64_t own_primary_lsn;  /* our flush LSN when we last ran as a primary */
    uint64_t last_flush_lsn;   /* our flush (standby: received) LSN when last running */
    keeper_names replicas;     /* primary: standbys streaming per pg_stat_replication */
    /* The leader's timeline history, as far as the divergence check needs
     * it: where the leader's history left our timeline (fork_tli). */
    char fork_leader[KEEPER_NAME_MAX];
    char streamed_leader[KEEPER_NAME_MAX]; /* we streamed from it on timeline streamed_tli */
    uint32_t streamed_tli;
    uint32_t fork_leader_tli, fork_tli;
    int fork_rc;               /* pgctl_timeline_switchpoint's answer */
    uint64_t fork_lsn;
} keeper;

/* Loop period during an election, and for how long after the leader key
 * went (see keeper_run). */
#define KEEPER_ELECTION_LOOP_MS 50
#define KEEPER_ELECTION_PACE_FOR_MS 3000
/* A promotion slower than this logs where its time went. */
#define KEEPER_SLOW_PROMOTION_MS 1000
/* Period of the leader lease's keepalives (see lease_thread). */
#define KEEPER_RENEW_MS 100
/* Nice value of the lease and fence threads (see raise_thread_priority). */
#define KEEPER_TIMING_NICE (-10)

static void key_of(const keeper *k, char *out, const char *suffix)
{
    int n = snprintf(out, KEY_MAX, "%s%s", k->prefix, suffix);
    mrd_assert(n > 0 && n < KEY_MAX);
}

void keeper_config_defaults(keeper_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->cell, sizeof cfg->cell, "default");
    snprintf(cfg->pg_bindir, sizeof cfg->pg_bindir, "/usr/lib/postgresql/15/bin");
    snprintf(cfg->run_as_user, sizeof cfg->run_as_user, "postgres");
    snprintf(cfg->database, sizeof cfg->database, "meridian");
    cfg->lease_ttl_s = 2;
    cfg->loop_ms = 250;
    cfg->fence_margin_ms = 700;
    cfg->sync_lag_bytes_max = 16u * 1024u * 1024u;
    cfg->region_policy = KEEPER_REGION_FAILOVER_MANUAL;
    cfg->region_failover_after_s = 10;
    cfg->max_loss_ms = 1000;
}

int keeper_config_check(const keeper_config *cfg, char *err, size_t err_size)
{
    if (cfg->node[0] == '\0')
        return snprintf(err, err_size, "node name missing (--node NAME)"), -1;
    for (const char *p = cfg->node; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
            return snprintf(err, err_size, "node name '%s' may only hold a-z, 0-9, '-' and '_'",
                            cfg->node), -1;
    if (cfg->etcd_endpoints[0] == '\0')
        return snprintf(err, err_size, "etcd endpoints missing (--etcd URL,URL,...)"), -1;
    if (cfg->basedir[0] == '\0')
        return snprintf(err, err_size, "node directory missing (--dir PATH)"), -1;
    if (cfg->pg_port <= 0 || cfg->pg_port > 65535)
        return snprintf(err, err_size, "PostgreSQL port missing or invalid (--pg-port N)"), -1;
    if (cfg->lease_ttl_s < 2 || cfg->lease_ttl_s > 60)
        return snprintf(err, err_size, "lease TTL must be 2..60 s (got %d)", cfg->lease_ttl_s), -1;
    if (cfg->loop_ms < 50 || cfg->loop_ms * 2 > cfg->lease_ttl_s * 1000 - cfg->fence_margin_ms)
        return snprintf(err, err_size,
                        "loop period %d ms too long for a %d s lease with %d ms margin: "
                        "at least two renewals must fit before fencing",
                        cfg->loop_ms, cfg->lease_ttl_s, cfg->fence_margin_ms), -1;
    if (cfg->dr_fence_ms != 0 && cfg->dr_fence_ms < 2 * cfg->loop_ms)
        return snprintf(err, err_size,
                        "--dr-fence-ms %d must be 0 (off) or at least two loop periods (%d ms): "
                        "etcd is asked once per loop",
                        cfg->dr_fence_ms, 2 * cfg->loop_ms), -1;
    if (cfg->fence_margin_ms < 200 || cfg->fence_margin_ms >= cfg->lease_ttl_s * 1000)
        return snprintf(err, err_size, "fence margin must be 200 ms .. lease TTL"), -1;
    return 0;
}

/* ---- Reading the cell from etcd. */

static void names_from_json(json_t *arr, keeper_names *out)
{
    memset(out, 0, sizeof *out);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && out->count < KEEPER_NODES_MAX)
            snprintf(out->names[out->count++], KEEPER_NAME_MAX, "%s", json_string_value(v));
    }
}

static const char *json_str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Fill the etcd part of v from one read of the prefix. Returns 0, or -1
 * when etcd could not be read. */
static int read_cell(keeper *k, keeper_view *v)
{
    /* One transaction, one revision: the small keys one by one and the
     * members by prefix (not the whole cell prefix: history/ grows with
     * every failover and is not needed to decide). */
    static const char *const singles[] = {"leader",   "epoch",      "last_leader",
                                          "initialized", "syncset", "switchover",
                                          "failover"};
    enum { SINGLES = sizeof singles / sizeof singles[0] };
    char keys[SINGLES + 1][KEY_MAX];
    etcd_op ops[SINGLES + 1];
    memset(ops, 0, sizeof ops);
    for (size_t i = 0; i < SINGLES; i++) {
        key_of(k, keys[i], singles[i]);
        ops[i] = (etcd_op){.kind = ETCD_OP_GET, .key = keys[i]};
    }
    key_of(k, keys[SINGLES], "members/");
    ops[SINGLES] = (etcd_op){.kind = ETCD_OP_GET, .key = keys[SINGLES], .prefix = true};
    etcd_txn txn = {.success = ops, .success_count = SINGLES + 1};
    etcd_txn_result res;
    if (etcd_txn_run(k->etcd, &txn, &res) != ETCD_OK)
        return -1;

    size_t plen = strlen(k->prefix);
    memset(&k->leader, 0, sizeof k->leader);
    memset(&k->etcd_syncset, 0, sizeof k->etcd_syncset);
    for (size_t i = 0; i < res.kv_count; i++) {
        const etcd_kv *kv = &res.kvs[i];
        const char *name = kv->key + plen;
        json_t *j = json_loadb(kv->value, kv->value_len, 0, NULL);
        if (strcmp(name, "leader") == 0 && j) {
            v->leader_present = true;
            snprintf(v->leader, sizeof v->leader, "%s", json_str(j, "node"));
            snprintf(k->leader.host, sizeof k->leader.host, "%s", json_str(j, "host"));
            k->leader.port = (int)json_integer_value(json_object_get(j, "port"));
            /* A leader in another region: reach it by the address it
             * advertises for ours (replication crosses the WAN link). */
            const char *a = json_string_value(
                json_object_get(json_object_get(j, "addrs"), k->cfg->region));
            const char *colon = a != NULL ? strrchr(a, ':') : NULL;
            if (colon != NULL && colon > a && (size_t)(colon - a) < sizeof k->leader.host) {
                int p = atoi(colon + 1);
                if (p > 0 && p <= 65535) {
                    memcpy(k->leader.host, a, (size_t)(colon - a));
                    k->leader.host[colon - a] = '\0';
                    k->leader.port = p;
                }
            }
        } else if (strcmp(name, "epoch") == 0) {
            v->epoch = strtoll(kv->value, NULL, 10);
        } else if (strcmp(name, "last_leader") == 0) {
            snprintf(v->last_leader, sizeof v->last_leader, "%s", kv->value);
        } else if (strcmp(name, "failover") == 0 && j) {
            snprintf(v->failover_to, sizeof v->failover_to, "%s", json_str(j, "to"));
        } else if (strcmp(name, "switchover") == 0 && j) {
            snprintf(v->switchover_to, sizeof v->switchover_to, "%s", json_str(j, "to"));
        } else if (strcmp(name, "initialized") == 0) {
            v->cell_initialized = true;
        } else if (strcmp(name, "syncset") == 0 && j) {
            names_from_json(json_object_get(j, "nodes"), &k->etcd_syncset);
        } else if (strncmp(name, "members/", 8) == 0 && j && strcmp(name + 8, k->cfg->node) != 0 &&
                   v->member_count < KEEPER_NODES_MAX) {
            keeper_member *m = &v->members[v->member_count++];
            snprintf(m->name, sizeof m->name, "%s", name + 8);
            m->present = true;
            m->healthy = json_is_true(json_object_get(j, "healthy"));
            m->is_primary = json_is_true(json_object_get(j, "primary"));
            m->streaming = json_is_true(json_object_get(j, "streaming"));
            m->timeline = (uint32_t)json_integer_value(json_object_get(j, "timeline"));
            m->flush_lsn = strtoull(json_str(j, "flush_lsn"), NULL, 10);
            m->lag_bytes = strtoull(json_str(j, "lag_bytes"), NULL, 10);
            m->is_dr = strcmp(json_str(j, "role"), "dr") == 0;
            m->fresh = kv->mod_revision; /* resolved below, once we know the leader */
        }
        json_decref(j);
    }
    /* Member LSNs count as final only if published after we saw the
     * leader gone (revision order, not clocks). */
    if (v->leader_present) {
        k->leader_absent_rev = 0;
        k->leader_lost_wall_ms = 0;
        k->leader_lost_mono_ms = 0;
    } else if (k->leader_absent_rev == 0) {
        k->leader_absent_rev = res.revision;
        k->leader_lost_wall_ms = clock_wall_ms();
        k->leader_lost_mono_ms = clock_mono_ms();
    }
    for (size_t i = 0; i < v->member_count; i++) {
        keeper_member *m = &v->members[i];
        int64_t rev = 0;
        for (size_t j = 0; j < res.kv_count; j++) {
            const char *name = res.kvs[j].key + plen;
            if (strncmp(name, "members/", 8) == 0 && strcmp(name + 8, m->name) == 0)
                rev = res.kvs[j].mod_revision;
        }
        m->fresh = v->leader_present || (k->leader_absent_rev > 0 && rev > k->leader_absent_rev);
    }
    v->syncset_count = k->etcd_syncset.count;
    memcpy(v->syncset, k->etcd_syncset.names, sizeof v->syncset);
    etcd_txn_result_release(&res);
    return 0;
}

/* {"region": "host:port", ...} of cfg->advertise, or NULL when none. */
static json_t *advertised_addrs(const keeper_config *cfg)
{
    if (cfg->advertise_count == 0)
        return NULL;
    json_t *o = json_object();
    for (size_t i = 0; i < cfg->advertise_count && o != NULL; i++)
        json_object_set_new(o, cfg->advertise[i].region, json_string(cfg->advertise[i].addr));
    return o;
}

/* ---- Leases. */

/* Renew the leader lease once (lease thread). The deadline is computed
 * from when the keepalive was *sent*: etcd cannot expire the lease
 * earlier than sent + TTL. */
static void renew_leader_lease(keeper *k)
{
    if (!atomic_load(&k->holds_lease))
        return;
    int64_t id = atomic_load(&k->lease_id);
    int64_t sent = clock_mono_ms();
    int rc = etcd_lease_keepalive(k->lease_etcd, id, NULL);
    if (rc == ETCD_OK) {
        atomic_store(&k->etcd_answered_ms, clock_mono_ms());
        if (atomic_load(&k->lease_id) == id)
            atomic_store(&k->lease_valid_until_ms,
                         sent + k->cfg->lease_ttl_s * 1000 - k->cfg->fence_margin_ms);
    } else if (rc == ETCD_E_NOT_FOUND && atomic_load(&k->lease_id) == id) {
        log_warn(COMP, "leader lease %" PRId64 " is gone", id);
        atomic_store(&k->holds_lease, false);
        atomic_store(&k->lease_valid_until_ms, 0);
    }
}

/* The threads that keep the lease and fence on its deadline must run on
 * time even when PostgreSQL and the workload saturate the CPUs: a late
 * renewal is a false failover, a late fence a second writer. Raise their
 * own (per-thread, on Linux) priority; the decision loop and everything it
 * starts (PostgreSQL, pg_rewind) keep the process's. Needs CAP_SYS_NICE
 * (root); without it the thread runs at normal priority and says so. */
static void raise_thread_priority(const char *thread_name)
{
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (setpriority(PRIO_PROCESS, (id_t)tid, KEEPER_TIMING_NICE) != 0)
        log_warn(COMP, "%s thread: cannot raise its priority to nice %d (%s); "
                       "it competes with the workload for the CPU",
                 thread_name, KEEPER_TIMING_NICE, strerror(errno));
}

static void on_leader_event(const etcd_event *ev, void *arg)
{
    (void)ev;
    keeper *k = arg;
    atomic_store(&k->wake, 1);
}

static void *lease_thread(void *arg)
{
    keeper *k = arg;
    raise_thread_priority("lease");
    /* Renewing often keeps the lease's expiry close to the moment the
     * primary stopped renewing: a dead primary is detected up to one
     * period sooner. A keepalive is cheap for etcd (no raft round). */
    int period_ms = k->cfg->loop_ms < KEEPER_RENEW_MS ? k->cfg->loop_ms : KEEPER_RENEW_MS;
    while (!atomic_load(&k->stopping)) {
        renew_leader_lease(k);
        for (int waited = 0; waited < period_ms && !atomic_load(&k->stopping); waited += 10)
            usleep(10 * 1000);
    }
    return NULL;
}

static bool follows_leader(const keeper *k, const pgctl_state *ps);

static void publish_member(keeper *k, const pgctl_state *ps)
{
    char key[KEY_MAX], lsn[32], lag[32];
    if (k->member_lease_id == 0 ||
        etcd_lease_keepalive(k->etcd, k->member_lease_id, NULL) == ETCD_E_NOT_FOUND) {
        if (etcd_lease_grant(k->etcd, k->cfg->lease_ttl_s, &k->member_lease_id) != ETCD_OK) {
            k->member_lease_id = 0;
            return;
        }
    }
    snprintf(lsn, sizeof lsn, "%" PRIu64, ps->flush_lsn);
    /* A standby's lag: the leader's last published flush LSN minus ours
     * (0 for the leader itself, or when the leader is unknown). */
    uint64_t lag_bytes = 0;
    if (ps->in_recovery && k->leader_flush_lsn > ps->flush_lsn)
        lag_bytes = k->leader_flush_lsn - ps->flush_lsn;
    snprintf(lag, sizeof lag, "%" PRIu64, lag_bytes);
    /* Streaming: configured to follow the current leader (by the address
     * it advertises for our region) and the WAL receiver really streams. */
    bool streaming = ps->running && ps->in_recovery && ps->receiving && follows_leader(k, ps);
    json_t *j = json_pack("{s:s, s:s, s:s, s:b, s:b, s:b, s:b, s:i, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:s, s:I}",
                          "node", k->cfg->node, "role", k->cfg->dr ? "dr" : "candidate",
                          "state", keeper_state_name(k->state),
                          "healthy", ps->running, "primary", ps->running && !ps->in_recovery,
                          "running", ps->running, "streaming", streaming,
                          "timeline", (int)ps->timeline, "flush_lsn", lsn, "lag_bytes", lag,
                          "zone", k->cfg->zone, "region", k->cfg->region,
                          "upstream", ps->upstream, "host", "127.0.0.1", "port", k->cfg->pg_port,
                          "why", k->last_why ? k->last_why : "",
                          "updated_ms", (json_int_t)clock_wall_ms());
    json_t *addrs = advertised_addrs(k->cfg);
    if (j != NULL && addrs != NULL)
        json_object_set_new(j, "addrs", addrs);
    else
        json_decref(addrs);
    if (j != NULL && ps->running && !ps->in_recovery) {
        /* The primary's own view of who streams from it: what a
         * switchover's target must be (meridianctl switchover checks it). */
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < k->replicas.count; i++)
            json_array_append_new(arr, json_string(k->replicas.names[i]));
        if (arr != NULL)
            json_object_set_new(j, "replicas", arr);
    }
    if (j != NULL && k->cfg->dr) {
        int64_t dr_lag_ms = k->leader_seen_at_ms > k->caught_up_at_ms
                                ? k->leader_seen_at_ms - k->caught_up_at_ms : 0;
        json_object_set_new(j, "dr_lag_ms", json_integer(dr_lag_ms));
    }
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text != NULL) {
        key_of(k, key, "members/");
        strncat(key, k->cfg->node, KEY_MAX - strlen(key) - 1);
        etcd_put(k->etcd, key, text, strlen(text), k->member_lease_id, NULL);
    }
    free(text);
    json_decref(j);
}

/* ---- Actions. */

/* history/<epoch>: detection (leader lost), acquisition and promotion
 * times of each leadership change, as this keeper measured them. */
static void record_history(keeper *k, int64_t promoted_at_ms)
{
    char key[KEY_MAX], suffix[64];
    snprintf(suffix, sizeof suffix, "history/%020" PRId64, k->event_epoch);
    key_of(k, key, suffix);
    json_t *j = json_pack("{s:I, s:s, s:s, s:I, s:I}", "epoch", (json_int_t)k->event_epoch,
                          "node", k->cfg->node, "kind", k->event_kind, "leader_lost_at_ms",
                          (json_int_t)k->event_lost_ms, "acquired_at_ms",
                          (json_int_t)k->event_acquired_ms);
    if (j != NULL && promoted_at_ms > 0)
        json_object_set_new(j, "promoted_at_ms", json_integer(promoted_at_ms));
    if (j != NULL && k->event_loss_known) {
        /* A regional failover: what this DR standby lacked of what the
         * lost leader had published — the loss bound (the rewind of the
         * old primary, if it comes back, reports what it really had). */
        json_object_set_new(j, "loss_bound_bytes", json_integer((json_int_t)k->event_loss_bytes));
        json_object_set_new(j, "loss_bound_ms", json_integer((json_int_t)k->event_loss_ms));
    }
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text)
        etcd_put(k->etcd, key, text, strlen(text), 0, NULL);
    free(text);
    json_decref(j);
}

/* The leader key's value (malloc'd JSON, NULL when out of memory):
 * where the leader is, its epoch, and whether it takes writes yet. */
static char *leader_value(const keeper *k, int64_t epoch, bool writable)
{
    json_t *j = json_pack("{s:s, s:I, s:s, s:i, s:s}", "node", k->cfg->node, "epoch",
                          (json_int_t)epoch, "host", "127.0.0.1", "port", k->cfg->pg_port,
                          "region", k->cfg->region);
    json_t *addrs = advertised_addrs(k->cfg);
    if (j != NULL && addrs != NULL)
        json_object_set_new(j, "addrs", addrs);
    else
        json_decref(addrs);
    if (j != NULL && writable)
        json_object_set_new(j, "writable", json_true());
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return text;
}

/* Say in the leader key that this node takes writes now (promoted, its
 * epoch recorded): meridiand's writers, waiting for the promotion, move
 * at once instead of at their next retry. Only while the key is still
 * ours (it carries our lease), so this can neither bring back a key that
 * went nor overwrite another node's. Best effort: meridiand also retries
 * on its own. */
static void announce_writable(keeper *k, int64_t epoch)
{
    char kl[KEY_MAX];
    key_of(k, kl, "leader");
    char *text = leader_value(k, epoch, true);
    if (text == NULL)
        return;
    int64_t lease = atomic_load(&k->lease_id);
    etcd_compare cmp = {.key = kl, .target = ETCD_CMP_LEASE, .result = ETCD_CMP_EQUAL,
                        .number = lease};
    etcd_op op = {.kind = ETCD_OP_PUT, .key = kl, .value = text, .value_len = strlen(text),
                  .lease_id = lease};
    etcd_txn txn = {.compares = &cmp, .compare_count = 1, .success = &op, .success_count = 1};
    etcd_txn_result res;
    int rc = etcd_txn_run(k->etcd, &txn, &res);
    if (rc != ETCD_OK)
        log_warn(COMP, "cannot mark the leader key writable: %s", etcd_client_last_error(k->etcd));
    else if (!res.succeeded)
        log_warn(COMP, "the leader key no longer carries our lease: not marked writable");
    if (rc == ETCD_OK)
        etcd_txn_result_release(&res);
    free(text);
}

/* The etcd transaction that makes this node the leader: leader key
 * absent -> create it under a fresh lease, epoch+1, last_leader. */
static int acquire(keeper *k, const keeper_view *v)
{
    int64_t lease = 0;
    int64_t sent = clock_mono_ms();
    if (etcd_lease_grant(k->etcd, k->cfg->lease_ttl_s, &lease) != ETCD_OK) {
        log_warn(COMP, "cannot grant a lease: %s", etcd_client_last_error(k->etcd));
        return -1;
    }
    char kl[KEY_MAX], ke[KEY_MAX], kll[KEY_MAX], epoch_text[32];
    key_of(k, kl, "leader");
    key_of(k, ke, "epoch");
    key_of(k, kll, "last_leader");
    int64_t epoch = v->epoch + 1;
    snprintf(epoch_text, sizeof epoch_text, "%" PRId64, epoch);
    char *leader_text = leader_value(k, epoch, false);
    if (leader_text == NULL)
        return -1;
    etcd_compare cmp = {.key = kl, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0};
    etcd_op ops[3] = {
        {.kind = ETCD_OP_PUT, .key = kl, .value = leader_text, .value_len = strlen(leader_text),
         .lease_id = lease},
        {.kind = ETCD_OP_PUT, .key = ke, .value = epoch_text, .value_len = strlen(epoch_text)},
        {.kind = ETCD_OP_PUT, .key = kll, .value = k->cfg->node, .value_len = strlen(k->cfg->node)},
    };
    etcd_txn txn = {.compares = &cmp, .compare_count = 1, .success = ops, .success_count = 3};
    etcd_txn_result res;
    int rc = etcd_txn_run(k->etcd, &txn, &res);
    free(leader_text);
    bool taken = rc == ETCD_OK && res.succeeded;
    if (rc == ETCD_OK)
        etcd_txn_result_release(&res);
    if (rc != ETCD_OK) {
        /* The answer was lost, not necessarily the transaction (a slow
         * etcd under load): the key under our lease means it went through.
         * Giving it back would burn an epoch and cost another lease. */
        etcd_kv kv;
        if (etcd_get(k->etcd, kl, &kv) == ETCD_OK) {
            taken = kv.lease == lease;
            etcd_kv_release(&kv);
            if (taken)
                log_info(COMP, "the leader transaction's answer was lost but it went through");
        }
    }
    if (!taken) {
        etcd_lease_revoke(k->etcd, lease);
        log_info(COMP, "did not take the leader key (%s)",
                 rc == ETCD_OK ? "another node holds it" : etcd_client_last_error(k->etcd));
        return -1;
    }
    atomic_store(&k->lease_id, lease);
    atomic_store(&k->holds_lease, true);
    atomic_store(&k->lease_valid_until_ms,
                 sent + k->cfg->lease_ttl_s * 1000 - k->cfg->fence_margin_ms);
    log_info(COMP, "took the leader key of cell %s, epoch %" PRId64, k->cfg->cell, epoch);
    k->event_epoch = epoch;
    k->event_kind = v->epoch == 0                              ? "bootstrap"
                    : strcmp(v->switchover_to, k->cfg->node) == 0 ? "switchover"
                    : k->cfg->dr                                 ? "regional_failover"
                                                               : "failover";
    k->event_lost_ms = k->leader_lost_wall_ms;
    k->event_acquired_ms = clock_wall_ms();
    k->event_promoted = false;
    k->event_loss_known = k->cfg->dr && v->epoch > 0;
    k->event_loss_bytes = k->leader_flush_lsn > k->last_flush_lsn
                              ? k->leader_flush_lsn - k->last_flush_lsn
                              : 0;
    k->event_loss_ms = v->dr_lag_ms;
    record_history(k, 0);
    return 0;
}

/* Set synchronous_standby_names. at_lsn: the local flush LSN the change
 * is recorded at (everything acknowledged under the old names is at or
 * below it); 0 reads it from PostgreSQL. */
static void set_sync_names(keeper *k, const keeper_names *names, uint64_t at_lsn)
{
    char value[512], err[512];
    if (keeper_sync_names_format(names, value, sizeof value) != 0)
        return;
    if (pgctl_set_sync_names(&k->pg, value, err, sizeof err) != 0) {
        log_warn(COMP, "cannot set synchronous_standby_names: %s", err);
        return;
    }
    k->pg_names = *names;
    if (at_lsn == 0) {
        pgctl_state ps;
        pgctl_read_state(&k->pg, &ps);
        at_lsn = ps.flush_lsn;
    }
    k->names_changed_at_lsn = at_lsn;
    log_info(COMP, "synchronous_standby_names = '%s'", value);
}

static void write_syncset(keeper *k, const keeper_names *names)
{
    char key[KEY_MAX];
    json_t *arr = json_array();
    for (size_t i = 0; i < names->count; i++)
        json_array_append_new(arr, json_string(names->names[i]));
    json_t *j = json_pack("{s:o}", "nodes", arr);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    key_of(k, key, "syncset");
    if (text && etcd_put(k->etcd, key, text, strlen(text), 0, NULL) == ETCD_OK)
        k->etcd_syncset = *names;
    free(text);
    json_decref(j);
}

/* rewinds/<epoch>-<node>: what pg_rewind threw away. WAL this node wrote
 * as a primary past the point where the new primary's history diverged
 * was never replicated to the synchronous set, so it was never
 * acknowledged to a client (rule 2) — but it is reported, not dropped
 * silently: from where, to where, how many bytes. */
static void report_discarded_wal(keeper *k, const keeper_view *v, uint64_t local_wal_end,
                                 bool was_primary)
{
    uint64_t diverged = 0;
    if (pgctl_last_rewind_divergence(&k->pg, &diverged) != 0)
        return; /* nothing was rewound */
    /* The end of our WAL before the rewind: the latest of what we saw
     * running (as a primary: flushed; as a standby: received) and what
     * the stopped data directory says. */
    uint64_t end = local_wal_end;
    if (k->own_primary_lsn > end)
        end = k->own_primary_lsn;
    if (k->last_flush_lsn > end)
        end = k->last_flush_lsn;
    uint64_t bytes = end > diverged ? end - diverged : 0;
    char key[KEY_MAX], suffix[96], from[32], to[32];
    snprintf(from, sizeof from, "%X/%X", (unsigned)(diverged >> 32), (unsigned)diverged);
    snprintf(to, sizeof to, "%X/%X", (unsigned)(end >> 32), (unsigned)end);
    snprintf(suffix, sizeof suffix, "rewinds/%020" PRId64 "-%s", v->epoch, k->cfg->node);
    key_of(k, key, suffix);
    json_t *j = json_pack("{s:s, s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "node",
                          k->cfg->node, "epoch", (json_int_t)v->epoch, "diverged_at", from,
                          "local_end", to, "role", was_primary ? "primary" : "standby",
                          "discarded_bytes", (json_int_t)bytes, "at_ms", (json_int_t)clock_wall_ms(),
                          "leader", v->leader, "region", k->cfg->region, "note",
                          bytes > 0 ? "WAL past the new leader's history was discarded: never "
                                      "acknowledged unless this node was a primary whose "
                                      "region was failed over (see docs/FAILOVER.md)"
                                    : "nothing of ours was past the divergence point");
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text != NULL)
        etcd_put(k->etcd, key, text, strlen(text), 0, NULL);
    free(text);
    json_decref(j);
    if (bytes > 0)
        log_warn(COMP, "pg_rewind discarded %" PRIu64 " bytes of WAL this node wrote as primary "
                       "past the divergence at %s (up to %s): never acknowledged, recorded in %s",
                 bytes, from, to, key);
    else
        log_info(COMP, "pg_rewind: diverged at %s, no WAL of ours past it", from);
}

/* The epoch goes into the ledger database so meridiand can refuse a node
 * whose epoch is not the cell's current one. Local commit: the record is
 * re-written by every promotion, and waiting for a standby here would
 * hold up the promotion itself. */
static void record_epoch(keeper *k, int64_t epoch)
{
    char sql[512], err[512];
    snprintf(sql, sizeof sql,
             "SET synchronous_commit = local;"
             "CREATE TABLE IF NOT EXISTS meridian_fencing (id int PRIMARY KEY DEFAULT 1 CHECK (id = 1),"
             " epoch bigint NOT NULL, node text NOT NULL, promoted_at timestamptz NOT NULL DEFAULT now());"
             "INSERT INTO meridian_fencing (epoch, node) VALUES (%" PRId64 ", '%s')"
             " ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, node = EXCLUDED.node,"
             " promoted_at = now()",
             epoch, k->cfg->node);
    if (pgctl_exec(&k->pg, sql, err, sizeof err) != 0)
        log_warn(COMP, "cannot record epoch %" PRId64 " in database %s: %s", epoch,
                 k->cfg->database, err);
}

static void ensure_database(keeper *k)
{
    char sql[256], err[512];
    pgctl_config pg = k->pg;
    pg.database = "postgres";
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", k->cfg->database);
    if (pgctl_exec(&pg, sql, err, sizeof err) != 0 && strstr(err, "already exists") == NULL)
        log_warn(COMP, "cannot create database %s: %s", k->cfg->database, err);
}

/* Synchronous names for a node that just became primary: the other
 * members of the synchronous set, or, if none, any other member, so that
 * writes are never acknowledged by the primary alone. at_lsn as for
 * set_sync_names. */
static void initial_sync_names(keeper *k, const keeper_view *v, uint64_t at_lsn)
{
    keeper_names names;
    memset(&names, 0, sizeof names);
    for (size_t i = 0; i < v->syncset_count; i++)
        if (strcmp(v->syncset[i], k->cfg->node) != 0)
            snprintf(names.names[names.count++], KEEPER_NAME_MAX, "%s", v->syncset[i]);
    if (names.count == 0)
        for (size_t i = 0; i < v->member_count; i++)
            snprintf(names.names[names.count++], KEEPER_NAME_MAX, "%s", v->members[i].name);
    if (names.count > 0)
        set_sync_names(k, &names, at_lsn);
}

static int do_action(keeper *k, keeper_action a, keeper_view *v)
{
    char err[1024] = "";
    int rc = 0;

    switch (a) {
    case KEEPER_ACT_NONE:
        break;
    case KEEPER_ACT_INITDB_AND_LEAD: {
        char key[KEY_MAX];
        bool created = false;
        key_of(k, key, "initialized");
        if (etcd_create_if_absent(k->etcd, key, k->cfg->node, strlen(k->cfg->node), 0, &created,
                                  NULL) != ETCD_OK || !created)
            return -1;
        log_info(COMP, "bootstrapping cell %s: initdb in %s", k->cfg->cell, k->cfg->basedir);
        if (pgctl_initdb(&k->pg, err, sizeof err) != 0 ||
            pgctl_start(&k->pg, 60000, err, sizeof err) != 0)
            break;
        ensure_database(k);
        if (acquire(k, v) != 0)
            return -1;
        record_epoch(k, v->epoch + 1);
        announce_writable(k, v->epoch + 1);
        record_history(k, clock_wall_ms());
        k->event_promoted = true;
        atomic_store(&k->writable, 1);
        break;
    }
    case KEEPER_ACT_BASEBACKUP:
        log_info(COMP, "cloning %s (127.0.0.1:%d)", v->leader, k->leader.port);
        if (pgctl_basebackup(&k->pg, k->leader.host, k->leader.port, err, sizeof err) == 0)
            rc = pgctl_start(&k->pg, 120000, err, sizeof err);
        else
            rc = -1;
        break;
    case KEEPER_ACT_START_STANDBY:
        if (!pgctl_is_standby_dir(&k->pg))
            rc = pgctl_configure_standby(&k->pg, v->leader_present ? k->leader.host : NULL,
                                         k->leader.port, err, sizeof err);
        if (rc == 0)
            rc = pgctl_start(&k->pg, 60000, err, sizeof err);
        break;
    case KEEPER_ACT_FOLLOW:
        rc = pgctl_set_primary_conninfo(&k->pg, k->leader.host, k->leader.port, err, sizeof err);
        break;
    case KEEPER_ACT_DETACH:
        rc = pgctl_set_primary_conninfo(&k->pg, NULL, 0, err, sizeof err);
        break;
    case KEEPER_ACT_ACQUIRE:
        rc = acquire(k, v);
        break;
    case KEEPER_ACT_PROMOTE: {
        int64_t t_action = clock_mono_ms();
        if (k->cfg->dr) {
            /* Regional failover: nobody of this cell runs in this region,
             * so commits cannot wait for a standby; they are asynchronous
             * until the home region's nodes rejoin (then RENEW makes them
             * synchronous again). Said loudly: this is the trade-off. */
            keeper_names none;
            memset(&none, 0, sizeof none);
            set_sync_names(k, &none, v->pg_flush_lsn);
            /* Nobody else holds every acknowledged commit now: the home
             * region's nodes may miss the async tail. An empty set keeps
             * them from being elected until they stream again from us and
             * RENEW puts them back (rule 2). */
            write_syncset(k, &none);
            log_warn(COMP, "regional failover: %s is primary with asynchronous commits until "
                           "home-region standbys rejoin", k->cfg->node);
        } else {
            /* A standby whose primary is gone receives nothing more: the
             * flush LSN just read is where the names change. */
            initial_sync_names(k, v, v->pg_flush_lsn);
        }
        int64_t t_names = clock_mono_ms();
        rc = pgctl_promote(&k->pg, 30, err, sizeof err);
        if (rc == 0) {
            int64_t t_promoted = clock_mono_ms();
            atomic_store(&k->writable, 1);
            record_epoch(k, v->epoch);
            int64_t t_epoch = clock_mono_ms();
            announce_writable(k, v->epoch);
            record_history(k, clock_wall_ms());
            int64_t t_done = clock_mono_ms();
            /* Every step here is write downtime: say which one was slow. */
            if (t_done - t_action > KEEPER_SLOW_PROMOTION_MS)
                log_warn(COMP, "slow promotion: %" PRId64 " ms (synchronous names %" PRId64
                               " ms, pg_promote %" PRId64 " ms, epoch %" PRId64
                               " ms, etcd %" PRId64 " ms)",
                         t_done - t_action, t_names - t_action, t_promoted - t_names,
                         t_epoch - t_promoted, t_done - t_epoch);
            k->event_promoted = true;
            if (strcmp(v->switchover_to, k->cfg->node) == 0) {
                char key[KEY_MAX];
                key_of(k, key, "switchover");
                etcd_delete(k->etcd, key); /* done: the request is consumed */
            }
            if (strcmp(v->failover_to, k->cfg->node) == 0) {
                char key[KEY_MAX];
                key_of(k, key, "failover");
                etcd_delete(k->etcd, key);
            }
        }
        break;
    }
    case KEEPER_ACT_START_PRIMARY:
        atomic_store(&k->writable, 1);
        rc = pgctl_start(&k->pg, 60000, err, sizeof err);
        if (rc == 0) {
            initial_sync_names(k, v, 0);
            /* Leading again under a new epoch (the old leader after etcd
             * lost and regained its majority) without a promotion: the
             * database must carry that epoch too, or meridiand refuses
             * to write to it. */
            record_epoch(k, v->epoch);
            announce_writable(k, v->epoch);
            if (k->event_epoch == v->epoch && !k->event_promoted) {
                record_history(k, clock_wall_ms());
                k->event_promoted = true;
            }
        }
        break;
    case KEEPER_ACT_FENCE:
        atomic_store(&k->writable, 0);
        rc = pgctl_stop(&k->pg, "immediate", 30000, err, sizeof err);
        k->holds_lease = false;
        break;
    case KEEPER_ACT_REWIND: {
        /* A former primary (fenced: immediate stop) or a standby whose
         * WAL went past the leader's fork point (fast stop). Crash
         * recovery first, so the local end of WAL is known and reported. */
        uint64_t local_end = 0;
        bool was_primary = v->pg_was_primary || !pgctl_is_standby_dir(&k->pg);
        log_info(COMP, "rewinding against %s (%s:%d)", v->leader, k->leader.host,
                 k->leader.port);
        rc = pgctl_stop(&k->pg, "fast", 30000, err, sizeof err);
        if (rc == 0)
            rc = pgctl_prepare_rewind(&k->pg, &local_end, err, sizeof err);
        if (rc == 0)
            rc = pgctl_rewind(&k->pg, k->leader.host, k->leader.port, err, sizeof err);
        if (rc == 0)
            report_discarded_wal(k, v, local_end, was_primary);
        if (rc == 0)
            rc = pgctl_start(&k->pg, 120000, err, sizeof err);
        k->fork_leader[0] = '\0'; /* our timeline changed: ask again */
        break;
    }
    case KEEPER_ACT_HANDOVER: {
        /* Planned switchover: a fast shutdown sends all WAL, up to the
         * shutdown checkpoint, to the connected standbys before the
         * server exits; publish that LSN, then let the lease go so the
         * target can take the key at once rather than after the TTL. */
        log_info(COMP, "switchover to %s: stopping PostgreSQL cleanly", v->switchover_to);
        atomic_store(&k->writable, 0);
        rc = pgctl_stop(&k->pg, "fast", 30000, err, sizeof err);
        if (rc != 0)
            break;
        pgctl_state ps;
        pgctl_read_state(&k->pg, &ps);
        publish_member(k, &ps);
        etcd_lease_revoke(k->etcd, atomic_load(&k->lease_id));
        k->holds_lease = false;
        atomic_store(&k->lease_valid_until_ms, 0);
        break;
    }
    case KEEPER_ACT_RENEW: {
        keeper_names desired;
        keeper_sync_plan plan;
        keeper_sync_desired(v, k->cfg->sync_lag_bytes_max, &desired);
        keeper_sync_plan_next(v, &desired, &k->pg_names, &k->etcd_syncset,
                              k->names_changed_at_lsn, &plan);
        if (plan.kind == KEEPER_SYNC_WRITE_ETCD)
            write_syncset(k, &plan.names);
        else if (plan.kind == KEEPER_SYNC_SET_PG)
            set_sync_names(k, &plan.names, 0);
        break;
    }
    case KEEPER_ACT_COUNT:
        mrd_assert(!"invalid action");
    }
    if (rc != 0 && err[0] != '\0')
        log_error(COMP, "%s failed: %s", keeper_action_name(a), err);
    return rc;
}

/* ---- The loop. */

static bool follows_leader(const keeper *k, const pgctl_state *ps)
{
    char want[96];
    if (k->leader.port <= 0)
        return false;
    snprintf(want, sizeof want, "host=%s port=%d ", k->leader.host, k->leader.port);
    return strncmp(ps->upstream, want, strlen(want)) == 0;
}

/* On the primary, what the standbys really do comes from
 * pg_stat_replication; fill streaming/lag from it. */
static void primary_replication_view(keeper *k, keeper_view *v, const pgctl_state *ps)
{
    char dsn[128];
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2",
             k->cfg->pg_port);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT application_name, flush_lsn FROM pg_stat_replication"
                                " WHERE state = 'streaming'");
        for (size_t i = 0; i < v->member_count; i++)
            v->members[i].streaming = false;
        memset(&k->replicas, 0, sizeof k->replicas);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            for (int row = 0; row < PQntuples(r); row++) {
                for (size_t i = 0; i < v->member_count; i++) {
                    keeper_member *m = &v->members[i];
                    if (strcmp(m->name, PQgetvalue(r, row, 0)) != 0)
                        continue;
                    uint64_t lsn = 0;
                    pgctl_parse_lsn(PQgetvalue(r, row, 1), &lsn);
                    m->streaming = true;
                    m->flush_lsn = lsn;
                    if (k->replicas.count < KEEPER_NODES_MAX)
                        snprintf(k->replicas.names[k->replicas.count++], KEEPER_NAME_MAX, "%s",
                                 m->name);
                    m->lag_bytes = ps->flush_lsn > lsn ? ps->flush_lsn - lsn : 0;
                }
            }
        }
        PQclear(r);
    }
    PQfinish(c);
}

/* nodes/<node>: the cell's registry of its nodes, without a lease, so
 * `meridianctl status` can show a node whose keeper is down. Best effort:
 * the keeper works without it. */
static void register_node(keeper *k)
{
    char key[KEY_MAX];
    key_of(k, key, "nodes/");
    strncat(key, k->cfg->node, KEY_MAX - strlen(key) - 1);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "node", k->cfg->node, "role",
                          k->cfg->dr ? "dr" : "candidate", "zone", k->cfg->zone, "region",
                          k->cfg->region, "host", "127.0.0.1", "port", k->cfg->pg_port);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (text != NULL && etcd_put(k->etcd, key, text, strlen(text), 0, NULL) != ETCD_OK)
        log_warn(COMP, "cannot register node in etcd (%s); will show only while alive",
                 etcd_client_last_error(k->etcd));
    free(text);
    json_decref(j);
}

/* DR watch thread (cfg->dr_fence_ms > 0): while this node is a writable
 * primary, every 100 ms ask the local PostgreSQL how far the DR standbys
 * have flushed. They "confirm" when they are caught up or their flush
 * LSN moved since the last look; dr_confirmed_ms is the last such time.
 * Its own thread and connection, so a slow query never delays the fence
 * thread's deadline. */
static void *dr_watch_thread(void *arg)
{
    keeper *k = arg;
    PGconn *c = NULL;
    int64_t last_flush = -1;
    while (!atomic_load(&k->stopping)) {
        usleep(100 * 1000);
        int64_t now = clock_mono_ms();
        keeper_names drs;
        pthread_mutex_lock(&k->dr_mu);
        drs = k->dr_names;
        pthread_mutex_unlock(&k->dr_mu);
        if (!atomic_load(&k->writable) || drs.count == 0) {
            atomic_store(&k->dr_confirmed_ms, now);
            last_flush = -1;
            continue;
        }
        if (c == NULL || PQstatus(c) != CONNECTION_OK) {
            PQfinish(c);
            char dsn[256];
            snprintf(dsn, sizeof dsn,
                     "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=2 "
                     "application_name=meridian-keeper-drwatch options='-c statement_timeout=1000'",
                     k->cfg->pg_port);
            c = PQconnectdb(dsn);
            if (PQstatus(c) != CONNECTION_OK)
                continue; /* no judgement without an answer */
        }
        char list[KEEPER_NODES_MAX * (KEEPER_NAME_MAX + 1) + 4] = "{";
        size_t used = 1;
        for (size_t i = 0; i < drs.count && used < sizeof list; i++) {
            int n = snprintf(list + used, sizeof list - used, "%s%s", i ? "," : "", drs.names[i]);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        if (used + 2 > sizeof list)
            continue;
        snprintf(list + used, sizeof list - used, "}");
        const char *params[1] = {list};
        PGresult *r = PQexecParams(
            c,
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), '0/0')::bigint,"
            " (SELECT max(pg_wal_lsn_diff(flush_lsn, '0/0'))::bigint FROM pg_stat_replication"
            "  WHERE application_name = ANY($1::text[]))",
            1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
            int64_t cur = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
            int64_t dr = PQgetisnull(r, 0, 1) ? -1 : strtoll(PQgetvalue(r, 0, 1), NULL, 10);
            if (dr >= 0 && (dr >= cur || dr != last_flush))
                atomic_store(&k->dr_confirmed_ms, now);
            last_flush = dr;
        } else {
            PQfinish(c);
            c = NULL;
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static void fence_now(keeper *k, const char *why)
{
    char err[256];
    log_warn(COMP, "%s: fencing PostgreSQL now", why);
    atomic_fetch_add(&k->fences, 1);
    atomic_store(&k->writable, 0);
    if (pgctl_stop(&k->pg, "immediate", 30000, err, sizeof err) != 0)
        log_error(COMP, "fence: %s", err);
}

static void *fence_thread(void *arg)
{
    keeper *k = arg;
    raise_thread_priority("fence");
    while (!atomic_load(&k->stopping)) {
        int64_t now = clock_mono_ms();
        if (atomic_load(&k->writable) && now >= atomic_load(&k->lease_valid_until_ms)) {
            fence_now(k, "lease deadline passed without renewal");
        } else if (atomic_load(&k->writable) &&
                   keeper_dr_fence_due(now, atomic_load(&k->etcd_answered_ms),
                                       atomic_load(&k->dr_confirmed_ms), k->cfg->dr_fence_ms,
                                       k->cfg->lease_ttl_s)) {
            /* Cut off from etcd and from the DR region alike: the DR
             * standby may take the cell once our lease runs out, and no
             * commit acknowledged from now on would reach it. The lease is
             * treated as gone: writes resume only after a renewal proves
             * etcd answers us again (then nobody else can hold the cell). */
            atomic_store(&k->lease_valid_until_ms, 0);
            fence_now(k, "etcd and the DR standbys silent past --dr-fence-ms (a partition?)");
        }
        usleep(20 * 1000);
    }
    return NULL;
}

/* Is this running standby past the point where the leader's history left
 * its timeline? Asked only while the leader publishes a higher timeline
 * than ours (a new leader was promoted and we do not stream from its
 * timeline yet); the answer for one (leader, its timeline, ours) is
 * cached. Unknown (leader unreachable) counts as not diverged: following
 * is tried, and the question is asked again next round. */
static bool diverged_from_leader(keeper *k, const keeper_view *v, const pgctl_state *ps)
{
    if (!v->etcd_ok || !v->leader_present || strcmp(v->leader, k->cfg->node) == 0 ||
        !ps->running || !ps->in_recovery || ps->timeline == 0 || k->leader.port <= 0)
        return false;
    uint32_t leader_tli = 0;
    for (size_t i = 0; i < v->member_count; i++)
        if (strcmp(v->members[i].name, v->leader) == 0 && v->members[i].present &&
            v->members[i].is_primary)
            leader_tli = v->members[i].timeline;
    /* A WAL receiver streaming from this leader proves our history is its
     * history (PostgreSQL refuses to stream a timeline that forked before
     * our replay point); remember it, because a standby's own timeline as
     * pg_control tells it lags until a restartpoint, and the receiver
     * stops the moment the leader dies — exactly when this question must
     * not send a good candidate into a rewind against a dead leader. */
    if (ps->receiving && follows_leader(k, ps)) {
        if (strcmp(k->streamed_leader, v->leader) != 0 || leader_tli > k->streamed_tli)
            k->streamed_tli = leader_tli;
        snprintf(k->streamed_leader, sizeof k->streamed_leader, "%s", v->leader);
        return false;
    }
    if (strcmp(k->streamed_leader, v->leader) == 0 && leader_tli <= k->streamed_tli)
        return false;
    if (leader_tli <= ps->timeline)
        return false;
    if (strcmp(k->fork_leader, v->leader) != 0 || k->fork_leader_tli != leader_tli ||
        k->fork_tli != ps->timeline || k->fork_rc < 0) {
        uint64_t lsn = 0;
        int rc = pgctl_timeline_switchpoint(k->leader.host, k->leader.port, leader_tli,
                                            ps->timeline, &lsn);
        snprintf(k->fork_leader, sizeof k->fork_leader, "%s", v->leader);
        k->fork_leader_tli = leader_tli;
        k->fork_tli = ps->timeline;
        k->fork_rc = rc;
        k->fork_lsn = lsn;
        if (rc == 0)
            log_info(COMP, "leader %s (timeline %u) left our timeline %u at %X/%X; we replayed "
                           "up to %X/%X",
                     v->leader, leader_tli, ps->timeline, (unsigned)(lsn >> 32), (unsigned)lsn,
                     (unsigned)(ps->replay_lsn >> 32), (unsigned)ps->replay_lsn);
        else if (rc == 1)
            log_warn(COMP, "our timeline %u is not in leader %s's history (timeline %u)",
                     ps->timeline, v->leader, leader_tli);
    }
    if (k->fork_rc == 1)
        return true;
    return k->fork_rc == 0 && ps->replay_lsn > k->fork_lsn;
}

/* One observe-decide-act round (see the FSM step loop inside for the
 * promotion that follows taking the leader key in the same round). */
static void loop_once(keeper *k)
{
    keeper_view v;
    memset(&v, 0, sizeof v);
    int64_t now = clock_mono_ms();

    if (read_cell(k, &v) == 0) {
        v.etcd_ok = true;
        /* Unseen is not lost: after etcd could not be read for longer
         * than a lease (etcd without a majority), the home region's
         * absence is counted afresh, else a DR standby would take the
         * cell the moment etcd came back, before the home keepers had
         * re-registered. (A failed read now and then does not reset it.) */
        if (now - k->etcd_ok_at_ms > (int64_t)k->cfg->lease_ttl_s * 1000)
            k->home_seen_at_ms = 0;
        k->etcd_ok_at_ms = now;
        atomic_store(&k->etcd_answered_ms, clock_mono_ms());
        if (!v.leader_present || strcmp(v.leader, k->cfg->node) != 0)
            k->holds_lease = false;
        k->cached = v;
    } else {
        v = k->cached;
        v.etcd_ok = false;
    }
    pgctl_state ps;
    pgctl_read_state(&k->pg, &ps);
    if (ps.running && !ps.in_recovery)
        k->own_primary_lsn = ps.flush_lsn;
    if (ps.running && ps.flush_lsn > 0)
        k->last_flush_lsn = ps.flush_lsn;

    v.now_ms = clock_mono_ms();
    snprintf(v.self, sizeof v.self, "%s", k->cfg->node);
    v.etcd_ok_at_ms = k->etcd_ok_at_ms;
    v.holds_lease = k->holds_lease;
    v.lease_valid_until_ms = atomic_load(&k->lease_valid_until_ms);
    v.pg_data_exists = pgctl_data_exists(&k->pg);
    v.pg_running = ps.running;
    v.pg_in_recovery = ps.in_recovery;
    v.pg_follows_leader = ps.running && ps.in_recovery && follows_leader(k, &ps);
    v.pg_was_primary = v.pg_data_exists && !pgctl_is_standby_dir(&k->pg) &&
                       !(ps.running && !ps.in_recovery && k->holds_lease);
    v.pg_timeline = ps.timeline;
    v.pg_flush_lsn = ps.flush_lsn;
    v.pg_diverged = diverged_from_leader(k, &v, &ps);
    v.etcd_lost_detach_ms = (int64_t)k->cfg->lease_ttl_s * 1000 - k->cfg->fence_margin_ms;

    /* Regional failover inputs: when did we last see the home region
     * (a leader, or any non-DR member), and how far behind the leader's
     * published LSN is this node (frozen once the leader's key goes). */
    if (v.etcd_ok) {
        bool home = v.leader_present;
        for (size_t i = 0; i < v.member_count; i++) {
            const keeper_member *m = &v.members[i];
            if (m->present && !m->is_dr)
                home = true;
            if (v.leader_present && strcmp(m->name, v.leader) == 0 && m->present) {
                k->leader_flush_lsn = m->flush_lsn;
                k->leader_seen_at_ms = v.now_ms;
                if (ps.flush_lsn >= m->flush_lsn)
                    k->caught_up_at_ms = v.now_ms;
            }
        }
        if (home || k->home_seen_at_ms == 0)
            k->home_seen_at_ms = v.now_ms;
    }
    if (v.etcd_ok && k->cfg->dr_fence_ms > 0) {
        keeper_names drs;
        memset(&drs, 0, sizeof drs);
        for (size_t i = 0; i < v.member_count && drs.count < KEEPER_NODES_MAX; i++)
            if (v.members[i].is_dr)
                snprintf(drs.names[drs.count++], sizeof drs.names[0], "%s", v.members[i].name);
        pthread_mutex_lock(&k->dr_mu);
        k->dr_names = drs;
        pthread_mutex_unlock(&k->dr_mu);
    }
    v.self_is_dr = k->cfg->dr;
    v.region_policy = k->cfg->region_policy;
    v.region_failover_after_ms = (int64_t)k->cfg->region_failover_after_s * 1000;
    v.max_loss_ms = k->cfg->max_loss_ms;
    v.home_lost_ms = v.now_ms - k->home_seen_at_ms;
    v.dr_lag_ms = k->leader_seen_at_ms > k->caught_up_at_ms
                      ? k->leader_seen_at_ms - k->caught_up_at_ms : 0;
    if (ps.running && !ps.in_recovery)
        primary_replication_view(k, &v, &ps);
    else
        memset(&k->replicas, 0, sizeof k->replicas);

    /* At most two steps a round: the second only right after this node
     * took the leader key, so that it promotes at once, on the view just
     * read plus what the acquisition changed, rather than after reading
     * etcd and PostgreSQL all over again (each read is write downtime). */
    for (int step = 0; step < 2; step++) {
        const keeper_transition *t = keeper_fsm_step(k->state, &v);
        if (t == NULL) {
            if (step == 0 && k->state == KEEPER_PRIMARY && v.etcd_ok)
                do_action(k, KEEPER_ACT_RENEW, &v);
            break;
        }
        if (t->to != k->state || t->action != KEEPER_ACT_NONE)
            log_info(COMP, "%s -> %s: %s [%s]", keeper_state_name(k->state),
                     keeper_state_name(t->to), t->why, keeper_action_name(t->action));
        keeper_state from = k->state;
        k->state = t->to;
        k->last_why = t->why;
        k->transitions++;
        if (t->action == KEEPER_ACT_FENCE)
            atomic_fetch_add(&k->fences, 1);
        if (t->action == KEEPER_ACT_PROMOTE)
            k->promotions++;
        int arc = do_action(k, t->action, &v);
        if (arc != 0 && t->action == KEEPER_ACT_INITDB_AND_LEAD)
            k->state = from; /* lost the bootstrap claim: decide again */
        if (arc != 0 || t->action != KEEPER_ACT_ACQUIRE || !k->holds_lease)
            break;
        v.leader_present = true;
        snprintf(v.leader, sizeof v.leader, "%s", k->cfg->node);
        v.epoch = k->event_epoch;
        v.holds_lease = true;
        v.lease_valid_until_ms = atomic_load(&k->lease_valid_until_ms);
        v.now_ms = clock_mono_ms();
    }
    if (k->state != KEEPER_PRIMARY && k->state != KEEPER_PROMOTING &&
        k->state != KEEPER_BOOTSTRAP)
        atomic_store(&k->writable, 0);
    if (v.etcd_ok) {
        pgctl_read_state(&k->pg, &ps);
        publish_member(k, &ps);
    }
    int64_t left = atomic_load(&k->lease_valid_until_ms) - clock_mono_ms();
    kmetrics_snapshot snap = {
        .node = k->cfg->node, .cell = k->cfg->cell, .state = keeper_state_name(k->state),
        .leader = k->holds_lease, .etcd_ok = v.etcd_ok, .pg_running = ps.running,
        .pg_in_recovery = ps.in_recovery, .epoch = v.epoch,
        .lease_left_ms = k->holds_lease && left > 0 ? left : 0, .flush_lsn = ps.flush_lsn,
        .timeline = ps.timeline, .transitions = k->transitions, .fences = atomic_load(&k->fences),
        .promotions = k->promotions, .sync_standbys = k->pg_names.count, .dr = k->cfg->dr,
        .lag_known = ps.running && ps.in_recovery && k->leader_seen_at_ms > 0,
        .lag_bytes = ps.running && ps.in_recovery && k->leader_flush_lsn > ps.flush_lsn
                         ? k->leader_flush_lsn - ps.flush_lsn
                         : 0,
        .lag_ms = k->leader_seen_at_ms > k->caught_up_at_ms
                      ? k->leader_seen_at_ms - k->caught_up_at_ms
                      : 0,
    };
    kmetrics_publish(&snap);
}

int keeper_run(const keeper_config *cfg, volatile int *stop, bool stop_pg)
{
    char err[512];
    keeper k;
    memset(&k, 0, sizeof k);
    k.cfg = cfg;
    k.pg = (pgctl_config){.bindir = cfg->pg_bindir, .basedir = cfg->basedir,
                          .run_as_user = cfg->run_as_user, .node_name = cfg->node,
                          .port = cfg->pg_port, .database = cfg->database};
    snprintf(k.prefix, sizeof k.prefix, "/meridian/%s/", cfg->cell);
    k.state = KEEPER_INIT;
    k.etcd_ok_at_ms = clock_mono_ms();
    atomic_store(&k.etcd_answered_ms, k.etcd_ok_at_ms);
    atomic_store(&k.dr_confirmed_ms, k.etcd_ok_at_ms);
    pthread_mutex_init(&k.dr_mu, NULL);
    k.etcd = etcd_client_create(cfg->etcd_endpoints, ETCD_TIMEOUT_MS, err, sizeof err);
    if (k.etcd == NULL) {
        log_error(COMP, "etcd endpoints: %s", err);
        return -1;
    }
    k.lease_etcd = etcd_client_create(cfg->etcd_endpoints, ETCD_TIMEOUT_MS, err, sizeof err);
    if (k.lease_etcd == NULL) {
        log_error(COMP, "etcd endpoints: %s", err);
        etcd_client_free(k.etcd);
        return -1;
    }
    pthread_t fence, renew, drwatch;
    bool drwatch_started = false;
    if (pthread_create(&fence, NULL, fence_thread, &k) != 0) {
        etcd_client_free(k.lease_etcd);
        etcd_client_free(k.etcd);
        pthread_mutex_destroy(&k.dr_mu);
        return -1;
    }
    if (pthread_create(&renew, NULL, lease_thread, &k) != 0) {
        atomic_store(&k.stopping, 1);
        pthread_join(fence, NULL);
        etcd_client_free(k.lease_etcd);
        etcd_client_free(k.etcd);
        pthread_mutex_destroy(&k.dr_mu);
        return -1;
    }
    if (cfg->dr_fence_ms > 0) {
        drwatch_started = pthread_create(&drwatch, NULL, dr_watch_thread, &k) == 0;
        if (!drwatch_started)
            log_warn(COMP, "cannot start the DR watch thread: --dr-fence-ms is off");
        else
            log_info(COMP, "DR-aware fencing: fence when etcd and the DR standbys are silent "
                           "for %d ms",
                     cfg->dr_fence_ms);
    }
    log_info(COMP, "keeper %s of cell %s started (PostgreSQL port %d, dir %s)", cfg->node,
             cfg->cell, cfg->pg_port, cfg->basedir);
    register_node(&k);
    /* Without the watch (it logs why) the loop still sees every change,
     * one loop period later at most. */
    char leader_key[KEY_MAX];
    key_of(&k, leader_key, "leader");
    etcd_watch *leader_watch =
        etcd_watch_start(cfg->etcd_endpoints, leader_key, false, 0, on_leader_event, &k);
    while (!*stop) {
        int64_t start = clock_mono_ms();
        loop_once(&k);
        /* An election is on (the leader key went a moment ago): the
         * candidate waits for the other members of the synchronous set to
         * publish their LSNs after the loss, and they publish once a round,
         * so rounds run faster for a while. Bounded: if nobody can lead
         * (status says why), the normal pace returns. */
        int period_ms = cfg->loop_ms;
        if (k.leader_lost_mono_ms > 0 &&
            clock_mono_ms() - k.leader_lost_mono_ms < KEEPER_ELECTION_PACE_FOR_MS &&
            period_ms > KEEPER_ELECTION_LOOP_MS)
            period_ms = KEEPER_ELECTION_LOOP_MS;
        int64_t left = period_ms - (clock_mono_ms() - start);
        while (left > 0 && !*stop && !atomic_exchange(&k.wake, 0)) {
            usleep((useconds_t)(left > 10 ? 10 : left) * 1000);
            left -= 10;
        }
    }
    log_info(COMP, "keeper %s stopping", cfg->node);
    etcd_watch_stop(leader_watch);
    if (k.holds_lease)
        etcd_lease_revoke(k.etcd, atomic_load(&k.lease_id)); /* hand over at once */
    if (stop_pg || k.holds_lease) {
        atomic_store(&k.writable, 0);
        pgctl_stop(&k.pg, "fast", 30000, err, sizeof err);
    }
    if (k.member_lease_id)
        etcd_lease_revoke(k.etcd, k.member_lease_id);
    atomic_store(&k.stopping, 1);
    pthread_join(renew, NULL);
    pthread_join(fence, NULL);
    if (drwatch_started)
        pthread_join(drwatch, NULL);
    pthread_mutex_destroy(&k.dr_mu);
    etcd_client_free(k.lease_etcd);
    etcd_client_free(k.etcd);
    return 0;
}
