/*
 * cli_region.c — a cell's regional layout in etcd, the loss bound and
 * request of a manual regional failover, the lab's records, and the
 * residency scan of a running lab (see cli_region.h).
 *
 * The failover part reads the keepers' keys (src/keeper/keeper.c) in one
 * transaction so the leader, the DR standby's LSN and the other members'
 * LSNs come from one revision. The residency part trusts no single
 * record: a data directory's cell is its lineage (the PostgreSQL system
 * identifier in global/pg_control, shared by every copy of a cell and by
 * nothing else), anchored on the cell's leader as etcd names it; its
 * region is where the lab runs the process, cross-checked with the
 * keeper's own registration in etcd. Replication connections are read
 * from each running PostgreSQL (pg_stat_replication, pg_stat_wal_receiver).
 */
#include "cli/cli_region.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "cli/cli_cell.h"
#include "common/clock.h"
#include "common/mrd_assert.h"
#include "drill/drill.h"

#define KEY_BYTES CLI_CELL_KEY_BYTES
/* Lines of DIR/env and DIR/procs read at most (lab.sh: MAX_PROCS 256). */
#define LAB_VARS_MAX 1024
#define LAB_PROCS_MAX 256
#define LAB_LINE_BYTES 4096
/* Entries of DIR/nodes looked at, at most. */
#define LAB_NODE_DIRS_MAX 256
/* Nodes the scan tracks: every topology node plus stray directories. */
#define SCAN_NODES_MAX (LIMIT_TOPOLOGY_CELLS_MAX * LIMIT_TOPOLOGY_CELL_NODES_MAX + 64)
/* Rows of one pg_stat_replication read, at most. */
#define SCAN_REPLICATION_ROWS_MAX 64
/* Arguments of one recorded command line, at most. */
#define CMD_ARGS_MAX 64
/* libpq connect timeout of the scan, seconds. */
#define SCAN_PG_CONNECT_TIMEOUT_S 2

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

/* snprintf for text that may be cut (evidence, paths echoed back): the
 * result is always terminated; cutting is acceptable there. */
