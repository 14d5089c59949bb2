/*
 * main.c — meridiand: parse the configuration, start the parts, wait
 * for a signal, stop in order.
 *
 * Start: configuration file then flags (flags win) -> checks (pepper,
 * listen address, numeric ranges; a bad value exits 2 with what to
 * fix) -> the route to the database: static (dsn) or, with `etcd`, the
 * cell's leader as etcd names it (route.h; start-up waits up to
 * failover_wait_ms for one) -> the database must be at the schema
 * version this binary embeds (else exit 1 naming the migrate command) ->
 * read pool, auth, batcher, HTTP (all following the route). SIGTERM/SIGINT are blocked in every thread and taken here with
 * sigwait, so no handler runs in signal context. Stop: close the
 * listening socket, let requests in flight finish (bounded), close the
 * connections (joins their threads while the batcher still serves
 * them), then stop the batcher (it drains what is queued) and free
 * everything.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/apikey.h"
#include "common/config.h"
#include "common/limits.h"
#include "common/log.h"
#include "db/migrate.h"
#include "service/api.h"
#include "service/auth.h"
#include "service/batcher.h"
#include "service/http.h"
#include "service/reads.h"
#include "service/route.h"

#define EXIT_USAGE 2
#define SHUTDOWN_WAIT_MS 10000
#define READ_ACQUIRE_TIMEOUT_MS 5000
#define HTTP_IDLE_TIMEOUT_S 60
#define DEFAULT_LISTEN "127.0.0.1:8080"

static const char *const known_keys[] = {
    "listen",         "dsn",          "workers",           "commit_wait_us",
    "commit_events_max", "read_pool_size", "max_connections", "api_key_pepper",
    "log_level",      "log_format",   "expire_interval_ms", "cell",
    "etcd",           "failover_wait_ms", "region", "global_standby_names",
    "global_wait_ms",
    NULL,
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meridiand [--config FILE] [--listen HOST:PORT] [--dsn DSN] [--workers N]\n"
            "                 [--commit-wait-us N] [--read-pool N] [--log-level L] [--log-json]\n"
            "                 [--etcd URLS --cell NAME] [--region R] [--failover-wait-ms N]\n"
            "                 [--pid-file F] [--help]\n"
            "\n"
            "The Meridian transaction service: the HTTP/JSON API of docs/API.md.\n"
            "\n"
            "  --config FILE       configuration file (key = value lines); flags override it\n"
            "  --listen HOST:PORT  address to serve on (default %s; port 0 = any free port)\n"
            "  --dsn DSN           PostgreSQL connection string (with --etcd: all but host\n"
            "                      and port, e.g. 'user=postgres dbname=meridian')\n"
            "  --etcd URLS         comma-separated etcd endpoints: follow the cell's leader\n"
            "  --cell NAME         the cell whose leader to follow (etcd key /meridian/NAME/)\n"
            "  --region R          the region this process runs in: a leader elsewhere is\n"
            "                      reached through the address it advertises for R\n"
            "  --failover-wait-ms N  longest a write waits for a leader before 503 (default\n"
            "                      15000)\n"
            "  --workers N         commit threads/connections, 1..32 (default 4)\n"
            "  --commit-wait-us N  longest wait to fill a group commit, 0..%d (default %d)\n"
            "  --read-pool N       read connections, 1..64 (default 8)\n"
            "  --log-level L       debug, info, warn or error (default info)\n"
            "  --log-json          log JSON lines instead of logfmt\n"
            "  --pid-file F        write the process id to F while running\n"
            "\n"
            "Configuration keys: listen, dsn, workers, commit_wait_us, commit_events_max,\n"
            "read_pool_size, max_connections, api_key_pepper (required), log_level,\n"
            "log_format (logfmt|json), expire_interval_ms, cell, etcd, failover_wait_ms,\n"
            "region, global_standby_names (default: any asynchronous standby),\n"
            "global_wait_ms (default 5000: how long \"durability\": \"global\" waits).\n"
            "Create a file with `meridianctl config init --out FILE`.\n",
            DEFAULT_LISTEN, LIMIT_COMMIT_WAIT_US_MAX, LIMIT_COMMIT_WAIT_US_DEFAULT);
}

/* A flag that takes a value, and the configuration key it sets. */
typedef struct flag {
    const char *name;
    const char *key;
} flag;

static const flag value_flags[] = {
    {"--listen", "listen"},
    {"--dsn", "dsn"},
    {"--workers", "workers"},
    {"--commit-wait-us", "commit_wait_us"},
    {"--read-pool", "read_pool_size"},
    {"--log-level", "log_level"},
    {"--etcd", "etcd"},
    {"--cell", "cell"},
    {"--failover-wait-ms", "failover_wait_ms"},
    {"--region", "region"},
};

