/*
 * limits.h — every bound Meridian enforces, in one place.
 *
 * "Put a limit on everything" (TigerBeetle): each buffer, queue, batch,
 * retry and loop has a maximum fixed here. Going past a limit is an
 * error returned to the caller (HTTP 413/400, a result code), never a
 * crash and never a silent truncation. The _Static_asserts at the end
 * pin the relations between limits that the code relies on.
 */
#ifndef MERIDIAN_LIMITS_H
#define MERIDIAN_LIMITS_H

#include <stdint.h>

/* Events (accounts or transfers) in one API request. TigerBeetle's batch
 * size; a request above it is refused with 413 batch_too_large. */
#define LIMIT_BATCH_EVENTS_MAX 8190

/* Events coalesced into one PostgreSQL transaction by the group-commit
 * batcher (several requests share one commit). */
#define LIMIT_COMMIT_EVENTS_MAX 8190

/* Longest the batcher waits for more requests before committing. */
#define LIMIT_COMMIT_WAIT_US_DEFAULT 500
#define LIMIT_COMMIT_WAIT_US_MAX 100000

/* Requests waiting for the batcher; past it, 503 overloaded. */
#define LIMIT_QUEUE_REQUESTS_MAX 4096

/* Transfer metadata: canonical (compact, sorted-key) JSON text. */
#define LIMIT_METADATA_BYTES_MAX 8192

/* Request body. 8,190 transfers with 8 KB metadata would be 64 MiB;
 * such a request must be split (413 body_too_large with a hint). */
#define LIMIT_BODY_BYTES_MAX (16u * 1024u * 1024u)

/* JSON nesting depth of a request body (objects and arrays). */
#define LIMIT_JSON_DEPTH_MAX 16

/* Page sizes for history queries. */
#define LIMIT_PAGE_ROWS_DEFAULT 100
#define LIMIT_PAGE_ROWS_MAX 1000

/* Customer names: [a-z0-9_-]{1,63}. */
#define LIMIT_CUSTOMER_NAME_MAX 63

/* Whole-batch retries after a serialization failure, a deadlock or a
 * duplicate transfer id committed concurrently by another process. */
#define LIMIT_COMMIT_RETRIES_MAX 8

/* Reconnect attempts of a worker before it reports the database down. */
#define LIMIT_DB_RECONNECT_MAX 50

/* Concurrent HTTP connections served by one meridiand. */
#define LIMIT_HTTP_CONNECTIONS_MAX 512

/* Two-phase timeout, seconds (about 136 years fits, we cap at 1 year). */
#define LIMIT_TIMEOUT_S_MAX (366u * 24u * 3600u)

_Static_assert(LIMIT_COMMIT_EVENTS_MAX >= LIMIT_BATCH_EVENTS_MAX,
               "one request must fit in one commit");
_Static_assert(LIMIT_METADATA_BYTES_MAX < LIMIT_BODY_BYTES_MAX,
               "a single transfer's metadata must fit in a body");
_Static_assert(LIMIT_PAGE_ROWS_DEFAULT <= LIMIT_PAGE_ROWS_MAX,
               "default page must not exceed the maximum page");
_Static_assert(LIMIT_COMMIT_WAIT_US_DEFAULT <= LIMIT_COMMIT_WAIT_US_MAX,
               "default wait within bounds");

/* etcd client (src/etcd): endpoints in one list, key and value sizes
 * (etcd's own request limit is 1.5 MiB), one HTTP answer or one watch
 * message, keys returned by one prefix read. */
#define LIMIT_ETCD_ENDPOINTS_MAX 16
#define LIMIT_ETCD_KEY_BYTES_MAX 1024
#define LIMIT_ETCD_VALUE_BYTES_MAX (1024u * 1024u)
#define LIMIT_ETCD_RESPONSE_BYTES_MAX (4u * 1024u * 1024u)
#define LIMIT_ETCD_PREFIX_KEYS_MAX 10000
/* Operations and comparisons in one etcd transaction (etcd: 128). */
#define LIMIT_ETCD_TXN_OPS_MAX 16
/* Watch reconnect backoff, doubled from min up to max. */
#define LIMIT_ETCD_WATCH_BACKOFF_MS_MIN 50
#define LIMIT_ETCD_WATCH_BACKOFF_MS_MAX 2000

_Static_assert(LIMIT_ETCD_VALUE_BYTES_MAX * 2u < LIMIT_ETCD_RESPONSE_BYTES_MAX,
               "one base64-encoded value must fit in one etcd answer");
_Static_assert(LIMIT_ETCD_WATCH_BACKOFF_MS_MIN <= LIMIT_ETCD_WATCH_BACKOFF_MS_MAX,
               "watch backoff bounds");

/* Topology file (src/topology, docs/TOPOLOGY.md). Names are
 * [a-z0-9][a-z0-9_-]* up to LIMIT_TOPOLOGY_NAME_MAX characters (a
 * keeper's node, zone and region names fit its 32-byte fields);
 * jurisdictions are [A-Z]{2,8}. Nodes per cell match the keeper's
 * KEEPER_NODES_MAX (src/keeper/fsm.h). */
#define LIMIT_TOPOLOGY_FILE_BYTES_MAX (256u * 1024u)
#define LIMIT_TOPOLOGY_NAME_MAX 31
#define LIMIT_TOPOLOGY_JURISDICTION_MAX 8
#define LIMIT_TOPOLOGY_REGIONS_MAX 8
#define LIMIT_TOPOLOGY_ZONES_MAX 8 /* per region */
#define LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX 7
#define LIMIT_TOPOLOGY_CELLS_MAX 16
#define LIMIT_TOPOLOGY_CELL_NODES_MAX 8
#define LIMIT_TOPOLOGY_CELL_BACKUPS_MAX LIMIT_TOPOLOGY_REGIONS_MAX
#define LIMIT_TOPOLOGY_CELL_CACHES_MAX LIMIT_TOPOLOGY_REGIONS_MAX
#define LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX 16 /* per cell and region */
#define LIMIT_TOPOLOGY_WAN_LINKS_MAX                                           \
    (LIMIT_TOPOLOGY_REGIONS_MAX * (LIMIT_TOPOLOGY_REGIONS_MAX - 1) / 2)
#define LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT 40
#define LIMIT_TOPOLOGY_WAN_DELAY_MS_MAX 10000
#define LIMIT_TOPOLOGY_FAILOVER_AFTER_S_MAX 3600
#define LIMIT_TOPOLOGY_MAX_LOSS_S_MAX 3600
/* Errors one validation reports before it stops collecting. */
#define LIMIT_TOPOLOGY_ERRORS_MAX 32

_Static_assert(LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT <= LIMIT_TOPOLOGY_WAN_DELAY_MS_MAX,
               "default WAN delay within bounds");
_Static_assert(LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX % 2 == 1,
               "etcd membership is odd; the maximum must be reachable");
_Static_assert(LIMIT_TOPOLOGY_CELL_NODES_MAX >= 3 + 1,
               "a cell holds 3 primary candidates and a DR standby");
_Static_assert(LIMIT_TOPOLOGY_NAME_MAX < 32, "names fit the keeper's 32-byte fields");

#endif
