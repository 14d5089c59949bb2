/*
 * cli_cell.c — reading a cell's etcd keys for meridianctl status,
 * history and switchover (see cli_cell.h).
 *
 * Status reads every key it shows in one etcd transaction, so the leader
 * key, the epoch, the synchronous set and the member keys all come from
 * one revision: an operator never sees a leader from before a failover
 * next to members from after it. The values are the keepers' JSON
 * (src/keeper/keeper.c); a field that is missing or of the wrong type is
 * shown as unknown, never invented.
 */
#include "cli/cli_cell.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/limits.h"
#include "common/mrd_assert.h"

#define KEY_BYTES CLI_CELL_KEY_BYTES
/* Columns of the status table. */
#define STATUS_COLS 11

void cli_cell_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int cli_cell_timeout_s_parse(const char *text, long def, long max, long *out)
{
    *out = def;
    if (text == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 1 || v > max)
        return -1;
    *out = v;
    return 0;
}

int cli_cell_name_check(const char *name, size_t max)
{
    size_t n = strlen(name);
    if (n == 0 || n > max)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
            return -1;
    }
    return 0;
}

etcd_client *cli_cell_connect(const char *endpoints, char *err, size_t err_size)
{
    return etcd_client_create(endpoints, CLI_CELL_ETCD_TIMEOUT_MS, err, err_size);
}

void cli_cell_key(char *out, const char *cell, const char *suffix)
{
    int n = snprintf(out, KEY_BYTES, "/meridian/%s/%s", cell, suffix);
    mrd_assert(n > 0 && n < KEY_BYTES);
}

void cli_json_copy_str(char *dst, size_t size, json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    snprintf(dst, size, "%s", s ? s : "");
}

int64_t cli_json_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return (int64_t)json_integer_value(v);
    if (json_is_string(v))
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* A decimal field ("117487512", or a non-negative integer) as an
 * unsigned number; false when absent or malformed. */
