/*
 * metrics.c — the process-wide Prometheus counters of meridiand.
 *
 * Every observation is a handful of relaxed atomic increments on fixed
 * arrays sized at compile time (routes x HTTP statuses, histogram
 * buckets, result codes), so handler threads and batcher workers never
 * take a lock to count. Rendering (GET /metrics) reads the atomics one by
 * one: a scrape may see one observation's counter but not yet its
 * histogram bucket, which Prometheus tolerates; it never sees torn
 * values. Histogram buckets are stored per bucket and made cumulative
 * when rendered. Durations are accumulated in nanoseconds and shown in
 * seconds, the base unit Prometheus expects.
 */
#include "service/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mrd_assert.h"

/* ---- Fixed label sets. */

static const char *const route_names[] = {
    "transfers_create", "transfers_get", "accounts_create", "accounts_get",
    "accounts_lookup", "account_transfers", "account_balances", "balances",
    "healthz", "readyz", "metrics", "other",
};
#define ROUTE_COUNT (sizeof route_names / sizeof route_names[0])
#define ROUTE_OTHER (ROUTE_COUNT - 1)

/* HTTP statuses 100..599 are counted exactly; anything else as 599
 * would lie, so it is clamped into a separate "other" slot (index 0). */
#define STATUS_MIN 100
#define STATUS_MAX 599
#define STATUS_SLOTS (STATUS_MAX - STATUS_MIN + 2)

static const double duration_buckets_s[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0,
};
#define DURATION_BUCKETS (sizeof duration_buckets_s / sizeof duration_buckets_s[0])

/* Events per commit: 1, 2, 4, ..., 8192 (LIMIT_COMMIT_EVENTS_MAX fits). */
#define EVENTS_BUCKETS 14

/* Largest rendered text; far above what the fixed label sets produce
 * (~40 KiB with every series present). */
#define RENDER_BYTES_MAX (1024u * 1024u)

typedef struct histogram {
    atomic_uint_fast64_t buckets[DURATION_BUCKETS + 1]; /* last: +Inf only */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_ns;
} histogram;

typedef struct events_histogram {
    atomic_uint_fast64_t buckets[EVENTS_BUCKETS + 1];
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum;
} events_histogram;

/* The one metrics state of the process (zero-initialised: all counters
 * start at 0, the database is reported down until someone says up). */
static struct {
    atomic_uint_fast64_t http_requests[ROUTE_COUNT][STATUS_SLOTS];
    histogram http_duration[ROUTE_COUNT];
    events_histogram commit_events;
    histogram commit_duration;
    atomic_uint_fast64_t commit_retries;
    atomic_uint_fast64_t transfers[LEDGER_TRANSFER_RESULT_COUNT];
    atomic_uint_fast64_t accounts[LEDGER_ACCOUNT_RESULT_COUNT];
    atomic_uint_fast64_t queue_depth;
    atomic_int db_up;
    atomic_int_fast64_t route_epoch;
    atomic_uint_fast64_t route_changes;
    atomic_uint_fast64_t fenced_commits;
    atomic_uint_fast64_t global_confirmed, global_timeouts, global_wait_ns;
} m;

