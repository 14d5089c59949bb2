/*
 * http.h — meridiand's HTTP/1.1 transport (libmicrohttpd).
 *
 * One thread per connection (bounded by max_connections), so a handler
 * may block on the batcher or on a read query without stalling other
 * connections. The transport reads the whole body under a hard limit
 * (LIMIT_BODY_BYTES_MAX, 413 body_too_large), then calls one handler
 * with the complete request; the handler fills an http_response and the
 * transport adds the common headers (Content-Type, X-Request-Id, ...),
 * logs one access line at debug level and observes the request in
 * metrics. Routing and everything about the API live in api.c.
 */
#ifndef MERIDIAN_HTTP_H
#define MERIDIAN_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct MHD_Connection;

/* A request as the handler sees it. Valid only during the handler call. */
typedef struct http_request {
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* decoded path, no query string */
    const char *body;            /* NUL-terminated; "" when none */
    size_t body_len;
    bool has_content_length;     /* a Content-Length header was sent */
    const char *request_id;      /* also sent as X-Request-Id */
    struct MHD_Connection *conn; /* for http_request_header/_query */
} http_request;

/* What the handler answers. The handler sets status and body (malloc'd,
 * ownership passes to the transport); the rest is optional. */
typedef struct http_response {
    int status;
    char *body;               /* malloc'd or NULL (empty body) */
    size_t body_len;
    const char *content_type; /* static string; NULL = application/json */
    const char *route;        /* metrics route name (static); NULL = "other" */
    const char *allow;        /* Allow header for 405, or NULL */
    int retry_after_s;        /* > 0: Retry-After header */
    bool www_authenticate;    /* add WWW-Authenticate: Bearer */
} http_response;

/* The handler. Called once per complete request on the connection's
 * thread; may block. Must set resp->status. */
typedef void (*http_handler_fn)(void *arg, const http_request *req, http_response *resp);

typedef struct http_config {
    const char *host;        /* IPv4 literal to bind, e.g. "127.0.0.1" */
    int port;                /* 0: any free port (see http_port) */
    int max_connections;     /* 1..LIMIT_HTTP_CONNECTIONS_MAX */
    int idle_timeout_s;      /* close a connection idle this long */
    http_handler_fn handler;
    void *handler_arg;
} http_config;

typedef struct http_server http_server;

/* Bind and start serving. Returns NULL with a reason in err when the
 * address is invalid or cannot be bound. */
http_server *http_start(const http_config *cfg, char *err, size_t err_size);

/* The TCP port actually bound. */
int http_port(const http_server *s);

/* Stop accepting connections; requests arriving afterwards on open
 * keep-alive connections get 503 unavailable and Connection: close. */
void http_quiesce(http_server *s);

/* Wait until no request is being handled, at most timeout_ms. Returns 0
 * when idle, -1 on timeout. */
int http_wait_idle(http_server *s, int timeout_ms);

/* Close every connection, join the threads (handlers still running are
 * waited for) and free. NULL is ignored. */
void http_stop(http_server *s);

/* A request header (case-insensitive name) or NULL. */
const char *http_request_header(const http_request *req, const char *name);

/* A query-string argument (decoded) or NULL; "" for "?name". */
const char *http_request_query(const http_request *req, const char *name);

/* Call fn for every query argument; stops early when fn returns non-zero
 * and returns that value, else 0. */
int http_request_query_each(const http_request *req,
                            int (*fn)(void *arg, const char *name, const char *value),
                            void *arg);

#endif
