/*
 * itest_netem.c — the WAN emulator (meridian-netem) against a real TCP
 * echo server.
 *
 * The lab's inter-region links and the keeper's "cut off from etcd"
 * tests rely on three promises of meridian-netem, checked here through
 * the real binary (MERIDIAN_BIN_DIR/meridian-netem) and real sockets:
 *   - delay: a round trip through a link with a 40 ms one-way delay
 *     takes at least 80 ms (and not absurdly more), a delay change
 *     applies to new bytes, and 1 MiB crosses intact and in order even
 *     with jitter;
 *   - faults: "refuse" resets open and new connections, "blackhole"
 *     accepts but delivers nothing in either direction, and "pass"
 *     afterwards serves new connections (connections accepted during the
 *     black-hole are reset; frozen ones resume intact);
 *   - control: the JSON API answers the link states, applies bulk
 *     changes, and refuses bad requests with problem+json; SIGTERM exits 0.
 * The echo server runs on a thread of this process (poll loop, bounded
 * connections and buffers). The PostgreSQL fixture's environment is not
 * used.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <setjmp.h>
#include <cmocka.h>

#include "testlib.h"

#define ECHO_CONNS_MAX 64
#define ECHO_BUF_BYTES 65536
#define START_TIMEOUT_MS 15000
#define EXIT_TIMEOUT_MS 10000
#define DELAY_MS 40
#define LARGE_BYTES (1u << 20)
#define SILENCE_MS 1000      /* how long "nothing arrives" is watched */
#define RESET_WAIT_MS 2000   /* a reset must be seen within this */

/* ---- The echo server (its own thread; no cmocka calls there). */

typedef struct echo_conn {
    int fd;
    size_t len, off;
    unsigned char buf[ECHO_BUF_BYTES];
} echo_conn;

static struct {
    int listen_fd;
    int stop_fd;
    int port;
    pthread_t thread;
    bool running;
    echo_conn conns[ECHO_CONNS_MAX];
} echo;

static void *echo_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct pollfd pfd[ECHO_CONNS_MAX + 2];
        int map[ECHO_CONNS_MAX + 2];
        nfds_t nfds = 0;
        pfd[nfds] = (struct pollfd){.fd = echo.stop_fd, .events = POLLIN};
        map[nfds++] = -2;
        pfd[nfds] = (struct pollfd){.fd = echo.listen_fd, .events = POLLIN};
        map[nfds++] = -1;
        for (int i = 0; i < ECHO_CONNS_MAX; i++) {
            echo_conn *c = &echo.conns[i];
            if (c->fd < 0)
                continue;
            pfd[nfds] = (struct pollfd){.fd = c->fd, .events = c->len > c->off ? POLLOUT : POLLIN};
            map[nfds++] = i;
        }
        if (poll(pfd, nfds, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[0].revents != 0)
            break;
        for (nfds_t k = 1; k < nfds; k++) {
            if (pfd[k].revents == 0)
                continue;
            if (map[k] == -1) {
                int fd = accept4(echo.listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                    continue;
                int slot = -1;
                for (int i = 0; i < ECHO_CONNS_MAX && slot < 0; i++)
                    if (echo.conns[i].fd < 0)
                        slot = i;
                if (slot < 0) {
                    close(fd);
                    continue;
                }
                echo.conns[slot].fd = fd;
                echo.conns[slot].len = echo.conns[slot].off = 0;
                continue;
            }
            echo_conn *c = &echo.conns[map[k]];
            if (c->len > c->off) {
                ssize_t w = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
                if (w > 0) {
                    c->off += (size_t)w;
                    if (c->off == c->len)
                        c->off = c->len = 0;
                } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                    close(c->fd);
                    c->fd = -1;
                }
            } else {
                ssize_t r = recv(c->fd, c->buf, sizeof c->buf, 0);
                if (r > 0) {
                    c->len = (size_t)r;
                    c->off = 0;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    close(c->fd);
                    c->fd = -1;
                }
            }
        }
    }
    for (int i = 0; i < ECHO_CONNS_MAX; i++)
        if (echo.conns[i].fd >= 0) {
            close(echo.conns[i].fd);
            echo.conns[i].fd = -1;
        }
    return NULL;
}

