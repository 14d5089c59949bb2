/*
 * netem.c — the WAN emulator's data path (epoll) and control API (MHD).
 *
 * Data path. One thread, one epoll set, level-triggered, non-blocking
 * sockets. Every accepted connection gets a connection to its link's
 * target; each direction has a FIFO of chunks (one read(2) each) stamped
 * with a release time = now + delay + uniform jitter in [-jitter,
 * +jitter], raised to the previous chunk's release time so bytes are
 * never reordered. A chunk is written once its time has come; the
 * earliest pending release time is the epoll_wait timeout. A direction
 * holding NETEM_DIR_QUEUE_BYTES_MAX stops reading its source (TCP
 * backpressure reaches the sender), and so does every connection while
 * all queues together hold NETEM_QUEUED_BYTES_TOTAL_MAX. A FIN or a
 * reset read from one side is queued like data, so it reaches the other
 * side after the bytes sent before it, with the same delay.
 *
 * Faults, as seen by the peers:
 *   refuse     every connection of the link is reset (SO_LINGER 0 +
 *              close) on both sides, and new ones are accepted and reset
 *              at once: connect() succeeds, the first read gets
 *              ECONNRESET.
 *   blackhole  new connections are accepted and nothing more: no target
 *              connection, nothing read, nothing sent ("orphans").
 *              Connections open before are frozen: nothing is read or
 *              written on either side and chunks in flight are held, so
 *              both peers see a silent network; when a peer gives up
 *              (reset or close) during the freeze, its side is closed
 *              and the other side is reset when the link heals.
 *   back to pass: orphans are reset (their SYN never "got through");
 *              frozen connections resume where they stopped — exactly
 *              what TCP does when a partition heals before the peers'
 *              timeouts — since nothing was dropped, the streams stay
 *              intact.
 *
 * Memory safety of the event loop: one epoll batch may hold events for
 * both sockets of a connection, and handling the first may end the
 * connection. Ended connections therefore go to a graveyard (sockets
 * closed, memory kept, marked closed) and are freed after the batch.
 *
 * Control. libmicrohttpd's own thread serves the JSON API. It never
 * touches a socket of the data path: it writes the links' desired
 * settings under n->mu, bumps a generation counter, wakes the loop
 * through an eventfd and waits (at most NETEM_APPLY_WAIT_MS) until the
 * loop has applied that generation — so a 200 answer means the fault is
 * in force, and a test can rely on it.
 */
#include "netem/netem.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/mrd_assert.h"

#define COMP "netem"
#define EPOLL_EVENTS_MAX 256
#define ACCEPTS_PER_EVENT_MAX 64
#define READS_PER_EVENT_MAX 16
#define LISTEN_BACKLOG 1024
#define WARN_INTERVAL_US 1000000
#define EVENTS_UNREGISTERED UINT32_MAX
#define PROBLEM_TYPE_PREFIX "https://meridian.dev/problems/"

/* ---- Data structures (owned by the data path unless noted). */

enum watch_kind { W_LISTEN, W_CONN, W_WAKE, W_STOP };

/* What an epoll event points to. */
typedef struct watch {
    enum watch_kind kind;
    void *obj;
    int side;
} watch;

enum chunk_kind { CHUNK_DATA, CHUNK_EOF, CHUNK_RST };

typedef struct chunk {
    struct chunk *next;
    int64_t release_us; /* monotonic */
    uint32_t len_bytes;
    uint32_t off_bytes; /* already written */
    enum chunk_kind kind;
    unsigned char data[];
} chunk;

enum { SIDE_CLIENT = 0, SIDE_TARGET = 1 };

/* dir[s] of a connection carries what is read from side s to side 1-s:
 * dir[SIDE_CLIENT] is "up", dir[SIDE_TARGET] is "down". */
typedef struct direction {
    chunk *head, *tail;
    size_t queued_bytes;
    int64_t last_release_us;
    bool read_done;  /* source gave EOF or failed: nothing more is read */
    bool write_done; /* nothing more will be written to the destination */
    bool blocked;    /* destination's send buffer full: wait for EPOLLOUT */
} direction;

struct link_state;

typedef struct conn {
    struct conn *prev, *next;               /* link's list; graveyard uses next */
    struct conn *active_prev, *active_next; /* connections with queued chunks */
    struct link_state *link;
    int fd[2];
    watch w[2];
    uint32_t events[2]; /* registered interest, EVENTS_UNREGISTERED if none */
    direction dir[2];
    uint64_t id;
    bool active;
    bool connecting; /* target connect in progress */
    bool held;       /* frozen by blackhole */
    bool orphan;     /* accepted during blackhole: never had a target */
    bool broken;     /* a side went away while frozen: reset the rest on heal */
    bool abort;      /* reset both sides at the next settle */
    bool closed;     /* in the graveyard */
} conn;

typedef struct link_settings {
    netem_mode mode;
    int delay_ms;
    int jitter_ms;
} link_settings;

typedef struct link_state {
    char name[NETEM_NAME_BYTES_MAX + 1];
    int listen_fd;
    int listen_port;
    int target_port;
    watch w;
    link_settings applied; /* written by the data path under mu */
    link_settings desired; /* under mu */
    conn *conns;
    size_t conns_count; /* data path */
    int64_t last_warn_us;
    atomic_uint_fast64_t stat_conns;
    atomic_uint_fast64_t stat_bytes_up;
    atomic_uint_fast64_t stat_bytes_down;
    atomic_uint_fast64_t stat_accepted;
    atomic_uint_fast64_t stat_resets;
} link_state;

/* The one state struct of the process. */
struct netem {
    link_state links[NETEM_LINKS_MAX];
    size_t links_count;
    int control_port;
    struct MHD_Daemon *mhd;

    int epfd;
    int wake_fd;
    watch wake_w, stop_w;

    /* Shared with the control thread. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t desired_gen;
    uint64_t applied_gen;
    bool stopping;

    /* Data path only. */
    conn *active;
    conn *graveyard;
    size_t conns_total;
    size_t queued_total_bytes;
    bool throttled;
    bool rescan;
    bool ran;
    uint64_t rng;
    uint64_t next_conn_id;
    unsigned char buf[NETEM_READ_CHUNK_BYTES];
};

/* ---- Small helpers. */

static uint64_t rng_next(netem *n)
{
    /* xorshift64*: jitter needs spread, not secrecy. */
    uint64_t x = n->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    n->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void fmt_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fmt_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

/* Close fd so that the peer gets a reset (RST) instead of a FIN. */
static void close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void set_nodelay(int fd)
{
    int one = 1;
    /* Nagle would add its own delay on top of the configured one. */
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static const char *const mode_names[] = {"pass", "refuse", "blackhole"};

const char *netem_mode_name(netem_mode mode)
{
    mrd_assert(mode >= NETEM_MODE_PASS && mode <= NETEM_MODE_BLACKHOLE);
    return mode_names[mode];
}

int netem_mode_parse(const char *s, netem_mode *out)
{
    if (s == NULL || out == NULL)
        return -1;
    for (int i = NETEM_MODE_PASS; i <= NETEM_MODE_BLACKHOLE; i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (netem_mode)i;
            return 0;
        }
    }
    return -1;
}

/* ---- Configuration. */

void netem_config_init(netem_config *cfg)
{
    mrd_assert(cfg != NULL);
    memset(cfg, 0, sizeof *cfg);
}

static bool name_valid(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > NETEM_NAME_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
            return false;
    }
    return true;
}

