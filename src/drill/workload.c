/*
 * workload.c — the drill's bank workload: writer and reader threads
 * talking to meridiand over HTTP with libcurl (see workload.h for the
 * rules).
 *
 * Design: each thread owns its curl handles (one per meridiand URL, so
 * connections are reused) and its own logs of transfers; nothing is
 * shared while the threads run but a few atomics (stop flags, the live
 * acknowledgement count, the first recovered acknowledgement) and the
 * first violation's text (behind a mutex). workload_stop joins the
 * threads and merges their logs, so the checker reads plain arrays.
 *
 * A transfer is retried with the same id only after an answer that
 * guarantees or allows "not applied" (503, other 5xx, no answer); any
 * other answer is definite. Retrying the same id is safe because the id
 * is the idempotency key: a retry of something already applied answers
 * `exists`, which counts as acknowledged.
 */
#include "drill/workload.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>

#include "common/clock.h"
#include "common/mrd_assert.h"
#include "drill/drill.h"

#define WORKLOAD_LEDGER 840
#define WORKLOAD_CODE 1
#define WORKLOAD_AMOUNT_MAX 1000
#define WORKLOAD_FUNDING_AMOUNT 10000
#define WORKLOAD_BACKOFF_MS_MIN 20
#define WORKLOAD_BACKOFF_MS_MAX 500
#define WORKLOAD_READ_PAUSE_MS 25
#define WORKLOAD_URL_BYTES 512
#define WORKLOAD_BODY_BYTES 512
#define WORKLOAD_AUTH_BYTES 256

/* A growable array of events with a hard maximum. */
typedef struct event_list {
    workload_event *v;
    size_t len;
    size_t cap;
    size_t max;
} event_list;

/* An HTTP answer body, bounded by DRILL_RESPONSE_BYTES_MAX. */
typedef struct http_buf {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
} http_buf;

typedef struct worker {
    workload *w;
    int index;
    bool reader;
    pthread_t thread;
    bool started;
    CURL *curl[DRILL_URLS_MAX];
    size_t next_url;
    uint64_t rng;
    http_buf buf;
    event_list acked, refused, unresolved;
    workload_stats st; /* this thread's counters */
} worker;

struct workload {
    workload_config cfg;
    char *urls[DRILL_URLS_MAX];
    char *api_key;
    char auth_header[WORKLOAD_AUTH_BYTES];

    id128 account_ids[DRILL_ACCOUNTS_MAX];
    bool limited[DRILL_ACCOUNTS_MAX];
    char account_text[DRILL_ACCOUNTS_MAX][ID128_TEXT_SIZE];

    worker setup;     /* the drill thread's own worker (accounts, funding) */
    worker *workers;  /* writers then readers */
    size_t worker_count;
    bool running;
    bool stopped;

    atomic_bool stop;
    atomic_bool abandon;
    atomic_llong acked_now;
    atomic_llong recovery_since_ms; /* 0: not watching yet */
    atomic_llong first_recovered_ms;

    pthread_mutex_t violation_lock;
    char first_violation[256];

    /* Merged after the threads are joined. */
    event_list acked, refused, unresolved;
    workload_stats stats;
};

/* ---- Small helpers. */

