/*
 * topology.c — load and validate the topology file (topology.h,
 * docs/TOPOLOGY.md).
 *
 * Two phases. The first reads the JSON (jansson, duplicate keys
 * refused) into fixed-size records, checking shapes: every object's
 * fields are known, every value has its type and range, every array its
 * bounds. The second checks the topology as a whole — names unique,
 * references resolve, residency, quorum, etcd placement, policies,
 * ports — and runs only when the first found nothing, so one mistake
 * does not cascade into confusing follow-ups. Both phases collect every
 * error they find (up to LIMIT_TOPOLOGY_ERRORS_MAX) instead of stopping
 * at the first, so an operator fixes a file in one pass. Each error
 * carries the JSON pointer of the element, a stable rule id, a message
 * that names the element, and a hint.
 *
 * The residency rule lives in one function (placement_rule) used both
 * by the loader and by topology_residency_violations, so what the file
 * declares and what the residency scan observes are judged alike.
 */
#include "topology/topology.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/mrd_assert.h"

#define TOPOLOGY_ORIGIN_BYTES 512
/* A list of names rendered for a message: "[us-east, eu-west]". */
#define TOPOLOGY_LIST_BYTES 160
/* An element's description in messages: "cell 'eu' node 'eu-n1'". */
#define TOPOLOGY_WHAT_BYTES 128
/* "cell 'name'" */
#define TOPOLOGY_CELL_WHAT_BYTES 48
/* What placement_rule appends after "... is in region 'R'". */
#define TOPOLOGY_DETAIL_BYTES 320
/* Ports a topology can name: etcd (2 each), per cell nodes (2 each),
 * caches and meridiand ranges, plus ports.base. */
#define TOPOLOGY_PORT_USES_MAX                                                 \
    (2 * LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX +                                     \
     LIMIT_TOPOLOGY_CELLS_MAX * (2 * LIMIT_TOPOLOGY_CELL_NODES_MAX +            \
                                 LIMIT_TOPOLOGY_CELL_CACHES_MAX +              \
                                 LIMIT_TOPOLOGY_REGIONS_MAX))

struct topology {
    char origin[TOPOLOGY_ORIGIN_BYTES];
    char name[TOPOLOGY_NAME_BYTES];
    uint16_t port_base;
    size_t region_count;
    topology_region regions[LIMIT_TOPOLOGY_REGIONS_MAX];
    size_t etcd_count;
    topology_etcd_member etcd[LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX];
    size_t cell_count;
    topology_cell cells[LIMIT_TOPOLOGY_CELLS_MAX];
    size_t wan_count;
    topology_wan_link wan[LIMIT_TOPOLOGY_WAN_LINKS_MAX];
};

static const char *const region_role_names[] = {"primary", "secondary", "witness", NULL};
static const char *const node_role_names[] = {"primary-candidate", "dr-standby", NULL};
static const char *const failover_mode_names[] = {"automatic", "manual", NULL};

/* Jurisdictions whose data never leaves them. One place: docs/TOPOLOGY.md. */
static const char *const restricted_jurisdictions[] = {"EU", NULL};

/* ------------------------------------------------------------------ */
/* Errors and JSON pointers                                            */

/* The state of one validation: where we are (a JSON pointer) and the
 * errors so far. */
typedef struct parser {
    topology_errors *errs;
    char ptr[TOPOLOGY_POINTER_BYTES];
    size_t ptr_len;
} parser;

/* Append "/seg" (RFC 6901 escaped) to the pointer; returns the length
 * to restore. A pointer longer than the buffer is truncated. */
static size_t ptr_push(parser *p, const char *seg)
{
    size_t mark = p->ptr_len;
    size_t cap = sizeof p->ptr - 1;
    if (p->ptr_len < cap)
        p->ptr[p->ptr_len++] = '/';
    for (const char *s = seg; *s != '\0' && p->ptr_len < cap; s++) {
        if (*s == '~' || *s == '/') {
            if (p->ptr_len + 2 > cap)
                break;
            p->ptr[p->ptr_len++] = '~';
            p->ptr[p->ptr_len++] = *s == '~' ? '0' : '1';
        } else {
            p->ptr[p->ptr_len++] = *s;
        }
    }
    p->ptr[p->ptr_len] = '\0';
    return mark;
}

static size_t ptr_push_index(parser *p, size_t index)
{
    char seg[24];
    snprintf(seg, sizeof seg, "%zu", index);
    return ptr_push(p, seg);
}

static void ptr_restore(parser *p, size_t mark)
{
    mrd_assert(mark <= p->ptr_len);
    p->ptr_len = mark;
    p->ptr[mark] = '\0';
}

/* Set the pointer outright (second phase: from indices). */
static void ptr_set(parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ptr_set(parser *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->ptr, sizeof p->ptr, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    p->ptr_len = (size_t)n < sizeof p->ptr ? (size_t)n : sizeof p->ptr - 1;
}

/* Record an error at the current pointer. Returns it (to add a hint),
 * or NULL when the list is full (counted in errs->more). */
static topology_error *perr(parser *p, const char *rule, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static topology_error *perr(parser *p, const char *rule, const char *fmt, ...)
{
    topology_errors *errs = p->errs;
    if (errs->count >= LIMIT_TOPOLOGY_ERRORS_MAX) {
        errs->more++;
        return NULL;
    }
    topology_error *e = &errs->items[errs->count++];
    memset(e, 0, sizeof *e);
    snprintf(e->pointer, sizeof e->pointer, "%s", p->ptr);
    e->rule = rule;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return e;
}

static void phint(topology_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void phint(topology_error *e, const char *fmt, ...)
{
    if (e == NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->hint, sizeof e->hint, fmt, ap);
    va_end(ap);
}

static size_t error_total(const parser *p)
{
    return p->errs->count + p->errs->more;
}

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* [a-z0-9][a-z0-9_-]{0,LIMIT_TOPOLOGY_NAME_MAX-1} */
static bool name_ok(const char *s, size_t len)
{
    if (len == 0 || len > LIMIT_TOPOLOGY_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '-' && c != '_')))
            return false;
    }
    return true;
}

/* [A-Z]{2,LIMIT_TOPOLOGY_JURISDICTION_MAX} */
static bool jurisdiction_ok(const char *s, size_t len)
{
    if (len < 2 || len > LIMIT_TOPOLOGY_JURISDICTION_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if (s[i] < 'A' || s[i] > 'Z')
            return false;
    return true;
}

/* Render names[0..count) as "[a, b]" into buf. */
static void join_names(char *buf, size_t size, const char (*names)[TOPOLOGY_NAME_BYTES],
                       size_t count)
{
    size_t used = 0;
    int n = snprintf(buf, size, "[");
    used = n > 0 ? (size_t)n : 0;
    for (size_t i = 0; i < count && used < size; i++) {
        n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

static void join_list(char *buf, size_t size, const char *const *names)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; names[i] != NULL && used < size; i++) {
        int n = snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* ------------------------------------------------------------------ */
/* Phase 1: shapes                                                     */

/* v must be an object; else record it and return false. */
static bool is_object(parser *p, const json_t *v, const char *what)
{
    if (json_is_object(v))
        return true;
    topology_error *e = perr(p, "schema.type", "%s must be an object, not %s", what,
                             json_type_name(v));
    phint(e, "see docs/TOPOLOGY.md for the shape of each element");
    return false;
}

/* Record every key of object v that is not in allowed. */
static void check_fields(parser *p, const json_t *v, const char *what,
                         const char *const *allowed)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val) {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++)
            known = strcmp(key, allowed[i]) == 0;
        if (known)
            continue;
        char list[TOPOLOGY_HINT_BYTES];
        join_list(list, sizeof list, allowed);
        size_t mark = ptr_push(p, key);
        topology_error *e = perr(p, "schema.unknown-field", "%s has an unknown field '%s'",
                                 what, key);
        phint(e, "the known fields are: %s (check the spelling)", list);
        ptr_restore(p, mark);
    }
}

/* v must be an object whose keys are all in allowed (NULL-terminated).
 * Returns false (after recording) when v is not an object; unknown keys
 * are recorded and parsing goes on. */
static bool check_object(parser *p, const json_t *v, const char *what,
                         const char *const *allowed)
{
    if (!is_object(p, v, what))
        return false;
    check_fields(p, v, what, allowed);
    return true;
}

/* The value of key in obj, or NULL after recording "required" (when
 * required) — or silently when optional. */
static json_t *field(parser *p, const json_t *obj, const char *key, bool required,
                     const char *what)
{
    json_t *v = json_object_get(obj, key);
    if (v == NULL && required) {
        topology_error *e = perr(p, "schema.required", "%s lacks the required field '%s'",
                                 what, key);
        phint(e, "add \"%s\" (see docs/TOPOLOGY.md)", key);
    }
    return v;
}

/* A string value checked by ok() into out (size bytes). Returns 1 when
 * set, 0 when absent and optional, -1 after recording an error. */
static int get_text(parser *p, const json_t *obj, const char *key, bool required,
                    const char *what, bool (*ok)(const char *, size_t), const char *shape,
                    const char *rule, char *out, size_t size)
{
    json_t *v = field(p, obj, key, required, what);
    if (v == NULL)
        return required ? -1 : 0;
    size_t mark = ptr_push(p, key);
    int rc = -1;
    if (!json_is_string(v)) {
        topology_error *e = perr(p, "schema.type", "%s: '%s' must be a string, not %s", what,
                                 key, json_type_name(v));
        phint(e, "write it as %s", shape);
        goto out;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len || !ok(s, len) || len >= size) {
        topology_error *e = perr(p, rule, "%s: '%s' is \"%.*s\", which is not %s", what, key,
                                 (int)(len > 64 ? 64 : len), s, shape);
        phint(e, "write %s", shape);
        goto out;
    }
    memcpy(out, s, len + 1);
    rc = 1;
out:
    ptr_restore(p, mark);
    return rc;
}

