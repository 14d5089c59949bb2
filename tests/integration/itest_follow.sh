#!/usr/bin/env bash
# itest_follow.sh — meridiand follows the cell's primary (issue 3, items 4
# and 7): a cell of 3 etcd members and 3 keeper-run PostgreSQL nodes
# (scripts/cell.sh) with 2 meridiand following the leader key, a bank
# workload of transfers through both, and kill -9 of the primary's whole
# node in the middle.
#
# The clients are plain curl loops: every transfer has a unique id; a 503
# (or a broken connection) is retried with the same id until the answer is
# definite (200 with result ok or exists), so every id ends acknowledged
# exactly once. Asserts:
#   - every acknowledged transfer is on the new primary, and no transfer
#     is applied twice (each account's posted totals equal the sum of its
#     stored transfers; debits equal credits per ledger);
#   - requests during the failover got a definite result or a retryable
#     503, never a 500 or anything else;
#   - writes resumed on the new primary (time printed), /readyz back to 200,
#     the new leader's meridian_fencing epoch equals the etcd epoch, and
#     meridiand's route metrics say so;
#   - fencing: with the leader's recorded epoch made different from the
#     cell's (UPDATE meridian_fencing), a commit is refused with 503 and
#     nothing applied (meridian_fenced_commits_total counts it); once the
#     epoch is right again the same id commits once.
# Everything started here is stopped by PID (cell.sh down, kill PID).
set -u
here=$(cd "$(dirname "$0")" && pwd)
src=${MERIDIAN_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${MERIDIAN_BIN_DIR:?MERIDIAN_BIN_DIR must name the build directory}
CELLSH="$src/scripts/cell.sh"
RTO_MAX_S=${RTO_MAX_S:-20}
CLIENTS_PER_MERIDIAND=${CLIENTS_PER_MERIDIAND:-2}

# shellcheck disable=SC1091
. "$here/tap.sh"

lab=$(mktemp -d /tmp/meridian-itest-follow-XXXXXX)
chmod 755 "$lab"
cell="$lab/cell"
client_pids=""
extra_pid=""
cleanup() {
  touch "$lab/stop" 2>/dev/null
  for p in $client_pids; do kill "$p" 2>/dev/null; done
  for p in $client_pids; do wait "$p" 2>/dev/null; done
  [ -n "$extra_pid" ] && kill "$extra_pid" 2>/dev/null && wait "$extra_pid" 2>/dev/null
  bash "$CELLSH" down "$cell" >/dev/null 2>&1
  if [ "$failed" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then rm -rf "$lab"; else echo "# logs kept in $lab"; fi
}
trap cleanup EXIT

if ! bash "$CELLSH" up "$cell" --meridiand 2 --build "$bin" --name follow >"$lab/up.log" 2>&1; then
  tail -20 "$lab/up.log" | sed 's/^/# /'
  not_ok "cell comes up (etcd x3, 3 keepers, 2 meridiand)"
  finish
fi
ok "cell comes up (etcd x3, 3 keepers, 2 meridiand)"
# shellcheck disable=SC1091
. "$cell/env"
IFS=, read -r -a URLS <<<"$MERIDIAND_URLS"

etcd_get() { bash "$src/scripts/etcd.sh" ctl "$cell/etcd" get --print-value-only "/meridian/$CELL/$1" 2>/dev/null; }
leader() { bash "$CELLSH" leader "$cell" 2>/dev/null; }
sql() { local node=$1; shift; bash "$CELLSH" psql "$cell" "$node" -tAq -v ON_ERROR_STOP=1 -c "$@" 2>/dev/null; }
now() { date +%s.%N; }
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# ---- API key, accounts.
KEY=$("$BUILD/meridianctl" --config "$CONFIG" apikey create --customer bank --json 2>"$lab/apikey.err" | jq -r .key)
if [[ ! "$KEY" =~ ^mk_ ]]; then
  not_ok "API key created"; cat "$lab/apikey.err"; finish
fi
N_ACCOUNTS=8
acct() { printf '00000000-0000-4000-8000-%012x' "$1"; }
body='{"accounts":['
for i in $(seq 1 $N_ACCOUNTS); do
  body+="{\"id\":\"$(acct "$i")\",\"ledger\":840,\"code\":1}"
  [ "$i" -lt $N_ACCOUNTS ] && body+=','
done
body+=']}'
r=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$body" "${URLS[0]}/v1/accounts")
check "$N_ACCOUNTS accounts created" test "$(jq '[.results[] | select(.result == "ok")] | length' <<<"$r" 2>/dev/null)" = "$N_ACCOUNTS"

# ---- Workload. Client c sends transfers c-1, c-2, ... to one meridiand.
# Outcome lines: acked: "ID T_ACK ATTEMPTS RESULT T_FIRST_SENT"; codes:
# "T CODE"; bad: anything
# that is neither a definite answer nor a retryable one.
client() {
  local c=$1 url=$2 i=0 id code res t0 attempts a b amount
  while [ ! -e "$lab/stop" ]; do
    i=$((i + 1))
    id=$(printf '%08x-0000-4000-9000-%012x' "$c" "$i")
    a=$(( (c + i) % N_ACCOUNTS + 1 )); b=$(( (c + 3 * i + 1) % N_ACCOUNTS + 1 ))
    [ "$a" = "$b" ] && b=$(( b % N_ACCOUNTS + 1 ))
    amount=$(( i % 97 + 1 ))
    t0=$(now); attempts=0
    while :; do
      attempts=$((attempts + 1))
      code=$(curl -s -o "$lab/resp.$c" -w '%{http_code}' --max-time 30 \
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
        -d "{\"transfers\":[{\"id\":\"$id\",\"debit_account_id\":\"$(acct $a)\",\"credit_account_id\":\"$(acct $b)\",\"amount\":$amount,\"ledger\":840,\"code\":1}]}" \
        "$url/v1/transfers")
      echo "$(now) $code" >> "$lab/codes.$c"
      if [ "$code" = 200 ]; then
        res=$(jq -r '.results[0].result' "$lab/resp.$c" 2>/dev/null)
        if [ "$res" = ok ] || [ "$res" = exists ]; then
          echo "$id $(now) $attempts $res $t0" >> "$lab/acked.$c"
          break
        fi
        echo "$id 200 result=$res" >> "$lab/bad.$c"; break
      elif [ "$code" = 503 ] || [ "$code" = 000 ]; then
        # Retryable (000: connection refused/broken, curl timeout): same id.
        if [ "$(echo "$(now) - $t0 > 90" | bc)" = 1 ]; then
          echo "$id gave up after $attempts attempts" >> "$lab/bad.$c"; break
        fi
        sleep 0.1
      else
        echo "$id $code $(head -c 300 "$lab/resp.$c")" >> "$lab/bad.$c"; break
      fi
    done
  done
}

c=0
for u in "${URLS[@]}"; do
  for _ in $(seq 1 "$CLIENTS_PER_MERIDIAND"); do
    c=$((c + 1))
    : > "$lab/acked.$c"; : > "$lab/codes.$c"; : > "$lab/bad.$c"
    client "$c" "$u" &
    client_pids="$client_pids $!"
  done
done
n_clients=$c
acked_count() { cat "$lab"/acked.* 2>/dev/null | wc -l; }

sleep 5
before=$(acked_count)
check "transfers acknowledged before the fault ($before)" test "$before" -gt 0

# ---- Fault: kill -9 of the primary's whole node (keeper and postmaster).
old=$(leader)
old_epoch=$(etcd_get epoch)
t_kill=$(now)
bash "$CELLSH" kill-node "$cell" "$old"
t_killed=$(now)
echo "# killed $old (epoch $old_epoch) at $t_kill"

# Writes are back when a request first sent after the kill completed is
# acknowledged (it cannot have been committed by the killed node).
rto=""
for _ in $(seq 1 $((RTO_MAX_S * 10))); do
  first=$(cat "$lab"/acked.* | awk -v t="$t_killed" '$5 > t { print $2 }' | sort -n | head -1)
  if [ -n "$first" ]; then rto=$(echo "$first - $t_kill" | bc); break; fi
  sleep 0.1
done
if [ -n "$rto" ]; then
  ok "writes acknowledged again through meridiand $(printf '%.2f' "$rto") s after the primary node was killed (bound ${RTO_MAX_S} s)"
else
  not_ok "writes acknowledged again within ${RTO_MAX_S} s of killing the primary node"
fi
sleep 4
touch "$lab/stop"
for p in $client_pids; do wait "$p" 2>/dev/null; done
client_pids=""

new=$(leader)
new_epoch=$(etcd_get epoch)
check "a different node leads ($old -> ${new:-none}), epoch $old_epoch -> $new_epoch" \
  test -n "$new" -a "$new" != "$old" -a "${new_epoch:-0}" -gt "${old_epoch:-0}"
total=$(acked_count)
after=$(cat "$lab"/acked.* | awk -v t="$t_killed" '$5 > t' | wc -l)
check "transfers sent after the fault acknowledged ($after of $total)" test "$after" -gt 0
slowest=$(cat "$lab"/acked.* | awk '{ d = $2 - $5; if (d > m) m = d } END { printf "%.2f", m }')
retried=$(cat "$lab"/acked.* | awk '$3 > 1' | wc -l)
exists=$(cat "$lab"/acked.* | awk '$4 == "exists"' | wc -l)
echo "# slowest transfer ${slowest} s; $retried needed more than one request; $exists answered exists"
echo "# meridiand: $(cat "$cell"/meridiand*.log | grep -c 'leader n') route changes logged," \
  "$(cat "$cell"/meridiand*.log | grep -c 'ambiguous commit settled') ambiguous commits settled," \
  "$(cat "$cell"/meridiand*.log | grep -c 'refusing to write') epoch refusals," \
  "$(cat "$cell"/meridiand*.log | grep -c 'requests refused') batches refused"

# ---- Outcomes of every request.
codes=$(cat "$lab"/codes.* | awk '{ print $2 }' | sort | uniq -c | awk '{ printf "%s:%s ", $2, $1 }')
echo "# HTTP outcomes of $n_clients clients: $codes"
bad=$(cat "$lab"/bad.* | wc -l)
[ "$bad" -gt 0 ] && head -5 "$lab"/bad.* | sed 's/^/# /'
check "every request got a definite result or a retryable 503 (no 500, nothing else)" \
  test "$bad" = 0 -a "$(cat "$lab"/codes.* | awk '$2 != 200 && $2 != 503 && $2 != "000"' | wc -l)" = 0

# ---- Every acknowledged id on the new primary, nothing applied twice.
cat "$lab"/acked.* | awk '{ print $1 }' | sort > "$lab/acked.ids"
check "acknowledged ids are unique ($total)" test "$(uniq "$lab/acked.ids" | wc -l)" = "$total"
ids=$(sed "s/.*/'&'/" "$lab/acked.ids" | paste -sd, -)
have=$(sql "$new" "SELECT count(*) FROM transfers WHERE id IN ($ids)")
check "every acknowledged transfer is on the new primary ($have of $total)" test "$have" = "$total"
stored=$(sql "$new" "SELECT count(*) FROM transfers")
# Clients finish their current id before stopping, so every id sent was
# acknowledged: the database must hold exactly those.
check "the new primary holds exactly the acknowledged transfers (stored $stored, acknowledged $total)" \
  test "$stored" = "$total"
mismatch=$(sql "$new" "
  SELECT count(*) FROM accounts a
  WHERE a.debits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.debit_account_id = a.id)
     OR a.credits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.credit_account_id = a.id)")
check "each account's posted totals equal the sum of its stored transfers (no transfer applied twice)" \
  test "$mismatch" = 0
unbalanced=$(sql "$new" "SELECT count(*) FROM (SELECT ledger FROM accounts GROUP BY ledger
                          HAVING sum(debits_posted) <> sum(credits_posted)
                              OR sum(debits_pending) <> sum(credits_pending)) x")
check "balances sum to zero per ledger on the new primary" test "$unbalanced" = 0
api_tot=$(curl -s -H "Authorization: Bearer $KEY" "${URLS[1]}/v1/balances" |
  jq -r '[.totals[] | select(.debits_posted != .credits_posted)] | length' 2>/dev/null)
check "GET /v1/balances through meridiand shows balanced totals" test "$api_tot" = 0

# ---- Readiness, epoch, route metrics.
ready_all() {
  local u
  for u in "${URLS[@]}"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$u/readyz")" = 200 ] || return 1
  done
}
ready=no
for _ in $(seq 1 60); do ready_all && { ready=yes; break; }; sleep 0.5; done
check "both meridiand /readyz back to 200" test "$ready" = yes
fence_epoch=$(sql "$new" "SELECT epoch FROM meridian_fencing")
check "meridian_fencing epoch on the new leader ($fence_epoch) equals the etcd epoch ($new_epoch)" \
  test -n "$fence_epoch" -a "$fence_epoch" = "$new_epoch"
