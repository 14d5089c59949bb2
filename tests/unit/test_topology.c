/*
 * test_topology.c — the topology file (src/topology): the default lab
 * loads with its exact shape, and every rule refuses a file that breaks
 * it with an error naming the element (JSON pointer and name), the rule
 * and a hint.
 *
 * Each bad topology is the real topologies/lab.json with one change,
 * made with jansson and written to a temporary file, so a case tests
 * exactly one rule against an otherwise valid file. The lab file is
 * found from this source file's path (__FILE__ is absolute under CMake),
 * or $MERIDIAN_SOURCE_DIR.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "topology/topology.h"

static char dir[] = "/tmp/test_topology.XXXXXX";
static char path[sizeof dir + 32];
static char lab_path[1024];
static topology_errors errs;

static int setup(void **state)
{
    (void)state;
    const char *src = getenv("MERIDIAN_SOURCE_DIR");
    if (src != NULL) {
        snprintf(lab_path, sizeof lab_path, "%s/topologies/lab.json", src);
    } else {
        const char *self = __FILE__;
        const char *tail = strstr(self, "tests/unit/test_topology.c");
        if (tail == NULL)
            return -1;
        snprintf(lab_path, sizeof lab_path, "%.*stopologies/lab.json", (int)(tail - self),
                 self);
    }
    if (access(lab_path, R_OK) != 0) {
        fprintf(stderr, "cannot read %s: set MERIDIAN_SOURCE_DIR\n", lab_path);
        return -1;
    }
    if (mkdtemp(dir) == NULL)
        return -1;
    snprintf(path, sizeof path, "%s/topology.json", dir);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(path);
    return rmdir(dir);
}

/* --- Helpers. */

static json_t *lab_json(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(lab_path, JSON_REJECT_DUPLICATES, &jerr);
    if (doc == NULL)
        fail_msg("%s: %s", lab_path, jerr.text);
    return doc;
}

/* The element at a JSON pointer ("/cells/1/nodes"), which must exist. */
static json_t *at(json_t *doc, const char *ptr)
{
    json_t *v = doc;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", ptr);
    for (char *save = NULL, *seg = strtok_r(buf, "/", &save); seg != NULL;
         seg = strtok_r(NULL, "/", &save)) {
        v = json_is_array(v) ? json_array_get(v, strtoul(seg, NULL, 10))
                             : json_object_get(v, seg);
        if (v == NULL)
            fail_msg("no element %s", ptr);
    }
    return v;
}

/* Set key of the object at ptr to val (stolen). */
static void set(json_t *doc, const char *ptr, const char *key, json_t *val)
{
    assert_int_equal(json_object_set_new(at(doc, ptr), key, val), 0);
}

static void append(json_t *doc, const char *ptr, json_t *val)
{
    assert_int_equal(json_array_append_new(at(doc, ptr), val), 0);
}

