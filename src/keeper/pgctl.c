/*
 * pgctl.c — run and inspect the local PostgreSQL for the keeper.
 *
 * Server binaries run as a non-root user (see pgctl.h); every child is
 * bounded by a timeout and killed past it. SQL goes over libpq to
 * 127.0.0.1:port as the `postgres` superuser, trust-authenticated on
 * loopback only (the lab's setting; production configurations use
 * certificates).
 */
#include "keeper/pgctl.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "common/clock.h"
#include "common/mrd_assert.h"

#define PGCTL_PATH_MAX 1024
#define PGCTL_ARGV_MAX 24
#define PGCTL_PROMOTE_POLL_MS 10

static int fail(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err != NULL && err_size > 0)
        vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *run_user(const pgctl_config *cfg)
{
    return cfg->run_as_user ? cfg->run_as_user : "postgres";
}

static void path_join(char *out, const char *a, const char *b)
{
    int n = snprintf(out, PGCTL_PATH_MAX, "%s/%s", a, b);
    mrd_assert(n > 0 && n < PGCTL_PATH_MAX);
}

/* Give the node directory (and what's in it that we created) to the
 * server's user when we are root. */
static int chown_to_user(const pgctl_config *cfg, const char *path, char *err, size_t err_size)
{
    if (geteuid() != 0)
        return 0;
    struct passwd *pw = getpwnam(run_user(cfg));
    if (pw == NULL)
        return fail(err, err_size, "user %s does not exist; PostgreSQL cannot run as root",
                    run_user(cfg));
    if (chown(path, pw->pw_uid, pw->pw_gid) != 0)
        return fail(err, err_size, "chown %s: %s", path, strerror(errno));
    return 0;
}

/* fork + (drop to the server user) + exec argv, output appended to
 * basedir/log_name.log, stdin from stdin_path or /dev/null; kill after
 * timeout_ms. Returns the exit status (0 = success), or -1. */
