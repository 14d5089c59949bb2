/*
 * topology.h — the topology file: regions, zones, etcd members, cells
 * (jurisdiction, allowed regions, nodes, backups, caches, meridiand),
 * failover policies and WAN links, loaded and validated in one place.
 *
 * Everything that lays out Meridian (the lab, the drills, the residency
 * scan, the routing) reads one topology file through this module, so
 * a layout that breaks a rule is refused once, at load time, before any
 * process starts. The key rule is residency (DESIGN.md invariant 4): a
 * cell's data — nodes, DR standbys, backup repositories, caches and the
 * meridiand instances that serve it (they write its logs) — lies only
 * in the cell's allowed regions, and those regions' jurisdictions must
 * be compatible with the cell's (see topology_jurisdiction_allowed).
 * docs/TOPOLOGY.md documents the format, every field and every rule.
 *
 * The loaded topology is immutable and self-contained: fixed-size
 * records (bounds in src/common/limits.h), no pointers into the JSON.
 * The module is pure apart from reading the file: no processes, no
 * network, no globals.
 */
#ifndef MERIDIAN_TOPOLOGY_H
#define MERIDIAN_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/limits.h"

/* The format version this module reads ("version": 1). */
#define TOPOLOGY_VERSION 1

#define TOPOLOGY_NAME_BYTES (LIMIT_TOPOLOGY_NAME_MAX + 1)
#define TOPOLOGY_JURISDICTION_BYTES (LIMIT_TOPOLOGY_JURISDICTION_MAX + 1)
/* A port written "auto": the lab picks one at run time (from ports.base
 * upward when that is a number, else any free port). */
#define TOPOLOGY_PORT_AUTO 0
/* Sizes of the text fields of an error or a violation. */
#define TOPOLOGY_POINTER_BYTES 128
#define TOPOLOGY_MESSAGE_BYTES 512
#define TOPOLOGY_HINT_BYTES 256
#define TOPOLOGY_OBJECT_BYTES 160

typedef enum {
    TOPOLOGY_REGION_PRIMARY,
    TOPOLOGY_REGION_SECONDARY,
    TOPOLOGY_REGION_WITNESS, /* holds an etcd member only, never cell data */
} topology_region_role;

typedef struct topology_region {
    char name[TOPOLOGY_NAME_BYTES];
    char jurisdiction[TOPOLOGY_JURISDICTION_BYTES]; /* "US", "EU", ... */
    topology_region_role role;
    size_t zone_count;
    char zones[LIMIT_TOPOLOGY_ZONES_MAX][TOPOLOGY_NAME_BYTES];
} topology_region;

typedef struct topology_etcd_member {
    char name[TOPOLOGY_NAME_BYTES];
    char region[TOPOLOGY_NAME_BYTES];
    char zone[TOPOLOGY_NAME_BYTES];
    uint16_t client_port; /* TOPOLOGY_PORT_AUTO or 1..65535 */
    uint16_t peer_port;
} topology_etcd_member;

typedef enum {
    TOPOLOGY_NODE_PRIMARY_CANDIDATE, /* home region; may lead, may be synchronous */
    TOPOLOGY_NODE_DR_STANDBY,        /* another allowed region; asynchronous */
} topology_node_role;

typedef struct topology_node {
    char name[TOPOLOGY_NAME_BYTES];
    char region[TOPOLOGY_NAME_BYTES];
    char zone[TOPOLOGY_NAME_BYTES];
    topology_node_role role;
    uint16_t pg_port;     /* PostgreSQL */
    uint16_t keeper_port; /* the keeper's HTTP (metrics, health) */
} topology_node;

/* A pgBackRest repository. */
typedef struct topology_backup {
    char name[TOPOLOGY_NAME_BYTES];
    char region[TOPOLOGY_NAME_BYTES];
} topology_backup;

/* A Redis instance holding the cell's cache entries. */
typedef struct topology_cache {
    char name[TOPOLOGY_NAME_BYTES];
    char region[TOPOLOGY_NAME_BYTES];
    char zone[TOPOLOGY_NAME_BYTES];
    uint16_t port;
} topology_cache;

/* meridiand instances serving the cell in one region; with a numeric
 * port they listen on port .. port + max(instances, scale_to) - 1.
 * scale_to (optional "scale_to" field, default instances) is how many the
 * region runs while the cell's leader is in it: the lab starts the extra
 * ones when a failover or switchover moves the leader there. */