#define NAME_SHAPE "a name: 1 to 31 characters among a-z 0-9 _ -, starting with a letter or digit"
#define JURISDICTION_SHAPE "a jurisdiction code: 2 to 8 capital letters such as \"US\" or \"EU\""

static int get_name(parser *p, const json_t *obj, const char *key, bool required,
                    const char *what, char out[TOPOLOGY_NAME_BYTES])
{
    return get_text(p, obj, key, required, what, name_ok, NAME_SHAPE, "name.format", out,
                    TOPOLOGY_NAME_BYTES);
}

static int get_jurisdiction(parser *p, const json_t *obj, const char *key, const char *what,
                            char out[TOPOLOGY_JURISDICTION_BYTES])
{
    return get_text(p, obj, key, true, what, jurisdiction_ok, JURISDICTION_SHAPE,
                    "jurisdiction.format", out, TOPOLOGY_JURISDICTION_BYTES);
}

/* A string among names (NULL-terminated) into *out (its index). */
static int get_enum(parser *p, const json_t *obj, const char *key, bool required,
                    const char *what, const char *const *names, int *out)
{
    json_t *v = field(p, obj, key, required, what);
    if (v == NULL)
        return required ? -1 : 0;
    size_t mark = ptr_push(p, key);
    int rc = -1;
    char list[TOPOLOGY_HINT_BYTES];
    join_list(list, sizeof list, names);
    if (json_is_string(v)) {
        for (int i = 0; names[i] != NULL; i++) {
            if (strcmp(json_string_value(v), names[i]) == 0) {
                *out = i;
                rc = 1;
                goto out;
            }
        }
        topology_error *e = perr(p, "schema.enum", "%s: '%s' is \"%.64s\", not one of %s",
                                 what, key, json_string_value(v), list);
        phint(e, "use one of: %s", list);
    } else {
        topology_error *e = perr(p, "schema.type", "%s: '%s' must be a string, not %s", what,
                                 key, json_type_name(v));
        phint(e, "use one of: %s", list);
    }
out:
    ptr_restore(p, mark);
    return rc;
}

/* An integer in [min, max] into *out. */
static int get_uint(parser *p, const json_t *obj, const char *key, bool required,
                    const char *what, uint32_t min, uint32_t max, uint32_t *out)
{
    json_t *v = field(p, obj, key, required, what);
    if (v == NULL)
        return required ? -1 : 0;
    size_t mark = ptr_push(p, key);
    int rc = -1;
    if (!json_is_integer(v)) {
        topology_error *e = perr(p, "schema.type", "%s: '%s' must be an integer, not %s",
                                 what, key, json_type_name(v));
        phint(e, "write a whole number from %u to %u", min, max);
        goto out;
    }
    json_int_t n = json_integer_value(v);
    if (n < (json_int_t)min || n > (json_int_t)max) {
        topology_error *e = perr(p, "schema.range", "%s: '%s' is %lld, outside %u..%u", what,
                                 key, (long long)n, min, max);
        phint(e, "write a whole number from %u to %u", min, max);
        goto out;
    }
    *out = (uint32_t)n;
    rc = 1;
out:
    ptr_restore(p, mark);
    return rc;
}

/* A port: an integer in 1..65535 or "auto" (also when absent) into *out. */
static int get_port(parser *p, const json_t *obj, const char *key, const char *what,
                    uint16_t *out)
{
    *out = TOPOLOGY_PORT_AUTO;
    json_t *v = json_object_get(obj, key);
    if (v == NULL)
        return 0;
    size_t mark = ptr_push(p, key);
    int rc = -1;
    if (json_is_string(v) && strcmp(json_string_value(v), "auto") == 0) {
        rc = 1;
    } else if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n >= 1 && n <= 65535) {
            *out = (uint16_t)n;
            rc = 1;
        } else {
            topology_error *e = perr(p, "port.range", "%s: port '%s' is %lld, outside 1..65535",
                                     what, key, (long long)n);
            phint(e, "use a port from 1 to 65535, or \"auto\" to let the lab pick a free one");
        }
    } else {
        topology_error *e = perr(p, "schema.type",
                                 "%s: port '%s' must be an integer or \"auto\", not %s", what,
                                 key, json_type_name(v));
        phint(e, "use a port from 1 to 65535, or \"auto\"");
    }
    ptr_restore(p, mark);
    return rc;
}

/* An array of min..max elements into *out. */
static int get_array(parser *p, const json_t *obj, const char *key, bool required,
                     const char *what, size_t min, size_t max, json_t **out)
{
    *out = NULL;
    json_t *v = field(p, obj, key, required, what);
    if (v == NULL)
        return required ? -1 : 0;
    size_t mark = ptr_push(p, key);
    int rc = -1;
    if (!json_is_array(v)) {
        topology_error *e = perr(p, "schema.type", "%s: '%s' must be an array, not %s", what,
                                 key, json_type_name(v));
        phint(e, "write [ ... ] (see docs/TOPOLOGY.md)");
    } else if (json_array_size(v) < min || json_array_size(v) > max) {
        topology_error *e = perr(p, "schema.size", "%s: '%s' has %zu elements, outside %zu..%zu",
                                 what, key, json_array_size(v), min, max);
        phint(e, "the bounds are in src/common/limits.h (LIMIT_TOPOLOGY_*)");
    } else {
        *out = v;
        rc = 1;
    }
    ptr_restore(p, mark);
    return rc;
}

/* An array of names (each well-formed) into out[*count]. */
static int get_name_list(parser *p, const json_t *obj, const char *key, bool required,
                         const char *what, size_t min, size_t max,
                         char (*out)[TOPOLOGY_NAME_BYTES], size_t *count)
{
    json_t *arr;
    *count = 0;
    int rc = get_array(p, obj, key, required, what, min, max, &arr);
    if (rc <= 0)
        return rc;
    size_t mark = ptr_push(p, key);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        size_t m2 = ptr_push_index(p, i);
        if (!json_is_string(v) || !name_ok(json_string_value(v), json_string_length(v)) ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            topology_error *e =
                json_is_string(v)
                    ? perr(p, "name.format", "%s: '%s' element %zu \"%.64s\" is not a valid name",
                           what, key, i, json_string_value(v))
                    : perr(p, "schema.type", "%s: '%s' element %zu must be a string, not %s",
                           what, key, i, json_type_name(v));
            phint(e, "write %s", NAME_SHAPE);
            rc = -1;
        } else {
            snprintf(out[*count], TOPOLOGY_NAME_BYTES, "%s", json_string_value(v));
            (*count)++;
        }
        ptr_restore(p, m2);
    }
    ptr_restore(p, mark);
    return rc;
}

/* Describe an element: "KIND 'name'" once its name parsed, else
 * "KIND #N" (1-based, as people count). */
static void describe(char *buf, size_t size, const char *prefix, const char *kind,
                     const char *name, size_t index)
{
    if (name[0] != '\0')
        snprintf(buf, size, "%s%s '%s'", prefix, kind, name);
    else
        snprintf(buf, size, "%s%s #%zu", prefix, kind, index + 1);
}

static void parse_region(parser *p, const json_t *v, size_t index, topology_region *r)
{
    static const char *const fields[] = {"name", "jurisdiction", "role", "zones", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, "", "region", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, r->name);
    describe(what, sizeof what, "", "region", r->name, index);
    check_fields(p, v, what, fields);
    get_jurisdiction(p, v, "jurisdiction", what, r->jurisdiction);
    int role = 0;
    if (get_enum(p, v, "role", true, what, region_role_names, &role) > 0)
        r->role = (topology_region_role)role;
    get_name_list(p, v, "zones", true, what, 1, LIMIT_TOPOLOGY_ZONES_MAX, r->zones,
                  &r->zone_count);
}

static void parse_etcd_member(parser *p, const json_t *v, size_t index, topology_etcd_member *m)
{
    static const char *const fields[] = {"name", "region", "zone", "client_port", "peer_port",
                                         NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, "", "etcd member", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, m->name);
    describe(what, sizeof what, "", "etcd member", m->name, index);
    check_fields(p, v, what, fields);
    get_name(p, v, "region", true, what, m->region);
    get_name(p, v, "zone", true, what, m->zone);
    get_port(p, v, "client_port", what, &m->client_port);
    get_port(p, v, "peer_port", what, &m->peer_port);
}

static void parse_node(parser *p, const json_t *v, const char *cell_what, size_t index,
                       topology_node *n)
{
    static const char *const fields[] = {"name", "region", "zone", "role", "pg_port",
                                         "keeper_port", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, cell_what, " node", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, n->name);
    describe(what, sizeof what, cell_what, " node", n->name, index);
    check_fields(p, v, what, fields);
    get_name(p, v, "region", true, what, n->region);
    get_name(p, v, "zone", true, what, n->zone);
    int role = 0;
    if (get_enum(p, v, "role", true, what, node_role_names, &role) > 0)
        n->role = (topology_node_role)role;
    get_port(p, v, "pg_port", what, &n->pg_port);
    get_port(p, v, "keeper_port", what, &n->keeper_port);
}