static bool get_u64_text(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *out = (uint64_t)json_integer_value(v);
        return true;
    }
    const char *s = json_string_value(v);
    if (s == NULL || s[0] < '0' || s[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long long n = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = (uint64_t)n;
    return true;
}

/* A value's text as a NUL-terminated string of at most size-1 bytes. */
static void copy_value(char *dst, size_t size, const etcd_kv *kv)
{
    size_t n = kv->value_len < size - 1 ? kv->value_len : size - 1;
    memcpy(dst, kv->value, n);
    dst[n] = '\0';
}

static cli_cell_member *member_slot(cli_cell *cell, const char *name)
{
    for (size_t i = 0; i < cell->member_count; i++)
        if (strcmp(cell->members[i].name, name) == 0)
            return &cell->members[i];
    if (cell->member_count >= CLI_CELL_NODES_MAX)
        return NULL;
    cli_cell_member *m = &cell->members[cell->member_count++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    return m;
}

/* "addrs": {"region": "host:port", ...} into m->addrs (bounded). */
static void parse_addrs(cli_cell_member *m, json_t *addrs)
{
    const char *region;
    json_t *v;
    if (!json_is_object(addrs))
        return;
    m->addr_count = 0;
    json_object_foreach(addrs, region, v)
    {
        const char *a = json_string_value(v);
        const char *colon = a != NULL ? strrchr(a, ':') : NULL;
        if (colon == NULL || m->addr_count >= KEEPER_NODES_MAX)
            continue;
        size_t hl = (size_t)(colon - a);
        if (hl == 0 || hl >= sizeof m->addrs[0].host)
            continue;
        int port = atoi(colon + 1);
        if (port <= 0 || port > 65535)
            continue;
        snprintf(m->addrs[m->addr_count].region, sizeof m->addrs[0].region, "%s", region);
        memcpy(m->addrs[m->addr_count].host, a, hl);
        m->addrs[m->addr_count].host[hl] = '\0';
        m->addrs[m->addr_count].port = port;
        m->addr_count++;
    }
}

static void parse_member(cli_cell *cell, const char *name, json_t *j)
{
    cli_cell_member *m = member_slot(cell, name);
    if (m == NULL)
        return;
    m->present = true;
    const char *role = json_string_value(json_object_get(j, "role"));
    if (role != NULL && strcmp(role, "dr") == 0)
        m->dr = true;
    cli_json_copy_str(m->state, sizeof m->state, j, "state");
    m->healthy = json_is_true(json_object_get(j, "healthy"));
    m->primary = json_is_true(json_object_get(j, "primary"));
    m->running = json_is_true(json_object_get(j, "running"));
    m->streaming = json_is_true(json_object_get(j, "streaming"));
    m->timeline = cli_json_int(j, "timeline");
    const char *lsn = json_string_value(json_object_get(j, "flush_lsn"));
    if (lsn != NULL && lsn[0] >= '0' && lsn[0] <= '9') {
        m->lsn_known = true;
        m->flush_lsn = strtoull(lsn, NULL, 10);
    }
    m->lag_known = get_u64_text(j, "lag_bytes", &m->lag_bytes);
    json_t *dl = json_object_get(j, "dr_lag_ms");
    if (json_is_integer(dl)) {
        m->dr_lag_known = true;
        m->dr_lag_ms = (int64_t)json_integer_value(dl);
    }
    cli_json_copy_str(m->zone, sizeof m->zone, j, "zone");
    cli_json_copy_str(m->region, sizeof m->region, j, "region");
    cli_json_copy_str(m->upstream, sizeof m->upstream, j, "upstream");
    cli_json_copy_str(m->host, sizeof m->host, j, "host");
    m->port = (int)cli_json_int(j, "port");
    cli_json_copy_str(m->why, sizeof m->why, j, "why");
    m->updated_ms = cli_json_int(j, "updated_ms");
    parse_addrs(m, json_object_get(j, "addrs"));
    json_t *reps = json_object_get(j, "replicas");
    if (json_is_array(reps)) {
        m->replicas_known = true;
        m->replica_count = 0;
        size_t i;
        json_t *v;
        json_array_foreach(reps, i, v)
        {
            if (json_is_string(v) && m->replica_count < KEEPER_NODES_MAX)
                snprintf(m->replicas[m->replica_count++], KEEPER_NAME_MAX, "%s",
                         json_string_value(v));
        }
    }
}

/* A registry key (nodes/<node>): written by its keeper at start (no
 * lease), so a node whose keeper is gone still shows, as unreachable. */
static void parse_registry(cli_cell *cell, const char *name, json_t *j)
{
    cli_cell_member *m = member_slot(cell, name);
    if (m == NULL)
        return;
    m->registered = true;
    const char *role = json_string_value(json_object_get(j, "role"));
    if (role != NULL && strcmp(role, "dr") == 0)
        m->dr = true;
    if (!m->present) {
        cli_json_copy_str(m->zone, sizeof m->zone, j, "zone");
        cli_json_copy_str(m->region, sizeof m->region, j, "region");
        cli_json_copy_str(m->host, sizeof m->host, j, "host");
        m->port = (int)cli_json_int(j, "port");
    }
}

static void parse_kv(cli_cell *cell, const char *prefix, const etcd_kv *kv)
{
    size_t plen = strlen(prefix);
    if (strncmp(kv->key, prefix, plen) != 0)
        return;
    cell->known = true;
    const char *name = kv->key + plen;
    if (strcmp(name, "epoch") == 0) {
        char text[32];
        copy_value(text, sizeof text, kv);
        cell->epoch = strtoll(text, NULL, 10);
        return;
    }
    if (strcmp(name, "last_leader") == 0) {
        copy_value(cell->last_leader, sizeof cell->last_leader, kv);
        return;
    }
    if (strcmp(name, "initialized") == 0) {
        cell->initialized = true;
        copy_value(cell->initialized_by, sizeof cell->initialized_by, kv);
        return;
    }
    json_t *j = json_loadb(kv->value, kv->value_len, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return;
    }
    if (strcmp(name, "leader") == 0) {
        cell->leader_present = true;
        cli_json_copy_str(cell->leader, sizeof cell->leader, j, "node");
        cell->leader_epoch = cli_json_int(j, "epoch");
        cli_json_copy_str(cell->leader_host, sizeof cell->leader_host, j, "host");
        cell->leader_port = (int)cli_json_int(j, "port");
        cli_json_copy_str(cell->leader_region, sizeof cell->leader_region, j, "region");
        cell->leader_lease = kv->lease;
    } else if (strcmp(name, "syncset") == 0) {
        cell->syncset_present = true;
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(j, "nodes"), i, v)
        {
            if (json_is_string(v) && cell->syncset_count < KEEPER_NODES_MAX)
                snprintf(cell->syncset[cell->syncset_count++], KEEPER_NAME_MAX, "%s",
                         json_string_value(v));
        }
    } else if (strcmp(name, "switchover") == 0) {
        cell->switchover_present = true;
        cli_json_copy_str(cell->switchover_to, sizeof cell->switchover_to, j, "to");
        cell->switchover_requested_at_ms = cli_json_int(j, "requested_at_ms");
    } else if (strcmp(name, "failover") == 0) {
        cell->failover_present = true;
        cli_json_copy_str(cell->failover_to, sizeof cell->failover_to, j, "to");
    } else if (strncmp(name, "members/", 8) == 0 && name[8] != '\0') {
        parse_member(cell, name + 8, j);
    } else if (strncmp(name, "nodes/", 6) == 0 && name[6] != '\0') {
        parse_registry(cell, name + 6, j);
    }
    json_decref(j);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const cli_cell_member *)a)->name, ((const cli_cell_member *)b)->name);
}