typedef struct topology_meridiand {
    char region[TOPOLOGY_NAME_BYTES];
    uint32_t instances; /* 1..LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX */
    uint32_t scale_to;  /* instances..LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX */
    uint16_t port;
} topology_meridiand;

typedef enum {
    TOPOLOGY_FAILOVER_AUTOMATIC,
    TOPOLOGY_FAILOVER_MANUAL,
} topology_failover_mode;

/* Regional failover policy. automatic: promote the DR standby once the
 * home region has lost the etcd majority for region_failover_after_s and
 * the standby's last reported lag is within max_loss_s. manual: an
 * operator runs `meridianctl failover`; the two numbers are 0 unless the
 * file sets them. */
typedef struct topology_failover {
    topology_failover_mode mode;
    uint32_t region_failover_after_s;
    uint32_t max_loss_s;
} topology_failover;

typedef struct topology_cell {
    char name[TOPOLOGY_NAME_BYTES];
    char jurisdiction[TOPOLOGY_JURISDICTION_BYTES];
    char home_region[TOPOLOGY_NAME_BYTES];
    size_t allowed_region_count;
    char allowed_regions[LIMIT_TOPOLOGY_REGIONS_MAX][TOPOLOGY_NAME_BYTES];
    /* Jurisdictions besides the cell's own whose regions may hold its
     * copies (the explicit permission a cross-border DR copy needs). */
    size_t cross_border_count;
    char cross_border_jurisdictions[LIMIT_TOPOLOGY_REGIONS_MAX][TOPOLOGY_JURISDICTION_BYTES];
    size_t node_count;
    topology_node nodes[LIMIT_TOPOLOGY_CELL_NODES_MAX];
    size_t backup_count;
    topology_backup backups[LIMIT_TOPOLOGY_CELL_BACKUPS_MAX];
    size_t cache_count;
    topology_cache caches[LIMIT_TOPOLOGY_CELL_CACHES_MAX];
    size_t meridiand_count;
    topology_meridiand meridiand[LIMIT_TOPOLOGY_REGIONS_MAX];
    topology_failover failover;
} topology_cell;

/* An emulated WAN link between two regions (both directions). */
typedef struct topology_wan_link {
    char a[TOPOLOGY_NAME_BYTES];
    char b[TOPOLOGY_NAME_BYTES];
    uint32_t one_way_delay_ms;
    uint32_t jitter_ms; /* <= one_way_delay_ms */
} topology_wan_link;

typedef struct topology topology;

/* One validation error. rule is a stable id ("residency.allowed-regions",
 * "cell.quorum", ...: docs/TOPOLOGY.md lists them); pointer is the JSON
 * pointer of the offending element ("" for the whole file or a syntax
 * error); message names the element and says which rule it breaks;
 * hint says what to do (may be empty). */
typedef struct topology_error {
    char pointer[TOPOLOGY_POINTER_BYTES];
    const char *rule; /* static string */
    char message[TOPOLOGY_MESSAGE_BYTES];
    char hint[TOPOLOGY_HINT_BYTES];
} topology_error;

/* The errors of one load: the first LIMIT_TOPOLOGY_ERRORS_MAX are kept,
 * `more` counts those past it. About 25 KB: allocate it, or keep it
 * static. */
typedef struct topology_errors {
    size_t count;
    size_t more;
    topology_error items[LIMIT_TOPOLOGY_ERRORS_MAX];
} topology_errors;

/* Load and validate the topology file at path. On success returns 0 and
 * *out (free it with topology_free). On failure returns a negative
 * value, leaves *out NULL and writes every error found into err, one per
 * line, each "PATH: POINTER: MESSAGE [RULE]; hint: HINT" (truncated to
 * err_size; "... and N more errors" when there were more than
 * LIMIT_TOPOLOGY_ERRORS_MAX). err may be NULL when err_size is 0. */
int topology_load(const char *path, topology **out, char *err, size_t err_size);

/* Like topology_load, with the errors as records (for --json). errs is
 * reset first; on success errs->count is 0. */
int topology_load_errors(const char *path, topology **out, topology_errors *errs);

/* Validate a topology held in memory (len bytes of JSON text). origin is
 * what errors and topology_origin() call it (a path or "<string>").
 * Same results as topology_load_errors. */
int topology_parse(const char *text, size_t len, const char *origin, topology **out,
                   topology_errors *errs);

