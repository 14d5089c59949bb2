/*
 * testlib.h — the integration tests' toolbox: environment, processes,
 * HTTP, PostgreSQL and JSON helpers.
 *
 * Every tests/integration/itest_*.c is linked with testlib.c. A test
 * process gets its own empty database from run-itest.sh (env
 * MERIDIAN_TEST_DSN), prepares it the way an operator would, through
 * the real binaries (`meridianctl db migrate`, `config init`, `apikey
 * create`), starts real meridiand processes on free 127.0.0.1 ports and
 * talks HTTP/JSON to them with libcurl, then checks outcomes both
 * through the API and directly in PostgreSQL with libpq.
 *
 * Design decisions:
 * - Helpers return 0 / a negative error and print what went wrong on
 *   stderr; the tests turn that into cmocka failures. The TL_EXPECT_*
 *   macros are the exception: they assert (cmocka) and report the
 *   caller's file and line, so they must only be used on the thread
 *   that runs the cmocka test (cmocka is not thread-safe).
 * - Everything is bounded: command output, response bodies, waits and
 *   retries have maxima below; a hung child is killed.
 * - One libcurl handle per thread (thread-local), reused so requests
 *   keep their connection alive; a thread that used tl_http must call
 *   tl_http_thread_end() before it exits (LeakSanitizer runs the tests).
 * - Child processes get PR_SET_PDEATHSIG so a crashed test never leaves
 *   a meridiand behind; the tests still stop them by PID.
 */
#ifndef MERIDIAN_TESTLIB_H
#define MERIDIAN_TESTLIB_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

/* Bounds. */
#define TL_RUN_STDOUT_BYTES_MAX (1u << 20)   /* captured stdout of tl_run */
#define TL_RUN_TIMEOUT_MS 120000             /* a command running longer is killed */
#define TL_HTTP_BODY_BYTES_MAX (64u << 20)   /* response bodies */
#define TL_HTTP_TIMEOUT_MS_DEFAULT 30000     /* one request, connect included */
#define TL_READY_TIMEOUT_MS 20000            /* meridiand start until /readyz 200 */
#define TL_STOP_TIMEOUT_MS 15000             /* SIGTERM until exit, then SIGKILL */
#define TL_UUID_TEXT_SIZE 37                 /* dashed UUID + NUL */
#define TL_KEY_TEXT_SIZE 96                  /* "mk_" + cell (<= 32) + "_" + 43 + NUL, with slack */
#define TL_URL_SIZE 64                       /* "http://127.0.0.1:PORT" */

/* ---- Process environment. */

/* Initialise libcurl (once per process, before any thread starts) and
 * make stdout unbuffered so test output interleaves with children's. */
void tl_init(void);
/* Release libcurl's global state and the calling thread's handle. */
void tl_shutdown(void);

/* The value of a required environment variable. Prints a message and
 * exits with status 1 when it is unset or empty (a harness error). */
const char *tl_env(const char *name);

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0
 * and released). Returns the port, or -1. */
int tl_free_port(void);

/* Monotonic clock in milliseconds / wall clock in microseconds. */
int64_t tl_now_ms(void);
int64_t tl_wall_us(void);
void tl_sleep_ms(int64_t ms);

/* ---- Commands. */

/* Run argv (argv[0] is a path; NULL-terminated) with stdin from
 * /dev/null and stderr inherited. When out is not NULL, stdout is
 * captured (at most TL_RUN_STDOUT_BYTES_MAX bytes, the rest discarded)
 * into a malloc'd NUL-terminated string the caller frees; otherwise it
 * is inherited. A command running longer than TL_RUN_TIMEOUT_MS is
 * killed. Returns the exit code (0..255), 128+signal when it was killed
 * by a signal, or -1 when it could not be run (*out is then NULL). */
int tl_run(const char *const argv[], char **out);

/* ---- meridiand. */

typedef struct tl_daemon {
    pid_t pid;                /* 0 when not running */
    int port;
    char base_url[TL_URL_SIZE]; /* "http://127.0.0.1:PORT" */
    char log_path[PATH_MAX];  /* stdout + stderr of the process */
} tl_daemon;

