/*
 * loadgen.c — HTTP load generator for Meridian's benchmark (`make bench`).
 *
 * It drives meridiand's POST /v1/transfers the way a payment front end
 * would: one transfer per request, between two distinct random accounts,
 * with about 5 KB of metadata, each with a fresh random id. Three modes:
 *
 *   --create-accounts N   create accounts 0..N-1 (ledger 840, code 1, no
 *                         flags) in batches of LIMIT_BATCH_EVENTS_MAX.
 *   --closed              C client threads, each sends its next request
 *                         as soon as the previous answer arrives (the
 *                         throughput test; comparable to pgbench -c C).
 *   --open --rate R       requests are due at a fixed rate whatever the
 *                         answer times; latency runs from the time a
 *                         request was DUE, not from when a worker got to
 *                         send it, so a slow server cannot hide its own
 *                         queueing (no coordinated omission).
 *
 * --durability global adds "durability": "global" to every transfer (the
 * answer waits until the cell's cross-region DR standby has flushed the
 * commit, issue 4); --durability regional sends the default explicitly.
 *
 * Account ids are derived from --seed and the account's index, so the
 * creating run and the transfer runs agree without passing files. Every
 * request's latency goes into a preallocated, bounded array; requests that
 * are not HTTP 200 with result "ok" (or, when creating, "ok"/"exists") are
 * errors, counted and sampled to stderr. The summary goes to stderr; with
 * --json one JSON object is printed on stdout for bench/run.sh.
 *
 * Each client/worker thread owns one curl easy handle (keep-alive
 * connection) and its buffers; the only shared state is the global run
 * state below (atomic counters, the open-loop latency array indexed by
 * request number, and a mutex for the error samples).
 */
#include "common/limits.h"
#include "common/mrd_assert.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Bounds of this program (besides the service's own, from limits.h). */
#define LG_CLIENTS_MAX 1024
#define LG_WORKERS_MAX 1024
#define LG_SECONDS_MAX 3600
#define LG_ACCOUNTS_MAX 10000000u
#define LG_RATE_PER_S_MAX 100000.0
/* Open loop: total scheduled requests (rate * seconds). */
#define LG_OPEN_REQUESTS_MAX 20000000u
/* Closed loop: latency samples kept, at most this many per second in all
 * (far above what one machine serves); past it requests are still
 * counted, their latency is not kept (reported as unrecorded). */
#define LG_CLOSED_SAMPLES_PER_S_MAX 100000u
/* Metadata string length (the service's limit is on the whole object). */
#define LG_METADATA_BYTES_DEFAULT 5000u
#define LG_METADATA_BYTES_MAX (LIMIT_METADATA_BYTES_MAX - 512u)
/* Answer bodies kept per request: one transfer's answer is ~150 bytes,
 * 8,190 account results ~600 KB. */
#define LG_RESPONSE_BYTES_MAX (4u * 1024u * 1024u)
/* One transfer request: metadata + ids + framing. */
#define LG_TRANSFER_BODY_BYTES_MAX (LIMIT_METADATA_BYTES_MAX + 1024u)
/* One account in a creation request is ~75 bytes. */
#define LG_ACCOUNT_JSON_BYTES_MAX 128u
#define LG_ERROR_SAMPLES_MAX 5
#define LG_REQUEST_TIMEOUT_MS 30000L

#define LG_NS_PER_S 1000000000ull
#define LG_NS_PER_US 1000ull

/* --------------------------------------------------------------- options */

typedef enum lg_mode {
    LG_MODE_NONE = 0,
    LG_MODE_CREATE,
    LG_MODE_CLOSED,
    LG_MODE_OPEN,
} lg_mode;

typedef struct lg_options {
    lg_mode mode;
    const char *url; /* base, e.g. http://127.0.0.1:8080 */
    const char *key; /* API key, mk_... */
    uint64_t seed;   /* account id derivation */
    uint32_t accounts_count;
    uint32_t clients_count;
    uint32_t workers_count;
    uint32_t seconds;
    uint32_t warmup_seconds;
    double rate_per_s;
    uint32_t metadata_bytes;
    uint32_t ledger;
    uint32_t code;
    const char *durability; /* NULL (field omitted), "regional" or "global" */
    bool json;
    bool quiet;
} lg_options;

/* ---------------------------------------------------------- global state */

typedef struct lg_error_sample {
    long http_status;
    char detail[256];
} lg_error_sample;

/* The one global state of this binary: options and run-wide counters. */
static struct lg_state {
    lg_options opt;
    uint64_t start_ns;   /* measurement window start (after warm-up) */
    atomic_uint_fast64_t deadline_ns; /* no request starts at or after this */
    uint64_t account_id_hi; /* high 8 bytes shared by every account id */

    atomic_uint_fast64_t requests_count;   /* measured requests completed */
    atomic_uint_fast64_t ok_count;
    atomic_uint_fast64_t errors_http;      /* status != 200 */
    atomic_uint_fast64_t errors_transport; /* curl failed (timeout, reset) */
    atomic_uint_fast64_t errors_result;    /* 200 but result not ok */
    atomic_uint_fast64_t late_count;       /* open loop: sent > 1 ms late */
    atomic_uint_fast64_t warmup_requests_count; /* closed loop, not measured */
    atomic_uint_fast64_t warmup_ok_count;  /* (errors are counted above) */
    atomic_uint_fast64_t last_done_ns;     /* latest measured completion */