static void textf(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void textf(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

static void note(char (*list)[CLI_REGION_NOTE_BYTES], size_t *count, size_t max,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void note(char (*list)[CLI_REGION_NOTE_BYTES], size_t *count, size_t max,
                 const char *fmt, ...)
{
    if (*count >= max)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(list[*count], CLI_REGION_NOTE_BYTES, fmt, ap);
    va_end(ap);
    (*count)++;
}

/* ------------------------------------------------------------------ */
/* The cell in etcd                                                    */

const cli_cell_member *cli_region_dr_in(const cli_cell *cell, const char *region)
{
    for (size_t i = 0; i < cell->member_count; i++)
        if (cell->members[i].dr && strcmp(cell->members[i].region, region) == 0)
            return &cell->members[i];
    return NULL;
}

void cli_region_loss_bound(const cli_cell *cell, const cli_cell_member *dr,
                           cli_region_bound *out)
{
    mrd_assert(cell != NULL && dr != NULL && out != NULL);
    memset(out, 0, sizeof *out);
    out->dr_lag_ms = dr->dr_lag_known ? dr->dr_lag_ms : -1;
    out->as_of_ms = dr->present ? dr->updated_ms : 0;
    bool leader_known = false;
    if (cell->leader_present) {
        const cli_cell_member *l = cli_cell_find(cell, cell->leader);
        if (l != NULL && l->present && l->lsn_known) {
            out->leader_lsn = l->flush_lsn;
            leader_known = true;
            snprintf(out->leader_lsn_source, sizeof out->leader_lsn_source,
                     "leader %s's member key", l->name);
        }
    }
    for (size_t i = 0; i < cell->member_count; i++) {
        const cli_cell_member *n = &cell->members[i];
        if (n == dr || !n->present || !n->lsn_known)
            continue;
        if (!leader_known || n->flush_lsn > out->leader_lsn) {
            out->leader_lsn = n->flush_lsn;
            leader_known = true;
            snprintf(out->leader_lsn_source, sizeof out->leader_lsn_source,
                     "highest published member LSN (%s)", n->name);
        }
    }
    if (dr->present && dr->lsn_known && dr->lag_known) {
        uint64_t seen = 0;
        if (!__builtin_add_overflow(dr->flush_lsn, dr->lag_bytes, &seen) &&
            (!leader_known || seen > out->leader_lsn)) {
            out->leader_lsn = seen;
            leader_known = true;
            snprintf(out->leader_lsn_source, sizeof out->leader_lsn_source,
                     "the leader's LSN as %s last saw it (its flush LSN + lag_bytes)",
                     dr->name);
        }
    }
    if (!dr->present || !dr->lsn_known || !leader_known)
        return;
    out->known = true;
    out->dr_lsn = dr->flush_lsn;
    out->gap_bytes = out->leader_lsn > out->dr_lsn ? out->leader_lsn - out->dr_lsn : 0;
    out->transfers_estimate =
        (out->gap_bytes + CLI_REGION_TRANSFER_WAL_BYTES - 1) / CLI_REGION_TRANSFER_WAL_BYTES;
}

int cli_region_failover_request(etcd_client *c, const char *cell, const char *to,
                                int64_t *lease_id, int64_t *requested_at_ms, bool *created,
                                char *existing_to, size_t existing_size)
{
    char key[KEY_BYTES];
    cli_cell_key(key, cell, "failover");
    *lease_id = 0;
    *created = false;
    if (existing_to != NULL && existing_size > 0)
        existing_to[0] = '\0';
    int64_t lease = 0;
    int rc = etcd_lease_grant(c, CLI_REGION_FAILOVER_LEASE_S, &lease);
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
        if (rc == ETCD_OK && existing_to != NULL && existing_size > 0) {
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

int cli_region_event_get(etcd_client *c, const char *cell, int64_t epoch,
                         cli_region_event *out)
{
    memset(out, 0, sizeof *out);
    char suffix[64], key[KEY_BYTES];
    snprintf(suffix, sizeof suffix, "history/%020" PRId64, epoch);
    cli_cell_key(key, cell, suffix);
    etcd_kv kv;
    int rc = etcd_get(c, key, &kv);
    if (rc != ETCD_OK)
        return rc;
    json_t *j = json_loadb(kv.value, kv.value_len, 0, NULL);
    etcd_kv_release(&kv);
    if (!json_is_object(j)) {
        json_decref(j);
        return ETCD_E_PROTOCOL;
    }
    out->epoch = cli_json_int(j, "epoch");
    if (out->epoch == 0)
        out->epoch = epoch;
    cli_json_copy_str(out->kind, sizeof out->kind, j, "kind");
    cli_json_copy_str(out->node, sizeof out->node, j, "node");
    out->leader_lost_at_ms = cli_json_int(j, "leader_lost_at_ms");
    out->acquired_at_ms = cli_json_int(j, "acquired_at_ms");
    out->promoted_at_ms = cli_json_int(j, "promoted_at_ms");
    json_decref(j);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The lab's records                                                   */

void cli_region_lab_vn(const char *name, char *out, size_t out_size)
{
    mrd_assert(out_size > 0);
    size_t i = 0;
    for (; name[i] != '\0' && i + 1 < out_size; i++) {
        char ch = name[i];
        if (ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 'a' + 'A');
        else if (ch == '-' || ch == '.')
            ch = '_';
        out[i] = ch;
    }
    out[i] = '\0';
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static bool dir_has_env(const char *dir)
{
    char p[CLI_REGION_PATH_BYTES + 8];
    int n = snprintf(p, sizeof p, "%s/env", dir);
    return n > 0 && (size_t)n < sizeof p && file_exists(p);
}

int cli_region_lab_default_dir(char *out, size_t out_size, char *err, size_t err_size)
{
    const char *env = getenv("LAB_DIR");
    if (env != NULL && env[0] != '\0') {
        snprintf(out, out_size, "%s", env);
        return 0;
    }
    char script[CLI_REGION_PATH_BYTES], hint[CLI_REGION_PATH_BYTES];
    if (drill_locate_cell_script(NULL, script, sizeof script, hint, sizeof hint) != 0) {
        snprintf(err, err_size, "no lab directory given and no source tree found (%s)", hint);
        return -1;
    }
    /* .../scripts/cell.sh -> the repository root */
    char resolved[PATH_MAX];
    const char *root = realpath(script, resolved) != NULL ? resolved : script;
    char rootbuf[CLI_REGION_PATH_BYTES];
    textf(rootbuf, sizeof rootbuf, "%s", root);
    for (int up = 0; up < 2; up++) {
        char *slash = strrchr(rootbuf, '/');
        if (slash == NULL) {
            snprintf(err, err_size, "cannot find the source root from %s", script);
            return -1;
        }
        *slash = '\0';
    }
    char local[CLI_REGION_PATH_BYTES + 8], var[CLI_REGION_PATH_BYTES];
    snprintf(local, sizeof local, "%s/.lab", rootbuf);
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)rootbuf, strlen(rootbuf));
    char hex[2 * crypto_hash_sha256_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, digest, sizeof digest);
    hex[12] = '\0';
    snprintf(var, sizeof var, "/var/tmp/meridian-lab-%s", hex);
    if (!dir_has_env(local) && dir_has_env(var))
        snprintf(out, out_size, "%s", var);
    else
        snprintf(out, out_size, "%s", local);
    return 0;
}

/* Undo bash's printf %q on one value (backslash escapes, '...', and
 * $'...' with the common C escapes). */
static void unquote(const char *in, char *out, size_t out_size)
{
    size_t o = 0;
    const char *p = in;
    while (*p != '\0' && *p != '\n' && o + 1 < out_size) {
        if (p[0] == '$' && p[1] == '\'') {
            p += 2;
            while (*p != '\0' && *p != '\'' && o + 1 < out_size) {
                if (*p == '\\' && p[1] != '\0') {
                    p++;
                    char ch = *p;
                    if (ch == 'n')
                        ch = '\n';
                    else if (ch == 't')
                        ch = '\t';
                    else if (ch == 'r')
                        ch = '\r';
                    out[o++] = ch;
                    p++;
                } else {
                    out[o++] = *p++;
                }
            }
            if (*p == '\'')
                p++;
        } else if (*p == '\'') {
            p++;
            while (*p != '\0' && *p != '\'' && o + 1 < out_size)
                out[o++] = *p++;
            if (*p == '\'')
                p++;
        } else if (*p == '\\' && p[1] != '\0') {
            out[o++] = p[1];
            p += 2;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
}

/* The PID in a pid file (first line), or 0. */
static int read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    char line[64] = "";
    if (fgets(line, sizeof line, f) == NULL)
        line[0] = '\0';
    fclose(f);
    long pid = strtol(line, NULL, 10);
    return pid > 0 && pid < INT_MAX ? (int)pid : 0;
}

/* Whether pid runs and its command line names dir/ (PIDs get reused). */
static bool pid_is_ours(int pid, const char *dir)
{
    if (pid <= 0 || (kill(pid, 0) != 0 && errno != EPERM))
        return false;
    char path[64], cmd[8192];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    size_t n = fread(cmd, 1, sizeof cmd - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
        if (cmd[i] == '\0')
            cmd[i] = ' ';
    cmd[n] = '\0';
    char want[CLI_REGION_PATH_BYTES + 2];
    snprintf(want, sizeof want, "%s/", dir);
    return strstr(cmd, want) != NULL;
}

static void field(char **cursor, char *out, size_t size)
{
    char *p = *cursor;
    size_t n = strcspn(p, "|\n");
    snprintf(out, size, "%.*s", (int)n, p);
    p += n;
    if (*p == '|')
        p++;
    *cursor = p;
}

int cli_region_lab_open(const char *dir, cli_region_lab *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    char resolved[PATH_MAX];
    textf(out->dir, sizeof out->dir, "%s", realpath(dir, resolved) ? resolved : dir);
    char path[CLI_REGION_PATH_BYTES + 16];
    snprintf(path, sizeof path, "%s/env", out->dir);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        char down[CLI_REGION_PATH_BYTES + 16];
        snprintf(down, sizeof down, "%s/env.down", out->dir);
        if (file_exists(down))
            snprintf(err, err_size, "the lab in %s is down (env.down): run `meridianctl lab up "
                                    "--dir %s`",
                     out->dir, out->dir);
        else
            snprintf(err, err_size, "%s holds no lab (no env file): pass --dir LABDIR or run "
                                    "`meridianctl lab up`",
                     out->dir);
        return -1;
    }
    out->vars = calloc(LAB_VARS_MAX, sizeof *out->vars);
    out->procs = calloc(LAB_PROCS_MAX, sizeof *out->procs);
    if (out->vars == NULL || out->procs == NULL) {
        fclose(f);
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    char line[LAB_LINE_BYTES];
    while (fgets(line, sizeof line, f) != NULL && out->var_count < LAB_VARS_MAX) {
        char *eq = strchr(line, '=');
        if (eq == NULL || eq == line || (size_t)(eq - line) >= sizeof out->vars[0].name)
            continue;
        cli_region_lab_var *v = &out->vars[out->var_count++];
        snprintf(v->name, sizeof v->name, "%.*s", (int)(eq - line), line);
        unquote(eq + 1, v->value, sizeof v->value);
    }
    fclose(f);

    snprintf(path, sizeof path, "%s/procs", out->dir);
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, err_size, "cannot read %s: %s", path, strerror(errno));
        goto fail;
    }
    while (fgets(line, sizeof line, f) != NULL && out->proc_count < LAB_PROCS_MAX) {
        if (line[0] == '\n' || line[0] == '\0')
            continue;
        cli_region_proc *p = &out->procs[out->proc_count++];
        char *cur = line;
        field(&cur, p->name, sizeof p->name);
        field(&cur, p->kind, sizeof p->kind);
        field(&cur, p->region, sizeof p->region);
        field(&cur, p->zone, sizeof p->zone);
        field(&cur, p->cell, sizeof p->cell);
        field(&cur, p->pidfile, sizeof p->pidfile);
        int pid = read_pid(p->pidfile);
        p->alive = pid_is_ours(pid, out->dir);
        p->pid = p->alive ? pid : 0;
    }
    fclose(f);
    return 0;
fail:
    cli_region_lab_close(out);
    return -1;
}

void cli_region_lab_close(cli_region_lab *lab)
{
    if (lab == NULL)
        return;
    free(lab->vars);
    free(lab->procs);
    lab->vars = NULL;
    lab->procs = NULL;
    lab->var_count = lab->proc_count = 0;
}

const char *cli_region_lab_var_get(const cli_region_lab *lab, const char *name)
{
    for (size_t i = 0; i < lab->var_count; i++)
        if (strcmp(lab->vars[i].name, name) == 0)
            return lab->vars[i].value;
    return NULL;
}

const cli_region_proc *cli_region_lab_proc(const cli_region_lab *lab, const char *name)
{
    for (size_t i = 0; i < lab->proc_count; i++)
        if (strcmp(lab->procs[i].name, name) == 0)
            return &lab->procs[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The residency scan                                                  */

/* What the scan knows of one node. */
typedef struct scan_node {
    char name[KEEPER_NAME_MAX];
    char topo_cell[TOPOLOGY_NAME_BYTES];   /* "" when the topology lacks it */
    char topo_region[TOPOLOGY_NAME_BYTES];
    char lab_cell[CLI_REGION_TEXT_BYTES];  /* DIR/procs postgres-<node> */
    char lab_region[CLI_REGION_TEXT_BYTES];
    char reg_cell[CLI_REGION_TEXT_BYTES];  /* etcd nodes/<node> */
    char reg_region[CLI_REGION_TEXT_BYTES];
    bool has_data;                          /* DIR/nodes/<n>/data/PG_VERSION */
    bool sysid_known;
    uint64_t sysid;
    bool alive;                             /* its postmaster runs */
    int pg_port;
    /* Resolved. */
    char cell[CLI_REGION_TEXT_BYTES];
    char cell_evidence[CLI_REGION_EVIDENCE_BYTES];
    char region[CLI_REGION_TEXT_BYTES];
    char region_evidence[CLI_REGION_EVIDENCE_BYTES];
} scan_node;

typedef struct scan_ctx {
    const cli_region_lab *lab;
    const topology *topo;
    cli_region_scan *out;
    size_t node_count;
    scan_node *nodes;
    size_t cell_count;
    cli_cell *cells; /* per topology cell, from etcd (when etcd_ok) */
    bool *cell_read;
} scan_ctx;

static scan_node *scan_node_find(scan_ctx *s, const char *name)
{
    for (size_t i = 0; i < s->node_count; i++)
        if (strcmp(s->nodes[i].name, name) == 0)
            return &s->nodes[i];
    return NULL;
}

static scan_node *scan_node_add(scan_ctx *s, const char *name)
{
    scan_node *n = scan_node_find(s, name);
    if (n != NULL)
        return n;
    if (s->node_count >= SCAN_NODES_MAX || strlen(name) >= KEEPER_NAME_MAX)
        return NULL;
    n = &s->nodes[s->node_count++];
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    return n;
}

static cli_region_object *object_add(scan_ctx *s, const char *kind, const char *cell,
                                     const char *region, bool live, const char *object_fmt, ...)
    __attribute__((format(printf, 6, 7)));

static cli_region_object *object_add(scan_ctx *s, const char *kind, const char *cell,
                                     const char *region, bool live, const char *object_fmt, ...)
{
    cli_region_scan *out = s->out;
    if (out->object_count >= CLI_REGION_SCAN_OBJECTS_MAX) {
        note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
             "more than %d objects: the rest were not checked", CLI_REGION_SCAN_OBJECTS_MAX);
        return NULL;
    }
    cli_region_object *o = &out->objects[out->object_count++];
    memset(o, 0, sizeof *o);
    snprintf(o->kind, sizeof o->kind, "%s", kind);
    snprintf(o->cell, sizeof o->cell, "%s", cell[0] ? cell : "?");
    snprintf(o->region, sizeof o->region, "%s", region[0] ? region : "unknown");
    o->live = live;
    va_list ap;
    va_start(ap, object_fmt);
    vsnprintf(o->object, sizeof o->object, object_fmt, ap);
    va_end(ap);
    return o;
}

/* The system identifier of a data directory: the first 8 bytes of
 * global/pg_control (ControlFileData.system_identifier). Readable even
 * when PostgreSQL is down. */
static bool read_sysid(const char *datadir, uint64_t *out)
{
    char path[CLI_REGION_PATH_BYTES + 32];
    int len = snprintf(path, sizeof path, "%s/global/pg_control", datadir);
    if (len < 0 || (size_t)len >= sizeof path)
        return false;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return false;
    uint64_t id = 0;
    size_t n = fread(&id, sizeof id, 1, f);
    fclose(f);
    if (n != 1 || id == 0)
        return false;
    *out = id;
    return true;
}

static void scan_collect_nodes(scan_ctx *s)
{
    const topology *t = s->topo;
    for (size_t ci = 0; ci < topology_cell_count(t); ci++) {
        const topology_cell *c = topology_cell_at(t, ci);
        for (size_t i = 0; i < c->node_count; i++) {
            scan_node *n = scan_node_add(s, c->nodes[i].name);
            if (n == NULL)
                continue;
            snprintf(n->topo_cell, sizeof n->topo_cell, "%s", c->name);
            snprintf(n->topo_region, sizeof n->topo_region, "%s", c->nodes[i].region);
        }
    }
    /* Directories the topology does not name are data too. */
    char nodes_dir[CLI_REGION_PATH_BYTES + 16];
    snprintf(nodes_dir, sizeof nodes_dir, "%s/nodes", s->lab->dir);
    DIR *d = opendir(nodes_dir);
    if (d != NULL) {
        struct dirent *e;
        size_t seen = 0;
        while ((e = readdir(d)) != NULL && seen++ < LAB_NODE_DIRS_MAX) {
            if (e->d_name[0] == '.')
                continue;
            (void)scan_node_add(s, e->d_name);
        }
        closedir(d);
    }
    for (size_t i = 0; i < s->node_count; i++) {
        scan_node *n = &s->nodes[i];
        char pname[128], vn[96], var[128];
        snprintf(pname, sizeof pname, "postgres-%s", n->name);
        const cli_region_proc *p = cli_region_lab_proc(s->lab, pname);
        if (p != NULL) {
            snprintf(n->lab_cell, sizeof n->lab_cell, "%s", p->cell);
            snprintf(n->lab_region, sizeof n->lab_region, "%s", p->region);
            n->alive = p->alive;
        }
        cli_region_lab_vn(n->name, vn, sizeof vn);
        snprintf(var, sizeof var, "PG_%s", vn);
        const char *port = cli_region_lab_var_get(s->lab, var);
        n->pg_port = port != NULL ? atoi(port) : 0;
        char data[CLI_REGION_PATH_BYTES + 64], ver[CLI_REGION_PATH_BYTES + 80];
        snprintf(data, sizeof data, "%s/nodes/%s/data", s->lab->dir, n->name);
        snprintf(ver, sizeof ver, "%s/PG_VERSION", data);
        n->has_data = file_exists(ver);
        if (n->has_data)
            n->sysid_known = read_sysid(data, &n->sysid);
    }
}

static void scan_read_etcd(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    const char *eps = cli_region_lab_var_get(s->lab, "ETCD_DIRECT");
    if (eps == NULL || eps[0] == '\0') {
        note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
             "etcd: DIR/env has no ETCD_DIRECT: the keepers' node registry was not read");
        return;
    }
    char err[512];
    etcd_client *c = cli_cell_connect(eps, err, sizeof err);
    if (c == NULL) {
        note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
             "etcd at %s: %s", eps, err);
        return;
    }
    out->etcd_ok = true;
    for (size_t ci = 0; ci < s->cell_count; ci++) {
        const topology_cell *tc = topology_cell_at(s->topo, ci);
        int rc = cli_cell_read(c, tc->name, &s->cells[ci]);
        if (rc != ETCD_OK) {
            out->etcd_ok = false;
            note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
                 "etcd at %s: cell %s's registry unreadable (%s): node regions come from "
                 "the lab's records only",
                 eps, tc->name, etcd_client_last_error(c));
            continue;
        }
        s->cell_read[ci] = true;
        for (size_t i = 0; i < s->cells[ci].member_count; i++) {
            const cli_cell_member *rn = &s->cells[ci].members[i];
            if (!rn->registered && !rn->present)
                continue; /* named by the leader keys or the synchronous set only */
            scan_node *n = scan_node_add(s, rn->name);
            if (n == NULL)
                continue;
            snprintf(n->reg_cell, sizeof n->reg_cell, "%s", tc->name);
            snprintf(n->reg_region, sizeof n->reg_region, "%s", rn->region);
        }
    }
    etcd_client_free(c);
}

/* The sysid anchoring cell ci's lineage: its leader's, else the one most
 * of its nodes (per etcd, else the lab, else the topology) share. */
static bool cell_anchor(scan_ctx *s, size_t ci, uint64_t *sysid, char *why, size_t why_size)
{
    const topology_cell *tc = topology_cell_at(s->topo, ci);
    if (s->cell_read[ci] && s->cells[ci].leader_present) {
        const scan_node *l = scan_node_find(s, s->cells[ci].leader);
        if (l != NULL && l->sysid_known) {
            *sysid = l->sysid;
            snprintf(why, why_size, "the lineage of cell %s's leader %s", tc->name, l->name);
            return true;
        }
    }
    uint64_t best = 0;
    size_t best_votes = 0;
    for (size_t i = 0; i < s->node_count; i++) {
        const scan_node *a = &s->nodes[i];
        const char *cell = a->reg_cell[0] ? a->reg_cell : a->lab_cell[0] ? a->lab_cell
                                                                          : a->topo_cell;
        if (!a->sysid_known || strcmp(cell, tc->name) != 0)
            continue;
        size_t votes = 0;
        for (size_t j = 0; j < s->node_count; j++) {
            const scan_node *b = &s->nodes[j];
            const char *bc = b->reg_cell[0] ? b->reg_cell : b->lab_cell[0] ? b->lab_cell
                                                                            : b->topo_cell;
            if (b->sysid_known && b->sysid == a->sysid && strcmp(bc, tc->name) == 0)
                votes++;
        }
        if (votes > best_votes) {
            best_votes = votes;
            best = a->sysid;
        }
    }
    if (best_votes == 0)
        return false;
    *sysid = best;
    snprintf(why, why_size, "the lineage %zu node(s) of cell %s share", best_votes, tc->name);
    return true;
}

static void scan_resolve_nodes(scan_ctx *s)
{
    uint64_t anchors[LIMIT_TOPOLOGY_CELLS_MAX];
    bool anchored[LIMIT_TOPOLOGY_CELLS_MAX];
    char why[LIMIT_TOPOLOGY_CELLS_MAX][128];
    mrd_assert(s->cell_count <= LIMIT_TOPOLOGY_CELLS_MAX);
    for (size_t ci = 0; ci < s->cell_count; ci++)
        anchored[ci] = cell_anchor(s, ci, &anchors[ci], why[ci], sizeof why[ci]);
    for (size_t i = 0; i < s->node_count; i++) {
        scan_node *n = &s->nodes[i];
        /* Cell: the lineage of the data, else the records. */
        size_t match = s->cell_count, matches = 0;
        if (n->sysid_known)
            for (size_t ci = 0; ci < s->cell_count; ci++)
                if (anchored[ci] && anchors[ci] == n->sysid) {
                    match = ci;
                    matches++;
                }
        if (matches == 1) {
            const char *cname = topology_cell_at(s->topo, match)->name;
            snprintf(n->cell, sizeof n->cell, "%s", cname);
            snprintf(n->cell_evidence, sizeof n->cell_evidence,
                     "system identifier %" PRIu64 " = %s", n->sysid, why[match]);
        } else if (n->reg_cell[0]) {
            snprintf(n->cell, sizeof n->cell, "%s", n->reg_cell);
            snprintf(n->cell_evidence, sizeof n->cell_evidence,
                     "registered in etcd under /meridian/%s/nodes/%s", n->reg_cell, n->name);
        } else if (n->lab_cell[0]) {
            snprintf(n->cell, sizeof n->cell, "%s", n->lab_cell);
            snprintf(n->cell_evidence, sizeof n->cell_evidence, "the lab's process table");
        } else if (n->topo_cell[0]) {
            snprintf(n->cell, sizeof n->cell, "%s", n->topo_cell);
            snprintf(n->cell_evidence, sizeof n->cell_evidence, "the topology only");
        } else {
            snprintf(n->cell_evidence, sizeof n->cell_evidence,
                     "no record names its cell and its lineage matches none");
        }
        const char *claimed = n->reg_cell[0] ? n->reg_cell : n->lab_cell;
        if (matches == 1 && claimed[0] && strcmp(claimed, n->cell) != 0) {
            size_t used = strlen(n->cell_evidence);
            snprintf(n->cell_evidence + used, sizeof n->cell_evidence - used,
                     " (its records say cell %s)", claimed);
        }
        /* Region: where the lab runs it, checked against its registration. */
        if (n->lab_region[0]) {
            snprintf(n->region, sizeof n->region, "%s", n->lab_region);
            if (n->reg_region[0] && strcmp(n->reg_region, n->lab_region) == 0)
                snprintf(n->region_evidence, sizeof n->region_evidence,
                         "runs in %s (lab process table, etcd registry agree)", n->region);
            else if (n->reg_region[0])
                snprintf(n->region_evidence, sizeof n->region_evidence,
                         "runs in %s (lab process table); etcd registry says %s",
                         n->region, n->reg_region);
            else
                snprintf(n->region_evidence, sizeof n->region_evidence,
                         "runs in %s (lab process table)", n->region);
        } else if (n->reg_region[0]) {
            snprintf(n->region, sizeof n->region, "%s", n->reg_region);
            snprintf(n->region_evidence, sizeof n->region_evidence, "etcd registry: %s",
                     n->region);
        } else if (n->topo_region[0]) {
            snprintf(n->region, sizeof n->region, "%s", n->topo_region);
            snprintf(n->region_evidence, sizeof n->region_evidence, "the topology only: %s",
                     n->region);
        }
    }
}

static void scan_data_dirs(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    for (size_t i = 0; i < s->node_count; i++) {
        scan_node *n = &s->nodes[i];
        if (!n->has_data)
            continue;
        out->data_directories++;
        if (n->alive)
            out->nodes_alive++;
        cli_region_object *o = object_add(s, "data-directory", n->cell, n->region, n->alive,
                                          "data directory nodes/%s/data (node %s)", n->name,
                                          n->name);
        if (o != NULL)
            textf(o->evidence, sizeof o->evidence, "%s; %s%s", n->cell_evidence,
                     n->region_evidence, n->alive ? "" : "; PostgreSQL not running (data at rest)");
        /* A registration that names another region: the data must be
         * allowed there too (one of the two records is wrong). */
        if (n->reg_region[0] && n->region[0] && strcmp(n->reg_region, n->region) != 0) {
            o = object_add(s, "data-directory", n->cell, n->reg_region, n->alive,
                           "data directory nodes/%s/data (node %s, as registered)", n->name,
                           n->name);
            if (o != NULL)
                snprintf(o->evidence, sizeof o->evidence, "etcd registry region %s differs "
                                                          "from the lab's %s",
                         n->reg_region, n->region);
        }
    }
    for (size_t i = 0; i < s->node_count; i++)
        if (!s->nodes[i].has_data && s->nodes[i].topo_cell[0])
            note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
                 "node %s: no data directory in the lab (never started?)", s->nodes[i].name);
}

/* The node whose PostgreSQL port or netem link port is port, and the link
 * name when through one. */
static scan_node *node_by_port(scan_ctx *s, int port, char *link, size_t link_size)
{
    link[0] = '\0';
    if (port <= 0)
        return NULL;
    for (size_t i = 0; i < s->node_count; i++)
        if (s->nodes[i].pg_port == port)
            return &s->nodes[i];
    for (size_t i = 0; i < s->node_count; i++) {
        for (size_t r = 0; r < topology_region_count(s->topo); r++) {
            const char *rname = topology_region_at(s->topo, r)->name;
            char name[160], vn[160], var[192];
            snprintf(name, sizeof name, "pg-%s-from-%s", s->nodes[i].name, rname);
            cli_region_lab_vn(name, vn, sizeof vn);
            snprintf(var, sizeof var, "LINK_%s", vn);
            const char *v = cli_region_lab_var_get(s->lab, var);
            if (v != NULL && atoi(v) == port) {
                snprintf(link, link_size, "%s", name);
                return &s->nodes[i];
            }
        }
    }
    return NULL;
}

static void first_line(const char *in, char *out, size_t size)
{
    size_t n = strcspn(in, "\n");
    snprintf(out, size, "%.*s", (int)n, in);
}

static void scan_replication_of(scan_ctx *s, scan_node *n, PGconn *pg)
{
    cli_region_scan *out = s->out;
    PGresult *r = PQexec(pg, "SELECT coalesce(application_name, ''), coalesce(state, ''), "
                             "coalesce(sync_state, ''), coalesce(client_port, 0) "
                             "FROM pg_stat_replication ORDER BY 1 LIMIT 64");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[256];
        first_line(PQerrorMessage(pg), msg, sizeof msg);
        note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
             "postgres of %s: pg_stat_replication unreadable: %s", n->name, msg);
    } else {
        int rows = PQntuples(r);
        for (int i = 0; i < rows && i < SCAN_REPLICATION_ROWS_MAX; i++) {
            const char *app = PQgetvalue(r, i, 0);
            const char *state = PQgetvalue(r, i, 1);
            const char *sync = PQgetvalue(r, i, 2);
            const scan_node *to = app[0] ? scan_node_find(s, app) : NULL;
            const char *region = to != NULL ? to->region : "";
            out->replication++;
            bool cross = to != NULL && strcmp(region, n->region) != 0;
            if (cross)
                out->replication_cross_region++;
            cli_region_object *o =
                object_add(s, "replication", n->cell, region, true,
                           "replication %s -> %s (%s, %s)", n->name,
                           app[0] ? app : "(no application_name)", sync, state);
            if (o == NULL)
                continue;
            o->cross_region = cross;
            if (to != NULL)
                textf(o->evidence, sizeof o->evidence,
                         "pg_stat_replication on %s: application_name %s, a node of the lab "
                         "that %s; WAL of %s's lineage (cell %s)",
                         n->name, app, to->region_evidence, n->name, n->cell);
            else
                snprintf(o->evidence, sizeof o->evidence,
                         "pg_stat_replication on %s: application_name '%s' is no node of the "
                         "lab (client port %s): where the WAL goes is unknown",
                         n->name, app, PQgetvalue(r, i, 3));
        }
    }
    PQclear(r);

    r = PQexec(pg, "SELECT coalesce(sender_host, ''), coalesce(sender_port, 0), "
                   "coalesce(status, '') FROM pg_stat_wal_receiver");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char msg[256];
        first_line(PQerrorMessage(pg), msg, sizeof msg);
        note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
             "postgres of %s: pg_stat_wal_receiver unreadable: %s", n->name, msg);
    } else if (PQntuples(r) > 0) {
        int port = atoi(PQgetvalue(r, 0, 1));
        char link[160];
        const scan_node *from = node_by_port(s, port, link, sizeof link);
        out->wal_receivers++;
        /* Physical replication only joins copies of one lineage: what
         * n receives is its own cell's WAL, wherever it comes from. */
        cli_region_object *o = object_add(
            s, "wal-receiver", n->cell, n->region, true, "WAL receiver on %s <- %s%s%s (%s)",
            n->name, from != NULL ? from->name : PQgetvalue(r, 0, 0),
            link[0] ? " via netem link " : "", link, PQgetvalue(r, 0, 2));
        if (o != NULL) {
            if (from != NULL)
                textf(o->evidence, sizeof o->evidence,
                         "pg_stat_wal_receiver on %s: sender port %d is %s%s%s; %s",
                         n->name, port, from->name, link[0] ? " through " : "", link,
                         n->region_evidence);
            else
                textf(o->evidence, sizeof o->evidence,
                         "pg_stat_wal_receiver on %s: sender %s:%d is no node of the lab; %s",
                         n->name, PQgetvalue(r, 0, 0), port, n->region_evidence);
            o->cross_region = from != NULL && strcmp(from->region, n->region) != 0;
        }
    }
    PQclear(r);
}

