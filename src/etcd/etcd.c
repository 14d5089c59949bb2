/*
 * etcd.c — the HTTP side of Meridian's etcd client: requests with
 * failover across members, and watches on their own threads.
 *
 * Requests are POSTs of JSON to etcd's v3 gateway (encoded and decoded in
 * etcd_codec.c). The one rule that matters for correctness is when a
 * request may be sent again to another member: always if it never left
 * this process (connection refused, name not resolved), and after a
 * timeout or a dropped connection only if repeating it cannot change the
 * outcome (reads, keepalives, puts of the same value, deletes). A
 * transaction that may have reached a member is never repeated — its
 * comparison would then fail against its own write and report the wrong
 * result — so the caller gets ETCD_E_UNAVAILABLE, meaning "outcome
 * unknown", and the client moves on to the next member for its next call.
 *
 * Every request carries the gRPC metadata "hasleader: true" (header
 * Grpc-Metadata-Hasleader), so a member cut off from the raft leader
 * refuses at once instead of serving from a minority.
 *
 * A watch is a long-lived streaming POST to /v3/watch driven by a curl
 * multi handle on the watch's own thread, so that etcd_watch_stop can
 * wake it at once with curl_multi_wakeup. The stream is one JSON message
 * per line; the thread remembers the revision after the last event it
 * delivered and reconnects from there.
 */
#include "etcd/etcd.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "etcd/etcd_codec.h"

#define ENDPOINT_URL_BYTES_MAX 256
#define ERROR_BYTES 256
/* Connecting to a live member on 127.0.0.1 or a LAN takes well under this. */
#define CONNECT_TIMEOUT_MS_MAX 2000

/* gRPC status codes that matter here. */
#define GRPC_INVALID_ARGUMENT 3
#define GRPC_DEADLINE_EXCEEDED 4
#define GRPC_NOT_FOUND 5
#define GRPC_UNAVAILABLE 14

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static bool global_ok;

/* curl_global_init is not thread-safe: run it once, before any handle.
 * curl_global_cleanup is never called (process exit cleans up). */
static void global_init(void) {
    global_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK && sodium_init() >= 0;
}

static bool ensure_global(void) {
    pthread_once(&global_once, global_init);
    return global_ok;
}

/* Split "url,url,…" into heap strings (trimmed, without a trailing '/').
 * Returns the count, or 0 with err set. */
static size_t parse_endpoints(const char *csv, char **out, char *err, size_t err_size) {
    size_t count = 0;
    const char *p = csv;
    if (csv == NULL || csv[0] == '\0') {
        snprintf(err, err_size, "no etcd endpoints given");
        return 0;
    }
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        while (n > 0 && (*p == ' ' || *p == '\t')) p++, n--;
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '/')) n--;
        bool scheme = (n > 7 && strncmp(p, "http://", 7) == 0) ||
                      (n > 8 && strncmp(p, "https://", 8) == 0);
        if (!scheme || n >= ENDPOINT_URL_BYTES_MAX) {
            snprintf(err, err_size,
                     "bad etcd endpoint \"%.*s\": expected http://HOST:PORT (at most %d bytes)",
                     (int)(n < 80 ? n : 80), p, ENDPOINT_URL_BYTES_MAX - 1);
            goto fail;
        }
        if (count == LIMIT_ETCD_ENDPOINTS_MAX) {
            snprintf(err, err_size, "more than %d etcd endpoints", LIMIT_ETCD_ENDPOINTS_MAX);
            goto fail;
        }
        bool duplicate = false;
        for (size_t i = 0; i < count; i++)
            duplicate = duplicate || (strlen(out[i]) == n && strncmp(out[i], p, n) == 0);
        if (!duplicate) { /* a member listed twice would be tried twice */
            out[count] = strndup(p, n);
            if (out[count] == NULL) {
                snprintf(err, err_size, "out of memory");
                goto fail;
            }
            count++;
        }
        if (end == NULL) return count;
        p = end + 1;
    }
fail:
    for (size_t i = 0; i < count; i++) {
        free(out[i]);
        out[i] = NULL;
    }
    return 0;
}

static struct curl_slist *json_headers(void) {
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_slist *h2 = h ? curl_slist_append(h, "Grpc-Metadata-Hasleader: true") : NULL;
    /* Keep curl from sending "Expect: 100-continue" on larger bodies. */
    struct curl_slist *h3 = h2 ? curl_slist_append(h2, "Expect:") : NULL;
    if (h3 == NULL) curl_slist_free_all(h);
    return h3;
}