static void sleep_ms(int64_t ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static uint64_t rng_next(uint64_t *s)
{
    /* xorshift64*: good enough to pick accounts and amounts. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static int list_push(event_list *l, const workload_event *ev)
{
    if (l->len >= l->max)
        return -1;
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        if (cap > l->max)
            cap = l->max;
        workload_event *v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->len++] = *ev;
    return 0;
}

/* Append src to dst (dst grows to hold both; maxima are not applied:
 * src's entries were already within theirs). */
static int list_merge(event_list *dst, const event_list *src)
{
    if (src->len == 0)
        return 0;
    size_t need = dst->len + src->len;
    if (need > dst->cap) {
        workload_event *v = realloc(dst->v, need * sizeof *v);
        if (v == NULL)
            return -1;
        dst->v = v;
        dst->cap = need;
    }
    memcpy(dst->v + dst->len, src->v, src->len * sizeof *src->v);
    dst->len = need;
    return 0;
}

static void list_release(event_list *l)
{
    free(l->v);
    l->v = NULL;
    l->len = l->cap = 0;
}

static void stats_add(workload_stats *to, const workload_stats *from)
{
    to->acked += from->acked;
    to->refused += from->refused;
    to->unresolved += from->unresolved;
    to->client_errors += from->client_errors;
    to->anomalies += from->anomalies;
    to->retries += from->retries;
    to->http_503 += from->http_503;
    to->http_5xx_other += from->http_5xx_other;
    to->transport_errors += from->transport_errors;
    to->ack_log_full += from->ack_log_full;
    to->reads_ok += from->reads_ok;
    to->reads_failed += from->reads_failed;
    to->read_violations += from->read_violations;
}

/* ---- HTTP. */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
    http_buf *b = arg;
    size_t n = size * nmemb;
    if (b->len + n + 1 > DRILL_RESPONSE_BYTES_MAX) {
        b->too_big = true;
        return 0; /* abort the transfer: CURLE_WRITE_ERROR */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *d = realloc(b->data, cap);
        if (d == NULL)
            return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* One exchange on handle h. Returns 0 with *status set when an HTTP
 * answer arrived (its body in k->buf), -1 on a transport error. */
static int http_call(worker *k, CURL *h, const char *url, const char *body, long *status)
{
    k->buf.len = 0;
    k->buf.too_big = false;
    if (k->buf.data)
        k->buf.data[0] = '\0';
    struct curl_slist *hdrs = NULL;
    struct curl_slist *tmp = curl_slist_append(hdrs, k->w->auth_header);
    if (tmp == NULL)
        return -1;
    hdrs = tmp;
    if (body != NULL) {
        tmp = curl_slist_append(hdrs, "Content-Type: application/json");
        if (tmp == NULL) {
            curl_slist_free_all(hdrs);
            return -1;
        }
        hdrs = tmp;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    if (body != NULL) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(hdrs);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
    if (rc != CURLE_OK)
        return -1;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
    return 0;
}

/* libcurl's progress callback: abort a transfer in flight (blocked on a
 * meridiand that holds it through a failover) once the drill abandons. */
static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    workload *w = arg;
    return atomic_load(&w->abandon) ? 1 : 0;
}

static CURL *handle_new(worker *k)
{
    CURL *h = curl_easy_init();
    if (h == NULL)
        return NULL;
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)DRILL_HTTP_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)DRILL_HTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &k->buf);
    curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, k->w);
    return h;
}

static int worker_init(worker *k, workload *w, int index, bool reader)
{
    memset(k, 0, sizeof *k);
    k->w = w;
    k->index = index;
    k->reader = reader;
    id128 seed;
    id128_random(&seed);
    memcpy(&k->rng, seed.bytes, sizeof k->rng);
    k->rng |= 1; /* xorshift needs a non-zero state */
    size_t per = DRILL_ACKS_MAX / (size_t)(w->cfg.writers > 0 ? w->cfg.writers : 1);
    k->acked.max = k->refused.max = k->unresolved.max = per > 0 ? per : 1;
    for (size_t i = 0; i < w->cfg.url_count; i++) {
        k->curl[i] = handle_new(k);
        if (k->curl[i] == NULL)
            return -1;
    }
    return 0;
}

static void worker_release(worker *k)
{
    for (size_t i = 0; i < DRILL_URLS_MAX; i++) {
        if (k->curl[i])
            curl_easy_cleanup(k->curl[i]);
        k->curl[i] = NULL;
    }
    free(k->buf.data);
    k->buf.data = NULL;
    list_release(&k->acked);
    list_release(&k->refused);
    list_release(&k->unresolved);
}

/* Pick the next URL (round-robin); returns its index. */
static size_t next_url(worker *k)
{
    size_t i = k->next_url % k->w->cfg.url_count;
    k->next_url++;
    return i;
}

/* Sleep up to ms in slices, giving up early when the drill abandons. */
static void backoff_sleep(workload *w, int64_t ms)
{
    while (ms > 0 && !atomic_load(&w->abandon)) {
        int64_t step = ms < 50 ? ms : 50;
        sleep_ms(step);
        ms -= step;
    }
}

/* ---- Writers. */