static int run(const pgctl_config *cfg, char *const argv[], const char *log_name,
               const char *stdin_path, int timeout_ms, char *err, size_t err_size)
{
    char log_path[PGCTL_PATH_MAX];
    char name[128];
    snprintf(name, sizeof name, "%s.log", log_name);
    path_join(log_path, cfg->basedir, name);

    uid_t uid = 0;
    gid_t gid = 0;
    bool drop = geteuid() == 0;
    if (drop) {
        struct passwd *pw = getpwnam(run_user(cfg));
        if (pw == NULL)
            return fail(err, err_size, "user %s does not exist", run_user(cfg));
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return fail(err, err_size, "open %s: %s", log_path, strerror(errno));
    if (drop && fchown(log_fd, uid, gid) != 0) {
        close(log_fd);
        return fail(err, err_size, "chown %s: %s", log_path, strerror(errno));
    }
    int in_fd = open(stdin_path ? stdin_path : "/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) {
        close(log_fd);
        return fail(err, err_size, "open stdin: %s", strerror(errno));
    }

    pid_t pid = fork();
    if (pid < 0) {
        close(log_fd);
        close(in_fd);
        return fail(err, err_size, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        dup2(in_fd, 0);
        dup2(log_fd, 1);
        dup2(log_fd, 2);
        if (chdir(cfg->basedir) != 0)
            _exit(126);
        if (drop && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    close(log_fd);
    close(in_fd);

    int64_t deadline = clock_mono_ms() + timeout_ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR)
            return fail(err, err_size, "waitpid: %s", strerror(errno));
        if (clock_mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return fail(err, err_size, "%s did not finish within %d ms (see %s)", argv[0],
                        timeout_ms, log_path);
        }
        usleep(20 * 1000);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    return fail(err, err_size, "%s failed (exit %d); see %s", argv[0],
                WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), log_path);
}

static int write_standby_conf(const pgctl_config *cfg, const char *host, int port, char *err,
                              size_t err_size);

static int append_file(const char *path, const char *text, char *err, size_t err_size)
{
    FILE *f = fopen(path, "a");
    if (f == NULL)
        return fail(err, err_size, "open %s: %s", path, strerror(errno));
    int ok = fputs(text, f) >= 0;
    if (fclose(f) != 0)
        ok = 0;
    return ok ? 0 : fail(err, err_size, "write %s: %s", path, strerror(errno));
}

static void data_path(const pgctl_config *cfg, char *out, const char *file)
{
    char data[PGCTL_PATH_MAX];
    path_join(data, cfg->basedir, "data");
    if (file == NULL)
        snprintf(out, PGCTL_PATH_MAX, "%s", data);
    else
        path_join(out, data, file);
}

static void bin(const pgctl_config *cfg, char *out, const char *name)
{
    path_join(out, cfg->bindir, name);
}

/* Settings every node carries; the last occurrence in the file wins, so
 * a clone appends its own port after the copied ones. */
static int write_node_conf(const pgctl_config *cfg, char *err, size_t err_size)
{
    char conf[PGCTL_PATH_MAX], text[1024];
    data_path(cfg, conf, "postgresql.conf");
    snprintf(text, sizeof text,
             "\n# --- meridian-keeper (%s)\n"
             "listen_addresses = '127.0.0.1'\n"
             "port = %d\n"
             "unix_socket_directories = '%s'\n"
             "max_connections = 200\n"
             "wal_level = replica\n"
             "max_wal_senders = 10\n"
             "max_replication_slots = 10\n"
             "wal_keep_size = '512MB'\n"
             "hot_standby = on\n"
             "hot_standby_feedback = on\n"
             "wal_log_hints = on\n"
             "wal_receiver_status_interval = '1s'\n"
             "wal_sender_timeout = '5s'\n"
             "wal_receiver_timeout = '5s'\n"
             /* After its upstream dies a standby retries streaming this
              * often (default 5 s): a failover should not wait for it. */
             "wal_retrieve_retry_interval = '500ms'\n"
             "synchronous_commit = on\n"
             "logging_collector = off\n",
             cfg->node_name, cfg->port, cfg->basedir);
    return append_file(conf, text, err, err_size);
}

static int ensure_basedir(const pgctl_config *cfg, char *err, size_t err_size)
{
    if (mkdir(cfg->basedir, 0700) != 0 && errno != EEXIST)
        return fail(err, err_size, "mkdir %s: %s", cfg->basedir, strerror(errno));
    return chown_to_user(cfg, cfg->basedir, err, err_size);
}

int pgctl_initdb(const pgctl_config *cfg, char *err, size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], hba[PGCTL_PATH_MAX];
    if (ensure_basedir(cfg, err, err_size) != 0)
        return -1;
    bin(cfg, exe, "initdb");
    data_path(cfg, data, NULL);
    char *argv[] = {exe, "-D", data, "-U", "postgres", "--auth=trust", "--data-checksums",
                    "-E", "UTF8", "--locale=C.UTF-8", NULL};
    if (run(cfg, argv, "initdb", NULL, 120 * 1000, err, err_size) != 0)
        return -1;
    if (write_node_conf(cfg, err, err_size) != 0)
        return -1;
    data_path(cfg, hba, "pg_hba.conf");
    return append_file(hba, "host replication all 127.0.0.1/32 trust\n", err, err_size);
}

int pgctl_basebackup(const pgctl_config *cfg, const char *primary_host, int primary_port,
                     char *err, size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], tmp[PGCTL_PATH_MAX], port[16], dbopt[256];
    if (ensure_basedir(cfg, err, err_size) != 0)
        return -1;
    bin(cfg, exe, "pg_basebackup");
    data_path(cfg, data, NULL);
    /* Clone into data.clone and rename when complete: a half-finished
     * copy is never mistaken for a data directory. */
    path_join(tmp, cfg->basedir, "data.clone");
    if (access(tmp, F_OK) == 0) {
        char *rm[] = {"/bin/rm", "-rf", tmp, NULL};
        if (run(cfg, rm, "basebackup", NULL, 60 * 1000, err, err_size) != 0)
            return -1;
    }
    snprintf(port, sizeof port, "%d", primary_port);
    snprintf(dbopt, sizeof dbopt, "application_name=%s", cfg->node_name);
    char *argv[] = {exe, "-h", (char *)primary_host, "-p", port, "-U", "postgres", "-D", tmp,
                    "-X", "stream", "-R", "-c", "fast", "-d", dbopt, NULL};
    if (run(cfg, argv, "basebackup", NULL, 600 * 1000, err, err_size) != 0)
        return -1;
    if (rename(tmp, data) != 0)
        return fail(err, err_size, "rename %s to %s: %s", tmp, data, strerror(errno));
    return write_node_conf(cfg, err, err_size);
}

static bool pid_file_exists(const pgctl_config *cfg)
{
    char pidfile[PGCTL_PATH_MAX];
    data_path(cfg, pidfile, "postmaster.pid");
    return access(pidfile, F_OK) == 0;
}