static void scan_replication(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    for (size_t i = 0; i < s->node_count; i++) {
        scan_node *n = &s->nodes[i];
        if (!n->has_data)
            continue;
        if (!n->alive) {
            note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
                 "postgres of %s is not running: its replication connections were not "
                 "checked (its data directory was)",
                 n->name);
            continue;
        }
        if (n->pg_port <= 0) {
            note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
                 "postgres of %s: no port in DIR/env", n->name);
            continue;
        }
        char conninfo[256];
        snprintf(conninfo, sizeof conninfo,
                 "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=%d "
                 "application_name=meridianctl-residency options='-c statement_timeout=5000'",
                 n->pg_port, SCAN_PG_CONNECT_TIMEOUT_S);
        PGconn *pg = PQconnectdb(conninfo);
        if (PQstatus(pg) != CONNECTION_OK) {
            char msg[256];
            first_line(PQerrorMessage(pg), msg, sizeof msg);
            note(out->unreachable, &out->unreachable_count, CLI_REGION_SCAN_NOTES_MAX,
                 "postgres of %s (127.0.0.1:%d): %s: its replication connections were not "
                 "checked",
                 n->name, n->pg_port, msg);
            PQfinish(pg);
            continue;
        }
        scan_replication_of(s, n, pg);
        PQfinish(pg);
    }
}