/* Decimal integer in [min, max] from s[0..len). */
static int parse_int_n(const char *s, size_t len, long min, long max, long *out)
{
    if (len == 0 || len > 12)
        return -1;
    char tmp[16];
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    char *end = NULL;
    errno = 0;
    long v = strtol(tmp, &end, 10);
    if (errno != 0 || end == tmp || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

int netem_link_spec_parse(const char *text, netem_link_spec *out, char *err, size_t err_size)
{
    mrd_assert(text != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    out->delay_ms = NETEM_DELAY_MS_DEFAULT;
    out->jitter_ms = NETEM_JITTER_MS_DEFAULT;
    out->mode = NETEM_MODE_PASS;

    const char *eq = strchr(text, '=');
    if (eq == NULL || eq == text || (size_t)(eq - text) > NETEM_NAME_BYTES_MAX) {
        fmt_err(err, err_size,
                "link '%s': expected NAME=LISTEN_PORT:TARGET_PORT[,delay_ms=N,jitter_ms=N,mode=M] "
                "with a name of 1 to %d characters",
                text, NETEM_NAME_BYTES_MAX);
        return -1;
    }
    memcpy(out->name, text, (size_t)(eq - text));
    out->name[eq - text] = '\0';
    if (!name_valid(out->name)) {
        fmt_err(err, err_size, "link '%s': the name may only use letters, digits, '_', '-' and '.'",
                text);
        return -1;
    }
    const char *p = eq + 1;
    const char *colon = strchr(p, ':');
    if (colon == NULL) {
        fmt_err(err, err_size, "link '%s': expected LISTEN_PORT:TARGET_PORT after '='", text);
        return -1;
    }
    const char *comma = strchr(colon, ',');
    const char *tend = comma != NULL ? comma : colon + strlen(colon);
    long lp, tp;
    if (parse_int_n(p, (size_t)(colon - p), 0, 65535, &lp) != 0 ||
        parse_int_n(colon + 1, (size_t)(tend - colon - 1), 1, 65535, &tp) != 0) {
        fmt_err(err, err_size,
                "link '%s': ports must be integers (listen 0..65535, 0 = pick; target 1..65535)",
                text);
        return -1;
    }
    out->listen_port = (int)lp;
    out->target_port = (int)tp;

    p = comma;
    while (p != NULL) {
        p++; /* past ',' */
        const char *next = strchr(p, ',');
        size_t len = next != NULL ? (size_t)(next - p) : strlen(p);
        const char *keq = memchr(p, '=', len);
        if (keq == NULL) {
            fmt_err(err, err_size, "link '%s': option '%.*s' is not KEY=VALUE", text, (int)len, p);
            return -1;
        }
        size_t klen = (size_t)(keq - p);
        const char *v = keq + 1;
        size_t vlen = len - klen - 1;
        long num;
        if (klen == 8 && strncmp(p, "delay_ms", 8) == 0) {
            if (parse_int_n(v, vlen, 0, NETEM_DELAY_MS_MAX, &num) != 0) {
                fmt_err(err, err_size, "link '%s': delay_ms must be an integer in 0..%d", text,
                        NETEM_DELAY_MS_MAX);
                return -1;
            }
            out->delay_ms = (int)num;
        } else if (klen == 9 && strncmp(p, "jitter_ms", 9) == 0) {
            if (parse_int_n(v, vlen, 0, NETEM_JITTER_MS_MAX, &num) != 0) {
                fmt_err(err, err_size, "link '%s': jitter_ms must be an integer in 0..%d", text,
                        NETEM_JITTER_MS_MAX);
                return -1;
            }
            out->jitter_ms = (int)num;
        } else if (klen == 4 && strncmp(p, "mode", 4) == 0) {
            char m[16];
            if (vlen >= sizeof m) {
                fmt_err(err, err_size, "link '%s': mode must be pass, refuse or blackhole", text);
                return -1;
            }
            memcpy(m, v, vlen);
            m[vlen] = '\0';
            if (netem_mode_parse(m, &out->mode) != 0) {
                fmt_err(err, err_size, "link '%s': mode must be pass, refuse or blackhole", text);
                return -1;
            }
        } else {
            fmt_err(err, err_size,
                    "link '%s': unknown option '%.*s' (known: delay_ms, jitter_ms, mode)", text,
                    (int)klen, p);
            return -1;
        }
        p = next;
    }
    return 0;
}

int netem_config_add_link(netem_config *cfg, const netem_link_spec *link, char *err,
                          size_t err_size)
{
    mrd_assert(cfg != NULL && link != NULL);
    if (cfg->links_count >= NETEM_LINKS_MAX) {
        fmt_err(err, err_size, "too many links (at most %d per process)", NETEM_LINKS_MAX);
        return -1;
    }
    if (!name_valid(link->name)) {
        fmt_err(err, err_size,
                "link name '%s' is invalid: 1 to %d letters, digits, '_', '-' or '.'", link->name,
                NETEM_NAME_BYTES_MAX);
        return -1;
    }
    if (link->listen_port < 0 || link->listen_port > 65535 || link->target_port < 1 ||
        link->target_port > 65535) {
        fmt_err(err, err_size, "link '%s': ports out of range (listen 0..65535, target 1..65535)",
                link->name);
        return -1;
    }
    if (link->delay_ms < 0 || link->delay_ms > NETEM_DELAY_MS_MAX || link->jitter_ms < 0 ||
        link->jitter_ms > NETEM_JITTER_MS_MAX) {
        fmt_err(err, err_size, "link '%s': delay_ms and jitter_ms must be in 0..%d", link->name,
                NETEM_DELAY_MS_MAX);
        return -1;
    }
    if (link->mode < NETEM_MODE_PASS || link->mode > NETEM_MODE_BLACKHOLE) {
        fmt_err(err, err_size, "link '%s': invalid mode", link->name);
        return -1;
    }
    for (size_t i = 0; i < cfg->links_count; i++) {
        if (strcmp(cfg->links[i].name, link->name) == 0) {
            fmt_err(err, err_size, "link '%s' is defined twice; link names must be unique",
                    link->name);
            return -1;
        }
        if (link->listen_port != 0 && cfg->links[i].listen_port == link->listen_port) {
            fmt_err(err, err_size, "links '%s' and '%s' both listen on port %d",
                    cfg->links[i].name, link->name, link->listen_port);
            return -1;
        }
    }
    cfg->links[cfg->links_count++] = *link;
    return 0;
}

/* obj[key] as an int in [min, max] when present. Returns 0 (absent or
 * valid), or -1. */
static int json_opt_int(const json_t *obj, const char *key, long min, long max, int *out)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

int netem_config_load_file(const char *path, netem_config *cfg, char *err, size_t err_size)
{
    mrd_assert(path != NULL && cfg != NULL);
    int rc = -1;
    json_t *root = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fmt_err(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    json_error_t jerr;
    /* Bounded read: jansson stops at EOF; we refuse files past the cap. */
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size < 0 || (unsigned long)size > NETEM_CONFIG_FILE_BYTES_MAX) {
            fmt_err(err, err_size, "%s: larger than %u bytes", path, NETEM_CONFIG_FILE_BYTES_MAX);
            goto out;
        }
        rewind(f);
    }
    root = json_loadf(f, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        fmt_err(err, err_size, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
        goto out;
    }
    if (!json_is_object(root)) {
        fmt_err(err, err_size, "%s: the top level must be an object {\"control\":..,\"links\":[..]}",
                path);
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "control") != 0 && strcmp(key, "links") != 0) {
            fmt_err(err, err_size, "%s: unknown member '%s' (known: control, links)", path, key);
            goto out;
        }
    }
    if (json_opt_int(root, "control", 0, 65535, &cfg->control_port) != 0) {
        fmt_err(err, err_size, "%s: \"control\" must be a port number in 0..65535", path);
        goto out;
    }
    json_t *links = json_object_get(root, "links");
    if (links != NULL && !json_is_array(links)) {
        fmt_err(err, err_size, "%s: \"links\" must be an array", path);
        goto out;
    }
    size_t i;
    json_t *lj;
    json_array_foreach(links, i, lj) {
        if (!json_is_object(lj)) {
            fmt_err(err, err_size, "%s: links[%zu] must be an object", path, i);
            goto out;
        }
        json_object_foreach(lj, key, val) {
            if (strcmp(key, "name") != 0 && strcmp(key, "listen_port") != 0 &&
                strcmp(key, "target_port") != 0 && strcmp(key, "delay_ms") != 0 &&
                strcmp(key, "jitter_ms") != 0 && strcmp(key, "mode") != 0) {
                fmt_err(err, err_size,
                        "%s: links[%zu]: unknown member '%s' (known: name, listen_port, "
                        "target_port, delay_ms, jitter_ms, mode)",
                        path, i, key);
                goto out;
            }
        }
        netem_link_spec spec;
        memset(&spec, 0, sizeof spec);
        spec.delay_ms = NETEM_DELAY_MS_DEFAULT;
        spec.jitter_ms = NETEM_JITTER_MS_DEFAULT;
        spec.mode = NETEM_MODE_PASS;
        const char *name = json_string_value(json_object_get(lj, "name"));
        if (name == NULL || strlen(name) > NETEM_NAME_BYTES_MAX) {
            fmt_err(err, err_size, "%s: links[%zu]: \"name\" must be a string of 1 to %d characters",
                    path, i, NETEM_NAME_BYTES_MAX);
            goto out;
        }
        snprintf(spec.name, sizeof spec.name, "%s", name);
        spec.target_port = -1;
        if (json_opt_int(lj, "listen_port", 0, 65535, &spec.listen_port) != 0 ||
            json_opt_int(lj, "target_port", 1, 65535, &spec.target_port) != 0 ||
            spec.target_port < 0) {
            fmt_err(err, err_size,
                    "%s: links[%zu]: \"target_port\" (1..65535) is required; \"listen_port\" is "
                    "0..65535",
                    path, i);
            goto out;
        }
        if (json_opt_int(lj, "delay_ms", 0, NETEM_DELAY_MS_MAX, &spec.delay_ms) != 0 ||
            json_opt_int(lj, "jitter_ms", 0, NETEM_JITTER_MS_MAX, &spec.jitter_ms) != 0) {
            fmt_err(err, err_size, "%s: links[%zu]: delay_ms and jitter_ms must be integers in 0..%d",
                    path, i, NETEM_DELAY_MS_MAX);
            goto out;
        }
        const json_t *m = json_object_get(lj, "mode");
        if (m != NULL && netem_mode_parse(json_string_value(m), &spec.mode) != 0) {
            fmt_err(err, err_size, "%s: links[%zu]: mode must be pass, refuse or blackhole", path, i);
            goto out;
        }
        char sub[256];
        if (netem_config_add_link(cfg, &spec, sub, sizeof sub) != 0) {
            fmt_err(err, err_size, "%s: %s", path, sub);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
    fclose(f);
    return rc;
}

/* ---- Data path: connections. */

static void active_add(netem *n, conn *c)
{
    if (c->active)
        return;
    c->active = true;
    c->active_prev = NULL;
    c->active_next = n->active;
    if (n->active != NULL)
        n->active->active_prev = c;
    n->active = c;
}

static void active_remove(netem *n, conn *c)
{
    if (!c->active)
        return;
    c->active = false;
    if (c->active_prev != NULL)
        c->active_prev->active_next = c->active_next;
    else
        n->active = c->active_next;
    if (c->active_next != NULL)
        c->active_next->active_prev = c->active_prev;
    c->active_prev = c->active_next = NULL;
}

static void queue_pop(netem *n, direction *d)
{
    chunk *h = d->head;
    mrd_assert(h != NULL);
    d->head = h->next;
    if (d->head == NULL)
        d->tail = NULL;
    mrd_assert(d->queued_bytes >= h->len_bytes && n->queued_total_bytes >= h->len_bytes);
    d->queued_bytes -= h->len_bytes;
    n->queued_total_bytes -= h->len_bytes;
    if (n->throttled && n->queued_total_bytes < NETEM_QUEUED_BYTES_TOTAL_MAX) {
        n->throttled = false;
        n->rescan = true; /* other connections may read again */
    }
    free(h);
}

static void queue_drop(netem *n, direction *d)
{
    while (d->head != NULL)
        queue_pop(n, d);
}

/* Close one side's socket (a FIN or, with reset, an RST). */
static void side_close(conn *c, int side, bool reset)
{
    if (c->fd[side] < 0)
        return;
    if (reset)
        close_reset(c->fd[side]);
    else
        close(c->fd[side]); /* also leaves the epoll set */
    c->fd[side] = -1;
    c->events[side] = EVENTS_UNREGISTERED;
}

/* End c: close both sides, free its queues, unlink it and move it to
 * the graveyard (freed after the current epoll batch). */
static void conn_end(netem *n, conn *c, bool reset)
{
    if (c->closed)
        return;
    link_state *L = c->link;
    if (reset && (c->fd[0] >= 0 || c->fd[1] >= 0))
        atomic_fetch_add_explicit(&L->stat_resets, 1, memory_order_relaxed);
    side_close(c, SIDE_CLIENT, reset);
    side_close(c, SIDE_TARGET, reset);
    queue_drop(n, &c->dir[0]);
    queue_drop(n, &c->dir[1]);
    active_remove(n, c);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        L->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    mrd_assert(L->conns_count > 0 && n->conns_total > 0);
    L->conns_count--;
    n->conns_total--;
    atomic_fetch_sub_explicit(&L->stat_conns, 1, memory_order_relaxed);
    log_debug(COMP, "link %s: connection %llu %s", L->name, (unsigned long long)c->id,
              reset ? "reset" : "closed");
    c->closed = true;
    c->prev = NULL;
    c->next = n->graveyard;
    n->graveyard = c;
}

static void graveyard_free(netem *n)
{
    while (n->graveyard != NULL) {
        conn *c = n->graveyard;
        n->graveyard = c->next;
        free(c);
    }
}

/* Queue a chunk read from side s (data, or an EOF / reset marker) with
 * its release time. Returns 0, or -1 when out of memory (c is then
 * marked for abort). */
static int enqueue(netem *n, conn *c, int s, enum chunk_kind kind, const void *data, size_t len)
{
    direction *d = &c->dir[s];
    const link_settings *st = &c->link->applied;
    chunk *ch = malloc(sizeof *ch + len);
    if (ch == NULL) {
        log_error(COMP, "link %s: out of memory queueing %zu bytes; resetting the connection",
                  c->link->name, len);
        c->abort = true;
        return -1;
    }
    int64_t now = clock_mono_us();
    int64_t release = now + (int64_t)st->delay_ms * 1000;
    if (st->jitter_ms > 0) {
        uint64_t span = (uint64_t)st->jitter_ms * 2000u + 1u;
        release += (int64_t)(rng_next(n) % span) - (int64_t)st->jitter_ms * 1000;
    }
    if (release < now)
        release = now;
    if (release < d->last_release_us)
        release = d->last_release_us; /* never reorder within a direction */
    d->last_release_us = release;
    ch->next = NULL;
    ch->release_us = release;
    ch->len_bytes = (uint32_t)len;
    ch->off_bytes = 0;
    ch->kind = kind;
    if (len > 0)
        memcpy(ch->data, data, len);
    if (d->tail != NULL)
        d->tail->next = ch;
    else
        d->head = ch;
    d->tail = ch;
    d->queued_bytes += len;
    n->queued_total_bytes += len;
    if (n->queued_total_bytes >= NETEM_QUEUED_BYTES_TOTAL_MAX)
        n->throttled = true;
    active_add(n, c);
    return 0;
}

/* Side s failed (reset, timeout): queue a reset marker so the other side
 * is reset after the bytes sent before the failure, and stop everything
 * that goes to s. */
static void side_failed(netem *n, conn *c, int s, int err)
{
    log_debug(COMP, "link %s: connection %llu: %s side failed: %s", c->link->name,
              (unsigned long long)c->id, s == SIDE_CLIENT ? "client" : "target", strerror(err));
    c->dir[s].read_done = true;
    side_close(c, s, false);
    queue_drop(n, &c->dir[1 - s]);
    c->dir[1 - s].read_done = true;
    c->dir[1 - s].write_done = true;
    c->dir[1 - s].blocked = false;
    (void)enqueue(n, c, s, CHUNK_RST, NULL, 0);
}

/* Read what side s has, bounded by the queue limits. */
static void read_side(netem *n, conn *c, int s)
{
    direction *d = &c->dir[s];
    for (int i = 0; i < READS_PER_EVENT_MAX && !d->read_done && !c->abort; i++) {
        if (d->queued_bytes >= NETEM_DIR_QUEUE_BYTES_MAX || n->throttled)
            return;
        ssize_t r = recv(c->fd[s], n->buf, sizeof n->buf, 0);
        if (r > 0) {
            (void)enqueue(n, c, s, CHUNK_DATA, n->buf, (size_t)r);
        } else if (r == 0) {
            d->read_done = true;
            (void)enqueue(n, c, s, CHUNK_EOF, NULL, 0);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return;
        } else {
            side_failed(n, c, s, errno);
        }
    }
}

/* Write the chunks of dir[k] whose time has come to side 1-k. */
static void flush_dir(netem *n, conn *c, int k, int64_t now)
{
    direction *d = &c->dir[k];
    int dst = 1 - k;
    if (c->held || c->orphan || c->connecting || d->blocked || c->abort || c->closed)
        return;
    while (d->head != NULL && d->head->release_us <= now) {
        chunk *h = d->head;
        if (c->fd[dst] < 0) {
            queue_drop(n, d);
            return;
        }
        if (h->kind == CHUNK_RST) {
            c->abort = true;
            queue_pop(n, d);
            return;
        }
        if (h->kind == CHUNK_EOF) {
            (void)shutdown(c->fd[dst], SHUT_WR);
            d->write_done = true;
            queue_pop(n, d);
            continue;
        }
        ssize_t w = send(c->fd[dst], h->data + h->off_bytes, h->len_bytes - h->off_bytes,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            h->off_bytes += (uint32_t)w;
            atomic_fetch_add_explicit(k == SIDE_CLIENT ? &c->link->stat_bytes_up
                                                       : &c->link->stat_bytes_down,
                                      (uint_fast64_t)w, memory_order_relaxed);
            if (h->off_bytes == h->len_bytes)
                queue_pop(n, d);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            d->blocked = true;
            return;
        }
        /* The destination is gone: reset the whole connection. */
        log_debug(COMP, "link %s: connection %llu: write failed: %s", c->link->name,
                  (unsigned long long)c->id, w < 0 ? strerror(errno) : "0 bytes");
        c->abort = true;
        return;
    }
}

static int ep_set(netem *n, conn *c, int s, uint32_t ev)
{
    if (c->fd[s] < 0 || c->events[s] == ev)
        return 0;
    struct epoll_event e = {.events = ev, .data.ptr = &c->w[s]};
    int op = c->events[s] == EVENTS_UNREGISTERED ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (epoll_ctl(n->epfd, op, c->fd[s], &e) != 0) {
        log_error(COMP, "link %s: epoll_ctl failed: %s; resetting the connection", c->link->name,
                  strerror(errno));
        return -1;
    }
    c->events[s] = ev;
    return 0;
}

static uint32_t interest(const netem *n, const conn *c, int s)
{
    if (c->orphan)
        return EPOLLRDHUP; /* only notice the client giving up */
    if (c->held)
        return 0; /* errors and hang-ups are always reported */
    uint32_t ev = 0;
    const direction *d = &c->dir[s];
    bool target_ready = !(s == SIDE_TARGET && c->connecting);
    if (!d->read_done && target_ready && d->queued_bytes < NETEM_DIR_QUEUE_BYTES_MAX &&
        !n->throttled)
        ev |= EPOLLIN;
    if (!target_ready || c->dir[1 - s].blocked)
        ev |= EPOLLOUT;
    return ev;
}

/* Bring c to a consistent state after anything happened to it: reset it
 * when asked, close sides that are finished, end it when both are, and
 * register the right epoll interest. */
static void conn_settle(netem *n, conn *c)
{
    if (c->closed)
        return;
    if (c->abort) {
        conn_end(n, c, true);
        return;
    }
    if (!c->held && !c->orphan) {
        for (int s = 0; s < 2; s++) {
            /* Nothing more to read from s nor to write to it. */
            if (c->fd[s] >= 0 && c->dir[s].read_done && c->dir[1 - s].write_done &&
                c->dir[1 - s].head == NULL)
                side_close(c, s, false);
        }
    }
    if (c->fd[0] < 0 && c->fd[1] < 0) {
        conn_end(n, c, false);
        return;
    }
    for (int s = 0; s < 2; s++) {
        if (ep_set(n, c, s, interest(n, c, s)) != 0) {
            conn_end(n, c, true);
            return;
        }
    }
    if (c->dir[0].head == NULL && c->dir[1].head == NULL)
        active_remove(n, c);
}

/* An event on side s of c. */
static void conn_event(netem *n, conn *c, int s, uint32_t ev)
{
    if (c->orphan || c->held) {
        if (ev & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
            /* The peer gave up while the link is down: close its side;
             * the other side (if any) learns when the link heals. */
            side_close(c, s, false);
            c->broken = true;
        }
        return;
    }
    if (s == SIDE_TARGET && c->connecting) {
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(c->fd[s], SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            soerr = errno;
        if (soerr != 0) {
            log_info(COMP, "link %s: cannot connect to target 127.0.0.1:%d: %s; resetting the client",
                     c->link->name, c->link->target_port, strerror(soerr));
            c->abort = true;
            return;
        }
        c->connecting = false;
        return; /* the next loop turn flushes what the client already sent */
    }
    if (ev & EPOLLOUT) {
        c->dir[1 - s].blocked = false;
        flush_dir(n, c, 1 - s, clock_mono_us());
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        if (!c->dir[s].read_done) {
            read_side(n, c, s);
        } else if (ev & (EPOLLERR | EPOLLHUP)) {
            /* Already read to the end, and now the peer failed or is
             * fully gone while we still owe it bytes: nothing more can be
             * delivered to it. */
            c->abort = true;
        }
    }
}

static void warn_limited(link_state *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn_limited(link_state *L, const char *fmt, ...)
{
    int64_t now = clock_mono_us();
    if (now - L->last_warn_us < WARN_INTERVAL_US)
        return;
    L->last_warn_us = now;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_warn(COMP, "link %s: %s", L->name, msg);
}

/* Start the connection to L's target for client fd. Returns the new
 * connection (linked in), or NULL (fd is then reset). */
static conn *conn_open(netem *n, link_state *L, int fd)
{
    conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        warn_limited(L, "out of memory; resetting a new connection");
        close_reset(fd);
        return NULL;
    }
    c->link = L;
    c->id = ++n->next_conn_id;
    c->fd[SIDE_CLIENT] = fd;
    c->fd[SIDE_TARGET] = -1;
    for (int s = 0; s < 2; s++) {
        c->events[s] = EVENTS_UNREGISTERED;
        c->w[s] = (watch){.kind = W_CONN, .obj = c, .side = s};
    }
    set_nodelay(fd);
    if (L->applied.mode == NETEM_MODE_BLACKHOLE) {
        c->orphan = true;
    } else {
        int t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (t < 0) {
            warn_limited(L, "cannot create a socket: %s; resetting a new connection",
                         strerror(errno));
            close_reset(fd);
            free(c);
            return NULL;
        }
        set_nodelay(t);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)L->target_port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(t, (struct sockaddr *)&a, sizeof a) == 0) {
            c->connecting = false;
        } else if (errno == EINPROGRESS) {
            c->connecting = true;
        } else {
            warn_limited(L, "cannot connect to target 127.0.0.1:%d: %s; resetting the client",
                         L->target_port, strerror(errno));
            close(t);
            close_reset(fd);
            free(c);
            return NULL;
        }
        c->fd[SIDE_TARGET] = t;
    }
    c->next = L->conns;
    if (L->conns != NULL)
        L->conns->prev = c;
    L->conns = c;
    L->conns_count++;
    n->conns_total++;
    atomic_fetch_add_explicit(&L->stat_conns, 1, memory_order_relaxed);
    log_debug(COMP, "link %s: connection %llu accepted%s", L->name, (unsigned long long)c->id,
              c->orphan ? " (black-holed)" : "");
    return c;
}

static void accept_all(netem *n, link_state *L)
{
    for (int i = 0; i < ACCEPTS_PER_EVENT_MAX; i++) {
        int fd = accept4(L->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                warn_limited(L, "accept failed: %s", strerror(errno));
            return;
        }
        atomic_fetch_add_explicit(&L->stat_accepted, 1, memory_order_relaxed);
        if (L->applied.mode == NETEM_MODE_REFUSE) {
            close_reset(fd);
            atomic_fetch_add_explicit(&L->stat_resets, 1, memory_order_relaxed);
            continue;
        }
        if (L->conns_count >= NETEM_CONNS_PER_LINK_MAX || n->conns_total >= NETEM_CONNS_TOTAL_MAX) {
            warn_limited(L, "connection limit reached (%d per link, %d in all); resetting new "
                            "connections",
                         NETEM_CONNS_PER_LINK_MAX, NETEM_CONNS_TOTAL_MAX);
            close_reset(fd);
            atomic_fetch_add_explicit(&L->stat_resets, 1, memory_order_relaxed);
            continue;
        }
        conn *c = conn_open(n, L, fd);
        if (c != NULL)
            conn_settle(n, c);
    }
}

/* Apply a mode change of L to its open connections. */
static void mode_transition(netem *n, link_state *L, netem_mode to)
{
    conn *next;
    for (conn *c = L->conns; c != NULL; c = next) {
        next = c->next;
        switch (to) {
        case NETEM_MODE_REFUSE:
            c->abort = true;
            break;
        case NETEM_MODE_BLACKHOLE:
            if (!c->orphan)
                c->held = true;
            break;
        case NETEM_MODE_PASS:
            if (c->orphan || c->broken)
                c->abort = true;
            c->held = false;
            break;
        }
        conn_settle(n, c);
    }
}

/* Apply the desired settings of every link (data path, on wake-up). */
static void apply_pending(netem *n)
{
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < n->links_count; i++) {
        link_state *L = &n->links[i];
        link_settings old = L->applied;
        L->applied = L->desired;
        if (old.delay_ms != L->applied.delay_ms || old.jitter_ms != L->applied.jitter_ms)
            log_info(COMP, "link %s: delay_ms %d -> %d, jitter_ms %d -> %d", L->name, old.delay_ms,
                     L->applied.delay_ms, old.jitter_ms, L->applied.jitter_ms);
        if (old.mode != L->applied.mode) {
            log_info(COMP, "link %s: mode %s -> %s (%zu open connections)", L->name,
                     netem_mode_name(old.mode), netem_mode_name(L->applied.mode), L->conns_count);
            mode_transition(n, L, L->applied.mode);
        }
    }
    n->applied_gen = n->desired_gen;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

/* Write what is due on every connection with queued chunks; return the
 * earliest release time still pending (INT64_MAX if none). */
static int64_t service_active(netem *n)
{
    int64_t now = clock_mono_us();
    int64_t next_us = INT64_MAX;
    conn *next;
    for (conn *c = n->active; c != NULL; c = next) {
        next = c->active_next;
        flush_dir(n, c, 0, now);
        flush_dir(n, c, 1, now);
        conn_settle(n, c);
        if (c->closed || c->held || c->orphan || c->connecting)
            continue;
        for (int k = 0; k < 2; k++) {
            if (c->dir[k].head != NULL && !c->dir[k].blocked && c->dir[k].head->release_us < next_us)
                next_us = c->dir[k].head->release_us;
        }
    }
    return next_us;
}

/* After the total budget freed up: let every connection read again. */
static void rescan_all(netem *n)
{
    n->rescan = false;
    for (size_t i = 0; i < n->links_count; i++) {
        conn *next;
        for (conn *c = n->links[i].conns; c != NULL; c = next) {
            next = c->next;
            conn_settle(n, c);
        }
    }
}

static void end_all(netem *n)
{
    for (size_t i = 0; i < n->links_count; i++) {
        while (n->links[i].conns != NULL)
            conn_end(n, n->links[i].conns, false);
    }
    graveyard_free(n);
}

int netem_run(netem *n, int stop_fd)
{
    mrd_assert(n != NULL && !n->ran);
    n->ran = true;
    n->stop_w = (watch){.kind = W_STOP};
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &n->stop_w};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, stop_fd, &e) != 0) {
        log_error(COMP, "cannot watch the stop descriptor: %s", strerror(errno));
        return -1;
    }
    int rc = 0;
    bool stop = false;
    struct epoll_event evs[EPOLL_EVENTS_MAX];
    apply_pending(n);
    while (!stop) {
        int64_t next_us = service_active(n);
        if (n->rescan)
            rescan_all(n);
        graveyard_free(n);
        int timeout_ms = -1;
        if (next_us != INT64_MAX) {
            int64_t wait_us = next_us - clock_mono_us();
            if (wait_us < 0)
                wait_us = 0;
            int64_t ms = (wait_us + 999) / 1000;
            timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        int nev = epoll_wait(n->epfd, evs, EPOLL_EVENTS_MAX, timeout_ms);
        if (nev < 0) {
            if (errno == EINTR)
                continue;
            log_error(COMP, "epoll_wait failed: %s", strerror(errno));
            rc = -1;
            break;
        }
        for (int i = 0; i < nev; i++) {
            watch *w = evs[i].data.ptr;
            switch (w->kind) {
            case W_STOP:
                stop = true;
                break;
            case W_WAKE: {
                uint64_t v;
                (void)!read(n->wake_fd, &v, sizeof v);
                apply_pending(n);
                break;
            }
            case W_LISTEN:
                accept_all(n, w->obj);
                break;
            case W_CONN: {
                conn *c = w->obj;
                if (c->closed || c->fd[w->side] < 0)
                    break;
                conn_event(n, c, w->side, evs[i].events);
                conn_settle(n, c);
                break;
            }
            }
        }
        graveyard_free(n);
    }
    log_info(COMP, "stopping: closing %zu connections", n->conns_total);
    end_all(n);
    (void)epoll_ctl(n->epfd, EPOLL_CTL_DEL, stop_fd, NULL);
    pthread_mutex_lock(&n->mu);
    n->stopping = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return rc;
}