    /* Open loop: next request index, and one latency slot per request. */
    atomic_uint_fast64_t open_next_index;
    uint64_t open_requests_count;
    uint32_t *open_latency_us; /* [open_requests_count]; UINT32_MAX = none */

    pthread_mutex_t error_lock;
    lg_error_sample error_samples[LG_ERROR_SAMPLES_MAX];
    uint32_t error_samples_count;
} g;

/* ------------------------------------------------------------ utilities */

static uint64_t lg_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * LG_NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void lg_sleep_until_ns(uint64_t when_ns) {
    struct timespec ts = {.tv_sec = (time_t)(when_ns / LG_NS_PER_S),
                          .tv_nsec = (long)(when_ns % LG_NS_PER_S)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static uint64_t lg_splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* xoshiro256**: a fast per-thread generator for ids, accounts, amounts.
 * Seeded from getrandom(2) so two runs never repeat transfer ids. */
typedef struct lg_rng {
    uint64_t s[4];
} lg_rng;

static uint64_t lg_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t lg_rng_next(lg_rng *r) {
    uint64_t result = lg_rotl(r->s[1] * 5, 7) * 9;
    uint64_t t = r->s[1] << 17;
    r->s[2] ^= r->s[0];
    r->s[3] ^= r->s[1];
    r->s[1] ^= r->s[2];
    r->s[0] ^= r->s[3];
    r->s[2] ^= t;
    r->s[3] = lg_rotl(r->s[3], 45);
    return result;
}

/* A value in [0, n) (n > 0); the modulo bias is below 2^-32 for our n. */
static uint64_t lg_rng_below(lg_rng *r, uint64_t n) { return lg_rng_next(r) % n; }

static int lg_rng_init(lg_rng *r) {
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        fprintf(stderr, "loadgen: getrandom failed: %s\n", strerror(errno));
        return -1;
    }
    for (int i = 0; i < 4; i++)
        r->s[i] = lg_splitmix64(&seed);
    return 0;
}

static void lg_put_be64(uint8_t *out, uint64_t v) {
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)(v & 0xff);
        v >>= 8;
    }
}

/* Dashed lower-case UUID text of 16 bytes into out (37 bytes with NUL). */
static void lg_format_id(const uint8_t bytes[16], char out[37]) {
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[bytes[i] >> 4];
        out[o++] = hex[bytes[i] & 0xf];
    }
    out[o] = '\0';
}

/* Account index -> id. The high half is fixed by the seed (with the UUID
 * version-4 nibble), the low half is the variant bits and index + 1, so
 * ids are distinct, never zero, and reproducible from (seed, index). */
static void lg_account_id(uint32_t index, char out[37]) {
    uint8_t bytes[16];
    lg_put_be64(bytes, g.account_id_hi);
    lg_put_be64(bytes + 8, 0x8000000000000000ull | ((uint64_t)index + 1u));
    lg_format_id(bytes, out);
}

static void lg_random_id(lg_rng *r, char out[37]) {
    uint8_t bytes[16];
    lg_put_be64(bytes, (lg_rng_next(r) & ~0xf000ull) | 0x4000ull);
    lg_put_be64(bytes + 8, (lg_rng_next(r) & 0x3fffffffffffffffull) | 0x8000000000000000ull);
    lg_format_id(bytes, out);
}

static void lg_record_error(long http_status, const char *what, const char *body, size_t body_len) {
    pthread_mutex_lock(&g.error_lock);
    if (g.error_samples_count < LG_ERROR_SAMPLES_MAX) {
        lg_error_sample *s = &g.error_samples[g.error_samples_count++];
        s->http_status = http_status;
        int shown = body_len > 160 ? 160 : (int)body_len;
        snprintf(s->detail, sizeof s->detail, "%s%s%.*s", what, body_len ? ": " : "", shown,
                 body ? body : "");
    }
    pthread_mutex_unlock(&g.error_lock);
}

/* ---------------------------------------------------------- HTTP client */

/* A bounded growable buffer for answer bodies. */
typedef struct lg_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t cap_max;
} lg_buf;

static size_t lg_write_cb(char *ptr, size_t size, size_t nmemb, void *userdata) {
    lg_buf *b = userdata;
    size_t n = size * nmemb;
    if (n > b->cap_max - b->len - 1)
        return 0; /* too big: curl reports CURLE_WRITE_ERROR */
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        if (cap > b->cap_max)
            cap = b->cap_max;
        char *data = realloc(b->data, cap);
        if (!data)
            return 0;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* One keep-alive connection to meridiand, owned by one thread. */
typedef struct lg_client {
    CURL *easy;
    struct curl_slist *headers;
    lg_buf response;
    char url[512];
    char *body; /* request body buffer, body_cap bytes */
    size_t body_cap;
    lg_rng rng;
    char *metadata_pool; /* 2 * metadata_bytes random characters */
} lg_client;

static void lg_client_release(lg_client *c) {
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
    free(c->response.data);
    free(c->body);
    free(c->metadata_pool);
    memset(c, 0, sizeof *c);
}

/* Prepare a client posting to PATH with a body buffer of body_cap bytes.
 * Returns 0, or -1 (client released) when memory or curl fails. */
static int lg_client_init(lg_client *c, const char *path, size_t body_cap) {
    memset(c, 0, sizeof *c);
    char auth[256];
    if (snprintf(c->url, sizeof c->url, "%s%s", g.opt.url, path) >= (int)sizeof c->url ||
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", g.opt.key) >= (int)sizeof auth) {
        fprintf(stderr, "loadgen: --url or --key too long\n");
        return -1;
    }
    if (lg_rng_init(&c->rng) < 0)
        goto fail;
    c->easy = curl_easy_init();
    c->body = malloc(body_cap);
    c->body_cap = body_cap;
    if (!c->easy || !c->body)
        goto fail;
    struct curl_slist *h = NULL;
    const char *lines[] = {"Content-Type: application/json", auth,
                           "Expect:" /* no 100-continue round trip */};
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        struct curl_slist *n = curl_slist_append(h, lines[i]);
        if (!n) {
            curl_slist_free_all(h);
            goto fail;
        }
        h = n;
    }
    c->headers = h;
    c->response.cap_max = LG_RESPONSE_BYTES_MAX;
    curl_easy_setopt(c->easy, CURLOPT_URL, c->url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, lg_write_cb);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, &c->response);
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS, LG_REQUEST_TIMEOUT_MS);
    curl_easy_setopt(c->easy, CURLOPT_POST, 1L);
    return 0;