static void parse_backup(parser *p, const json_t *v, const char *cell_what, size_t index,
                         topology_backup *b)
{
    static const char *const fields[] = {"name", "region", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, cell_what, " backup repository", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, b->name);
    describe(what, sizeof what, cell_what, " backup repository", b->name, index);
    check_fields(p, v, what, fields);
    get_name(p, v, "region", true, what, b->region);
}

static void parse_cache(parser *p, const json_t *v, const char *cell_what, size_t index,
                        topology_cache *c)
{
    static const char *const fields[] = {"name", "region", "zone", "port", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, cell_what, " cache", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, c->name);
    describe(what, sizeof what, cell_what, " cache", c->name, index);
    check_fields(p, v, what, fields);
    get_name(p, v, "region", true, what, c->region);
    get_name(p, v, "zone", true, what, c->zone);
    get_port(p, v, "port", what, &c->port);
}

static void parse_meridiand(parser *p, const json_t *v, const char *cell_what, size_t index,
                            topology_meridiand *m)
{
    static const char *const fields[] = {"region", "instances", "scale_to", "port", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    describe(what, sizeof what, cell_what, " meridiand entry", "", index);
    if (!check_object(p, v, what, fields))
        return;
    if (get_name(p, v, "region", true, what, m->region) > 0)
        snprintf(what, sizeof what, "%s meridiand in '%s'", cell_what, m->region);
    get_uint(p, v, "instances", true, what, 1, LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX,
             &m->instances);
    /* scale_to: how many run while the cell's leader is in this region. */
    m->scale_to = 0;
    int got = get_uint(p, v, "scale_to", false, what, 1,
                       LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX, &m->scale_to);
    if (got > 0 && m->instances > 0 && m->scale_to < m->instances) {
        size_t mark = ptr_push(p, "scale_to");
        topology_error *e = perr(p, "schema.range",
                                 "%s: 'scale_to' is %u, below 'instances' %u (scaling up "
                                 "never stops instances)",
                                 what, m->scale_to, m->instances);
        phint(e, "write a 'scale_to' from %u to %d, or leave it out", m->instances,
              LIMIT_TOPOLOGY_MERIDIAND_INSTANCES_MAX);
        ptr_restore(p, mark);
    }
    if (got <= 0 || m->scale_to < m->instances)
        m->scale_to = m->instances;
    if (get_port(p, v, "port", what, &m->port) > 0 && m->port != TOPOLOGY_PORT_AUTO &&
        (uint32_t)m->port + m->scale_to - 1 > 65535) {
        size_t mark = ptr_push(p, "port");
        topology_error *e = perr(p, "port.range",
                                 "%s: ports %u..%u (one per instance, up to scale_to) run "
                                 "past 65535",
                                 what, m->port, m->port + m->scale_to - 1);
        phint(e, "lower 'port' or use \"auto\"");
        ptr_restore(p, mark);
    }
}

static void parse_failover(parser *p, const json_t *cell_obj, const char *cell_what,
                           topology_failover *f)
{
    static const char *const fields[] = {"mode", "region_failover_after_s", "max_loss_s",
                                         NULL};
    json_t *v = field(p, cell_obj, "failover", true, cell_what);
    if (v == NULL)
        return;
    size_t mark = ptr_push(p, "failover");
    char what[TOPOLOGY_WHAT_BYTES];
    snprintf(what, sizeof what, "%s failover policy", cell_what);
    if (!check_object(p, v, what, fields))
        goto out;
    int mode = 0;
    if (get_enum(p, v, "mode", true, what, failover_mode_names, &mode) > 0)
        f->mode = (topology_failover_mode)mode;
    bool automatic = f->mode == TOPOLOGY_FAILOVER_AUTOMATIC;
    /* automatic needs both numbers; manual may state them. */
    get_uint(p, v, "region_failover_after_s", automatic, what, 1,
             LIMIT_TOPOLOGY_FAILOVER_AFTER_S_MAX, &f->region_failover_after_s);
    get_uint(p, v, "max_loss_s", automatic, what, 0, LIMIT_TOPOLOGY_MAX_LOSS_S_MAX,
             &f->max_loss_s);
out:
    ptr_restore(p, mark);
}

/* Parse the objects of arr with fn into out[] (stride bytes each). */
#define PARSE_EACH(p, arr, cell_what, fn, out, count)                          \
    do {                                                                       \
        size_t i_;                                                             \
        json_t *v_;                                                            \
        json_array_foreach((arr), i_, v_) {                                    \
            size_t m_ = ptr_push_index((p), i_);                               \
            fn((p), v_, (cell_what), i_, &(out)[i_]);                          \
            ptr_restore((p), m_);                                              \
        }                                                                      \
        (count) = json_array_size(arr);                                        \
    } while (0)

static void parse_cell(parser *p, const json_t *v, size_t index, topology_cell *c)
{
    static const char *const fields[] = {"name",      "jurisdiction",
                                         "home_region", "allowed_regions",
                                         "cross_border_jurisdictions",
                                         "nodes",     "backups",
                                         "caches",    "meridiand",
                                         "failover",  NULL};
    char what[TOPOLOGY_CELL_WHAT_BYTES];
    describe(what, sizeof what, "", "cell", "", index);
    if (!is_object(p, v, what))
        return;
    get_name(p, v, "name", true, what, c->name);
    describe(what, sizeof what, "", "cell", c->name, index);
    check_fields(p, v, what, fields);
    get_jurisdiction(p, v, "jurisdiction", what, c->jurisdiction);
    get_name(p, v, "home_region", true, what, c->home_region);
    get_name_list(p, v, "allowed_regions", true, what, 1, LIMIT_TOPOLOGY_REGIONS_MAX,
                  c->allowed_regions, &c->allowed_region_count);

    json_t *arr;
    if (get_array(p, v, "cross_border_jurisdictions", false, what, 0,
                  LIMIT_TOPOLOGY_REGIONS_MAX, &arr) > 0) {
        size_t mark = ptr_push(p, "cross_border_jurisdictions");
        size_t i;
        json_t *j;
        json_array_foreach(arr, i, j) {
            size_t m2 = ptr_push_index(p, i);
            if (json_is_string(j) &&
                jurisdiction_ok(json_string_value(j), json_string_length(j))) {
                snprintf(c->cross_border_jurisdictions[c->cross_border_count++],
                         TOPOLOGY_JURISDICTION_BYTES, "%s", json_string_value(j));
            } else {
                topology_error *e = perr(p, "jurisdiction.format",
                                         "%s: 'cross_border_jurisdictions' element %zu is not "
                                         "a jurisdiction code",
                                         what, i);
                phint(e, "write %s", JURISDICTION_SHAPE);
            }
            ptr_restore(p, m2);
        }
        ptr_restore(p, mark);
    }

    size_t mark;
    if (get_array(p, v, "nodes", true, what, 1, LIMIT_TOPOLOGY_CELL_NODES_MAX, &arr) > 0) {
        mark = ptr_push(p, "nodes");
        PARSE_EACH(p, arr, what, parse_node, c->nodes, c->node_count);
        ptr_restore(p, mark);
    }
    if (get_array(p, v, "backups", false, what, 0, LIMIT_TOPOLOGY_CELL_BACKUPS_MAX, &arr) >
        0) {
        mark = ptr_push(p, "backups");
        PARSE_EACH(p, arr, what, parse_backup, c->backups, c->backup_count);
        ptr_restore(p, mark);
    }
    if (get_array(p, v, "caches", false, what, 0, LIMIT_TOPOLOGY_CELL_CACHES_MAX, &arr) > 0) {
        mark = ptr_push(p, "caches");
        PARSE_EACH(p, arr, what, parse_cache, c->caches, c->cache_count);
        ptr_restore(p, mark);
    }
    if (get_array(p, v, "meridiand", true, what, 1, LIMIT_TOPOLOGY_REGIONS_MAX, &arr) > 0) {
        mark = ptr_push(p, "meridiand");
        PARSE_EACH(p, arr, what, parse_meridiand, c->meridiand, c->meridiand_count);
        ptr_restore(p, mark);
    }
    parse_failover(p, v, what, &c->failover);
}

static void parse_wan_link(parser *p, const json_t *v, const char *unused, size_t index,
                           topology_wan_link *w)
{
    static const char *const fields[] = {"between", "one_way_delay_ms", "jitter_ms", NULL};
    char what[TOPOLOGY_WHAT_BYTES];
    snprintf(what, sizeof what, "WAN link #%zu", index + 1);
    if (!check_object(p, v, what, fields))
        return;
    char ends[2][TOPOLOGY_NAME_BYTES] = {{0}};
    size_t n = 0;
    if (get_name_list(p, v, "between", true, what, 2, 2, ends, &n) > 0 && n == 2) {
        memcpy(w->a, ends[0], sizeof w->a);
        memcpy(w->b, ends[1], sizeof w->b);
        snprintf(what, sizeof what, "WAN link %s <-> %s", w->a, w->b);
    }
    w->one_way_delay_ms = LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT;
    get_uint(p, v, "one_way_delay_ms", false, what, 0, LIMIT_TOPOLOGY_WAN_DELAY_MS_MAX,
             &w->one_way_delay_ms);
    get_uint(p, v, "jitter_ms", false, what, 0, LIMIT_TOPOLOGY_WAN_DELAY_MS_MAX, &w->jitter_ms);
}

static void parse_top(parser *p, const json_t *root, topology *t)
{
    static const char *const fields[] = {"version", "name", "ports", "regions",
                                         "etcd",    "cells", "wan",  NULL};
    if (!check_object(p, root, "the topology", fields))
        return;

    json_t *ver = field(p, root, "version", true, "the topology");
    if (ver != NULL && (!json_is_integer(ver) || json_integer_value(ver) != TOPOLOGY_VERSION)) {
        size_t mark = ptr_push(p, "version");
        topology_error *e = perr(p, "schema.version",
                                 "unsupported topology version (this meridianctl reads "
                                 "version %d)",
                                 TOPOLOGY_VERSION);
        phint(e, "write \"version\": %d, or use the meridianctl that matches the file",
              TOPOLOGY_VERSION);
        ptr_restore(p, mark);
    }
    get_name(p, root, "name", false, "the topology", t->name);

    json_t *ports = field(p, root, "ports", false, "the topology");
    if (ports != NULL) {
        static const char *const port_fields[] = {"base", NULL};
        size_t mark = ptr_push(p, "ports");
        if (check_object(p, ports, "'ports'", port_fields))
            get_port(p, ports, "base", "'ports'", &t->port_base);
        ptr_restore(p, mark);
    }

    json_t *arr;
    size_t mark;
    if (get_array(p, root, "regions", true, "the topology", 1, LIMIT_TOPOLOGY_REGIONS_MAX,
                  &arr) > 0) {
        mark = ptr_push(p, "regions");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            size_t m2 = ptr_push_index(p, i);
            parse_region(p, v, i, &t->regions[i]);
            ptr_restore(p, m2);
        }
        t->region_count = json_array_size(arr);
        ptr_restore(p, mark);
    }

    json_t *etcd = field(p, root, "etcd", true, "the topology");
    if (etcd != NULL) {
        static const char *const etcd_fields[] = {"members", NULL};
        mark = ptr_push(p, "etcd");
        if (check_object(p, etcd, "'etcd'", etcd_fields) &&
            get_array(p, etcd, "members", true, "'etcd'", 1, LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX,
                      &arr) > 0) {
            size_t m2 = ptr_push(p, "members");
            size_t i;
            json_t *v;
            json_array_foreach(arr, i, v) {
                size_t m3 = ptr_push_index(p, i);
                parse_etcd_member(p, v, i, &t->etcd[i]);
                ptr_restore(p, m3);
            }
            t->etcd_count = json_array_size(arr);
            ptr_restore(p, m2);
        }
        ptr_restore(p, mark);
    }

    if (get_array(p, root, "cells", true, "the topology", 1, LIMIT_TOPOLOGY_CELLS_MAX, &arr) >
        0) {
        mark = ptr_push(p, "cells");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            size_t m2 = ptr_push_index(p, i);
            parse_cell(p, v, i, &t->cells[i]);
            ptr_restore(p, m2);
        }
        t->cell_count = json_array_size(arr);
        ptr_restore(p, mark);
    }

    if (get_array(p, root, "wan", false, "the topology", 0, LIMIT_TOPOLOGY_WAN_LINKS_MAX,
                  &arr) > 0) {
        mark = ptr_push(p, "wan");
        PARSE_EACH(p, arr, "", parse_wan_link, t->wan, t->wan_count);
        ptr_restore(p, mark);
    }
}

