/*
 * cell.c — running scripts/cell.sh and meridianctl as child processes
 * for the drill, and reading a cell's env file (see cell.h).
 *
 * Children: fork + exec with argv (no shell quoting), stdin /dev/null,
 * stderr (and stdout unless captured) appended to DIR/drill.log, in a
 * process group of their own. Captured stdout goes through a pipe read
 * with poll while waiting for the child, so a chatty child cannot block
 * and a silent one cannot hang the drill: past the deadline the child is
 * killed by its PID (the daemons it started are cell.sh's to stop).
 */
#include "drill/cell.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "common/clock.h"
#include "common/mrd_assert.h"

#define CELL_ARGV_MAX 16
#define CELL_ENV_LINE_BYTES 4096
#define CELL_SCRIPT_BYTES_MAX (1024 * 1024)

/* Run argv[0] (a path) with argv; returns the exit status (0..255), 128+N
 * when killed by signal N, or -1 when it could not be run or missed its
 * deadline (then it was killed). When capture is not NULL, stdout is
 * collected there (NUL-terminated, truncated to capture_size - 1). */
static int spawn(const char *const argv[], const char *log_path, char *capture,
                 size_t capture_size, int timeout_ms)
{
    int pipefd[2] = {-1, -1};
    if (capture != NULL) {
        if (capture_size == 0 || pipe(pipefd) != 0)
            return -1;
        capture[0] = '\0';
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        if (capture != NULL) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        return -1;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int in = open("/dev/null", O_RDONLY);
        int log = log_path ? open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0644) : -1;
        if (log < 0)
            log = open("/dev/null", O_WRONLY);
        if (in >= 0)
            dup2(in, 0);
        dup2(capture != NULL ? pipefd[1] : log, 1);
        dup2(log, 2);
        if (capture != NULL) {
            close(pipefd[0]);
            close(pipefd[1]);
        }
        /* Close everything else we may hold (curl sockets, libpq). */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    size_t got = 0;
    bool open_pipe = capture != NULL;
    if (capture != NULL)
        close(pipefd[1]);
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int status = 0;
    bool exited = false, timed_out = false;
    while (!exited) {
        if (open_pipe) {
            struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
            if (poll(&p, 1, 50) > 0) {
                char tmp[4096];
                ssize_t n = read(pipefd[0], tmp, sizeof tmp);
                if (n <= 0) {
                    open_pipe = false;
                } else {
                    size_t room = capture_size - 1 - got;
                    size_t take = (size_t)n < room ? (size_t)n : room;
                    memcpy(capture + got, tmp, take);
                    got += take;
                    capture[got] = '\0';
                }
            }
        } else {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            exited = true;
        } else if (r < 0 && errno != EINTR) {
            break;
        } else if (clock_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            exited = true;
            timed_out = true;
        }
    }
    /* Drain what the child wrote before exiting (daemons it started may
     * hold the pipe open: never wait for EOF). */
    while (open_pipe) {
        struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            break;
        char tmp[4096];
        ssize_t n = read(pipefd[0], tmp, sizeof tmp);
        if (n <= 0)
            break;
        size_t room = capture_size - 1 - got;
        size_t take = (size_t)n < room ? (size_t)n : room;
        memcpy(capture + got, tmp, take);
        got += take;
        capture[got] = '\0';
    }
    if (capture != NULL)
        close(pipefd[0]);
    if (timed_out || !exited)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Run cell.sh VERB DIR [args...]; returns spawn's status. */
static int run_script(const drill_cell *c, const char *const args[], size_t nargs,
                      int timeout_ms)
{
    const char *argv[CELL_ARGV_MAX];
    size_t n = 0;
    argv[n++] = "/bin/bash";
    argv[n++] = c->script;
    for (size_t i = 0; i < nargs && n < CELL_ARGV_MAX - 1; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return spawn(argv, c->log_path[0] ? c->log_path : NULL, NULL, 0, timeout_ms);
}

/* ---- env file. */

static void unquote(char *v)
{
    size_t len = strlen(v);
    while (len > 0 && (v[len - 1] == '\n' || v[len - 1] == '\r' || v[len - 1] == ' '))
        v[--len] = '\0';
    if (len >= 2 && (v[0] == '"' || v[0] == '\'') && v[len - 1] == v[0]) {
        memmove(v, v + 1, len - 2);
        v[len - 2] = '\0';
    }
}

/* Undo bash's printf %q for the plain values lab.sh writes (a list of
 * URLs comes out as "a\\,b"): drop each escaping backslash. */
static void unescape(char *v)
{
    char *out = v;
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '\\' && p[1] != '\0')
            p++;
        *out++ = *p;
    }
    *out = '\0';
}

