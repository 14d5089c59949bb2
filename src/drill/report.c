/*
 * report.c — turning drill runs into the JSON report and the text
 * summary (see report.h; fields documented in docs/DRILLS.md).
 *
 * The text summary is printed from the JSON object, not from the runs,
 * so what people read and what programs parse cannot disagree.
 */
#include "drill/report.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

static json_t *seconds_or_null(int64_t ms)
{
    return ms >= 0 ? json_real((double)ms / 1000.0) : json_null();
}

void drill_report_judge(drill_run_result *r)
{
    int64_t v = 0;
    if (r->workload_ran)
        v += r->ws.read_violations + r->ws.anomalies;
    if (r->db_checked)
        v += drill_db_check_violations(&r->db);
    r->invariant_violations = v;
    r->pass = r->error[0] == '\0' && r->fault_injected && r->recovered &&
              r->rto_ms < DRILL_RTO_LIMIT_MS && r->end_healthy && r->db_checked &&
              r->workload_ran && v == 0 && r->ws.acked > 0;
}

static json_t *run_json(const drill_run_result *r)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "run", json_integer(r->index));
    json_object_set_new(o, "fault", json_string(r->fault));
    json_object_set_new(o, "leader_before", json_string(r->leader_before));
    json_object_set_new(o, "epoch_before", json_integer(r->epoch_before));
    json_object_set_new(o, "leader_after",
                        r->leader_after[0] ? json_string(r->leader_after) : json_null());
    json_object_set_new(o, "epoch_after", json_integer(r->epoch_after));
    json_object_set_new(o, "promotions", json_integer((json_int_t)r->promotions));
    json_object_set_new(o, "fault_injected", json_boolean(r->fault_injected));
    json_object_set_new(o, "t0_ms", json_integer(r->t0_ms));
    json_object_set_new(o, "recovered", json_boolean(r->recovered));
    json_object_set_new(o, "rto_s", seconds_or_null(r->recovered ? r->rto_ms : -1));
    json_object_set_new(o, "detection_s", seconds_or_null(r->detection_ms));
    json_object_set_new(o, "promotion_s", seconds_or_null(r->promotion_ms));
    json_object_set_new(o, "waited_s", seconds_or_null(r->waited_ms));
    json_object_set_new(o, "serving_since_s",
                        seconds_or_null(r->serving_since_ms > 0 ? r->serving_since_ms - r->t0_ms
                                                                : -1));
    if (r->has_rto_ack) {
        const workload_event *e = &r->rto_ack;
        json_object_set_new(o, "rto_ack",
                            json_pack("{s:o, s:o, s:o, s:i}", "first_sent_s",
                                      seconds_or_null(e->first_sent_ms - r->t0_ms), "sent_s",
                                      seconds_or_null(e->sent_ms - r->t0_ms), "answer_s",
                                      seconds_or_null(e->answer_ms - r->t0_ms), "attempts",
                                      (int)e->attempts));
    }
    const workload_stats *s = &r->ws;
    json_object_set_new(o, "acked", json_integer(s->acked));
    json_object_set_new(o, "acked_after_fault", json_integer(r->acked_after_fault));
    json_object_set_new(o, "refused", json_integer(s->refused));
    json_object_set_new(o, "client_errors", json_integer(s->client_errors));
    json_object_set_new(o, "unresolved", json_integer(s->unresolved));
    json_object_set_new(o, "retries", json_integer(s->retries));
    json_object_set_new(o, "http_503", json_integer(s->http_503));
    json_object_set_new(o, "http_5xx_other", json_integer(s->http_5xx_other));
    json_object_set_new(o, "transport_errors", json_integer(s->transport_errors));
    json_object_set_new(o, "anomalies", json_integer(s->anomalies));
    json_object_set_new(o, "ack_log_full", json_integer(s->ack_log_full));
    json_object_set_new(o, "reads_ok", json_integer(s->reads_ok));
    json_object_set_new(o, "reads_failed", json_integer(s->reads_failed));
    json_object_set_new(o, "read_violations", json_integer(s->read_violations));
    if (s->first_violation[0])
        json_object_set_new(o, "first_read_violation", json_string(s->first_violation));
    json_object_set_new(o, "db_checked", json_boolean(r->db_checked));
    if (r->db_checked) {
        const drill_db_check *d = &r->db;
        json_t *db = json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}",
            "acked", (json_int_t)d->acked, "acked_found", (json_int_t)d->acked_found,
            "acked_missing", (json_int_t)d->acked_missing, "acked_doubled",
            (json_int_t)d->acked_doubled, "acked_mismatched", (json_int_t)d->acked_mismatched,
            "refused", (json_int_t)d->refused, "refused_applied", (json_int_t)d->refused_applied,
            "unresolved", (json_int_t)d->unresolved, "unresolved_applied",
            (json_int_t)d->unresolved_applied, "rows", (json_int_t)d->rows, "phantom",
            (json_int_t)d->phantom, "accounts_missing", (json_int_t)d->accounts_missing,
            "balance_mismatches", (json_int_t)d->balance_mismatches, "limit_violations",
            (json_int_t)d->limit_violations, "ledger_balanced", d->ledger_balanced);
        if (db != NULL && d->first_problem[0])
            json_object_set_new(db, "first_problem", json_string(d->first_problem));
        json_object_set_new(o, "db", db ? db : json_null());
    }
    json_object_set_new(o, "end_state_healthy", json_boolean(r->end_healthy));
    json_object_set_new(o, "invariant_violations", json_integer(r->invariant_violations));
    json_object_set_new(o, "pass", json_boolean(r->pass));
    if (r->error[0])
        json_object_set_new(o, "error", json_string(r->error));
    return o;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Median of the non-negative values (-1 when none); sorts v. */