/* ------------------------------------------------------------------ */
/* Client                                                               */
/* ------------------------------------------------------------------ */

struct etcd_client {
    CURL *curl;
    struct curl_slist *headers;
    char *endpoints[LIMIT_ETCD_ENDPOINTS_MAX];
    size_t endpoint_count;
    size_t current; /* index of the member the next request goes to */
    int timeout_ms;
    /* Answer of the last request; grows up to LIMIT_ETCD_RESPONSE_BYTES_MAX. */
    char *resp;
    size_t resp_len;
    size_t resp_cap;
    bool resp_too_big;
    char last_error[ERROR_BYTES];
};

__attribute__((format(printf, 3, 4))) static int set_error(etcd_client *c, int rc,
                                                           const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    return rc;
}

static size_t client_write(char *data, size_t size, size_t nmemb, void *userp) {
    etcd_client *c = userp;
    size_t n = size * nmemb;
    if (n > LIMIT_ETCD_RESPONSE_BYTES_MAX - c->resp_len) {
        c->resp_too_big = true;
        return 0; /* makes curl fail with CURLE_WRITE_ERROR */
    }
    if (c->resp_len + n + 1 > c->resp_cap) {
        size_t cap = c->resp_cap ? c->resp_cap : 4096;
        while (cap < c->resp_len + n + 1) cap *= 2;
        char *grown = realloc(c->resp, cap);
        if (grown == NULL) return 0;
        c->resp = grown;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, n);
    c->resp_len += n;
    c->resp[c->resp_len] = '\0';
    return n;
}