static void write_text(const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Write doc (taking it) and load it. */
static int load_doc(json_t *doc, topology **t)
{
    assert_int_equal(json_dump_file(doc, path, JSON_INDENT(2)), 0);
    json_decref(doc);
    return topology_load_errors(path, t, &errs);
}

static void dump_errors(void)
{
    char line[2048];
    for (size_t i = 0; i < errs.count; i++) {
        topology_error_format(path, &errs.items[i], line, sizeof line);
        print_message("  %s\n", line);
    }
}

/* The first error with rule, or fail. */
static const topology_error *find_rule(const char *rule)
{
    for (size_t i = 0; i < errs.count; i++)
        if (strcmp(errs.items[i].rule, rule) == 0)
            return &errs.items[i];
    print_message("no error with rule %s among:\n", rule);
    dump_errors();
    fail();
    return NULL;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (needle != NULL && strstr(haystack, needle) == NULL)
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* Load doc (taken): it must be refused with an error of rule at pointer
 * whose message contains want1 and want2 (either may be NULL), with a
 * hint. Returns that error. */
static const topology_error *expect(json_t *doc, const char *rule, const char *pointer,
                                    const char *want1, const char *want2)
{
    topology *t = NULL;
    int rc = load_doc(doc, &t);
    if (rc == 0) {
        topology_free(t);
        fail_msg("loaded, expected rule %s", rule);
    }
    assert_null(t);
    const topology_error *e = find_rule(rule);
    if (pointer != NULL)
        assert_string_equal(e->pointer, pointer);
    assert_contains(e->message, want1);
    assert_contains(e->message, want2);
    assert_true(e->hint[0] != '\0');
    return e;
}

/* --- The default lab. */

static void lab_loads_with_its_shape(void **state)
{
    (void)state;
    topology *t = NULL;
    char err[4096] = "";
    int rc = topology_load(lab_path, &t, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(topology_name(t), "lab");
    assert_int_equal(topology_port_base(t), TOPOLOGY_PORT_AUTO);
    assert_int_equal(topology_region_count(t), 3);
    assert_int_equal(topology_cell_count(t), 2);
    assert_int_equal(topology_node_count(t), 7);
    assert_int_equal(topology_etcd_member_count(t), 3);
    assert_int_equal(topology_wan_link_count(t), 3);

    const topology_region *us_east = topology_region_find(t, "us-east");
    assert_non_null(us_east);
    assert_string_equal(us_east->jurisdiction, "US");
    assert_int_equal(us_east->role, TOPOLOGY_REGION_PRIMARY);
    assert_int_equal(us_east->zone_count, 3);
    assert_string_equal(us_east->zones[2], "az3");
    assert_int_equal(topology_region_find(t, "witness")->role, TOPOLOGY_REGION_WITNESS);
    assert_string_equal(topology_region_find(t, "eu-west")->jurisdiction, "EU");
    assert_null(topology_region_find(t, "ap-south"));

    /* etcd: one member per site. */
    const char *sites[3];
    for (size_t i = 0; i < 3; i++)
        sites[i] = topology_etcd_member_at(t, i)->region;
    assert_string_equal(sites[0], "us-east");
    assert_string_equal(sites[1], "eu-west");
    assert_string_equal(sites[2], "witness");

    const topology_cell *us = topology_cell_find(t, "us");
    assert_non_null(us);
    assert_string_equal(us->jurisdiction, "US");
    assert_string_equal(us->home_region, "us-east");
    assert_int_equal(us->allowed_region_count, 2);
    assert_true(topology_cell_allows_region(us, "eu-west"));
    assert_int_equal(us->node_count, 4);
    assert_int_equal(us->failover.mode, TOPOLOGY_FAILOVER_AUTOMATIC);
    assert_int_equal(us->failover.region_failover_after_s, 10);
    assert_int_equal(us->failover.max_loss_s, 1);
    size_t candidates = 0;
    for (size_t i = 0; i < us->node_count; i++) {
        if (us->nodes[i].role == TOPOLOGY_NODE_PRIMARY_CANDIDATE) {
            candidates++;
            assert_string_equal(us->nodes[i].region, "us-east");
        }
    }
    assert_int_equal(candidates, 3);

    const topology_cell *cell = NULL;
    const topology_node *dr = topology_node_find(t, "us-dr1", &cell);
    assert_non_null(dr);
    assert_ptr_equal(cell, us);
    assert_int_equal(dr->role, TOPOLOGY_NODE_DR_STANDBY);
    assert_string_equal(dr->region, "eu-west");
    assert_int_equal(dr->pg_port, TOPOLOGY_PORT_AUTO);

    const topology_cell *eu = topology_cell_find(t, "eu");
    assert_non_null(eu);
    assert_string_equal(eu->jurisdiction, "EU");
    assert_int_equal(eu->allowed_region_count, 1);
    assert_string_equal(eu->allowed_regions[0], "eu-west");
    assert_int_equal(eu->node_count, 3);
    assert_int_equal(eu->failover.mode, TOPOLOGY_FAILOVER_MANUAL);
    for (size_t i = 0; i < eu->node_count; i++)
        assert_string_equal(eu->nodes[i].region, "eu-west");
    for (size_t i = 0; i < eu->backup_count; i++)
        assert_string_equal(eu->backups[i].region, "eu-west");
    for (size_t i = 0; i < eu->cache_count; i++)
        assert_string_equal(eu->caches[i].region, "eu-west");
    assert_null(topology_cell_find(t, "apac"));

    uint32_t delay_ms = 0, jitter_ms = 99;
    assert_true(topology_wan_delay(t, "eu-west", "us-east", &delay_ms, &jitter_ms));
    assert_int_equal(delay_ms, 40);
    assert_int_equal(jitter_ms, 0);

    /* What the file declares breaks no residency rule. */
    topology_violation v[4];
    size_t n = 99;
    assert_int_equal(topology_residency_violations(t, NULL, 0, v, 4, &n), 0);
    assert_int_equal(n, 0);
    topology_free(t);
}

/* The normalized JSON is itself a valid topology that loads to the same. */
static void normalized_json_round_trips(void **state)
{
    (void)state;
    topology *t = NULL;
    assert_int_equal(topology_load(lab_path, &t, NULL, 0), 0);
    json_t *a = topology_to_json(t);
    assert_non_null(a);
    topology_free(t);
    json_t *copy = json_deep_copy(a);
    assert_int_equal(load_doc(copy, &t), 0);
    json_t *b = topology_to_json(t);
    assert_true(json_equal(a, b));
    /* Defaults filled in: ports "auto" on every node. */
    assert_string_equal(json_string_value(at(a, "/cells/0/nodes/0/keeper_port")), "auto");
    json_decref(a);
    json_decref(b);
    topology_free(t);
}

/* --- Residency (DESIGN.md invariant 4). */

static void eu_node_in_us_is_refused_with_the_full_message(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/cells/1/nodes",
           json_pack("{s:s, s:s, s:s, s:s}", "name", "eu-dr1", "region", "us-east", "zone",
                     "az1", "role", "dr-standby"));
    const topology_error *e = expect(doc, "residency.allowed-regions", "/cells/1/nodes/3/region",
                                     "cell 'eu' node 'eu-dr1'", "EU data must stay in the EU");
    char line[2048], want[2048];
    topology_error_format(path, e, line, sizeof line);
    snprintf(want, sizeof want,
             "%s: /cells/1/nodes/3/region: cell 'eu' node 'eu-dr1' is in region 'us-east', "
             "outside the cell's allowed regions [eu-west]: EU data must stay in the EU "
             "(DESIGN.md invariant 4) [residency.allowed-regions]; hint: move the node to an "
             "EU region among [eu-west] or remove it",
             path);
    assert_string_equal(line, want);
    /* topology_load writes the same line into its buffer. */
    topology *t = NULL;
    char err[4096];
    assert_true(topology_load(path, &t, err, sizeof err) < 0);
    assert_null(t);
    assert_string_equal(err, want);
}

static void eu_cell_may_not_allow_a_us_region(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/cells/1/allowed_regions", json_string("us-east"));
    expect(doc, "residency.jurisdiction", "/cells/1/allowed_regions/1", "cell 'eu'",
           "allows region 'us-east' of jurisdiction US");
}

static void eu_cell_may_not_list_cross_border(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1", "cross_border_jurisdictions", json_pack("[s]", "US"));
    expect(doc, "residency.restricted", "/cells/1/cross_border_jurisdictions", "cell 'eu'",
           "must stay in the EU");
}

static void us_cell_needs_explicit_cross_border_permission(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    assert_int_equal(json_object_del(at(doc, "/cells/0"), "cross_border_jurisdictions"), 0);
    expect(doc, "residency.jurisdiction", "/cells/0/allowed_regions/1", "region 'eu-west'",
           "cross_border_jurisdictions");
    /* The DR standby in eu-west is named too. */
    const topology_error *e = NULL;
    for (size_t i = 0; i < errs.count; i++)
        if (strcmp(errs.items[i].pointer, "/cells/0/nodes/3/region") == 0)
            e = &errs.items[i];
    assert_non_null(e);
    assert_contains(e->message, "node 'us-dr1'");
}

static void eu_backup_in_us_is_refused(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/cells/1/backups", json_pack("{s:s, s:s}", "name", "eu-repo-us", "region",
                                              "us-east"));
    expect(doc, "residency.allowed-regions", "/cells/1/backups/1/region",
           "backup repository 'eu-repo-us'", "EU data must stay in the EU");
}