/* "--config FILE" of a recorded command line (DIR/cmd/NAME, %q-quoted
 * words). Returns true with the path in out. */
static bool cmd_config_path(const char *dir, const char *name, char *out, size_t size)
{
    char path[CLI_REGION_PATH_BYTES + 128];
    snprintf(path, sizeof path, "%s/cmd/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[LAB_LINE_BYTES];
    bool got = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!got)
        return false;
    /* Split on unescaped spaces. */
    char words[CMD_ARGS_MAX][CLI_REGION_PATH_BYTES];
    size_t nw = 0;
    const char *p = line;
    while (*p != '\0' && *p != '\n' && nw < CMD_ARGS_MAX) {
        while (*p == ' ')
            p++;
        if (*p == '\0' || *p == '\n')
            break;
        char raw[CLI_REGION_PATH_BYTES];
        size_t r = 0;
        while (*p != '\0' && *p != '\n' && *p != ' ' && r + 2 < sizeof raw) {
            if (*p == '\\' && p[1] != '\0') {
                raw[r++] = *p++;
            }
            raw[r++] = *p++;
        }
        raw[r] = '\0';
        while (*p != '\0' && *p != '\n' && *p != ' ')
            p++; /* a word too long for raw: its rest is dropped */
        unquote(raw, words[nw], sizeof words[nw]);
        nw++;
    }
    for (size_t i = 0; i + 1 < nw; i++)
        if (strcmp(words[i], "--config") == 0) {
            snprintf(out, size, "%s", words[i + 1]);
            return true;
        }
    return false;
}

