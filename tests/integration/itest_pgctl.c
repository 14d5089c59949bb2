/*
 * itest_pgctl.c — the keeper's PostgreSQL actions on real servers.
 *
 * Two nodes of its own (not the shared fixture): initdb a primary, clone
 * a standby, make it synchronous (a commit waits for it), detach it (the
 * primary loses its synchronous standby), re-attach, promote the standby
 * (new timeline), kill the old primary and bring it back with pg_rewind
 * as a standby of the new one, streaming what the new primary wrote.
 * Both servers run as the non-root user and are stopped by the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "keeper/pgctl.h"

static char base[256];
static pgctl_config n1, n2;
static char dir1[300], dir2[300];

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Run sql on a node; returns the first value of the first row (static
 * buffer) or NULL on error. */
static const char *query(const pgctl_config *cfg, const char *sql)
{
    static char value[256];
    char dsn[128];
    snprintf(dsn, sizeof dsn, "host=127.0.0.1 port=%d user=postgres dbname=postgres", cfg->port);
    PGconn *c = PQconnectdb(dsn);
    const char *out = NULL;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) {
            snprintf(value, sizeof value, "%s", PQgetvalue(r, 0, 0));
            out = value;
        } else if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            value[0] = '\0';
            out = value;
        }
        PQclear(r);
    }
    PQfinish(c);
    return out;
}

/* Poll until sql on cfg returns want (bounded). */
static bool wait_for(const pgctl_config *cfg, const char *sql, const char *want, int seconds)
{
    for (int i = 0; i < seconds * 10; i++) {
        const char *v = query(cfg, sql);
        if (v != NULL && strcmp(v, want) == 0)
            return true;
        usleep(100 * 1000);
    }
    return false;
}

static int setup(void **state)
{
    (void)state;
    snprintf(base, sizeof base, "/tmp/meridian-itest-pgctl-XXXXXX");
    if (mkdtemp(base) == NULL)
        return -1;
    if (geteuid() == 0 && system("true") == 0) {
        char cmd[512];
        snprintf(cmd, sizeof cmd, "chmod 755 %s", base);
        if (system(cmd) != 0)
            return -1;
    }
    snprintf(dir1, sizeof dir1, "%s/n1", base);
    snprintf(dir2, sizeof dir2, "%s/n2", base);
    n1 = (pgctl_config){.bindir = "/usr/lib/postgresql/15/bin", .basedir = dir1,
                        .node_name = "n1", .port = free_port()};
    n2 = (pgctl_config){.bindir = "/usr/lib/postgresql/15/bin", .basedir = dir2,
                        .node_name = "n2", .port = free_port()};
    return n1.port > 0 && n2.port > 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char err[512];
    pgctl_stop(&n1, "immediate", 20000, err, sizeof err);
    pgctl_stop(&n2, "immediate", 20000, err, sizeof err);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    return getenv("KEEP") || system(cmd) == 0 ? 0 : -1;
}

