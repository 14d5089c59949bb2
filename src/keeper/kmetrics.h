/*
 * kmetrics.h — the keeper's Prometheus metrics on --metrics-listen.
 *
 * The loop thread publishes a snapshot after every decision; a small
 * libmicrohttpd server renders it in the Prometheus text format at
 * GET /metrics (and answers GET /healthz). A mutex guards the snapshot:
 * scrapes are rare and the loop writes twice a second.
 */
#ifndef MERIDIAN_KEEPER_KMETRICS_H
#define MERIDIAN_KEEPER_KMETRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct kmetrics_snapshot {
    const char *node;
    const char *cell;
    const char *state;      /* keeper_state_name */
    bool leader;            /* holds the cell's leader key */
    bool etcd_ok;
    bool pg_running;
    bool pg_in_recovery;
    int64_t epoch;
    int64_t lease_left_ms;  /* until the fence deadline; 0 when not leader */
    uint64_t flush_lsn;
    uint32_t timeline;
    uint64_t transitions;   /* FSM transitions taken */
    uint64_t fences;        /* times this node fenced itself */
    uint64_t promotions;
    uint64_t sync_standbys; /* synchronous names in force (primary) */
    bool dr;                /* this node is the cell's cross-region DR standby */
    bool lag_known;         /* a standby that knows the leader's published LSN */
    uint64_t lag_bytes;     /* the leader's published flush LSN minus ours */
    int64_t lag_ms;         /* since we last had everything the leader published */
} kmetrics_snapshot;

/* Start serving on host:port (127.0.0.1 only). Returns 0 or -1 with a
 * reason in err. */
int kmetrics_start(const char *listen, char *err, size_t err_size);
void kmetrics_stop(void);

/* Replace the snapshot (strings are copied). */
void kmetrics_publish(const kmetrics_snapshot *s);

/* Render the current snapshot; malloc'd, caller frees (NULL on OOM). */
char *kmetrics_render(void);

#endif
