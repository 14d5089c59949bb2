/*
 * route.c — the cell's current leader for meridiand (see route.h).
 *
 * Three sources feed one state, ordered by etcd revision so that an old
 * answer never overwrites a newer one:
 *   - the first read at creation (a transaction with one GET, whose
 *     header revision says exactly where the watch must start, so no
 *     change between the read and the watch is missed);
 *   - the watch on the leader key (PUT, DELETE; COMPACTED asks for a
 *     re-read);
 *   - a poller thread re-reading the key every ROUTE_POLL_MS, the safety
 *     net for a first read that failed (etcd down at start) and for
 *     compaction. It costs one small etcd request a second.
 * A change of (has_leader, host, port, epoch) bumps the generation and
 * wakes every waiter. The value itself is validated before use: host and
 * node go into a libpq connection string, so only plain characters pass.
 */
#include "service/route.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "etcd/etcd.h"
#include "service/metrics.h"

#define COMP "route"

/* Period of the safety-net re-read of the leader key. */
#define ROUTE_POLL_MS 1000
/* Timeout of one etcd exchange of the poller (it fails over across
 * members, so one read may take a few of these). */
#define ROUTE_ETCD_TIMEOUT_MS 1000
/* Longest leader key value we accept. */
#define ROUTE_VALUE_BYTES_MAX 4096
/* Longest cell name (etcd key component). */
#define ROUTE_CELL_MAX 64

struct route_source {
    bool etcd;
    char *dsn;
    char cell[ROUTE_CELL_MAX];
    char region[ROUTE_CELL_MAX]; /* this process's region ("" = any): picks the leader's address */
    char key[ROUTE_CELL_MAX + 32];
    char *endpoints;

    pthread_mutex_t mu;
    pthread_cond_t changed; /* CLOCK_MONOTONIC; broadcast on every change and at stop */
    route_snapshot cur;
    int64_t applied_rev;    /* etcd revision of the information in cur */
    bool poll_now;          /* the watch asks the poller for a re-read */
    bool stopping;

    etcd_client *client;    /* the poller's (and the first read's) */
    etcd_watch *watch;
    pthread_t poller;
    bool poller_started;

    /* The first write acknowledged under an epoch, for the cell's
     * history (route_note_write): pending until the poller recorded it. */
    int64_t note_epoch, note_at_ms, noted_epoch;
};

/* ------------------------------------------------------------------ */

static struct timespec deadline_after_ms(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Host names, addresses and node names: letters, digits, '.', '-', '_',
 * ':' (IPv6). Nothing that could end a conninfo value. */
static bool plain_text(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char c = s[n];
        if (n >= max) return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == '_' || c == ':'))
            return false;
    }
    return n > 0;
}

int route_parse_leader(const char *json, size_t len, route_snapshot *out)
{
    return route_parse_leader_in(json, len, NULL, out);
}

/* "host:port" -> parts. Returns 0 or -1. */
static int split_addr(const char *addr, char *host, size_t host_size, int *port)
{
    const char *colon = addr != NULL ? strrchr(addr, ':') : NULL;
    if (colon == NULL || colon == addr || (size_t)(colon - addr) >= host_size)
        return -1;
    char *end = NULL;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || p < 1 || p > 65535)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    *port = (int)p;
    return 0;
}

int route_parse_leader_in(const char *json, size_t len, const char *region,
                          route_snapshot *out)
{
    mrd_assert(out != NULL);
    if (json == NULL || len == 0 || len > ROUTE_VALUE_BYTES_MAX) return -1;
    json_t *j = json_loadb(json, len, 0, NULL);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        return -1;
    }
    int rc = -1;
    json_t *node = json_object_get(j, "node"), *host = json_object_get(j, "host");
    json_t *port = json_object_get(j, "port"), *epoch = json_object_get(j, "epoch");
    if (!json_is_string(node) || !json_is_string(host) || !json_is_integer(port)) goto out;
    const char *n = json_string_value(node), *h = json_string_value(host);
    if (!plain_text(n, ROUTE_NODE_MAX - 1) || !plain_text(h, ROUTE_HOST_MAX - 1)) goto out;
    json_int_t p = json_integer_value(port);
    if (p < 1 || p > 65535) goto out;
    int64_t e = 0;
    if (json_is_integer(epoch)) {
        e = (int64_t)json_integer_value(epoch);
    } else if (json_is_string(epoch)) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(json_string_value(epoch), &end, 10);
        if (errno != 0 || end == json_string_value(epoch) || *end != '\0') goto out;
        e = (int64_t)v;
    } else {
        goto out;
    }
    if (e < 1) goto out;
    out->has_leader = true;
    snprintf(out->node, sizeof out->node, "%s", n);
    snprintf(out->host, sizeof out->host, "%s", h);
    out->port = (int)p;
    out->epoch = e;
    out->writable = json_is_true(json_object_get(j, "writable"));
    /* A leader in another region may advertise the address by which this
     * region reaches it (in the lab: a WAN-emulator link). */
    if (region != NULL && region[0] != '\0') {
        const char *a = json_string_value(json_object_get(json_object_get(j, "addrs"), region));
        char ah[ROUTE_HOST_MAX];
        int ap = 0;
        if (a != NULL && split_addr(a, ah, sizeof ah, &ap) == 0 && plain_text(ah, ROUTE_HOST_MAX - 1)) {
            snprintf(out->host, sizeof out->host, "%s", ah);
            out->port = ap;
        }
    }
    rc = 0;