int cli_cell_read(etcd_client *c, const char *name, cli_cell *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->lease_ttl_s = -1;

    char prefix[KEY_BYTES], k_leader[KEY_BYTES], k_epoch[KEY_BYTES], k_last[KEY_BYTES],
        k_init[KEY_BYTES], k_sync[KEY_BYTES], k_switch[KEY_BYTES], k_members[KEY_BYTES],
        k_nodes[KEY_BYTES], k_failover[KEY_BYTES];
    cli_cell_key(prefix, name, "");
    cli_cell_key(k_leader, name, "leader");
    cli_cell_key(k_epoch, name, "epoch");
    cli_cell_key(k_last, name, "last_leader");
    cli_cell_key(k_init, name, "initialized");
    cli_cell_key(k_sync, name, "syncset");
    cli_cell_key(k_switch, name, "switchover");
    cli_cell_key(k_members, name, "members/");
    cli_cell_key(k_nodes, name, "nodes/");
    cli_cell_key(k_failover, name, "failover");
    const etcd_op ops[] = {
        /* the registry first, so live members' keys overwrite its fields */
        {.kind = ETCD_OP_GET, .key = k_nodes, .prefix = true},
        {.kind = ETCD_OP_GET, .key = k_leader},  {.kind = ETCD_OP_GET, .key = k_epoch},
        {.kind = ETCD_OP_GET, .key = k_last},    {.kind = ETCD_OP_GET, .key = k_init},
        {.kind = ETCD_OP_GET, .key = k_sync},    {.kind = ETCD_OP_GET, .key = k_switch},
        {.kind = ETCD_OP_GET, .key = k_failover},
        {.kind = ETCD_OP_GET, .key = k_members, .prefix = true},
    };
    etcd_txn txn = {.success = ops, .success_count = sizeof ops / sizeof ops[0]};
    etcd_txn_result res;
    int rc = etcd_txn_run(c, &txn, &res);
    if (rc != ETCD_OK)
        return rc;
    out->revision = res.revision;
    for (size_t i = 0; i < res.kv_count; i++)
        parse_kv(out, prefix, &res.kvs[i]);
    etcd_txn_result_release(&res);

    /* Nodes that should be there but have no key: the synchronous set
     * and the last leader. They matter most when they are missing. */
    for (size_t i = 0; i < out->syncset_count; i++) {
        cli_cell_member *m = member_slot(out, out->syncset[i]);
        if (m != NULL)
            m->in_syncset = true;
    }
    if (out->last_leader[0] != '\0')
        (void)member_slot(out, out->last_leader);
    if (out->leader_present && out->leader[0] != '\0')
        (void)member_slot(out, out->leader);
    qsort(out->members, out->member_count, sizeof out->members[0], by_name);

    if (out->leader_present && out->leader_lease != 0) {
        int64_t ttl = 0;
        int trc = etcd_lease_ttl(c, out->leader_lease, &ttl);
        if (trc == ETCD_OK)
            out->lease_ttl_s = ttl;
        else if (trc == ETCD_E_NOT_FOUND)
            out->lease_ttl_s = 0;
    }
    return 0;
}

const cli_cell_member *cli_cell_find(const cli_cell *cell, const char *name)
{
    for (size_t i = 0; i < cell->member_count; i++)
        if (strcmp(cell->members[i].name, name) == 0)
            return &cell->members[i];
    return NULL;
}

const char *cli_cell_role(const cli_cell *cell, const cli_cell_member *m)
{
    if (!m->present)
        return "unreachable";
    if (cell->leader_present && strcmp(cell->leader, m->name) == 0) {
        if (m->primary)
            return "leader";
        if (strcmp(m->state, "promoting") == 0)
            return "leader(promoting)";
        return m->running ? "leader(not writable)" : "leader(down)";
    }
    if (m->primary)
        return "primary!";
    if (!m->running)
        return "down";
    return "standby";
}

int64_t cli_cell_lag_bytes(const cli_cell *cell, const cli_cell_member *m)
{
    if (!cell->leader_present || !m->present || !m->lsn_known)
        return -1;
    const cli_cell_member *l = cli_cell_find(cell, cell->leader);
    if (l == NULL || !l->present || !l->lsn_known)
        return -1;
    if (l == m)
        return 0;
    if (m->flush_lsn >= l->flush_lsn)
        return 0; /* published at different moments; not behind */
    uint64_t lag = l->flush_lsn - m->flush_lsn;
    return lag > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)lag;
}

/* The value of "key=" in a conninfo string, into out. */
static void conninfo_value(const char *conninfo, const char *key, char *out, size_t size)
{
    out[0] = '\0';
    size_t klen = strlen(key);
    const char *p = conninfo;
    while ((p = strstr(p, key)) != NULL) {
        if ((p == conninfo || p[-1] == ' ') && p[klen] == '=') {
            p += klen + 1;
            size_t n = strcspn(p, " ");
            if (n >= size)
                n = size - 1;
            memcpy(out, p, n);
            out[n] = '\0';
            return;
        }
        p += klen;
    }
}

void cli_cell_upstream_name(const cli_cell *cell, const cli_cell_member *m, char *out,
                            size_t out_size)
{
    char host[64], port[16];
    out[0] = '\0';
    /* A promoted primary keeps its old primary_conninfo: not an upstream. */
    if (m->upstream[0] == '\0' || m->primary)
        return;
    conninfo_value(m->upstream, "host", host, sizeof host);
    conninfo_value(m->upstream, "port", port, sizeof port);
    int p = atoi(port);
    for (size_t i = 0; i < cell->member_count; i++) {
        const cli_cell_member *o = &cell->members[i];
        if (o == m || !o->present)
            continue;
        bool match = o->port == p && strcmp(o->host, host) == 0;
        for (size_t a = 0; !match && a < o->addr_count; a++)
            match = o->addrs[a].port == p && strcmp(o->addrs[a].host, host) == 0;
        if (match) {
            snprintf(out, out_size, "%s", o->name);
            return;
        }
    }
    if (cell->leader_present && cell->leader_port == p && strcmp(cell->leader_host, host) == 0) {
        snprintf(out, out_size, "%s", cell->leader);
        return;
    }
    snprintf(out, out_size, "%s:%s", host[0] ? host : "?", port[0] ? port : "?");
}

void cli_cell_lsn_format(uint64_t lsn, char *out, size_t out_size)
{
    snprintf(out, out_size, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xffffffffu));
}

void cli_cell_iso8601(int64_t ms, char *out, size_t out_size)
{
    if (ms <= 0) {
        snprintf(out, out_size, "-");
        return;
    }
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&s, &tm) == NULL) {
        snprintf(out, out_size, "-");
        return;
    }
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, out_size, "%s.%03dZ", date, (int)(ms % 1000));
}