/* The value of `key = value` in a config file. */
static bool conf_value(const char *path, const char *key, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return false;
    char line[LAB_LINE_BYTES];
    bool found = false;
    size_t klen = strlen(key);
    for (int i = 0; i < 10000 && fgets(line, sizeof line, f) != NULL; i++) {
        const char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncmp(p, key, klen) != 0)
            continue;
        p += klen;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p != '=')
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, "\r\n");
        while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        snprintf(out, size, "%.*s", (int)n, p);
        found = true;
    }
    fclose(f);
    return found;
}

static const char *rel(const scan_ctx *s, const char *path)
{
    size_t n = strlen(s->lab->dir);
    if (strncmp(path, s->lab->dir, n) == 0 && path[n] == '/')
        return path + n + 1;
    return path;
}

static void scan_meridiand(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    for (size_t i = 0; i < s->lab->proc_count; i++) {
        const cli_region_proc *p = &s->lab->procs[i];
        if (strcmp(p->kind, "meridiand") != 0)
            continue;
        out->meridiand++;
        char conf[CLI_REGION_PATH_BYTES], cell[CLI_REGION_TEXT_BYTES] = "",
                                          cregion[CLI_REGION_TEXT_BYTES] = "";
        bool have_conf = cmd_config_path(s->lab->dir, p->name, conf, sizeof conf);
        if (have_conf) {
            (void)conf_value(conf, "cell", cell, sizeof cell);
            (void)conf_value(conf, "region", cregion, sizeof cregion);
        }
        const char *c = cell[0] ? cell : p->cell;
        cli_region_object *o = object_add(s, "meridiand", c, p->region, p->alive,
                                          "meridiand %s (config %s)", p->name,
                                          have_conf ? rel(s, conf) : "?");
        if (o != NULL)
            snprintf(o->evidence, sizeof o->evidence,
                     "cell %s from %s; runs in %s (lab process table)%s%s%s", c,
                     cell[0] ? "its config" : "the lab's process table (config has no cell)",
                     p->region, cregion[0] ? "; config region " : "", cregion,
                     p->alive ? "" : "; not running");
        if (cregion[0] && strcmp(cregion, p->region) != 0) {
            o = object_add(s, "meridiand", c, cregion, p->alive, "meridiand %s (config region)",
                           p->name);
            if (o != NULL)
                snprintf(o->evidence, sizeof o->evidence,
                         "its config says region %s, the lab runs it in %s", cregion,
                         p->region);
        }
        /* Its log: request lines and errors may carry customer data. */
        char log[CLI_REGION_PATH_BYTES + 128];
        snprintf(log, sizeof log, "%s/logs/%s.log", s->lab->dir, p->name);
        if (file_exists(log)) {
            out->logs++;
            o = object_add(s, "log", c, p->region, false, "log logs/%s.log", p->name);
            if (o != NULL)
                snprintf(o->evidence, sizeof o->evidence,
                         "written by %s (cell %s) in %s", p->name, c, p->region);
        }
    }
    if (out->meridiand == 0)
        note(out->not_running, &out->not_running_count, CLI_REGION_SCAN_NOTES_MAX,
             "meridiand: the lab runs none");
}