/* ------------------------------------------------------------------ */
/* Residency: one rule for declared and observed placements            */

static const topology_region *find_region(const topology *t, const char *name)
{
    for (size_t i = 0; i < t->region_count; i++)
        if (strcmp(t->regions[i].name, name) == 0)
            return &t->regions[i];
    return NULL;
}

static bool region_has_zone(const topology_region *r, const char *zone)
{
    for (size_t i = 0; i < r->zone_count; i++)
        if (strcmp(r->zones[i], zone) == 0)
            return true;
    return false;
}

bool topology_jurisdiction_restricted(const char *jurisdiction)
{
    for (size_t i = 0; restricted_jurisdictions[i] != NULL; i++)
        if (strcmp(jurisdiction, restricted_jurisdictions[i]) == 0)
            return true;
    return false;
}

bool topology_jurisdiction_allowed(const topology_cell *cell, const char *region_j)
{
    if (strcmp(cell->jurisdiction, region_j) == 0)
        return true;
    if (topology_jurisdiction_restricted(cell->jurisdiction))
        return false;
    for (size_t i = 0; i < cell->cross_border_count; i++)
        if (strcmp(cell->cross_border_jurisdictions[i], region_j) == 0)
            return true;
    return false;
}

bool topology_cell_allows_region(const topology_cell *cell, const char *region)
{
    for (size_t i = 0; i < cell->allowed_region_count; i++)
        if (strcmp(cell->allowed_regions[i], region) == 0)
            return true;
    return false;
}

/* Whether cell c's data may be in region. Returns NULL when it may, else
 * the rule it breaks, with why (appended after "... is in region 'R'")
 * in detail and what to do with noun ("the node") in hint. */
static const char *placement_rule(const topology *t, const topology_cell *c, const char *region,
                                  const char *noun, char *detail, size_t detail_size,
                                  char *hint, size_t hint_size)
{
    char allowed[TOPOLOGY_LIST_BYTES];
    join_names(allowed, sizeof allowed, c->allowed_regions, c->allowed_region_count);
    const topology_region *r = find_region(t, region);
    if (r == NULL) {
        snprintf(detail, detail_size, ", which the topology does not define");
        snprintf(hint, hint_size, "use one of the cell's allowed regions %s", allowed);
        return "residency.unknown-region";
    }
    if (r->role == TOPOLOGY_REGION_WITNESS) {
        snprintf(detail, detail_size,
                 ", a witness region: a witness holds an etcd member only, never cell data "
                 "(DESIGN.md invariant 4)");
        snprintf(hint, hint_size, "place %s in one of the cell's allowed regions %s", noun,
                 allowed);
        return "residency.witness";
    }
    bool listed = topology_cell_allows_region(c, region);
    bool jurisdiction_ok = topology_jurisdiction_allowed(c, r->jurisdiction);
    if (!listed) {
        if (!jurisdiction_ok && topology_jurisdiction_restricted(c->jurisdiction))
            snprintf(detail, detail_size,
                     ", outside the cell's allowed regions %s: %s data must stay in the %s "
                     "(DESIGN.md invariant 4)",
                     allowed, c->jurisdiction, c->jurisdiction);
        else
            snprintf(detail, detail_size,
                     ", outside the cell's allowed regions %s: a cell's data stays in its "
                     "allowed regions (DESIGN.md invariant 4)",
                     allowed);
        if (topology_jurisdiction_restricted(c->jurisdiction))
            snprintf(hint, hint_size, "move %s to an %s region among %s or remove it", noun,
                     c->jurisdiction, allowed);
        else
            snprintf(hint, hint_size,
                     "move %s to one of %s, or add '%s' to the cell's allowed_regions if its "
                     "jurisdiction permits",
                     noun, allowed, region);
        return "residency.allowed-regions";
    }
    if (!jurisdiction_ok) {
        snprintf(detail, detail_size,
                 " (jurisdiction %s), which a cell of jurisdiction %s may not use%s "
                 "(DESIGN.md invariant 4)",
                 r->jurisdiction, c->jurisdiction,
                 topology_jurisdiction_restricted(c->jurisdiction)
                     ? ": its data must stay in its jurisdiction"
                     : " without listing it in cross_border_jurisdictions");
        if (topology_jurisdiction_restricted(c->jurisdiction))
            snprintf(hint, hint_size, "move %s to an %s region", noun, c->jurisdiction);
        else
            snprintf(hint, hint_size,
                     "add \"%s\" to the cell's cross_border_jurisdictions if the law and "
                     "contracts allow copies there, or use a %s region",
                     r->jurisdiction, c->jurisdiction);
        return "residency.jurisdiction";
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Phase 2: the topology as a whole                                    */

/* The objects that share one namespace (each is a directory and a
 * process of the lab): etcd members, nodes, backup repositories, caches. */
typedef struct object_ref {
    const char *name;
    char pointer[TOPOLOGY_POINTER_BYTES];
    char what[TOPOLOGY_WHAT_BYTES];
} object_ref;

#define TOPOLOGY_OBJECTS_MAX                                                   \
    (LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX +                                         \
     LIMIT_TOPOLOGY_CELLS_MAX * (LIMIT_TOPOLOGY_CELL_NODES_MAX +                \
                                 LIMIT_TOPOLOGY_CELL_BACKUPS_MAX +             \
                                 LIMIT_TOPOLOGY_CELL_CACHES_MAX))

/* "cell 'us' node 'us-n1' keeper_port" */
#define TOPOLOGY_PORT_WHAT_BYTES (TOPOLOGY_WHAT_BYTES + 16)

typedef struct port_use {
    uint32_t lo, hi; /* inclusive */
    char pointer[TOPOLOGY_POINTER_BYTES];
    char what[TOPOLOGY_PORT_WHAT_BYTES];
} port_use;

/* Scratch for phase 2, on the heap (tens of KB). */
typedef struct checker {
    size_t object_count;
    object_ref objects[TOPOLOGY_OBJECTS_MAX];
    size_t port_count;
    port_use ports[TOPOLOGY_PORT_USES_MAX];
    uint32_t auto_ports; /* ports the lab must pick */
} checker;

static void add_object(parser *p, checker *k, const char *name, const char *what)
{
    for (size_t i = 0; i < k->object_count; i++) {
        if (strcmp(k->objects[i].name, name) == 0) {
            topology_error *e = perr(p, "name.unique",
                                     "%s has the same name as %s (%s): names of etcd members, "
                                     "nodes, backup repositories and caches must be unique",
                                     what, k->objects[i].what, k->objects[i].pointer);
            phint(e, "rename one of them");
            return;
        }
    }
    mrd_assert(k->object_count < TOPOLOGY_OBJECTS_MAX);
    object_ref *o = &k->objects[k->object_count++];
    o->name = name;
    snprintf(o->pointer, sizeof o->pointer, "%s", p->ptr);
    snprintf(o->what, sizeof o->what, "%s", what);
}

/* A port (or the range port..port+count-1) used by what at the current
 * pointer. "auto" ports are only counted. */
static void add_port(parser *p, checker *k, uint16_t port, uint32_t count, const char *field_name,
                     const char *what)
{
    if (port == TOPOLOGY_PORT_AUTO) {
        k->auto_ports += count;
        return;
    }
    size_t mark = ptr_push(p, field_name);
    char desc[TOPOLOGY_PORT_WHAT_BYTES];
    snprintf(desc, sizeof desc, "%s %s", what, field_name);
    uint32_t lo = port, hi = port + count - 1;
    for (size_t i = 0; i < k->port_count; i++) {
        const port_use *u = &k->ports[i];
        if (lo <= u->hi && u->lo <= hi) {
            topology_error *e = perr(p, "port.unique",
                                     "%s: port %u is already used by %s (%s)", desc,
                                     lo > u->lo ? lo : u->lo, u->what, u->pointer);
            phint(e, "give each its own port, or write \"auto\"");
            ptr_restore(p, mark);
            return;
        }
    }
    mrd_assert(k->port_count < TOPOLOGY_PORT_USES_MAX);
    port_use *u = &k->ports[k->port_count++];
    u->lo = lo;
    u->hi = hi;
    snprintf(u->pointer, sizeof u->pointer, "%s", p->ptr);
    snprintf(u->what, sizeof u->what, "%s", desc);
    ptr_restore(p, mark);
}

/* A region reference (and a zone in it when zone is not NULL). Returns
 * the region, or NULL after recording why. */
static const topology_region *check_ref(parser *p, const topology *t, const char *what,
                                        const char *region, const char *zone)
{
    const topology_region *r = find_region(t, region);
    if (r == NULL) {
        size_t mark = ptr_push(p, "region");
        topology_error *e = perr(p, "ref.region", "%s names region '%s', which is not defined",
                                 what, region);
        phint(e, "define it under \"regions\" or fix the name");
        ptr_restore(p, mark);
        return NULL;
    }
    if (zone != NULL && !region_has_zone(r, zone)) {
        char zones[TOPOLOGY_LIST_BYTES];
        join_names(zones, sizeof zones, r->zones, r->zone_count);
        size_t mark = ptr_push(p, "zone");
        topology_error *e = perr(p, "ref.zone",
                                 "%s is in zone '%s', which region '%s' does not have", what,
                                 zone, region);
        phint(e, "use one of %s or add the zone to region '%s'", zones, region);
        ptr_restore(p, mark);
    }
    return r;
}

/* Residency of one object of cell c at the current pointer. */
static void check_residency(parser *p, const topology *t, const topology_cell *c,
                            const char *what, const char *noun, const char *region)
{
    char detail[TOPOLOGY_DETAIL_BYTES];
    char hint[TOPOLOGY_HINT_BYTES];
    const char *rule =
        placement_rule(t, c, region, noun, detail, sizeof detail, hint, sizeof hint);
    if (rule == NULL)
        return;
    size_t mark = ptr_push(p, "region");
    topology_error *e = perr(p, rule, "%s is in region '%s'%s", what, region, detail);
    phint(e, "%s", hint);
    ptr_restore(p, mark);
}

static void check_regions(parser *p, const topology *t)
{
    bool any_data_region = false;
    for (size_t i = 0; i < t->region_count; i++) {
        const topology_region *r = &t->regions[i];
        ptr_set(p, "/regions/%zu", i);
        any_data_region |= r->role != TOPOLOGY_REGION_WITNESS;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t->regions[j].name, r->name) == 0) {
                topology_error *e = perr(p, "name.unique",
                                         "region '%s' is defined twice (also /regions/%zu)",
                                         r->name, j);
                phint(e, "rename or remove one of them");
            }
        }
        for (size_t z = 0; z < r->zone_count; z++) {
            for (size_t y = 0; y < z; y++) {
                if (strcmp(r->zones[y], r->zones[z]) == 0) {
                    ptr_set(p, "/regions/%zu/zones/%zu", i, z);
                    topology_error *e = perr(p, "name.unique",
                                             "region '%s' lists zone '%s' twice", r->name,
                                             r->zones[z]);
                    phint(e, "remove the duplicate");
                }
            }
        }
    }
    if (!any_data_region) {
        ptr_set(p, "/regions");
        topology_error *e = perr(p, "region.role",
                                 "every region is a witness: no region can hold cell data");
        phint(e, "give the data regions the role \"primary\" or \"secondary\"");
    }
}