etcd_client *etcd_client_create(const char *endpoints_csv, int timeout_ms, char *err,
                                size_t err_size) {
    char scratch[ERROR_BYTES];
    if (err == NULL || err_size == 0) {
        err = scratch;
        err_size = sizeof scratch;
    }
    err[0] = '\0';
    if (timeout_ms <= 0) {
        snprintf(err, err_size, "etcd timeout must be positive (got %d ms)", timeout_ms);
        return NULL;
    }
    if (!ensure_global()) {
        snprintf(err, err_size, "libcurl or libsodium failed to initialise");
        return NULL;
    }
    etcd_client *c = calloc(1, sizeof *c);
    if (c == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    c->timeout_ms = timeout_ms;
    c->endpoint_count = parse_endpoints(endpoints_csv, c->endpoints, err, err_size);
    if (c->endpoint_count == 0) goto fail;
    c->curl = curl_easy_init();
    c->headers = json_headers();
    if (c->curl == NULL || c->headers == NULL) {
        snprintf(err, err_size, "cannot create a curl handle");
        goto fail;
    }
    long connect_ms = timeout_ms < CONNECT_TIMEOUT_MS_MAX ? timeout_ms : CONNECT_TIMEOUT_MS_MAX;
    curl_easy_setopt(c->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(c->curl, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(c->curl, CURLOPT_HTTPHEADER, c->headers);
    curl_easy_setopt(c->curl, CURLOPT_WRITEFUNCTION, client_write);
    curl_easy_setopt(c->curl, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    return c;
fail:
    etcd_client_free(c);
    return NULL;
}

void etcd_client_free(etcd_client *c) {
    if (c == NULL) return;
    if (c->curl != NULL) curl_easy_cleanup(c->curl);
    curl_slist_free_all(c->headers);
    for (size_t i = 0; i < c->endpoint_count; i++) free(c->endpoints[i]);
    free(c->resp);
    free(c);
}

const char *etcd_client_last_error(const etcd_client *c) {
    mrd_assert(c != NULL);
    return c->last_error;
}

const char *etcd_client_endpoint(const etcd_client *c) {
    mrd_assert(c != NULL);
    return c->endpoints[c->current];
}

static void next_endpoint(etcd_client *c) {
    c->current = (c->current + 1) % c->endpoint_count;
}

/* Map an etcd error answer to a result code. `retry` says whether another
 * member may succeed and repeating is safe. */
static int map_error_answer(etcd_client *c, long status, bool idempotent, bool *retry) {
    int grpc_code = -1;
    char msg[160];
    etcd_codec_parse_error(c->resp, c->resp_len, &grpc_code, msg, sizeof msg);
    const char *ep = c->endpoints[c->current];
    *retry = false;
    switch (grpc_code) {
    case GRPC_NOT_FOUND:
        return set_error(c, ETCD_E_NOT_FOUND, "etcd %s: %s", ep, msg);
    case GRPC_INVALID_ARGUMENT:
        return set_error(c, ETCD_E_INVALID, "etcd %s refused the request: %s", ep, msg);
    case GRPC_UNAVAILABLE:
    case GRPC_DEADLINE_EXCEEDED:
        /* "no leader" is refused before anything is proposed: safe to
         * repeat elsewhere. A timeout may still commit later. */
        *retry = idempotent || strstr(msg, "no leader") != NULL;
        return set_error(c, ETCD_E_UNAVAILABLE, "etcd %s unavailable (HTTP %ld): %s%s", ep,
                         status, msg, *retry ? "" : " (outcome unknown)");
    default:
        if (status == 503 || status == 502 || status == 504) {
            *retry = idempotent;
            return set_error(c, ETCD_E_UNAVAILABLE, "etcd %s unavailable (HTTP %ld): %s", ep,
                             status, msg);
        }
        return set_error(c, ETCD_E_PROTOCOL, "etcd %s answered HTTP %ld (code %d): %s", ep,
                         status, grpc_code, msg);
    }
}

/* POST body to path on the current member, failing over as described at
 * the top of the file. ETCD_OK leaves a 200 answer in c->resp. */
static int request(etcd_client *c, const char *path, const char *body, bool idempotent) {
    if (body == NULL) return set_error(c, ETCD_E_PROTOCOL, "out of memory building a request");
    int rc = ETCD_E_UNAVAILABLE;
    for (size_t attempt = 0; attempt < c->endpoint_count; attempt++) {
        char url[ENDPOINT_URL_BYTES_MAX + 64];
        const char *ep = c->endpoints[c->current];
        snprintf(url, sizeof url, "%s%s", ep, path);
        c->resp_len = 0;
        c->resp_too_big = false;
        if (c->resp != NULL) c->resp[0] = '\0';
        curl_easy_setopt(c->curl, CURLOPT_URL, url);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
        CURLcode res = curl_easy_perform(c->curl);
        if (res == CURLE_OK) {
            long status = 0;
            curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &status);
            if (status == 200) {
                c->last_error[0] = '\0';
                return ETCD_OK;
            }
            bool retry = false;
            rc = map_error_answer(c, status, idempotent, &retry);
            if (!retry) return rc;
            next_endpoint(c);
            if (attempt + 1 < c->endpoint_count)
                log_warn("etcd", "%s; trying %s", c->last_error, c->endpoints[c->current]);
            continue;
        }
        if (res == CURLE_WRITE_ERROR && c->resp_too_big)
            return set_error(c, ETCD_E_LIMIT, "etcd %s%s: answer larger than %u bytes", ep, path,
                             LIMIT_ETCD_RESPONSE_BYTES_MAX);
        long sent_bytes = 0;
        curl_easy_getinfo(c->curl, CURLINFO_REQUEST_SIZE, &sent_bytes);
        next_endpoint(c); /* this member failed: the next call starts elsewhere */
        if (sent_bytes > 0 && !idempotent)
            return set_error(c, ETCD_E_UNAVAILABLE,
                             "etcd %s%s: %s after the request was sent (outcome unknown)", ep,
                             path, curl_easy_strerror(res));
        rc = set_error(c, ETCD_E_UNAVAILABLE, "etcd %s%s: %s", ep, path, curl_easy_strerror(res));
        if (attempt + 1 < c->endpoint_count)
            log_warn("etcd", "%s; trying %s", c->last_error, c->endpoints[c->current]);
    }
    if (c->endpoint_count > 1) {
        /* Copy first: formatting last_error into itself would overlap. */
        char last[sizeof c->last_error];
        memcpy(last, c->last_error, sizeof last);
        last[sizeof last - 1] = '\0';
        return set_error(c, rc, "no etcd member answered (%zu tried; last: %.160s)",
                         c->endpoint_count, last);
    }
    return rc;
}

/* Send and free body. */
static int request_free(etcd_client *c, const char *path, char *body, bool idempotent) {
    int rc = request(c, path, body, idempotent);
    free(body);
    return rc;
}

static int check_key(etcd_client *c, const char *key, bool allow_empty) {
    if (key == NULL || (!allow_empty && key[0] == '\0'))
        return set_error(c, ETCD_E_INVALID, "etcd key must not be empty");
    size_t n = strnlen(key, LIMIT_ETCD_KEY_BYTES_MAX + 1);
    if (n > LIMIT_ETCD_KEY_BYTES_MAX)
        return set_error(c, ETCD_E_INVALID, "etcd key longer than %d bytes",
                         LIMIT_ETCD_KEY_BYTES_MAX);
    return ETCD_OK;
}

static int check_value(etcd_client *c, const void *value, size_t value_len) {
    if (value == NULL && value_len > 0)
        return set_error(c, ETCD_E_INVALID, "etcd value is NULL but has %zu bytes", value_len);
    if (value_len > LIMIT_ETCD_VALUE_BYTES_MAX)
        return set_error(c, ETCD_E_INVALID, "etcd value of %zu bytes exceeds %u", value_len,
                         LIMIT_ETCD_VALUE_BYTES_MAX);
    return ETCD_OK;
}

static int parse_done(etcd_client *c, int rc, const char *err) {
    if (rc == ETCD_OK) {
        c->last_error[0] = '\0';
        return rc;
    }
    return set_error(c, rc, "etcd %s: %s", c->endpoints[c->current], err);
}

/* --- Leases. */

int etcd_lease_grant(etcd_client *c, int ttl_s, int64_t *lease_id) {
    mrd_assert(c != NULL && lease_id != NULL);
    *lease_id = 0;
    if (ttl_s < 1 || ttl_s > ETCD_LEASE_TTL_S_MAX)
        return set_error(c, ETCD_E_INVALID, "lease TTL %d s outside 1..%d", ttl_s,
                         ETCD_LEASE_TTL_S_MAX);
    int rc = request_free(c, "/v3/lease/grant", etcd_codec_lease_grant_request(ttl_s), true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_lease_grant_response(c->resp, c->resp_len, lease_id, NULL, err,
                                               sizeof err);
    return parse_done(c, rc, err);
}

int etcd_lease_keepalive(etcd_client *c, int64_t lease_id, int64_t *ttl_left_s) {
    mrd_assert(c != NULL);
    if (ttl_left_s != NULL) *ttl_left_s = 0;
    int rc = request_free(c, "/v3/lease/keepalive", etcd_codec_lease_id_request(lease_id, false),
                          true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_keepalive_response(c->resp, c->resp_len, ttl_left_s, err, sizeof err);
    return parse_done(c, rc, err);
}

int etcd_lease_revoke(etcd_client *c, int64_t lease_id) {
    mrd_assert(c != NULL);
    return request_free(c, "/v3/lease/revoke", etcd_codec_lease_id_request(lease_id, false),
                        true);
}

int etcd_lease_ttl(etcd_client *c, int64_t lease_id, int64_t *ttl_left_s) {
    mrd_assert(c != NULL && ttl_left_s != NULL);
    *ttl_left_s = 0;
    int rc = request_free(c, "/v3/lease/timetolive", etcd_codec_lease_id_request(lease_id, false),
                          true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_timetolive_response(c->resp, c->resp_len, ttl_left_s, err, sizeof err);
    return parse_done(c, rc, err);
}

/* --- Keys. */

int etcd_put(etcd_client *c, const char *key, const void *value, size_t value_len,
             int64_t lease_id, int64_t *revision) {
    mrd_assert(c != NULL);
    if (revision != NULL) *revision = 0;
    int rc;
    if ((rc = check_key(c, key, false)) || (rc = check_value(c, value, value_len))) return rc;
    /* Repeating a put writes the same value again: safe to fail over. */
    rc = request_free(c, "/v3/kv/put", etcd_codec_put_request(key, value, value_len, lease_id),
                      true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_write_response(c->resp, c->resp_len, revision, NULL, err, sizeof err);
    return parse_done(c, rc, err);
}

int etcd_get(etcd_client *c, const char *key, etcd_kv *out) {
    mrd_assert(c != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    int rc = check_key(c, key, false);
    if (rc != ETCD_OK) return rc;
    rc = request_free(c, "/v3/kv/range", etcd_codec_range_request(key, false, 0), true);
    if (rc != ETCD_OK) return rc;
    etcd_kv *kvs = NULL;
    size_t count = 0;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_range_response(c->resp, c->resp_len, 1, &kvs, &count, err, sizeof err);
    if (rc != ETCD_OK) return parse_done(c, rc, err);
    if (count == 0) {
        free(kvs);
        return set_error(c, ETCD_E_NOT_FOUND, "etcd key %.160s does not exist", key);
    }
    *out = kvs[0]; /* take ownership of the strings */
    free(kvs);
    c->last_error[0] = '\0';
    return ETCD_OK;
}

int etcd_get_prefix(etcd_client *c, const char *prefix, etcd_kv **out, size_t *count,
                    size_t max) {
    mrd_assert(c != NULL && out != NULL && count != NULL);
    *out = NULL;
    *count = 0;
    int rc = check_key(c, prefix, true);
    if (rc != ETCD_OK) return rc;
    if (max < 1 || max > LIMIT_ETCD_PREFIX_KEYS_MAX)
        return set_error(c, ETCD_E_INVALID, "prefix read bound %zu outside 1..%d", max,
                         LIMIT_ETCD_PREFIX_KEYS_MAX);
    rc = request_free(c, "/v3/kv/range", etcd_codec_range_request(prefix, true, (int64_t)max),
                      true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_range_response(c->resp, c->resp_len, max, out, count, err, sizeof err);
    if (rc == ETCD_E_LIMIT)
        return set_error(c, rc, "more than %zu keys under prefix %.160s", max, prefix);
    return parse_done(c, rc, err);
}

int etcd_delete(etcd_client *c, const char *key) {
    mrd_assert(c != NULL);
    int rc = check_key(c, key, false);
    if (rc != ETCD_OK) return rc;
    rc = request_free(c, "/v3/kv/deleterange", etcd_codec_delete_request(key, false), true);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_write_response(c->resp, c->resp_len, NULL, NULL, err, sizeof err);
    return parse_done(c, rc, err);
}

/* --- Transactions. */

static int check_ops(etcd_client *c, const etcd_op *ops, size_t count) {
    if (count > LIMIT_ETCD_TXN_OPS_MAX || (count > 0 && ops == NULL))
        return set_error(c, ETCD_E_INVALID, "transaction branch of %zu operations (max %d)",
                         count, LIMIT_ETCD_TXN_OPS_MAX);
    for (size_t i = 0; i < count; i++) {
        int rc = check_key(c, ops[i].key, ops[i].prefix);
        if (rc == ETCD_OK && ops[i].kind == ETCD_OP_PUT)
            rc = check_value(c, ops[i].value, ops[i].value_len);
        if (rc != ETCD_OK) return rc;
    }
    return ETCD_OK;
}

int etcd_txn_run(etcd_client *c, const etcd_txn *txn, etcd_txn_result *out) {
    mrd_assert(c != NULL && txn != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    int rc;
    if (txn->compare_count > LIMIT_ETCD_TXN_OPS_MAX ||
        (txn->compare_count > 0 && txn->compares == NULL))
        return set_error(c, ETCD_E_INVALID, "transaction of %zu comparisons (max %d)",
                         txn->compare_count, LIMIT_ETCD_TXN_OPS_MAX);
    for (size_t i = 0; i < txn->compare_count; i++) {
        const etcd_compare *cmp = &txn->compares[i];
        if ((rc = check_key(c, cmp->key, false))) return rc;
        if (cmp->target == ETCD_CMP_VALUE && (rc = check_value(c, cmp->value, cmp->value_len)))
            return rc;
    }
    if ((rc = check_ops(c, txn->success, txn->success_count)) ||
        (rc = check_ops(c, txn->failure, txn->failure_count)))
        return rc;
    rc = request_free(c, "/v3/kv/txn", etcd_codec_txn_request(txn), false);
    if (rc != ETCD_OK) return rc;
    char err[ERROR_BYTES] = "";
    rc = etcd_codec_parse_txn_response(c->resp, c->resp_len, out, err, sizeof err);
    return parse_done(c, rc, err);
}

int etcd_create_if_absent(etcd_client *c, const char *key, const void *value,
                          size_t value_len, int64_t lease_id, bool *created,
                          etcd_kv *current_if_not_created) {
    mrd_assert(c != NULL);
    if (created != NULL) *created = false;
    if (current_if_not_created != NULL)
        memset(current_if_not_created, 0, sizeof *current_if_not_created);
    const etcd_compare cmp = {
        .key = key, .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .number = 0};
    const etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = value,
                         .value_len = value_len, .lease_id = lease_id};
    const etcd_op get = {.kind = ETCD_OP_GET, .key = key};
    const etcd_txn txn = {.compares = &cmp, .compare_count = 1, .success = &put,
                          .success_count = 1, .failure = &get, .failure_count = 1};
    etcd_txn_result r;
    int rc = etcd_txn_run(c, &txn, &r);
    if (rc != ETCD_OK) return rc;
    if (created != NULL) *created = r.succeeded;
    if (!r.succeeded && current_if_not_created != NULL && r.kv_count > 0) {
        *current_if_not_created = r.kvs[0]; /* take the strings */
        memset(&r.kvs[0], 0, sizeof r.kvs[0]);
    }
    bool succeeded = r.succeeded;
    etcd_txn_result_release(&r);
    if (!succeeded && created == NULL)
        return set_error(c, ETCD_E_FAILED, "etcd key %.160s already exists", key);
    return ETCD_OK;
}

int etcd_put_if_mod_revision(etcd_client *c, const char *key, const void *value,
                             size_t value_len, int64_t lease_id,
                             int64_t expected_mod_revision, bool *succeeded) {
    mrd_assert(c != NULL);
    if (succeeded != NULL) *succeeded = false;
    const etcd_compare cmp = {.key = key, .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL,
                              .number = expected_mod_revision};
    const etcd_op put = {.kind = ETCD_OP_PUT, .key = key, .value = value,
                         .value_len = value_len, .lease_id = lease_id};
    const etcd_txn txn = {.compares = &cmp, .compare_count = 1, .success = &put,
                          .success_count = 1};
    etcd_txn_result r;
    int rc = etcd_txn_run(c, &txn, &r);
    if (rc != ETCD_OK) return rc;
    bool ok = r.succeeded;
    etcd_txn_result_release(&r);
    if (succeeded != NULL) *succeeded = ok;
    if (!ok && succeeded == NULL)
        return set_error(c, ETCD_E_FAILED,
                         "etcd key %.160s changed (mod_revision is not %" PRId64 ")", key,
                         expected_mod_revision);
    return ETCD_OK;
}

/* ------------------------------------------------------------------ */
/* Watch                                                                */
/* ------------------------------------------------------------------ */

struct etcd_watch {
    pthread_t thread;
    bool thread_started;
    char *endpoints[LIMIT_ETCD_ENDPOINTS_MAX];
    size_t endpoint_count;
    size_t current;
    char *key;
    bool prefix;
    etcd_watch_cb cb;
    void *arg;
    atomic_bool stop;
    pthread_mutex_t mu; /* with cv: the interruptible backoff sleep */
    pthread_cond_t cv;
    CURLM *multi;
    CURL *curl;
    struct curl_slist *headers;

    /* Owned by the watch thread. next_revision is where a new stream
     * starts: one past the last revision delivered (0 = "from now"). */
    int64_t next_revision;
    char *buf; /* bytes of the stream not yet split into lines */
    size_t buf_len;
    size_t buf_cap;
    bool progressed;     /* this stream delivered a message */
    bool reconnect;      /* this stream must be dropped */
    bool created;        /* this stream's watch was set up */
    int64_t last_byte_ms;
    char reason[320];    /* why the stream ended */
};

/* Handle one line of the stream. Returns false to drop the stream. */
static bool watch_line(etcd_watch *w, const char *line, size_t len) {
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == ' ')) len--;
    if (len == 0) return true;
    etcd_watch_msg msg;
    char err[ERROR_BYTES] = "";
    int rc = etcd_codec_parse_watch_message(line, len, &msg, err, sizeof err);
    if (rc != ETCD_OK) {
        snprintf(w->reason, sizeof w->reason, "bad watch message: %.200s", err);
        return false;
    }
    bool keep = true;
    if (msg.error) {
        snprintf(w->reason, sizeof w->reason, "watch stream error: %s", msg.reason);
        keep = false;
        goto out;
    }
    w->progressed = true;
    if (msg.created) {
        w->created = true;
        /* "From now on": the store was at header_revision when the watch
         * began, so a later stream must start right after it. */
        if (w->next_revision == 0) w->next_revision = msg.header_revision + 1;
    }
    if (msg.canceled) {
        if (msg.compact_revision > 0) {
            etcd_event ev = {.type = ETCD_EVENT_COMPACTED, .revision = msg.compact_revision};
            w->next_revision = msg.compact_revision;
            w->cb(&ev, w->arg);
            snprintf(w->reason, sizeof w->reason, "history compacted up to revision %" PRId64,
                     msg.compact_revision);
        } else {
            snprintf(w->reason, sizeof w->reason, "watch canceled by etcd: %s",
                     msg.reason[0] ? msg.reason : "(no reason)");
        }
        keep = false;
        goto out;
    }
    if (msg.event_count > 0) {
        /* Events of one revision (a transaction) share it: compare with
         * the position before this message, then move past the last. */
        int64_t from = w->next_revision;
        for (size_t i = 0; i < msg.event_count; i++) {
            if (msg.events[i].revision < from) continue; /* already delivered */
            w->cb(&msg.events[i], w->arg);
            if (msg.events[i].revision + 1 > w->next_revision)
                w->next_revision = msg.events[i].revision + 1;
        }
    } else if (!msg.created && w->created && msg.header_revision + 1 > w->next_revision) {
        /* A progress notification: every event up to header_revision was sent. */
        w->next_revision = msg.header_revision + 1;
    }
out:
    etcd_watch_msg_release(&msg);
    return keep;
}

static size_t watch_write(char *data, size_t size, size_t nmemb, void *userp) {
    etcd_watch *w = userp;
    size_t n = size * nmemb;
    if (atomic_load(&w->stop)) return 0;
    w->last_byte_ms = clock_mono_ms();
    long status = 0;
    curl_easy_getinfo(w->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        int code = -1;
        char msg[160];
        etcd_codec_parse_error(data, n, &code, msg, sizeof msg);
        snprintf(w->reason, sizeof w->reason, "watch refused with HTTP %ld: %s", status, msg);
        w->reconnect = true;
        return 0;
    }
    if (n > LIMIT_ETCD_RESPONSE_BYTES_MAX - w->buf_len) {
        snprintf(w->reason, sizeof w->reason, "watch message larger than %u bytes",
                 LIMIT_ETCD_RESPONSE_BYTES_MAX);
        w->reconnect = true;
        return 0;
    }
    if (w->buf_len + n > w->buf_cap) {
        size_t cap = w->buf_cap ? w->buf_cap : 4096;
        while (cap < w->buf_len + n) cap *= 2;
        char *grown = realloc(w->buf, cap);
        if (grown == NULL) {
            snprintf(w->reason, sizeof w->reason, "out of memory");
            w->reconnect = true;
            return 0;
        }
        w->buf = grown;
        w->buf_cap = cap;
    }
    memcpy(w->buf + w->buf_len, data, n);
    w->buf_len += n;
    size_t start = 0;
    for (;;) {
        char *nl = memchr(w->buf + start, '\n', w->buf_len - start);
        if (nl == NULL) break;
        size_t line_len = (size_t)(nl - (w->buf + start));
        if (!watch_line(w, w->buf + start, line_len)) {
            w->reconnect = true;
            return 0;
        }
        start += line_len + 1;
        if (atomic_load(&w->stop)) return 0;
    }
    memmove(w->buf, w->buf + start, w->buf_len - start);
    w->buf_len -= start;
    return n;
}

/* One watch stream against the current member, until it ends, fails,
 * idles out or the watch is stopped. */
static void watch_stream(etcd_watch *w) {
    char *body = etcd_codec_watch_request(w->key, w->prefix, w->next_revision);
    if (body == NULL) {
        snprintf(w->reason, sizeof w->reason, "out of memory");
        return;
    }
    char url[ENDPOINT_URL_BYTES_MAX + 16];
    snprintf(url, sizeof url, "%s/v3/watch", w->endpoints[w->current]);
    w->buf_len = 0;
    w->progressed = w->reconnect = w->created = false;
    w->reason[0] = '\0';
    w->last_byte_ms = clock_mono_ms();
    curl_easy_setopt(w->curl, CURLOPT_URL, url);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(w->curl, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    if (curl_multi_add_handle(w->multi, w->curl) != CURLM_OK) {
        snprintf(w->reason, sizeof w->reason, "curl_multi_add_handle failed");
        free(body);
        return;
    }
    int running = 1;
    while (!atomic_load(&w->stop)) {
        if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
            snprintf(w->reason, sizeof w->reason, "curl_multi_perform failed");
            break;
        }
        int queued = 0;
        CURLMsg *m;
        while ((m = curl_multi_info_read(w->multi, &queued)) != NULL) {
            if (m->msg == CURLMSG_DONE && w->reason[0] == '\0')
                snprintf(w->reason, sizeof w->reason, "stream ended: %s",
                         m->data.result == CURLE_OK ? "closed by the member"
                                                    : curl_easy_strerror(m->data.result));
        }
        if (running == 0 || w->reconnect) break;
        if (clock_mono_ms() - w->last_byte_ms > ETCD_WATCH_IDLE_RECONNECT_MS) {
            snprintf(w->reason, sizeof w->reason, "no data for %d ms",
                     ETCD_WATCH_IDLE_RECONNECT_MS);
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(w->multi, w->curl);
    free(body);
}

/* Sleep up to ms, returning early when the watch is stopped. */
static void watch_sleep(etcd_watch *w, int ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->stop)) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &deadline) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&w->mu);
}

static void *watch_main(void *arg) {
    etcd_watch *w = arg;
    int backoff_ms = LIMIT_ETCD_WATCH_BACKOFF_MS_MIN;
    while (!atomic_load(&w->stop)) {
        watch_stream(w);
        if (atomic_load(&w->stop)) break;
        if (w->progressed) backoff_ms = LIMIT_ETCD_WATCH_BACKOFF_MS_MIN;
        const char *ep = w->endpoints[w->current];
        w->current = (w->current + 1) % w->endpoint_count;
        log_warn("etcd", "watch on %s via %s interrupted (%s); reconnecting to %s from revision "
                 "%" PRId64 " in %d ms",
                 w->key, ep, w->reason, w->endpoints[w->current], w->next_revision, backoff_ms);
        watch_sleep(w, backoff_ms);
        backoff_ms = backoff_ms * 2 > LIMIT_ETCD_WATCH_BACKOFF_MS_MAX
                         ? LIMIT_ETCD_WATCH_BACKOFF_MS_MAX
                         : backoff_ms * 2;
    }
    return NULL;
}

static void watch_free(etcd_watch *w) {
    if (w->multi != NULL) curl_multi_cleanup(w->multi);
    if (w->curl != NULL) curl_easy_cleanup(w->curl);
    curl_slist_free_all(w->headers);
    for (size_t i = 0; i < w->endpoint_count; i++) free(w->endpoints[i]);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->key);
    free(w->buf);
    free(w);
}

etcd_watch *etcd_watch_start(const char *endpoints_csv, const char *key, bool prefix,
                             int64_t start_revision, etcd_watch_cb cb, void *arg) {
    mrd_assert(cb != NULL);
    char err[ERROR_BYTES] = "";
    if (key == NULL || (!prefix && key[0] == '\0') ||
        strnlen(key, LIMIT_ETCD_KEY_BYTES_MAX + 1) > LIMIT_ETCD_KEY_BYTES_MAX ||
        start_revision < 0) {
        log_error("etcd", "cannot watch: empty or too long key, or negative start revision");
        return NULL;
    }
    if (!ensure_global()) {
        log_error("etcd", "cannot watch: libcurl or libsodium failed to initialise");
        return NULL;
    }
    etcd_watch *w = calloc(1, sizeof *w);
    if (w == NULL) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
    atomic_init(&w->stop, false);
    w->prefix = prefix;
    w->cb = cb;
    w->arg = arg;
    w->next_revision = start_revision;
    w->key = strdup(key);
    w->endpoint_count = parse_endpoints(endpoints_csv, w->endpoints, err, sizeof err);
    if (w->endpoint_count == 0) {
        log_error("etcd", "cannot watch %s: %s", key, err);
        goto fail;
    }
    w->multi = curl_multi_init();
    w->curl = curl_easy_init();
    w->headers = json_headers();
    if (w->key == NULL || w->multi == NULL || w->curl == NULL || w->headers == NULL) {
        log_error("etcd", "cannot watch %s: out of memory", key);
        goto fail;
    }
    curl_easy_setopt(w->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(w->curl, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS_MAX);
    curl_easy_setopt(w->curl, CURLOPT_HTTPHEADER, w->headers);
    curl_easy_setopt(w->curl, CURLOPT_WRITEFUNCTION, watch_write);
    curl_easy_setopt(w->curl, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    /* A member that vanishes without a FIN/RST (a black-holed link) is
     * found by TCP keepalive, and by the idle reconnect at the latest. */
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(w->curl, CURLOPT_TCP_KEEPINTVL, 2L);
    int prc = pthread_create(&w->thread, NULL, watch_main, w);
    if (prc != 0) {
        log_error("etcd", "cannot watch %s: pthread_create: %s", key, strerror(prc));
        goto fail;
    }
    w->thread_started = true;
    return w;
fail:
    watch_free(w);
    return NULL;
}

void etcd_watch_stop(etcd_watch *w) {
    if (w == NULL) return;
    mrd_assert(!w->thread_started || !pthread_equal(pthread_self(), w->thread));
    atomic_store(&w->stop, true);
    pthread_mutex_lock(&w->mu);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    curl_multi_wakeup(w->multi);
    if (w->thread_started) pthread_join(w->thread, NULL);
    watch_free(w);
}