for u in "${URLS[@]}"; do
  re=$(metric "$u" meridian_route_epoch); rc=$(metric "$u" meridian_route_changes_total)
  check "$u: meridian_route_epoch $re = $new_epoch, meridian_route_changes_total $rc >= 2" \
    test "$re" = "$new_epoch" -a "${rc:-0}" -ge 2
done

# ---- Fencing: a leader whose recorded epoch is not the cell's is refused.
"$BUILD/meridiand" --config "$CONFIG" --listen 127.0.0.1:0 --failover-wait-ms 1500 \
  >"$lab/fence.out" 2>"$lab/fence.log" &
extra_pid=$!
furl=""
for _ in $(seq 1 100); do
  furl=$(sed -n 's/^meridiand listening on \(http:[^ ]*\)$/\1/p' "$lab/fence.out")
  [ -n "$furl" ] && break
  sleep 0.2
done
if [ -z "$furl" ]; then
  not_ok "a third meridiand (failover_wait_ms 1500) starts"
  tail -5 "$lab/fence.log" | sed 's/^/# /'
else
  fid=$(printf '%08x-0000-4000-a000-%012x' 99 1)
  fbody="{\"transfers\":[{\"id\":\"$fid\",\"debit_account_id\":\"$(acct 1)\",\"credit_account_id\":\"$(acct 2)\",\"amount\":5,\"ledger\":840,\"code\":1}]}"
  post() { curl -s -o "$lab/fence.resp" -w '%{http_code}' --max-time 30 -H "Authorization: Bearer $KEY" \
             -H 'Content-Type: application/json' -d "$fbody" "$furl/v1/transfers"; }
  # Warm the key cache while the epoch is right (reads are not fenced).
  curl -s -o /dev/null -H "Authorization: Bearer $KEY" "$furl/v1/accounts/$(acct 1)"
  sql "$new" "UPDATE meridian_fencing SET epoch = epoch + 1000" >/dev/null
  code=$(post)
  check "a commit to a leader at the wrong epoch is refused with 503 (got $code)" test "$code" = 503
  check "nothing of it was applied" test "$(sql "$new" "SELECT count(*) FROM transfers WHERE id = '$fid'")" = 0
  fenced=$(metric "$furl" meridian_fenced_commits_total)
  check "meridian_fenced_commits_total counts the refusal ($fenced)" test "${fenced:-0}" -ge 1
  grep -q 'route expects' "$lab/fence.log" && ok "meridiand logs the epoch mismatch" ||
    not_ok "meridiand logs the epoch mismatch"
  sql "$new" "UPDATE meridian_fencing SET epoch = epoch - 1000" >/dev/null
  code=$(post)
  res=$(jq -r '.results[0].result' "$lab/fence.resp" 2>/dev/null)
  check "with the epoch right again the same id commits ($code $res)" test "$code" = 200 -a "$res" = ok
  check "and is stored once" test "$(sql "$new" "SELECT count(*) FROM transfers WHERE id = '$fid'")" = 1
  kill "$extra_pid" 2>/dev/null; wait "$extra_pid" 2>/dev/null; extra_pid=""