typedef struct options {
    const char *config_path;
    const char *pid_file;
    bool log_json;
    bool help;
    /* Flag values to apply over the file, in order. */
    const char *keys[16];
    const char *values[16];
    size_t n;
} options;

/* Split "--name=value" or "--name value". Returns the value or NULL
 * (missing), advancing *i past what was used. */
static const char *flag_value(int argc, char **argv, int *i, const char *name)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (arg[n] == '=') return arg + n + 1;
    if (*i + 1 >= argc) return NULL;
    (*i)++;
    return argv[*i];
}

static bool flag_is(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            o->help = true;
            continue;
        }
        if (strcmp(arg, "--log-json") == 0) {
            o->log_json = true;
            continue;
        }
        if (flag_is(arg, "--config") || flag_is(arg, "--pid-file")) {
            bool is_config = flag_is(arg, "--config");
            const char *v = flag_value(argc, argv, &i, is_config ? "--config" : "--pid-file");
            if (v == NULL || v[0] == '\0') {
                fprintf(stderr, "meridiand: %s needs a file name\n", arg);
                return -1;
            }
            if (is_config)
                o->config_path = v;
            else
                o->pid_file = v;
            continue;
        }
        bool known = false;
        for (size_t f = 0; f < sizeof value_flags / sizeof value_flags[0]; f++) {
            if (!flag_is(arg, value_flags[f].name)) continue;
            const char *v = flag_value(argc, argv, &i, value_flags[f].name);
            if (v == NULL) {
                fprintf(stderr, "meridiand: %s needs a value; see meridiand --help\n",
                        value_flags[f].name);
                return -1;
            }
            if (o->n == sizeof o->keys / sizeof o->keys[0]) {
                fprintf(stderr, "meridiand: too many flags\n");
                return -1;
            }
            o->keys[o->n] = value_flags[f].key;
            o->values[o->n] = v;
            o->n++;
            known = true;
            break;
        }
        if (!known) {
            fprintf(stderr, "meridiand: unknown option '%s'; see meridiand --help\n", arg);
            return -1;
        }
    }
    return 0;
}

/* "HOST:PORT" -> host (into buf) and port. Returns 0 or -1. */
static int parse_listen(const char *s, char *host, size_t host_size, int *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || (size_t)(colon - s) >= host_size) return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    const char *p = colon + 1;
    if (*p == '\0' || strlen(p) > 5) return -1;
    int v = 0;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535) return -1;
    if (strcmp(host, "localhost") == 0) snprintf(host, host_size, "127.0.0.1");
    *port = v;
    return 0;
}

typedef struct settings {
    char host[64];
    int port;
    const char *dsn;
    long workers, commit_wait_us, commit_events_max, read_pool_size, max_connections;
    long expire_interval_ms;
    long failover_wait_ms;
    long global_wait_ms;
    const char *global_standby_names; /* NULL: any asynchronous standby */
    const char *etcd; /* NULL: static route to dsn */
    uint8_t pepper[APIKEY_PEPPER_SIZE];
    log_level level;
    bool log_json;
    const char *cell;
    const char *region; /* where this process runs: picks the leader's address */
} settings;

/* Read and check every setting. Returns 0, or -1 after printing what is
 * wrong and how to fix it. */