static void add(atomic_uint_fast64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

static uint64_t get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static size_t route_index(const char *route)
{
    if (route == NULL) return ROUTE_OTHER;
    for (size_t i = 0; i < ROUTE_COUNT; i++)
        if (strcmp(route_names[i], route) == 0) return i;
    return ROUTE_OTHER;
}

static uint64_t seconds_to_ns(double seconds)
{
    if (!(seconds > 0)) return 0; /* negative or NaN: a clock step, count 0 */
    if (seconds > 1e9) return UINT64_C(1000000000) * UINT64_C(1000000000);
    return (uint64_t)(seconds * 1e9 + 0.5);
}

static void histogram_observe(histogram *h, double seconds)
{
    size_t i = 0;
    while (i < DURATION_BUCKETS && !(seconds <= duration_buckets_s[i])) i++;
    add(&h->buckets[i], 1);
    add(&h->sum_ns, seconds_to_ns(seconds));
    add(&h->count, 1);
}

void metrics_http_observe(const char *route, int status, double seconds)
{
    size_t r = route_index(route);
    size_t s = (status >= STATUS_MIN && status <= STATUS_MAX)
                   ? (size_t)(status - STATUS_MIN + 1)
                   : 0;
    add(&m.http_requests[r][s], 1);
    histogram_observe(&m.http_duration[r], seconds);
}

void metrics_commit_observe(size_t events, double seconds)
{
    size_t i = 0;
    while (i < EVENTS_BUCKETS && events > ((size_t)1 << i)) i++;
    add(&m.commit_events.buckets[i], 1);
    add(&m.commit_events.sum, events);
    add(&m.commit_events.count, 1);
    histogram_observe(&m.commit_duration, seconds);
}

void metrics_commit_retry(void)
{
    add(&m.commit_retries, 1);
}

void metrics_transfer_results(const ledger_transfer_result *results, size_t count)
{
    mrd_assert(results != NULL || count == 0);
    for (size_t i = 0; i < count; i++) {
        unsigned r = (unsigned)results[i];
        mrd_assert(r < LEDGER_TRANSFER_RESULT_COUNT);
        add(&m.transfers[r], 1);
    }
}

void metrics_account_results(const ledger_account_result *results, size_t count)
{
    mrd_assert(results != NULL || count == 0);
    for (size_t i = 0; i < count; i++) {
        unsigned r = (unsigned)results[i];
        mrd_assert(r < LEDGER_ACCOUNT_RESULT_COUNT);
        add(&m.accounts[r], 1);
    }
}

void metrics_queue_depth_set(size_t depth)
{
    atomic_store_explicit(&m.queue_depth, depth, memory_order_relaxed);
}

void metrics_db_up_set(int up)
{
    atomic_store_explicit(&m.db_up, up ? 1 : 0, memory_order_relaxed);
}

void metrics_route_change(int64_t epoch)
{
    atomic_store_explicit(&m.route_epoch, epoch, memory_order_relaxed);
    add(&m.route_changes, 1);
}

void metrics_fenced_commit(void)
{
    add(&m.fenced_commits, 1);
}

void metrics_global_wait(int confirmed, double seconds)
{
    add(confirmed ? &m.global_confirmed : &m.global_timeouts, 1);
    add(&m.global_wait_ns, seconds > 0 ? (uint64_t)(seconds * 1e9) : 0);
}

/* ---- Rendering: a bounded growable buffer. */

typedef struct outbuf {
    char *data;
    size_t len;
    size_t cap;
    int failed; /* allocation failure or RENDER_BYTES_MAX reached */
} outbuf;

static void out_printf(outbuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(outbuf *o, const char *fmt, ...)
{
    if (o->failed) return;
    for (int attempt = 0; attempt < 2; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t need = o->len + (size_t)n + 1;
        size_t cap = o->cap * 2;
        while (cap < need) cap *= 2;
        if (cap > RENDER_BYTES_MAX) {
            o->failed = 1;
            return;
        }
        char *p = realloc(o->data, cap);
        if (p == NULL) {
            o->failed = 1;
            return;
        }
        o->data = p;
        o->cap = cap;
    }
}

static void render_duration_histogram(outbuf *o, const char *name, const char *labels,
                                      histogram *h)
{
    uint64_t cumulative = 0;
    const char *sep = labels[0] != '\0' ? "," : "";
    for (size_t i = 0; i < DURATION_BUCKETS; i++) {
        cumulative += get(&h->buckets[i]);
        out_printf(o, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                   duration_buckets_s[i], (unsigned long long)cumulative);
    }
    cumulative += get(&h->buckets[DURATION_BUCKETS]);
    /* The count is read after the buckets and may be ahead by in-flight
     * observations; +Inf must equal _count, so both print the larger. */
    uint64_t count = get(&h->count);
    if (count < cumulative) count = cumulative;
    uint64_t sum_ns = get(&h->sum_ns);
    out_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
               (unsigned long long)count);
    const char *open = labels[0] != '\0' ? "{" : "";
    const char *close = labels[0] != '\0' ? "}" : "";
    out_printf(o, "%s_sum%s%s%s %llu.%09llu\n", name, open, labels, close,
               (unsigned long long)(sum_ns / 1000000000u),
               (unsigned long long)(sum_ns % 1000000000u));
    out_printf(o, "%s_count%s%s%s %llu\n", name, open, labels, close,
               (unsigned long long)count);
}

char *metrics_render(void)
{
    outbuf o = {.data = malloc(16384), .len = 0, .cap = 16384, .failed = 0};
    if (o.data == NULL) return NULL;
    o.data[0] = '\0';

    out_printf(&o, "# HELP meridian_http_requests_total HTTP requests answered, by route and status.\n"
                   "# TYPE meridian_http_requests_total counter\n");
    for (size_t r = 0; r < ROUTE_COUNT; r++) {
        for (size_t s = 0; s < STATUS_SLOTS; s++) {
            uint64_t v = get(&m.http_requests[r][s]);
            if (v == 0) continue;
            if (s == 0)
                out_printf(&o, "meridian_http_requests_total{route=\"%s\",status=\"other\"} %llu\n",
                           route_names[r], (unsigned long long)v);
            else
                out_printf(&o, "meridian_http_requests_total{route=\"%s\",status=\"%zu\"} %llu\n",
                           route_names[r], s - 1 + STATUS_MIN, (unsigned long long)v);
        }
    }

    out_printf(&o, "# HELP meridian_http_request_duration_seconds Time from request headers to response, by route.\n"
                   "# TYPE meridian_http_request_duration_seconds histogram\n");
    for (size_t r = 0; r < ROUTE_COUNT; r++) {
        if (get(&m.http_duration[r].count) == 0) continue;
        char labels[64];
        snprintf(labels, sizeof labels, "route=\"%s\"", route_names[r]);
        render_duration_histogram(&o, "meridian_http_request_duration_seconds", labels,
                                  &m.http_duration[r]);
    }

    out_printf(&o, "# HELP meridian_commit_events Events (transfers, accounts, expiries) per database commit.\n"
                   "# TYPE meridian_commit_events histogram\n");
    {
        uint64_t cumulative = 0;
        for (size_t i = 0; i < EVENTS_BUCKETS; i++) {
            cumulative += get(&m.commit_events.buckets[i]);
            out_printf(&o, "meridian_commit_events_bucket{le=\"%llu\"} %llu\n",
                       (unsigned long long)1 << i, (unsigned long long)cumulative);
        }
        cumulative += get(&m.commit_events.buckets[EVENTS_BUCKETS]);
        uint64_t count = get(&m.commit_events.count);
        if (count < cumulative) count = cumulative;
        out_printf(&o, "meridian_commit_events_bucket{le=\"+Inf\"} %llu\n"
                       "meridian_commit_events_sum %llu\n"
                       "meridian_commit_events_count %llu\n",
                   (unsigned long long)count,
                   (unsigned long long)get(&m.commit_events.sum),
                   (unsigned long long)count);
    }

    out_printf(&o, "# HELP meridian_commit_duration_seconds Duration of one group commit, first statement to COMMIT.\n"
                   "# TYPE meridian_commit_duration_seconds histogram\n");
    render_duration_histogram(&o, "meridian_commit_duration_seconds", "", &m.commit_duration);

    out_printf(&o, "# HELP meridian_commit_retries_total Whole-batch retries (serialization failure, deadlock, concurrent duplicate id).\n"
                   "# TYPE meridian_commit_retries_total counter\n"
                   "meridian_commit_retries_total %llu\n",
               (unsigned long long)get(&m.commit_retries));

    out_printf(&o, "# HELP meridian_transfers_total Transfer events answered, by result code.\n"
                   "# TYPE meridian_transfers_total counter\n");
    for (unsigned r = 0; r < LEDGER_TRANSFER_RESULT_COUNT; r++) {
        uint64_t v = get(&m.transfers[r]);
        if (v == 0 && r != LEDGER_TRANSFER_OK) continue;
        out_printf(&o, "meridian_transfers_total{result=\"%s\"} %llu\n",
                   ledger_transfer_result_name((ledger_transfer_result)r),
                   (unsigned long long)v);
    }

    out_printf(&o, "# HELP meridian_accounts_total Account events answered, by result code.\n"
                   "# TYPE meridian_accounts_total counter\n");
    for (unsigned r = 0; r < LEDGER_ACCOUNT_RESULT_COUNT; r++) {
        uint64_t v = get(&m.accounts[r]);
        if (v == 0 && r != LEDGER_ACCOUNT_OK) continue;
        out_printf(&o, "meridian_accounts_total{result=\"%s\"} %llu\n",
                   ledger_account_result_name((ledger_account_result)r),
                   (unsigned long long)v);
    }

    out_printf(&o, "# HELP meridian_queue_depth Requests waiting for the group-commit batcher.\n"
                   "# TYPE meridian_queue_depth gauge\n"
                   "meridian_queue_depth %llu\n"
                   "# HELP meridian_db_up 1 when the last commit attempt reached the database.\n"
                   "# TYPE meridian_db_up gauge\n"
                   "meridian_db_up %d\n",
               (unsigned long long)get(&m.queue_depth),
               atomic_load_explicit(&m.db_up, memory_order_relaxed));

    out_printf(&o, "# HELP meridian_route_epoch Epoch (fencing token) of the leader writes go to; 0 without a leader or without etcd.\n"
                   "# TYPE meridian_route_epoch gauge\n"
                   "meridian_route_epoch %lld\n"
                   "# HELP meridian_route_changes_total Changes of the cell's leader seen in etcd (new leader or none).\n"
                   "# TYPE meridian_route_changes_total counter\n"
                   "meridian_route_changes_total %llu\n"
                   "# HELP meridian_fenced_commits_total Commit attempts refused because the node's epoch was not the route's.\n"
                   "# TYPE meridian_fenced_commits_total counter\n"
                   "meridian_fenced_commits_total %llu\n",
               (long long)atomic_load_explicit(&m.route_epoch, memory_order_relaxed),
               (unsigned long long)get(&m.route_changes),
               (unsigned long long)get(&m.fenced_commits));
    out_printf(&o, "# HELP meridian_global_durability_waits_total Waits for a cross-region standby to confirm a commit with global durability, by outcome.\n"
                   "# TYPE meridian_global_durability_waits_total counter\n"
                   "meridian_global_durability_waits_total{outcome=\"confirmed\"} %llu\n"
                   "meridian_global_durability_waits_total{outcome=\"timeout\"} %llu\n"
                   "# HELP meridian_global_durability_wait_seconds_total Time spent in those waits.\n"
                   "# TYPE meridian_global_durability_wait_seconds_total counter\n"
                   "meridian_global_durability_wait_seconds_total %.6f\n",
               (unsigned long long)get(&m.global_confirmed),
               (unsigned long long)get(&m.global_timeouts),
               (double)get(&m.global_wait_ns) / 1e9);

    if (o.failed) {
        free(o.data);
        return NULL;
    }
    return o.data;
}