static bool kind_is(const char *kind, const char *a, const char *b)
{
    return strcmp(kind, a) == 0 || strcmp(kind, b) == 0;
}

static void scan_backups_caches(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    for (size_t i = 0; i < s->lab->proc_count; i++) {
        const cli_region_proc *p = &s->lab->procs[i];
        bool backup = kind_is(p->kind, "backup", "pgbackrest");
        bool cache = kind_is(p->kind, "cache", "redis");
        if (!backup && !cache)
            continue;
        if (backup)
            out->backups++;
        else
            out->caches++;
        cli_region_object *o = object_add(s, backup ? "backup" : "cache", p->cell, p->region,
                                          p->alive, "%s %s", backup ? "backup repository" : "cache",
                                          p->name);
        if (o != NULL)
            snprintf(o->evidence, sizeof o->evidence, "lab process table: cell %s, region %s%s",
                     p->cell[0] ? p->cell : "?", p->region, p->alive ? "" : "; not running");
    }
    /* Kinds the topology declares but the lab does not run. */
    for (int kind = 0; kind < 2; kind++) {
        size_t have = kind == 0 ? out->backups : out->caches;
        if (have > 0)
            continue;
        char list[CLI_REGION_NOTE_BYTES] = "";
        size_t used = 0, declared = 0;
        for (size_t ci = 0; ci < topology_cell_count(s->topo); ci++) {
            const topology_cell *c = topology_cell_at(s->topo, ci);
            size_t n = kind == 0 ? c->backup_count : c->cache_count;
            for (size_t i = 0; i < n && used < sizeof list; i++) {
                const char *name = kind == 0 ? c->backups[i].name : c->caches[i].name;
                const char *region = kind == 0 ? c->backups[i].region : c->caches[i].region;
                int w = snprintf(list + used, sizeof list - used, "%s%s (cell %s, %s)",
                                 declared ? ", " : "", name, c->name, region);
                declared++;
                if (w < 0)
                    break;
                used += (size_t)w;
            }
        }
        note(out->not_running, &out->not_running_count, CLI_REGION_SCAN_NOTES_MAX,
             "%s: not running in this lab%s%s", kind == 0 ? "backup repositories" : "caches",
             declared ? "; declared (and checked at topology load): " : "", list);
    }
}