static void check_etcd(parser *p, const topology *t, checker *k)
{
    char sites[LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX][TOPOLOGY_NAME_BYTES];
    size_t per_site[LIMIT_TOPOLOGY_ETCD_MEMBERS_MAX] = {0};
    size_t site_count = 0;
    for (size_t i = 0; i < t->etcd_count; i++) {
        const topology_etcd_member *m = &t->etcd[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "etcd member '%s'", m->name);
        ptr_set(p, "/etcd/members/%zu", i);
        add_object(p, k, m->name, what);
        add_port(p, k, m->client_port, 1, "client_port", what);
        add_port(p, k, m->peer_port, 1, "peer_port", what);
        check_ref(p, t, what, m->region, m->zone);
        size_t s = 0;
        while (s < site_count && strcmp(sites[s], m->region) != 0)
            s++;
        if (s == site_count)
            snprintf(sites[site_count++], TOPOLOGY_NAME_BYTES, "%s", m->region);
        per_site[s]++;
    }
    ptr_set(p, "/etcd/members");
    size_t n = t->etcd_count;
    if (n < 3 || n % 2 == 0) {
        topology_error *e = perr(p, "etcd.members",
                                 "etcd has %zu members; it needs an odd number, at least 3", n);
        phint(e, "use 3 (one per site) or 5 members: an even count adds no fault tolerance");
        return;
    }
    size_t quorum = n / 2 + 1;
    if (site_count < 3) {
        topology_error *e = perr(p, "etcd.sites",
                                 "etcd's %zu members are in %zu region(s); they must be in at "
                                 "least 3, so that losing one region leaves a majority",
                                 n, site_count);
        phint(e, "put a member in each of two data regions and one in a witness region");
        return;
    }
    for (size_t s = 0; s < site_count; s++) {
        if (per_site[s] >= quorum) {
            topology_error *e = perr(p, "etcd.sites",
                                     "region '%s' holds %zu of etcd's %zu members, a majority: "
                                     "losing that region would stop etcd everywhere",
                                     sites[s], per_site[s], n);
            phint(e, "spread the members so that no region holds %zu or more", quorum);
        }
    }
}

