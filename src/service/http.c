/*
 * http.c — libmicrohttpd glue: connections, bodies, common headers.
 *
 * Thread per connection (MHD_USE_THREAD_PER_CONNECTION) with a
 * connection limit: handlers block on the group-commit batcher and on
 * read queries, which in MHD's thread-pool mode would stall every
 * connection sharing the thread. The request callback follows MHD's
 * protocol, with two lessons from /work/shared/DEPENDENCIES.md:
 *   - the first call only allocates the per-request state and returns
 *     (queueing a response there makes 0.9.75 drop keep-alive);
 *   - the body is accumulated under LIMIT_BODY_BYTES_MAX; a declared
 *     Content-Length above it is refused at once with 413 (the only
 *     response queued on the first call: the connection is closed since
 *     the body will not be read), a chunked body that grows past it is
 *     drained and refused when complete.
 * An atomic count of requests in progress lets shutdown wait for them
 * after the listening socket is closed.
 */
#include "service/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/limits.h"
#include "common/log.h"
#include "common/mrd_assert.h"
#include "service/codec.h"
#include "service/metrics.h"

struct http_server {
    struct MHD_Daemon *daemon;
    http_handler_fn handler;
    void *handler_arg;
    int port;
    MHD_socket quiesced_fd; /* closed after MHD_stop_daemon */
    atomic_int stopping;
    atomic_int in_flight;
    atomic_uint_fast64_t next_request;
    uint32_t id_prefix; /* random per process, so ids differ across restarts */
};

/* Per-request state, from the first callback to the completion notice. */
typedef struct request_state {
    struct timespec start;
    char *body;
    size_t len;
    size_t cap;
    bool has_content_length;
    bool too_large;
    char request_id[32];
} request_state;

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    log_warn("http", "libmicrohttpd: %s", line);
}

/* A problem+json response for transport-level refusals. */
static void problem(http_response *resp, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(http_response *resp, int status, const char *code, const char *fmt, ...)
{
    codec_error e;
    memset(&e, 0, sizeof e);
    e.status = status;
    e.code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.detail, sizeof e.detail, fmt, ap);
    va_end(ap);
    resp->status = status;
    resp->content_type = "application/problem+json";
    resp->body = codec_problem_body(&e);
    resp->body_len = resp->body != NULL ? strlen(resp->body) : 0;
}

/* Build and queue the MHD response for resp (which gives up its body),
 * log and count it. */
static enum MHD_Result send_response(http_server *s, struct MHD_Connection *conn,
                                     request_state *st, const char *method,
                                     const char *url, http_response *resp, bool close)
{
    mrd_assert(resp->status >= 100 && resp->status <= 599);
    struct MHD_Response *r;
    if (resp->body != NULL)
        r = MHD_create_response_from_buffer(resp->body_len, resp->body, MHD_RESPMEM_MUST_FREE);
    else
        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (r == NULL) {
        free(resp->body);
        resp->body = NULL;
        log_error("http", "cannot allocate a response request_id=%s", st->request_id);
        return MHD_NO;
    }
    resp->body = NULL; /* owned by r now */
    const char *ctype = resp->content_type != NULL ? resp->content_type : "application/json";
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(r, "X-Request-Id", st->request_id);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (resp->allow != NULL) MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, resp->allow);
    if (resp->www_authenticate)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (resp->retry_after_s > 0) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", resp->retry_after_s);
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (close) MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);

    double seconds = seconds_since(&st->start);
    const char *route = resp->route != NULL ? resp->route : "other";
    metrics_http_observe(route, resp->status, seconds);
    log_debug("http", "request_id=%s method=%s path=%s route=%s status=%d duration_us=%lld",
              st->request_id, method, url, route, resp->status,
              (long long)(seconds * 1e6));
    (void)s;
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    http_server *s = cls;
    request_state *st = *con_cls;

    if (st == NULL) {
        /* First call: headers only. */
        st = calloc(1, sizeof *st);
        if (st == NULL) return MHD_NO;
        clock_gettime(CLOCK_MONOTONIC, &st->start);
        uint64_t n = atomic_fetch_add(&s->next_request, 1) + 1;
        snprintf(st->request_id, sizeof st->request_id, "%08x-%012llx", (unsigned)s->id_prefix,
                 (unsigned long long)n);
        atomic_fetch_add(&s->in_flight, 1);
        *con_cls = st;

        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                     MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl != NULL) {
            st->has_content_length = true;
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno == 0 && end != cl && *end == '\0' && v > LIMIT_BODY_BYTES_MAX) {
                http_response resp = {0};
                problem(&resp, 413, "body_too_large",
                        "the body is %llu bytes, more than the limit of %u bytes; split the batch into smaller requests",
                        v, (unsigned)LIMIT_BODY_BYTES_MAX);
                return send_response(s, conn, st, method, url, &resp, true);
            }
            if (errno == 0 && end != cl && *end == '\0' && v > 0) {
                st->body = malloc((size_t)v + 1);
                if (st->body == NULL) return MHD_NO;
                st->cap = (size_t)v + 1;
            }
        }
        return MHD_YES;
    }

    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->too_large) return MHD_YES; /* drain */
        if (st->len + n > LIMIT_BODY_BYTES_MAX) {
            st->too_large = true;
            free(st->body);
            st->body = NULL;
            st->len = st->cap = 0;
            return MHD_YES;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap > 0 ? st->cap : 4096;
            while (cap < st->len + n + 1) cap *= 2;
            if (cap > (size_t)LIMIT_BODY_BYTES_MAX + 1) cap = (size_t)LIMIT_BODY_BYTES_MAX + 1;
            char *p = realloc(st->body, cap);
            if (p == NULL) return MHD_NO;
            st->body = p;
            st->cap = cap;
        }
        memcpy(st->body + st->len, upload_data, n);
        st->len += n;
        return MHD_YES;
    }

    /* Final call: the whole request is here. */
    http_response resp = {0};
    if (st->too_large) {
        problem(&resp, 413, "body_too_large",
                "the body is more than the limit of %u bytes; split the batch into smaller requests",
                (unsigned)LIMIT_BODY_BYTES_MAX);
        return send_response(s, conn, st, method, url, &resp, false);
    }
    if (atomic_load(&s->stopping)) {
        problem(&resp, 503, "unavailable",
                "meridiand is shutting down; nothing was applied, retry with the same ids on another instance");
        resp.retry_after_s = 1;
        return send_response(s, conn, st, method, url, &resp, true);
    }
    if (st->body != NULL) st->body[st->len] = '\0';
    http_request req = {
        .method = method,
        .path = url,
        .body = st->body != NULL ? st->body : "",
        .body_len = st->len,
        .has_content_length = st->has_content_length,
        .request_id = st->request_id,
        .conn = conn,
    };
    s->handler(s->handler_arg, &req, &resp);
    if (resp.status == 0) {
        log_error("http", "handler set no status request_id=%s path=%s", st->request_id, url);
        free(resp.body);
        resp = (http_response){0};
        problem(&resp, 500, "internal", "internal error; request id %s", st->request_id);
    }
    return send_response(s, conn, st, method, url, &resp, false);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    http_server *s = cls;
    request_state *st = *con_cls;
    if (st == NULL) return;
    free(st->body);
    free(st);
    *con_cls = NULL;
    atomic_fetch_sub(&s->in_flight, 1);
}