static int read_settings(const config *cfg, const options *o, settings *s)
{
    char err[512];
    memset(s, 0, sizeof *s);
    const char *where = o->config_path != NULL ? o->config_path : "the command line";

    const char *listen = config_get(cfg, "listen");
    if (listen == NULL) listen = DEFAULT_LISTEN;
    if (parse_listen(listen, s->host, sizeof s->host, &s->port) != 0) {
        fprintf(stderr,
                "meridiand: invalid listen address \"%s\": expected HOST:PORT such as "
                "127.0.0.1:8080 (port 0 picks a free port)\n",
                listen);
        return -1;
    }
    s->dsn = config_get(cfg, "dsn");
    if (s->dsn == NULL || s->dsn[0] == '\0') {
        fprintf(stderr, "meridiand: no database: set dsn in %s or pass --dsn "
                        "'host=... dbname=...'\n", where);
        return -1;
    }
    struct {
        const char *key;
        long def, min, max;
        long *out;
    } ints[] = {
        {"workers", 4, 1, 32, &s->workers},
        {"commit_wait_us", LIMIT_COMMIT_WAIT_US_DEFAULT, 0, LIMIT_COMMIT_WAIT_US_MAX,
         &s->commit_wait_us},
        {"commit_events_max", LIMIT_COMMIT_EVENTS_MAX, 1, LIMIT_COMMIT_EVENTS_MAX,
         &s->commit_events_max},
        {"read_pool_size", 8, 1, 64, &s->read_pool_size},
        {"max_connections", 256, 1, LIMIT_HTTP_CONNECTIONS_MAX, &s->max_connections},
        {"expire_interval_ms", 1000, 0, 3600000, &s->expire_interval_ms},
        {"failover_wait_ms", 15000, 100, 600000, &s->failover_wait_ms},
        {"global_wait_ms", 5000, 10, 600000, &s->global_wait_ms},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (config_get_int(cfg, ints[i].key, ints[i].def, ints[i].min, ints[i].max, ints[i].out,
                           err, sizeof err) != 0) {
            fprintf(stderr, "meridiand: %s\n", err);
            return -1;
        }
    }
    const char *pepper = config_get(cfg, "api_key_pepper");
    if (pepper == NULL) {
        fprintf(stderr,
                "meridiand: api_key_pepper is not set in %s: it is required to check API keys; "
                "create a configuration with `meridianctl config init --out FILE`\n",
                where);
        return -1;
    }
    if (apikey_pepper_parse(pepper, s->pepper) != 0) {
        fprintf(stderr, "meridiand: api_key_pepper must be 64 hex digits (32 bytes)\n");
        return -1;
    }
    const char *lvl = config_get(cfg, "log_level");
    s->level = LOG_INFO;
    if (lvl != NULL && log_level_parse(lvl, &s->level) != 0) {
        fprintf(stderr, "meridiand: log_level \"%s\" is not one of debug, info, warn, error\n",
                lvl);
        return -1;
    }
    const char *fmt = config_get(cfg, "log_format");
    if (fmt != NULL && strcmp(fmt, "json") != 0 && strcmp(fmt, "logfmt") != 0) {
        fprintf(stderr, "meridiand: log_format \"%s\" is not logfmt or json\n", fmt);
        return -1;
    }
    s->log_json = o->log_json || (fmt != NULL && strcmp(fmt, "json") == 0);
    s->cell = config_get(cfg, "cell");
    if (s->cell == NULL || s->cell[0] == '\0') s->cell = "default";
    s->region = config_get(cfg, "region");
    s->global_standby_names = config_get(cfg, "global_standby_names");
    s->etcd = config_get(cfg, "etcd");
    if (s->etcd != NULL && s->etcd[0] == '\0') s->etcd = NULL;
    return 0;
}

/* Exit status 1 unless the database is at migrations_latest(). */
static int check_schema(const char *dsn, const char *config_path)
{
    PGconn *conn = PQconnectdb(dsn);
    if (conn == NULL || PQstatus(conn) != CONNECTION_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", conn != NULL ? PQerrorMessage(conn) : "out of memory");
        char *nl = strchr(msg, '\n');
        if (nl != NULL) *nl = '\0';
        log_error("main", "cannot connect to the database: %s", msg);
        PQfinish(conn);
        return -1;
    }
    int version = 0;
    char err[256];
    int rc = migrate_current_version(conn, &version, err, sizeof err);
    PQfinish(conn);
    if (rc != 0) {
        log_error("main", "cannot read the schema version: %s", err);
        return -1;
    }
    int want = migrations_latest();
    if (version != want) {
        const char *cfgp = config_path != NULL ? config_path : "FILE";
        log_error("main",
                  "database schema is at version %d, this meridiand needs %d; run "
                  "`meridianctl db migrate --config %s`",
                  version, want, cfgp);
        return -1;
    }
    return 0;
}