size_t cli_cell_candidates(const cli_cell *cell, cli_cell_candidate *out, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < cell->syncset_count && n < max; i++) {
        const cli_cell_member *self = cli_cell_find(cell, cell->syncset[i]);
        cli_cell_candidate *c = &out[n++];
        memset(c, 0, sizeof *c);
        snprintf(c->node, sizeof c->node, "%s", cell->syncset[i]);
        if (self == NULL || !self->present) {
            c->why = "its keeper is not publishing (down or cut off from etcd)";
            continue;
        }
        if (!self->lsn_known) {
            c->why = "it has not published its WAL position";
            continue;
        }
        /* The keeper's own rule on what the members published. (The
         * keeper also requires each LSN to be published after the leader
         * vanished; this view cannot tell, so it may be optimistic.) */
        keeper_view v;
        memset(&v, 0, sizeof v);
        snprintf(v.self, sizeof v.self, "%s", self->name);
        snprintf(v.last_leader, sizeof v.last_leader, "%s", cell->last_leader);
        v.epoch = cell->epoch;
        v.syncset_count = cell->syncset_count;
        memcpy(v.syncset, cell->syncset, sizeof v.syncset);
        v.pg_running = self->running;
        v.pg_in_recovery = self->running && !self->primary;
        v.pg_timeline = (uint32_t)self->timeline;
        v.pg_flush_lsn = self->flush_lsn;
        for (size_t k = 0; k < cell->member_count && v.member_count < KEEPER_NODES_MAX; k++) {
            const cli_cell_member *o = &cell->members[k];
            if (o == self || !o->present)
                continue;
            keeper_member *km = &v.members[v.member_count++];
            snprintf(km->name, sizeof km->name, "%s", o->name);
            km->present = true;
            km->healthy = o->healthy;
            km->is_primary = o->primary;
            km->timeline = (uint32_t)o->timeline;
            km->flush_lsn = o->flush_lsn;
            km->streaming = o->streaming;
            km->fresh = o->lsn_known;
        }
        c->may_promote = keeper_may_promote(&v, &c->why);
    }
    return n;
}

/* ---- Status report. */

static const char *yes_no(bool b)
{
    return b ? "yes" : "no";
}