static int64_t median_ms(int64_t *v, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] >= 0)
            v[k++] = v[i];
    if (k == 0)
        return -1;
    qsort(v, k, sizeof *v, cmp_i64);
    return k % 2 ? v[k / 2] : (v[k / 2 - 1] + v[k / 2]) / 2;
}

json_t *drill_report_json(drill_scenario scenario, const drill_run_result *runs, size_t n,
                          int runs_wanted, const char *error, bool unavailable)
{
    json_t *o = json_object();
    json_t *rto = json_array();
    json_t *details = json_array();
    int64_t *rtos = calloc(n + 1, sizeof *rtos);
    int64_t *dets = calloc(n + 1, sizeof *dets);
    int64_t *proms = calloc(n + 1, sizeof *proms);
    if (o == NULL || rto == NULL || details == NULL || rtos == NULL || dets == NULL ||
        proms == NULL) {
        json_decref(o);
        json_decref(rto);
        json_decref(details);
        free(rtos);
        free(dets);
        free(proms);
        return NULL;
    }
    int64_t rto_max = -1, acked = 0, lost = 0, doubled = 0, violations = 0, refused = 0;
    int64_t unresolved = 0, reads = 0, read_violations = 0, unrecovered = 0;
    bool pass = n > 0 && (int)n == runs_wanted && error == NULL && !unavailable;
    bool healthy = n > 0;
    for (size_t i = 0; i < n; i++) {
        const drill_run_result *r = &runs[i];
        rtos[i] = r->recovered ? r->rto_ms : -1;
        dets[i] = r->detection_ms;
        proms[i] = r->promotion_ms;
        json_array_append_new(rto, seconds_or_null(rtos[i]));
        if (r->recovered && r->rto_ms > rto_max)
            rto_max = r->rto_ms;
        if (!r->recovered) {
            unrecovered++;
            if (r->waited_ms > rto_max)
                rto_max = r->waited_ms; /* a lower bound: the run never recovered */
        }
        acked += r->ws.acked;
        refused += r->ws.refused + r->ws.client_errors;
        unresolved += r->ws.unresolved;
        reads += r->ws.reads_ok;
        read_violations += r->ws.read_violations;
        lost += r->db.acked_missing;
        doubled += r->db.acked_doubled;
        violations += r->invariant_violations;
        healthy = healthy && r->end_healthy;
        pass = pass && r->pass;
        json_array_append_new(details, run_json(r));
    }
    json_object_set_new(o, "scenario", json_string(drill_scenario_name(scenario)));
    json_object_set_new(o, "runs", json_integer((json_int_t)n));
    json_object_set_new(o, "runs_wanted", json_integer(runs_wanted));
    json_object_set_new(o, "rto_s", rto);
    json_object_set_new(o, "rto_s_median", seconds_or_null(median_ms(rtos, n)));
    json_object_set_new(o, "rto_s_max", seconds_or_null(rto_max));
    json_object_set_new(o, "rto_limit_s", json_real(DRILL_RTO_LIMIT_MS / 1000.0));
    json_object_set_new(o, "runs_unrecovered", json_integer(unrecovered));
    json_object_set_new(o, "detection_s_median", seconds_or_null(median_ms(dets, n)));
    json_object_set_new(o, "promotion_s_median", seconds_or_null(median_ms(proms, n)));
    json_object_set_new(o, "acked_total", json_integer(acked));
    json_object_set_new(o, "acked_lost", json_integer(lost));
    json_object_set_new(o, "doubled", json_integer(doubled));
    json_object_set_new(o, "refused_total", json_integer(refused));
    json_object_set_new(o, "unresolved_total", json_integer(unresolved));
    json_object_set_new(o, "reads_total", json_integer(reads));
    json_object_set_new(o, "read_violations", json_integer(read_violations));
    json_object_set_new(o, "invariant_violations", json_integer(violations));
    json_object_set_new(o, "end_state_healthy", json_boolean(healthy));
    json_object_set_new(o, "available", json_boolean(!unavailable));
    if (error != NULL)
        json_object_set_new(o, "error", json_string(error));
    json_object_set_new(o, "pass", json_boolean(pass));
    json_object_set_new(o, "details", details);
    free(rtos);
    free(dets);
    free(proms);
    return o;
}

