/*
 * netem.h — the WAN emulator: a TCP proxy with delay, jitter and faults.
 *
 * The lab runs every region on 127.0.0.1, so the 80 ms between the US
 * and the EU has to be made: every inter-region link (replication, etcd
 * between sites, meridiand to a remote database) goes through one
 * meridian-netem process serving many named links. Each link listens on
 * 127.0.0.1:listen_port and forwards every connection to
 * 127.0.0.1:target_port, holding each chunk of bytes for a one-way delay
 * plus a uniform jitter (never reordering inside a direction). A link's
 * mode is switched at run time through a small HTTP/JSON control API:
 *
 *   pass       forward, with the delay and jitter;
 *   refuse     connections are reset (new ones at once, open ones too);
 *   blackhole  a partition: new connections are accepted and never
 *              forwarded; open ones are frozen (nothing delivered either
 *              way), so both peers see a silent network.
 *
 * Threads: netem_run is the data path (one epoll loop that owns every
 * socket and buffer); the control API runs on libmicrohttpd's thread and
 * only writes "desired" settings under a mutex, wakes the data path and
 * waits (bounded) until it has applied them, so a 200 answer means the
 * fault is in force.
 */
#ifndef MERIDIAN_NETEM_H
#define MERIDIAN_NETEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds (all enforced; going past one is an error or a reset
 * connection, never unbounded growth). */
#define NETEM_LINKS_MAX 64
#define NETEM_NAME_BYTES_MAX 63                    /* [A-Za-z0-9_.-]{1,63} */
#define NETEM_CONNS_PER_LINK_MAX 1024              /* more are accepted and reset */
#define NETEM_CONNS_TOTAL_MAX 4096
#define NETEM_DIR_QUEUE_BYTES_MAX (4u << 20)       /* per direction: backpressure past it */
#define NETEM_QUEUED_BYTES_TOTAL_MAX (128u << 20)  /* all connections together */
#define NETEM_READ_CHUNK_BYTES (64u << 10)         /* one read(2) */
#define NETEM_DELAY_MS_MAX 60000
#define NETEM_JITTER_MS_MAX 60000
#define NETEM_DELAY_MS_DEFAULT 40
#define NETEM_JITTER_MS_DEFAULT 5
#define NETEM_CONTROL_BODY_BYTES_MAX (64u << 10)
#define NETEM_CONTROL_CONNECTIONS_MAX 64
#define NETEM_APPLY_WAIT_MS 2000                   /* control waits this long for the data path */
#define NETEM_CONFIG_FILE_BYTES_MAX (1u << 20)

_Static_assert(NETEM_DIR_QUEUE_BYTES_MAX <= NETEM_QUEUED_BYTES_TOTAL_MAX,
               "one direction's queue must fit in the total budget");
_Static_assert(NETEM_READ_CHUNK_BYTES <= NETEM_DIR_QUEUE_BYTES_MAX,
               "one read must fit in a direction's queue");
_Static_assert(NETEM_CONNS_PER_LINK_MAX <= NETEM_CONNS_TOTAL_MAX,
               "a link's connections must fit in the total");

typedef enum { NETEM_MODE_PASS = 0, NETEM_MODE_REFUSE, NETEM_MODE_BLACKHOLE } netem_mode;

/* One link as configured. Ports are TCP ports on 127.0.0.1; listen_port
 * 0 means "pick a free one" (read it back with netem_link_port). */
typedef struct netem_link_spec {
    char name[NETEM_NAME_BYTES_MAX + 1];
    int listen_port;
    int target_port;
    int delay_ms;
    int jitter_ms;
    netem_mode mode;
} netem_link_spec;

typedef struct netem_config {
    int control_port; /* 127.0.0.1; 0 = pick */
    netem_link_spec links[NETEM_LINKS_MAX];
    size_t links_count;
} netem_config;

/* "pass", "refuse", "blackhole" (never NULL for a valid mode). */
const char *netem_mode_name(netem_mode mode);
/* Parse a mode name. Returns 0, or -1 when s is not one of the three. */
int netem_mode_parse(const char *s, netem_mode *out);

/* An empty configuration: control port 0, no links. */
void netem_config_init(netem_config *cfg);

/* Parse "NAME=LISTEN_PORT:TARGET_PORT[,delay_ms=N][,jitter_ms=N][,mode=M]"
 * into out (defaults: NETEM_DELAY_MS_DEFAULT, NETEM_JITTER_MS_DEFAULT,
 * pass). Returns 0, or -1 with a sentence in err (out is then
 * unspecified). */
int netem_link_spec_parse(const char *text, netem_link_spec *out, char *err, size_t err_size);

/* Append link to cfg after checking its name, ports and values, and
 * that its name is not already used. Returns 0, or -1 with err set and
 * cfg unchanged. */
int netem_config_add_link(netem_config *cfg, const netem_link_spec *link, char *err,
                          size_t err_size);

/* Load a JSON configuration file into cfg (links are appended):
 *   {"control": 8500,
 *    "links": [{"name": "us-eu-repl", "listen_port": 0, "target_port": 5433,
 *               "delay_ms": 40, "jitter_ms": 5, "mode": "pass"}, ...]}
 * "control" and every member of a link except name and target_port are
 * optional; unknown members are refused (they are typos). Returns 0, or
 * -1 with err naming the file and the problem. */
int netem_config_load_file(const char *path, netem_config *cfg, char *err, size_t err_size);

typedef struct netem netem;

/* Bind the control API and every link's listening socket on 127.0.0.1
 * and start the control API's thread. cfg is copied. Returns the
 * emulator (free with netem_free), or NULL with err set (nothing is left
 * open). */
netem *netem_create(const netem_config *cfg, char *err, size_t err_size);

/* The bound control port, and link i's name and bound listen port
 * (i < netem_links_count). */
int netem_control_port(const netem *n);
size_t netem_links_count(const netem *n);
const char *netem_link_name(const netem *n, size_t i);
int netem_link_port(const netem *n, size_t i);

/* {"control":P,"links":{"name":port,...}} as one line, malloc'd (the
 * caller frees), or NULL when out of memory. */
char *netem_ports_json(const netem *n);

/* Run the data path on the calling thread until stop_fd (e.g. a
 * signalfd) becomes readable; stop_fd is watched, never read. On return
 * every proxied connection is closed. Returns 0, or -1 when the loop
 * could not run (logged). Call at most once. */
int netem_run(netem *n, int stop_fd);

/* Stop the control API, close every socket and free n. NULL is fine. */
void netem_free(netem *n);

#endif