static int copy_text(char *dst, size_t size, const char *src)
{
    int n = snprintf(dst, size, "%s", src);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

int drill_cell_open(drill_cell *c, const char *script, const char *dir, char *err,
                    size_t err_size)
{
    memset(c, 0, sizeof *c);
    char *real = realpath(dir, NULL);
    if (real == NULL) {
        snprintf(err, err_size, "cell directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int bad = copy_text(c->dir, sizeof c->dir, real);
    free(real);
    bad |= copy_text(c->script, sizeof c->script, script);
    char env_path[DRILL_PATH_MAX + 16];
    snprintf(env_path, sizeof env_path, "%s/env", c->dir);
    snprintf(c->log_path, sizeof c->log_path, "%.*s/drill.log", DRILL_PATH_MAX - 16, c->dir);
    if (bad) {
        snprintf(err, err_size, "cell directory path too long");
        return -1;
    }
    FILE *f = fopen(env_path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "%s: %s (is %s a cell started by cell.sh up?)", env_path,
                 strerror(errno), c->dir);
        return -1;
    }
    char line[CELL_ENV_LINE_BYTES];
    char nodes[512] = "";
    char urls[2048] = "";
    int lines = 0;
    while (fgets(line, sizeof line, f) != NULL && lines++ < 1000) {
        char *eq = strchr(line, '=');
        if (eq == NULL || line[0] == '#')
            continue;
        *eq = '\0';
        char *key = line, *val = eq + 1;
        unquote(val);
        if (strcmp(key, "CELL") == 0)
            bad |= copy_text(c->name, sizeof c->name, val);
        else if (strcmp(key, "ETCD_ENDPOINTS") == 0)
            bad |= copy_text(c->etcd, sizeof c->etcd, val);
        else if (strcmp(key, "BUILD") == 0)
            bad |= copy_text(c->build, sizeof c->build, val);
        else if (strcmp(key, "CONFIG") == 0)
            bad |= copy_text(c->config, sizeof c->config, val);
        else if (strcmp(key, "NODES") == 0)
            bad |= copy_text(nodes, sizeof nodes, val);
        else if (strcmp(key, "MERIDIAND_URLS") == 0)
            bad |= copy_text(urls, sizeof urls, val);
    }
    fclose(f);
    if (bad) {
        snprintf(err, err_size, "%s: a value is too long", env_path);
        return -1;
    }
    /* Nodes and their ports (N<i>_PG_PORT, the name upper-cased). */
    char *save = NULL;
    for (char *tok = strtok_r(nodes, " ", &save); tok != NULL; tok = strtok_r(NULL, " ", &save)) {
        if (c->node_count == DRILL_CELL_NODES_MAX || copy_text(c->nodes[c->node_count],
                                                               sizeof c->nodes[0], tok) != 0)
            break;
        c->pg_ports[c->node_count] = -1;
        c->node_count++;
    }
    f = fopen(env_path, "r");
    if (f != NULL) {
        lines = 0;
        while (fgets(line, sizeof line, f) != NULL && lines++ < 1000) {
            for (size_t i = 0; i < c->node_count; i++) {
                char key[64];
                size_t k = 0;
                for (const char *p = c->nodes[i]; *p && k < sizeof key - 10; p++)
                    key[k++] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
                snprintf(key + k, sizeof key - k, "_PG_PORT=");
                if (strncmp(line, key, strlen(key)) == 0)
                    c->pg_ports[i] = atoi(line + strlen(key));
            }
        }
        fclose(f);
    }
    save = NULL;
    for (char *tok = strtok_r(urls, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (c->url_count == DRILL_URLS_MAX ||
            copy_text(c->urls[c->url_count], sizeof c->urls[0], tok) != 0)
            break;
        c->url_count++;
    }
    if (c->name[0] == '\0' || c->etcd[0] == '\0' || c->config[0] == '\0' ||
        c->node_count == 0) {
        snprintf(err, err_size, "%s lacks CELL, ETCD_ENDPOINTS, CONFIG or NODES", env_path);
        return -1;
    }
    if (c->url_count == 0) {
        snprintf(err, err_size,
                 "%s names no meridiand (MERIDIAND_URLS empty): start the cell with "
                 "`cell.sh up DIR --meridiand 2`",
                 env_path);
        return -1;
    }
    for (size_t i = 0; i < c->node_count; i++) {
        if (c->pg_ports[i] <= 0) {
            snprintf(err, err_size, "%s: no PostgreSQL port for node %s", env_path,
                     c->nodes[i]);
            return -1;
        }
    }
    return 0;
}

int drill_cell_up(drill_cell *c, const char *script, const char *dir, const char *build,
                  int meridiand, bool netem, char *err, size_t err_size)
{
    drill_cell tmp;
    memset(&tmp, 0, sizeof tmp);
    if (copy_text(tmp.script, sizeof tmp.script, script) != 0 ||
        copy_text(tmp.dir, sizeof tmp.dir, dir) != 0) {
        snprintf(err, err_size, "path too long");
        return -1;
    }
    snprintf(tmp.log_path, sizeof tmp.log_path, "%.*s/drill.log", DRILL_PATH_MAX - 16, dir);
    char m[16];
    snprintf(m, sizeof m, "%d", meridiand);
    const char *args[8] = {"up", dir, "--meridiand", m, "--build", build, NULL, NULL};
    size_t nargs = 6;
    if (netem)
        args[nargs++] = "--netem";
    int rc = run_script(&tmp, args, nargs, DRILL_CELL_UP_TIMEOUT_MS);
    if (rc != 0) {
        snprintf(err, err_size, "`cell.sh up %s` failed (exit %d); see %s", dir, rc,
                 tmp.log_path);
        return -1;
    }
    return drill_cell_open(c, script, dir, err, err_size);
}

int drill_cell_down(const drill_cell *c)
{
    const char *args[] = {"down", c->dir};
    return run_script(c, args, 2, DRILL_CELL_CMD_TIMEOUT_MS) == 0 ? 0 : -1;
}

int drill_cell_wait_healthy(const drill_cell *c, int seconds)
{
    char s[16];
    snprintf(s, sizeof s, "%d", seconds);
    const char *args[] = {"wait-healthy", c->dir, s};
    return run_script(c, args, 3, (seconds + 30) * 1000) == 0 ? 0 : -1;
}

int drill_cell_do(const drill_cell *c, const char *verb, const char *node, char *err,
                  size_t err_size)
{
    const char *args[] = {verb, c->dir, node};
    int rc = run_script(c, args, 3, DRILL_CELL_CMD_TIMEOUT_MS);
    if (rc != 0) {
        snprintf(err, err_size, "`cell.sh %s %s %s` failed (exit %d); see %s", verb, c->dir,
                 node, rc, c->log_path);
        return -1;
    }
    return 0;
}

bool drill_cell_script_has(const char *script, const char *verb)
{
    FILE *f = fopen(script, "r");
    if (f == NULL)
        return false;
    char *text = malloc(CELL_SCRIPT_BYTES_MAX + 1);
    if (text == NULL) {
        fclose(f);
        return false;
    }
    size_t n = fread(text, 1, CELL_SCRIPT_BYTES_MAX, f);
    fclose(f);
    text[n] = '\0';
    /* A case branch of the verb: "isolate)" or "|isolate)" or "isolate|". */
    char pat[64];
    snprintf(pat, sizeof pat, "%s)", verb);
    bool found = strstr(text, pat) != NULL;
    snprintf(pat, sizeof pat, "%s|", verb);
    found = found || strstr(text, pat) != NULL;
    free(text);
    return found;
}

int drill_cell_pg_port(const drill_cell *c, const char *node)
{
    for (size_t i = 0; i < c->node_count; i++)
        if (strcmp(c->nodes[i], node) == 0)
            return c->pg_ports[i];
    return -1;
}

int drill_cell_apikey(const drill_cell *c, const char *dsn, const char *customer, char *key,
                      size_t key_size, char *err, size_t err_size)
{
    char ctl[DRILL_PATH_MAX + 16];
    snprintf(ctl, sizeof ctl, "%s/meridianctl", c->build);
    const char *argv[] = {ctl,        "--config",   c->config, "--dsn", dsn,     "apikey",
                          "create",   "--customer", customer,  "--label", "drill", "--json",
                          NULL};
    char out[4096];
    int rc = spawn(argv, c->log_path, out, sizeof out, 60000);
    if (rc != 0) {
        snprintf(err, err_size, "`%s apikey create --customer %s` failed (exit %d); see %s",
                 ctl, customer, rc, c->log_path);
        return -1;
    }
    /* The JSON document may follow other lines: take the last '{'. */
    const char *start = strchr(out, '{');
    json_error_t jerr;
    json_t *j = start ? json_loads(start, 0, &jerr) : NULL;
    const char *k = j ? json_string_value(json_object_get(j, "key")) : NULL;
    if (k == NULL || copy_text(key, key_size, k) != 0) {
        snprintf(err, err_size, "apikey create printed no key: %.200s", out);
        json_decref(j);
        return -1;
    }
    json_decref(j);
    return 0;
}

/* ---- the two-region lab (lab.sh). */

int drill_lab_open(drill_cell *c, const char *script, const char *dir, const char *build,
                   const char *cell, char *err, size_t err_size)
{
    memset(c, 0, sizeof *c);
    char *real = realpath(dir, NULL);
    if (real == NULL) {
        snprintf(err, err_size, "lab directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int bad = copy_text(c->dir, sizeof c->dir, real);
    free(real);
    bad |= copy_text(c->script, sizeof c->script, script);
    bad |= copy_text(c->build, sizeof c->build, build);
    bad |= copy_text(c->name, sizeof c->name, cell);
    /* GLOBAL_<CELL>: the cell's name upper-cased, '-' and '.' as '_'. */
    char global_key[DRILL_CELL_NAME_MAX + 16] = "GLOBAL_";
    size_t k = strlen(global_key);
    for (const char *p = cell; *p && k < sizeof global_key - 1; p++, k++)
        global_key[k] = (char)(*p >= 'a' && *p <= 'z' ? *p - 32
                               : (*p == '-' || *p == '.') ? '_'
                                                          : *p);
    global_key[k] = '\0';
    char env_path[DRILL_PATH_MAX + 16];
    snprintf(env_path, sizeof env_path, "%s/env", c->dir);
    /* DIR/logs survives `lab down` (DIR itself is emptied by `lab up`). */
    snprintf(c->log_path, sizeof c->log_path, "%.*s/logs/drill.log", DRILL_PATH_MAX - 16,
             c->dir);
    int n = snprintf(c->config, sizeof c->config, "%s/cells/%s/meridiand.conf", c->dir, cell);
    if (bad || n < 0 || (size_t)n >= sizeof c->config) {
        snprintf(err, err_size, "lab directory path too long");
        return -1;
    }
    FILE *f = fopen(env_path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "%s: %s (is %s a lab started by `meridianctl lab up`?)",
                 env_path, strerror(errno), c->dir);
        return -1;
    }
    char line[CELL_ENV_LINE_BYTES];
    int lines = 0, global_port = 0;
    while (fgets(line, sizeof line, f) != NULL && lines++ < 10000) {
        char *eq = strchr(line, '=');
        if (eq == NULL || line[0] == '#')
            continue;
        *eq = '\0';
        char *val = eq + 1;
        unquote(val);
        unescape(val);
        if (strcmp(line, "ETCD_DIRECT") == 0)
            bad |= copy_text(c->etcd, sizeof c->etcd, val);
        else if (strcmp(line, global_key) == 0)
            global_port = atoi(val);
        else if (strcmp(line, "KEEPER_DR_FENCE") == 0)
            c->dr_fence = strcmp(val, "1") == 0;
        else if (strcmp(line, "LEASE_TTL_S") == 0)
            c->lease_ttl_s = atoi(val) > 0 && atoi(val) < 3600 ? atoi(val) : 0;
    }
    fclose(f);
    if (bad || c->etcd[0] == '\0' || global_port <= 0 || global_port > 65535) {
        snprintf(err, err_size, "%s lacks ETCD_DIRECT or %s (is cell %s in the lab?)",
                 env_path, global_key, cell);
        return -1;
    }
    snprintf(c->urls[0], sizeof c->urls[0], "http://127.0.0.1:%d", global_port);
    c->url_count = 1;
    if (access(c->config, R_OK) != 0) {
        snprintf(err, err_size, "%s: %s", c->config, strerror(errno));
        return -1;
    }
    return 0;
}

int drill_lab_do(const drill_cell *c, const char *const args[], size_t nargs, int timeout_ms,
                 char *err, size_t err_size)
{
    mrd_assert(nargs >= 1 && nargs + 4 < CELL_ARGV_MAX);
    const char *argv[CELL_ARGV_MAX];
    size_t n = 0;
    argv[n++] = "/bin/bash";
    argv[n++] = c->script;
    argv[n++] = args[0];
    argv[n++] = "--dir";
    argv[n++] = c->dir;
    for (size_t i = 1; i < nargs; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    /* lab.sh takes its binaries from $MERIDIAN_BIN_DIR. */
    if (c->build[0] != '\0')
        setenv("MERIDIAN_BIN_DIR", c->build, 1);
    int rc = spawn(argv, c->log_path[0] ? c->log_path : NULL, NULL, 0, timeout_ms);
    if (rc != 0) {
        snprintf(err, err_size, "`lab.sh %s` failed (exit %d); see %s", args[0], rc,
                 c->log_path);
        return -1;
    }
    return 0;
}

int drill_lab_node_place(const drill_cell *c, const char *node, char *region,
                         size_t region_size, char *zone, size_t zone_size)
{
    char path[DRILL_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/nodes.tsv", c->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[CELL_ENV_LINE_BYTES];
    int lines = 0, rc = -1;
    /* NAME CELL REGION ZONE ROLE PG_PORT KEEPER_PORT, tab-separated. */
    while (rc != 0 && fgets(line, sizeof line, f) != NULL && lines++ < 10000) {
        char *save = NULL;
        const char *name = strtok_r(line, "\t\n", &save);
        const char *cell = strtok_r(NULL, "\t\n", &save);
        const char *reg = strtok_r(NULL, "\t\n", &save);
        const char *zon = strtok_r(NULL, "\t\n", &save);
        if (name == NULL || cell == NULL || reg == NULL || zon == NULL ||
            strcmp(name, node) != 0)
            continue;
        if (copy_text(region, region_size, reg) == 0 && copy_text(zone, zone_size, zon) == 0)
            rc = 0;
        else
            break;
    }
    fclose(f);
    return rc;
}

int drill_lab_cell_nodes(const drill_cell *c, const char *cell, const char *region,
                         char names[][32], size_t max)
{
    char path[DRILL_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/nodes.tsv", c->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[CELL_ENV_LINE_BYTES];
    int lines = 0;
    size_t n = 0;
    /* NAME CELL REGION ZONE ROLE ..., tab-separated. */
    while (n < max && fgets(line, sizeof line, f) != NULL && lines++ < 10000) {
        char *save = NULL;
        const char *name = strtok_r(line, "\t\n", &save);
        const char *ce = strtok_r(NULL, "\t\n", &save);
        const char *reg = strtok_r(NULL, "\t\n", &save);
        const char *zon = strtok_r(NULL, "\t\n", &save);
        const char *role = strtok_r(NULL, "\t\n", &save);
        if (name == NULL || ce == NULL || reg == NULL || zon == NULL || role == NULL ||
            strcmp(ce, cell) != 0 || strcmp(reg, region) != 0 ||
            strcmp(role, "dr-standby") == 0)
            continue;
        if (copy_text(names[n], 32, name) == 0)
            n++;
    }
    fclose(f);
    return (int)n;
}

int drill_lab_up(drill_cell *c, const char *script, const char *dir, const char *build,
                 const char *cell, char *err, size_t err_size)
{
    drill_cell tmp;
    memset(&tmp, 0, sizeof tmp);
    if (copy_text(tmp.script, sizeof tmp.script, script) != 0 ||
        copy_text(tmp.dir, sizeof tmp.dir, dir) != 0 ||
        copy_text(tmp.build, sizeof tmp.build, build) != 0) {
        snprintf(err, err_size, "path too long");
        return -1;
    }
    /* `lab up` empties DIR first: the log goes beside it. */
    snprintf(tmp.log_path, sizeof tmp.log_path, "%.*s.drill.log", DRILL_PATH_MAX - 16, dir);
    const char *args[] = {"up"};
    if (drill_lab_do(&tmp, args, 1, DRILL_LAB_UP_TIMEOUT_MS, err, err_size) != 0)
        return -1;
    if (drill_lab_open(c, script, dir, build, cell, err, err_size) != 0)
        return -1;
    memcpy(c->log_path, tmp.log_path, sizeof c->log_path);
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int drill_rmtree(const char *dir)
{
    if (dir == NULL || dir[0] == '\0' || strcmp(dir, "/") == 0)
        return -1;
    return nftw(dir, rm_entry, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}
