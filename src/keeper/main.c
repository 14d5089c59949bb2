/*
 * main.c — meridian-keeper: command line, signals, then keeper_run.
 *
 *   meridian-keeper --node n1 --cell us --etcd URL[,URL...] --dir PATH --pg-port N
 *                   [--zone Z] [--region R] [--database meridian]
 *                   [--lease-ttl-s 2] [--loop-ms 250] [--fence-margin-ms 700]
 *                   [--pg-bindir DIR] [--user postgres] [--pid-file F]
 *                   [--stop-pg-on-exit] [--log-level L] [--log-json]
 *   meridian-keeper --print-fsm      the decision table as a Graphviz graph
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "keeper/fsm.h"
#include "keeper/keeper.h"
#include "keeper/kmetrics.h"

static volatile int stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meridian-keeper --node NAME --cell CELL --etcd URL[,URL...] --dir PATH --pg-port N\n"
            "                       [--zone Z] [--region R] [--database DB] [--lease-ttl-s S]\n"
            "                       [--loop-ms MS] [--fence-margin-ms MS] [--pg-bindir DIR]\n"
            "                       [--user USER] [--pid-file FILE] [--stop-pg-on-exit]\n"
            "                       [--metrics-listen 127.0.0.1:PORT] [--role candidate|dr]\n"
            "                       [--region-failover manual|automatic] [--region-failover-after-s S]\n"
            "                       [--max-loss-ms MS] [--dr-fence-ms MS] [--advertise REGION=HOST:PORT ...]\n"
            "                       [--log-level debug|info|warn|error] [--log-json]\n"
            "       meridian-keeper --print-fsm\n");
}

static int parse_int(const char *flag, const char *s, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "meridian-keeper: %s wants an integer in %ld..%ld, got '%s'\n", flag, min,
                max, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int copy_arg(const char *flag, const char *value, char *dst, size_t size)
{
    if (strlen(value) >= size) {
        fprintf(stderr, "meridian-keeper: %s value too long (max %zu characters)\n", flag, size - 1);
        return -1;
    }
    memcpy(dst, value, strlen(value) + 1);
    return 0;
}

int main(int argc, char **argv)
{
    keeper_config cfg;
    keeper_config_defaults(&cfg);
    const char *pid_file = NULL;
    bool stop_pg = false, json = false;
    log_level level = LOG_INFO;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--print-fsm") == 0) {
            size_t need = keeper_fsm_dot(NULL, 0);
            char *buf = malloc(need + 1);
            if (buf == NULL)
                return 1;
            keeper_fsm_dot(buf, need + 1);
            fputs(buf, stdout);
            free(buf);
            return 0;
        }
        if (strcmp(a, "--stop-pg-on-exit") == 0) {
            stop_pg = true;
            continue;
        }
        if (strcmp(a, "--log-json") == 0) {
            json = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "meridian-keeper: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long n;
        int rc = 0;
        if (strcmp(a, "--node") == 0) rc = copy_arg(a, v, cfg.node, sizeof cfg.node);
        else if (strcmp(a, "--cell") == 0) rc = copy_arg(a, v, cfg.cell, sizeof cfg.cell);
        else if (strcmp(a, "--zone") == 0) rc = copy_arg(a, v, cfg.zone, sizeof cfg.zone);
        else if (strcmp(a, "--region") == 0) rc = copy_arg(a, v, cfg.region, sizeof cfg.region);
        else if (strcmp(a, "--etcd") == 0) rc = copy_arg(a, v, cfg.etcd_endpoints, sizeof cfg.etcd_endpoints);
        else if (strcmp(a, "--dir") == 0) rc = copy_arg(a, v, cfg.basedir, sizeof cfg.basedir);
        else if (strcmp(a, "--pg-bindir") == 0) rc = copy_arg(a, v, cfg.pg_bindir, sizeof cfg.pg_bindir);
        else if (strcmp(a, "--user") == 0) rc = copy_arg(a, v, cfg.run_as_user, sizeof cfg.run_as_user);
        else if (strcmp(a, "--database") == 0) rc = copy_arg(a, v, cfg.database, sizeof cfg.database);
        else if (strcmp(a, "--pid-file") == 0) pid_file = v;
        else if (strcmp(a, "--metrics-listen") == 0) rc = copy_arg(a, v, cfg.metrics_listen, sizeof cfg.metrics_listen);
        else if (strcmp(a, "--role") == 0) {
            if (strcmp(v, "dr") == 0) cfg.dr = true;
            else if (strcmp(v, "candidate") == 0) cfg.dr = false;
            else { fprintf(stderr, "meridian-keeper: --role wants candidate or dr, got '%s'\n", v); rc = -1; }
        } else if (strcmp(a, "--region-failover") == 0) {
            if (strcmp(v, "automatic") == 0) cfg.region_policy = KEEPER_REGION_FAILOVER_AUTOMATIC;
            else if (strcmp(v, "manual") == 0) cfg.region_policy = KEEPER_REGION_FAILOVER_MANUAL;
            else { fprintf(stderr, "meridian-keeper: --region-failover wants manual or automatic, got '%s'\n", v); rc = -1; }
        }
        else if (strcmp(a, "--region-failover-after-s") == 0) { rc = parse_int(a, v, 1, 3600, &n); cfg.region_failover_after_s = (int)n; }
        else if (strcmp(a, "--max-loss-ms") == 0) { rc = parse_int(a, v, 0, 3600000, &n); cfg.max_loss_ms = (int)n; }
        else if (strcmp(a, "--dr-fence-ms") == 0) { rc = parse_int(a, v, 0, 60000, &n); cfg.dr_fence_ms = (int)n; }
        else if (strcmp(a, "--advertise") == 0) {
            const char *eq = strchr(v, '=');
            const char *colon = eq ? strrchr(eq, ':') : NULL;
            if (cfg.advertise_count >= KEEPER_NODES_MAX || eq == NULL || eq == v || colon == NULL ||
                (size_t)(eq - v) >= sizeof cfg.advertise[0].region ||
                strlen(eq + 1) >= sizeof cfg.advertise[0].addr || atoi(colon + 1) <= 0) {
                fprintf(stderr, "meridian-keeper: --advertise wants REGION=HOST:PORT (at most %d), got '%s'\n",
                        KEEPER_NODES_MAX, v);
                rc = -1;
            } else {
                memcpy(cfg.advertise[cfg.advertise_count].region, v, (size_t)(eq - v));
                cfg.advertise[cfg.advertise_count].region[eq - v] = '\0';
                snprintf(cfg.advertise[cfg.advertise_count].addr, sizeof cfg.advertise[0].addr, "%s", eq + 1);
                cfg.advertise_count++;
            }
        }
        else if (strcmp(a, "--pg-port") == 0) { rc = parse_int(a, v, 1, 65535, &n); cfg.pg_port = (int)n; }
        else if (strcmp(a, "--lease-ttl-s") == 0) { rc = parse_int(a, v, 2, 60, &n); cfg.lease_ttl_s = (int)n; }
        else if (strcmp(a, "--loop-ms") == 0) { rc = parse_int(a, v, 50, 10000, &n); cfg.loop_ms = (int)n; }
        else if (strcmp(a, "--fence-margin-ms") == 0) { rc = parse_int(a, v, 200, 59000, &n); cfg.fence_margin_ms = (int)n; }
        else if (strcmp(a, "--log-level") == 0) {
            if (log_level_parse(v, &level) != 0) {
                fprintf(stderr, "meridian-keeper: --log-level wants debug, info, warn or error\n");
                rc = -1;
            }
        } else {
            fprintf(stderr, "meridian-keeper: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
        if (rc != 0)
            return 2;
    }
    char err[512];
    if (keeper_config_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "meridian-keeper: %s\n", err);
        usage(stderr);
        return 2;
    }
    log_init(level, json);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    if (pid_file != NULL) {
        FILE *f = fopen(pid_file, "w");
        if (f == NULL) {
            fprintf(stderr, "meridian-keeper: cannot write pid file %s: %s\n", pid_file,
                    strerror(errno));
            return 1;
        }
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    if (cfg.metrics_listen[0] != '\0' && kmetrics_start(cfg.metrics_listen, err, sizeof err) != 0) {
        fprintf(stderr, "meridian-keeper: %s\n", err);
        return 1;
    }
    int rc = keeper_run(&cfg, &stop_requested, stop_pg);
    kmetrics_stop();
    if (pid_file != NULL)
        unlink(pid_file);
    return rc == 0 ? 0 : 1;
}
