/*
 * main.c — meridian-netem: command line, signals, then netem_run.
 *
 *   meridian-netem [--control 127.0.0.1:PORT] [--config FILE]
 *                  --link NAME=LISTEN_PORT:TARGET_PORT[,delay_ms=40][,jitter_ms=5][,mode=pass]
 *                  [--link ...] [--pid-file F] [--log-level L] [--log-json]
 *
 * Once every socket listens, one JSON line goes to stdout with the bound
 * ports (ports given as 0 are picked by the kernel):
 *   {"control":8500,"links":{"us-eu-repl":41234,...}}
 * SIGTERM or SIGINT closes everything and exits 0. Signals are taken
 * through a signalfd watched by the data loop (blocked in every thread,
 * including libmicrohttpd's, which inherits the mask).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/log.h"
#include "netem/netem.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: meridian-netem [--control 127.0.0.1:PORT] [--config FILE]\n"
            "                      --link NAME=LISTEN_PORT:TARGET_PORT[,delay_ms=N][,jitter_ms=N][,mode=M]\n"
            "                      [--link ...] [--pid-file FILE]\n"
            "                      [--log-level debug|info|warn|error] [--log-json]\n"
            "  Ports are on 127.0.0.1; 0 picks a free one (the bound ports are printed as JSON).\n"
            "  Defaults: delay_ms=%d, jitter_ms=%d, mode=pass; modes: pass, refuse, blackhole.\n"
            "  Control API: GET /healthz, GET /links, GET|POST /links/NAME, POST /links.\n",
            NETEM_DELAY_MS_DEFAULT, NETEM_JITTER_MS_DEFAULT);
}

/* "127.0.0.1:PORT", "localhost:PORT" or "PORT". */
static int parse_control(const char *s, int *port)
{
    const char *p = strrchr(s, ':');
    if (p != NULL) {
        size_t hlen = (size_t)(p - s);
        if (!((hlen == 9 && strncmp(s, "127.0.0.1", 9) == 0) ||
              (hlen == 9 && strncmp(s, "localhost", 9) == 0))) {
            fprintf(stderr, "meridian-netem: --control must be on 127.0.0.1 (got '%s')\n", s);
            return -1;
        }
        p++;
    } else {
        p = s;
    }
    char *end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno != 0 || end == p || *end != '\0' || v < 0 || v > 65535) {
        fprintf(stderr, "meridian-netem: --control wants 127.0.0.1:PORT with PORT in 0..65535, got '%s'\n",
                s);
        return -1;
    }
    *port = (int)v;
    return 0;
}

/* Each connection holds two descriptors: ask for enough of them. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)NETEM_CONNS_TOTAL_MAX * 2 + 256;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        log_warn("netem", "open files limit is %llu, below the %llu that %d connections need",
                 (unsigned long long)rl.rlim_cur, (unsigned long long)want, NETEM_CONNS_TOTAL_MAX);
}

static int write_pid_file(const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        fprintf(stderr, "meridian-netem: pid file path too long\n");
        return -1;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 ||
        rename(tmp, path) != 0) {
        fprintf(stderr, "meridian-netem: cannot write pid file %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static netem_config cfg; /* large (64 links): not on the stack */
    netem_config_init(&cfg);
    const char *pid_file = NULL;
    bool json_logs = false;
    log_level level = LOG_INFO;
    char err[512];

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--log-json") == 0) {
            json_logs = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "meridian-netem: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--control") == 0) {
            if (parse_control(v, &cfg.control_port) != 0)
                return 2;
        } else if (strcmp(a, "--link") == 0) {
            netem_link_spec spec;
            if (netem_link_spec_parse(v, &spec, err, sizeof err) != 0 ||
                netem_config_add_link(&cfg, &spec, err, sizeof err) != 0) {
                fprintf(stderr, "meridian-netem: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--config") == 0) {
            if (netem_config_load_file(v, &cfg, err, sizeof err) != 0) {
                fprintf(stderr, "meridian-netem: %s\n", err);
                return 2;
            }
        } else if (strcmp(a, "--pid-file") == 0) {
            pid_file = v;
        } else if (strcmp(a, "--log-level") == 0) {
            if (log_level_parse(v, &level) != 0) {
                fprintf(stderr, "meridian-netem: --log-level wants debug, info, warn or error\n");
                return 2;
            }
        } else {
            fprintf(stderr, "meridian-netem: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (cfg.links_count == 0) {
        fprintf(stderr, "meridian-netem: no link given; add --link NAME=LISTEN_PORT:TARGET_PORT\n");
        usage(stderr);
        return 2;
    }
    log_init(level, json_logs);
    raise_fd_limit();

    /* Before any thread exists, so every thread inherits the mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0) {
        fprintf(stderr, "meridian-netem: sigprocmask: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) {
        fprintf(stderr, "meridian-netem: signalfd: %s\n", strerror(errno));
        return 1;
    }

    netem *n = netem_create(&cfg, err, sizeof err);
    if (n == NULL) {
        fprintf(stderr, "meridian-netem: %s\n", err);
        close(sfd);
        return 1;
    }
    int rc = 1;
    char *ports = netem_ports_json(n);
    if (ports == NULL) {
        fprintf(stderr, "meridian-netem: out of memory\n");
        goto out;
    }
    printf("%s\n", ports);
    fflush(stdout);
    free(ports);
    if (pid_file != NULL && write_pid_file(pid_file) != 0)
        goto out;

    rc = netem_run(n, sfd) == 0 ? 0 : 1;
    log_info("netem", "stopped");
    if (pid_file != NULL)
        unlink(pid_file);
out:
    netem_free(n);
    close(sfd);
    return rc;
}