out:
    json_decref(j);
    return rc;
}

/* Apply what etcd said at revision rev: kv is the leader key's value or
 * NULL when absent. Older information than what we hold is ignored. */
static void apply(route_source *r, const char *value, size_t value_len, int64_t rev,
                  const char *source)
{
    route_snapshot next;
    memset(&next, 0, sizeof next);
    if (value != NULL && route_parse_leader_in(value, value_len, r->region, &next) != 0) {
        log_error(COMP, "cell %s: ignoring malformed leader key (%s, revision %" PRId64
                        "): %.*s",
                  r->cell, source, rev, (int)(value_len > 200 ? 200 : value_len), value);
        /* Treated as "no usable leader": writes wait instead of going
         * somewhere we cannot name. */
        memset(&next, 0, sizeof next);
    }
    pthread_mutex_lock(&r->mu);
    if (rev <= r->applied_rev) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    r->applied_rev = rev;
    route_snapshot *c = &r->cur;
    bool same = c->has_leader == next.has_leader &&
                (!next.has_leader || (c->port == next.port && c->epoch == next.epoch &&
                                      c->writable == next.writable &&
                                      strcmp(c->host, next.host) == 0 &&
                                      strcmp(c->node, next.node) == 0));
    if (!same) {
        next.generation = c->generation + 1;
        *c = next;
        pthread_cond_broadcast(&r->changed);
    }
    route_snapshot now = *c;
    pthread_mutex_unlock(&r->mu);
    if (same) return;
    metrics_route_change(now.has_leader ? now.epoch : 0);
    if (now.has_leader)
        log_info(COMP, "cell %s: leader %s at %s:%d, epoch %" PRId64 "%s (generation %" PRIu64
                       ", %s, revision %" PRId64 ")",
                 r->cell, now.node, now.host, now.port, now.epoch,
                 now.writable ? ", writable" : "", now.generation, source, rev);
    else
        log_warn(COMP, "cell %s: no leader (generation %" PRIu64 ", %s, revision %" PRId64 ")",
                 r->cell, now.generation, source, rev);
}

/* Read the leader key with its header revision. Returns 0 (applied) or -1. */
static int read_leader(route_source *r, int64_t *revision)
{
    etcd_op op = {.kind = ETCD_OP_GET, .key = r->key};
    etcd_txn txn = {.success = &op, .success_count = 1};
    etcd_txn_result res;
    int rc = etcd_txn_run(r->client, &txn, &res);
    if (rc != ETCD_OK) {
        log_debug(COMP, "cell %s: cannot read %s: %s (%s)", r->cell, r->key,
                  etcd_strerror(rc), etcd_client_last_error(r->client));
        return -1;
    }
    if (res.kv_count > 0)
        apply(r, res.kvs[0].value, res.kvs[0].value_len, res.revision, "read");
    else
        apply(r, NULL, 0, res.revision, "read");
    if (revision != NULL) *revision = res.revision;
    etcd_txn_result_release(&res);
    return 0;
}

static void on_event(const etcd_event *ev, void *arg)
{
    route_source *r = arg;
    switch (ev->type) {
    case ETCD_EVENT_PUT:
        apply(r, ev->kv.value, ev->kv.value_len, ev->revision, "watch");
        break;
    case ETCD_EVENT_DELETE:
        apply(r, NULL, 0, ev->revision, "watch");
        break;
    case ETCD_EVENT_COMPACTED:
        pthread_mutex_lock(&r->mu);
        r->poll_now = true;
        pthread_cond_broadcast(&r->changed);
        pthread_mutex_unlock(&r->mu);
        break;
    }
}