static void test_replicate_promote_rewind(void **state)
{
    (void)state;
    char err[1024];
    pgctl_state st;

    /* Primary. */
    if (pgctl_initdb(&n1, err, sizeof err) != 0 || pgctl_start(&n1, 60000, err, sizeof err) != 0)
        fail_msg("n1: %s", err);
    assert_int_equal(pgctl_read_state(&n1, &st), 0);
    assert_true(st.running);
    assert_false(st.in_recovery);
    assert_int_equal(st.timeline, 1);
    assert_non_null(query(&n1, "CREATE TABLE t (v int)"));

    /* Standby. */
    if (pgctl_basebackup(&n2, "127.0.0.1", n1.port, err, sizeof err) != 0 ||
        pgctl_start(&n2, 60000, err, sizeof err) != 0)
        fail_msg("n2: %s", err);
    assert_int_equal(pgctl_read_state(&n2, &st), 0);
    assert_true(st.running);
    assert_true(st.in_recovery);
    assert_non_null(strstr(st.upstream, "application_name=n2"));

    /* Synchronous: ANY 1 ("n2"); a commit is acknowledged by n2. */
    if (pgctl_set_sync_names(&n1, "ANY 1 (\"n2\")", err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(wait_for(&n1, "SELECT sync_state FROM pg_stat_replication WHERE application_name='n2'",
                         "quorum", 20));
    assert_non_null(query(&n1, "INSERT INTO t VALUES (1)"));
    assert_true(wait_for(&n2, "SELECT count(*) FROM t", "1", 20));
    assert_int_equal(pgctl_read_state(&n1, &st), 0);
    assert_string_equal(st.sync_names, "ANY 1 (\"n2\")");

    /* Detach: the standby stops streaming, the primary sees no standby. */
    if (pgctl_set_primary_conninfo(&n2, NULL, 0, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(wait_for(&n1, "SELECT count(*) FROM pg_stat_replication", "0", 20));
    assert_int_equal(pgctl_read_state(&n2, &st), 0);
    assert_string_equal(st.upstream, "");

    /* Re-attach without a restart (primary_conninfo is reloadable). */
    if (pgctl_set_primary_conninfo(&n2, "127.0.0.1", n1.port, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_true(wait_for(&n1, "SELECT count(*) FROM pg_stat_replication", "1", 20));
    assert_non_null(query(&n1, "INSERT INTO t VALUES (2)"));
    assert_true(wait_for(&n2, "SELECT count(*) FROM t", "2", 20));

    /* Promote n2: writable, on timeline 2. */
    if (pgctl_set_sync_names(&n1, "", err, sizeof err) != 0)
        fail_msg("%s", err);
    if (pgctl_promote(&n2, 30, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(pgctl_read_state(&n2, &st), 0);
    assert_false(st.in_recovery);
    assert_int_equal(st.timeline, 2);

    /* The old primary diverges (a local-only row), then is killed. */
    assert_non_null(query(&n1, "INSERT INTO t VALUES (99)"));
    assert_non_null(query(&n2, "INSERT INTO t VALUES (3)"));
    if (pgctl_stop(&n1, "immediate", 20000, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(pgctl_read_state(&n1, &st), 0);
    assert_false(st.running);

    /* Rewind n1 onto n2's timeline and start it as n2's standby. */
    if (pgctl_rewind(&n1, "127.0.0.1", n2.port, err, sizeof err) != 0)
        fail_msg("rewind: %s", err);
    /* The divergence point is read back from pg_rewind's log: it lies
     * before the row n1 wrote alone (which the rewind discarded). */
    uint64_t diverged = 0;
    assert_int_equal(pgctl_last_rewind_divergence(&n1, &diverged), 0);
    assert_true(diverged > 0);
    if (pgctl_start(&n1, 60000, err, sizeof err) != 0)
        fail_msg("n1 restart: %s", err);
    assert_int_equal(pgctl_read_state(&n1, &st), 0);
    assert_true(st.in_recovery);
    if (!wait_for(&n1, "SELECT string_agg(v::text, ',' ORDER BY v) FROM t", "1,2,3", 30)) {
        const char *got = query(&n1, "SELECT string_agg(v::text, ',' ORDER BY v) FROM t");
        fail_msg("rewound n1 has rows %s, want 1,2,3 (logs in %s)", got ? got : "(no answer)", dir1);
    }
    assert_true(wait_for(&n2, "SELECT count(*) FROM pg_stat_replication WHERE application_name='n1'",
                         "1", 20));
    assert_int_equal(pgctl_read_state(&n1, &st), 0);
    assert_int_equal(st.timeline, 2);
}

static void test_parse_lsn(void **state)
{
    (void)state;
    uint64_t lsn = 0;
    assert_int_equal(pgctl_parse_lsn("16/B374D848", &lsn), 0);
    assert_true(lsn == ((uint64_t)0x16 << 32 | 0xB374D848u));
    assert_int_equal(pgctl_parse_lsn("0/0", &lsn), 0);
    assert_true(lsn == 0);
    assert_int_equal(pgctl_parse_lsn("nonsense", &lsn), -1);
    assert_int_equal(pgctl_parse_lsn("1/2x", &lsn), -1);
    assert_int_equal(pgctl_parse_lsn(NULL, &lsn), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_lsn),
        cmocka_unit_test_setup_teardown(test_replicate_promote_rewind, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
