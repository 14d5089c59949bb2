#!/usr/bin/env bash
# itest_global.sh — per-transfer "durability": "global" on real servers.
#
# A primary with one asynchronous standby (playing the cross-region DR
# standby) and a meridiand. A global transfer is acknowledged once the
# standby has flushed it; with the standby stopped it is committed but
# answered 503 durability_timeout (not acknowledged), while regional
# transfers go on; when the standby is back, a retry with the same id
# answers exists and is acknowledged. Everything is stopped by PID.
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
pg="$src/scripts/pg.sh"

# shellcheck disable=SC1091
. "$here/tap.sh"

work=$(mktemp -d /tmp/meridian-itest-global-XXXXXX)
chmod 755 "$work"
mpid=
cleanup() {
  [ -n "$mpid" ] && kill -TERM "$mpid" 2>/dev/null && wait "$mpid" 2>/dev/null
  bash "$pg" stop "$work/dr" >/dev/null 2>&1
  bash "$pg" stop "$work/primary" >/dev/null 2>&1
  if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "# kept $work"; fi
}
trap cleanup EXIT

bash "$pg" init "$work/primary" >/dev/null && bash "$pg" start "$work/primary" >/dev/null
bash "$pg" createdb "$work/primary" meridian
bash "$pg" standby "$work/dr" "$work/primary" dr1 >/dev/null && bash "$pg" start "$work/dr" >/dev/null
dsn=$(bash "$pg" dsn "$work/primary" meridian)
port=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12700 ))
"$bin/meridianctl" config init --out "$work/m.conf" --dsn "$dsn" --listen "127.0.0.1:$port" >/dev/null
echo "global_wait_ms = 1500" >> "$work/m.conf"
"$bin/meridianctl" --config "$work/m.conf" db migrate >/dev/null
key=$("$bin/meridianctl" --config "$work/m.conf" --json apikey create --customer g | jq -r .key)
"$bin/meridiand" --config "$work/m.conf" >"$work/meridiand.log" 2>&1 &
mpid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 100); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.1; done
check "meridiand ready" curl -sf "$url/readyz" -o /dev/null

post() { # path body -> prints "STATUS BODY"
  curl -s -o "$work/body" -w '%{http_code}' "$url$1" -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' -d "$2"
}
A=00000000-0000-4000-8000-0000000000a1
B=00000000-0000-4000-8000-0000000000b2
post /v1/accounts "{\"accounts\":[{\"id\":\"$A\",\"ledger\":840,\"code\":1},{\"id\":\"$B\",\"ledger\":840,\"code\":1}]}" >/dev/null
transfer() { # id durability
  local d=""
  [ -n "$2" ] && d=",\"durability\":\"$2\""
  post /v1/transfers "{\"transfers\":[{\"id\":\"$1\",\"debit_account_id\":\"$A\",\"credit_account_id\":\"$B\",\"amount\":100,\"ledger\":840,\"code\":1$d}]}"
}
rows() { bash "$pg" psql "$work/primary" -d meridian -tAc "SELECT count(*) FROM transfers WHERE id = '$1'"; }
on_dr() { bash "$pg" psql "$work/dr" -d meridian -tAc "SELECT count(*) FROM transfers WHERE id = '$1'"; }

T1=00000000-0000-4000-8000-000000000001
st=$(transfer $T1 global)
check "global transfer with the standby up: 200 ok (got $st)" test "$st" = 200 -a "$(jq -r '.results[0].result' "$work/body")" = ok
check "... and it is on the standby when acknowledged" test "$(on_dr $T1)" = 1

st=$(post /v1/transfers "{\"transfers\":[{\"id\":\"00000000-0000-4000-8000-000000000009\",\"debit_account_id\":\"$A\",\"credit_account_id\":\"$B\",\"amount\":1,\"ledger\":840,\"code\":1,\"durability\":\"planet\"}]}")
check "bad durability value: 400 invalid_field at /transfers/0/durability (got $st)" \
  test "$st" = 400 -a "$(jq -r .pointer "$work/body")" = /transfers/0/durability

bash "$pg" stop "$work/dr" >/dev/null
T2=00000000-0000-4000-8000-000000000002
t0=$(date +%s%N)
st=$(transfer $T2 global)
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "global transfer with the standby down: 503 durability_timeout after ~1.5 s (got $st in $ms ms)" \
  test "$st" = 503 -a "$(jq -r .code "$work/body")" = durability_timeout -a "$ms" -ge 1400
check "... it was committed in the home region (1 row), only not acknowledged" test "$(rows $T2)" = 1
T3=00000000-0000-4000-8000-000000000003
st=$(transfer $T3 "")
check "regional transfers go on meanwhile (got $st)" test "$st" = 200 -a "$(jq -r '.results[0].result' "$work/body")" = ok

bash "$pg" start "$work/dr" >/dev/null
st=000
for _ in $(seq 1 20); do
  st=$(transfer $T2 global)
  [ "$st" = 200 ] && break
  sleep 0.5
done
check "retry of the same global id once the standby is back: 200 exists (got $st)" \
  test "$st" = 200 -a "$(jq -r '.results[0].result' "$work/body")" = exists
check "... applied once" test "$(rows $T2)" = 1
check "... and now on the standby" test "$(on_dr $T2)" = 1

curl -s "$url/metrics" > "$work/metrics"
check "metrics count confirmed global waits" grep -q 'meridian_global_durability_waits_total{outcome="confirmed"} [2-9]' "$work/metrics"
check "metrics count timed-out global waits" grep -q 'meridian_global_durability_waits_total{outcome="timeout"} [1-9]' "$work/metrics"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