typedef enum {
    OUT_ACKED = 0,
    OUT_REFUSED,      /* definite result that applies nothing */
    OUT_CLIENT_ERROR, /* 4xx */
    OUT_ANOMALY,      /* exists_with_different_fields, ... */
    OUT_UNRESOLVED,
} outcome;

/* Classify a 200 answer to a one-event request. Returns -1 when the body
 * is not what the API documents (then the attempt is retried). */
static int classify_result(const char *body, outcome *out)
{
    json_error_t jerr;
    json_t *root = json_loads(body, 0, &jerr);
    if (root == NULL)
        return -1;
    int rc = -1;
    json_t *results = json_object_get(root, "results");
    json_t *first = json_is_array(results) ? json_array_get(results, 0) : NULL;
    const char *r = first ? json_string_value(json_object_get(first, "result")) : NULL;
    if (r != NULL) {
        rc = 0;
        if (strcmp(r, "ok") == 0 || strcmp(r, "exists") == 0)
            *out = OUT_ACKED;
        else if (strncmp(r, "exists_with_different", 21) == 0)
            *out = OUT_ANOMALY;
        else
            *out = OUT_REFUSED;
    }
    json_decref(root);
    return rc;
}

/* Send `body` to `path` until a definite answer or the deadline; fills
 * the event's times and attempts. For POST /v1/accounts the result of
 * every event must be ok/exists (checked by the caller via k->buf). */
static outcome send_until_definite(worker *k, const char *path, const char *body,
                                   workload_event *ev, int64_t deadline_ms, long *status_out)
{
    workload *w = k->w;
    int64_t backoff = WORKLOAD_BACKOFF_MS_MIN;
    char url[WORKLOAD_URL_BYTES];
    for (;;) {
        if (atomic_load(&w->abandon))
            return OUT_UNRESOLVED;
        int64_t now = clock_wall_ms();
        if (now >= deadline_ms || ev->attempts == UINT16_MAX)
            return OUT_UNRESOLVED;
        size_t u = next_url(k);
        snprintf(url, sizeof url, "%s%s", w->urls[u], path);
        if (ev->attempts > 0)
            k->st.retries++;
        ev->attempts++;
        ev->sent_ms = now;
        if (ev->first_sent_ms == 0)
            ev->first_sent_ms = now;
        long status = 0;
        int rc = http_call(k, k->curl[u], url, body, &status);
        ev->answer_ms = clock_wall_ms();
        if (rc != 0) {
            k->st.transport_errors++;
        } else if (status == 503) {
            k->st.http_503++;
        } else if (status >= 500) {
            k->st.http_5xx_other++;
        } else if (status == 200) {
            *status_out = status;
            if (strcmp(path, "/v1/transfers") != 0)
                return OUT_ACKED; /* the caller reads every result */
            outcome o;
            if (classify_result(k->buf.data ? k->buf.data : "", &o) == 0)
                return o;
            k->st.http_5xx_other++; /* an unreadable 200: retry, the id is idempotent */
        } else {
            *status_out = status;
            return OUT_CLIENT_ERROR;
        }
        int64_t left = deadline_ms - clock_wall_ms();
        backoff_sleep(w, backoff < left ? backoff : left);
        backoff = backoff * 2 > WORKLOAD_BACKOFF_MS_MAX ? WORKLOAD_BACKOFF_MS_MAX : backoff * 2;
    }
}

static void transfer_body(const workload *w, const workload_event *ev, char *out, size_t size)
{
    char id[ID128_TEXT_SIZE];
    id128_format(&ev->id, id);
    int n = snprintf(out, size,
                     "{\"transfers\":[{\"id\":\"%s\",\"debit_account_id\":\"%s\","
                     "\"credit_account_id\":\"%s\",\"amount\":%" PRId64
                     ",\"ledger\":%d,\"code\":%d}]}",
                     id, w->account_text[ev->debit], w->account_text[ev->credit], ev->amount,
                     WORKLOAD_LEDGER, WORKLOAD_CODE);
    mrd_assert(n > 0 && (size_t)n < size);
}

