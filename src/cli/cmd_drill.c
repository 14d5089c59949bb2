/*
 * cmd_drill.c — `meridianctl drill node-loss|db-crash|isolate-primary
 * [--runs N] [--cell-dir DIR] [--build DIR] [--clients C] [--readers R]
 * [--accounts K] [--rate R] [--report FILE.json] [--keep] [--json]` and
 * `meridianctl drill region-loss|az-loss|db-failure|partition|
 * etcd-majority-loss [--lab-dir DIR] ...` (the two-region lab, docs/
 * DRILLS.md "Lab drills"): parse the arguments, run the drill
 * (src/drill/drill.c, lab.c), print the summary and, with --json, the
 * report as the last line of stdout.
 *
 * Exit status: 0 every run passed, 1 a run failed (or the drill could
 * not start), 2 bad arguments or a scenario that cannot run here.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/commands.h"
#include "drill/drill.h"
#include "drill/html.h"
#include "drill/report.h"

/* Parse a whole number in [min, max] from an option. */
static int parse_int(const cli_command *cmd, const char *name, const char *text, int min,
                     int max, int *out)
{
    if (text == NULL)
        return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
        return cli_usage_error(cmd, "--%s wants a whole number from %d to %d, not \"%s\"", name,
                               min, max, text);
    *out = (int)v;
    return 0;
}