/* Record /meridian/<cell>/writes/<epoch> = {"epoch", "at_ms"} unless a
 * meridiand recorded it first (create-if-absent: the earliest one to
 * reach etcd stays). `meridianctl history` shows it as the first
 * acknowledged write after the failover, and the RTO. Poller thread. */
static void record_first_write(route_source *r, int64_t epoch, int64_t at_ms)
{
    char key[ROUTE_CELL_MAX + 64], value[128];
    snprintf(key, sizeof key, "/meridian/%s/writes/%020" PRId64, r->cell, epoch);
    int n = snprintf(value, sizeof value, "{\"epoch\":%" PRId64 ",\"at_ms\":%" PRId64 "}", epoch,
                     at_ms);
    bool created = false;
    etcd_kv existing = {0};
    int rc = etcd_create_if_absent(r->client, key, value, (size_t)n, 0, &created, &existing);
    etcd_kv_release(&existing);
    pthread_mutex_lock(&r->mu);
    if (rc == ETCD_OK && epoch > r->noted_epoch)
        r->noted_epoch = epoch; /* written, or another meridiand was first */
    pthread_mutex_unlock(&r->mu);
}

static void *poller_main(void *arg)
{
    route_source *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        struct timespec deadline = deadline_after_ms(ROUTE_POLL_MS);
        while (!r->stopping && !r->poll_now &&
               pthread_cond_timedwait(&r->changed, &r->mu, &deadline) != ETIMEDOUT) {
        }
        bool stop = r->stopping;
        r->poll_now = false;
        int64_t note_epoch = r->note_epoch > r->noted_epoch ? r->note_epoch : 0;
        int64_t note_at = r->note_at_ms;
        pthread_mutex_unlock(&r->mu);
        if (stop) break;
        read_leader(r, NULL);
        if (note_epoch > 0)
            record_first_write(r, note_epoch, note_at);
    }
    return NULL;
}

void route_note_write(route_source *r, int64_t epoch, int64_t at_ms)
{
    if (!r->etcd || epoch <= 0)
        return;
    pthread_mutex_lock(&r->mu);
    if (epoch > r->noted_epoch && epoch > r->note_epoch) {
        r->note_epoch = epoch;
        r->note_at_ms = at_ms;
        r->poll_now = true;
        pthread_cond_broadcast(&r->changed);
    }
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------------ */

static route_source *alloc_source(const char *dsn, char *err, size_t err_size)
{
    route_source *r = calloc(1, sizeof *r);
    if (r == NULL) goto oom;
    r->dsn = strdup(dsn);
    if (r->dsn == NULL) goto oom;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&r->mu, NULL) != 0) goto oom;
    if (pthread_condattr_init(&ca) != 0) goto oom;
    int rc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (rc == 0) rc = pthread_cond_init(&r->changed, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) goto oom;
    return r;
oom:
    snprintf(err, err_size, "out of memory");
    if (r != NULL) free(r->dsn);
    free(r);
    return NULL;
}

route_source *route_create_static(const char *dsn, char *err, size_t err_size)
{
    mrd_assert(err != NULL && err_size > 0);
    if (dsn == NULL || dsn[0] == '\0') {
        snprintf(err, err_size, "database DSN is empty");
        return NULL;
    }
    route_source *r = alloc_source(dsn, err, err_size);
    if (r == NULL) return NULL;
    r->cur.has_leader = true;
    r->cur.generation = 1;
    return r;
}

route_source *route_create_etcd(const char *endpoints_csv, const char *cell, const char *dsn,
                                char *err, size_t err_size)
{
    return route_create_etcd_in(endpoints_csv, cell, NULL, dsn, err, err_size);
}