fail:
    fprintf(stderr, "loadgen: cannot set up an HTTP client (out of memory?)\n");
    lg_client_release(c);
    return -1;
}

/* POST c->body (len bytes). Returns 0 with *status set, or -1 on a
 * transport error (counted and sampled here). */
static int lg_client_post(lg_client *c, size_t len, long *status) {
    c->response.len = 0;
    if (c->response.data)
        c->response.data[0] = '\0';
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(c->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    CURLcode rc = curl_easy_perform(c->easy);
    if (rc != CURLE_OK) {
        lg_record_error(0, curl_easy_strerror(rc), NULL, 0);
        return -1;
    }
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* --------------------------------------------------------- the requests */

/* Fill c->metadata_pool with printable characters; each request copies a
 * window of it at a random offset, so metadata differs request to request
 * without generating 5,000 random characters each time. */
static int lg_client_metadata_init(lg_client *c) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-";
    size_t n = 2u * g.opt.metadata_bytes + 1u;
    c->metadata_pool = malloc(n);
    if (!c->metadata_pool)
        return -1;
    for (size_t i = 0; i + 1 < n; i++)
        c->metadata_pool[i] = alphabet[lg_rng_below(&c->rng, sizeof alphabet - 1)];
    c->metadata_pool[n - 1] = '\0';
    return 0;
}

/* Build one transfer request in c->body; returns its length. */
static size_t lg_build_transfer(lg_client *c, uint64_t seq) {
    char id[37], debit[37], credit[37];
    uint32_t n = g.opt.accounts_count;
    uint32_t d = (uint32_t)lg_rng_below(&c->rng, n);
    uint32_t k = (uint32_t)lg_rng_below(&c->rng, n - 1);
    if (k >= d)
        k++; /* distinct from the debit account */
    lg_random_id(&c->rng, id);
    lg_account_id(d, debit);
    lg_account_id(k, credit);
    uint32_t amount = 1u + (uint32_t)lg_rng_below(&c->rng, 1000);
    /* Length varies by up to 64 characters around metadata_bytes. */
    uint32_t meta_len = g.opt.metadata_bytes - (uint32_t)lg_rng_below(&c->rng, 64);
    uint32_t offset = (uint32_t)lg_rng_below(&c->rng, g.opt.metadata_bytes);
    /* The option was checked against a fixed list: no escaping needed. */
    const char *dur_key = g.opt.durability ? ",\"durability\":\"" : "";
    const char *dur_value = g.opt.durability ? g.opt.durability : "";
    const char *dur_end = g.opt.durability ? "\"" : "";
    int len = snprintf(c->body, c->body_cap,
                       "{\"transfers\":[{\"id\":\"%s\",\"debit_account_id\":\"%s\","
                       "\"credit_account_id\":\"%s\",\"amount\":%" PRIu32 ",\"ledger\":%" PRIu32
                       ",\"code\":%" PRIu32 "%s%s%s,\"metadata\":{\"note\":\"%.*s\",\"seq\":%" PRIu64
                       ",\"source\":\"loadgen\"}}]}",
                       id, debit, credit, amount, g.opt.ledger, g.opt.code, dur_key, dur_value,
                       dur_end, (int)meta_len, c->metadata_pool + offset, seq);
    mrd_assert(len > 0 && (size_t)len < c->body_cap);
    return (size_t)len;
}

/* Check an answer to one transfer: 200 with results[0].result == "ok".
 * Counts the outcome; returns true when ok. */
static bool lg_check_transfer_answer(lg_client *c, long status) {
    if (status != 200) {
        atomic_fetch_add_explicit(&g.errors_http, 1, memory_order_relaxed);
        char what[32];
        snprintf(what, sizeof what, "HTTP %ld", status);
        lg_record_error(status, what, c->response.data, c->response.len);
        return false;
    }
    json_error_t jerr;
    json_t *root = json_loadb(c->response.data ? c->response.data : "", c->response.len, 0, &jerr);
    json_t *first = json_array_get(json_object_get(root, "results"), 0);
    const char *result = json_string_value(json_object_get(first, "result"));
    bool ok = result && strcmp(result, "ok") == 0 &&
              json_array_size(json_object_get(root, "results")) == 1;
    if (!ok) {
        atomic_fetch_add_explicit(&g.errors_result, 1, memory_order_relaxed);
        lg_record_error(status, "result not ok", c->response.data, c->response.len);
    }
    json_decref(root);
    return ok;
}

static void lg_note_done(uint64_t done_ns, bool ok) {
    atomic_fetch_add_explicit(&g.requests_count, 1, memory_order_relaxed);
    if (ok)
        atomic_fetch_add_explicit(&g.ok_count, 1, memory_order_relaxed);
    uint64_t prev = atomic_load_explicit(&g.last_done_ns, memory_order_relaxed);
    while (prev < done_ns &&
           !atomic_compare_exchange_weak_explicit(&g.last_done_ns, &prev, done_ns,
                                                  memory_order_relaxed, memory_order_relaxed)) {
    }
}

/* ---------------------------------------------------------- closed loop */

typedef struct lg_closed_thread {
    pthread_t thread;
    uint32_t index;
    uint32_t *latency_us; /* [samples_cap] */
    uint64_t samples_cap;
    uint64_t samples_count;
    uint64_t unrecorded_count;
    int rc;
} lg_closed_thread;

static void *lg_closed_main(void *arg) {
    lg_closed_thread *t = arg;
    lg_client c;
    t->rc = -1;
    if (lg_client_init(&c, "/v1/transfers", LG_TRANSFER_BODY_BYTES_MAX) < 0)
        return NULL;
    if (lg_client_metadata_init(&c) < 0)
        goto out;
    uint64_t seq = (uint64_t)t->index << 40;
    for (;;) {
        size_t len = lg_build_transfer(&c, seq++);
        uint64_t t0 = lg_now_ns();
        if (t0 >= atomic_load_explicit(&g.deadline_ns, memory_order_relaxed))
            break;
        long status = 0;
        bool sent = lg_client_post(&c, len, &status) == 0;
        uint64_t t1 = lg_now_ns();
        bool ok = false;
        if (sent)
            ok = lg_check_transfer_answer(&c, status);
        else
            atomic_fetch_add_explicit(&g.errors_transport, 1, memory_order_relaxed);
        if (t0 < g.start_ns) {
            /* Warm-up: errors count, throughput and latency do not. */
            atomic_fetch_add_explicit(&g.warmup_requests_count, 1, memory_order_relaxed);
            if (ok)
                atomic_fetch_add_explicit(&g.warmup_ok_count, 1, memory_order_relaxed);
            continue;
        }
        lg_note_done(t1, ok);
        uint64_t us = (t1 - t0) / LG_NS_PER_US;
        if (t->samples_count < t->samples_cap)
            t->latency_us[t->samples_count++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
        else
            t->unrecorded_count++;
    }
    t->rc = 0;
out:
    lg_client_release(&c);
    return NULL;
}

/* ------------------------------------------------------------ open loop */

typedef struct lg_open_thread {
    pthread_t thread;
    int rc;
} lg_open_thread;

static void *lg_open_main(void *arg) {
    lg_open_thread *t = arg;
    lg_client c;
    t->rc = -1;
    if (lg_client_init(&c, "/v1/transfers", LG_TRANSFER_BODY_BYTES_MAX) < 0)
        return NULL;
    if (lg_client_metadata_init(&c) < 0)
        goto out;
    double interval_ns = (double)LG_NS_PER_S / g.opt.rate_per_s;
    for (;;) {
        uint64_t k = atomic_fetch_add_explicit(&g.open_next_index, 1, memory_order_relaxed);
        if (k >= g.open_requests_count)
            break;
        uint64_t due_ns = g.start_ns + (uint64_t)llround((double)k * interval_ns);
        size_t len = lg_build_transfer(&c, k);
        uint64_t now = lg_now_ns();
        if (now < due_ns)
            lg_sleep_until_ns(due_ns);
        else if (now - due_ns > 1000000ull)
            atomic_fetch_add_explicit(&g.late_count, 1, memory_order_relaxed);
        long status = 0;
        bool sent = lg_client_post(&c, len, &status) == 0;
        uint64_t done = lg_now_ns();
        bool ok = false;
        if (sent)
            ok = lg_check_transfer_answer(&c, status);
        else
            atomic_fetch_add_explicit(&g.errors_transport, 1, memory_order_relaxed);
        lg_note_done(done, ok);
        uint64_t us = (done - due_ns) / LG_NS_PER_US;
        g.open_latency_us[k] = us > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)us;
    }
    t->rc = 0;
out:
    lg_client_release(&c);
    return NULL;
}

/* ------------------------------------------------------ account creation */

/* Create accounts [0, accounts_count) in batches; "exists" counts as done
 * so a rerun against the same database is harmless. Returns 0 or -1. */
static int lg_create_accounts(void) {
    lg_client c;
    size_t cap = (size_t)LIMIT_BATCH_EVENTS_MAX * LG_ACCOUNT_JSON_BYTES_MAX + 64;
    if (lg_client_init(&c, "/v1/accounts", cap) < 0)
        return -1;
    int rc = -1;
    uint64_t t0 = lg_now_ns();
    for (uint32_t first = 0; first < g.opt.accounts_count; first += LIMIT_BATCH_EVENTS_MAX) {
        uint32_t n = g.opt.accounts_count - first;
        if (n > LIMIT_BATCH_EVENTS_MAX)
            n = LIMIT_BATCH_EVENTS_MAX;
        size_t len = (size_t)snprintf(c.body, cap, "{\"accounts\":[");
        for (uint32_t i = 0; i < n; i++) {
            char id[37];
            lg_account_id(first + i, id);
            int w = snprintf(c.body + len, cap - len,
                             "%s{\"id\":\"%s\",\"ledger\":%" PRIu32 ",\"code\":%" PRIu32 "}",
                             i ? "," : "", id, g.opt.ledger, g.opt.code);
            mrd_assert(w > 0 && (size_t)w < cap - len);
            len += (size_t)w;
        }
        int w = snprintf(c.body + len, cap - len, "]}");
        mrd_assert(w > 0 && (size_t)w < cap - len);
        len += (size_t)w;

        long status = 0;
        if (lg_client_post(&c, len, &status) < 0) {
            fprintf(stderr, "loadgen: creating accounts %" PRIu32 "..%" PRIu32 " failed: %s\n",
                    first, first + n - 1, g.error_samples[0].detail);
            goto out;
        }
        if (status != 200) {
            fprintf(stderr, "loadgen: creating accounts: HTTP %ld: %.300s\n", status,
                    c.response.data ? c.response.data : "");
            goto out;
        }
        json_error_t jerr;
        json_t *root = json_loadb(c.response.data, c.response.len, 0, &jerr);
        json_t *results = json_object_get(root, "results");
        size_t bad = 0;
        const char *bad_result = NULL;
        if (json_array_size(results) != n)
            bad = n;
        for (size_t i = 0; i < json_array_size(results); i++) {
            const char *r =
                json_string_value(json_object_get(json_array_get(results, i), "result"));
            if (!r || (strcmp(r, "ok") != 0 && strcmp(r, "exists") != 0)) {
                bad++;
                if (!bad_result)
                    bad_result = r ? r : "(no result)";
            }
        }
        if (bad) {
            fprintf(stderr,
                    "loadgen: creating accounts: %zu of %" PRIu32 " not created (first: %s); "
                    "answer: %.300s\n",
                    bad, n, bad_result ? bad_result : "wrong number of results",
                    c.response.data ? c.response.data : "");
            json_decref(root);
            goto out;
        }
        json_decref(root);
        if (!g.opt.quiet)
            fprintf(stderr, "loadgen: created accounts %" PRIu32 "/%" PRIu32 " (%.1f s)\n",
                    first + n, g.opt.accounts_count, (double)(lg_now_ns() - t0) / 1e9);
    }
    if (g.opt.json)
        printf("{\"mode\":\"create\",\"accounts\":%" PRIu32 ",\"seconds\":%.3f}\n",
               g.opt.accounts_count, (double)(lg_now_ns() - t0) / 1e9);
    rc = 0;
out:
    lg_client_release(&c);
    return rc;
}

/* -------------------------------------------------------------- summary */

static int lg_compare_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted samples, in ms. */
static double lg_percentile_ms(const uint32_t *sorted, uint64_t n, double q) {
    if (n == 0)
        return 0.0;
    uint64_t rank = (uint64_t)ceil(q * (double)n);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return sorted[rank - 1] / 1000.0;
}

/* Progress on stderr about once a second until finished() is true. */
static void lg_progress(const char *mode, bool (*finished)(void)) {
    uint64_t last_count = atomic_load(&g.requests_count) + atomic_load(&g.warmup_requests_count);
    uint64_t last_ns = lg_now_ns();
    while (!finished()) {
        usleep(100000);
        uint64_t now = lg_now_ns();
        if (now - last_ns < LG_NS_PER_S || g.opt.quiet)
            continue;
        uint64_t count = atomic_load(&g.requests_count) + atomic_load(&g.warmup_requests_count);
        uint64_t errors = atomic_load(&g.errors_http) + atomic_load(&g.errors_transport) +
                          atomic_load(&g.errors_result);
        fprintf(stderr, "loadgen %s: %s%5.1f/%u s  %8.1f req/s  errors %" PRIu64 "\n", mode,
                now < g.start_ns ? "warm-up " : "",
                now > g.start_ns ? (double)(now - g.start_ns) / 1e9 : 0.0, g.opt.seconds,
                (double)(count - last_count) * 1e9 / (double)(now - last_ns), errors);
        last_count = count;
        last_ns = now;
    }
}

static bool lg_closed_finished(void) { return lg_now_ns() >= atomic_load(&g.deadline_ns); }

static bool lg_open_finished(void) {
    return atomic_load(&g.open_next_index) >= g.open_requests_count;
}

typedef struct lg_summary {
    uint64_t requests;
    uint64_t ok;
    uint64_t errors;
    uint64_t samples;
    uint64_t unrecorded;
    double elapsed_s;
    double p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms;
} lg_summary;

static void lg_summarize(uint32_t *samples, uint64_t n, uint64_t unrecorded, lg_summary *s) {
    qsort(samples, n, sizeof *samples, lg_compare_u32);
    memset(s, 0, sizeof *s);
    s->requests = atomic_load(&g.requests_count);
    s->ok = atomic_load(&g.ok_count);
    s->errors = atomic_load(&g.errors_http) + atomic_load(&g.errors_transport) +
                atomic_load(&g.errors_result);
    s->samples = n;
    s->unrecorded = unrecorded;
    uint64_t end = atomic_load(&g.last_done_ns);
    s->elapsed_s = end > g.start_ns ? (double)(end - g.start_ns) / 1e9 : 0.0;
    s->p50_ms = lg_percentile_ms(samples, n, 0.50);
    s->p90_ms = lg_percentile_ms(samples, n, 0.90);
    s->p99_ms = lg_percentile_ms(samples, n, 0.99);
    s->p999_ms = lg_percentile_ms(samples, n, 0.999);
    s->max_ms = n ? samples[n - 1] / 1000.0 : 0.0;
    double sum = 0;
    for (uint64_t i = 0; i < n; i++)
        sum += samples[i];
    s->mean_ms = n ? sum / (double)n / 1000.0 : 0.0;
}

static void lg_report(const char *mode, const lg_summary *s) {
    double tps = s->elapsed_s > 0 ? (double)s->ok / s->elapsed_s : 0.0;
    fprintf(stderr,
            "loadgen %s: %" PRIu64 " requests in %.2f s, %" PRIu64 " ok, %" PRIu64
            " errors (http %" PRIu64 ", transport %" PRIu64 ", result %" PRIu64 ")\n"
            "loadgen %s: %.1f transfers/s; latency ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f "
            "max %.2f mean %.2f\n",
            mode, s->requests, s->elapsed_s, s->ok, s->errors, (uint64_t)atomic_load(&g.errors_http),
            (uint64_t)atomic_load(&g.errors_transport), (uint64_t)atomic_load(&g.errors_result),
            mode, tps, s->p50_ms, s->p90_ms, s->p99_ms, s->p999_ms, s->max_ms, s->mean_ms);
    if (s->unrecorded)
        fprintf(stderr, "loadgen %s: %" PRIu64 " latencies not recorded (sample array full)\n",
                mode, s->unrecorded);
    if (g.opt.mode == LG_MODE_OPEN && atomic_load(&g.late_count))
        fprintf(stderr,
                "loadgen %s: %" PRIu64 " requests were sent over 1 ms after they were due "
                "(all workers busy; their wait is included in the latency)\n",
                mode, (uint64_t)atomic_load(&g.late_count));
    for (uint32_t i = 0; i < g.error_samples_count; i++)
        fprintf(stderr, "loadgen %s: error sample %u: %s\n", mode, i + 1,
                g.error_samples[i].detail);
    if (s->errors)
        fprintf(stderr, "loadgen %s: FLAGGED: %" PRIu64 " requests failed\n", mode, s->errors);
    if (!g.opt.json)
        return;
    printf("{\"mode\":\"%s\",\"clients\":%" PRIu32 ",\"workers\":%" PRIu32
           ",\"seconds\":%" PRIu32 ",\"rate_target_per_s\":%.3f,\"accounts\":%" PRIu32
           ",\"metadata_bytes\":%" PRIu32 ",\"durability\":\"%s\",\"requests\":%" PRIu64
           ",\"ok\":%" PRIu64
           ",\"errors\":%" PRIu64 ",\"errors_http\":%" PRIu64 ",\"errors_transport\":%" PRIu64
           ",\"errors_result\":%" PRIu64 ",\"late_sends\":%" PRIu64
           ",\"elapsed_s\":%.3f,\"transfers_per_s\":%.1f,\"p50_ms\":%.3f,\"p90_ms\":%.3f"
           ",\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f"
           ",\"latency_samples\":%" PRIu64 ",\"latency_unrecorded\":%" PRIu64
           ",\"warmup_seconds\":%" PRIu32 ",\"warmup_requests\":%" PRIu64
           ",\"warmup_ok\":%" PRIu64 "}\n",
           mode, g.opt.mode == LG_MODE_CLOSED ? g.opt.clients_count : 0,
           g.opt.mode == LG_MODE_OPEN ? g.opt.workers_count : 0, g.opt.seconds,
           g.opt.mode == LG_MODE_OPEN ? g.opt.rate_per_s : 0.0, g.opt.accounts_count,
           g.opt.metadata_bytes, g.opt.durability ? g.opt.durability : "regional", s->requests,
           s->ok, s->errors,
           (uint64_t)atomic_load(&g.errors_http), (uint64_t)atomic_load(&g.errors_transport),
           (uint64_t)atomic_load(&g.errors_result), (uint64_t)atomic_load(&g.late_count),
           s->elapsed_s, tps, s->p50_ms, s->p90_ms, s->p99_ms, s->p999_ms, s->max_ms, s->mean_ms,
           s->samples, s->unrecorded, g.opt.mode == LG_MODE_CLOSED ? g.opt.warmup_seconds : 0,
           (uint64_t)atomic_load(&g.warmup_requests_count),
           (uint64_t)atomic_load(&g.warmup_ok_count));
    fflush(stdout);
}

/* ------------------------------------------------------------- the runs */

static int lg_run_closed(void) {
    uint32_t n = g.opt.clients_count;
    lg_closed_thread *threads = calloc(n, sizeof *threads);
    uint64_t samples_total = (uint64_t)g.opt.seconds * LG_CLOSED_SAMPLES_PER_S_MAX;
    uint64_t per_thread = samples_total / n + 1;
    uint32_t *all = calloc(per_thread * n, sizeof *all);
    int rc = -1;
    uint32_t started = 0;
    if (!threads || !all) {
        fprintf(stderr, "loadgen: out of memory for %" PRIu64 " latency samples\n",
                per_thread * n);
        goto out;
    }
    uint64_t now = lg_now_ns();
    g.start_ns = now + (uint64_t)g.opt.warmup_seconds * LG_NS_PER_S;
    atomic_store(&g.deadline_ns, g.start_ns + (uint64_t)g.opt.seconds * LG_NS_PER_S);
    for (; started < n; started++) {
        lg_closed_thread *t = &threads[started];
        t->index = started;
        t->latency_us = all + (uint64_t)started * per_thread;
        t->samples_cap = per_thread;
        if (pthread_create(&t->thread, NULL, lg_closed_main, t) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed after %" PRIu32 " clients\n",
                    started);
            atomic_store(&g.deadline_ns, 0); /* stop the ones already running */
            break;
        }
    }
    if (started == n)
        lg_progress("closed", lg_closed_finished);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(threads[i].thread, NULL);
    if (started < n)
        goto out;
    /* Compact the per-thread samples to the front of `all`. */
    uint64_t count = 0, unrecorded = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (threads[i].rc < 0)
            goto out;
        memmove(all + count, threads[i].latency_us, threads[i].samples_count * sizeof *all);
        count += threads[i].samples_count;
        unrecorded += threads[i].unrecorded_count;
    }
    lg_summary s;
    lg_summarize(all, count, unrecorded, &s);
    lg_report("closed", &s);
    rc = s.errors ? 2 : 0;