static int echo_start(void)
{
    for (int i = 0; i < ECHO_CONNS_MAX; i++)
        echo.conns[i].fd = -1;
    echo.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    echo.stop_fd = eventfd(0, EFD_CLOEXEC);
    if (echo.listen_fd < 0 || echo.stop_fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(echo.listen_fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        listen(echo.listen_fd, 64) != 0 ||
        getsockname(echo.listen_fd, (struct sockaddr *)&a, &alen) != 0)
        return -1;
    echo.port = ntohs(a.sin_port);
    if (pthread_create(&echo.thread, NULL, echo_main, NULL) != 0)
        return -1;
    echo.running = true;
    return 0;
}

static void echo_stop(void)
{
    if (echo.running) {
        uint64_t one = 1;
        (void)!write(echo.stop_fd, &one, sizeof one);
        pthread_join(echo.thread, NULL);
        echo.running = false;
    }
    if (echo.listen_fd >= 0)
        close(echo.listen_fd);
    if (echo.stop_fd >= 0)
        close(echo.stop_fd);
    echo.listen_fd = echo.stop_fd = -1;
}

/* ---- The netem process. */

static struct {
    pid_t pid;
    int control_port;
    int echo_link_port; /* link "echo": 40 ms, no jitter */
    int fast_link_port; /* link "fast": no delay */
    char base[TL_URL_SIZE];
} ne;

/* Start meridian-netem and read its ports line. Returns 0 or -1. */
static int netem_start(void)
{
    const char *bin_dir = tl_env("MERIDIAN_BIN_DIR");
    char bin[PATH_MAX], link1[128], link2[128];
    snprintf(bin, sizeof bin, "%s/meridian-netem", bin_dir);
    snprintf(link1, sizeof link1, "echo=0:%d,delay_ms=%d,jitter_ms=0", echo.port, DELAY_MS);
    snprintf(link2, sizeof link2, "fast=0:%d,delay_ms=0,jitter_ms=0", echo.port);
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 1);
        execl(bin, bin, "--control", "127.0.0.1:0", "--link", link1, "--link", link2,
              "--log-level", "info", (char *)NULL);
        fprintf(stderr, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    ne.pid = pid;
    char line[1024];
    size_t len = 0;
    int64_t deadline = tl_now_ms() + START_TIMEOUT_MS;
    while (len < sizeof line - 1 && memchr(line, '\n', len) == NULL) {
        int left = (int)(deadline - tl_now_ms());
        struct pollfd pfd = {.fd = p[0], .events = POLLIN};
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        ssize_t r = read(p[0], line + len, sizeof line - 1 - len);
        if (r <= 0)
            break;
        len += (size_t)r;
    }
    close(p[0]);
    line[len] = '\0';
    json_error_t jerr;
    json_t *j = json_loads(line, JSON_DISABLE_EOF_CHECK, &jerr);
    int64_t control = 0, l1 = 0, l2 = 0;
    json_t *links = json_object_get(j, "links");
    int rc = -1;
    if (tl_field_i64(j, "control", &control) == 0 && tl_field_i64(links, "echo", &l1) == 0 &&
        tl_field_i64(links, "fast", &l2) == 0 && control > 0 && l1 > 0 && l2 > 0) {
        ne.control_port = (int)control;
        ne.echo_link_port = (int)l1;
        ne.fast_link_port = (int)l2;
        snprintf(ne.base, sizeof ne.base, "http://127.0.0.1:%d", ne.control_port);
        rc = 0;
    } else {
        fprintf(stderr, "meridian-netem did not print its ports line; got '%s'\n", line);
    }
    json_decref(j);
    return rc;
}

/* Wait for the netem process to exit; returns its exit code, 128+signal,
 * or -1 on timeout (then it is killed). */
static int netem_wait(int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(ne.pid, &st, WNOHANG);
        if (r == ne.pid) {
            ne.pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (tl_now_ms() >= deadline) {
            kill(ne.pid, SIGKILL);
            waitpid(ne.pid, &st, 0);
            ne.pid = 0;
            return -1;
        }
        tl_sleep_ms(20);
    }
}

/* ---- Sockets. */

/* A connected, non-blocking socket to 127.0.0.1:port, or -1. */
static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* Send out[0..len) and read len bytes back into in, both at once.
 * Returns 0, -1 (error or EOF) or -2 (timeout). */
static int exchange(int fd, const unsigned char *out, size_t len, unsigned char *in,
                    int timeout_ms)
{
    size_t sent = 0, got = 0;
    int64_t deadline = tl_now_ms() + timeout_ms;
    while (got < len) {
        int left = (int)(deadline - tl_now_ms());
        if (left <= 0)
            return -2;
        struct pollfd pfd = {.fd = fd, .events = POLLIN | (sent < len ? POLLOUT : 0)};
        if (poll(&pfd, 1, left) < 0)
            return -1;
        if (pfd.revents & POLLOUT) {
            ssize_t w = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN)
                return -1;
        }
        if (pfd.revents & (POLLIN | POLLERR | POLLHUP)) {
            ssize_t r = recv(fd, in + got, len - got, 0);
            if (r > 0)
                got += (size_t)r;
            else if (r == 0 || errno != EAGAIN)
                return -1;
        }
    }
    return 0;
}

