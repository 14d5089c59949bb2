/*
 * route.h — where meridiand's writes and strong reads go: the cell's
 * current leader, as etcd names it.
 *
 * In a cell run by meridian-keeper processes, etcd holds
 * /meridian/<cell>/leader = {"node":"n2","epoch":2,"host":"…","port":…}
 * under the leader's lease (absent during a failover). A route_source
 * reads that key once, then follows it with an etcd watch: a PUT names a
 * new leader, a DELETE means there is none until the next promotion.
 * Every change of (leader present, host, port, epoch) bumps a generation
 * counter, so a connection that remembers the generation it was opened
 * for knows when it points at a stale node.
 *
 * Without etcd (a single PostgreSQL, the `dsn` of the configuration) the
 * route is static: always a leader, epoch 0, generation 1, and the DSN
 * is used as it is; meridiand then behaves as it always did.
 *
 * Threads: every function may be called from any thread; the state is
 * behind one mutex, and waiters sleep on a condition variable woken by
 * each change (the watch calls back from its own thread).
 */
#ifndef MERIDIAN_ROUTE_H
#define MERIDIAN_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct route_source route_source;

#define ROUTE_NODE_MAX 64
#define ROUTE_HOST_MAX 256
/* Longest DSN route_dsn builds (the configured dsn plus host and port). */
#define ROUTE_DSN_MAX 2048

/* A copy of the route at one moment. */
typedef struct route_snapshot {
    bool has_leader;            /* false during a failover (etcd mode only) */
    char node[ROUTE_NODE_MAX];  /* leader's node name ("" when static) */
    char host[ROUTE_HOST_MAX];  /* "" when static: the dsn names the host */
    int port;                   /* 0 when static */
    int64_t epoch;              /* the cell's fencing token; 0 when static */
    bool writable;              /* the leader's keeper says it takes writes
                                 * (promoted, epoch recorded): a change wakes
                                 * writers waiting for the promotion */
    uint64_t generation;        /* bumped by every change; starts at 1 */
} route_snapshot;

/* A static route: writes go where dsn says. Returns NULL (reason in err)
 * on an empty dsn or allocation failure. Free with route_free. */
route_source *route_create_static(const char *dsn, char *err, size_t err_size);

/* Follow /meridian/<cell>/leader in the etcd cluster at endpoints_csv.
 * dsn holds every connection parameter but host and port, in libpq's
 * keyword=value form (a URI cannot be extended). The leader key is read
 * once here; etcd being unreachable is not an error (the route starts
 * without a leader and the watch keeps trying). Returns NULL (reason in
 * err) on bad arguments or when the watch thread cannot be started. */
route_source *route_create_etcd(const char *endpoints_csv, const char *cell, const char *dsn,
                                char *err, size_t err_size);

/* The same, for a process running in region: when the leader key
 * carries "addrs": {region: "host:port"}, that address is used instead of
 * host/port (a leader in another region reached through a WAN link). */
route_source *route_create_etcd_in(const char *endpoints_csv, const char *cell,
                                   const char *region, const char *dsn, char *err,
                                   size_t err_size);

/* Stop the watch and free; NULL is fine. No thread may be waiting on r. */
void route_free(route_source *r);

/* true when the route follows etcd: commits then check the fencing epoch. */
bool route_is_etcd(const route_source *r);

/* The cell name ("" when static). Valid as long as r. */
const char *route_cell(const route_source *r);

/* Copy the current route into *out. */
void route_current(route_source *r, route_snapshot *out);

/* Wait until there is a leader, at most timeout_ms (>= 0). Returns 0 with
 * the route in *out, or -1 on timeout (*out then holds the leaderless
 * route). */
int route_wait_leader(route_source *r, int timeout_ms, route_snapshot *out);

/* Wait until the generation differs from `generation`, at most timeout_ms
 * (>= 0). Returns 0 when it changed, -1 on timeout; *out receives the
 * route either way. */
int route_wait_change(route_source *r, uint64_t generation, int timeout_ms,
                      route_snapshot *out);

/* The libpq connection string for snapshot s: the configured dsn, then
 * " host=H port=P" for an etcd route (later keywords win in libpq).
 * Returns 0, or -1 when s has no leader or buf is too small. */
int route_dsn(const route_source *r, const route_snapshot *s, char *buf, size_t size);

/* A write was acknowledged under `epoch` at wall time at_ms. The first
 * such note per epoch is recorded in etcd by the route's poller thread
 * (/meridian/<cell>/writes/<epoch>, kept by whichever meridiand is
 * first), never blocking the caller; later notes of a recorded epoch
 * cost a mutex. Static routes ignore it. */
void route_note_write(route_source *r, int64_t epoch, int64_t at_ms);

/* Parse a leader key value ({"node":…,"epoch":…,"host":…,"port":…}) into
 * *out (has_leader set, generation untouched). Returns 0 or -1 when a
 * field is missing or out of range. Exposed for the unit tests. */
int route_parse_leader(const char *json, size_t len, route_snapshot *out);
/* The same, preferring addrs[region] when present (region may be NULL). */
int route_parse_leader_in(const char *json, size_t len, const char *region,
                          route_snapshot *out);

#endif