/* ---- Control API (libmicrohttpd thread). */

typedef struct ctl_req {
    char *body;
    size_t len;
    size_t cap;
    bool too_large;
} ctl_req;

typedef struct ctl_resp {
    unsigned status;
    json_t *json; /* owned */
    bool problem;
} ctl_resp;

static void problem(ctl_resp *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void problem(ctl_resp *r, unsigned status, const char *code, const char *fmt, ...)
{
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    char type[128], title[64];
    snprintf(type, sizeof type, PROBLEM_TYPE_PREFIX "%s", code);
    snprintf(title, sizeof title, "%s", code);
    for (char *p = title; *p != '\0'; p++)
        if (*p == '_')
            *p = ' ';
    title[0] = (char)toupper((unsigned char)title[0]);
    json_decref(r->json);
    r->status = status;
    r->problem = true;
    json_t *d = json_string(detail);
    if (d == NULL) /* a name echoed from the URL that is not UTF-8 */
        d = json_string("(detail not representable)");
    r->json = json_pack("{s:s, s:s, s:i, s:s, s:o}", "type", type, "title", title, "status",
                        (int)status, "code", code, "detail", d);
}

static link_state *find_link(netem *n, const char *name)
{
    for (size_t i = 0; i < n->links_count; i++)
        if (strcmp(n->links[i].name, name) == 0)
            return &n->links[i];
    return NULL;
}

/* L's state as the API shows it. Caller holds n->mu. */
static json_t *link_json(const link_state *L)
{
    return json_pack(
        "{s:s, s:i, s:i, s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:I}", "name", L->name, "listen_port",
        L->listen_port, "target_port", L->target_port, "mode", netem_mode_name(L->applied.mode),
        "delay_ms", L->applied.delay_ms, "jitter_ms", L->applied.jitter_ms, "connections",
        (json_int_t)atomic_load_explicit(&L->stat_conns, memory_order_relaxed), "bytes_up",
        (json_int_t)atomic_load_explicit(&L->stat_bytes_up, memory_order_relaxed), "bytes_down",
        (json_int_t)atomic_load_explicit(&L->stat_bytes_down, memory_order_relaxed),
        "connections_accepted",
        (json_int_t)atomic_load_explicit(&L->stat_accepted, memory_order_relaxed),
        "connections_reset",
        (json_int_t)atomic_load_explicit(&L->stat_resets, memory_order_relaxed));
}

typedef struct change {
    bool has_mode, has_delay, has_jitter;
    netem_mode mode;
    int delay_ms, jitter_ms;
} change;

/* Parse a POST body into ch (and, for the bulk form, names). Returns 0,
 * or -1 with the problem set in r. */
static int parse_change(const ctl_req *q, bool bulk, change *ch, json_t **names, ctl_resp *r)
{
    memset(ch, 0, sizeof *ch);
    *names = NULL;
    if (q->too_large) {
        problem(r, 413, "body_too_large", "the body is larger than %u bytes",
                NETEM_CONTROL_BODY_BYTES_MAX);
        return -1;
    }
    json_error_t jerr;
    json_t *b = json_loadb(q->body != NULL ? q->body : "", q->len, JSON_REJECT_DUPLICATES, &jerr);
    if (b == NULL || !json_is_object(b)) {
        problem(r, 400, "invalid_json", "the body must be a JSON object such as {\"mode\":\"pass\"}%s%s",
                b == NULL ? ": " : "", b == NULL ? jerr.text : "");
        json_decref(b);
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach(b, key, v) {
        if (strcmp(key, "mode") == 0) {
            const char *m = json_string_value(v);
            if (m == NULL || netem_mode_parse(m, &ch->mode) != 0) {
                problem(r, 400, "invalid_mode", "mode '%s' is not one of pass, refuse, blackhole",
                        m != NULL ? m : "(not a string)");
                goto fail;
            }
            ch->has_mode = true;
        } else if (strcmp(key, "delay_ms") == 0 || strcmp(key, "jitter_ms") == 0) {
            long max = key[0] == 'd' ? NETEM_DELAY_MS_MAX : NETEM_JITTER_MS_MAX;
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
                problem(r, 400, "invalid_field", "%s must be an integer in 0..%ld", key, max);
                goto fail;
            }
            if (key[0] == 'd') {
                ch->has_delay = true;
                ch->delay_ms = (int)json_integer_value(v);
            } else {
                ch->has_jitter = true;
                ch->jitter_ms = (int)json_integer_value(v);
            }
        } else if (bulk && strcmp(key, "names") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0 ||
                json_array_size(v) > NETEM_LINKS_MAX) {
                problem(r, 400, "invalid_field",
                        "names must be an array of 1 to %d link names (omit it for every link)",
                        NETEM_LINKS_MAX);
                goto fail;
            }
            size_t i;
            json_t *e;
            json_array_foreach(v, i, e) {
                if (!json_is_string(e)) {
                    problem(r, 400, "invalid_field", "names[%zu] must be a string", i);
                    goto fail;
                }
            }
            *names = json_incref(v);
        } else {
            problem(r, 400, "unknown_field", "member '%s' is not known; use mode, delay_ms, jitter_ms%s",
                    key, bulk ? " and names" : "");
            goto fail;
        }
    }
    if (!ch->has_mode && !ch->has_delay && !ch->has_jitter) {
        problem(r, 400, "invalid_field", "nothing to change: give mode, delay_ms or jitter_ms");
        goto fail;
    }
    json_decref(b);
    return 0;
fail:
    json_decref(*names);
    *names = NULL;
    json_decref(b);
    return -1;
}