fi

# ---- Ambiguous commits: COMMIT sent, the primary dies before answering.
# Pausing both synchronous standbys makes commits wait in COMMIT; killing
# the primary then breaks those connections with the outcome unknown.
# meridiand must settle each batch on the new leader — committed if the
# WAL reached it (a paused standby still finds what the old primary sent
# in its socket buffer), else run again — so the clients get a definite
# answer and each transfer is stored once.
bash "$CELLSH" start-node "$cell" "$old" >/dev/null 2>&1
if ! bash "$CELLSH" wait-healthy "$cell" 120; then
  not_ok "the killed node rejoins and the cell is healthy again (120 s)"
  finish
fi
ok "the killed node rejoins and the cell is healthy again"
L=$(leader)
standbys=$(for n in $NODES; do [ "$n" != "$L" ] && echo "$n"; done)
send_one() {
  local id=$1 url=$2 out=$3 code res t0
  t0=$(now)
  while :; do
    code=$(curl -s -o "$out.resp" -w '%{http_code}' --max-time 60 \
      -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
      -d "{\"transfers\":[{\"id\":\"$id\",\"debit_account_id\":\"$(acct 3)\",\"credit_account_id\":\"$(acct 4)\",\"amount\":7,\"ledger\":840,\"code\":1}]}" \
      "$url/v1/transfers")
    echo "$(now) $code" >> "$out.codes"
    if [ "$code" = 200 ]; then
      res=$(jq -r '.results[0].result' "$out.resp" 2>/dev/null)
      echo "$id $res" > "$out"; return
    fi
    [ "$code" = 503 ] || [ "$code" = 000 ] || { echo "$id $code" > "$out"; return; }
    [ "$(echo "$(now) - $t0 > 90" | bc)" = 1 ] && { echo "$id timeout" > "$out"; return; }
    sleep 0.1
  done
}
for n in $standbys; do bash "$CELLSH" pause-node "$cell" "$n"; done
amb_pids=""
for k in 1 2 3; do
  send_one "$(printf '%08x-0000-4000-b000-%012x' 77 "$k")" "${URLS[$(( k % 2 ))]}" "$lab/amb.$k" &
  amb_pids="$amb_pids $!"