static void syncset_text(const cli_cell *cell, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < cell->syncset_count && used < size; i++) {
        int n = snprintf(out + used, size - used, "%s%s", i ? ", " : "", cell->syncset[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (cell->syncset_count == 0)
        snprintf(out, size, "%s", cell->syncset_present ? "(empty)" : "(not recorded)");
}

void cli_cell_status_print(FILE *out, const cli_cell *cell, const char *endpoints)
{
    char buf[512];
    fprintf(out, "cell        %s (etcd %s, revision %" PRId64 ")\n", cell->name, endpoints,
            cell->revision);
    if (!cell->initialized && cell->member_count == 0) {
        fprintf(out, "state       not initialised: no keeper has bootstrapped cell %s\n",
                cell->name);
    }
    if (cell->leader_present) {
        if (cell->lease_ttl_s >= 0)
            snprintf(buf, sizeof buf, "%" PRId64 " s left", cell->lease_ttl_s);
        else
            snprintf(buf, sizeof buf, "time left unknown");
        fprintf(out, "leader      %s (127.0.0.1:%d), lease %" PRIx64 " %s\n", cell->leader,
                cell->leader_port, (uint64_t)cell->leader_lease, buf);
    } else {
        fprintf(out, "leader      none\n");
    }
    if (cell->epoch > 0)
        fprintf(out, "epoch       %" PRId64 "\n", cell->epoch);
    else
        fprintf(out, "epoch       -\n");
    syncset_text(cell, buf, sizeof buf);
    fprintf(out, "sync set    %s\n", buf);
    if (cell->switchover_present) {
        char at[40];
        cli_cell_iso8601(cell->switchover_requested_at_ms, at, sizeof at);
        fprintf(out, "switchover  to %s requested at %s\n", cell->switchover_to, at);
    }
    fputc('\n', out);

    /* The node table: widths measured on the rows. */
    static const char *const headers[STATUS_COLS] = {
        "NODE", "ROLE", "STATE", "HEALTHY", "ZONE", "REGION", "TIMELINE",
        "FLUSH_LSN", "LAG_BYTES", "UPSTREAM", "SYNC"};
    char cells[CLI_CELL_NODES_MAX][STATUS_COLS][64];
    int width[STATUS_COLS];
    for (int c = 0; c < STATUS_COLS; c++)
        width[c] = (int)strlen(headers[c]);
    for (size_t r = 0; r < cell->member_count; r++) {
        const cli_cell_member *m = &cell->members[r];
        char (*row)[64] = cells[r];
        snprintf(row[0], 64, "%s", m->name);
        snprintf(row[1], 64, "%s", cli_cell_role(cell, m));
        snprintf(row[2], 64, "%s", m->present ? m->state : "-");
        snprintf(row[3], 64, "%s", m->present ? yes_no(m->healthy) : "-");
        snprintf(row[4], 64, "%s", m->present && m->zone[0] ? m->zone : "-");
        snprintf(row[5], 64, "%s", m->present && m->region[0] ? m->region : "-");
        if (m->present && m->timeline > 0)
            snprintf(row[6], 64, "%" PRId64, m->timeline);
        else
            snprintf(row[6], 64, "-");
        if (m->lsn_known)
            cli_cell_lsn_format(m->flush_lsn, row[7], 64);
        else
            snprintf(row[7], 64, "-");
        int64_t lag = cli_cell_lag_bytes(cell, m);
        if (lag >= 0)
            snprintf(row[8], 64, "%" PRId64, lag);
        else
            snprintf(row[8], 64, "-");
        char up[64];
        cli_cell_upstream_name(cell, m, up, sizeof up);
        snprintf(row[9], 64, "%s", up[0] ? up : "-");
        snprintf(row[10], 64, "%s", yes_no(m->in_syncset));
        for (int c = 0; c < STATUS_COLS; c++) {
            int w = (int)strlen(row[c]);
            if (w > width[c])
                width[c] = w;
        }
    }
    for (int c = 0; c < STATUS_COLS; c++)
        fprintf(out, "%-*s%s", c + 1 < STATUS_COLS ? width[c] : 0, headers[c],
                c + 1 < STATUS_COLS ? "  " : "\n");
    for (size_t r = 0; r < cell->member_count; r++)
        for (int c = 0; c < STATUS_COLS; c++)
            fprintf(out, "%-*s%s", c + 1 < STATUS_COLS ? width[c] : 0, cells[r][c],
                    c + 1 < STATUS_COLS ? "  " : "\n");
    if (cell->member_count == 0)
        fprintf(out, "(no member has published its state)\n");

    if (cell->leader_present)
        return;
    fprintf(out, "\nno leader: failover in progress or not possible\n");
    if (cell->last_leader[0] != '\0')
        fprintf(out, "  last leader: %s (epoch %" PRId64 ")\n", cell->last_leader, cell->epoch);
    for (size_t i = 0; i < cell->member_count; i++) {
        const cli_cell_member *m = &cell->members[i];
        if (m->present)
            fprintf(out, "  %s (%s): %s\n", m->name, m->state, m->why[0] ? m->why : "-");
        else
            fprintf(out, "  %s: no member key: its keeper is down or cut off from etcd\n",
                    m->name);
    }
    cli_cell_candidate cand[KEEPER_NODES_MAX];
    size_t nc = cli_cell_candidates(cell, cand, KEEPER_NODES_MAX);
    if (nc == 0) {
        fprintf(out, "  no synchronous set is recorded: no node is known to hold every "
                     "acknowledged commit, so none is promoted\n");
        return;
    }
    fprintf(out, "  promotion, by what the members published:\n");
    for (size_t i = 0; i < nc; i++)
        fprintf(out, "    %s: %s\n", cand[i].node,
                cand[i].may_promote ? "may promote (expect it within a keeper loop)" : cand[i].why);
}

/* json_integer or null. */
static json_t *int_or_null(bool known, int64_t v)
{
    return known ? json_integer((json_int_t)v) : json_null();
}

static json_t *str_or_null(const char *s)
{
    return s && s[0] ? json_string(s) : json_null();
}

static json_t *member_json(const cli_cell *cell, const cli_cell_member *m)
{
    char lsn[32], up[64], at[40];
    cli_cell_lsn_format(m->flush_lsn, lsn, sizeof lsn);
    cli_cell_upstream_name(cell, m, up, sizeof up);
    cli_cell_iso8601(m->updated_ms, at, sizeof at);
    int64_t lag = cli_cell_lag_bytes(cell, m);
    bool p = m->present;
    return json_pack("{s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
                     " s:b, s:o, s:o, s:o}",
                     "node", m->name, "role", cli_cell_role(cell, m), "present", p,
                     "state", p ? str_or_null(m->state) : json_null(),
                     "healthy", p ? json_boolean(m->healthy) : json_null(),
                     "running", p ? json_boolean(m->running) : json_null(),
                     "primary", p ? json_boolean(m->primary) : json_null(),
                     "streaming", p ? json_boolean(m->streaming) : json_null(),
                     "zone", p ? str_or_null(m->zone) : json_null(),
                     "region", p ? str_or_null(m->region) : json_null(),
                     "timeline", int_or_null(p && m->timeline > 0, m->timeline),
                     "flush_lsn", m->lsn_known ? json_string(lsn) : json_null(),
                     "lag_bytes", int_or_null(lag >= 0, lag),
                     "upstream", str_or_null(up),
                     "synchronous", m->in_syncset,
                     "why", p ? str_or_null(m->why) : json_null(),
                     "updated_ms", int_or_null(p && m->updated_ms > 0, m->updated_ms),
                     "updated_at", p && m->updated_ms > 0 ? json_string(at) : json_null());
}

json_t *cli_cell_status_json(const cli_cell *cell, const char *endpoints)
{
    json_t *nodes = json_array();
    json_t *sync = json_array();
    json_t *leader = json_null();
    json_t *no_leader = json_null();
    json_t *switchover = json_null();
    if (nodes == NULL || sync == NULL)
        goto fail;
    for (size_t i = 0; i < cell->member_count; i++) {
        json_t *m = member_json(cell, &cell->members[i]);
        if (m == NULL || json_array_append_new(nodes, m) != 0)
            goto fail;
    }
    for (size_t i = 0; i < cell->syncset_count; i++)
        if (json_array_append_new(sync, json_string(cell->syncset[i])) != 0)
            goto fail;
    if (cell->leader_present) {
        /* Lease ids are 64-bit: hex text, as etcdctl prints them. */
        char id[32];
        snprintf(id, sizeof id, "%" PRIx64, (uint64_t)cell->leader_lease);
        leader = json_pack("{s:s, s:I, s:s, s:i, s:s, s:o}", "node", cell->leader, "epoch",
                           (json_int_t)cell->leader_epoch, "host", cell->leader_host, "port",
                           cell->leader_port, "lease_id", id, "lease_ttl_s",
                           int_or_null(cell->lease_ttl_s >= 0, cell->lease_ttl_s));
        if (leader == NULL)
            goto fail;
    } else {
        json_t *reasons = json_array();
        json_t *cands = json_array();
        if (reasons == NULL || cands == NULL) {
            json_decref(reasons);
            json_decref(cands);
            goto fail;
        }
        for (size_t i = 0; i < cell->member_count; i++) {
            const cli_cell_member *m = &cell->members[i];
            json_array_append_new(
                reasons, json_pack("{s:s, s:o, s:s}", "node", m->name, "state",
                                   m->present ? json_string(m->state) : json_null(), "why",
                                   m->present ? m->why
                                              : "no member key: its keeper is down or cut off "
                                                "from etcd"));
        }
        cli_cell_candidate cand[KEEPER_NODES_MAX];
        size_t nc = cli_cell_candidates(cell, cand, KEEPER_NODES_MAX);
        for (size_t i = 0; i < nc; i++)
            json_array_append_new(cands, json_pack("{s:s, s:b, s:o}", "node", cand[i].node,
                                                   "may_promote", cand[i].may_promote, "why",
                                                   str_or_null(cand[i].why)));
        no_leader = json_pack("{s:s, s:o, s:o, s:o}", "message",
                              "no leader: failover in progress or not possible", "last_leader",
                              str_or_null(cell->last_leader), "members", reasons,
                              "candidates", cands);
        if (no_leader == NULL)
            goto fail;
    }
    if (cell->switchover_present) {
        switchover = json_pack("{s:s, s:I}", "to", cell->switchover_to, "requested_at_ms",
                               (json_int_t)cell->switchover_requested_at_ms);
        if (switchover == NULL)
            goto fail;
    }
    return json_pack("{s:s, s:s, s:I, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "cell",
                     cell->name, "etcd", endpoints, "revision", (json_int_t)cell->revision,
                     "initialized", cell->initialized, "epoch",
                     int_or_null(cell->epoch > 0, cell->epoch), "leader", leader,
                     "last_leader", str_or_null(cell->last_leader), "synchronous_set",
                     sync, "switchover", switchover, "nodes", nodes, "no_leader", no_leader);
fail:
    json_decref(nodes);
    json_decref(sync);
    json_decref(leader);
    json_decref(no_leader);
    json_decref(switchover);
    return NULL;
}

/* ---- History. */

static int by_epoch(const void *a, const void *b)
{
    int64_t x = ((const cli_cell_event *)a)->epoch, y = ((const cli_cell_event *)b)->epoch;
    return (x > y) - (x < y);
}

int cli_cell_history_read(etcd_client *c, const char *name, cli_cell_event **out,
                          size_t *count)
{
    char prefix[KEY_BYTES];
    cli_cell_key(prefix, name, "history/");
    *out = NULL;
    *count = 0;
    etcd_kv *kvs = NULL;
    size_t n = 0;
    int rc = etcd_get_prefix(c, prefix, &kvs, &n, CLI_CELL_HISTORY_MAX);
    if (rc != ETCD_OK)
        return rc;
    if (n == 0)
        return 0;
    cli_cell_event *ev = calloc(n, sizeof *ev);
    if (ev == NULL) {
        etcd_kvs_free(kvs, n);
        return ETCD_E_LIMIT;
    }
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *j = json_loadb(kvs[i].value, kvs[i].value_len, 0, NULL);
        if (!json_is_object(j)) {
            json_decref(j);
            continue;
        }
        cli_cell_event *e = &ev[used++];
        e->epoch = cli_json_int(j, "epoch");
        if (e->epoch == 0)
            e->epoch = strtoll(kvs[i].key + strlen(prefix), NULL, 10);
        cli_json_copy_str(e->kind, sizeof e->kind, j, "kind");
        cli_json_copy_str(e->node, sizeof e->node, j, "node");
        e->leader_lost_at_ms = cli_json_int(j, "leader_lost_at_ms");
        e->acquired_at_ms = cli_json_int(j, "acquired_at_ms");
        e->promoted_at_ms = cli_json_int(j, "promoted_at_ms");
        e->first_write_at_ms = cli_json_int(j, "first_write_at_ms");
        e->loss_bound_known = json_object_get(j, "loss_bound_bytes") != NULL;
        e->loss_bound_bytes = cli_json_int(j, "loss_bound_bytes");
        e->loss_bound_ms = cli_json_int(j, "loss_bound_ms");
        json_decref(j);
    }
    etcd_kvs_free(kvs, n);
    qsort(ev, used, sizeof *ev, by_epoch);
    /* What others recorded about each epoch: meridiand's first
     * acknowledged write, the lab follower's routing switch, the keepers'
     * rewinds. Missing or unreadable ones leave the fields 0. */
    static const char *const extra[] = {"writes/", "routing/", "rewinds/"};
    for (size_t x = 0; x < sizeof extra / sizeof extra[0] && used > 0; x++) {
        char pre[KEY_BYTES];
        cli_cell_key(pre, name, extra[x]);
        etcd_kv *more = NULL;
        size_t m = 0;
        if (etcd_get_prefix(c, pre, &more, &m, CLI_CELL_HISTORY_MAX) != ETCD_OK)
            continue;
        for (size_t i = 0; i < m; i++) {
            json_t *j = json_loadb(more[i].value, more[i].value_len, 0, NULL);
            int64_t epoch = strtoll(more[i].key + strlen(pre), NULL, 10);
            cli_cell_event *e = NULL;
            for (size_t k = 0; k < used && e == NULL && json_is_object(j); k++)
                if (ev[k].epoch == epoch)
                    e = &ev[k];
            if (e != NULL && x == 0) {
                e->first_write_at_ms = cli_json_int(j, "at_ms");
            } else if (e != NULL && x == 1 && e->routed_at_ms == 0) {
                e->routed_at_ms = cli_json_int(j, "at_ms");
                cli_json_copy_str(e->routed_region, sizeof e->routed_region, j, "region");
            } else if (e != NULL && x == 2) {
                e->rewinds++;
                if (cli_json_int(j, "discarded_bytes") > 0)
                    e->discarded_wal_bytes += cli_json_int(j, "discarded_bytes");
            }
            json_decref(j);
        }
        etcd_kvs_free(more, m);
    }
    if (used == 0) {
        free(ev);
        ev = NULL;
    }
    *out = ev;
    *count = used;
    return 0;
}

/* ---- Switchover. */

static int refuse(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(char *err, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
    return -1;
}

int cli_cell_switchover_check(const cli_cell *cell, const char *to, char *err,
                              size_t err_size)
{
    char members[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < cell->member_count && used < sizeof members; i++) {
        int n = snprintf(members + used, sizeof members - used, "%s%s", i ? ", " : "",
                         cell->members[i].name);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    const cli_cell_member *m = cli_cell_find(cell, to);
    if (m == NULL)
        return refuse(err, err_size, "unknown node %s in cell %s (its nodes: %s)", to,
                      cell->name, members[0] ? members : "none");
    if (!cell->leader_present)
        return refuse(err, err_size,
                      "cell %s has no leader: a switchover needs a running primary "
                      "(run `meridianctl status --cell %s` to see why)",
                      cell->name, cell->name);
    if (strcmp(cell->leader, to) == 0)
        return refuse(err, err_size, "%s is already the leader of cell %s (epoch %" PRId64
                                     "): nothing to switch",
                      to, cell->name, cell->epoch);
    if (!m->present)
        return refuse(err, err_size,
                      "%s is unreachable: its keeper publishes no state (down or cut off "
                      "from etcd)",
                      to);
    if (!m->healthy || !m->running)
        return refuse(err, err_size, "%s is not healthy: its PostgreSQL is not running (%s)",
                      to, m->why[0] ? m->why : m->state);
    if (!cli_cell_streams_from_leader(cell, m))
        return refuse(err, err_size,
                      "%s is not streaming from the leader %s: it would not have every "
                      "commit; wait until status shows it streaming",
                      to, cell->leader);
    if (!m->in_syncset) {
        char sync[256];
        syncset_text(cell, sync, sizeof sync);
        return refuse(err, err_size,
                      "%s is not in the synchronous set (%s): it may lack acknowledged "
                      "commits; pick a member of the set or wait until it joins",
                      to, sync);
    }
    return 0;
}

int cli_cell_switchover_request(etcd_client *c, const char *cell, const char *to,
                                int64_t *lease_id, int64_t *requested_at_ms,
                                bool *created, char *existing_to, size_t existing_size)
{
    char key[KEY_BYTES];
    cli_cell_key(key, cell, "switchover");
    *lease_id = 0;
    *created = false;
    if (existing_to && existing_size)
        existing_to[0] = '\0';
    int64_t lease = 0;
    int rc = etcd_lease_grant(c, CLI_CELL_SWITCHOVER_LEASE_S, &lease);
    if (rc != ETCD_OK)
        return rc;
    int64_t at = clock_wall_ms();
    json_t *j = json_pack("{s:s, s:I}", "to", to, "requested_at_ms", (json_int_t)at);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text == NULL) {
        etcd_lease_revoke(c, lease);
        return ETCD_E_LIMIT;
    }
    etcd_kv cur;
    memset(&cur, 0, sizeof cur);
    rc = etcd_create_if_absent(c, key, text, strlen(text), lease, created, &cur);
    free(text);
    if (rc != ETCD_OK || !*created) {
        if (rc == ETCD_OK && existing_to && existing_size) {
            json_t *e = json_loadb(cur.value, cur.value_len, 0, NULL);
            cli_json_copy_str(existing_to, existing_size, e, "to");
            json_decref(e);
        }
        etcd_kv_release(&cur);
        etcd_lease_revoke(c, lease);
        return rc;
    }
    *lease_id = lease;
    *requested_at_ms = at;
    return 0;
}

bool cli_cell_streams_from_leader(const cli_cell *cell, const cli_cell_member *m)
{
    if (!cell->leader_present || !m->present || strcmp(m->name, cell->leader) == 0)
        return false;
    const cli_cell_member *l = cli_cell_find(cell, cell->leader);
    if (l != NULL && l->present && l->replicas_known) {
        for (size_t i = 0; i < l->replica_count; i++)
            if (strcmp(l->replicas[i], m->name) == 0)
                return true;
        return false;
    }
    char up[KEEPER_NAME_MAX + 16];
    cli_cell_upstream_name(cell, m, up, sizeof up);
    return m->streaming && strcmp(up, cell->leader) == 0;
}

static int region_cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

int cli_cell_known_regions(etcd_client *c, char (*out)[CLI_CELL_REGION_BYTES], size_t max,
                           size_t *count)
{
    *count = 0;
    etcd_kv *kvs = NULL;
    size_t n = 0;
    int rc = etcd_get_prefix(c, "/meridian/", &kvs, &n, LIMIT_ETCD_PREFIX_KEYS_MAX);
    if (rc != ETCD_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        /* /meridian/<cell>/nodes/<node> or /meridian/<cell>/members/<node> */
        const char *rest = strchr(kvs[i].key + strlen("/meridian/"), '/');
        if (rest == NULL ||
            (strncmp(rest, "/nodes/", 7) != 0 && strncmp(rest, "/members/", 9) != 0))
            continue;
        json_t *j = json_loadb(kvs[i].value, kvs[i].value_len, 0, NULL);
        const char *r = json_string_value(json_object_get(j, "region"));
        bool seen = r == NULL || r[0] == '\0' || strlen(r) >= CLI_CELL_REGION_BYTES;
        for (size_t k = 0; !seen && k < *count; k++)
            seen = strcmp(out[k], r) == 0;
        if (!seen && *count < max)
            snprintf(out[(*count)++], CLI_CELL_REGION_BYTES, "%s", r);
        json_decref(j);
    }
    etcd_kvs_free(kvs, n);
    qsort(out, *count, CLI_CELL_REGION_BYTES, region_cmp);
    return 0;
}

/* Append to buf (bounded; silently cut when full). */
static void append(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void append(char *buf, size_t size, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, size - used, fmt, ap);
    va_end(ap);
}

int cli_cell_switchover_pick(const cli_cell *cell, const char *region,
                             const char (*known_regions)[CLI_CELL_REGION_BYTES],
                             size_t known_count, char *to, size_t to_size, char *err,
                             size_t err_size)
{
    char list[768] = "";
    to[0] = '\0';
    if (!cell->leader_present)
        return refuse(err, err_size,
                      "cell %s has no leader: a switchover needs a running primary "
                      "(run `meridianctl status --cell %s` to see why)",
                      cell->name, cell->name);
    bool in_cell = false;
    for (size_t i = 0; i < cell->member_count; i++) {
        const cli_cell_member *m = &cell->members[i];
        append(list, sizeof list, "%s%s in %s", i ? ", " : "", m->name,
               m->region[0] ? m->region : "?");
        if (strcmp(m->region, region) == 0)
            in_cell = true;
    }
    bool known = in_cell || strcmp(cell->leader_region, region) == 0;
    for (size_t i = 0; !known && known_regions != NULL && i < known_count; i++)
        known = strcmp(known_regions[i], region) == 0;
    if (!known) {
        char regions[512] = "";
        for (size_t i = 0; known_regions != NULL && i < known_count; i++)
            append(regions, sizeof regions, "%s%s", i ? ", " : "", known_regions[i]);
        if (known_regions != NULL)
            return refuse(err, err_size,
                          "unknown region %s: no node of any cell is there (regions with "
                          "nodes: %s); check the spelling against the topology",
                          region, regions[0] ? regions : "none");
        return refuse(err, err_size,
                      "unknown region %s: cell %s has no node there (its nodes: %s)", region,
                      cell->name, list[0] ? list : "none");
    }
    const cli_cell_member *leader = cli_cell_find(cell, cell->leader);
    const char *leader_region = cell->leader_region[0] ? cell->leader_region
                                : leader != NULL ? leader->region : "";
    if (strcmp(leader_region, region) == 0)
        return refuse(err, err_size,
                      "the leader %s of cell %s is already in %s (epoch %" PRId64
                      "): nothing to switch",
                      cell->leader, cell->name, region, cell->epoch);
    if (!in_cell)
        return refuse(err, err_size,
                      "cell %s has no node in region %s (its nodes: %s): pick a region "
                      "where it has nodes",
                      cell->name, region, list[0] ? list : "none");

    /* Every node of the cell in region: eligible, or why not. */
    const cli_cell_member *best = NULL;
    char why_not[768] = "";
    size_t streaming = 0;
    for (size_t i = 0; i < cell->member_count; i++) {
        const cli_cell_member *m = &cell->members[i];
        if (strcmp(m->region, region) != 0)
            continue;
        const char *state = m->present ? m->state : "unreachable";
        bool str = cli_cell_streams_from_leader(cell, m);
        if (!m->present)
            append(why_not, sizeof why_not, "%s%s (unreachable): its keeper publishes no state",
                   why_not[0] ? "; " : "", m->name);
        else if (!m->healthy || !m->running)
            append(why_not, sizeof why_not, "%s%s (%s): PostgreSQL not running",
                   why_not[0] ? "; " : "", m->name, state);
        else if (!str)
            append(why_not, sizeof why_not, "%s%s (%s): not streaming from %s",
                   why_not[0] ? "; " : "", m->name, state, cell->leader);
        else if (!m->in_syncset)
            append(why_not, sizeof why_not, "%s%s (%s): streaming but not in the synchronous "
                   "set yet", why_not[0] ? "; " : "", m->name, state);
        if (m->present && str)
            streaming++;
        if (!m->present || !m->healthy || !m->running || !str || !m->in_syncset)
            continue;
        if (best == NULL || m->flush_lsn > best->flush_lsn ||
            (m->flush_lsn == best->flush_lsn && strcmp(m->name, best->name) < 0))
            best = m;
    }
    if (best == NULL)
        return refuse(err, err_size,
                      "no node of cell %s in %s can take over from %s yet: %s. %s; wait until "
                      "`meridianctl status --cell %s` shows them streaming from %s and in the "
                      "synchronous set, then run this again",
                      cell->name, region, cell->leader, why_not,
                      streaming == 0 ? "none is streaming from the leader"
                                     : "none is in the synchronous set",
                      cell->name, cell->leader);
    snprintf(to, to_size, "%s", best->name);
    return 0;
}