/* Set the desired settings of the selected links, wake the data path and
 * wait until it applied them; answer their new states. */
static void apply_change(netem *n, link_state **targets, size_t count, const change *ch,
                         bool single, ctl_resp *r)
{
    pthread_mutex_lock(&n->mu);
    for (size_t i = 0; i < count; i++) {
        if (ch->has_mode)
            targets[i]->desired.mode = ch->mode;
        if (ch->has_delay)
            targets[i]->desired.delay_ms = ch->delay_ms;
        if (ch->has_jitter)
            targets[i]->desired.jitter_ms = ch->jitter_ms;
    }
    uint64_t gen = ++n->desired_gen;
    pthread_mutex_unlock(&n->mu);

    uint64_t one = 1;
    (void)!write(n->wake_fd, &one, sizeof one);

    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += NETEM_APPLY_WAIT_MS / 1000;
    deadline.tv_nsec += (long)(NETEM_APPLY_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&n->mu);
    while (n->applied_gen < gen && !n->stopping) {
        if (pthread_cond_timedwait(&n->cv, &n->mu, &deadline) == ETIMEDOUT)
            break;
    }
    if (n->applied_gen < gen) {
        pthread_mutex_unlock(&n->mu);
        problem(r, 503, "not_applied",
                "the data path did not apply the change within %d ms (stopping or overloaded); "
                "it will apply it when it can — read GET /links to see the state",
                NETEM_APPLY_WAIT_MS);
        return;
    }
    json_t *out = single ? link_json(targets[0]) : json_array();
    if (!single && out != NULL)
        for (size_t i = 0; i < count; i++)
            json_array_append_new(out, link_json(targets[i]));
    pthread_mutex_unlock(&n->mu);
    r->status = 200;
    r->json = out;
}