out:
    free(all);
    free(threads);
    return rc;
}

static int lg_run_open(void) {
    uint32_t n = g.opt.workers_count;
    double total = g.opt.rate_per_s * g.opt.seconds;
    int rc = -1;
    uint32_t started = 0;
    lg_open_thread *threads = NULL;
    if (total < 1 || total > LG_OPEN_REQUESTS_MAX) {
        fprintf(stderr, "loadgen: --rate x --seconds must be 1..%u requests\n",
                LG_OPEN_REQUESTS_MAX);
        return -1;
    }
    g.open_requests_count = (uint64_t)total;
    g.open_latency_us = malloc(g.open_requests_count * sizeof *g.open_latency_us);
    threads = calloc(n, sizeof *threads);
    if (!g.open_latency_us || !threads) {
        fprintf(stderr, "loadgen: out of memory\n");
        goto out;
    }
    for (uint64_t i = 0; i < g.open_requests_count; i++)
        g.open_latency_us[i] = UINT32_MAX;
    /* Start 200 ms ahead so every worker has its connection ready. */
    g.start_ns = lg_now_ns() + 200000000ull;
    atomic_store(&g.deadline_ns, g.start_ns + (uint64_t)g.opt.seconds * LG_NS_PER_S);
    for (; started < n; started++) {
        if (pthread_create(&threads[started].thread, NULL, lg_open_main, &threads[started]) != 0) {
            fprintf(stderr, "loadgen: pthread_create failed after %" PRIu32 " workers\n", started);
            atomic_store(&g.open_next_index, g.open_requests_count); /* stop the others */
            break;
        }
    }
    lg_progress("open", lg_open_finished);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(threads[i].thread, NULL);
    if (started < n)
        goto out;
    for (uint32_t i = 0; i < n; i++)
        if (threads[i].rc < 0)
            goto out;
    /* Every scheduled request was sent and answered (or timed out). */
    uint64_t count = 0;
    for (uint64_t i = 0; i < g.open_requests_count; i++)
        if (g.open_latency_us[i] != UINT32_MAX)
            g.open_latency_us[count++] = g.open_latency_us[i];
    lg_summary s;
    lg_summarize(g.open_latency_us, count, g.open_requests_count - count, &s);
    /* Throughput of an open loop is the offered rate if it kept up. */
    lg_report("open", &s);
    rc = s.errors ? 2 : 0;
out:
    free(threads);
    free(g.open_latency_us);
    g.open_latency_us = NULL;
    return rc;
}