/* Start MERIDIAN_BIN_DIR/meridiand --config config_path --listen
 * 127.0.0.1:port, logging to log_dir/meridiand-PORT-N.log, and wait up to
 * TL_READY_TIMEOUT_MS for GET /readyz to answer 200. Returns 0 with d
 * filled, or -1 (the process, if any, is killed and its log tail
 * printed; d->pid is 0). */
int tl_meridiand_start(const char *config_path, int port, const char *log_dir,
                       tl_daemon *d);

/* SIGTERM d, wait up to TL_STOP_TIMEOUT_MS, then SIGKILL. Returns the
 * exit code (0..255), 128+signal when killed by a signal, -2 when it had
 * to be SIGKILLed after the timeout, -1 when it was not running. The log
 * tail is printed when the result is not 0. d->pid becomes 0. */
int tl_meridiand_stop(tl_daemon *d);

/* SIGKILL d and reap it (fault injection). Returns 0, or -1 when it was
 * not running. d->pid becomes 0. */
int tl_meridiand_kill(tl_daemon *d);

/* Print the last max_bytes of d's log on stderr. */
void tl_meridiand_dump_log(const tl_daemon *d, size_t max_bytes);

/* ---- HTTP. */

typedef struct tl_resp {
    long status;          /* HTTP status, 0 on a transport error */
    int curl_code;        /* CURLcode; 0 = the exchange completed */
    char *body;           /* malloc'd, NUL-terminated; "" when none */
    size_t body_len;
    json_t *json;         /* body parsed as JSON, or NULL */
    char content_type[128]; /* "" when absent */
} tl_resp;

typedef struct tl_req {
    const char *method;        /* "GET", "POST", ... */
    const char *url;           /* full URL */
    const char *api_key;       /* sent as "Authorization: Bearer KEY"; may be NULL */
    const char *authorization; /* raw Authorization value; overrides api_key */
    const char *body;          /* may be NULL */
    size_t body_len;           /* bytes of body */
    const char *content_type;  /* NULL: application/json when a body is sent;
                                  "": no Content-Type header */
    bool chunked;              /* send the body chunked (no Content-Length) */
    long timeout_ms;           /* 0: TL_HTTP_TIMEOUT_MS_DEFAULT */
} tl_req;

/* Perform req on the calling thread's handle. Returns 0 when an HTTP
 * response was received (resp->status set), or -1 on a transport error
 * (resp->curl_code set, status 0). resp is always initialised and must
 * be released with tl_resp_release, whatever the return value. */
int tl_http_req(const tl_req *req, tl_resp *resp);

/* Shorthand: body (NUL-terminated, may be NULL) as application/json. */
int tl_http(const char *method, const char *url, const char *api_key,
            const char *body, tl_resp *resp);

/* POST json (reference stolen, may be NULL for an empty body) to
 * d->base_url + path. */
int tl_post(const tl_daemon *d, const char *path, const char *api_key,
            json_t *json, tl_resp *resp);

/* GET d->base_url + printf(path_fmt, ...). */
int tl_get(const tl_daemon *d, const char *api_key, tl_resp *resp,
           const char *path_fmt, ...) __attribute__((format(printf, 4, 5)));

void tl_resp_release(tl_resp *resp);

/* Free the calling thread's curl handle (call before a thread exits). */
void tl_http_thread_end(void);

/* ---- Test world: a migrated database, a config file, API keys. */

typedef struct tl_world {
    const char *dsn;            /* MERIDIAN_TEST_DSN */
    const char *bin_dir;        /* MERIDIAN_BIN_DIR */
    char tmp_dir[256];          /* created; removed by tl_world_release */
    char config_path[PATH_MAX];
    int port;                   /* the listen port written to the config */
    char key_acme[TL_KEY_TEXT_SIZE];   /* customer "acme" */
    char key_globex[TL_KEY_TEXT_SIZE]; /* customer "globex" */
    char key_admin[TL_KEY_TEXT_SIZE];  /* admin scope */
} tl_world;

/* meridianctl db migrate; config init (free port); apikey create for
 * customers acme and globex and one admin key. Returns 0, or -1 with the
 * failing step printed (partially created files are removed). */
int tl_setup_db_and_keys(tl_world *w);

/* Create one more key with `apikey create` (customer NULL: admin); its
 * id (for `apikey revoke ID`) goes to *id when id is not NULL.
 * Returns 0 or -1. */
int tl_create_key(const tl_world *w, const char *customer, char key[TL_KEY_TEXT_SIZE],
                  int64_t *id);