static void eu_cache_and_meridiand_in_us_are_refused(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1/caches/0", "region", json_string("us-east"));
    expect(doc, "residency.allowed-regions", "/cells/1/caches/0/region",
           "cache 'eu-cache-west'", "us-east");

    doc = lab_json();
    append(doc, "/cells/1/meridiand", json_pack("{s:s, s:i}", "region", "us-east",
                                                "instances", 1));
    expect(doc, "residency.allowed-regions", "/cells/1/meridiand/1/region",
           "meridiand in 'us-east'", NULL);
}

static void witness_holds_no_cell_data(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/cells/0/allowed_regions", json_string("witness"));
    expect(doc, "residency.witness", "/cells/0/allowed_regions/2", "witness region", NULL);
}

static void residency_of_observed_placements(void **state)
{
    (void)state;
    topology *t = NULL;
    assert_int_equal(topology_load(lab_path, &t, NULL, 0), 0);
    const topology_placement seen[] = {
        {.cell = "us", .object = "data directory /lab/us-dr1", .region = "eu-west"},
        {.cell = "eu", .object = "data directory /lab/x", .region = "us-east"},
        {.cell = "eu", .object = "replication connection to us-n1", .region = "eu-west"},
        {.cell = "us", .object = "redis dump", .region = "witness"},
        {.cell = "apac", .object = "wal archive", .region = "eu-west"},
        {.cell = "eu", .object = "log file", .region = "mars"},
    };
    topology_violation v[8];
    size_t n = 0;
    assert_int_equal(topology_residency_violations(t, seen, 6, v, 8, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].cell, "eu");
    assert_string_equal(v[0].object, "data directory /lab/x");
    assert_string_equal(v[0].region, "us-east");
    assert_string_equal(v[0].rule, "residency.allowed-regions");
    assert_contains(v[0].detail, "EU data must stay in the EU");
    assert_string_equal(v[1].rule, "residency.witness");
    assert_string_equal(v[2].rule, "residency.unknown-cell");
    assert_string_equal(v[2].cell, "apac");
    assert_string_equal(v[3].rule, "residency.unknown-region");

    /* Fewer slots than violations: the count is still the total. */
    n = 0;
    assert_int_equal(topology_residency_violations(t, seen, 6, v, 1, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].region, "us-east");

    /* The jurisdiction rule on its own. */
    const topology_cell *us = topology_cell_find(t, "us");
    const topology_cell *eu = topology_cell_find(t, "eu");
    assert_true(topology_jurisdiction_allowed(us, "EU"));
    assert_false(topology_jurisdiction_allowed(us, "CN"));
    assert_true(topology_jurisdiction_allowed(eu, "EU"));
    assert_false(topology_jurisdiction_allowed(eu, "US"));
    assert_true(topology_jurisdiction_restricted("EU"));
    assert_false(topology_jurisdiction_restricted("US"));
    topology_free(t);
}