/* Run one transfer to its end and log it. Returns the outcome. */
static outcome run_transfer(worker *k, workload_event *ev)
{
    workload *w = k->w;
    char body[WORKLOAD_BODY_BYTES];
    transfer_body(w, ev, body, sizeof body);
    long status = 0;
    outcome o = send_until_definite(k, "/v1/transfers", body, ev,
                                    clock_wall_ms() + DRILL_TRANSFER_DEADLINE_MS, &status);
    switch (o) {
    case OUT_ACKED:
        k->st.acked++;
        list_push(&k->acked, ev); /* room was checked before sending */
        atomic_fetch_add(&w->acked_now, 1);
        {
            int64_t since = atomic_load(&w->recovery_since_ms);
            if (since > 0 && ev->answer_ms >= since) {
                long long zero = 0;
                atomic_compare_exchange_strong(&w->first_recovered_ms, &zero,
                                               (long long)ev->answer_ms);
            }
        }
        break;
    case OUT_REFUSED:
        k->st.refused++;
        list_push(&k->refused, ev);
        break;
    case OUT_CLIENT_ERROR:
        k->st.client_errors++;
        list_push(&k->refused, ev); /* nothing applied: must be absent too */
        break;
    case OUT_ANOMALY:
        k->st.anomalies++;
        break;
    case OUT_UNRESOLVED:
        k->st.unresolved++;
        list_push(&k->unresolved, ev);
        break;
    }
    return o;
}

static void *writer_main(void *arg)
{
    worker *k = arg;
    workload *w = k->w;
    size_t n = (size_t)w->cfg.accounts;
    /* Paced (rate_per_s > 0): one new transfer every period_us, on a
     * schedule that does not catch up more than one period after a slow
     * answer (a failover would otherwise end in a burst). */
    int64_t period_us = w->cfg.rate_per_s > 0
                            ? (int64_t)w->cfg.writers * 1000000 / w->cfg.rate_per_s
                            : 0;
    int64_t next_us = clock_mono_us();
    while (!atomic_load(&w->stop)) {
        if (period_us > 0) {
            int64_t now = clock_mono_us();
            if (next_us > now) {
                int64_t wait_ms = (next_us - now) / 1000;
                sleep_ms(wait_ms < 100 ? (wait_ms > 0 ? wait_ms : 1) : 100);
                continue; /* look at the stop flag at least every 100 ms */
            }
            next_us = (now - next_us > period_us ? now : next_us) + period_us;
        }
        if (k->acked.len >= k->acked.max || k->refused.len >= k->refused.max ||
            k->unresolved.len >= k->unresolved.max) {
            k->st.ack_log_full++;
            sleep_ms(100);
            continue;
        }
        workload_event ev = {0};
        id128_random(&ev.id);
        ev.debit = (uint16_t)(rng_next(&k->rng) % n);
        ev.credit = (uint16_t)(rng_next(&k->rng) % (n - 1));
        if (ev.credit >= ev.debit)
            ev.credit++;
        ev.amount = 1 + (int64_t)(rng_next(&k->rng) % WORKLOAD_AMOUNT_MAX);
        run_transfer(k, &ev);
    }
    return NULL;
}

/* ---- Readers. */

static int get_i64(json_t *obj, const char *key, int64_t *out)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v)) {
        *out = (int64_t)json_integer_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (s == NULL || *s == '\0')
        return -1;
    char *end = NULL;
    errno = 0;
    long long x = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = (int64_t)x;
    return 0;
}