static void check_cell(parser *p, const topology *t, size_t ci, checker *k)
{
    const topology_cell *c = &t->cells[ci];
    char cw[TOPOLOGY_CELL_WHAT_BYTES];
    snprintf(cw, sizeof cw, "cell '%s'", c->name);
    char allowed[TOPOLOGY_LIST_BYTES];
    join_names(allowed, sizeof allowed, c->allowed_regions, c->allowed_region_count);

    ptr_set(p, "/cells/%zu", ci);
    for (size_t j = 0; j < ci; j++) {
        if (strcmp(t->cells[j].name, c->name) == 0) {
            topology_error *e = perr(p, "name.unique", "cell '%s' is defined twice (also "
                                                       "/cells/%zu)",
                                     c->name, j);
            phint(e, "cell names are unique: they prefix account addresses (<cell>:<id>)");
        }
    }

    /* Cross-border permissions: none for a restricted jurisdiction. */
    if (c->cross_border_count > 0 && topology_jurisdiction_restricted(c->jurisdiction)) {
        ptr_set(p, "/cells/%zu/cross_border_jurisdictions", ci);
        topology_error *e = perr(p, "residency.restricted",
                                 "%s has jurisdiction %s, whose data must stay in the %s "
                                 "(DESIGN.md invariant 4); it may list no "
                                 "cross_border_jurisdictions",
                                 cw, c->jurisdiction, c->jurisdiction);
        phint(e, "remove cross_border_jurisdictions and keep every copy in %s regions",
              c->jurisdiction);
    }

    /* Allowed regions: defined, not witnesses, in a permitted jurisdiction. */
    for (size_t i = 0; i < c->allowed_region_count; i++) {
        const char *name = c->allowed_regions[i];
        ptr_set(p, "/cells/%zu/allowed_regions/%zu", ci, i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->allowed_regions[j], name) == 0) {
                topology_error *e = perr(p, "name.unique",
                                         "%s lists allowed region '%s' twice", cw, name);
                phint(e, "remove the duplicate");
            }
        }
        const topology_region *r = find_region(t, name);
        if (r == NULL) {
            topology_error *e = perr(p, "ref.region",
                                     "%s allows region '%s', which is not defined", cw, name);
            phint(e, "define it under \"regions\" or fix the name");
        } else if (r->role == TOPOLOGY_REGION_WITNESS) {
            topology_error *e = perr(p, "residency.witness",
                                     "%s allows region '%s', a witness region: a witness holds "
                                     "an etcd member only, never cell data",
                                     cw, name);
            phint(e, "remove '%s' from allowed_regions", name);
        } else if (!topology_jurisdiction_allowed(c, r->jurisdiction)) {
            topology_error *e =
                perr(p, "residency.jurisdiction",
                     "%s (jurisdiction %s) allows region '%s' of jurisdiction %s%s "
                     "(DESIGN.md invariant 4)",
                     cw, c->jurisdiction, name, r->jurisdiction,
                     topology_jurisdiction_restricted(c->jurisdiction)
                         ? ": its data must stay in its jurisdiction"
                         : " without listing it in cross_border_jurisdictions");
            if (topology_jurisdiction_restricted(c->jurisdiction))
                phint(e, "remove '%s' from allowed_regions; use %s regions only", name,
                      c->jurisdiction);
            else
                phint(e, "add \"%s\" to cross_border_jurisdictions if copies there are "
                         "permitted, or remove '%s' from allowed_regions",
                      r->jurisdiction, name);
        }
    }

    /* Home region: defined, the cell's own jurisdiction, allowed. */
    ptr_set(p, "/cells/%zu/home_region", ci);
    const topology_region *home = find_region(t, c->home_region);
    if (home == NULL) {
        topology_error *e = perr(p, "ref.region",
                                 "%s has home region '%s', which is not defined", cw,
                                 c->home_region);
        phint(e, "define it under \"regions\" or fix the name");
    } else if (home->role == TOPOLOGY_REGION_WITNESS) {
        topology_error *e = perr(p, "residency.witness",
                                 "%s has home region '%s', a witness region", cw,
                                 c->home_region);
        phint(e, "choose a data region (role primary or secondary)");
    } else if (strcmp(home->jurisdiction, c->jurisdiction) != 0) {
        topology_error *e = perr(p, "cell.home-region",
                                 "%s (jurisdiction %s) has home region '%s' of jurisdiction %s: "
                                 "a cell's primary lives in its own jurisdiction",
                                 cw, c->jurisdiction, c->home_region, home->jurisdiction);
        phint(e, "choose a home region of jurisdiction %s", c->jurisdiction);
    }
    if (!topology_cell_allows_region(c, c->home_region)) {
        topology_error *e = perr(p, "cell.home-region",
                                 "%s has home region '%s', which is not among its allowed "
                                 "regions %s",
                                 cw, c->home_region, allowed);
        phint(e, "add '%s' to allowed_regions", c->home_region);
    }

    /* Nodes. */
    size_t candidates = 0;
    char cand_zones[LIMIT_TOPOLOGY_CELL_NODES_MAX][TOPOLOGY_NAME_BYTES];
    size_t cand_zone_count = 0;
    char dr_regions[LIMIT_TOPOLOGY_CELL_NODES_MAX][TOPOLOGY_NAME_BYTES];
    size_t dr_count = 0;
    for (size_t i = 0; i < c->node_count; i++) {
        const topology_node *n = &c->nodes[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "%s node '%s'", cw, n->name);
        ptr_set(p, "/cells/%zu/nodes/%zu", ci, i);
        add_object(p, k, n->name, what);
        add_port(p, k, n->pg_port, 1, "pg_port", what);
        add_port(p, k, n->keeper_port, 1, "keeper_port", what);
        if (check_ref(p, t, what, n->region, n->zone) == NULL)
            continue;
        check_residency(p, t, c, what, "the node", n->region);
        bool in_home = strcmp(n->region, c->home_region) == 0;
        if (n->role == TOPOLOGY_NODE_PRIMARY_CANDIDATE) {
            if (!in_home) {
                size_t mark = ptr_push(p, "role");
                topology_error *e = perr(p, "cell.primary-candidate",
                                         "%s is a primary-candidate in region '%s', not in the "
                                         "cell's home region '%s': synchronous replication "
                                         "stays inside the home region",
                                         what, n->region, c->home_region);
                phint(e, "make it a \"dr-standby\" or move it to '%s'", c->home_region);
                ptr_restore(p, mark);
                continue;
            }
            candidates++;
            size_t z = 0;
            while (z < cand_zone_count && strcmp(cand_zones[z], n->zone) != 0)
                z++;
            if (z == cand_zone_count)
                snprintf(cand_zones[cand_zone_count++], TOPOLOGY_NAME_BYTES, "%s", n->zone);
        } else {
            if (in_home) {
                size_t mark = ptr_push(p, "role");
                topology_error *e = perr(p, "cell.dr-standby",
                                         "%s is a dr-standby in the cell's home region '%s': a "
                                         "DR standby must be in another region",
                                         what, c->home_region);
                phint(e, "make it a \"primary-candidate\" or move it to another allowed region");
                ptr_restore(p, mark);
                continue;
            }
            bool twice = false;
            for (size_t d = 0; d < dr_count && !twice; d++)
                twice = strcmp(dr_regions[d], n->region) == 0;
            if (twice) {
                topology_error *e = perr(p, "cell.dr-standby",
                                         "%s is a second DR standby in region '%s': at most "
                                         "one DR standby per region",
                                         what, n->region);
                phint(e, "remove it, or place it in another allowed region");
                continue;
            }
            snprintf(dr_regions[dr_count++], TOPOLOGY_NAME_BYTES, "%s", n->region);
        }
    }
    ptr_set(p, "/cells/%zu/nodes", ci);
    if (candidates < 3 || cand_zone_count < 2) {
        topology_error *e = perr(p, "cell.quorum",
                                 "%s has %zu primary-candidate node(s) in %zu zone(s) of its "
                                 "home region '%s'; it needs at least 3 in at least 2 zones "
                                 "(a commit is flushed in two zones, DESIGN.md invariant 2)",
                                 cw, candidates, cand_zone_count, c->home_region);
        phint(e, "add primary-candidate nodes in other zones of '%s'", c->home_region);
    }

    for (size_t i = 0; i < c->backup_count; i++) {
        const topology_backup *b = &c->backups[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "%s backup repository '%s'", cw, b->name);
        ptr_set(p, "/cells/%zu/backups/%zu", ci, i);
        add_object(p, k, b->name, what);
        if (check_ref(p, t, what, b->region, NULL) != NULL)
            check_residency(p, t, c, what, "the repository", b->region);
    }
    for (size_t i = 0; i < c->cache_count; i++) {
        const topology_cache *ca = &c->caches[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "%s cache '%s'", cw, ca->name);
        ptr_set(p, "/cells/%zu/caches/%zu", ci, i);
        add_object(p, k, ca->name, what);
        add_port(p, k, ca->port, 1, "port", what);
        if (check_ref(p, t, what, ca->region, ca->zone) != NULL)
            check_residency(p, t, c, what, "the cache", ca->region);
    }
    bool served_home = false;
    for (size_t i = 0; i < c->meridiand_count; i++) {
        const topology_meridiand *m = &c->meridiand[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "%s meridiand in '%s'", cw, m->region);
        ptr_set(p, "/cells/%zu/meridiand/%zu", ci, i);
        for (size_t j = 0; j < i; j++) {
            if (strcmp(c->meridiand[j].region, m->region) == 0) {
                topology_error *e = perr(p, "name.unique",
                                         "%s is listed twice (also /cells/%zu/meridiand/%zu)",
                                         what, ci, j);
                phint(e, "merge them into one entry with the total 'instances'");
            }
        }
        add_port(p, k, m->port, m->scale_to > m->instances ? m->scale_to : m->instances,
                 "port", what);
        served_home |= strcmp(m->region, c->home_region) == 0;
        if (check_ref(p, t, what, m->region, NULL) != NULL)
            check_residency(p, t, c, what, "these instances", m->region);
    }
    if (!served_home) {
        ptr_set(p, "/cells/%zu/meridiand", ci);
        topology_error *e = perr(p, "cell.meridiand",
                                 "%s has no meridiand in its home region '%s'", cw,
                                 c->home_region);
        phint(e, "add {\"region\": \"%s\", \"instances\": 2}", c->home_region);
    }

    if (c->failover.mode == TOPOLOGY_FAILOVER_AUTOMATIC && dr_count == 0) {
        ptr_set(p, "/cells/%zu/failover/mode", ci);
        topology_error *e = perr(p, "failover.policy",
                                 "%s has an automatic failover policy but no DR standby to "
                                 "promote",
                                 cw);
        phint(e, "add a \"dr-standby\" node in another allowed region, or use \"manual\"");
    }
}

static void check_wan(parser *p, const topology *t)
{
    for (size_t i = 0; i < t->wan_count; i++) {
        const topology_wan_link *w = &t->wan[i];
        char what[TOPOLOGY_WHAT_BYTES];
        snprintf(what, sizeof what, "WAN link %s <-> %s", w->a, w->b);
        ptr_set(p, "/wan/%zu/between", i);
        for (int end = 0; end < 2; end++) {
            const char *name = end ? w->b : w->a;
            if (find_region(t, name) == NULL) {
                topology_error *e = perr(p, "ref.region",
                                         "%s names region '%s', which is not defined", what,
                                         name);
                phint(e, "define it under \"regions\" or fix the name");
            }
        }
        if (strcmp(w->a, w->b) == 0) {
            topology_error *e = perr(p, "wan.link", "%s links a region to itself", what);
            phint(e, "a WAN link joins two different regions");
        }
        for (size_t j = 0; j < i; j++) {
            const topology_wan_link *o = &t->wan[j];
            if ((strcmp(o->a, w->a) == 0 && strcmp(o->b, w->b) == 0) ||
                (strcmp(o->a, w->b) == 0 && strcmp(o->b, w->a) == 0)) {
                topology_error *e = perr(p, "wan.link", "%s is listed twice (also /wan/%zu)",
                                         what, j);
                phint(e, "one entry per pair of regions; it applies in both directions");
            }
        }
        if (w->jitter_ms > w->one_way_delay_ms) {
            ptr_set(p, "/wan/%zu/jitter_ms", i);
            topology_error *e = perr(p, "wan.link",
                                     "%s has jitter_ms %u above its one_way_delay_ms %u", what,
                                     w->jitter_ms, w->one_way_delay_ms);
            phint(e, "jitter varies the delay around its mean; keep it at most the delay");
        }
    }
}