/* --- Cells: quorum, roles, home, policy. */

static void quorum_needs_three_candidates(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    assert_int_equal(json_array_remove(at(doc, "/cells/1/nodes"), 2), 0);
    expect(doc, "cell.quorum", "/cells/1/nodes", "cell 'eu' has 2 primary-candidate",
           "at least 3 in at least 2 zones");
}

static void quorum_needs_two_zones(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1/nodes/1", "zone", json_string("az1"));
    set(doc, "/cells/1/nodes/2", "zone", json_string("az1"));
    expect(doc, "cell.quorum", "/cells/1/nodes", "in 1 zone(s)", NULL);
}

static void primary_candidate_must_be_in_home_region(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/0/nodes/3", "role", json_string("primary-candidate"));
    expect(doc, "cell.primary-candidate", "/cells/0/nodes/3/role", "node 'us-dr1'",
           "not in the cell's home region 'us-east'");
}

static void dr_standby_rules(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/cells/0/nodes",
           json_pack("{s:s, s:s, s:s, s:s}", "name", "us-dr2", "region", "eu-west", "zone",
                     "az2", "role", "dr-standby"));
    expect(doc, "cell.dr-standby", "/cells/0/nodes/4", "node 'us-dr2'",
           "at most one DR standby per region");

    doc = lab_json();
    set(doc, "/cells/1/nodes/2", "role", json_string("dr-standby"));
    expect(doc, "cell.dr-standby", "/cells/1/nodes/2/role", "node 'eu-n3'", "home region");
}

static void home_region_rules(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    /* A US cell homed in the EU. */
    set(doc, "/cells/0", "home_region", json_string("eu-west"));
    expect(doc, "cell.home-region", "/cells/0/home_region", "cell 'us' (jurisdiction US)",
           "own jurisdiction");

    doc = lab_json();
    set(doc, "/cells/1", "allowed_regions", json_pack("[s]", "eu-west"));
    append(doc, "/regions", json_pack("{s:s, s:s, s:s, s:[s]}", "name", "eu-central",
                                      "jurisdiction", "EU", "role", "secondary", "zones",
                                      "az1"));
    set(doc, "/cells/1", "home_region", json_string("eu-central"));
    expect(doc, "cell.home-region", "/cells/1/home_region", "not among its allowed regions",
           NULL);
}

static void meridiand_needed_in_home_region(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1/meridiand/0", "region", json_string("eu-west"));
    set(doc, "/cells/0", "meridiand",
        json_pack("[{s:s, s:i}]", "region", "eu-west", "instances", 1));
    expect(doc, "cell.meridiand", "/cells/0/meridiand", "cell 'us'", "home region 'us-east'");
}

static void automatic_policy_needs_a_dr_standby(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1", "failover",
        json_pack("{s:s, s:i, s:i}", "mode", "automatic", "region_failover_after_s", 10,
                  "max_loss_s", 1));
    expect(doc, "failover.policy", "/cells/1/failover/mode", "cell 'eu'", "no DR standby");
}

static void policy_values_in_range(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/0/failover", "region_failover_after_s", json_integer(0));
    expect(doc, "schema.range", "/cells/0/failover/region_failover_after_s", "is 0",
           "outside 1..");

    doc = lab_json();
    set(doc, "/cells/0/failover", "max_loss_s", json_integer(-1));
    expect(doc, "schema.range", "/cells/0/failover/max_loss_s", "is -1", NULL);

    doc = lab_json();
    assert_int_equal(json_object_del(at(doc, "/cells/0/failover"), "max_loss_s"), 0);
    expect(doc, "schema.required", "/cells/0/failover", "'max_loss_s'", NULL);

    doc = lab_json();
    set(doc, "/cells/1/failover", "mode", json_string("sometimes"));
    expect(doc, "schema.enum", "/cells/1/failover/mode", "\"sometimes\"", "automatic, manual");
}

/* --- etcd. */

static void etcd_needs_an_odd_count_of_at_least_three(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    append(doc, "/etcd/members", json_pack("{s:s, s:s, s:s}", "name", "etcd-eu2", "region",
                                           "eu-west", "zone", "az2"));
    expect(doc, "etcd.members", "/etcd/members", "4 members", "odd number");

    doc = lab_json();
    assert_int_equal(json_array_remove(at(doc, "/etcd/members"), 2), 0);
    expect(doc, "etcd.members", "/etcd/members", "2 members", NULL);
}