static bool postmaster_alive(const pgctl_config *cfg)
{
    char pidfile[PGCTL_PATH_MAX];
    data_path(cfg, pidfile, "postmaster.pid");
    FILE *f = fopen(pidfile, "r");
    if (f == NULL)
        return false;
    long pid = 0;
    int n = fscanf(f, "%ld", &pid);
    fclose(f);
    return n == 1 && pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

int pgctl_start(const pgctl_config *cfg, int timeout_ms, char *err, size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], log[PGCTL_PATH_MAX], t[16];
    bin(cfg, exe, "pg_ctl");
    data_path(cfg, data, NULL);
    path_join(log, cfg->basedir, "postgres.log");
    snprintf(t, sizeof t, "%d", timeout_ms / 1000 > 0 ? timeout_ms / 1000 : 1);
    char *argv[] = {exe, "-D", data, "-l", log, "-w", "-t", t, "start", NULL};
    return run(cfg, argv, "pg_ctl", NULL, timeout_ms + 5000, err, err_size);
}

int pgctl_stop(const pgctl_config *cfg, const char *mode, int timeout_ms, char *err,
               size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], t[16];
    if (!pid_file_exists(cfg))
        return 0;
    bin(cfg, exe, "pg_ctl");
    data_path(cfg, data, NULL);
    snprintf(t, sizeof t, "%d", timeout_ms / 1000 > 0 ? timeout_ms / 1000 : 1);
    char *argv[] = {exe, "-D", data, "-m", (char *)mode, "-w", "-t", t, "stop", NULL};
    if (run(cfg, argv, "pg_ctl", NULL, timeout_ms + 5000, err, err_size) == 0)
        return 0;
    /* A server killed with SIGKILL leaves its pid file behind: it is not
     * running if that PID is gone (PostgreSQL handles the stale file at
     * the next start). */
    return postmaster_alive(cfg) ? -1 : 0;
}

/* Finish crash recovery of a server that was killed, so pg_rewind (which
 * needs a clean shutdown) can run: single-user mode, then exit. */
static int single_user_recovery(const pgctl_config *cfg, char *err, size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX];
    bin(cfg, exe, "postgres");
    data_path(cfg, data, NULL);
    char *argv[] = {exe, "--single", "-D", data, "-c", "archive_mode=off", "postgres", NULL};
    return run(cfg, argv, "single-user", "/dev/null", 300 * 1000, err, err_size);
}

int pgctl_rewind(const pgctl_config *cfg, const char *source_host, int source_port,
                 char *err, size_t err_size)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], target[PGCTL_PATH_MAX + 32];
    char source[256];

    /* A just-promoted source still has its old timeline in pg_control
     * until its first checkpoint, and pg_rewind would then answer "no
     * rewind required" for a diverged target: checkpoint it first. */
    char dsn[160];
    snprintf(dsn, sizeof dsn, "host=%s port=%d user=postgres dbname=postgres connect_timeout=5",
             source_host, source_port);
    PGconn *src = PQconnectdb(dsn);
    PGresult *cr = PQstatus(src) == CONNECTION_OK ? PQexec(src, "CHECKPOINT") : NULL;
    bool checkpointed = cr != NULL && PQresultStatus(cr) == PGRES_COMMAND_OK;
    PQclear(cr);
    if (!checkpointed) {
        fail(err, err_size, "CHECKPOINT on the rewind source %s:%d failed: %s", source_host,
             source_port, PQerrorMessage(src));
        PQfinish(src);
        return -1;
    }
    PQfinish(src);

    bin(cfg, exe, "pg_rewind");
    data_path(cfg, data, NULL);
    snprintf(target, sizeof target, "--target-pgdata=%s", data);
    snprintf(source, sizeof source,
             "--source-server=host=%s port=%d user=postgres dbname=postgres", source_host,
             source_port);
    char *argv[] = {exe, target, source, NULL};
    if (run(cfg, argv, "rewind", NULL, 600 * 1000, err, err_size) != 0) {
        /* Killed servers must finish crash recovery first; try once. */
        if (single_user_recovery(cfg, err, err_size) != 0)
            return -1;
        if (run(cfg, argv, "rewind", NULL, 600 * 1000, err, err_size) != 0)
            return -1;
    }
    /* pg_rewind copied the source's configuration files, port included:
     * restate this node's own settings (the last occurrence wins). */
    if (write_node_conf(cfg, err, err_size) != 0)
        return -1;
    return write_standby_conf(cfg, source_host, source_port, err, err_size);
}

