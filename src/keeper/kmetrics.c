/*
 * kmetrics.c — render and serve the keeper's metrics (kmetrics.h).
 */
#include "keeper/kmetrics.h"

#include <arpa/inet.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <microhttpd.h>

#define LABEL_MAX 64

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static kmetrics_snapshot snap;
static char node_buf[LABEL_MAX], cell_buf[LABEL_MAX], state_buf[LABEL_MAX];
static struct MHD_Daemon *daemon_ptr;

void kmetrics_publish(const kmetrics_snapshot *s)
{
    pthread_mutex_lock(&mu);
    snap = *s;
    snprintf(node_buf, sizeof node_buf, "%s", s->node ? s->node : "");
    snprintf(cell_buf, sizeof cell_buf, "%s", s->cell ? s->cell : "");
    snprintf(state_buf, sizeof state_buf, "%s", s->state ? s->state : "");
    snap.node = node_buf;
    snap.cell = cell_buf;
    snap.state = state_buf;
    pthread_mutex_unlock(&mu);
}

static const char *const states[] = {"init",      "bootstrap", "clone",  "standby", "detached",
                                     "promoting", "primary",   "fenced", "rewind"};

char *kmetrics_render(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return NULL;
    pthread_mutex_lock(&mu);
    kmetrics_snapshot s = snap;
    char labels[3 * LABEL_MAX + 32];
    snprintf(labels, sizeof labels, "cell=\"%s\",node=\"%s\"", cell_buf, node_buf);
    fprintf(f, "# HELP meridian_keeper_state Current state of the keeper's state machine (1 for the current one).\n"
               "# TYPE meridian_keeper_state gauge\n");
    for (size_t i = 0; i < sizeof states / sizeof states[0]; i++)
        fprintf(f, "meridian_keeper_state{%s,state=\"%s\"} %d\n", labels, states[i],
                strcmp(state_buf, states[i]) == 0);
    fprintf(f, "# HELP meridian_keeper_leader 1 when this node holds the cell's leader key.\n"
               "# TYPE meridian_keeper_leader gauge\nmeridian_keeper_leader{%s} %d\n", labels, s.leader);
    fprintf(f, "# HELP meridian_keeper_etcd_up 1 when the last etcd round trip succeeded.\n"
               "# TYPE meridian_keeper_etcd_up gauge\nmeridian_keeper_etcd_up{%s} %d\n", labels, s.etcd_ok);
    fprintf(f, "# HELP meridian_keeper_pg_up 1 when the local PostgreSQL answers.\n"
               "# TYPE meridian_keeper_pg_up gauge\nmeridian_keeper_pg_up{%s} %d\n", labels, s.pg_running);
    fprintf(f, "# HELP meridian_keeper_pg_in_recovery 1 when the local PostgreSQL is a standby.\n"
               "# TYPE meridian_keeper_pg_in_recovery gauge\nmeridian_keeper_pg_in_recovery{%s} %d\n",
            labels, s.pg_in_recovery);
    fprintf(f, "# HELP meridian_keeper_epoch The cell's epoch (fencing token) as last read.\n"
               "# TYPE meridian_keeper_epoch gauge\nmeridian_keeper_epoch{%s} %" PRId64 "\n", labels, s.epoch);
    fprintf(f, "# HELP meridian_keeper_lease_left_seconds Time until this leader fences itself without a renewal.\n"
               "# TYPE meridian_keeper_lease_left_seconds gauge\nmeridian_keeper_lease_left_seconds{%s} %.3f\n",
            labels, (double)s.lease_left_ms / 1000.0);
    fprintf(f, "# HELP meridian_keeper_flush_lsn_bytes Local flushed (primary) or received (standby) WAL position.\n"
               "# TYPE meridian_keeper_flush_lsn_bytes gauge\nmeridian_keeper_flush_lsn_bytes{%s} %" PRIu64 "\n",
            labels, s.flush_lsn);
    fprintf(f, "# HELP meridian_keeper_timeline Local PostgreSQL timeline.\n"
               "# TYPE meridian_keeper_timeline gauge\nmeridian_keeper_timeline{%s} %u\n", labels, s.timeline);
    fprintf(f, "# HELP meridian_keeper_sync_standbys Synchronous standby names in force (primary only).\n"
               "# TYPE meridian_keeper_sync_standbys gauge\nmeridian_keeper_sync_standbys{%s} %" PRIu64 "\n",
            labels, s.sync_standbys);
    /* Replication lag of a standby (the DR standby's is the RPO of a
     * regional failover): role="dr" or "candidate"; absent on a primary. */
    fprintf(f, "# HELP meridian_keeper_replication_lag_bytes WAL the leader published that this standby has not flushed yet.\n"
               "# TYPE meridian_keeper_replication_lag_bytes gauge\n");
    if (s.lag_known)
        fprintf(f, "meridian_keeper_replication_lag_bytes{%s,role=\"%s\"} %" PRIu64 "\n", labels,
                s.dr ? "dr" : "candidate", s.lag_bytes);
    fprintf(f, "# HELP meridian_keeper_replication_lag_seconds Time since this standby last had everything the leader published.\n"
               "# TYPE meridian_keeper_replication_lag_seconds gauge\n");
    if (s.lag_known)
        fprintf(f, "meridian_keeper_replication_lag_seconds{%s,role=\"%s\"} %.3f\n", labels,
                s.dr ? "dr" : "candidate", (double)s.lag_ms / 1000.0);
    fprintf(f, "# HELP meridian_keeper_transitions_total State machine transitions taken.\n"
               "# TYPE meridian_keeper_transitions_total counter\nmeridian_keeper_transitions_total{%s} %" PRIu64 "\n",
            labels, s.transitions);
    fprintf(f, "# HELP meridian_keeper_fences_total Times this node stopped its PostgreSQL to keep one writer.\n"
               "# TYPE meridian_keeper_fences_total counter\nmeridian_keeper_fences_total{%s} %" PRIu64 "\n",
            labels, s.fences);
    fprintf(f, "# HELP meridian_keeper_promotions_total Times this node was promoted.\n"
               "# TYPE meridian_keeper_promotions_total counter\nmeridian_keeper_promotions_total{%s} %" PRIu64 "\n",
            labels, s.promotions);
    pthread_mutex_unlock(&mu);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    if (*con_cls == NULL) { /* queue on the second call: keep-alive */
        *con_cls = (void *)1;
        return MHD_YES;
    }
    char *body = NULL;
    unsigned status = MHD_HTTP_OK;
    const char *type = "text/plain; version=0.0.4";
    if (strcmp(method, "GET") != 0) {
        status = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = strdup("only GET\n");
    } else if (strcmp(url, "/metrics") == 0) {
        body = kmetrics_render();
    } else if (strcmp(url, "/healthz") == 0) {
        body = strdup("{\"status\":\"ok\"}\n");
        type = "application/json";
    } else {
        status = MHD_HTTP_NOT_FOUND;
        body = strdup("not found: /metrics or /healthz\n");
    }
    if (body == NULL)
        return MHD_NO;
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

int kmetrics_start(const char *listen, char *err, size_t err_size)
{
    char host[64];
    int port = 0;
    const char *colon = strrchr(listen, ':');
    if (colon == NULL || (size_t)(colon - listen) >= sizeof host ||
        sscanf(colon + 1, "%d", &port) != 1 || port <= 0 || port > 65535) {
        snprintf(err, err_size, "--metrics-listen wants HOST:PORT, got '%s'", listen);
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, err_size, "--metrics-listen: '%s' is not an IPv4 address", host);
        return -1;
    }
    daemon_ptr = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL,
                                  handle, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
                                  MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT,
                                  10u, MHD_OPTION_END);
    if (daemon_ptr == NULL) {
        snprintf(err, err_size, "cannot listen on %s for metrics (port in use?)", listen);
        return -1;
    }
    return 0;
}

void kmetrics_stop(void)
{
    if (daemon_ptr != NULL)
        MHD_stop_daemon(daemon_ptr);
    daemon_ptr = NULL;
}