route_source *route_create_etcd_in(const char *endpoints_csv, const char *cell,
                                   const char *region, const char *dsn, char *err,
                                   size_t err_size)
{
    mrd_assert(err != NULL && err_size > 0);
    if (region != NULL && region[0] != '\0' && !plain_text(region, ROUTE_CELL_MAX - 1)) {
        snprintf(err, err_size, "region name \"%s\" must be 1..%d letters, digits, '.', '-', '_'",
                 region, ROUTE_CELL_MAX - 1);
        return NULL;
    }
    if (endpoints_csv == NULL || endpoints_csv[0] == '\0') {
        snprintf(err, err_size, "no etcd endpoints");
        return NULL;
    }
    if (cell == NULL || !plain_text(cell, ROUTE_CELL_MAX - 1)) {
        snprintf(err, err_size, "cell name \"%s\" must be 1..%d letters, digits, '.', '-', '_'",
                 cell != NULL ? cell : "", ROUTE_CELL_MAX - 1);
        return NULL;
    }
    if (dsn == NULL) dsn = "";
    if (strncmp(dsn, "postgres://", 11) == 0 || strncmp(dsn, "postgresql://", 13) == 0) {
        snprintf(err, err_size,
                 "with etcd, dsn must be keyword=value pairs (such as \"user=postgres "
                 "dbname=meridian\"): the leader's host and port are appended to it");
        return NULL;
    }
    route_source *r = alloc_source(dsn, err, err_size);
    if (r == NULL) return NULL;
    r->etcd = true;
    snprintf(r->cell, sizeof r->cell, "%s", cell);
    snprintf(r->region, sizeof r->region, "%s", region != NULL ? region : "");
    snprintf(r->key, sizeof r->key, "/meridian/%s/leader", cell);
    r->cur.generation = 1; /* no leader until etcd names one */
    r->endpoints = strdup(endpoints_csv);
    if (r->endpoints == NULL) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    char why[256] = "";
    r->client = etcd_client_create(endpoints_csv, ROUTE_ETCD_TIMEOUT_MS, why, sizeof why);
    if (r->client == NULL) {
        snprintf(err, err_size, "etcd endpoints \"%s\": %s", endpoints_csv, why);
        goto fail;
    }
    int64_t rev = 0;
    if (read_leader(r, &rev) != 0)
        log_warn(COMP, "cell %s: etcd unreachable at start (%s); waiting for it", cell,
                 etcd_client_last_error(r->client));
    r->watch = etcd_watch_start(endpoints_csv, r->key, false, rev > 0 ? rev + 1 : 0, on_event, r);
    if (r->watch == NULL) {
        snprintf(err, err_size, "cannot start the etcd watch on %s", r->key);
        goto fail;
    }
    if (pthread_create(&r->poller, NULL, poller_main, r) != 0) {
        snprintf(err, err_size, "cannot start the route poller thread");
        goto fail;
    }
    r->poller_started = true;
    return r;
fail:
    route_free(r);
    return NULL;
}

void route_free(route_source *r)
{
    if (r == NULL) return;
    pthread_mutex_lock(&r->mu);
    r->stopping = true;
    pthread_cond_broadcast(&r->changed);
    pthread_mutex_unlock(&r->mu);
    etcd_watch_stop(r->watch);
    if (r->poller_started) pthread_join(r->poller, NULL);
    etcd_client_free(r->client);
    pthread_cond_destroy(&r->changed);
    pthread_mutex_destroy(&r->mu);
    free(r->endpoints);
    free(r->dsn);
    free(r);
}

bool route_is_etcd(const route_source *r)
{
    mrd_assert(r != NULL);
    return r->etcd;
}

const char *route_cell(const route_source *r)
{
    mrd_assert(r != NULL);
    return r->cell;
}

void route_current(route_source *r, route_snapshot *out)
{
    mrd_assert(r != NULL && out != NULL);
    pthread_mutex_lock(&r->mu);
    *out = r->cur;
    pthread_mutex_unlock(&r->mu);
}

int route_wait_leader(route_source *r, int timeout_ms, route_snapshot *out)
{
    mrd_assert(r != NULL && out != NULL && timeout_ms >= 0);
    struct timespec deadline = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (!r->cur.has_leader && !r->stopping &&
           pthread_cond_timedwait(&r->changed, &r->mu, &deadline) != ETIMEDOUT) {
    }
    *out = r->cur;
    pthread_mutex_unlock(&r->mu);
    return out->has_leader ? 0 : -1;
}

int route_wait_change(route_source *r, uint64_t generation, int timeout_ms,
                      route_snapshot *out)
{
    mrd_assert(r != NULL && out != NULL && timeout_ms >= 0);
    struct timespec deadline = deadline_after_ms(timeout_ms);
    pthread_mutex_lock(&r->mu);
    while (r->cur.generation == generation && !r->stopping &&
           pthread_cond_timedwait(&r->changed, &r->mu, &deadline) != ETIMEDOUT) {
    }
    *out = r->cur;
    pthread_mutex_unlock(&r->mu);
    return out->generation != generation ? 0 : -1;
}

int route_dsn(const route_source *r, const route_snapshot *s, char *buf, size_t size)
{
    mrd_assert(r != NULL && s != NULL && buf != NULL && size > 0);
    if (!s->has_leader) return -1;
    int n;
    if (!r->etcd)
        n = snprintf(buf, size, "%s", r->dsn);
    else
        n = snprintf(buf, size, "%s%shost=%s port=%d", r->dsn, r->dsn[0] != '\0' ? " " : "",
                     s->host, s->port);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}
