/*
 * run.h — what drill.c (single-cell drills) shares with lab.c (the lab
 * drills): the run's clock and signal handling, the waits and the
 * measurements that both kinds of drill make the same way. Internal to
 * src/drill; not for other parts.
 */
#ifndef MERIDIAN_DRILL_RUN_H
#define MERIDIAN_DRILL_RUN_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "drill/cell.h"
#include "drill/check.h"
#include "drill/drill.h"
#include "drill/report.h"
#include "drill/workload.h"
#include "etcd/etcd.h"

/* What one drill works with. */
typedef struct drill_env {
    const drill_options *o;
    drill_cell *cell;
    etcd_client *etcd;
    char api_key[256];
    int64_t rto_limit_ms; /* give up waiting for writes after this */
} drill_env;

/* Saved signal dispositions of a drill session. */
typedef struct drill_session {
    struct sigaction old_int, old_term;
} drill_session;

/* Start a drill session: the progress clock starts, SIGINT/SIGTERM set
 * the interrupted flag instead of killing the process, libcurl is
 * initialised. drill_session_end restores the signal handlers. */
void drill_session_begin(drill_session *s);
void drill_session_end(const drill_session *s);

/* snprintf into a fixed buffer where truncating a long message is fine
 * (paths and nested errors). */
void drill_say(char *dst, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sleep ms in slices; returns early (false) on interruption. */
bool drill_nap(int64_t ms);

/* The leader key, retried up to `tries` times (a failover may be under
 * way). Returns 0 with a present leader, or -1. */
int drill_current_leader(etcd_client *etcd, const char *cell, drill_leader *l, int tries);

/* libpq conninfo of a leader. */
void drill_leader_dsn(const drill_leader *l, char *out, size_t size);

/* The first acknowledgement on the new primary — the earliest answer at
 * or after serving_since_ms (or, when 0, to an attempt sent after
 * r->injected_ms) — into r->rto_ms / r->rto_ack, and how many answers came
 * after the fault. Reads the workload's merged logs (after workload_stop). */
void drill_measure_rto(const workload *w, drill_run_result *r, int64_t serving_since_ms);

/* Wait, after the fault at r->t0_ms, until writes have been acknowledged
 * on a new primary (new epoch past r->epoch_before, or for db-crash the
 * restarted PostgreSQL) for DRILL_SETTLE_MS, or env->rto_limit_ms have
 * passed. Sets r->waited_ms. */
void drill_wait_recovery(drill_env *env, workload *w, drill_run_result *r,
                         const char *dsn_before);

/* History events since r->epoch_before give r->detection_ms and
 * r->promotion_ms (relative to r->t0_ms); returns the first new leader's
 * acquisition time (wall ms, 0 if none). */
int64_t drill_measure_history(drill_env *env, drill_run_result *r);

/* Print the last lines of a drill-made cell's or lab's log to stderr. */
void drill_show_log_tail(const char *log_path, const char *dir);

/* drill_run for the scenarios of the two-region lab (lab.c). */
int drill_run_lab(const drill_options *o, json_t **report);

#endif