static void scan_judge(scan_ctx *s)
{
    cli_region_scan *out = s->out;
    out->violation_count = 0;
    for (size_t i = 0; i < out->object_count; i++) {
        cli_region_object *o = &out->objects[i];
        topology_placement pl = {.cell = o->cell, .object = o->object, .region = o->region};
        topology_violation v;
        size_t n = 0;
        topology_residency_violations(s->topo, &pl, 1, &v, 1, &n);
        o->allowed = n == 0;
        if (!o->allowed) {
            o->rule = v.rule;
            snprintf(o->detail, sizeof o->detail, "%s", v.detail);
            out->violation_count++;
        }
    }
}

int cli_region_scan_run(const char *lab_dir, const char *topology_path, cli_region_scan *out,
                        char *err, size_t err_size)
{
    memset(out, 0, sizeof *out);
    cli_region_lab lab;
    topology *topo = NULL;
    scan_ctx s;
    memset(&s, 0, sizeof s);
    if (cli_region_lab_open(lab_dir, &lab, err, err_size) != 0)
        return -1;
    snprintf(out->lab_dir, sizeof out->lab_dir, "%s", lab.dir);
    char tpath[CLI_REGION_PATH_BYTES + 32];
    if (topology_path != NULL) {
        snprintf(tpath, sizeof tpath, "%s", topology_path);
    } else {
        snprintf(tpath, sizeof tpath, "%s/topology.json", lab.dir);
        const char *orig = cli_region_lab_var_get(&lab, "TOPOLOGY");
        if (!file_exists(tpath) && orig != NULL)
            snprintf(tpath, sizeof tpath, "%s", orig);
    }
    textf(out->topology_path, sizeof out->topology_path, "%s", tpath);
    char terr[4096];
    if (topology_load(tpath, &topo, terr, sizeof terr) != 0) {
        snprintf(err, err_size, "cannot load the topology %s:\n%s", tpath, terr);
        goto fail;
    }
    snprintf(out->topology_name, sizeof out->topology_name, "%s", topology_name(topo));
    out->objects = calloc(CLI_REGION_SCAN_OBJECTS_MAX, sizeof *out->objects);
    out->unreachable = calloc(CLI_REGION_SCAN_NOTES_MAX, sizeof *out->unreachable);
    out->not_running = calloc(CLI_REGION_SCAN_NOTES_MAX, sizeof *out->not_running);
    s.nodes = calloc(SCAN_NODES_MAX, sizeof *s.nodes);
    s.cell_count = topology_cell_count(topo);
    s.cells = calloc(s.cell_count ? s.cell_count : 1, sizeof *s.cells);
    s.cell_read = calloc(s.cell_count ? s.cell_count : 1, sizeof *s.cell_read);
    if (out->objects == NULL || out->unreachable == NULL || out->not_running == NULL ||
        s.nodes == NULL || s.cells == NULL || s.cell_read == NULL) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    s.lab = &lab;
    s.topo = topo;
    s.out = out;

    scan_collect_nodes(&s);
    scan_read_etcd(&s);
    scan_resolve_nodes(&s);
    scan_data_dirs(&s);
    scan_replication(&s);
    scan_meridiand(&s);
    scan_backups_caches(&s);
    scan_judge(&s);

    free(s.nodes);
    free(s.cells);
    free(s.cell_read);
    topology_free(topo);
    cli_region_lab_close(&lab);
    return 0;
fail:
    free(s.nodes);
    free(s.cells);
    free(s.cell_read);
    topology_free(topo);
    cli_region_lab_close(&lab);
    cli_region_scan_free(out);
    return -1;
}