/* ----------------------------------------------------------------- main */

static void lg_usage(FILE *f) {
    fprintf(f,
            "usage: loadgen --url URL --key KEY [options] MODE\n"
            "modes:\n"
            "  --create-accounts N   create accounts 0..N-1 (ledger/code below), then exit\n"
            "  --closed              --clients C threads send back to back for --seconds\n"
            "  --open --rate R       R requests/s for --seconds, latency from due time\n"
            "options:\n"
            "  --accounts N          accounts the transfers choose from (default 100000)\n"
            "  --seed S              account id derivation seed (default 1)\n"
            "  --clients C           closed loop threads (default 32)\n"
            "  --workers W           open loop worker threads (default 64)\n"
            "  --seconds T           measured duration (default 20)\n"
            "  --warmup-seconds W    closed loop: unmeasured seconds first (default 0;\n"
            "                        their errors count, their throughput/latency do not)\n"
            "  --metadata-bytes B    metadata string length (default %u)\n"
            "  --ledger L --code C   (default 840, 1)\n"
            "  --durability D        regional or global: sent as each transfer's \"durability\"\n"
            "                        (default: not sent, i.e. regional)\n"
            "  --json                print one JSON object with the results on stdout\n"
            "  --quiet               no progress lines\n"
            "exit status: 0 ok, 2 the run had errors (results flagged), 1 failure\n",
            LG_METADATA_BYTES_DEFAULT);
}