static void route(netem *n, const char *method, const char *url, const ctl_req *q, ctl_resp *r)
{
    bool get = strcmp(method, "GET") == 0;
    bool post = strcmp(method, "POST") == 0;
    if (strcmp(url, "/healthz") == 0) {
        if (!get) {
            problem(r, 405, "method_not_allowed", "%s %s: use GET", method, url);
            return;
        }
        r->status = 200;
        r->json = json_pack("{s:s, s:i}", "status", "ok", "links", (int)n->links_count);
        return;
    }
    if (strcmp(url, "/links") == 0) {
        if (get) {
            json_t *a = json_array();
            pthread_mutex_lock(&n->mu);
            for (size_t i = 0; a != NULL && i < n->links_count; i++)
                json_array_append_new(a, link_json(&n->links[i]));
            pthread_mutex_unlock(&n->mu);
            r->status = 200;
            r->json = a;
            return;
        }
        if (!post) {
            problem(r, 405, "method_not_allowed", "%s %s: use GET or POST", method, url);
            return;
        }
        change ch;
        json_t *names = NULL;
        if (parse_change(q, true, &ch, &names, r) != 0)
            return;
        link_state *targets[NETEM_LINKS_MAX];
        size_t count = 0;
        if (names == NULL) {
            for (size_t i = 0; i < n->links_count; i++)
                targets[count++] = &n->links[i];
        } else {
            size_t i;
            json_t *e;
            json_array_foreach(names, i, e) {
                link_state *L = find_link(n, json_string_value(e));
                if (L == NULL) {
                    problem(r, 404, "unknown_link",
                            "no link named '%s'; nothing was changed (GET /links lists them)",
                            json_string_value(e));
                    json_decref(names);
                    return;
                }
                bool dup = false;
                for (size_t j = 0; j < count; j++)
                    dup = dup || targets[j] == L;
                if (!dup)
                    targets[count++] = L;
            }
            json_decref(names);
        }
        apply_change(n, targets, count, &ch, false, r);
        return;
    }
    if (strncmp(url, "/links/", 7) == 0) {
        const char *name = url + 7;
        link_state *L = find_link(n, name);
        if (!get && !post) {
            problem(r, 405, "method_not_allowed", "%s %s: use GET or POST", method, url);
            return;
        }
        if (L == NULL) {
            problem(r, 404, "unknown_link", "no link named '%.*s' (GET /links lists them)",
                    NETEM_NAME_BYTES_MAX + 1, name);
            return;
        }
        if (get) {
            pthread_mutex_lock(&n->mu);
            r->json = link_json(L);
            pthread_mutex_unlock(&n->mu);
            r->status = 200;
            return;
        }
        change ch;
        json_t *names = NULL;
        if (parse_change(q, false, &ch, &names, r) != 0)
            return;
        mrd_assert(names == NULL);
        apply_change(n, &L, 1, &ch, true, r);
        return;
    }
    problem(r, 404, "not_found", "no route %s %s; the API has GET /healthz, GET /links, "
                                 "GET|POST /links/NAME and POST /links",
            method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *mc, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    netem *n = cls;
    ctl_req *q = *con_cls;
    if (q == NULL) {
        /* First call: headers only (queueing now would lose keep-alive). */
        q = calloc(1, sizeof *q);
        if (q == NULL)
            return MHD_NO;
        *con_cls = q;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t len = *upload_data_size;
        *upload_data_size = 0;
        if (q->too_large)
            return MHD_YES; /* drain */
        if (q->len + len > NETEM_CONTROL_BODY_BYTES_MAX) {
            q->too_large = true;
            free(q->body);
            q->body = NULL;
            q->len = q->cap = 0;
            return MHD_YES;
        }
        if (q->len + len + 1 > q->cap) {
            size_t cap = q->len + len + 1;
            char *p = realloc(q->body, cap);
            if (p == NULL)
                return MHD_NO;
            q->body = p;
            q->cap = cap;
        }
        memcpy(q->body + q->len, upload_data, len);
        q->len += len;
        q->body[q->len] = '\0';
        return MHD_YES;
    }

    ctl_resp r = {0};
    route(n, method, url, q, &r);
    char *text = r.json != NULL ? json_dumps(r.json, JSON_COMPACT) : NULL;
    if (r.status >= 400) {
        const char *detail = json_string_value(json_object_get(r.json, "detail"));
        log_info(COMP, "control: %s %s -> %u %s", method, url, r.status,
                 detail != NULL ? detail : "");
    }
    else if (strcmp(method, "POST") == 0)
        log_info(COMP, "control: %s %s %.*s -> %u", method, url, (int)(q->len > 200 ? 200 : q->len),
                 q->body != NULL ? q->body : "", r.status);
    json_decref(r.json);
    if (text == NULL) {
        r.status = 500;
        r.problem = true;
        text = strdup("{\"type\":\"" PROBLEM_TYPE_PREFIX "internal\",\"title\":\"Internal\","
                      "\"status\":500,\"code\":\"internal\",\"detail\":\"out of memory\"}");
        if (text == NULL)
            return MHD_NO;
    }
    size_t tlen = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(tlen, text, MHD_RESPMEM_MUST_FREE);
    if (resp == NULL) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r.problem ? "application/problem+json" : "application/json");
    enum MHD_Result ret = MHD_queue_response(mc, r.status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *mc, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)mc;
    (void)toe;
    ctl_req *q = *con_cls;
    if (q != NULL) {
        free(q->body);
        free(q);
        *con_cls = NULL;
    }
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t len = strlen(line);
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
        line[--len] = '\0';
    log_warn(COMP, "libmicrohttpd: %s", line);
}

