/*
 * syncset.c — the three-step change of the synchronous set (syncset.h).
 */
#include "keeper/syncset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mrd_assert.h"

static int name_cmp(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

static bool names_has(const keeper_names *n, const char *name)
{
    for (size_t i = 0; i < n->count; i++)
        if (strcmp(n->names[i], name) == 0)
            return true;
    return false;
}

static bool names_subset(const keeper_names *a, const keeper_names *b)
{
    for (size_t i = 0; i < a->count; i++)
        if (!names_has(b, a->names[i]))
            return false;
    return true;
}

static bool names_equal(const keeper_names *a, const keeper_names *b)
{
    return a->count == b->count && names_subset(a, b);
}

static void names_add(keeper_names *n, const char *name)
{
    if (names_has(n, name))
        return;
    mrd_assert(n->count < KEEPER_NODES_MAX);
    snprintf(n->names[n->count++], KEEPER_NAME_MAX, "%s", name);
}

static void names_sort(keeper_names *n)
{
    qsort(n->names, n->count, sizeof n->names[0], name_cmp);
}

void keeper_sync_desired(const keeper_view *v, uint64_t lag_bytes_max, keeper_names *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < v->member_count; i++) {
        const keeper_member *m = &v->members[i];
        /* A DR standby is asynchronous by design (80 ms away). */
        if (m->present && m->healthy && m->streaming && !m->is_primary && !m->is_dr &&
            m->lag_bytes <= lag_bytes_max)
            names_add(out, m->name);
    }
    names_sort(out);
}

void keeper_sync_plan_next(const keeper_view *v, const keeper_names *desired,
                           const keeper_names *pg_names, const keeper_names *etcd_set,
                           uint64_t changed_at_lsn, keeper_sync_plan *out)
{
    memset(out, 0, sizeof *out);
    out->kind = KEEPER_SYNC_NOOP;

    /* Never go to an empty set: writes wait rather than lose durability. */
    const keeper_names *target = desired->count > 0 ? desired : pg_names;
    if (target->count == 0)
        return;

    /* Step 1: etcd must name every node PostgreSQL may get acks from. */
    if (!names_subset(target, etcd_set)) {
        out->kind = KEEPER_SYNC_WRITE_ETCD;
        out->names = *etcd_set;
        for (size_t i = 0; i < target->count; i++)
            names_add(&out->names, target->names[i]);
        names_sort(&out->names);
        return;
    }
    /* Step 2: PostgreSQL acks only from the target. */
    if (!names_equal(target, pg_names)) {
        out->kind = KEEPER_SYNC_SET_PG;
        out->names = *target;
        return;
    }
    /* Step 3: forget the removed nodes once the target holds everything
     * acknowledged under the old names. */
    if (!names_equal(etcd_set, target)) {
        for (size_t i = 0; i < target->count; i++) {
            bool caught_up = false;
            for (size_t j = 0; j < v->member_count; j++) {
                const keeper_member *m = &v->members[j];
                if (strcmp(m->name, target->names[i]) == 0)
                    caught_up = m->present && m->flush_lsn >= changed_at_lsn;
            }
            if (!caught_up)
                return;
        }
        out->kind = KEEPER_SYNC_WRITE_ETCD;
        out->names = *target;
    }
}

int keeper_sync_names_format(const keeper_names *names, char *buf, size_t size)
{
    size_t used = 0;
    int n;

    if (size == 0)
        return -1;
    buf[0] = '\0';
    if (names->count == 0)
        return 0;
    n = snprintf(buf, size, "ANY 1 (");
    if (n < 0 || (size_t)n >= size)
        return -1;
    used = (size_t)n;
    for (size_t i = 0; i < names->count; i++) {
        n = snprintf(buf + used, size - used, "%s\"%s\"", i ? ", " : "", names->names[i]);
        if (n < 0 || (size_t)n >= size - used)
            return -1;
        used += (size_t)n;
    }
    n = snprintf(buf + used, size - used, ")");
    if (n < 0 || (size_t)n >= size - used)
        return -1;
    return 0;
}