/* Remove w->tmp_dir (logs are kept when keep_logs is true and the
 * directory is left in place; its path is printed). */
void tl_world_release(tl_world *w, bool keep_logs);

/* ---- PostgreSQL. */

/* Connect to dsn. Returns the connection, or NULL with the reason printed. */
PGconn *tl_pg_connect(const char *dsn);

/* Run sql (no parameters) expecting one row, one column. Copies the
 * text value into buf (NUL-terminated, truncated to size). Returns 0, or
 * -1 with the error printed. A NULL value gives "". */
int tl_pg_text(PGconn *conn, const char *sql, char *buf, size_t size);

/* As tl_pg_text, parsing the value as int64. */
int tl_pg_i64(PGconn *conn, const char *sql, int64_t *out);

/* A fingerprint of the ledger's whole state: counts of accounts,
 * transfers, pending transfers (with statuses) and balance-history rows,
 * and a hash of every account's balances. Two equal fingerprints mean no
 * write happened in between. Returns 0 or -1. */
#define TL_FINGERPRINT_SIZE 256
int tl_db_fingerprint(PGconn *conn, char out[TL_FINGERPRINT_SIZE]);

/* ---- Ids and JSON. */

/* A random (version 4) UUID, dashed lower case. Thread-safe. */
void tl_uuid_random(char out[TL_UUID_TEXT_SIZE]);

/* An int64 from a JSON integer or a string of decimal digits (optional
 * leading '-'). Returns 0, or -1 when v is neither or out of range. */
int tl_json_i64(const json_t *v, int64_t *out);

/* obj[key] as int64 (see tl_json_i64). Returns 0 or -1 (absent, bad). */
int tl_field_i64(const json_t *obj, const char *key, int64_t *out);

/* obj[key] when it is a string, else NULL. */
const char *tl_field_str(const json_t *obj, const char *key);

/* A JSON array of flag names from "a,b,c" (NULL or "": empty array). */
json_t *tl_flags(const char *csv);

/* {"id","ledger","code","flags"} of an account. New reference. */
json_t *tl_account(const char *id, int ledger, int code, const char *flags_csv);

/* A plain or pending transfer {"id","debit_account_id",
 * "credit_account_id","amount","ledger","code","flags"}. New reference. */
json_t *tl_transfer(const char *id, const char *debit, const char *credit,
                    int64_t amount, int ledger, const char *flags_csv);

/* {key: [items...]} with the NULL-terminated json_t * items stolen. */
json_t *tl_batch(const char *key, ...);

/* Compact serialisation of json (reference stolen). malloc'd; NULL on OOM. */
char *tl_dump(json_t *json);

/* results[i].result of a batch answer, or NULL. */
const char *tl_result(const tl_resp *r, size_t i);
/* Number of entries of results[], or 0. */
size_t tl_results_count(const tl_resp *r);

/* ---- Assertions for the cmocka thread (report the caller's line). */

/* The response is status with Content-Type application/problem+json and
 * a body {"status": status, "code": code, ...}. */
#define TL_EXPECT_PROBLEM(resp, status, code)                                  \
    tl_expect_problem_at((resp), (status), (code), __FILE__, __LINE__)
void tl_expect_problem_at(const tl_resp *r, long status, const char *code,
                          const char *file, int line);

/* The response is 200 with results[] of exactly count entries, entry i
 * having index i and result codes[i] (given as count const char *). */
#define TL_EXPECT_RESULTS(resp, count, ...)                                    \
    tl_expect_results_at((resp), (count), __FILE__, __LINE__, __VA_ARGS__)
void tl_expect_results_at(const tl_resp *r, size_t count, const char *file,
                          int line, ...);

/* The response has the given HTTP status (prints the body otherwise). */
#define TL_EXPECT_STATUS(resp, status)                                         \
    tl_expect_status_at((resp), (status), __FILE__, __LINE__)
void tl_expect_status_at(const tl_resp *r, long status, const char *file, int line);

/* obj[key] is an int64 (number or digit string) equal to want. */
#define TL_EXPECT_I64(obj, key, want)                                          \
    tl_expect_i64_at((obj), (key), (want), __FILE__, __LINE__)
void tl_expect_i64_at(const json_t *obj, const char *key, int64_t want,
                      const char *file, int line);

#endif
