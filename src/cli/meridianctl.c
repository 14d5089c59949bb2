/*
 * meridianctl.c — the operator's CLI: main() and the command table.
 *
 * The table below is the whole surface of meridianctl. A command is a
 * row {name, handler, summary, usage, help}; a group (db, customer,
 * apikey, config) is a row whose children are another table. To add a
 * command (status, switchover, drill, lab, ...), write its handler in a
 * cmd_<name>.c (parse arguments with cli_parse, call a module, print),
 * declare it in commands.h, and add a row here: help, usage errors and
 * exit codes come with it.
 *
 * Exit codes: 0 success, 1 operational error (database unreachable,
 * missing row, ...), 2 bad arguments.
 */
#include <stdio.h>

#include "cli/cli_cmd.h"
#include "cli/cmd_cell.h"
#include "cli/commands.h"

static const cli_command db_commands[] = {
    {.name = "migrate",
     .handler = cmd_db_migrate,
     .summary = "Apply the schema migrations this binary carries",
     .usage = "db migrate",
     .help = "Applies every migration the database lacks, each in its own transaction,\n"
             "under an advisory lock (concurrent runs wait for each other). Running it\n"
             "again is a no-op. Refuses a database whose applied migrations differ from\n"
             "this binary's, or that is newer than this binary.\n"},
    {.name = "status",
     .handler = cmd_db_status,
     .summary = "Show the schema version and the pending migrations",
     .usage = "db status",
     .help = NULL},
    {0},
};

static const cli_command customer_commands[] = {
    {.name = "create",
     .handler = cmd_customer_create,
     .summary = "Create a customer",
     .usage = "customer create NAME",
     .help = "NAME is 1 to 63 characters among a-z 0-9 _ -. Fails if it exists.\n"},
    {.name = "list",
     .handler = cmd_customer_list,
     .summary = "List customers with their active keys and accounts",
     .usage = "customer list",
     .help = NULL},
    {0},
};

static const cli_command apikey_commands[] = {
    {.name = "create",
     .handler = cmd_apikey_create,
     .summary = "Issue an API key (shown once)",
     .usage = "apikey create (--customer NAME | --admin) [--label TEXT] [--cell NAME]",
     .help = "Options:\n"
             "  --customer NAME  a key of customer NAME (created if missing)\n"
             "  --admin          an admin key (sees every customer)\n"
             "  --label TEXT     a note for operators (at most 200 bytes)\n"
             "  --cell NAME      the key names cell NAME (mk_NAME_...; default: the\n"
             "                   config's `cell`; --cell \"\" or no cell: mk_ + 43)\n"
             "Needs api_key_pepper from --config FILE. The key is printed once; only\n"
             "its keyed hash is stored. --json prints\n"
             "{\"key\",\"prefix\",\"scope\",\"customer\",\"cell\",\"id\",\"customer_created\"}.\n"},
    {.name = "list",
     .handler = cmd_apikey_list,
     .summary = "List API keys (prefix, scope, customer, label, dates)",
     .usage = "apikey list [--customer NAME]",
     .help = "Options:\n"
             "  --customer NAME  only the keys of customer NAME\n"},
    {.name = "revoke",
     .handler = cmd_apikey_revoke,
     .summary = "Revoke an API key",
     .usage = "apikey revoke ID",
     .help = "ID is the ID column of `meridianctl apikey list`. Revoking twice is fine.\n"},
    {0},
};

static const cli_command config_commands[] = {
    {.name = "init",
     .handler = cmd_config_init,
     .summary = "Write a new config file with a fresh api_key_pepper",
     .usage = "config init --out FILE [--dsn DSN] [--listen HOST:PORT] [--force]",
     .help = "Options:\n"
             "  --out FILE          where to write (mode 0600)\n"
             "  --dsn DSN           the dsn to write into the file\n"
             "  --listen HOST:PORT  meridiand's HTTP address (default 127.0.0.1:8080)\n"
             "  --force             replace an existing FILE (its pepper is lost)\n"},
    {0},
};

static const cli_command keeper_commands[] = {
    {.name = "fsm",
     .handler = cmd_keeper_fsm,
     .summary = "Print the keeper's decision table (text, or Graphviz with --dot)",
     .usage = "keeper fsm [--dot]",
     .help = "Each row: from state -> to state, the action taken, and why (the sentence\n"
             "the keeper logs and publishes). Rows of a state are tried in order.\n"
             "Options:\n"
             "  --dot   a Graphviz digraph: meridianctl keeper fsm --dot | dot -Tsvg > fsm.svg\n"
             "--json prints [{\"from\",\"to\",\"action\",\"why\"}].\n"},
    {0},
};

