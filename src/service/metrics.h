/*
 * metrics.h — Prometheus counters and histograms of one meridiand.
 *
 * One process-wide set of atomics (no locks on the hot path), rendered
 * by hand in the Prometheus text exposition format for GET /metrics
 * (validated by `promtool check metrics` in the tests).
 */
#ifndef MERIDIAN_METRICS_H
#define MERIDIAN_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ledger/ledger.h"

/* route is one of a fixed set of route names ("transfers_create", ...);
 * unknown names are counted as "other". */
void metrics_http_observe(const char *route, int status, double seconds);
void metrics_commit_observe(size_t events, double seconds);
void metrics_commit_retry(void);
void metrics_transfer_results(const ledger_transfer_result *results, size_t count);
void metrics_account_results(const ledger_account_result *results, size_t count);
void metrics_queue_depth_set(size_t depth);
void metrics_db_up_set(int up);
/* The route to the cell's leader changed (see route.h): count it and set
 * the meridian_route_epoch gauge to epoch (0 when there is no leader). */
void metrics_route_change(int64_t epoch);
/* A commit attempt was refused by the epoch check (STORE_FENCED). */
void metrics_fenced_commit(void);

/* A wait for per-transfer global durability: confirmed or timed out,
 * and how long it took. */
void metrics_global_wait(int confirmed, double seconds);

/* Render everything. Returns a malloc'd NUL-terminated string the caller
 * frees, or NULL on allocation failure. */
char *metrics_render(void);

#endif