/* Round trip of a small message; returns the time in ms, or -1. */
static int64_t rtt_ms(int fd)
{
    const unsigned char msg[] = "ping-1234";
    unsigned char back[sizeof msg];
    int64_t t0 = tl_now_ms();
    if (exchange(fd, msg, sizeof msg, back, 5000) != 0 || memcmp(msg, back, sizeof msg) != 0)
        return -1;
    return tl_now_ms() - t0;
}

enum { WAIT_SILENT = 0, WAIT_DATA = 1, WAIT_CLOSED = 2, WAIT_ERROR = 3 };

/* Watch fd for timeout_ms: WAIT_SILENT when nothing came, WAIT_DATA when
 * bytes arrived, WAIT_CLOSED on EOF or ECONNRESET. */
static int watch_fd(int fd, int timeout_ms, int *err_out)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r = poll(&pfd, 1, timeout_ms);
    if (r == 0)
        return WAIT_SILENT;
    if (r < 0)
        return WAIT_ERROR;
    unsigned char b[64];
    ssize_t n = recv(fd, b, sizeof b, 0);
    if (n > 0)
        return WAIT_DATA;
    if (err_out != NULL)
        *err_out = n == 0 ? 0 : errno;
    return n == 0 || errno == ECONNRESET ? WAIT_CLOSED : WAIT_ERROR;
}

/* ---- Control API. */

static int ctl(const char *method, const char *path, const char *body, tl_resp *r)
{
    char url[256];
    snprintf(url, sizeof url, "%s%s", ne.base, path);
    return tl_http(method, url, NULL, body, r);
}

static void set_link(const char *name, const char *body, const char *want_mode)
{
    char path[128];
    snprintf(path, sizeof path, "/links/%s", name);
    tl_resp r;
    ctl("POST", path, body, &r);
    TL_EXPECT_STATUS(&r, 200);
    assert_string_equal(tl_field_str(r.json, "name"), name);
    if (want_mode != NULL)
        assert_string_equal(tl_field_str(r.json, "mode"), want_mode);
    tl_resp_release(&r);
}

static int64_t link_stat(const char *name, const char *field)
{
    char path[128];
    snprintf(path, sizeof path, "/links/%s", name);
    tl_resp r;
    ctl("GET", path, NULL, &r);
    TL_EXPECT_STATUS(&r, 200);
    int64_t v = -1;
    assert_int_equal(tl_field_i64(r.json, field, &v), 0);
    tl_resp_release(&r);
    return v;
}

/* Counters are updated by the data path just after each write, so a
 * client can see its bytes a moment before the counter does: poll. */
static bool stat_reaches(const char *name, const char *field, int64_t min, int timeout_ms)
{
    int64_t deadline = tl_now_ms() + timeout_ms;
    for (;;) {
        if (link_stat(name, field) >= min)
            return true;
        if (tl_now_ms() >= deadline)
            return false;
        tl_sleep_ms(20);
    }
}

/* Every test starts from the configured state, whatever the one before
 * left behind when it failed. */
static int reset_links(void **state)
{
    (void)state;
    tl_resp r;
    int rc = ctl("POST", "/links", "{\"mode\":\"pass\"}", &r);
    bool ok = rc == 0 && r.status == 200;
    tl_resp_release(&r);
    rc = ctl("POST", "/links/echo", "{\"delay_ms\":40,\"jitter_ms\":0}", &r);
    ok = ok && rc == 0 && r.status == 200;
    tl_resp_release(&r);
    rc = ctl("POST", "/links/fast", "{\"delay_ms\":0,\"jitter_ms\":0}", &r);
    ok = ok && rc == 0 && r.status == 200;
    tl_resp_release(&r);
    return ok ? 0 : -1;
}

/* ---- Tests. */