static void check_ports(parser *p, const topology *t, checker *k)
{
    if (t->port_base == TOPOLOGY_PORT_AUTO)
        return;
    ptr_set(p, "/ports/base");
    uint32_t lo = t->port_base;
    uint32_t hi = lo + k->auto_ports - 1;
    if (k->auto_ports > 0 && hi > 65535) {
        topology_error *e = perr(p, "port.range",
                                 "ports.base %u leaves no room for the %u \"auto\" ports "
                                 "(they would run to %u)",
                                 lo, k->auto_ports, hi);
        phint(e, "lower ports.base, or use \"auto\"");
        return;
    }
    for (size_t i = 0; i < k->port_count && k->auto_ports > 0; i++) {
        const port_use *u = &k->ports[i];
        if (u->lo <= hi && lo <= u->hi) {
            topology_error *e = perr(p, "port.unique",
                                     "%s (%s) uses port %u, inside the range %u..%u that "
                                     "ports.base reserves for the %u \"auto\" ports",
                                     u->what, u->pointer, u->lo > lo ? u->lo : lo, lo, hi,
                                     k->auto_ports);
            phint(e, "move ports.base or that port so that they do not overlap");
        }
    }
}

static void check_topology(parser *p, const topology *t)
{
    checker *k = calloc(1, sizeof *k);
    if (k == NULL) {
        ptr_set(p, "%s", "");
        perr(p, "internal", "out of memory while checking the topology");
        return;
    }
    check_regions(p, t);
    check_etcd(p, t, k);
    for (size_t i = 0; i < t->cell_count; i++)
        check_cell(p, t, i, k);
    check_wan(p, t);
    check_ports(p, t, k);
    free(k);
}

/* ------------------------------------------------------------------ */
/* Loading                                                             */

int topology_parse(const char *text, size_t len, const char *origin, topology **out,
                   topology_errors *errs)
{
    mrd_assert(out != NULL && errs != NULL && origin != NULL);
    *out = NULL;
    errs->count = 0;
    errs->more = 0;
    parser p = {.errs = errs};
    topology *t = calloc(1, sizeof *t);
    if (t == NULL) {
        perr(&p, "internal", "out of memory");
        return -ENOMEM;
    }
    snprintf(t->origin, sizeof t->origin, "%s", origin);

    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        bool dup = json_error_code(&jerr) == json_error_duplicate_key;
        topology_error *e = perr(&p, dup ? "json.duplicate-key" : "json.syntax",
                                 "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        phint(e, dup ? "each key may appear once per object; remove the repeated one"
                     : "fix the JSON (a validator such as `python3 -m json.tool FILE` "
                       "shows the spot)");
        goto fail;
    }
    parse_top(&p, root, t);
    json_decref(root);
    if (error_total(&p) > 0)
        goto fail;
    check_topology(&p, t);
    if (error_total(&p) > 0)
        goto fail;
    *out = t;
    return 0;
fail:
    free(t);
    return -EINVAL;
}

/* Read path into a new buffer (at most LIMIT_TOPOLOGY_FILE_BYTES_MAX). */
static int read_file(const char *path, char **buf_out, size_t *len_out, parser *p)
{
    *buf_out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int saved = errno;
        topology_error *e = perr(p, "file.read", "cannot open: %s", strerror(saved));
        phint(e, "check the path (the default lab topology is topologies/lab.json)");
        return -saved;
    }
    char *buf = malloc(LIMIT_TOPOLOGY_FILE_BYTES_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        perr(p, "internal", "out of memory");
        return -ENOMEM;
    }
    size_t len = fread(buf, 1, LIMIT_TOPOLOGY_FILE_BYTES_MAX + 1, f);
    int rc = 0;
    if (ferror(f)) {
        perr(p, "file.read", "cannot read: %s", strerror(errno));
        rc = -EIO;
    } else if (len > LIMIT_TOPOLOGY_FILE_BYTES_MAX) {
        topology_error *e = perr(p, "file.too-large", "the file is larger than %u bytes",
                                 (unsigned)LIMIT_TOPOLOGY_FILE_BYTES_MAX);
        phint(e, "a topology file is small; check that this is the right file");
        rc = -EFBIG;
    }
    fclose(f);
    if (rc != 0) {
        free(buf);
        return rc;
    }
    *buf_out = buf;
    *len_out = len;
    return 0;
}

int topology_load_errors(const char *path, topology **out, topology_errors *errs)
{
    mrd_assert(path != NULL && out != NULL && errs != NULL);
    *out = NULL;
    errs->count = 0;
    errs->more = 0;
    parser p = {.errs = errs};
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, &p);
    if (rc != 0)
        return rc;
    rc = topology_parse(buf, len, path, out, errs);
    free(buf);
    return rc;
}

void topology_error_format(const char *origin, const topology_error *e, char *buf,
                           size_t size)
{
    snprintf(buf, size, "%s: %s%s%s [%s]%s%s", origin, e->pointer,
             e->pointer[0] ? ": " : "", e->message, e->rule ? e->rule : "?",
             e->hint[0] ? "; hint: " : "", e->hint);
}

int topology_load(const char *path, topology **out, char *err, size_t err_size)
{
    topology_errors *errs = malloc(sizeof *errs);
    if (errs == NULL) {
        if (err_size > 0)
            snprintf(err, err_size, "%s: out of memory", path);
        *out = NULL;
        return -ENOMEM;
    }
    int rc = topology_load_errors(path, out, errs);
    if (rc != 0 && err_size > 0) {
        size_t used = 0;
        err[0] = '\0';
        for (size_t i = 0; i < errs->count && used + 1 < err_size; i++) {
            char line[TOPOLOGY_POINTER_BYTES + TOPOLOGY_MESSAGE_BYTES + TOPOLOGY_HINT_BYTES +
                      TOPOLOGY_ORIGIN_BYTES];
            topology_error_format(path, &errs->items[i], line, sizeof line);
            int n = snprintf(err + used, err_size - used, "%s%s", i ? "\n" : "", line);
            if (n < 0)
                break;
            used += (size_t)n;
        }
        if (errs->more > 0 && used + 1 < err_size)
            snprintf(err + used, err_size - used, "\n... and %zu more errors", errs->more);
    }
    free(errs);
    return rc;
}

void topology_free(topology *t)
{
    free(t);
}

/* ------------------------------------------------------------------ */
/* Accessors                                                           */

const char *topology_origin(const topology *t) { return t->origin; }
const char *topology_name(const topology *t) { return t->name; }
uint16_t topology_port_base(const topology *t) { return t->port_base; }

size_t topology_region_count(const topology *t) { return t->region_count; }

const topology_region *topology_region_at(const topology *t, size_t index)
{
    mrd_assert(index < t->region_count);
    return &t->regions[index];
}

const topology_region *topology_region_find(const topology *t, const char *name)
{
    return find_region(t, name);
}

size_t topology_etcd_member_count(const topology *t) { return t->etcd_count; }

const topology_etcd_member *topology_etcd_member_at(const topology *t, size_t index)
{
    mrd_assert(index < t->etcd_count);
    return &t->etcd[index];
}

size_t topology_cell_count(const topology *t) { return t->cell_count; }

const topology_cell *topology_cell_at(const topology *t, size_t index)
{
    mrd_assert(index < t->cell_count);
    return &t->cells[index];
}

const topology_cell *topology_cell_find(const topology *t, const char *name)
{
    for (size_t i = 0; i < t->cell_count; i++)
        if (strcmp(t->cells[i].name, name) == 0)
            return &t->cells[i];
    return NULL;
}

size_t topology_node_count(const topology *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->cell_count; i++)
        n += t->cells[i].node_count;
    return n;
}

const topology_node *topology_node_find(const topology *t, const char *name,
                                        const topology_cell **cell_out)
{
    for (size_t i = 0; i < t->cell_count; i++) {
        for (size_t j = 0; j < t->cells[i].node_count; j++) {
            if (strcmp(t->cells[i].nodes[j].name, name) == 0) {
                if (cell_out != NULL)
                    *cell_out = &t->cells[i];
                return &t->cells[i].nodes[j];
            }
        }
    }
    return NULL;
}

size_t topology_wan_link_count(const topology *t) { return t->wan_count; }

const topology_wan_link *topology_wan_link_at(const topology *t, size_t index)
{
    mrd_assert(index < t->wan_count);
    return &t->wan[index];
}

bool topology_wan_delay(const topology *t, const char *a, const char *b,
                        uint32_t *one_way_delay_ms, uint32_t *jitter_ms)
{
    for (size_t i = 0; i < t->wan_count; i++) {
        const topology_wan_link *w = &t->wan[i];
        if ((strcmp(w->a, a) == 0 && strcmp(w->b, b) == 0) ||
            (strcmp(w->a, b) == 0 && strcmp(w->b, a) == 0)) {
            *one_way_delay_ms = w->one_way_delay_ms;
            *jitter_ms = w->jitter_ms;
            return true;
        }
    }
    *one_way_delay_ms = LIMIT_TOPOLOGY_WAN_DELAY_MS_DEFAULT;
    *jitter_ms = 0;
    return false;
}

const char *topology_region_role_name(topology_region_role role)
{
    mrd_assert((size_t)role < sizeof region_role_names / sizeof *region_role_names - 1);
    return region_role_names[role];
}