static const cli_command topology_commands[] = {
    {.name = "check",
     .handler = cmd_topology_check,
     .summary = "Validate a topology file (regions, cells, residency, etcd, ports)",
     .usage = "topology check FILE",
     .help = "Loads FILE as the lab and the drills do and applies every rule of\n"
             "docs/TOPOLOGY.md. Prints \"ok: N cells, N nodes, N etcd members, ...\", or\n"
             "every error on stderr as \"FILE: POINTER: MESSAGE [RULE]; hint: HINT\".\n"
             "--json prints {\"ok\",\"file\",\"regions\",\"cells\",\"nodes\",\"etcd_members\"}\n"
             "or {\"ok\":false,\"file\",\"error_count\",\"errors\":[{\"pointer\",\"rule\",\n"
             "\"message\",\"hint\"}]}. Exit status: 0 valid; 1 invalid or unreadable.\n"},
    {.name = "show",
     .handler = cmd_topology_show,
     .summary = "Print what a topology file lays out: regions, etcd, cells by region",
     .usage = "topology show FILE",
     .help = "Validates FILE like `topology check`, then prints regions and zones, the\n"
             "etcd members, the WAN links, and per cell its policy and, region by region,\n"
             "its nodes (by zone), backup repositories, caches and meridiand instances.\n"
             "--json prints the normalized topology (defaults filled in), itself a valid\n"
             "topology file.\n"},
    {0},
};

static const cli_command residency_commands[] = {
    {.name = "scan",
     .handler = cmd_residency_scan,
     .summary = "Prove from the running lab that no cell's data is outside its regions",
     .usage = "residency scan [--dir LABDIR] [--topology FILE]",
     .help = "Gathers where each cell's data is in the running lab and judges every\n"
             "placement with the topology's residency rules (docs/TOPOLOGY.md):\n"
             "  data directories   each node's PostgreSQL data; its cell is its lineage (the\n"
             "                     system identifier in global/pg_control, anchored on the\n"
             "                     cell's leader in etcd), its region where the lab runs it,\n"
             "                     checked against the keeper's etcd registration\n"
             "  replication        pg_stat_replication on every running node (the receiver's\n"
             "                     region) and pg_stat_wal_receiver (sender, netem link)\n"
             "  meridiand          each instance's config (cell, region) and its log\n"
             "  backups, caches    when the lab runs any; else reported as not running\n"
             "Parts of the lab that are down are listed as unreachable (their data\n"
             "directories are still checked). Prints a table of every object (kind,\n"
             "object, cell, region, allowed) and \"0 violations\" or each violation with\n"
             "its rule.\n"
             "Options:\n"
             "  --dir LABDIR     the lab (default: as `lab` chooses it)\n"
             "  --topology FILE  judge against FILE (default: the topology the lab was\n"
             "                   started with, LABDIR/topology.json)\n"
             "--json prints {\"ok\",\"violation_count\",\"checked\":{...},\"objects\":[...],\n"
             "\"violations\":[...],\"unreachable\":[...],\"not_running\":[...]}.\n"
             "Exit status: 0 no violation; 1 a violation, or no lab; 2 bad arguments.\n"},
    {0},
};