static void test_links_and_health(void **state)
{
    (void)state;
    tl_resp r;
    ctl("GET", "/healthz", NULL, &r);
    TL_EXPECT_STATUS(&r, 200);
    tl_resp_release(&r);

    ctl("GET", "/links", NULL, &r);
    TL_EXPECT_STATUS(&r, 200);
    assert_true(json_is_array(r.json));
    assert_int_equal(json_array_size(r.json), 2);
    json_t *l0 = json_array_get(r.json, 0);
    assert_string_equal(tl_field_str(l0, "name"), "echo");
    assert_string_equal(tl_field_str(l0, "mode"), "pass");
    TL_EXPECT_I64(l0, "listen_port", ne.echo_link_port);
    TL_EXPECT_I64(l0, "target_port", echo.port);
    TL_EXPECT_I64(l0, "delay_ms", DELAY_MS);
    TL_EXPECT_I64(l0, "jitter_ms", 0);
    TL_EXPECT_I64(l0, "connections", 0);
    int64_t v;
    assert_int_equal(tl_field_i64(l0, "bytes_up", &v), 0);
    assert_int_equal(tl_field_i64(l0, "bytes_down", &v), 0);
    json_t *l1 = json_array_get(r.json, 1);
    assert_string_equal(tl_field_str(l1, "name"), "fast");
    TL_EXPECT_I64(l1, "listen_port", ne.fast_link_port);
    TL_EXPECT_I64(l1, "delay_ms", 0);
    tl_resp_release(&r);
}

static void test_delay_round_trip(void **state)
{
    (void)state;
    int fd = dial(ne.echo_link_port);
    assert_true(fd >= 0);
    for (int i = 0; i < 3; i++) {
        int64_t ms = rtt_ms(fd);
        printf("round trip through a %d ms link: %lld ms\n", DELAY_MS, (long long)ms);
        assert_true(ms >= 2 * DELAY_MS);
        assert_true(ms < 400);
    }
    assert_int_equal(link_stat("echo", "connections"), 1);
    close(fd);

    int fast = dial(ne.fast_link_port);
    assert_true(fast >= 0);
    int64_t ms = rtt_ms(fast);
    printf("round trip through a 0 ms link: %lld ms\n", (long long)ms);
    assert_true(ms >= 0 && ms < 2 * DELAY_MS - 10);
    close(fast);
}

static void test_delay_change(void **state)
{
    (void)state;
    set_link("echo", "{\"delay_ms\":0}", "pass");
    int fd = dial(ne.echo_link_port);
    assert_true(fd >= 0);
    int64_t ms = rtt_ms(fd);
    printf("after delay_ms=0: %lld ms\n", (long long)ms);
    assert_true(ms >= 0 && ms < 2 * DELAY_MS - 10);
    set_link("echo", "{\"delay_ms\":60}", "pass");
    ms = rtt_ms(fd); /* the same connection: new bytes get the new delay */
    printf("after delay_ms=60: %lld ms\n", (long long)ms);
    assert_true(ms >= 120 && ms < 500);
    set_link("echo", "{\"delay_ms\":40}", "pass");
    close(fd);
}

static void test_large_transfer_in_order_with_jitter(void **state)
{
    (void)state;
    set_link("echo", "{\"jitter_ms\":30}", "pass");
    unsigned char *out = malloc(LARGE_BYTES), *in = malloc(LARGE_BYTES);
    assert_non_null(out);
    assert_non_null(in);
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < LARGE_BYTES; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (unsigned char)x;
    }
    memset(in, 0, LARGE_BYTES);
    int64_t up0 = link_stat("echo", "bytes_up"), down0 = link_stat("echo", "bytes_down");
    int fd = dial(ne.echo_link_port);
    assert_true(fd >= 0);
    int64_t t0 = tl_now_ms();
    assert_int_equal(exchange(fd, out, LARGE_BYTES, in, 30000), 0);
    printf("1 MiB echoed through the link (jitter 30 ms) in %lld ms\n",
           (long long)(tl_now_ms() - t0));
    assert_memory_equal(out, in, LARGE_BYTES);
    close(fd);
    assert_true(stat_reaches("echo", "bytes_up", up0 + (int64_t)LARGE_BYTES, 2000));
    assert_true(stat_reaches("echo", "bytes_down", down0 + (int64_t)LARGE_BYTES, 2000));
    free(out);
    free(in);
    set_link("echo", "{\"jitter_ms\":0}", "pass");
}