http_server *http_start(const http_config *cfg, char *err, size_t err_size)
{
    mrd_assert(cfg != NULL && cfg->handler != NULL);
    if (cfg->max_connections < 1 || cfg->max_connections > LIMIT_HTTP_CONNECTIONS_MAX) {
        snprintf(err, err_size, "max_connections must be between 1 and %d, not %d",
                 LIMIT_HTTP_CONNECTIONS_MAX, cfg->max_connections);
        return NULL;
    }
    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(err, err_size, "port must be between 0 and 65535, not %d", cfg->port);
        return NULL;
    }
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)cfg->port);
    if (inet_pton(AF_INET, cfg->host, &addr.sin_addr) != 1) {
        snprintf(err, err_size, "listen address '%s' is not an IPv4 address such as 127.0.0.1",
                 cfg->host);
        return NULL;
    }
    http_server *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    s->handler = cfg->handler;
    s->handler_arg = cfg->handler_arg;
    s->quiesced_fd = MHD_INVALID_SOCKET;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->id_prefix = (uint32_t)((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 16) ^ (uint64_t)ts.tv_sec);

    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->idle_timeout_s > 0 ? cfg->idle_timeout_s : 60),
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
        MHD_OPTION_END);
    if (s->daemon == NULL) {
        snprintf(err, err_size, "cannot listen on %s:%d (address in use or not local?)", cfg->host,
                 cfg->port);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info != NULL ? (int)info->port : cfg->port;
    return s;
}

int http_port(const http_server *s)
{
    return s->port;
}

void http_quiesce(http_server *s)
{
    atomic_store(&s->stopping, 1);
    if (s->quiesced_fd == MHD_INVALID_SOCKET) s->quiesced_fd = MHD_quiesce_daemon(s->daemon);
}

int http_wait_idle(http_server *s, int timeout_ms)
{
    for (int waited_ms = 0; waited_ms <= timeout_ms; waited_ms += 10) {
        if (atomic_load(&s->in_flight) == 0) return 0;
        struct timespec d = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
    return -1;
}

void http_stop(http_server *s)
{
    if (s == NULL) return;
    MHD_stop_daemon(s->daemon);
    if (s->quiesced_fd != MHD_INVALID_SOCKET) close(s->quiesced_fd);
    free(s);
}

const char *http_request_header(const http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_query(const http_request *req, const char *name)
{
    const char *v = MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
    if (v == NULL) {
        /* "?name" without '=' is reported with a NULL value: present. */
        if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name),
                                          NULL, NULL) == MHD_YES)
            return "";
    }
    return v;
}

typedef struct query_iter {
    int (*fn)(void *arg, const char *name, const char *value);
    void *arg;
    int ret;
} query_iter;

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    query_iter *it = cls;
    it->ret = it->fn(it->arg, key, value != NULL ? value : "");
    return it->ret == 0 ? MHD_YES : MHD_NO;
}

int http_request_query_each(const http_request *req,
                            int (*fn)(void *arg, const char *name, const char *value), void *arg)
{
    query_iter it = {.fn = fn, .arg = arg, .ret = 0};
    MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_cb, &it);
    return it.ret;
}