void cli_region_scan_free(cli_region_scan *s)
{
    if (s == NULL)
        return;
    free(s->objects);
    free(s->unreachable);
    free(s->not_running);
    s->objects = NULL;
    s->unreachable = NULL;
    s->not_running = NULL;
    s->object_count = s->unreachable_count = s->not_running_count = 0;
}

void cli_region_scan_print(FILE *out, const cli_region_scan *s)
{
    fprintf(out, "residency scan of the lab in %s\n", s->lab_dir);
    fprintf(out, "topology %s (%s)\n\n", s->topology_name[0] ? s->topology_name : "-",
            s->topology_path);
    int wk = (int)strlen("KIND"), wo = (int)strlen("OBJECT"), wc = (int)strlen("CELL"),
        wr = (int)strlen("REGION");
    for (size_t i = 0; i < s->object_count; i++) {
        const cli_region_object *o = &s->objects[i];
        int k = (int)strlen(o->kind), ob = (int)strlen(o->object), c = (int)strlen(o->cell),
            r = (int)strlen(o->region);
        wk = k > wk ? k : wk;
        wo = ob > wo ? ob : wo;
        wc = c > wc ? c : wc;
        wr = r > wr ? r : wr;
    }
    fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s\n", wk, "KIND", wo, "OBJECT", wc, "CELL", wr,
            "REGION", "ALLOWED");
    for (size_t i = 0; i < s->object_count; i++) {
        const cli_region_object *o = &s->objects[i];
        fprintf(out, "%-*s  %-*s  %-*s  %-*s  %s\n", wk, o->kind, wo, o->object, wc, o->cell,
                wr, o->region, o->allowed ? "yes" : "NO");
    }
    fprintf(out, "\nchecked: %zu data directories (%zu with PostgreSQL running), %zu "
                 "replication connections (%zu crossing regions), %zu WAL receivers, %zu "
                 "meridiand, %zu logs, %zu backup repositories, %zu caches\n",
            s->data_directories, s->nodes_alive, s->replication, s->replication_cross_region,
            s->wal_receivers, s->meridiand, s->logs, s->backups, s->caches);
    fprintf(out, "evidence: a data directory's cell is its lineage (PostgreSQL system "
                 "identifier) anchored on the cell's leader in etcd; its region is where the "
                 "lab runs it, checked against the keeper's etcd registration%s\n",
            s->etcd_ok ? "" : " (etcd was not fully readable: see below)");
    for (size_t i = 0; i < s->not_running_count; i++)
        fprintf(out, "not running: %s\n", s->not_running[i]);
    for (size_t i = 0; i < s->unreachable_count; i++)
        fprintf(out, "unreachable: %s\n", s->unreachable[i]);
    fputc('\n', out);
    if (s->violation_count == 0) {
        fprintf(out, "0 violations: every object holding a cell's data is in one of the "
                     "cell's allowed regions\n");
        return;
    }
    fprintf(out, "%zu violation%s:\n", s->violation_count, s->violation_count == 1 ? "" : "s");
    for (size_t i = 0; i < s->object_count; i++) {
        const cli_region_object *o = &s->objects[i];
        if (o->allowed)
            continue;
        fprintf(out, "  [%s] %s\n    evidence: %s\n", o->rule, o->detail,
                o->evidence[0] ? o->evidence : "-");
    }
}

static json_t *notes_json(char (*list)[CLI_REGION_NOTE_BYTES], size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++)
        if (json_array_append_new(a, json_string(list[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

json_t *cli_region_scan_json(const cli_region_scan *s)
{
    json_t *objects = json_array();
    json_t *violations = json_array();
    if (objects == NULL || violations == NULL)
        goto fail;
    for (size_t i = 0; i < s->object_count; i++) {
        const cli_region_object *o = &s->objects[i];
        json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:b, s:b, s:b, s:o, s:o}", "kind",
                              o->kind, "object", o->object, "cell", o->cell, "region",
                              o->region, "evidence", o->evidence, "live", o->live,
                              "cross_region", o->cross_region, "allowed", o->allowed, "rule",
                              o->rule ? json_string(o->rule) : json_null(), "detail",
                              o->allowed ? json_null() : json_string(o->detail));
        if (j == NULL || json_array_append_new(objects, j) != 0)
            goto fail;
        if (!o->allowed) {
            json_t *v = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "rule", o->rule, "cell",
                                  o->cell, "object", o->object, "region", o->region,
                                  "detail", o->detail, "evidence", o->evidence);
            if (v == NULL || json_array_append_new(violations, v) != 0)
                goto fail;
        }
    }
    json_t *checked = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "data_directories",
        (json_int_t)s->data_directories, "nodes_running", (json_int_t)s->nodes_alive,
        "replication_connections", (json_int_t)s->replication, "replication_cross_region",
        (json_int_t)s->replication_cross_region, "wal_receivers", (json_int_t)s->wal_receivers,
        "meridiand", (json_int_t)s->meridiand, "logs", (json_int_t)s->logs, "backups",
        (json_int_t)s->backups, "caches", (json_int_t)s->caches);
    json_t *unreach = notes_json(s->unreachable, s->unreachable_count);
    json_t *notrun = notes_json(s->not_running, s->not_running_count);
    if (checked == NULL || unreach == NULL || notrun == NULL) {
        json_decref(checked);
        json_decref(unreach);
        json_decref(notrun);
        goto fail;
    }
    return json_pack("{s:b, s:s, s:s, s:s, s:b, s:I, s:o, s:o, s:o, s:o, s:o}", "ok",
                     s->violation_count == 0, "lab_dir", s->lab_dir, "topology",
                     s->topology_path, "topology_name", s->topology_name, "etcd_ok",
                     s->etcd_ok, "violation_count", (json_int_t)s->violation_count, "checked",
                     checked, "objects", objects, "violations", violations, "unreachable",
                     unreach, "not_running", notrun);
fail:
    json_decref(objects);
    json_decref(violations);
    return NULL;
}