static const cli_command root_commands[] = {
    {.name = "db", .children = db_commands, .summary = "Schema migrations", .usage = "db"},
    {.name = "customer",
     .children = customer_commands,
     .summary = "Customers",
     .usage = "customer"},
    {.name = "apikey", .children = apikey_commands, .summary = "API keys", .usage = "apikey"},
    {.name = "config",
     .children = config_commands,
     .summary = "Configuration files",
     .usage = "config"},
    {.name = "status",
     .handler = cmd_status,
     .summary = "Show a cell: nodes, roles, lag, epoch, lease, synchronous set",
     .usage = "status [--cell NAME] [--etcd URLS]",
     .help = "Reads the cell's keys from etcd in one transaction and shows each node\n"
             "(role, keeper state, health, zone, region, timeline, flush LSN, lag in\n"
             "bytes behind the leader, upstream, synchronous-set membership), the epoch,\n"
             "the leader's lease and its time left, and the synchronous set. Without a\n"
             "leader it says why: each keeper's last decision and, per synchronous-set\n"
             "member, whether it may be promoted without losing a commit.\n"
             "Options:\n"
             "  --cell NAME   the cell (default: cell in FILE, else \"default\")\n"
             "  --etcd URLS   comma-separated etcd endpoints (default: etcd in FILE)\n"
             "Exit status: 0 the cell has a leader; 3 it has none (failover in\n"
             "progress or not possible); 1 etcd unreachable; 2 bad arguments.\n"},
    {.name = "history",
     .handler = cmd_history,
     .summary = "List the cell's promotions: bootstrap, failovers, switchovers",
     .usage = "history [--cell NAME] [--etcd URLS]",
     .help = "One row per epoch: kind, node, when the old leader was seen gone, when the\n"
             "new one took the key (detection = the difference), when it was promoted.\n"
             "Times are ISO-8601 UTC.\n"
             "Options:\n"
             "  --cell NAME   the cell (default: cell in FILE, else \"default\")\n"
             "  --etcd URLS   comma-separated etcd endpoints (default: etcd in FILE)\n"},
    {.name = "switchover",
     .handler = cmd_switchover,
     .summary = "Hand the leader role to another node with no loss",
     .usage = "switchover --cell NAME (--to NODE | --to-region REGION) [--timeout-s N] "
              "[--etcd URLS]",
     .help = "Refuses when NODE is unknown, is the leader already, is not healthy and\n"
             "streaming, or is not in the synchronous set. Otherwise writes a request\n"
             "(under a 30 s lease) that the primary's keeper carries out: it stops\n"
             "PostgreSQL cleanly so NODE has all WAL and releases the leader key; NODE\n"
             "takes it and promotes. Waits (bounded) for the new leader and prints the\n"
             "write pause and the new epoch.\n"
             "With --to-region (planned failback after a regional failover, e.g.\n"
             "`--cell us --to-region us-east`) it picks the node: present, healthy,\n"
             "streaming from the leader, in the synchronous set, the most advanced flush\n"
             "LSN; it refuses with each node's state when none is ready yet.\n"
             "Options:\n"
             "  --cell NAME          the cell (or cell in FILE; no default here)\n"
             "  --to NODE            the node that should lead\n"
             "  --to-region REGION   the region that should lead (exclusive with --to)\n"
             "  --timeout-s N        how long to wait, 1..3600 (default 60); on timeout,\n"
             "                       exit 1 and print the status\n"
             "  --etcd URLS          comma-separated etcd endpoints (default: etcd in FILE)\n"},
    {.name = "keeper", .children = keeper_commands, .summary = "Keepers", .usage = "keeper"},
    {.name = "topology",
     .children = topology_commands,
     .summary = "Topology files: check, show",
     .usage = "topology"},
    {.name = "drill",
     .handler = cmd_drill,
     .summary = "Failover drill: bank workload, fault on the leader, RTO/RPO and invariants",
     .usage = "drill node-loss|db-crash|isolate-primary [--runs N] [--cell-dir DIR] "
              "[--build DIR] [--clients C] [--readers R] [--accounts K] [--rate R] "
              "[--report FILE] [--keep] | drill region-loss|az-loss|db-failure|partition|"
              "etcd-majority-loss|node-loss --lab|db-crash --lab [--lab-dir DIR] [--runs N] [...]",
     .help = "Runs a bank workload through meridiand (writers moving money between K\n"
             "accounts, retrying the same id on 503; readers checking that balances sum to\n"
             "zero), injects the fault, waits until writes are acknowledged again on the\n"
             "new primary, and reports detection, promotion, RTO (fault -> first\n"
             "acknowledged transfer on the new primary), RPO (acknowledged transfers\n"
             "missing afterwards) and every invariant check (see docs/DRILLS.md).\n"
             "Scenarios on one cell (scripts/cell.sh):\n"
             "  node-loss        SIGKILL the leader's keeper and PostgreSQL (cell.sh kill-node)\n"
             "  db-crash         SIGKILL the leader's postmaster only (cell.sh kill-db)\n"
             "  isolate-primary  cut the leader's keeper off from etcd (cell.sh isolate)\n"
             "Scenarios on the two-region lab (scripts/lab.sh; cell us, through the global\n"
             "entry; --lab is implied):\n"
             "  region-loss        lose us-east: the DR standby in eu-west takes the cell\n"
             "  az-loss            lose the leader's zone: in-region failover, nothing lost\n"
             "  db-failure         the leader's node (in-region failover), then every other\n"
             "                     us-east database node (the DR standby takes the cell)\n"
             "  partition          cut us-east off (the DR standby takes the cell), heal: the\n"
             "                     old nodes rejoin as standbys, discarded WAL reported\n"
             "  etcd-majority-loss freeze two of three etcd members (writes must stop), then\n"
             "                     bring them back (writes resume, nothing lost)\n"
             "  node-loss, db-crash with --lab: the same faults on cell us's leader in the lab\n"
             "Options:\n"
             "  --runs N         runs, 1..100 (default 1); lab: a lab of its own per run\n"
             "  --cell-dir DIR   use the running cell in DIR (cell.sh up DIR --meridiand 2);\n"
             "                   default: start one under /tmp and remove it afterwards\n"
             "  --lab-dir DIR    use the running lab in DIR (one run: the fault consumes it)\n"
             "  --build DIR      binaries for a new cell (default: this binary's directory)\n"
             "  --clients C      writer threads, 1..64 (default 8)\n"
             "  --readers R      balance readers, 0..16 (default 2)\n"
             "  --accounts K     accounts per run, 3..64 (default 10)\n"
             "  --rate R         pace the writers to R new transfers/s in all (default:\n"
             "                   closed loop, as fast as answers come)\n"
             "  --report FILE    write the report (with per-run details) as JSON to FILE;\n"
             "                   FILE.html writes a self-contained HTML page with a timeline\n"
             "                   per run, and the JSON beside it as FILE.json\n"
             "  --keep           keep a cell the drill started (and its logs)\n"
             "scripts/cell.sh is found through $MERIDIAN_SOURCE_DIR, else the source tree\n"
             "the binary was built from. --json prints the report as the last stdout line.\n"
             "Exit status: 0 every run passed (no invariant broken, writes back within the\n"
             "bound, cell healthy again, loss within the cell's bound); 1 a run failed; 2 bad\n"
             "arguments or the scenario is not available here.\n"},
    {.name = "lab",
     .handler = cmd_lab,
     .summary = "The multi-region lab on 127.0.0.1: up, down, status, fault",
     .usage = "lab up [--topology FILE] [--dir DIR] | down [--dir DIR] | "
              "status [--dir DIR] [--json] | fault [--dir DIR] KIND ARGS...",
     .help = "Runs scripts/lab.sh (docs/LAB.md) with the binaries next to this one.\n"
             "  up       validate the topology (default topologies/lab.json), start netem,\n"
             "           etcd, every cell's nodes with keepers, meridiand per region, HAProxy\n"
             "           per region and the global entry; print endpoints and demo keys\n"
             "  down     stop everything by PID\n"
             "  status   processes, each cell's leader and epoch, endpoints, WAN links\n"
             "  fault    node-kill NODE | db-crash NODE | db-loss CELL REGION |\n"
             "           zone-loss REGION ZONE | region-loss REGION | partition REGION |\n"
             "           etcd-majority-loss KEEP_REGION | heal | wan-delay MS [JITTER] |\n"
             "           restart NAME\n"
             "DIR defaults to .lab at the repository root (or /var/tmp/meridian-lab-HASH).\n"
             "The global entry routes by the X-Meridian-Cell header or a /cells/CELL/ path\n"
             "prefix; each cell also has its own global port.\n"},
    {.name = "failover",
     .handler = cmd_failover,
     .summary = "Regional failover: promote a cell's DR standby in another region",
     .usage = "failover --cell NAME --to-region REGION [--yes] [--timeout-s N] "
              "[--etcd URLS | --dir LABDIR]",
     .help = "For a lost home region (issue 4 item 5; docs/TOPOLOGY.md \"Regional\n"
             "failover\"). Finds the cell's DR standby in REGION and prints the loss bound\n"
             "first: the WAL gap between the last known leader flush LSN (the leader's\n"
             "member key, the highest member LSN, or the leader LSN the DR standby last\n"
             "saw) and the DR standby's, in bytes and as LSNs, its lag in ms, and an\n"
             "estimate of the transfers that may be lost (gap / ~6 KB of WAL per transfer).\n"
             "Refuses while the cell has a leader outside REGION (a planned move is\n"
             "`switchover`). Without --yes it stops there (exit 3). With --yes it writes\n"
             "/meridian/CELL/failover = {\"to\": DR} under a 60 s lease; the DR standby's\n"
             "keeper takes the leader key (new epoch) and promotes. Waits (bounded) for the\n"
             "leader key to name it, then prints detection and promotion times from the\n"
             "history and the new epoch.\n"
             "Options:\n"
             "  --cell NAME        the cell\n"
             "  --to-region REGION the region of the DR standby to promote\n"
             "  --yes              really promote\n"
             "  --timeout-s N      how long to wait, 1..3600 (default 60)\n"
             "  --etcd URLS        etcd endpoints (default: etcd in --config FILE, else\n"
             "                     ETCD_DIRECT of the lab in --dir LABDIR or the default lab)\n"
             "Exit status: 0 promoted (or REGION leads already); 3 bound printed, not\n"
             "confirmed; 1 refused, unknown cell, no DR standby there, etcd unreachable or\n"
             "timeout; 2 bad arguments.\n"},
    {.name = "residency",
     .children = residency_commands,
     .summary = "Data residency: scan the running lab",
     .usage = "residency"},
    {0},
};

int main(int argc, char **argv)
{
    cli_ctx ctx = {0};
    int rc = cli_dispatch(&ctx, root_commands, "", argc - 1, argv + 1);
    cli_ctx_release(&ctx);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
        rc = CLI_EXIT_FAIL;
    return rc;
}