static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        log_error("main", "cannot write pid file %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0) {
        log_error("main", "cannot write pid file %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o) != 0) return EXIT_USAGE;
    if (o.help) {
        usage(stdout);
        return 0;
    }

    char err[512];
    config *cfg = o.config_path != NULL ? config_load(o.config_path, known_keys, err, sizeof err)
                                        : config_empty();
    if (cfg == NULL) {
        fprintf(stderr, "meridiand: %s\n", o.config_path != NULL ? err : "out of memory");
        return EXIT_USAGE;
    }
    for (size_t i = 0; i < o.n; i++) {
        if (config_set(cfg, o.keys[i], o.values[i]) != 0) {
            fprintf(stderr, "meridiand: out of memory\n");
            config_free(cfg);
            return 1;
        }
    }
    settings s;
    if (read_settings(cfg, &o, &s) != 0) {
        config_free(cfg);
        return EXIT_USAGE;
    }
    log_init(s.level, s.log_json);

    /* Before any thread exists: every thread inherits this mask, so the
     * signals are only ever taken by sigwait below. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    int status = 1;
    route_source *rt = NULL;
    reads *rd = NULL;
    auth *au = NULL;
    batcher *bt = NULL;
    api *ap = NULL;
    http_server *hs = NULL;
    bool pid_written = false;

    if (apikey_init() != 0) {
        log_error("main", "cannot initialise libsodium");
        goto out;
    }
    rt = s.etcd != NULL ? route_create_etcd_in(s.etcd, s.cell, s.region, s.dsn, err, sizeof err)
                        : route_create_static(s.dsn, err, sizeof err);
    if (rt == NULL) {
        log_error("main", "cannot route to the database: %s", err);
        goto out;
    }
    route_snapshot leader;
    char leader_dsn[ROUTE_DSN_MAX];
    if (route_wait_leader(rt, s.etcd != NULL ? (int)s.failover_wait_ms : 0, &leader) != 0) {
        log_error("main", "cell %s has no leader in etcd (%s) after %ld ms", s.cell, s.etcd,
                  s.failover_wait_ms);
        goto out;
    }
    if (route_dsn(rt, &leader, leader_dsn, sizeof leader_dsn) != 0) {
        log_error("main", "dsn too long");
        goto out;
    }
    if (s.etcd != NULL)
        log_info("main", "following cell %s: leader %s at %s:%d, epoch %lld", s.cell, leader.node,
                 leader.host, leader.port, (long long)leader.epoch);
    if (check_schema(leader_dsn, o.config_path) != 0) goto out;

    rd = reads_create_routed(rt, (int)s.read_pool_size, READ_ACQUIRE_TIMEOUT_MS, err, sizeof err);
    if (rd == NULL) {
        log_error("main", "read pool: %s", err);
        goto out;
    }
    au = auth_create(rd, s.pepper);
    if (au == NULL) {
        log_error("main", "out of memory");
        goto out;
    }
    /* Keys naming another cell ("mk_<cell>_...") are refused with 421. */
    if (auth_set_cell(au, s.cell) != 0)
        log_warn("main", "cell %s cannot appear in API keys: keys of any cell are accepted", s.cell);
    batcher_config bc = {
        .dsn = s.dsn,
        .route = rt,
        .failover_wait_ms = (int)s.failover_wait_ms,
        .workers = (int)s.workers,
        .wait_us = (int)s.commit_wait_us,
        .events_max = (size_t)s.commit_events_max,
        .queue_max = LIMIT_QUEUE_REQUESTS_MAX,
        .expire_interval_ms = (int)s.expire_interval_ms,
        .global_standby_names = s.global_standby_names,
        .global_wait_ms = (int)s.global_wait_ms,
    };
    bt = batcher_start(&bc, err, sizeof err);
    if (bt == NULL) {
        log_error("main", "cannot start the batcher: %s", err);
        goto out;
    }
    api_config ac = {.batcher = bt, .reads = rd, .auth = au, .schema_version = migrations_latest(),
                     .route = s.etcd != NULL ? rt : NULL};
    ap = api_create(&ac);
    if (ap == NULL) {
        log_error("main", "out of memory");
        goto out;
    }
    http_config hc = {
        .host = s.host,
        .port = s.port,
        .max_connections = (int)s.max_connections,
        .idle_timeout_s = HTTP_IDLE_TIMEOUT_S,
        .handler = api_handle,
        .handler_arg = ap,
    };
    hs = http_start(&hc, err, sizeof err);
    if (hs == NULL) {
        log_error("main", "%s", err);
        goto out;
    }
    if (o.pid_file != NULL) {
        if (write_pid_file(o.pid_file) != 0) goto out;
        pid_written = true;
    }
    log_info("main", "serving cell %s with %ld commit workers, %ld read connections, up to %ld "
                     "HTTP connections",
             s.cell, s.workers, s.read_pool_size, s.max_connections);
    log_info("main", "meridiand listening on http://%s:%d", s.host, http_port(hs));
    printf("meridiand listening on http://%s:%d\n", s.host, http_port(hs));
    fflush(stdout);

    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0) {
    }
    log_info("main", "received %s: no new connections, finishing requests in flight",
             sig == SIGTERM ? "SIGTERM" : "SIGINT");
    http_quiesce(hs);
    if (http_wait_idle(hs, SHUTDOWN_WAIT_MS) != 0)
        log_warn("main", "requests still running after %d ms; closing connections anyway",
                 SHUTDOWN_WAIT_MS);
    status = 0;
out:
    /* Connections first (their handlers may still be waiting on the
     * batcher), then the batcher (drains its queue), then the rest. */
    http_stop(hs);
    if (bt != NULL) batcher_stop(bt);
    api_free(ap);
    auth_free(au);
    reads_free(rd);
    route_free(rt);
    if (pid_written) unlink(o.pid_file);
    config_free(cfg);
    if (status == 0) log_info("main", "meridiand stopped");
    return status;
}