/* The directory of the running binary (the default --build). */
static int self_dir(char *out, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", out, size - 1);
    if (n <= 0 || (size_t)n >= size - 1)
        return -1;
    out[n] = '\0';
    char *slash = strrchr(out, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    return 0;
}

static int write_json(const char *path, json_t *report)
{
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int rc = json_dumpf(report, f, JSON_INDENT(2) | JSON_REAL_PRECISION(7));
    fputc('\n', f);
    if (fclose(f) != 0)
        rc = -1;
    return rc;
}

/* --report FILE.json writes the JSON report; --report FILE.html writes
 * the HTML page there and the JSON beside it as FILE.json. */
static int write_report(const char *path, json_t *report)
{
    size_t len = strlen(path);
    if (len < 5 || strcmp(path + len - 5, ".html") != 0)
        return write_json(path, report);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return -1;
    int rc = drill_report_html(f, report);
    if (fclose(f) != 0)
        rc = -1;
    char json_path[4096];
    if (len - 5 + sizeof ".json" > sizeof json_path)
        return -1;
    memcpy(json_path, path, len - 5);
    memcpy(json_path + len - 5, ".json", sizeof ".json");
    if (write_json(json_path, report) != 0)
        rc = -1;
    return rc;
}

int cmd_drill(cli_ctx *ctx, const cli_command *cmd, int argc, char **argv)
{
    const char *runs_s = NULL, *cell_dir = NULL, *build = NULL, *clients_s = NULL;
    const char *readers_s = NULL, *accounts_s = NULL, *report_path = NULL;
    const char *lab_dir = NULL, *rate_s = NULL;
    bool keep = false, lab = false;
    const cli_opt opts[] = {
        {.name = "runs", .value = &runs_s},
        {.name = "cell-dir", .value = &cell_dir},
        {.name = "build", .value = &build},
        {.name = "clients", .value = &clients_s},
        {.name = "readers", .value = &readers_s},
        {.name = "accounts", .value = &accounts_s},
        {.name = "report", .value = &report_path},
        {.name = "keep", .flag = &keep},
        {.name = "lab", .flag = &lab},
        {.name = "lab-dir", .value = &lab_dir},
        {.name = "rate", .value = &rate_s},
        {0},
    };
    const char *pos[CLI_POSITIONAL_MAX];
    int npos;
    int r = cli_parse(ctx, cmd, argc, argv, opts, 1, 1, pos, &npos);
    if (r != 0)
        return cli_parse_exit(r);

    drill_options o;
    drill_options_init(&o);
    if (drill_scenario_parse(pos[0], &o.scenario) != 0)
        return cli_usage_error(cmd,
                               "unknown scenario \"%s\": use node-loss, db-crash, "
                               "isolate-primary (one cell) or region-loss, az-loss, db-failure, "
                               "partition, etcd-majority-loss (the two-region lab)",
                               pos[0]);
    /* The lab scenarios run on the lab: --lab is implied (and accepted). */
    bool needs_lab = drill_scenario_needs_lab(o.scenario);
    /* node-loss and db-crash run on a single cell, or with --lab on the
     * lab's cell us through the global entry; isolate-primary needs
     * cell.sh's netem proxy on the etcd links. */
    if (o.scenario == DRILL_ISOLATE_PRIMARY && (lab || lab_dir != NULL))
        return cli_usage_error(cmd, "%s runs on a single cell, not on the lab: drop --lab%s "
                                    "(on the lab, `drill partition` cuts a region off)",
                               pos[0], lab_dir != NULL ? " and --lab-dir" : "");
    lab = needs_lab || lab || lab_dir != NULL;
    if (lab && cell_dir != NULL)
        return cli_usage_error(cmd, "%s runs on the two-region lab: --cell-dir is for the "
                                    "single-cell scenarios (use --lab-dir DIR for a running lab)",
                               pos[0]);
    if (lab_dir != NULL && runs_s != NULL && strcmp(runs_s, "1") != 0)
        return cli_usage_error(cmd, "a lab given by --lab-dir serves one run (the fault "
                                    "consumes it): drop --runs, or drop --lab-dir and each run "
                                    "brings up a lab of its own");
    if (parse_int(cmd, "runs", runs_s, 1, DRILL_RUNS_MAX, &o.runs) != 0 ||
        parse_int(cmd, "clients", clients_s, 1, DRILL_CLIENTS_MAX, &o.clients) != 0 ||
        parse_int(cmd, "readers", readers_s, 0, DRILL_READERS_MAX, &o.readers) != 0 ||
        parse_int(cmd, "accounts", accounts_s, DRILL_ACCOUNTS_MIN, DRILL_ACCOUNTS_MAX,
                  &o.accounts) != 0 ||
        parse_int(cmd, "rate", rate_s, 0, DRILL_RATE_MAX, &o.rate_per_s) != 0)
        return CLI_EXIT_USAGE;
    o.cell_dir = cell_dir;
    o.keep = keep;
    o.lab = lab;
    o.lab_dir = lab_dir;
    char self[PATH_MAX];
    if (build == NULL) {
        if (self_dir(self, sizeof self) != 0)
            return cli_fail("pass --build DIR (the directory holding meridiand)",
                            "cannot find the directory of this binary");
        build = self;
    }
    if (cell_dir == NULL && lab_dir == NULL) {
        char path[PATH_MAX + 32];
        static const char *const bins[] = {"meridiand", "meridian-keeper", "meridianctl"};
        size_t nbins = sizeof bins / sizeof bins[0];
        for (size_t i = 0; i <= nbins; i++) {
            /* isolate-primary also needs the TCP proxy on the etcd links. */
            if (i == nbins && o.scenario != DRILL_ISOLATE_PRIMARY && !lab)
                break;
            snprintf(path, sizeof path, "%s/%s", build, i < nbins ? bins[i] : "meridian-netem");
            if (access(path, X_OK) != 0)
                return cli_fail("build it first (cmake --build BUILD_DIR), or pass --build DIR",
                                "%s not found: the drill starts a cell from %s", path, build);
        }
    }
    o.build_dir = build;

    json_t *report = NULL;
    int rc = drill_run(&o, &report);
    if (report == NULL)
        return cli_fail(NULL, "out of memory building the drill report");
    drill_report_print(stdout, report);
    if (report_path != NULL && write_report(report_path, report) != 0) {
        fprintf(stderr, CLI_PROG ": error: cannot write the report to %s\n", report_path);
        if (rc == DRILL_EXIT_PASS)
            rc = DRILL_EXIT_FAIL;
    }
    if (ctx->json) {
        char *line = json_dumps(report, DRILL_REPORT_JSON_FLAGS);
        if (line == NULL) {
            json_decref(report);
            return cli_fail(NULL, "out of memory printing the report");
        }
        printf("%s\n", line);
        free(line);
    }
    json_decref(report);
    return rc;
}