static PGconn *connect_db(const pgctl_config *cfg, const char *db)
{
    char dsn[256];
    snprintf(dsn, sizeof dsn,
             "host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=2 "
             "application_name=meridian-keeper",
             cfg->port, db);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static PGconn *connect_local(const pgctl_config *cfg)
{
    return connect_db(cfg, "postgres");
}

bool pgctl_data_exists(const pgctl_config *cfg)
{
    char path[PGCTL_PATH_MAX];
    data_path(cfg, path, "PG_VERSION");
    return access(path, F_OK) == 0;
}

bool pgctl_is_standby_dir(const pgctl_config *cfg)
{
    char path[PGCTL_PATH_MAX];
    data_path(cfg, path, "standby.signal");
    return access(path, F_OK) == 0;
}

static int write_standby_conf(const pgctl_config *cfg, const char *host, int port, char *err,
                              size_t err_size)
{
    char path[PGCTL_PATH_MAX], text[512];
    data_path(cfg, path, "standby.signal");
    if (append_file(path, "", err, err_size) != 0 || chown_to_user(cfg, path, err, err_size) != 0)
        return -1;
    data_path(cfg, path, "postgresql.auto.conf");
    if (host != NULL && host[0] != '\0')
        snprintf(text, sizeof text,
                 "primary_conninfo = 'host=%s port=%d user=postgres application_name=%s'\n",
                 host, port, cfg->node_name);
    else
        snprintf(text, sizeof text, "primary_conninfo = ''\n");
    return append_file(path, text, err, err_size);
}

int pgctl_configure_standby(const pgctl_config *cfg, const char *host, int port, char *err,
                            size_t err_size)
{
    return write_standby_conf(cfg, host, port, err, err_size);
}

int pgctl_parse_lsn(const char *text, uint64_t *out)
{
    unsigned int hi, lo;
    char tail;
    if (text == NULL || sscanf(text, "%X/%X%c", &hi, &lo, &tail) != 2)
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* What pg_controldata says about a stopped data directory: the last
 * checkpoint's LSN (for a cleanly stopped primary, its shutdown
 * checkpoint: the end of its WAL, which a planned switchover's target
 * must have received), the minimum recovery ending location (a standby),
 * and whether the cluster was shut down cleanly. Returns 0, or -1 when
 * pg_controldata cannot be run. */
typedef struct controldata {
    uint64_t checkpoint_lsn;
    uint64_t min_recovery_lsn;
    bool clean; /* "shut down" or "shut down in recovery" */
} controldata;

static int read_controldata(const pgctl_config *cfg, controldata *out)
{
    char exe[PGCTL_PATH_MAX], data[PGCTL_PATH_MAX], cmd[3 * PGCTL_PATH_MAX], line[512];
    memset(out, 0, sizeof *out);
    if (!pgctl_data_exists(cfg))
        return -1;
    bin(cfg, exe, "pg_controldata");
    data_path(cfg, data, NULL);
    snprintf(cmd, sizeof cmd, "'%s' -D '%s' 2>/dev/null", exe, data);
    FILE *f = popen(cmd, "r");
    if (f == NULL)
        return -1;
    static const char k_ckpt[] = "Latest checkpoint location:";
    static const char k_minrec[] = "Minimum recovery ending location:";
    static const char k_state[] = "Database cluster state:";
    for (int i = 0; i < 200 && fgets(line, sizeof line, f) != NULL; i++) {
        line[strcspn(line, "\n")] = '\0';
        const char *key = NULL;
        if (strncmp(line, k_ckpt, sizeof k_ckpt - 1) == 0)
            key = k_ckpt;
        else if (strncmp(line, k_minrec, sizeof k_minrec - 1) == 0)
            key = k_minrec;
        else if (strncmp(line, k_state, sizeof k_state - 1) == 0)
            key = k_state;
        if (key == NULL)
            continue;
        char *v = line + strlen(key);
        while (*v == ' ')
            v++;
        if (key == k_ckpt)
            pgctl_parse_lsn(v, &out->checkpoint_lsn);
        else if (key == k_minrec)
            pgctl_parse_lsn(v, &out->min_recovery_lsn);
        else
            out->clean = strcmp(v, "shut down") == 0 || strcmp(v, "shut down in recovery") == 0;
    }
    return pclose(f) == 0 ? 0 : -1;
}

static uint64_t stopped_checkpoint_lsn(const pgctl_config *cfg)
{
    controldata cd;
    (void)read_controldata(cfg, &cd); /* zeroed when it cannot be read */
    return cd.checkpoint_lsn;
}

int pgctl_prepare_rewind(const pgctl_config *cfg, uint64_t *end_lsn, char *err, size_t err_size)
{
    controldata cd;
    *end_lsn = 0;
    if (postmaster_alive(cfg))
        return fail(err, err_size, "PostgreSQL is still running: stop it before a rewind");
    if (read_controldata(cfg, &cd) != 0)
        return fail(err, err_size, "pg_controldata failed on %s/data", cfg->basedir);
    if (!cd.clean) {
        if (single_user_recovery(cfg, err, err_size) != 0)
            return -1;
        if (read_controldata(cfg, &cd) != 0 || !cd.clean)
            return fail(err, err_size, "%s/data is still not shut down cleanly after crash "
                                       "recovery in single-user mode", cfg->basedir);
    }
    *end_lsn = cd.checkpoint_lsn > cd.min_recovery_lsn ? cd.checkpoint_lsn : cd.min_recovery_lsn;
    return 0;
}

int pgctl_timeline_switchpoint(const char *host, int port, uint32_t leader_tli, uint32_t tli,
                               uint64_t *lsn)
{
    char dsn[256], sql[128];
    if (leader_tli <= 1 || tli == 0 || tli >= leader_tli)
        return -1;
    snprintf(dsn, sizeof dsn,
             "host=%s port=%d user=postgres dbname=postgres connect_timeout=3 "
             "application_name=meridian-keeper",
             host, port);
    snprintf(sql, sizeof sql, "SELECT pg_read_file('pg_wal/%08X.history')", leader_tli);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return -1;
    }
    PGresult *r = PQexec(c, sql);
    int rc = -1;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        /* Lines "parentTLI<TAB>switchpoint<TAB>reason", oldest first. */
        const char *p = PQgetvalue(r, 0, 0);
        rc = 1;
        for (int lines = 0; p != NULL && *p != '\0' && lines < 100000; lines++) {
            unsigned parent = 0;
            char text[64];
            uint64_t at = 0;
            if (sscanf(p, "%u %63s", &parent, text) == 2 && parent == tli &&
                pgctl_parse_lsn(text, &at) == 0) {
                *lsn = at;
                rc = 0;
                break;
            }
            p = strchr(p, '\n');
            if (p != NULL)
                p++;
        }
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

int pgctl_last_rewind_divergence(const pgctl_config *cfg, uint64_t *lsn)
{
    char path[PGCTL_PATH_MAX], line[512];
    path_join(path, cfg->basedir, "rewind.log");
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    /* The log is appended to by every rewind: the last answer counts. */
    int found = -1;
    for (int i = 0; i < 100000 && fgets(line, sizeof line, f) != NULL; i++) {
        const char *key = "servers diverged at WAL location ";
        const char *p = strstr(line, key);
        if (p != NULL) {
            char text[64];
            if (sscanf(p + strlen(key), "%63s", text) == 1 && pgctl_parse_lsn(text, lsn) == 0)
                found = 0;
        } else if (strstr(line, "no rewind required") != NULL) {
            found = -1;
        }
    }
    fclose(f);
    return found;
}

int pgctl_read_state(const pgctl_config *cfg, pgctl_state *out)
{
    mrd_assert(cfg != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    PGconn *c = connect_local(cfg);
    if (c == NULL) {
        if (!postmaster_alive(cfg))
            out->flush_lsn = stopped_checkpoint_lsn(cfg);
        return 0;
    }
    PGresult *r = PQexec(
        c, "SELECT pg_is_in_recovery(),"
           " CASE WHEN pg_is_in_recovery()"
           "  THEN COALESCE(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
           "  ELSE pg_current_wal_flush_lsn() END,"
           " COALESCE(pg_last_wal_replay_lsn(), '0/0'),"
           " CASE WHEN pg_is_in_recovery()"
           "  THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),"
           "                (SELECT timeline_id FROM pg_control_checkpoint()))"
           "  ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
           " END,"
           " current_setting('primary_conninfo'), current_setting('synchronous_standby_names'),"
           " COALESCE((SELECT status = 'streaming' FROM pg_stat_wal_receiver LIMIT 1), false)");
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        out->running = true;
        out->in_recovery = PQgetvalue(r, 0, 0)[0] == 't';
        pgctl_parse_lsn(PQgetvalue(r, 0, 1), &out->flush_lsn);
        pgctl_parse_lsn(PQgetvalue(r, 0, 2), &out->replay_lsn);
        out->timeline = (uint32_t)strtoul(PQgetvalue(r, 0, 3), NULL, 10);
        snprintf(out->upstream, sizeof out->upstream, "%s", PQgetvalue(r, 0, 4));
        snprintf(out->sync_names, sizeof out->sync_names, "%s", PQgetvalue(r, 0, 5));
        out->receiving = PQgetvalue(r, 0, 6)[0] == 't';
    }
    PQclear(r);
    PQfinish(c);
    return 0;
}

int pgctl_exec(const pgctl_config *cfg, const char *sql, char *err, size_t err_size)
{
    PGconn *c = connect_db(cfg, cfg->database ? cfg->database : "postgres");
    if (c == NULL)
        return fail(err, err_size, "cannot connect to the local PostgreSQL on port %d", cfg->port);
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    int rc = 0;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        rc = fail(err, err_size, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return rc;
}

int pgctl_promote(const pgctl_config *cfg, int timeout_s, char *err, size_t err_size)
{
    /* pg_promote(true) polls for the end of recovery ten times a second;
     * every millisecond here is write downtime, so ask without waiting
     * and poll pg_is_in_recovery() every PGCTL_PROMOTE_POLL_MS instead. */
    PGconn *c = connect_local(cfg);
    if (c == NULL)
        return fail(err, err_size, "cannot connect to the local PostgreSQL on port %d", cfg->port);
    int rc = 0;
    PGresult *r = PQexec(c, "SELECT pg_promote(false)");
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQgetvalue(r, 0, 0)[0] != 't')
        rc = fail(err, err_size, "pg_promote refused: %s", PQerrorMessage(c));
    PQclear(r);
    int64_t polls = (int64_t)timeout_s * 1000 / PGCTL_PROMOTE_POLL_MS;
    for (int64_t i = 0; rc == 0; i++) {
        r = PQexec(c, "SELECT pg_is_in_recovery()");
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        bool recovering = ok && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (!ok) {
            rc = fail(err, err_size, "after pg_promote: %s", PQerrorMessage(c));
        } else if (!recovering) {
            break;
        } else if (i >= polls) {
            rc = fail(err, err_size, "promotion did not finish within %d s", timeout_s);
        } else {
            usleep(PGCTL_PROMOTE_POLL_MS * 1000);
        }
    }
    PQfinish(c);
    return rc;
}

/* ALTER SYSTEM SET name = value; SELECT pg_reload_conf(). */
static int set_and_reload(const pgctl_config *cfg, const char *name, const char *value,
                          char *err, size_t err_size)
{
    PGconn *c = connect_local(cfg);
    if (c == NULL)
        return fail(err, err_size, "cannot connect to the local PostgreSQL on port %d", cfg->port);
    int rc = -1;
    char *lit = PQescapeLiteral(c, value, strlen(value));
    if (lit == NULL) {
        fail(err, err_size, "escape: %s", PQerrorMessage(c));
        goto out;
    }
    char sql[1024];
    int n = snprintf(sql, sizeof sql, "ALTER SYSTEM SET %s = %s", name, lit);
    PQfreemem(lit);
    if (n < 0 || (size_t)n >= sizeof sql) {
        fail(err, err_size, "value for %s too long", name);
        goto out;
    }
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fail(err, err_size, "%s: %s", sql, PQerrorMessage(c));
        PQclear(r);
        goto out;
    }
    PQclear(r);
    r = PQexec(c, "SELECT pg_reload_conf()");
    rc = PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : fail(err, err_size, "reload: %s",
                                                         PQerrorMessage(c));
    PQclear(r);
out:
    PQfinish(c);
    return rc;
}

int pgctl_set_primary_conninfo(const pgctl_config *cfg, const char *host, int port, char *err,
                               size_t err_size)
{
    char conninfo[256] = "";
    if (host != NULL && host[0] != '\0')
        snprintf(conninfo, sizeof conninfo,
                 "host=%s port=%d user=postgres application_name=%s", host, port,
                 cfg->node_name);
    return set_and_reload(cfg, "primary_conninfo", conninfo, err, err_size);
}

int pgctl_set_sync_names(const pgctl_config *cfg, const char *value, char *err, size_t err_size)
{
    return set_and_reload(cfg, "synchronous_standby_names", value, err, err_size);
}