static void etcd_needs_three_sites_and_no_majority_in_one(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/etcd/members/2", "region", json_string("eu-west"));
    expect(doc, "etcd.sites", "/etcd/members", "in 2 region(s)", "at least 3");

    doc = lab_json();
    append(doc, "/etcd/members", json_pack("{s:s, s:s, s:s}", "name", "etcd-us2", "region",
                                           "us-east", "zone", "az2"));
    append(doc, "/etcd/members", json_pack("{s:s, s:s, s:s}", "name", "etcd-us3", "region",
                                           "us-east", "zone", "az3"));
    expect(doc, "etcd.sites", "/etcd/members", "region 'us-east' holds 3 of etcd's 5",
           "majority");
}

/* --- Names and references. */

static void names_unique_and_well_formed(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/1/nodes/0", "name", json_string("us-n1"));
    expect(doc, "name.unique", "/cells/1/nodes/0", "cell 'eu' node 'us-n1'",
           "cell 'us' node 'us-n1' (/cells/0/nodes/0)");

    doc = lab_json();
    set(doc, "/cells/1/backups/0", "name", json_string("etcd-eu"));
    expect(doc, "name.unique", "/cells/1/backups/0", "etcd member 'etcd-eu'", NULL);

    doc = lab_json();
    set(doc, "/cells/1", "name", json_string("us"));
    expect(doc, "name.unique", "/cells/1", "cell 'us' is defined twice", NULL);

    doc = lab_json();
    set(doc, "/regions/2", "name", json_string("us-east"));
    expect(doc, "name.unique", "/regions/2", "region 'us-east' is defined twice", NULL);

    doc = lab_json();
    set(doc, "/regions/0", "zones", json_pack("[s,s]", "az1", "az1"));
    expect(doc, "name.unique", "/regions/0/zones/1", "zone 'az1' twice", NULL);

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "name", json_string("US N1!"));
    expect(doc, "name.format", "/cells/0/nodes/0/name", "\"US N1!\"", "a-z 0-9");

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "name", json_string("a23456789012345678901234567890123"));
    expect(doc, "name.format", "/cells/0/nodes/0/name", NULL, NULL);

    doc = lab_json();
    set(doc, "/regions/0", "jurisdiction", json_string("us"));
    expect(doc, "jurisdiction.format", "/regions/0/jurisdiction", "region 'us-east'", NULL);
}

static void references_resolve(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/0/nodes/1", "zone", json_string("az9"));
    expect(doc, "ref.zone", "/cells/0/nodes/1/zone", "node 'us-n2' is in zone 'az9'",
           "region 'us-east'");

    doc = lab_json();
    set(doc, "/cells/0/caches/0", "region", json_string("ap-south"));
    expect(doc, "ref.region", "/cells/0/caches/0/region", "cache 'us-cache-east'",
           "'ap-south'");

    doc = lab_json();
    set(doc, "/etcd/members/1", "region", json_string("eu-north"));
    expect(doc, "ref.region", "/etcd/members/1/region", "etcd member 'etcd-eu'", NULL);

    doc = lab_json();
    set(doc, "/cells/1", "allowed_regions", json_pack("[s,s]", "eu-west", "eu-north"));
    expect(doc, "ref.region", "/cells/1/allowed_regions/1", "'eu-north'", NULL);
}

/* --- WAN links. */

static void wan_links_checked(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/wan/0", "jitter_ms", json_integer(50));
    expect(doc, "wan.link", "/wan/0/jitter_ms", "jitter_ms 50 above its one_way_delay_ms 40",
           NULL);

    doc = lab_json();
    append(doc, "/wan", json_pack("{s:[s,s]}", "between", "eu-west", "us-east"));
    expect(doc, "wan.link", "/wan/3/between", "listed twice", NULL);

    doc = lab_json();
    set(doc, "/wan/0", "between", json_pack("[s,s]", "us-east", "us-east"));
    expect(doc, "wan.link", "/wan/0/between", "to itself", NULL);

    /* Defaults: a link without numbers gets 40 ms. */
    doc = lab_json();
    json_array_clear(at(doc, "/wan"));
    append(doc, "/wan", json_pack("{s:[s,s]}", "between", "us-east", "eu-west"));
    topology *t = NULL;
    assert_int_equal(load_doc(doc, &t), 0);
    uint32_t d = 0, j = 9;
    assert_true(topology_wan_delay(t, "us-east", "eu-west", &d, &j));
    assert_int_equal(d, 40);
    assert_int_equal(j, 0);
    assert_false(topology_wan_delay(t, "witness", "eu-west", &d, &j));
    assert_int_equal(d, 40);
    topology_free(t);
}

/* --- Ports. */