const char *topology_node_role_name(topology_node_role role)
{
    mrd_assert((size_t)role < sizeof node_role_names / sizeof *node_role_names - 1);
    return node_role_names[role];
}

const char *topology_failover_mode_name(topology_failover_mode mode)
{
    mrd_assert((size_t)mode < sizeof failover_mode_names / sizeof *failover_mode_names - 1);
    return failover_mode_names[mode];
}

/* ------------------------------------------------------------------ */
/* Residency violations                                                */

/* Record one violation (counted always, stored while there is room). */
static void violation(topology_violation *out, size_t out_max, size_t *count,
                      const char *cell, const char *object, const char *region,
                      const char *rule, const char *detail)
{
    if (*count < out_max) {
        topology_violation *v = &out[*count];
        memset(v, 0, sizeof *v);
        snprintf(v->cell, sizeof v->cell, "%s", cell);
        snprintf(v->object, sizeof v->object, "%s", object);
        snprintf(v->region, sizeof v->region, "%s", region);
        v->rule = rule;
        snprintf(v->detail, sizeof v->detail, "%s", detail);
    }
    (*count)++;
}

static void check_placement(const topology *t, const topology_cell *c, const char *cell_name,
                            const char *object, const char *region, topology_violation *out,
                            size_t out_max, size_t *count)
{
    char detail[TOPOLOGY_DETAIL_BYTES];
    char hint[TOPOLOGY_HINT_BYTES];
    char msg[TOPOLOGY_MESSAGE_BYTES];
    if (c == NULL) {
        snprintf(msg, sizeof msg,
                 "%s holds data of cell '%s', which the topology does not define", object,
                 cell_name);
        violation(out, out_max, count, cell_name, object, region, "residency.unknown-cell",
                  msg);
        return;
    }
    const char *rule =
        placement_rule(t, c, region, "it", detail, sizeof detail, hint, sizeof hint);
    if (rule == NULL)
        return;
    snprintf(msg, sizeof msg, "cell '%s' %s is in region '%s'%s", c->name, object, region,
             detail);
    violation(out, out_max, count, c->name, object, region, rule, msg);
}

int topology_residency_violations(const topology *t, const topology_placement *placements,
                                  size_t placement_count, topology_violation *out,
                                  size_t out_max, size_t *violation_count)
{
    mrd_assert(t != NULL && violation_count != NULL);
    mrd_assert(out != NULL || out_max == 0);
    mrd_assert(placements != NULL || placement_count == 0);
    *violation_count = 0;
    if (placements != NULL) {
        for (size_t i = 0; i < placement_count; i++) {
            const topology_placement *pl = &placements[i];
            mrd_assert(pl->cell != NULL && pl->object != NULL && pl->region != NULL);
            check_placement(t, topology_cell_find(t, pl->cell), pl->cell, pl->object,
                            pl->region, out, out_max, violation_count);
        }
        return 0;
    }
    char object[TOPOLOGY_OBJECT_BYTES];
    for (size_t ci = 0; ci < t->cell_count; ci++) {
        const topology_cell *c = &t->cells[ci];
        for (size_t i = 0; i < c->node_count; i++) {
            snprintf(object, sizeof object, "node '%s'", c->nodes[i].name);
            check_placement(t, c, c->name, object, c->nodes[i].region, out, out_max,
                            violation_count);
        }
        for (size_t i = 0; i < c->backup_count; i++) {
            snprintf(object, sizeof object, "backup repository '%s'", c->backups[i].name);
            check_placement(t, c, c->name, object, c->backups[i].region, out, out_max,
                            violation_count);
        }
        for (size_t i = 0; i < c->cache_count; i++) {
            snprintf(object, sizeof object, "cache '%s'", c->caches[i].name);
            check_placement(t, c, c->name, object, c->caches[i].region, out, out_max,
                            violation_count);
        }
        for (size_t i = 0; i < c->meridiand_count; i++) {
            snprintf(object, sizeof object, "meridiand in '%s'", c->meridiand[i].region);
            check_placement(t, c, c->name, object, c->meridiand[i].region, out, out_max,
                            violation_count);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Normalized JSON                                                     */

static json_t *port_json(uint16_t port)
{
    return port == TOPOLOGY_PORT_AUTO ? json_string("auto") : json_integer(port);
}

static json_t *names_json(const char (*names)[TOPOLOGY_NAME_BYTES], size_t count)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < count; i++)
        if (json_array_append_new(a, json_string(names[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

static json_t *cell_json(const topology_cell *c)
{
    json_t *nodes = json_array(), *backups = json_array(), *caches = json_array();
    json_t *md = json_array(), *xb = json_array();
    int bad = nodes == NULL || backups == NULL || caches == NULL || md == NULL || xb == NULL;
    for (size_t i = 0; !bad && i < c->cross_border_count; i++)
        bad |= json_array_append_new(xb, json_string(c->cross_border_jurisdictions[i]));
    for (size_t i = 0; !bad && i < c->node_count; i++) {
        const topology_node *n = &c->nodes[i];
        bad |= json_array_append_new(
            nodes, json_pack("{s:s, s:s, s:s, s:s, s:o, s:o}", "name", n->name, "region",
                             n->region, "zone", n->zone, "role",
                             topology_node_role_name(n->role), "pg_port",
                             port_json(n->pg_port), "keeper_port", port_json(n->keeper_port)));
    }
    for (size_t i = 0; !bad && i < c->backup_count; i++)
        bad |= json_array_append_new(backups, json_pack("{s:s, s:s}", "name",
                                                        c->backups[i].name, "region",
                                                        c->backups[i].region));
    for (size_t i = 0; !bad && i < c->cache_count; i++) {
        const topology_cache *ca = &c->caches[i];
        bad |= json_array_append_new(caches, json_pack("{s:s, s:s, s:s, s:o}", "name",
                                                       ca->name, "region", ca->region, "zone",
                                                       ca->zone, "port", port_json(ca->port)));
    }
    for (size_t i = 0; !bad && i < c->meridiand_count; i++) {
        const topology_meridiand *m = &c->meridiand[i];
        bad |= json_array_append_new(md, json_pack("{s:s, s:I, s:I, s:o}", "region",
                                                   m->region, "instances",
                                                   (json_int_t)m->instances, "scale_to",
                                                   (json_int_t)m->scale_to, "port",
                                                   port_json(m->port)));
    }
    if (bad) {
        json_decref(nodes);
        json_decref(backups);
        json_decref(caches);
        json_decref(md);
        json_decref(xb);
        return NULL;
    }
    json_t *failover = json_pack("{s:s}", "mode", topology_failover_mode_name(c->failover.mode));
    if (failover != NULL &&
        (c->failover.mode == TOPOLOGY_FAILOVER_AUTOMATIC ||
         c->failover.region_failover_after_s > 0)) {
        json_object_set_new(failover, "region_failover_after_s",
                            json_integer(c->failover.region_failover_after_s));
    }
    if (failover != NULL)
        json_object_set_new(failover, "max_loss_s", json_integer(c->failover.max_loss_s));
    return json_pack("{s:s, s:s, s:s, s:o*, s:o, s:o, s:o, s:o, s:o, s:o*}", "name", c->name,
                     "jurisdiction", c->jurisdiction, "home_region", c->home_region,
                     "allowed_regions",
                     names_json(c->allowed_regions, c->allowed_region_count),
                     "cross_border_jurisdictions", xb, "nodes", nodes, "backups", backups,
                     "caches", caches, "meridiand", md, "failover", failover);
}

json_t *topology_to_json(const topology *t)
{
    json_t *regions = json_array(), *members = json_array(), *cells = json_array();
    json_t *wan = json_array();
    int bad = regions == NULL || members == NULL || cells == NULL || wan == NULL;
    for (size_t i = 0; !bad && i < t->region_count; i++) {
        const topology_region *r = &t->regions[i];
        bad |= json_array_append_new(
            regions, json_pack("{s:s, s:s, s:s, s:o*}", "name", r->name, "jurisdiction",
                               r->jurisdiction, "role", topology_region_role_name(r->role),
                               "zones", names_json(r->zones, r->zone_count)));
    }
    for (size_t i = 0; !bad && i < t->etcd_count; i++) {
        const topology_etcd_member *m = &t->etcd[i];
        bad |= json_array_append_new(
            members, json_pack("{s:s, s:s, s:s, s:o, s:o}", "name", m->name, "region",
                               m->region, "zone", m->zone, "client_port",
                               port_json(m->client_port), "peer_port",
                               port_json(m->peer_port)));
    }
    for (size_t i = 0; !bad && i < t->cell_count; i++)
        bad |= json_array_append_new(cells, cell_json(&t->cells[i]));
    for (size_t i = 0; !bad && i < t->wan_count; i++) {
        const topology_wan_link *w = &t->wan[i];
        bad |= json_array_append_new(
            wan, json_pack("{s:[s,s], s:I, s:I}", "between", w->a, w->b, "one_way_delay_ms",
                           (json_int_t)w->one_way_delay_ms, "jitter_ms",
                           (json_int_t)w->jitter_ms));
    }
    if (bad) {
        json_decref(regions);
        json_decref(members);
        json_decref(cells);
        json_decref(wan);
        return NULL;
    }
    json_t *doc = json_pack("{s:i, s:{s:o}, s:o, s:{s:o}, s:o, s:o}", "version",
                            TOPOLOGY_VERSION, "ports", "base", port_json(t->port_base),
                            "regions", regions, "etcd", "members", members, "cells", cells,
                            "wan", wan);
    if (doc != NULL && t->name[0] != '\0')
        json_object_set_new(doc, "name", json_string(t->name));
    return doc;
}