/* "2.345 s", or "-" for null. */
static void secs(json_t *v, char *out, size_t size)
{
    if (json_is_number(v))
        snprintf(out, size, "%.3f s", json_number_value(v));
    else
        snprintf(out, size, "-");
}

static json_int_t ival(const json_t *o, const char *k)
{
    return json_integer_value(json_object_get(o, k));
}

void drill_report_print(FILE *out, const json_t *report)
{
    json_t *rep = (json_t *)report;
    const char *scenario = json_string_value(json_object_get(rep, "scenario"));
    bool pass = json_is_true(json_object_get(rep, "pass"));
    fprintf(out, "drill %s: %" JSON_INTEGER_FORMAT " of %" JSON_INTEGER_FORMAT " runs — %s\n",
            scenario ? scenario : "?", ival(rep, "runs"), ival(rep, "runs_wanted"),
            pass                                                 ? "PASS"
            : json_is_false(json_object_get(rep, "available")) ? "NOT AVAILABLE"
                                                                 : "FAIL");
    const char *error = json_string_value(json_object_get(rep, "error"));
    if (error != NULL)
        fprintf(out, "  %s\n", error);
    json_t *details = json_object_get(rep, "details");
    if (json_array_size(details) > 0) {
        fprintf(out, "  %-4s %-10s %-11s %-11s %-11s %8s %5s %7s %10s %-9s\n", "run",
                "leader", "detection", "promotion", "RTO", "acked", "lost", "doubled",
                "violations", "end state");
        size_t i;
        json_t *r;
        json_array_foreach(details, i, r) {
            char lead[80], det[24], prom[24], rto[24];
            const char *before = json_string_value(json_object_get(r, "leader_before"));
            const char *after = json_string_value(json_object_get(r, "leader_after"));
            snprintf(lead, sizeof lead, "%s>%s", before ? before : "?", after ? after : "?");
            secs(json_object_get(r, "detection_s"), det, sizeof det);
            secs(json_object_get(r, "promotion_s"), prom, sizeof prom);
            secs(json_object_get(r, "rto_s"), rto, sizeof rto);
            json_t *db = json_object_get(r, "db");
            fprintf(out,
                    "  %-4" JSON_INTEGER_FORMAT " %-10s %-11s %-11s %-11s %8" JSON_INTEGER_FORMAT
                    " %5s %7s %10" JSON_INTEGER_FORMAT " %-9s\n",
                    ival(r, "run"), lead, det, prom, rto, ival(r, "acked"),
                    db ? (json_integer_value(json_object_get(db, "acked_missing")) ? "LOST" : "0")
                       : "?",
                    db ? (json_integer_value(json_object_get(db, "acked_doubled")) ? "YES" : "0")
                       : "?",
                    ival(r, "invariant_violations"),
                    json_is_true(json_object_get(r, "end_state_healthy")) ? "healthy"
                                                                          : "UNHEALTHY");
            const char *rerr = json_string_value(json_object_get(r, "error"));
            if (rerr)
                fprintf(out, "       error: %s\n", rerr);
            const char *rv = json_string_value(json_object_get(r, "first_read_violation"));
            if (rv)
                fprintf(out, "       read violation: %s\n", rv);
            const char *dbp = db ? json_string_value(json_object_get(db, "first_problem")) : NULL;
            if (dbp)
                fprintf(out, "       database: %s\n", dbp);
        }
    }
    char med[24], max[24], det[24], prom[24];
    secs(json_object_get(rep, "rto_s_median"), med, sizeof med);
    secs(json_object_get(rep, "rto_s_max"), max, sizeof max);
    secs(json_object_get(rep, "detection_s_median"), det, sizeof det);
    secs(json_object_get(rep, "promotion_s_median"), prom, sizeof prom);
    fprintf(out, "  RTO median %s, max %s (limit %.0f s); detection median %s; promotion median %s\n",
            med, max, json_number_value(json_object_get(rep, "rto_limit_s")), det, prom);
    fprintf(out,
            "  acknowledged %" JSON_INTEGER_FORMAT " transfers: lost %" JSON_INTEGER_FORMAT
            ", doubled %" JSON_INTEGER_FORMAT "; refused %" JSON_INTEGER_FORMAT
            ", unresolved %" JSON_INTEGER_FORMAT "; %" JSON_INTEGER_FORMAT
            " balance reads; invariant violations %" JSON_INTEGER_FORMAT "\n",
            ival(rep, "acked_total"), ival(rep, "acked_lost"), ival(rep, "doubled"),
            ival(rep, "refused_total"), ival(rep, "unresolved_total"), ival(rep, "reads_total"),
            ival(rep, "invariant_violations"));
    /* Lab drills (region-loss) add the regional numbers. */
    if (json_object_get(rep, "region_rto_s") != NULL) {
        char rrto[24], loss[24], bound[24];
        secs(json_object_get(rep, "region_rto_s"), rrto, sizeof rrto);
        secs(json_object_get(rep, "region_loss_s"), loss, sizeof loss);
        secs(json_object_get(rep, "region_loss_bound_s"), bound, sizeof bound);
        const char *kind = json_string_value(json_object_get(rep, "region_failover_kind"));
        json_t *lost = json_object_get(rep, "region_acked_lost");
        const char *zone = json_string_value(json_object_get(rep, "zone_lost"));
        const char *region = json_string_value(json_object_get(rep, "region_lost"));
        fprintf(out,
                "  %s %s lost: RTO %s; %" JSON_INTEGER_FORMAT
                "%s acknowledged transfers lost = %s of traffic (bound %s); history kind %s\n",
                zone ? "zone" : "region", zone ? zone : region ? region : "?", rrto,
                json_integer_value(lost), json_is_integer(lost) ? "" : " (unchecked)", loss,
                bound, kind ? kind : "-");
    }
}