static void ports_in_range_or_auto(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/etcd/members/0", "client_port", json_integer(70000));
    expect(doc, "port.range", "/etcd/members/0/client_port", "etcd member 'etcd-us'",
           "70000, outside 1..65535");

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "pg_port", json_integer(0));
    expect(doc, "port.range", "/cells/0/nodes/0/pg_port", "is 0", NULL);

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "pg_port", json_string("automatic"));
    expect(doc, "schema.type", "/cells/0/nodes/0/pg_port", "integer or \"auto\"", NULL);

    doc = lab_json();
    set(doc, "/cells/0/meridiand/0", "port", json_integer(65535));
    expect(doc, "port.range", "/cells/0/meridiand/0/port", "run past 65535", NULL);

    doc = lab_json();
    set(doc, "/ports", "base", json_integer(65530));
    expect(doc, "port.range", "/ports/base", "no room", NULL);

    /* Explicit ports load and come back. */
    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "pg_port", json_integer(15432));
    set(doc, "/ports", "base", json_integer(20000));
    topology *t = NULL;
    assert_int_equal(load_doc(doc, &t), 0);
    assert_int_equal(topology_node_find(t, "us-n1", NULL)->pg_port, 15432);
    assert_int_equal(topology_port_base(t), 20000);
    topology_free(t);
}

static void ports_unique(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/0/nodes/0", "pg_port", json_integer(15432));
    set(doc, "/cells/1/nodes/0", "keeper_port", json_integer(15432));
    expect(doc, "port.unique", "/cells/1/nodes/0/keeper_port",
           "cell 'eu' node 'eu-n1' keeper_port: port 15432",
           "cell 'us' node 'us-n1' pg_port (/cells/0/nodes/0/pg_port)");

    /* A meridiand range covers a later explicit port. */
    doc = lab_json();
    set(doc, "/cells/0/meridiand/0", "port", json_integer(18080));
    set(doc, "/cells/1/caches/0", "port", json_integer(18081));
    expect(doc, "port.unique", "/cells/1/caches/0/port", "port 18081",
           "cell 'us' meridiand in 'us-east' port");

    /* An explicit port inside the range ports.base reserves for "auto". */
    doc = lab_json();
    set(doc, "/ports", "base", json_integer(20000));
    set(doc, "/cells/0/nodes/0", "pg_port", json_integer(20003));
    expect(doc, "port.unique", "/ports/base", "uses port 20003", "\"auto\" ports");
}

/* scale_to: how many meridiand a region runs while it serves the cell. */
static void meridiand_scale_to(void **state)
{
    (void)state;
    /* The lab: cell us scales eu-west from 1 to 2; everything else
     * defaults to its instances. */
    topology *t = NULL;
    char err[4096] = "";
    if (topology_load(lab_path, &t, err, sizeof err) != 0)
        fail_msg("%s", err);
    const topology_cell *us = topology_cell_find(t, "us");
    assert_non_null(us);
    assert_int_equal(us->meridiand_count, 2);
    assert_string_equal(us->meridiand[0].region, "us-east");
    assert_int_equal(us->meridiand[0].instances, 2);
    assert_int_equal(us->meridiand[0].scale_to, 2);
    assert_string_equal(us->meridiand[1].region, "eu-west");
    assert_int_equal(us->meridiand[1].instances, 1);
    assert_int_equal(us->meridiand[1].scale_to, 2);
    assert_int_equal(topology_cell_find(t, "eu")->meridiand[0].scale_to, 2);
    topology_free(t);

    /* Equal to instances is fine; the normalized form carries it. */
    json_t *doc = lab_json();
    set(doc, "/cells/1/meridiand/0", "scale_to", json_integer(2));
    assert_int_equal(load_doc(doc, &t), 0);
    json_t *norm = topology_to_json(t);
    assert_non_null(norm);
    assert_int_equal(json_integer_value(at(norm, "/cells/0/meridiand/1/scale_to")), 2);
    assert_int_equal(json_integer_value(at(norm, "/cells/1/meridiand/0/scale_to")), 2);
    json_decref(norm);
    topology_free(t);

    /* Below instances: scaling up never stops instances. */
    doc = lab_json();
    set(doc, "/cells/0/meridiand/0", "scale_to", json_integer(1));
    expect(doc, "schema.range", "/cells/0/meridiand/0/scale_to",
           "cell 'us' meridiand in 'us-east'", "'scale_to' is 1, below 'instances' 2");

    /* Out of range, wrong type. */
    doc = lab_json();
    set(doc, "/cells/0/meridiand/1", "scale_to", json_integer(17));
    expect(doc, "schema.range", "/cells/0/meridiand/1/scale_to", "17, outside 1..16", NULL);
    doc = lab_json();
    set(doc, "/cells/0/meridiand/1", "scale_to", json_integer(0));
    expect(doc, "schema.range", "/cells/0/meridiand/1/scale_to", "outside", NULL);
    doc = lab_json();
    set(doc, "/cells/0/meridiand/1", "scale_to", json_string("2"));
    expect(doc, "schema.type", "/cells/0/meridiand/1/scale_to", "must be an integer", NULL);

    /* With a numeric port the range covers scale_to instances. */
    doc = lab_json();
    set(doc, "/cells/0/meridiand/1", "port", json_integer(65535));
    expect(doc, "port.range", "/cells/0/meridiand/1/port", "65535..65536", NULL);
    doc = lab_json();
    set(doc, "/cells/0/meridiand/1", "port", json_integer(18080));
    set(doc, "/cells/1/caches/0", "port", json_integer(18081)); /* the scaled-up one's */
    expect(doc, "port.unique", "/cells/1/caches/0/port", "port 18081",
           "cell 'us' meridiand in 'eu-west' port");
}