done
sleep 2
waiting=0
for k in 1 2 3; do [ -s "$lab/amb.$k" ] || waiting=$((waiting + 1)); done
check "with both synchronous standbys paused, commits wait ($waiting of 3 unanswered)" test "$waiting" = 3
bash "$CELLSH" kill-node "$cell" "$L"
sleep 0.5
for n in $standbys; do bash "$CELLSH" resume-node "$cell" "$n"; done
for p in $amb_pids; do wait "$p" 2>/dev/null; done
definite=0
for k in 1 2 3; do
  read -r aid ares < "$lab/amb.$k" 2>/dev/null
  echo "# in-doubt transfer $aid: $ares ($(awk '{ print $2 }' "$lab/amb.$k.codes" | sort | uniq -c | tr -s ' ' | paste -sd' ' -))"
  { [ "$ares" = ok ] || [ "$ares" = exists ]; } && definite=$((definite + 1))
done
check "each in-doubt transfer got a definite result after the failover ($definite of 3)" test "$definite" = 3
L2=$(leader)
check "a new leader was promoted ($L -> ${L2:-none})" test -n "$L2" -a "$L2" != "$L"
stored=$(sql "$L2" "SELECT count(*) FROM transfers WHERE id::text LIKE '0000004d-0000-4000-b000-%'")
check "each in-doubt transfer is stored exactly once on the new leader ($stored of 3)" test "$stored" = 3
settled=$(cat "$cell"/meridiand*.log | grep -c 'ambiguous commit settled')
check "meridiand settled the ambiguous commits on the new leader ($settled settlements logged)" test "$settled" -ge 1
mismatch=$(sql "$L2" "
  SELECT count(*) FROM accounts a
  WHERE a.debits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.debit_account_id = a.id)
     OR a.credits_posted <> (SELECT coalesce(sum(amount), 0) FROM transfers t WHERE t.credit_account_id = a.id)")
check "posted totals still equal the stored transfers (nothing applied twice)" test "$mismatch" = 0

finish
