/*
 * keeper.h — meridian-keeper's loop: observe, decide (fsm.c), act.
 *
 * One keeper per PostgreSQL node. Each loop (loop_ms) it reads the
 * cell's keys from etcd in one request (and the store revision of that
 * read), reads its PostgreSQL, renews its leases, asks keeper_fsm_step
 * for a decision, carries it out with pgctl, and publishes its member
 * key. etcd layout under /meridian/<cell>/ is described in
 * docs/FAILOVER.md.
 */
#ifndef MERIDIAN_KEEPER_H
#define MERIDIAN_KEEPER_H

#include <stdbool.h>
#include <stdint.h>

#include "keeper/fsm.h"
#include "keeper/pgctl.h"

typedef struct keeper_config {
    char node[KEEPER_NAME_MAX];
    char cell[KEEPER_NAME_MAX];
    char zone[KEEPER_NAME_MAX];
    char region[KEEPER_NAME_MAX];
    char etcd_endpoints[512];
    char pg_bindir[256];
    char basedir[512];
    char run_as_user[64];
    char database[64];     /* the ledger database: holds the epoch record */
    int pg_port;
    int lease_ttl_s;       /* leader and member leases */
    int loop_ms;           /* decision loop period */
    int fence_margin_ms;   /* fence this long before the lease can expire */
    uint64_t sync_lag_bytes_max; /* a standby further behind is not made synchronous */
    char metrics_listen[64];     /* "127.0.0.1:PORT" for /metrics, "" = off */
    bool dr;                     /* this node is the cell's cross-region DR standby */
    keeper_region_policy region_policy;  /* what the DR standby may do on its own */
    int region_failover_after_s; /* home region gone this long -> automatic failover */
    int max_loss_ms;             /* ... only if the DR standby lagged at most this */
    /* A primary whose cell has a DR standby under the automatic policy:
     * fence at once (not at the lease deadline) when both etcd and the DR
     * standbys have been silent this long (0: off). Cut off from both,
     * the DR region may take the cell; every commit acknowledged from
     * then on would be lost, so the loss stays within ~max_loss_ms rather
     * than a lease. */
    int dr_fence_ms;
    /* Addresses by which other regions reach this node's PostgreSQL (in
     * the lab: WAN-emulator links); published as "addrs" {region: "h:p"}. */
    size_t advertise_count;
    struct {
        char region[KEEPER_NAME_MAX];
        char addr[80]; /* host:port */
    } advertise[KEEPER_NODES_MAX];
} keeper_config;

/* Defaults: lease 3 s, loop 500 ms, margin 1 s, 16 MiB lag, database
 * "meridian", /usr/lib/postgresql/15/bin, user postgres. */
void keeper_config_defaults(keeper_config *cfg);

/* Check a configuration; on error writes what is wrong to err. */
int keeper_config_check(const keeper_config *cfg, char *err, size_t err_size);

/* Run until *stop becomes true (set from a signal handler). Returns 0
 * after a clean stop (PostgreSQL left running unless stop_pg), -1 when
 * it could not start (reason logged). */
int keeper_run(const keeper_config *cfg, volatile int *stop, bool stop_pg);

#endif