/* ---- Lifecycle. */

static int listen_on(int port, int *bound_port, char *err, size_t err_size, const char *what)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fmt_err(err, err_size, "%s: cannot create a socket: %s", what, strerror(errno));
        return -1;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, LISTEN_BACKLOG) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &alen) != 0) {
        fmt_err(err, err_size, "%s: cannot listen on 127.0.0.1:%d: %s; choose a free port or 0",
                what, port, strerror(errno));
        close(fd);
        return -1;
    }
    *bound_port = ntohs(a.sin_port);
    return fd;
}

netem *netem_create(const netem_config *cfg, char *err, size_t err_size)
{
    mrd_assert(cfg != NULL && cfg->links_count <= NETEM_LINKS_MAX);
    netem *n = calloc(1, sizeof *n);
    if (n == NULL) {
        fmt_err(err, err_size, "out of memory");
        return NULL;
    }
    n->epfd = -1;
    n->wake_fd = -1;
    for (size_t i = 0; i < NETEM_LINKS_MAX; i++)
        n->links[i].listen_fd = -1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    n->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
    if (n->rng == 0)
        n->rng = 0x9E3779B97F4A7C15ULL;

    n->epfd = epoll_create1(EPOLL_CLOEXEC);
    n->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (n->epfd < 0 || n->wake_fd < 0) {
        fmt_err(err, err_size, "cannot create epoll/eventfd: %s", strerror(errno));
        goto fail;
    }
    n->wake_w = (watch){.kind = W_WAKE};
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = &n->wake_w};
    if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->wake_fd, &e) != 0) {
        fmt_err(err, err_size, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }

    for (size_t i = 0; i < cfg->links_count; i++) {
        const netem_link_spec *s = &cfg->links[i];
        link_state *L = &n->links[i];
        snprintf(L->name, sizeof L->name, "%s", s->name);
        L->target_port = s->target_port;
        L->desired = (link_settings){.mode = s->mode, .delay_ms = s->delay_ms, .jitter_ms = s->jitter_ms};
        L->applied = L->desired;
        char what[NETEM_NAME_BYTES_MAX + 16];
        snprintf(what, sizeof what, "link %s", s->name);
        L->listen_fd = listen_on(s->listen_port, &L->listen_port, err, err_size, what);
        if (L->listen_fd < 0)
            goto fail;
        n->links_count = i + 1;
        L->w = (watch){.kind = W_LISTEN, .obj = L};
        struct epoll_event le = {.events = EPOLLIN, .data.ptr = &L->w};
        if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, L->listen_fd, &le) != 0) {
            fmt_err(err, err_size, "epoll_ctl: %s", strerror(errno));
            goto fail;
        }
    }

    struct sockaddr_in ca_addr = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)cfg->control_port)};
    ca_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    n->mhd = MHD_start_daemon(MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC, 0, NULL, NULL,
                              on_request, n, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
                              MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ca_addr,
                              MHD_OPTION_CONNECTION_LIMIT, (unsigned)NETEM_CONTROL_CONNECTIONS_MAX,
                              MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, n, MHD_OPTION_END);
    if (n->mhd == NULL) {
        fmt_err(err, err_size,
                "control API: cannot listen on 127.0.0.1:%d (in use?); choose a free port or 0",
                cfg->control_port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(n->mhd, MHD_DAEMON_INFO_BIND_PORT);
    n->control_port = info != NULL ? (int)info->port : cfg->control_port;
    for (size_t i = 0; i < n->links_count; i++) {
        const link_state *L = &n->links[i];
        log_info(COMP, "link %s: 127.0.0.1:%d -> 127.0.0.1:%d mode=%s delay_ms=%d jitter_ms=%d",
                 L->name, L->listen_port, L->target_port, netem_mode_name(L->applied.mode),
                 L->applied.delay_ms, L->applied.jitter_ms);
    }
    log_info(COMP, "control API on 127.0.0.1:%d", n->control_port);
    return n;
fail:
    netem_free(n);
    return NULL;
}

int netem_control_port(const netem *n)
{
    return n->control_port;
}

size_t netem_links_count(const netem *n)
{
    return n->links_count;
}

const char *netem_link_name(const netem *n, size_t i)
{
    mrd_assert(i < n->links_count);
    return n->links[i].name;
}

int netem_link_port(const netem *n, size_t i)
{
    mrd_assert(i < n->links_count);
    return n->links[i].listen_port;
}

char *netem_ports_json(const netem *n)
{
    json_t *links = json_object();
    if (links == NULL)
        return NULL;
    for (size_t i = 0; i < n->links_count; i++)
        json_object_set_new(links, n->links[i].name, json_integer(n->links[i].listen_port));
    json_t *o = json_pack("{s:i, s:o}", "control", n->control_port, "links", links);
    if (o == NULL)
        return NULL;
    char *text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return text;
}

void netem_free(netem *n)
{
    if (n == NULL)
        return;
    pthread_mutex_lock(&n->mu);
    n->stopping = true; /* control requests waiting for the data path return */
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (n->mhd != NULL)
        MHD_stop_daemon(n->mhd);
    end_all(n);
    for (size_t i = 0; i < NETEM_LINKS_MAX; i++)
        if (n->links[i].listen_fd >= 0)
            close(n->links[i].listen_fd);
    if (n->wake_fd >= 0)
        close(n->wake_fd);
    if (n->epfd >= 0)
        close(n->epfd);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->mu);
    free(n);
}