static void test_refuse(void **state)
{
    (void)state;
    int old = dial(ne.echo_link_port);
    assert_true(old >= 0);
    assert_true(rtt_ms(old) >= 0);

    set_link("echo", "{\"mode\":\"refuse\"}", "refuse");
    int err = -1;
    int64_t t0 = tl_now_ms();
    assert_int_equal(watch_fd(old, RESET_WAIT_MS, &err), WAIT_CLOSED);
    printf("open connection after refuse: %s after %lld ms\n", err ? strerror(err) : "EOF",
           (long long)(tl_now_ms() - t0));
    assert_int_equal(err, ECONNRESET);
    close(old);

    int fd = dial(ne.echo_link_port); /* accepted by the kernel, then reset */
    if (fd >= 0) {
        t0 = tl_now_ms();
        err = -1;
        assert_int_equal(watch_fd(fd, RESET_WAIT_MS, &err), WAIT_CLOSED);
        printf("new connection during refuse: %s after %lld ms\n", err ? strerror(err) : "EOF",
               (long long)(tl_now_ms() - t0));
        close(fd);
    }
    assert_int_equal(link_stat("echo", "connections"), 0);

    set_link("echo", "{\"mode\":\"pass\"}", "pass");
    fd = dial(ne.echo_link_port);
    assert_true(fd >= 0);
    assert_true(rtt_ms(fd) >= 2 * DELAY_MS);
    close(fd);
}

static void test_blackhole(void **state)
{
    (void)state;
    int pre = dial(ne.echo_link_port);
    assert_true(pre >= 0);
    assert_true(rtt_ms(pre) >= 0);

    set_link("echo", "{\"mode\":\"blackhole\"}", "blackhole");
    int during = dial(ne.echo_link_port);
    assert_true(during >= 0); /* accepted... */
    const char msg[] = "into the void";
    assert_int_equal(send(during, msg, sizeof msg, MSG_NOSIGNAL), (ssize_t)sizeof msg);
    const char frozen[] = "frozen-bytes";
    assert_int_equal(send(pre, frozen, sizeof frozen, MSG_NOSIGNAL), (ssize_t)sizeof frozen);
    /* ...and silent, both the new and the open connection. */
    assert_int_equal(watch_fd(during, SILENCE_MS, NULL), WAIT_SILENT);
    assert_int_equal(watch_fd(pre, 10, NULL), WAIT_SILENT);
    assert_int_equal(link_stat("echo", "connections"), 2);

    set_link("echo", "{\"mode\":\"pass\"}", "pass");
    /* Accepted during the black-hole: reset when the link heals. */
    int err = -1;
    assert_int_equal(watch_fd(during, RESET_WAIT_MS, &err), WAIT_CLOSED);
    close(during);
    /* Frozen: resumes intact (what TCP does after a short partition). */
    unsigned char back[sizeof frozen];
    size_t got = 0;
    int64_t deadline = tl_now_ms() + RESET_WAIT_MS;
    while (got < sizeof back && tl_now_ms() < deadline) {
        struct pollfd pfd = {.fd = pre, .events = POLLIN};
        if (poll(&pfd, 1, 100) == 1) {
            ssize_t r = recv(pre, back + got, sizeof back - got, 0);
            assert_true(r > 0);
            got += (size_t)r;
        }
    }
    assert_int_equal(got, sizeof frozen);
    assert_memory_equal(back, frozen, sizeof frozen);
    assert_true(rtt_ms(pre) >= 2 * DELAY_MS);
    close(pre);

    int fd = dial(ne.echo_link_port);
    assert_true(fd >= 0);
    assert_true(rtt_ms(fd) >= 2 * DELAY_MS);
    close(fd);
}

static void test_bulk_change(void **state)
{
    (void)state;
    tl_resp r;
    ctl("POST", "/links", "{\"names\":[\"fast\"],\"mode\":\"blackhole\"}", &r);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(json_array_size(r.json), 1);
    assert_string_equal(tl_field_str(json_array_get(r.json, 0), "mode"), "blackhole");
    tl_resp_release(&r);
    assert_int_equal(link_stat("echo", "delay_ms"), DELAY_MS);

    int fd = dial(ne.fast_link_port);
    assert_true(fd >= 0);
    assert_int_equal(send(fd, "x", 1, MSG_NOSIGNAL), 1);
    assert_int_equal(watch_fd(fd, 300, NULL), WAIT_SILENT);
    close(fd);
    fd = dial(ne.echo_link_port); /* the other link still passes */
    assert_true(fd >= 0);
    assert_true(rtt_ms(fd) >= 2 * DELAY_MS);
    close(fd);

    ctl("POST", "/links", "{\"mode\":\"pass\"}", &r);
    TL_EXPECT_STATUS(&r, 200);
    assert_int_equal(json_array_size(r.json), 2);
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(tl_field_str(json_array_get(r.json, i), "mode"), "pass");
    tl_resp_release(&r);
}