/* Format one error as topology_load writes it (without newline). */
void topology_error_format(const char *origin, const topology_error *e, char *buf,
                           size_t size);

/* Release a topology. NULL is fine. */
void topology_free(topology *t);

/* --- Accessors. Pointers returned stay valid until topology_free. An
 * index past the count is a programmer error (asserted). Finds return
 * NULL when there is no such name. */
const char *topology_origin(const topology *t); /* the path it was loaded from */
const char *topology_name(const topology *t);   /* "name" of the file, or "" */
uint16_t topology_port_base(const topology *t); /* TOPOLOGY_PORT_AUTO or the base */

size_t topology_region_count(const topology *t);
const topology_region *topology_region_at(const topology *t, size_t index);
const topology_region *topology_region_find(const topology *t, const char *name);

size_t topology_etcd_member_count(const topology *t);
const topology_etcd_member *topology_etcd_member_at(const topology *t, size_t index);

size_t topology_cell_count(const topology *t);
const topology_cell *topology_cell_at(const topology *t, size_t index);
const topology_cell *topology_cell_find(const topology *t, const char *name);

/* All nodes of all cells. */
size_t topology_node_count(const topology *t);
/* The node named name in any cell; *cell_out (may be NULL) gets its cell. */
const topology_node *topology_node_find(const topology *t, const char *name,
                                        const topology_cell **cell_out);

size_t topology_wan_link_count(const topology *t);
const topology_wan_link *topology_wan_link_at(const topology *t, size_t index);
/* The delay between regions a and b (either order): the listed link, or
 * the defaults (LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT, no jitter) for a
 * pair the file does not list. Returns true when the link is listed. */
bool topology_wan_delay(const topology *t, const char *a, const char *b,
                        uint32_t *one_way_delay_ms, uint32_t *jitter_ms);

/* Names of the enums as the file spells them. */
const char *topology_region_role_name(topology_region_role role);
const char *topology_node_role_name(topology_node_role role);
const char *topology_failover_mode_name(topology_failover_mode mode);

/* --- Residency. */

/* Whether data of a cell of jurisdiction cell_j may be stored in a
 * region of jurisdiction region_j, given the cell's cross-border
 * permissions. The rule: its own jurisdiction always; another one only
 * when listed in cross_border_jurisdictions, and never for a restricted
 * jurisdiction (topology_jurisdiction_restricted). */
bool topology_jurisdiction_allowed(const topology_cell *cell, const char *region_j);

/* Jurisdictions whose data never leaves them ("EU": DESIGN.md, "EU data
 * stays in the EU"); a cell of such a jurisdiction may list no
 * cross-border jurisdiction. */
bool topology_jurisdiction_restricted(const char *jurisdiction);

/* Whether region is one of cell's allowed regions. */
bool topology_cell_allows_region(const topology_cell *cell, const char *region);

/* Where some of a cell's data was found (by the residency scan: a data
 * directory, a replication connection, a config) or is declared. */
typedef struct topology_placement {
    const char *cell;   /* cell name */
    const char *object; /* what holds the data: "node us-n1", a path, ... */
    const char *region; /* where it is */
} topology_placement;

typedef struct topology_violation {
    char cell[TOPOLOGY_NAME_BYTES];
    char object[TOPOLOGY_OBJECT_BYTES];
    char region[TOPOLOGY_NAME_BYTES];
    const char *rule; /* "residency.unknown-cell", "residency.unknown-region",
                         "residency.witness", "residency.allowed-regions",
                         "residency.jurisdiction" (static strings) */
    char detail[TOPOLOGY_MESSAGE_BYTES];
} topology_violation;

/* Check placements against t's residency rules; with placements NULL
 * (placement_count 0), check every object t itself declares (nodes,
 * backup repositories, caches, meridiand). Pure: reads t and the
 * arguments only. Writes up to out_max violations to out (out may be
 * NULL when out_max is 0) and the number found to *violation_count
 * (which may exceed out_max). Returns 0. A topology that loaded has no
 * declared violations: the loader runs this same check. */
int topology_residency_violations(const topology *t, const topology_placement *placements,
                                  size_t placement_count, topology_violation *out,
                                  size_t out_max, size_t *violation_count);

/* --- Output. */

/* The topology in its normalized JSON form (every default filled in,
 * ports as numbers or "auto"): a valid topology file that loads to the
 * same topology. Returns a new reference, or NULL when out of memory. */
json_t *topology_to_json(const topology *t);

#endif