static void note_violation(workload *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_violation(workload *w, const char *fmt, ...)
{
    pthread_mutex_lock(&w->violation_lock);
    if (w->first_violation[0] == '\0') {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->first_violation, sizeof w->first_violation, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&w->violation_lock);
}

/* Check one /v1/balances answer. Returns the number of violations, or -1
 * when the body is not the documented shape (not counted as a read). */
static int check_balances(workload *w, const char *body)
{
    json_error_t jerr;
    json_t *root = json_loads(body, 0, &jerr);
    if (root == NULL)
        return -1;
    int violations = -1;
    json_t *totals = json_object_get(root, "totals");
    json_t *accounts = json_object_get(root, "accounts");
    if (!json_is_array(totals) || !json_is_array(accounts))
        goto out;
    violations = 0;
    size_t i;
    json_t *t;
    json_array_foreach(totals, i, t) {
        int64_t ledger = 0, dp = 0, cp = 0, dpe = 0, cpe = 0;
        if (get_i64(t, "ledger", &ledger) != 0 || get_i64(t, "debits_posted", &dp) != 0 ||
            get_i64(t, "credits_posted", &cp) != 0 || get_i64(t, "debits_pending", &dpe) != 0 ||
            get_i64(t, "credits_pending", &cpe) != 0) {
            violations = -1;
            goto out;
        }
        if (dp != cp || dpe != cpe) {
            violations++;
            note_violation(w,
                           "ledger %" PRId64 " totals do not balance: debits_posted %" PRId64
                           " credits_posted %" PRId64 " debits_pending %" PRId64
                           " credits_pending %" PRId64,
                           ledger, dp, cp, dpe, cpe);
        }
    }
    json_t *a;
    json_array_foreach(accounts, i, a) {
        const char *id_text = json_string_value(json_object_get(a, "id"));
        id128 id;
        if (id_text == NULL || id128_parse(id_text, &id) != 0)
            continue;
        for (int j = 0; j < w->cfg.accounts; j++) {
            if (!w->limited[j] || !id128_equal(&id, &w->account_ids[j]))
                continue;
            int64_t dp = 0, cp = 0, dpe = 0, sum = 0;
            if (get_i64(a, "debits_posted", &dp) != 0 || get_i64(a, "credits_posted", &cp) != 0 ||
                get_i64(a, "debits_pending", &dpe) != 0)
                break;
            if (__builtin_add_overflow(dp, dpe, &sum) || sum > cp) {
                violations++;
                note_violation(w,
                               "limited account %s over its limit: debits %" PRId64
                               " + pending %" PRId64 " > credits %" PRId64,
                               id_text, dp, dpe, cp);
            }
            break;
        }
    }
out:
    json_decref(root);
    return violations;
}

static void *reader_main(void *arg)
{
    worker *k = arg;
    workload *w = k->w;
    char url[WORKLOAD_URL_BYTES];
    while (!atomic_load(&w->stop)) {
        size_t u = next_url(k);
        snprintf(url, sizeof url, "%s/v1/balances", w->urls[u]);
        long status = 0;
        int rc = http_call(k, k->curl[u], url, NULL, &status);
        if (rc == 0 && status == 200 && k->buf.data != NULL) {
            int v = check_balances(w, k->buf.data);
            if (v < 0) {
                k->st.reads_failed++;
            } else {
                k->st.reads_ok++;
                k->st.read_violations += v;
            }
        } else {
            k->st.reads_failed++;
            sleep_ms(100);
        }
        sleep_ms(WORKLOAD_READ_PAUSE_MS);
    }
    return NULL;
}

/* ---- Life cycle. */

workload *workload_create(const workload_config *cfg, char *err, size_t err_size)
{
    if (cfg->url_count < 1 || cfg->url_count > DRILL_URLS_MAX || cfg->api_key == NULL ||
        cfg->writers < 1 || cfg->writers > DRILL_CLIENTS_MAX || cfg->readers < 0 ||
        cfg->readers > DRILL_READERS_MAX || cfg->accounts < DRILL_ACCOUNTS_MIN ||
        cfg->accounts > DRILL_ACCOUNTS_MAX || cfg->rate_per_s < 0 ||
        cfg->rate_per_s > DRILL_RATE_MAX) {
        snprintf(err, err_size, "workload: bad settings (urls 1..%d, writers 1..%d, readers "
                                "0..%d, accounts %d..%d, rate 0..%d)",
                 DRILL_URLS_MAX, DRILL_CLIENTS_MAX, DRILL_READERS_MAX, DRILL_ACCOUNTS_MIN,
                 DRILL_ACCOUNTS_MAX, DRILL_RATE_MAX);
        return NULL;
    }
    workload *w = calloc(1, sizeof *w);
    if (w == NULL)
        goto oom;
    w->cfg = *cfg;
    pthread_mutex_init(&w->violation_lock, NULL);
    for (size_t i = 0; i < cfg->url_count; i++) {
        w->urls[i] = strdup(cfg->urls[i]);
        if (w->urls[i] == NULL)
            goto oom;
        /* Drop a trailing slash so paths join cleanly. */
        size_t len = strlen(w->urls[i]);
        if (len > 0 && w->urls[i][len - 1] == '/')
            w->urls[i][len - 1] = '\0';
        w->cfg.urls[i] = w->urls[i];
    }
    w->api_key = strdup(cfg->api_key);
    if (w->api_key == NULL)
        goto oom;
    w->cfg.api_key = w->api_key;
    int n = snprintf(w->auth_header, sizeof w->auth_header, "Authorization: Bearer %s",
                     w->api_key);
    if (n < 0 || (size_t)n >= sizeof w->auth_header) {
        snprintf(err, err_size, "workload: API key too long");
        workload_free(w);
        return NULL;
    }
    for (int i = 0; i < cfg->accounts; i++) {
        id128_random(&w->account_ids[i]);
        id128_format(&w->account_ids[i], w->account_text[i]);
        w->limited[i] = (i % 2) == 1;
    }
    w->acked.max = w->refused.max = w->unresolved.max = SIZE_MAX;
    if (worker_init(&w->setup, w, -1, false) != 0)
        goto oom;
    return w;
oom:
    snprintf(err, err_size, "workload: out of memory");
    workload_free(w);
    return NULL;
}

int workload_setup(workload *w, char *err, size_t err_size)
{
    /* 1. The accounts, in one request (ok or exists for each). */
    size_t cap = 128 + (size_t)w->cfg.accounts * 160;
    char *body = malloc(cap);
    if (body == NULL) {
        snprintf(err, err_size, "workload: out of memory");
        return -1;
    }
    size_t len = (size_t)snprintf(body, cap, "{\"accounts\":[");
    for (int i = 0; i < w->cfg.accounts; i++) {
        int n = snprintf(body + len, cap - len,
                         "%s{\"id\":\"%s\",\"ledger\":%d,\"code\":%d,\"flags\":[%s]}",
                         i ? "," : "", w->account_text[i], WORKLOAD_LEDGER, WORKLOAD_CODE,
                         w->limited[i] ? "\"debits_must_not_exceed_credits\"" : "");
        mrd_assert(n > 0 && (size_t)n < cap - len);
        len += (size_t)n;
    }
    mrd_assert(len + 3 < cap);
    memcpy(body + len, "]}", 3);
    workload_event ev = {0};
    long status = 0;
    outcome o = send_until_definite(&w->setup, "/v1/accounts", body, &ev,
                                    clock_wall_ms() + DRILL_TRANSFER_DEADLINE_MS, &status);
    free(body);
    if (o != OUT_ACKED) {
        snprintf(err, err_size, "creating %d accounts failed: %s (HTTP %ld) %.200s",
                 w->cfg.accounts, o == OUT_UNRESOLVED ? "no definite answer" : "refused",
                 status, w->setup.buf.data ? w->setup.buf.data : "");
        return -1;
    }
    json_error_t jerr;
    json_t *root = json_loads(w->setup.buf.data ? w->setup.buf.data : "", 0, &jerr);
    json_t *results = json_object_get(root, "results");
    size_t i;
    json_t *r;
    bool all_ok = json_is_array(results) && json_array_size(results) == (size_t)w->cfg.accounts;
    json_array_foreach(results, i, r) {
        const char *s = json_string_value(json_object_get(r, "result"));
        if (s == NULL || (strcmp(s, "ok") != 0 && strcmp(s, "exists") != 0))
            all_ok = false;
    }
    json_decref(root);
    if (!all_ok) {
        snprintf(err, err_size, "creating accounts: unexpected answer %.300s",
                 w->setup.buf.data ? w->setup.buf.data : "");
        return -1;
    }
    /* 2. Fund each limited account from the bank (index 0). */
    for (int a = 1; a < w->cfg.accounts; a++) {
        if (!w->limited[a])
            continue;
        workload_event t = {.debit = 0, .credit = (uint16_t)a, .amount = WORKLOAD_FUNDING_AMOUNT};
        id128_random(&t.id);
        outcome to = run_transfer(&w->setup, &t);
        if (to != OUT_ACKED) {
            snprintf(err, err_size, "funding account %s failed (%s): %.200s", w->account_text[a],
                     to == OUT_UNRESOLVED ? "no definite answer" : "refused",
                     w->setup.buf.data ? w->setup.buf.data : "");
            return -1;
        }
    }
    return 0;
}

int workload_start(workload *w, char *err, size_t err_size)
{
    mrd_assert(!w->running && !w->stopped);
    size_t total = (size_t)w->cfg.writers + (size_t)w->cfg.readers;
    w->workers = calloc(total, sizeof *w->workers);
    if (w->workers == NULL) {
        snprintf(err, err_size, "workload: out of memory");
        return -1;
    }
    w->running = true;
    for (size_t i = 0; i < total; i++) {
        worker *k = &w->workers[i];
        bool reader = i >= (size_t)w->cfg.writers;
        if (worker_init(k, w, (int)i, reader) != 0) {
            snprintf(err, err_size, "workload: cannot create curl handles");
            goto fail;
        }
        w->worker_count = i + 1;
        int rc = pthread_create(&k->thread, NULL, reader ? reader_main : writer_main, k);
        if (rc != 0) {
            snprintf(err, err_size, "workload: cannot start a thread: %s", strerror(rc));
            goto fail;
        }
        k->started = true;
    }
    return 0;
fail:
    workload_stop(w, true);
    return -1;
}

void workload_watch_recovery(workload *w, int64_t since_ms)
{
    atomic_store(&w->first_recovered_ms, 0);
    atomic_store(&w->recovery_since_ms, since_ms);
}

int64_t workload_first_recovered_ms(workload *w)
{
    return atomic_load(&w->first_recovered_ms);
}

int64_t workload_acked_now(workload *w)
{
    return atomic_load(&w->acked_now);
}

void workload_stop(workload *w, bool abandon)
{
    if (abandon)
        atomic_store(&w->abandon, true);
    atomic_store(&w->stop, true);
    if (!w->running || w->stopped)
        return;
    for (size_t i = 0; i < w->worker_count; i++) {
        worker *k = &w->workers[i];
        if (k->started)
            pthread_join(k->thread, NULL);
        k->started = false;
    }
    /* Merge: the setup worker's funding transfers, then every thread's. */
    memset(&w->stats, 0, sizeof w->stats);
    worker *all[1 + DRILL_CLIENTS_MAX + DRILL_READERS_MAX];
    size_t n = 0;
    all[n++] = &w->setup;
    for (size_t i = 0; i < w->worker_count; i++)
        all[n++] = &w->workers[i];
    for (size_t i = 0; i < n; i++) {
        stats_add(&w->stats, &all[i]->st);
        if (list_merge(&w->acked, &all[i]->acked) != 0 ||
            list_merge(&w->refused, &all[i]->refused) != 0 ||
            list_merge(&w->unresolved, &all[i]->unresolved) != 0) {
            /* Out of memory while merging: the check would be wrong, so
             * say so loudly rather than report a clean run. */
            w->stats.anomalies++;
            snprintf(w->first_violation, sizeof w->first_violation,
                     "out of memory merging the transfer logs");
        }
    }
    snprintf(w->stats.first_violation, sizeof w->stats.first_violation, "%s",
             w->first_violation);
    w->stopped = true;
}

void workload_stats_get(const workload *w, workload_stats *out)
{
    *out = w->stats;
}

const workload_event *workload_acked(const workload *w, size_t *count)
{
    *count = w->acked.len;
    return w->acked.v;
}

const workload_event *workload_refused(const workload *w, size_t *count)
{
    *count = w->refused.len;
    return w->refused.v;
}

const workload_event *workload_unresolved(const workload *w, size_t *count)
{
    *count = w->unresolved.len;
    return w->unresolved.v;
}

const id128 *workload_accounts(const workload *w, const bool **limited, size_t *count)
{
    *count = (size_t)w->cfg.accounts;
    if (limited)
        *limited = w->limited;
    return w->account_ids;
}

void workload_free(workload *w)
{
    if (w == NULL)
        return;
    if (w->running)
        workload_stop(w, true);
    for (size_t i = 0; i < w->worker_count; i++)
        worker_release(&w->workers[i]);
    free(w->workers);
    worker_release(&w->setup);
    list_release(&w->acked);
    list_release(&w->refused);
    list_release(&w->unresolved);
    for (size_t i = 0; i < DRILL_URLS_MAX; i++)
        free(w->urls[i]);
    free(w->api_key);
    pthread_mutex_destroy(&w->violation_lock);
    free(w);
}