static void test_control_errors(void **state)
{
    (void)state;
    tl_resp r;
    ctl("POST", "/links/nope", "{\"mode\":\"pass\"}", &r);
    TL_EXPECT_PROBLEM(&r, 404, "unknown_link");
    tl_resp_release(&r);
    ctl("GET", "/links/nope", NULL, &r);
    TL_EXPECT_PROBLEM(&r, 404, "unknown_link");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{\"mode\":\"foo\"}", &r);
    TL_EXPECT_PROBLEM(&r, 400, "invalid_mode");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{\"delay_ms\":-1}", &r);
    TL_EXPECT_PROBLEM(&r, 400, "invalid_field");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{\"delay_ms\":\"40\"}", &r);
    TL_EXPECT_PROBLEM(&r, 400, "invalid_field");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{\"delay\":40}", &r);
    TL_EXPECT_PROBLEM(&r, 400, "unknown_field");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{}", &r);
    TL_EXPECT_PROBLEM(&r, 400, "invalid_field");
    tl_resp_release(&r);
    ctl("POST", "/links/echo", "{\"mode\":", &r);
    TL_EXPECT_PROBLEM(&r, 400, "invalid_json");
    tl_resp_release(&r);
    ctl("POST", "/links", "{\"names\":[\"echo\",\"nope\"],\"mode\":\"refuse\"}", &r);
    TL_EXPECT_PROBLEM(&r, 404, "unknown_link");
    tl_resp_release(&r);
    ctl("DELETE", "/links/echo", NULL, &r);
    TL_EXPECT_PROBLEM(&r, 405, "method_not_allowed");
    tl_resp_release(&r);
    ctl("GET", "/nothing", NULL, &r);
    TL_EXPECT_PROBLEM(&r, 404, "not_found");
    tl_resp_release(&r);
    /* Nothing of the above changed a link. */
    ctl("GET", "/links", NULL, &r);
    TL_EXPECT_STATUS(&r, 200);
    for (size_t i = 0; i < json_array_size(r.json); i++)
        assert_string_equal(tl_field_str(json_array_get(r.json, i), "mode"), "pass");
    TL_EXPECT_I64(json_array_get(r.json, 0), "delay_ms", DELAY_MS);
    tl_resp_release(&r);
}

static void test_sigterm_exits_0(void **state)
{
    (void)state;
    int fd = dial(ne.echo_link_port); /* an open connection does not hold it up */
    assert_true(fd >= 0);
    assert_true(rtt_ms(fd) >= 0);
    assert_int_equal(kill(ne.pid, SIGTERM), 0);
    assert_int_equal(netem_wait(EXIT_TIMEOUT_MS), 0);
    assert_int_equal(watch_fd(fd, RESET_WAIT_MS, NULL), WAIT_CLOSED);
    close(fd);
}

static int setup(void **state)
{
    (void)state;
    tl_init();
    if (echo_start() != 0) {
        fprintf(stderr, "cannot start the echo server: %s\n", strerror(errno));
        return -1;
    }
    return netem_start();
}

static int teardown(void **state)
{
    (void)state;
    if (ne.pid > 0) {
        kill(ne.pid, SIGTERM);
        (void)netem_wait(EXIT_TIMEOUT_MS);
    }
    echo_stop();
    tl_shutdown();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_links_and_health, reset_links),
        cmocka_unit_test_setup(test_delay_round_trip, reset_links),
        cmocka_unit_test_setup(test_delay_change, reset_links),
        cmocka_unit_test_setup(test_large_transfer_in_order_with_jitter, reset_links),
        cmocka_unit_test_setup(test_refuse, reset_links),
        cmocka_unit_test_setup(test_blackhole, reset_links),
        cmocka_unit_test_setup(test_bulk_change, reset_links),
        cmocka_unit_test_setup(test_control_errors, reset_links),
        cmocka_unit_test_setup(test_sigterm_exits_0, reset_links),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
