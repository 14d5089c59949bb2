/*
 * report.h — the drill's results: one record per run, the summary the
 * issue asks for (RTO, detection, promotion, RPO, invariants) as a JSON
 * object, and the same as text for people (docs/DRILLS.md explains each
 * field).
 *
 * Times are seconds (JSON numbers with millisecond resolution) measured
 * from t0, the wall-clock moment just before the fault was injected; a
 * time that could not be measured is null. The summary's `pass` is true
 * only when every run injected its fault, recovered (first acknowledged
 * transfer on the new primary) within DRILL_RTO_LIMIT_MS, ended with a
 * healthy cell, was checked against the database, and found no
 * invariant violation.
 */
#ifndef MERIDIAN_DRILL_REPORT_H
#define MERIDIAN_DRILL_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "drill/check.h"
#include "drill/drill.h"
#include "drill/workload.h"

/* Flags for json_dumps of a report: compact, milliseconds shown. */
#define DRILL_REPORT_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(7))

typedef struct drill_run_result {
    int index;                 /* 1-based */
    char fault[24];            /* cell.sh verb used */
    char leader_before[64];
    int64_t epoch_before;
    char leader_after[64];     /* "" when unknown */
    int64_t epoch_after;
    size_t promotions;         /* history events after epoch_before */
    bool fault_injected;
    int64_t t0_ms;             /* wall ms just before the fault */
    int64_t injected_ms;       /* wall ms when cell.sh returned */
    bool recovered;            /* an acknowledged transfer on the new primary */
    int64_t rto_ms;            /* -1 when not recovered */
    int64_t detection_ms;      /* leader_lost_at - t0; -1 unknown */
    int64_t promotion_ms;      /* promoted_at - t0; -1 unknown */
    int64_t waited_ms;         /* how long the drill waited after t0 */
    int64_t acked_after_fault; /* acknowledged with the answering attempt sent after the fault */
    bool has_rto_ack;
    workload_event rto_ack;    /* the acknowledgement that ended the outage */
    int64_t serving_since_ms;  /* new leader's key taken / PostgreSQL restarted; 0 unknown */
    workload_stats ws;
    bool workload_ran;
    bool db_checked;
    drill_db_check db;
    bool end_healthy;
    int64_t invariant_violations;
    bool pass;
    char error[512];           /* why the run failed to run, "" otherwise */
} drill_run_result;

/* Violations of one run (reader violations, anomalies, database check)
 * and whether it passed; fills r->invariant_violations and r->pass. */
void drill_report_judge(drill_run_result *r);

/* The report: summary fields plus "details" (one object per run).
 * error (may be NULL) says why the drill stopped early; unavailable
 * marks a scenario that cannot run here. Returns a new object or NULL
 * (out of memory). */
json_t *drill_report_json(drill_scenario scenario, const drill_run_result *runs, size_t n,
                          int runs_wanted, const char *error, bool unavailable);

/* Human summary of a report on out. */
void drill_report_print(FILE *out, const json_t *report);

#endif