/* --- Malformed files and shapes. */

static void malformed_json(void **state)
{
    (void)state;
    const char *text = "{\"version\": 1,\n \"regions\": [\n";
    write_text(text, strlen(text));
    topology *t = NULL;
    assert_true(topology_load_errors(path, &t, &errs) < 0);
    assert_null(t);
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0].rule, "json.syntax");
    assert_contains(errs.items[0].message, "line 3");

    text = "{\"version\": 1, \"name\": \"a\", \"name\": \"b\"}";
    write_text(text, strlen(text));
    assert_true(topology_load_errors(path, &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "json.duplicate-key");
    assert_contains(errs.items[0].message, "duplicate");

    /* Duplicate keys deep inside count too. */
    text = "{\"version\": 1, \"regions\": [{\"name\": \"a\", \"zones\": [], \"zones\": []}]}";
    write_text(text, strlen(text));
    assert_true(topology_load_errors(path, &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "json.duplicate-key");

    text = "[1, 2]";
    write_text(text, strlen(text));
    assert_true(topology_load_errors(path, &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "schema.type");
    assert_contains(errs.items[0].message, "the topology must be an object, not an array");

    /* In memory too. */
    assert_true(topology_parse("{", 1, "<string>", &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "json.syntax");
}

static void unknown_fields_refused(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "", "regionz", json_array());
    expect(doc, "schema.unknown-field", "/regionz", "unknown field 'regionz'", NULL);

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "zonee", json_string("az1"));
    const topology_error *e = expect(doc, "schema.unknown-field", "/cells/0/nodes/0/zonee",
                                     "cell 'us' node 'us-n1'", "'zonee'");
    assert_contains(e->hint, "zone");

    doc = lab_json();
    set(doc, "/cells/1/failover", "after_s", json_integer(5));
    expect(doc, "schema.unknown-field", "/cells/1/failover/after_s", "failover policy", NULL);
}

static void wrong_types_and_missing_fields(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/regions/0", "zones", json_string("az1"));
    expect(doc, "schema.type", "/regions/0/zones", "region 'us-east'", "must be an array");

    doc = lab_json();
    set(doc, "/cells/0/meridiand/0", "instances", json_string("2"));
    expect(doc, "schema.type", "/cells/0/meridiand/0/instances", "must be an integer", NULL);

    doc = lab_json();
    set(doc, "/wan/0", "one_way_delay_ms", json_real(40.5));
    expect(doc, "schema.type", "/wan/0/one_way_delay_ms", "a number with a fraction", NULL);

    doc = lab_json();
    set(doc, "/cells/0/nodes/0", "role", json_true());
    expect(doc, "schema.type", "/cells/0/nodes/0/role", "not a boolean", NULL);

    doc = lab_json();
    assert_int_equal(json_array_set_new(at(doc, "/cells"), 1, json_string("eu")), 0);
    expect(doc, "schema.type", "/cells/1", "cell #2 must be an object", NULL);

    doc = lab_json();
    assert_int_equal(json_object_del(doc, "cells"), 0);
    expect(doc, "schema.required", "", "'cells'", NULL);

    doc = lab_json();
    set(doc, "", "version", json_integer(2));
    expect(doc, "schema.version", "/version", "version 1", NULL);
}

static void sizes_bounded(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    json_t *nodes = at(doc, "/cells/1/nodes");
    for (int i = 0; i < LIMIT_TOPOLOGY_CELL_NODES_MAX; i++) {
        char name[16];
        snprintf(name, sizeof name, "eu-x%d", i);
        assert_int_equal(json_array_append_new(nodes, json_pack("{s:s, s:s, s:s, s:s}", "name",
                                                                name, "region", "eu-west",
                                                                "zone", "az1", "role",
                                                                "primary-candidate")),
                         0);
    }
    expect(doc, "schema.size", "/cells/1/nodes", "11 elements", "1..8");

    /* A file past LIMIT_TOPOLOGY_FILE_BYTES_MAX is refused unread. */
    size_t big = LIMIT_TOPOLOGY_FILE_BYTES_MAX + 10;
    char *text = malloc(big);
    assert_non_null(text);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    write_text(text, big);
    free(text);
    topology *t = NULL;
    assert_true(topology_load_errors(path, &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "file.too-large");

    assert_true(topology_load_errors("/nonexistent/topology.json", &t, &errs) < 0);
    assert_string_equal(errs.items[0].rule, "file.read");
    assert_contains(errs.items[0].message, "No such file");
}

/* Every error is reported in one pass, up to the cap, then counted. */
static void errors_collected_and_capped(void **state)
{
    (void)state;
    json_t *doc = lab_json();
    set(doc, "/cells/0/nodes/0", "zonee", json_string("az1"));
    set(doc, "/cells/1/nodes/0", "pg_port", json_integer(-3));
    topology *t = NULL;
    assert_true(load_doc(doc, &t) < 0);
    assert_int_equal(errs.count, 2);
    assert_string_equal(errs.items[0].rule, "schema.unknown-field");
    assert_string_equal(errs.items[1].rule, "port.range");

    /* 40 unknown fields: LIMIT_TOPOLOGY_ERRORS_MAX kept, the rest counted. */
    doc = lab_json();
    json_t *arr = at(doc, "/cells/0/nodes");
    for (size_t i = 0; i < 4; i++) {
        json_t *n = json_array_get(arr, i);
        for (int k = 0; k < 10; k++) {
            char key[16];
            snprintf(key, sizeof key, "junk%d", k);
            json_object_set_new(n, key, json_integer(k));
        }
    }
    assert_true(load_doc(doc, &t) < 0);
    assert_int_equal(errs.count, LIMIT_TOPOLOGY_ERRORS_MAX);
    assert_int_equal(errs.more, 40 - LIMIT_TOPOLOGY_ERRORS_MAX);
    char err[16384];
    assert_true(topology_load(path, &t, err, sizeof err) < 0);
    assert_contains(err, "... and 8 more errors");
    /* A small buffer is truncated, never overrun. */
    char small[64];
    assert_true(topology_load(path, &t, small, sizeof small) < 0);
    assert_int_equal(strlen(small), sizeof small - 1);
}

/* --- The examples shipped in topologies/invalid/. */

static void shipped_invalid_examples_are_refused(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        const char *rule;
    } cases[] = {
        {"eu-node-in-us.json", "residency.allowed-regions"},
        {"eu-allows-us.json", "residency.restricted"},
        {"eu-allows-us.json", "residency.jurisdiction"},
        {"one-zone-no-dr.json", "cell.quorum"},
        {"one-zone-no-dr.json", "failover.policy"},
        {"etcd-two-members.json", "etcd.members"},
        {"ports.json", "port.unique"},
        {"shape.json", "schema.type"},
        {"shape.json", "schema.unknown-field"},
        {"duplicate-key.json", "json.duplicate-key"},
        {"malformed.json", "json.syntax"},
    };
    size_t root_len = strlen(lab_path) - strlen("lab.json");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char file[1200];
        snprintf(file, sizeof file, "%.*sinvalid/%s", (int)root_len, lab_path, cases[i].file);
        topology *t = NULL;
        if (topology_load_errors(file, &t, &errs) == 0) {
            topology_free(t);
            fail_msg("%s loaded", file);
        }
        print_message("%s: %s\n", cases[i].file, cases[i].rule);
        find_rule(cases[i].rule);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lab_loads_with_its_shape),
        cmocka_unit_test(normalized_json_round_trips),
        cmocka_unit_test(eu_node_in_us_is_refused_with_the_full_message),
        cmocka_unit_test(eu_cell_may_not_allow_a_us_region),
        cmocka_unit_test(eu_cell_may_not_list_cross_border),
        cmocka_unit_test(us_cell_needs_explicit_cross_border_permission),
        cmocka_unit_test(eu_backup_in_us_is_refused),
        cmocka_unit_test(eu_cache_and_meridiand_in_us_are_refused),
        cmocka_unit_test(witness_holds_no_cell_data),
        cmocka_unit_test(residency_of_observed_placements),
        cmocka_unit_test(quorum_needs_three_candidates),
        cmocka_unit_test(quorum_needs_two_zones),
        cmocka_unit_test(primary_candidate_must_be_in_home_region),
        cmocka_unit_test(dr_standby_rules),
        cmocka_unit_test(home_region_rules),
        cmocka_unit_test(meridiand_needed_in_home_region),
        cmocka_unit_test(automatic_policy_needs_a_dr_standby),
        cmocka_unit_test(policy_values_in_range),
        cmocka_unit_test(etcd_needs_an_odd_count_of_at_least_three),
        cmocka_unit_test(etcd_needs_three_sites_and_no_majority_in_one),
        cmocka_unit_test(names_unique_and_well_formed),
        cmocka_unit_test(references_resolve),
        cmocka_unit_test(wan_links_checked),
        cmocka_unit_test(ports_in_range_or_auto),
        cmocka_unit_test(ports_unique),
        cmocka_unit_test(meridiand_scale_to),
        cmocka_unit_test(malformed_json),
        cmocka_unit_test(unknown_fields_refused),
        cmocka_unit_test(wrong_types_and_missing_fields),
        cmocka_unit_test(sizes_bounded),
        cmocka_unit_test(errors_collected_and_capped),
        cmocka_unit_test(shipped_invalid_examples_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
