#!/usr/bin/env bash
# itest_cli.sh — meridianctl against a real, empty PostgreSQL database:
# migrations (apply, idempotence, tamper detection), API keys (format,
# only a hash stored), config init, and the exit codes of bad arguments
# (2) and operational errors (1).
#
# Run by CTest through tests/harness/run-itest.sh, which provides
# MERIDIAN_TEST_DSN (a fresh database), MERIDIAN_TEST_PGDIR,
# MERIDIAN_BIN_DIR and MERIDIAN_SOURCE_DIR.
set -u

: "${MERIDIAN_TEST_DSN:?run through tests/harness/run-itest.sh}"
: "${MERIDIAN_TEST_PGDIR:?}" "${MERIDIAN_BIN_DIR:?}" "${MERIDIAN_SOURCE_DIR:?}"

CTL="$MERIDIAN_BIN_DIR/meridianctl"
DSN="$MERIDIAN_TEST_DSN"
DB=$(sed -n 's/.*dbname=\([^ ]*\).*/\1/p' <<<"$DSN")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $1"; }
not_ok() { failed=$((failed + 1)); echo "FAIL - $1"; [ $# -gt 1 ] && printf '       %s\n' "${@:2}"; }

# run ARGS...: run meridianctl, keep exit code, stdout, stderr.
rc=0; out=; err=
run() {
  "$CTL" "$@" >"$TMP/out" 2>"$TMP/err"
  rc=$?
  out=$(cat "$TMP/out"); err=$(cat "$TMP/err")
}
psql_q() { bash "$MERIDIAN_SOURCE_DIR/scripts/pg.sh" psql "$MERIDIAN_TEST_PGDIR" -d "$DB" -tAq -c "$1"; }

# expect_rc WANT NAME: check the last run's exit code.
expect_rc() {
  if [ "$rc" -eq "$1" ]; then ok "$2"; else not_ok "$2" "exit $rc, want $1" "stdout: $out" "stderr: $err"; fi
}
# expect_eq GOT WANT NAME
expect_eq() {
  if [ "$1" = "$2" ]; then ok "$3"; else not_ok "$3" "got '$1', want '$2'"; fi
}
# expect_match TEXT REGEX NAME
expect_match() {
  if grep -Eq -- "$2" <<<"$1"; then ok "$3"; else not_ok "$3" "no /$2/ in:" "$1"; fi
}

[ -x "$CTL" ] || { echo "FAIL - $CTL not built"; echo "0 passed, 1 failed"; exit 1; }

# --- config init
CONF="$TMP/meridiand.conf"
run config init --out "$CONF" --dsn "$DSN" --listen 127.0.0.1:18080
expect_rc 0 "config init writes a file"
mode=$(stat -c %a "$CONF" 2>/dev/null)
expect_eq "$mode" 600 "config file is mode 0600"
expect_match "$(cat "$CONF")" '^api_key_pepper = [0-9a-f]{64}$' "config holds a 64-hex api_key_pepper"
pepper_before=$(grep '^api_key_pepper' "$CONF")
run config init --out "$CONF"
expect_rc 1 "config init refuses to overwrite"
expect_match "$err" 'already exists' "config init says the file exists"
expect_eq "$(grep '^api_key_pepper' "$CONF")" "$pepper_before" "refused overwrite kept the pepper"

# --- db status before migrate, migrate, idempotence
latest=$(ls "$MERIDIAN_SOURCE_DIR"/sql/migrations/*.sql | wc -l)
run --dsn "$DSN" --json db status
expect_rc 0 "db status on an empty database"
if [ "$(jq -r '.version' <<<"$out" 2>/dev/null)" = 0 ] && [ "$(jq -r '.pending | length' <<<"$out" 2>/dev/null)" = "$latest" ]; then
  ok "empty database: version 0, $latest pending"
else
  not_ok "empty database: version 0, $latest pending" "$out"
fi
run --dsn "$DSN" db status
expect_match "$out" "pending +$latest: 0001_init\\.sql" "db status lists the pending migrations"

run --config "$CONF" db migrate
expect_rc 0 "db migrate applies"
expect_match "$out" '^applying 0001_init\.sql \.\.\. done \([0-9]+ ms\)$' "db migrate prints progress"
expect_match "$out" "^database at version $latest\$" "db migrate prints the version"
run --config "$CONF" db migrate
expect_rc 0 "db migrate again"
expect_match "$out" "^database already at version $latest\$" "db migrate again is a no-op"
n=$(psql_q "SELECT count(*) FROM meridian_schema_migrations")
expect_eq "$n" "$latest" "every migration recorded once"

run --dsn "$DSN" db status --json
if jq -e '.version == .latest and (.pending | length) == 0' <<<"$out" >/dev/null 2>&1; then
  ok "db status --json: version == latest, nothing pending"
else
  not_ok "db status --json: version == latest, nothing pending" "$out"
fi

# --- API keys
run --config "$CONF" apikey create --customer acme --label itest --json
expect_rc 0 "apikey create --customer acme"
key=$(jq -r '.key' <<<"$out" 2>/dev/null)
expect_match "$key" '^mk_[A-Za-z0-9_-]{43}$' "key has the mk_ + 43 base64url shape"
if jq -e '.scope == "customer" and .customer == "acme" and (.id | type) == "number"
          and (.prefix as $p | .key | startswith($p))' <<<"$out" >/dev/null 2>&1; then
  ok "apikey create --json fields"
else
  not_ok "apikey create --json fields" "$out"
fi
n=$(psql_q "SELECT count(*) FROM customers WHERE name = 'acme'")
expect_eq "$n" 1 "customer acme created on the fly"
n=$(psql_q "SELECT count(*) FROM api_keys WHERE octet_length(lookup_hash) = 32")
expect_eq "$n" 1 "api_keys stores a 32-byte hash"
dump=$(bash "$MERIDIAN_SOURCE_DIR/scripts/pg.sh" psql "$MERIDIAN_TEST_PGDIR" -d "$DB" -tAq \
  -c "SELECT k::text, encode(lookup_hash, 'escape'), encode(lookup_hash, 'hex') FROM api_keys k")
if [ -n "$key" ] && [ "$key" != null ] && ! grep -qF -- "${key#mk_}" <<<"$dump"; then
  ok "no api_keys row contains the key"
else
  not_ok "no api_keys row contains the key" "$dump"
fi

run --config "$CONF" apikey create --customer acme
expect_rc 0 "apikey create (text)"
expect_match "$out" 'store it now: it cannot be shown again' "the key is shown once, with a warning"
run --config "$CONF" apikey create --admin --json
if [ "$rc" -eq 0 ] && jq -e '.scope == "admin" and .customer == null' <<<"$out" >/dev/null 2>&1; then
  ok "apikey create --admin"
else
  not_ok "apikey create --admin" "$out" "$err"
fi

run --config "$CONF" --json apikey list --customer acme
if [ "$rc" -eq 0 ] && [ "$(jq 'length' <<<"$out" 2>/dev/null)" = 2 ]; then
  ok "apikey list --customer acme shows its 2 keys"
else
  not_ok "apikey list --customer acme shows its 2 keys" "$out" "$err"
fi
id=$(jq -r '.[0].id' <<<"$out" 2>/dev/null)
run --config "$CONF" apikey revoke "$id"
expect_rc 0 "apikey revoke"
n=$(psql_q "SELECT count(*) FROM api_keys WHERE id = ${id:-0} AND revoked_at IS NOT NULL")
expect_eq "$n" 1 "revoked key has revoked_at"
run --config "$CONF" apikey revoke 999999
expect_rc 1 "apikey revoke of an unknown id"

run --config "$CONF" customer create beta
expect_rc 0 "customer create beta"
run --config "$CONF" customer create beta
expect_rc 1 "customer create of an existing name"
run --config "$CONF" --json customer list
if jq -e '[.[].name] == ["acme", "beta"]' <<<"$out" >/dev/null 2>&1; then
  ok "customer list"
else
  not_ok "customer list" "$out"
fi

# Without a pepper: an error that says how to get one.
printf 'dsn = %s\n' "$DSN" >"$TMP/nopepper.conf"
run --config "$TMP/nopepper.conf" apikey create --admin
expect_rc 1 "apikey create without api_key_pepper"
expect_match "$err" 'meridianctl config init' "the missing pepper error hints at config init"

# --- bad arguments: exit 2 with a message and the usage line
bad_args() { # NAME REGEX ARGS...
  local name=$1 re=$2; shift 2
  run "$@"
  if [ "$rc" -eq 2 ] && grep -Eq -- "$re" <<<"$err" && grep -q '^usage: meridianctl' <<<"$err"; then
    ok "$name"
  else
    not_ok "$name" "exit $rc (want 2)" "stderr: $err"
  fi
}
bad_args "unknown command" 'unknown command "frobnicate"' --config "$CONF" frobnicate
bad_args "unknown subcommand" 'unknown command "db frob"' --config "$CONF" db frob
bad_args "unknown flag" 'unknown option "--bogus"' --config "$CONF" db status --bogus
bad_args "missing flag value" '--customer needs a value' --config "$CONF" apikey create --customer
bad_args "--customer and --admin together" 'exclude each other' --config "$CONF" apikey create --customer acme --admin
bad_args "bad customer name" 'invalid customer name "Bad Name!"' --config "$CONF" apikey create --customer 'Bad Name!'
bad_args "bad customer name on create" 'invalid customer name' --config "$CONF" customer create 'Bad Name!'
bad_args "config init without --out" '--out FILE is required' config init

run help
expect_rc 0 "help"
expect_match "$out" 'apikey create' "help lists the commands"
run apikey create --help
expect_rc 0 "per-command --help"
expect_match "$out" '^usage: meridianctl .*apikey create' "per-command --help shows the usage"

# --- unreachable database: exit 1, libpq's message and a hint
run --dsn "host=127.0.0.1 port=1 user=postgres dbname=$DB connect_timeout=3" db status
expect_rc 1 "unreachable DSN"
expect_match "$err" 'cannot connect to the database: .*(connection|Connection)' "unreachable DSN: libpq's connection message"
expect_match "$err" 'hint: is PostgreSQL running' "unreachable DSN: hint"

# --- a tampered migration checksum is detected
psql_q "UPDATE meridian_schema_migrations SET checksum = 'x'" >/dev/null
run --dsn "$DSN" db migrate
expect_rc 1 "migrate refuses a changed migration"
expect_match "$err" 'migration 0001_init\.sql was changed after it was applied' "changed-migration message"
expect_match "$err" 'never edit an applied migration' "changed-migration message says what to do"

# --- a database newer than the binary is refused
psql_q "INSERT INTO meridian_schema_migrations (version, name, checksum) VALUES (9999, '9999_future.sql', 'f')" >/dev/null
run --dsn "$DSN" db migrate
expect_rc 1 "migrate refuses a newer database"
expect_match "$err" 'newer than this binary.*upgrade meridianctl' "newer-database message says to upgrade"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