static int lg_parse_u32(const char *name, const char *s, uint32_t min, uint32_t max,
                        uint32_t *out) {
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "loadgen: %s must be an integer in %u..%u, not \"%s\"\n", name, min,
                max, s);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

static int lg_parse_args(int argc, char **argv, lg_options *o) {
    enum {
        OPT_URL = 256, OPT_KEY, OPT_SEED, OPT_ACCOUNTS, OPT_CREATE, OPT_CLOSED, OPT_OPEN,
        OPT_RATE, OPT_CLIENTS, OPT_WORKERS, OPT_SECONDS, OPT_WARMUP, OPT_META, OPT_LEDGER,
        OPT_CODE, OPT_DURABILITY, OPT_JSON, OPT_QUIET, OPT_HELP,
    };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"key", required_argument, NULL, OPT_KEY},
        {"seed", required_argument, NULL, OPT_SEED},
        {"accounts", required_argument, NULL, OPT_ACCOUNTS},
        {"create-accounts", required_argument, NULL, OPT_CREATE},
        {"closed", no_argument, NULL, OPT_CLOSED},
        {"open", no_argument, NULL, OPT_OPEN},
        {"rate", required_argument, NULL, OPT_RATE},
        {"clients", required_argument, NULL, OPT_CLIENTS},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"seconds", required_argument, NULL, OPT_SECONDS},
        {"warmup-seconds", required_argument, NULL, OPT_WARMUP},
        {"metadata-bytes", required_argument, NULL, OPT_META},
        {"ledger", required_argument, NULL, OPT_LEDGER},
        {"code", required_argument, NULL, OPT_CODE},
        {"durability", required_argument, NULL, OPT_DURABILITY},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"help", no_argument, NULL, OPT_HELP},
        {NULL, 0, NULL, 0},
    };
    *o = (lg_options){.seed = 1, .accounts_count = 100000, .clients_count = 32,
                      .workers_count = 64, .seconds = 20, .rate_per_s = 167.0,
                      .metadata_bytes = LG_METADATA_BYTES_DEFAULT, .ledger = 840, .code = 1};
    uint32_t modes = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int rc = 0;
        switch (ch) {
        case OPT_URL: o->url = optarg; break;
        case OPT_KEY: o->key = optarg; break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            o->seed = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end) {
                fprintf(stderr, "loadgen: --seed must be an unsigned integer\n");
                rc = -1;
            }
            break;
        }
        case OPT_ACCOUNTS:
            rc = lg_parse_u32("--accounts", optarg, 2, LG_ACCOUNTS_MAX, &o->accounts_count);
            break;
        case OPT_CREATE:
            rc = lg_parse_u32("--create-accounts", optarg, 1, LG_ACCOUNTS_MAX, &o->accounts_count);
            o->mode = LG_MODE_CREATE;
            modes++;
            break;
        case OPT_CLOSED: o->mode = LG_MODE_CLOSED; modes++; break;
        case OPT_OPEN: o->mode = LG_MODE_OPEN; modes++; break;
        case OPT_RATE: {
            char *end;
            o->rate_per_s = strtod(optarg, &end);
            if (end == optarg || *end || !(o->rate_per_s > 0) ||
                o->rate_per_s > LG_RATE_PER_S_MAX) {
                fprintf(stderr, "loadgen: --rate must be in (0, %.0f]\n", LG_RATE_PER_S_MAX);
                rc = -1;
            }
            break;
        }
        case OPT_CLIENTS:
            rc = lg_parse_u32("--clients", optarg, 1, LG_CLIENTS_MAX, &o->clients_count);
            break;
        case OPT_WORKERS:
            rc = lg_parse_u32("--workers", optarg, 1, LG_WORKERS_MAX, &o->workers_count);
            break;
        case OPT_SECONDS:
            rc = lg_parse_u32("--seconds", optarg, 1, LG_SECONDS_MAX, &o->seconds);
            break;
        case OPT_WARMUP:
            rc = lg_parse_u32("--warmup-seconds", optarg, 0, LG_SECONDS_MAX, &o->warmup_seconds);
            break;
        case OPT_META:
            rc = lg_parse_u32("--metadata-bytes", optarg, 64, LG_METADATA_BYTES_MAX,
                              &o->metadata_bytes);
            break;
        case OPT_LEDGER:
            rc = lg_parse_u32("--ledger", optarg, 1, UINT32_MAX, &o->ledger);
            break;
        case OPT_CODE: rc = lg_parse_u32("--code", optarg, 0, 65535, &o->code); break;
        case OPT_DURABILITY:
            if (strcmp(optarg, "regional") == 0 || strcmp(optarg, "global") == 0) {
                o->durability = optarg;
            } else {
                fprintf(stderr, "loadgen: --durability must be regional or global, not \"%s\"\n",
                        optarg);
                rc = -1;
            }
            break;
        case OPT_JSON: o->json = true; break;
        case OPT_QUIET: o->quiet = true; break;
        case OPT_HELP: lg_usage(stdout); exit(0);
        default: lg_usage(stderr); return -1;
        }
        if (rc < 0)
            return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "loadgen: unexpected argument \"%s\"\n", argv[optind]);
        return -1;
    }
    if (modes != 1 || !o->url || !o->key) {
        fprintf(stderr, "loadgen: give --url, --key and exactly one of --create-accounts, "
                        "--closed, --open\n");
        lg_usage(stderr);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (lg_parse_args(argc, argv, &g.opt) < 0)
        return 1;
    uint64_t seed_state = g.opt.seed ^ 0x6d6572696469616eull; /* "meridian" */
    g.account_id_hi = (lg_splitmix64(&seed_state) & ~0xf000ull) | 0x4000ull;
    pthread_mutex_init(&g.error_lock, NULL);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "loadgen: curl_global_init failed\n");
        return 1;
    }
    int rc;
    switch (g.opt.mode) {
    case LG_MODE_CREATE: rc = lg_create_accounts() < 0 ? 1 : 0; break;
    case LG_MODE_CLOSED: rc = lg_run_closed(); break;
    case LG_MODE_OPEN: rc = lg_run_open(); break;
    default: rc = 1; break;
    }
    curl_global_cleanup();
    pthread_mutex_destroy(&g.error_lock);
    return rc < 0 ? 1 : rc;
}
