/*
 * workload.h — the drill's bank workload (in the style of Jepsen's bank
 * test): a few accounts, writers moving money between them through
 * meridiand, readers checking that the books balance at every read.
 *
 * Accounts: index 0 is the bank (no limit); every odd index has
 * debits_must_not_exceed_credits and is funded from the bank before the
 * writers start, so some transfers are refused (exceeds_credits) and a
 * limit that was ever crossed would show. All accounts are in ledger 840
 * and are new for each workload (fresh ids), so the checks of one run
 * never mix with another's.
 *
 * Writers: each sends one random transfer per request, round-robin over
 * the meridiand URLs, with a fresh random id. A 503 or a transport error
 * (timeout, connection refused) is retried with the SAME id, with a
 * doubling backoff, until a definite answer or DRILL_TRANSFER_DEADLINE_MS
 * (then "unresolved": the client cannot know). Every acknowledged
 * transfer (result ok or exists) is logged with the time its first
 * attempt was sent, the time of the attempt that got the answer, and the
 * time of the answer; refused ones (a definite result that applies
 * nothing) are logged too, so the checker can prove them absent.
 *
 * Readers: GET /v1/balances in a loop; a read whose per-ledger totals do
 * not balance, or that shows a limited account of this workload over its
 * limit, is a violation (counted, the first one described).
 *
 * Threads: workload_start creates writer and reader threads; everything
 * they share is atomic or written only after workload_stop joined them.
 * The other functions are called from one thread (the drill's).
 */
#ifndef MERIDIAN_DRILL_WORKLOAD_H
#define MERIDIAN_DRILL_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/id128.h"
#include "drill/drill.h"

typedef struct workload_config {
    const char *urls[DRILL_URLS_MAX]; /* meridiand base URLs ("http://127.0.0.1:PORT") */
    size_t url_count;     /* 1..DRILL_URLS_MAX */
    const char *api_key;  /* a customer key (Bearer) */
    int writers;          /* 1..DRILL_CLIENTS_MAX */
    int readers;          /* 0..DRILL_READERS_MAX */
    int accounts;         /* DRILL_ACCOUNTS_MIN..DRILL_ACCOUNTS_MAX */
    int rate_per_s;       /* 0: closed loop; else new transfers per second over all
                           * writers (each paces at rate/writers; retries are not
                           * paced), 1..DRILL_RATE_MAX */
} workload_config;

/* One transfer the client knows the fate of. Times are wall ms. */
typedef struct workload_event {
    id128 id;
    int64_t amount;
    int64_t first_sent_ms; /* first attempt */
    int64_t sent_ms;       /* the attempt that got the definite answer */
    int64_t answer_ms;     /* when that answer arrived */
    uint16_t debit;        /* account indexes */
    uint16_t credit;
    uint16_t attempts;
} workload_event;

/* Counters of one workload (read after workload_stop). */
typedef struct workload_stats {
    int64_t acked;            /* ok or exists */
    int64_t refused;          /* a definite result that applies nothing */
    int64_t unresolved;       /* given up: outcome unknown to the client */
    int64_t client_errors;    /* 4xx: a definite "not applied" */
    int64_t anomalies;        /* exists_with_different_fields and the like */
    int64_t retries;          /* attempts beyond the first */
    int64_t http_503;         /* answers 503 (unavailable/overloaded) */
    int64_t http_5xx_other;   /* other 5xx (retried) */
    int64_t transport_errors; /* no HTTP answer (retried) */
    int64_t ack_log_full;     /* transfers not issued: the log was full */
    int64_t reads_ok;
    int64_t reads_failed;     /* 503, transport error: not a violation */
    int64_t read_violations;
    char first_violation[256]; /* "" when none */
} workload_stats;

typedef struct workload workload;

/* Create a workload (copies cfg's strings; creates no thread). Returns
 * NULL with the reason in err on bad settings or out of memory. */
workload *workload_create(const workload_config *cfg, char *err, size_t err_size);

/* Create the accounts and fund the limited ones from the bank, through
 * meridiand with the same retry rules as the writers (bounded by
 * DRILL_TRANSFER_DEADLINE_MS). The funding transfers are logged as
 * acknowledged. Returns 0, or -1 with the reason in err. */
int workload_setup(workload *w, char *err, size_t err_size);

/* Start the writer and reader threads. Returns 0, or -1 (err) when a
 * thread cannot be created (the ones started are stopped again). */
int workload_start(workload *w, char *err, size_t err_size);

/* From now on, an acknowledgement answered at or after since_ms counts
 * as "recovered" (workload_first_recovered_ms). */
void workload_watch_recovery(workload *w, int64_t since_ms);
/* Answer time of the first recovered acknowledgement, 0 if none yet. */
int64_t workload_first_recovered_ms(workload *w);
/* Acknowledgements so far (any thread may be writing). */
int64_t workload_acked_now(workload *w);

/* Stop issuing transfers, let transfers in flight reach a definite
 * answer (each bounded by its deadline), stop the readers and join every
 * thread. Idempotent. With abandon, transfers in flight are given up at
 * once (unresolved) — for an interrupted drill. */
void workload_stop(workload *w, bool abandon);

/* After workload_stop: the counters, the acknowledged / refused /
 * unresolved transfers (arrays owned by w, in no particular order), and
 * the accounts (ids; limited[i] says whether index i has a limit). */
void workload_stats_get(const workload *w, workload_stats *out);
const workload_event *workload_acked(const workload *w, size_t *count);
const workload_event *workload_refused(const workload *w, size_t *count);
const workload_event *workload_unresolved(const workload *w, size_t *count);
const id128 *workload_accounts(const workload *w, const bool **limited, size_t *count);

/* Stop (abandoning) if needed and free; NULL is fine. */
void workload_free(workload *w);

#endif
