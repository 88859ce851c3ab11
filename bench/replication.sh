#!/usr/bin/env bash
# Replication benchmark: what chorus's statement replication costs a write
# workload, and how far behind the followers are, against the leader alone
# and against pgpool-II's native replication, in one run on the same servers.
#
#   bash bench/replication.sh [SECONDS]        (default 15 s per run)
#
# Three PostgreSQL servers (leader + 2 followers, identical settings) on free
# loopback ports. pgbench TPC-B (8 clients, 2 threads) runs
#   - directly on the leader (database `direct`, not replicated): the baseline;
#   - through chorus (database `bench`, replicated to both followers), once per
#     acknowledgement mode: async, semi-sync, sync (chorus restarted for each);
#     after each run the followers catch up, `chorus verify` checks them, and
#     the apply lag of exactly that run's transactions is computed from the
#     statement log: follower's applied_at - leader's committed_at per LSN;
#   - through pgpool-II in native replication mode (database `pool` on all
#     three servers), then the three copies are compared;
#   - two calibration runs that say where the rest of the time goes on a
#     machine where everything shares the CPUs: pgbouncer (session pooling)
#     in front of the leader's `direct` (the cost of a proxy hop alone), and
#     chorus with the leader as its only node (database `solo`: proxying and
#     logging, no follower replaying on the same CPUs).
# Prints TPS, the ratio to direct and the lag percentiles. Needs PostgreSQL
# server binaries, pgpool2 and pgbouncer (installed when run as root).
#
# For experiments: BENCH_MODES="async" runs only those modes, BENCH_PGPOOL=0
# skips pgpool-II, BENCH_CALIBRATE=0 the calibration runs,
# BENCH_REPLICATION='lsn_at_commit = false' adds lines to chorus's
# [replication] section.
set -euo pipefail
DURATION=${1:-15}
CLIENTS=8
THREADS=2
SCALE=10
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
ensure_packages postgresql postgresql-client pgpool2 pgbouncer

STARTED=$(date +%s)
PGBIN=$(pg_bindir)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CHORUS_BIN="$TARGET_DIR/release/chorus"
WORK="$ROOT/target/bench-replication"
NODES=(leader follower1 follower2)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# pgpool runs under runuser, which does not take its worker processes down
# with it: stop it with its own command (it reads the pid file named in its
# configuration), then reap runuser.
stop_pgpool() {
  [ -n "${POOL_PID:-}" ] || return 0
  as_pg pgpool -f "$WORK/pgpool.conf" -m fast stop >/dev/null 2>&1 || kill "$POOL_PID" 2>/dev/null || true
  wait "$POOL_PID" 2>/dev/null || true
  POOL_PID=
}

# Stop whatever is still running; on failure say where the logs are.
cleanup() {
  local rc=$?
  set +e
  trap - ERR
  if [ -n "${CHORUS_PID:-}" ]; then kill "$CHORUS_PID" 2>/dev/null; wait "$CHORUS_PID" 2>/dev/null; fi
  if [ -n "${BOUNCER_PID:-}" ]; then kill "$BOUNCER_PID" 2>/dev/null; wait "$BOUNCER_PID" 2>/dev/null; fi
  stop_pgpool
  for n in "${NODES[@]}"; do
    [ -f "$WORK/$n/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -m fast stop >/dev/null 2>&1
  done
  if [ "$rc" != 0 ]; then
    echo "FAILED (exit $rc). Logs in $WORK: chorus.log, <node>.log (servers), pgpool.log, pgbench-*.log, verify-*.log" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "error: line $LINENO: $BASH_COMMAND" >&2' ERR

# Stop what an earlier interrupted run left in the same place.
if [ -f "$WORK/pgpool.pid" ] && grep -qa pgpool "/proc/$(cat "$WORK/pgpool.pid")/cmdline" 2>/dev/null; then
  as_pg pgpool -f "$WORK/pgpool.conf" -m fast stop >/dev/null 2>&1 || true
fi
for n in "${NODES[@]}"; do
  [ -f "$WORK/$n/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -m immediate stop >/dev/null 2>&1 || true
done
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

declare -A PORT
for n in "${NODES[@]}"; do PORT[$n]=$(free_port); done
CHORUS_PORT=$(free_port); POOL_PORT=$(free_port); PCP_PORT=$(free_port); BOUNCER_PORT=$(free_port)

q() { # node database sql -> unaligned, tuples only
  "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT[$1]}" -U postgres -d "$2" -c "$3"
}
checkpoint_all() { for n in "${NODES[@]}"; do q "$n" postgres "CHECKPOINT" >/dev/null; done; }

echo "== starting PostgreSQL: leader on ${PORT[leader]}, followers on ${PORT[follower1]} and ${PORT[follower2]}"
for n in "${NODES[@]}"; do
  as_pg "$PGBIN/initdb" -D "$WORK/$n" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -l "$WORK/$n.log" -w -o "-p ${PORT[$n]} -k $WORK \
    -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
done

# pgbench with the TPC-B workload; its output goes to $WORK/pgbench-<name>.log.
# Sets TPS and FAILED; returns pgbench's exit status.
tpcb() { # name url
  local log="$WORK/pgbench-$1.log" rc=0
  timeout $((DURATION + 120)) "$PGBIN/pgbench" -n -c "$CLIENTS" -j "$THREADS" -T "$DURATION" "$2" >"$log" 2>&1 || rc=$?
  TPS=$(awk '/^tps = / {print $3; exit}' "$log")
  FAILED=$(awk -F': ' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$log")
  TPS=${TPS:-0}; FAILED=${FAILED:-?}
  printf '   %s: %.0f TPS, failed transactions: %s%s\n' "$1" "$TPS" "$FAILED" "$([ $rc = 0 ] || echo ", pgbench exit $rc")"
  if [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
    echo "   pgbench errors ($log):"; grep -iE 'error|abort|fail' "$log" | sort | uniq -c | sort -rn | head -10 | sed 's/^/     /'
  fi
  return "$rc"
}

# ---------------------------------------------------------------- direct
echo "== direct: pgbench -i -s $SCALE and TPC-B on the leader (database direct)"
q leader postgres "CREATE DATABASE direct" >/dev/null
"$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "${PORT[leader]}" -U postgres direct >"$WORK/pgbench-init-direct.log" 2>&1
checkpoint_all
tpcb direct "postgres://postgres@127.0.0.1:${PORT[leader]}/direct"
declare -A RESULT_TPS LAG50 LAG99 NOTE
RESULT_TPS[direct]=$TPS

# ---------------------------------------------------------------- chorus
echo "== building chorus (release)"
(cd "$ROOT" && cargo build --release --bin chorus -q)

write_chorus_config() { # ack mode [followers: 0 for none]
  local followers=${2:-2} n
  {
    cat <<TOML
[listen]
postgres = "127.0.0.1:$CHORUS_PORT"
[replication]
ack = "$1"
ack_timeout = "5s"
log_retention = "1h"
databases = ["bench"]
${BENCH_REPLICATION:-}
[[users]]
name = "bench"
password = "bench"
TOML
    for n in "${NODES[@]:0:$((followers + 1))}"; do
      cat <<TOML
[[nodes]]
name = "$n"
role = "$([ "$n" = leader ] && echo leader || echo follower)"
host = "127.0.0.1"
port = ${PORT[$n]}
user = "postgres"
TOML
    done
  } > "$WORK/chorus.toml"
}
start_chorus() { # ack mode
  write_chorus_config "$1"
  echo "---- chorus ack = $1 ($(date +%T))" >>"$WORK/chorus.log"
  NO_COLOR=1 RUST_LOG=warn "$CHORUS_BIN" run --config "$WORK/chorus.toml" >>"$WORK/chorus.log" 2>&1 &
  CHORUS_PID=$!
  wait_port "$CHORUS_PORT"
}
stop_chorus() {
  kill "$CHORUS_PID"; wait "$CHORUS_PID" || true; CHORUS_PID=
}
# Wait for the followers (chorus verify waits until they have applied the
# leader's LSN, then compares every table of bench); print its verdict.
verify_bench() { # label
  local rc=0
  "$CHORUS_BIN" verify --config "$WORK/chorus.toml" -d bench --wait 10m >"$WORK/verify-$1.log" 2>&1 || rc=$?
  echo "   chorus verify -d bench: exit $rc: $(tail -1 "$WORK/verify-$1.log")"
  [ "$rc" = 0 ] || { sed 's/^/     /' "$WORK/verify-$1.log" | head -20; NOTE[$1]="verify exit $rc"; }
  return 0
}
leader_lsn() { q leader bench "SELECT lsn FROM _chorus.lsn"; }

# Apply lag of the LSNs in (from, to]: per LSN and follower, the follower's
# applied_at of the header row minus the leader's committed_at, in ms.
apply_lag() { # label from to
  local label=$1 from=$2 to=$3 sql
  sql="SELECT lsn, extract(epoch FROM %s) FROM _chorus.log WHERE seq = 0 AND lsn > $from AND lsn <= $to"
  # shellcheck disable=SC2059
  q leader bench "$(printf "$sql" committed_at)" >"$WORK/lag-$label-leader.txt"
  for f in follower1 follower2; do
    # shellcheck disable=SC2059
    q "$f" bench "$(printf "$sql" applied_at)" >"$WORK/lag-$label-$f.txt"
  done
  python3 - "$WORK/lag-$label" "$((to - from))" <<'PY' >"$WORK/lag-$label.out"
import sys
base, expected = sys.argv[1], int(sys.argv[2])
def load(name):
    with open(f"{base}-{name}.txt") as f:
        return {int(l.split("|")[0]): float(l.split("|")[1]) for l in f if l.strip()}
leader = load("leader")
def pct(xs, p):  # nearest rank
    return xs[max(0, min(len(xs) - 1, -(-len(xs) * p // 100) - 1))] if xs else float("nan")
every = []
for f in ("follower1", "follower2"):
    fol = load(f)
    lags = sorted((fol[l] - c) * 1000 for l, c in leader.items() if l in fol)
    every += lags
    missing = len(leader) - len(lags)
    print(f"   {f}: {len(lags)} transactions, p50 {pct(lags, 50):.1f} ms, p99 {pct(lags, 99):.1f} ms, "
          f"max {max(lags, default=float('nan')):.1f} ms" + (f", {missing} not applied" if missing else ""))
every.sort()
print(f"   both: {len(every)} (LSNs in the run: {expected}, in the leader's log: {len(leader)}), "
      f"p50 {pct(every, 50):.1f} ms, p99 {pct(every, 99):.1f} ms, max {max(every, default=float('nan')):.1f} ms")
print(f"RESULT {pct(every, 50):.1f} {pct(every, 99):.1f}")
PY
  grep -v '^RESULT' "$WORK/lag-$label.out"
  local p50 p99
  read -r _ p50 p99 < <(grep '^RESULT' "$WORK/lag-$label.out")
  LAG50[$label]=$p50; LAG99[$label]=$p99
}

echo "== chorus on $CHORUS_PORT: leader + 2 followers, replicating database bench"
q leader postgres "CREATE DATABASE bench" >/dev/null
start_chorus async
CHORUS_URL="postgres://bench:bench@127.0.0.1:$CHORUS_PORT/bench"
echo "   pgbench -i -s $SCALE through chorus"
t0=$(date +%s)
"$PGBIN/pgbench" -i -s "$SCALE" -q "$CHORUS_URL" >"$WORK/pgbench-init-chorus.log" 2>&1
t1=$(date +%s)
verify_bench init
echo "   (init took $((t1 - t0)) s, followers caught up and verified $(($(date +%s) - t1)) s later)"

for mode in ${BENCH_MODES:-async semi-sync sync}; do
  label="chorus-$mode"
  stop_chorus; start_chorus "$mode"
  echo "== chorus, ack = $mode: TPC-B through chorus"
  checkpoint_all
  from=$(leader_lsn)
  tpcb "$label" "$CHORUS_URL" || NOTE[$label]="pgbench failed"
  to=$(leader_lsn)
  RESULT_TPS[$label]=$TPS
  [ "$FAILED" = 0 ] || NOTE[$label]="${NOTE[$label]:+${NOTE[$label]}, }$FAILED failed transactions"
  verify_bench "$label"
  echo "   apply lag of LSNs $((from + 1))..$to:"
  apply_lag "$label" "$from" "$to"
done
stop_chorus
sed 's/\x1b\[[0-9;]*m//g' "$WORK/chorus.log" | grep -E '^[^ ]+ +(WARN|ERROR) ' >"$WORK/chorus-problems.log" || true
echo "   chorus.log: $(wc -l <"$WORK/chorus-problems.log") warning/error lines"
# Most frequent first, without the timestamp.
sed -E 's/^[^ ]+ +//' "$WORK/chorus-problems.log" | cut -c1-200 | sort | uniq -c | sort -rn | head -10 | sed 's/^/     /'

# ---------------------------------------------------------------- pgpool-II
# Native replication: pgpool sends every write to all three servers itself
# (the main node first), so there is no apply lag to measure.
run_pgpool() {
  local i=0
  POOL_SKIP=
  for n in "${NODES[@]}"; do
    q "$n" postgres "CREATE DATABASE pool" >/dev/null || { POOL_SKIP="cannot create database pool on $n"; return 1; }
  done
  {
    cat <<CONF
backend_clustering_mode = 'native_replication'
listen_addresses = '127.0.0.1'
port = $POOL_PORT
unix_socket_directories = '$WORK'
pcp_listen_addresses = ''
pcp_port = $PCP_PORT
pcp_socket_dir = '$WORK'
pid_file_name = '$WORK/pgpool.pid'
logdir = '$WORK'
log_destination = 'stderr'
num_init_children = 32
max_pool = 1
reserved_connections = 0
enable_pool_hba = off
pool_passwd = ''
load_balance_mode = off
replicate_select = off
insert_lock = on
failover_on_backend_error = off
health_check_period = 0
sr_check_period = 0
use_watchdog = off
memory_cache_enabled = off
CONF
    for n in "${NODES[@]}"; do
      cat <<CONF
backend_hostname$i = '127.0.0.1'
backend_port$i = ${PORT[$n]}
backend_weight$i = 1
backend_data_directory$i = '$WORK/$n'
backend_flag$i = 'DISALLOW_TO_FAILOVER'
CONF
      i=$((i + 1))
    done
  } >"$WORK/pgpool.conf"
  : >"$WORK/pcp.conf"; : >"$WORK/pool_hba.conf"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK"/pgpool.conf "$WORK"/pcp.conf "$WORK"/pool_hba.conf
  # pgpool runs as postgres, like the servers (it would run as root, but need not).
  as_pg pgpool -n -f "$WORK/pgpool.conf" -F "$WORK/pcp.conf" -a "$WORK/pool_hba.conf" >"$WORK/pgpool.log" 2>&1 &
  POOL_PID=$!
  wait_port "$POOL_PORT" 2>/dev/null || { POOL_SKIP="pgpool did not start, see $WORK/pgpool.log"; return 1; }
  local url="postgres://postgres@127.0.0.1:$POOL_PORT/pool"
  echo "   pgbench -i -s $SCALE through pgpool-II"
  timeout 600 "$PGBIN/pgbench" -i -s "$SCALE" -q "$url" >"$WORK/pgbench-init-pgpool.log" 2>&1 \
    || { POOL_SKIP="pgbench -i through pgpool failed, see $WORK/pgbench-init-pgpool.log"; return 1; }
  checkpoint_all
  tpcb pgpool "$url" || NOTE[pgpool]="pgbench failed"
  RESULT_TPS[pgpool]=$TPS
  [ "$FAILED" = 0 ] || NOTE[pgpool]="${NOTE[pgpool]:+${NOTE[pgpool]}, }$FAILED failed transactions"
  stop_pgpool
  # The three copies, read on each server directly.
  local sums=() first
  for n in "${NODES[@]}"; do
    sums+=("$(q "$n" pool "SELECT 'accounts ' || count(*) || '/' || sum(abalance)
      || ', history ' || (SELECT count(*) || '/' || coalesce(sum(delta), 0) FROM pgbench_history)
      || ', tellers ' || (SELECT sum(tbalance) FROM pgbench_tellers)
      || ', branches ' || (SELECT sum(bbalance) FROM pgbench_branches) FROM pgbench_accounts")")
    echo "   $n: ${sums[-1]}"
  done
  first=${sums[0]}
  if [ "${sums[1]}" = "$first" ] && [ "${sums[2]}" = "$first" ]; then
    echo "   pgpool-II copies: match (count/sum of accounts, history; sums of tellers, branches)"
  else
    echo "   pgpool-II copies: MISMATCH"; NOTE[pgpool]="${NOTE[pgpool]:+${NOTE[pgpool]}, }copies differ"
  fi
}
# ---------------------------------------------------------------- calibration
if [ "${BENCH_CALIBRATE:-1}" != 0 ]; then
  echo "== calibration: pgbouncer (session pooling) in front of the leader's database direct, no replication"
  cat >"$WORK/pgbouncer.ini" <<INI
[databases]
direct = host=127.0.0.1 port=${PORT[leader]} dbname=direct user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $WORK/pgbouncer.log
INI
  echo '"postgres" ""' >"$WORK/userlist.txt"
  [ "$(id -u)" = 0 ] && chown postgres "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
  as_pg pgbouncer -q "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 &
  BOUNCER_PID=$!
  if wait_port "$BOUNCER_PORT"; then
    checkpoint_all
    tpcb pgbouncer "postgres://postgres@127.0.0.1:$BOUNCER_PORT/direct" || NOTE[pgbouncer]="pgbench failed"
    RESULT_TPS[pgbouncer]=$TPS
  else
    NOTE[pgbouncer]="pgbouncer did not start, see $WORK/pgbouncer.out"
  fi
  kill "$BOUNCER_PID" 2>/dev/null; wait "$BOUNCER_PID" 2>/dev/null || true; BOUNCER_PID=

  echo "== calibration: chorus with the leader as its only node (database solo: proxy and log, no followers)"
  q leader postgres "CREATE DATABASE solo" >/dev/null
  write_chorus_config async 0
  sed -i 's/^databases = \["bench"\]/databases = ["solo"]/' "$WORK/chorus.toml"
  NO_COLOR=1 RUST_LOG=warn "$CHORUS_BIN" run --config "$WORK/chorus.toml" >>"$WORK/chorus.log" 2>&1 &
  CHORUS_PID=$!
  wait_port "$CHORUS_PORT"
  SOLO_URL="postgres://bench:bench@127.0.0.1:$CHORUS_PORT/solo"
  "$PGBIN/pgbench" -i -s "$SCALE" -q "$SOLO_URL" >"$WORK/pgbench-init-solo.log" 2>&1
  checkpoint_all
  tpcb chorus-solo "$SOLO_URL" || NOTE[chorus-solo]="pgbench failed"
  RESULT_TPS[chorus-solo]=$TPS
  stop_chorus
fi

echo "== pgpool-II $(pgpool --version 2>&1 | awk '{print $3}') on $POOL_PORT: native replication over the three servers (database pool)"
if [ "${BENCH_PGPOOL:-1}" = 0 ]; then
  NOTE[pgpool]="skipped: BENCH_PGPOOL=0"
elif ! run_pgpool; then
  echo "pgpool-II: skipped ($POOL_SKIP)"
  NOTE[pgpool]="skipped: $POOL_SKIP"
fi
stop_pgpool

# ---------------------------------------------------------------- summary
echo
printf '%-28s %10s %10s %12s %12s  %s\n' target TPS ratio "lag p50 ms" "lag p99 ms" note
row() { # key label
  local tps=${RESULT_TPS[$1]:-}
  if [ -z "$tps" ]; then printf '%-28s %10s %10s %12s %12s  %s\n' "$2" - - - - "${NOTE[$1]:-}"; return; fi
  awk -v l="$2" -v t="$tps" -v d="${RESULT_TPS[direct]}" -v p50="${LAG50[$1]:--}" -v p99="${LAG99[$1]:--}" \
    -v note="${NOTE[$1]:-}" 'BEGIN { printf "%-28s %10.0f %10.2f %12s %12s  %s\n", l, t, t / d, p50, p99, note }'
}
row direct "direct (leader only)"
row chorus-async "chorus ack=async"
row chorus-semi-sync "chorus ack=semi-sync"
row chorus-sync "chorus ack=sync"
row pgpool "pgpool-II native_replication"
row pgbouncer "pgbouncer, no replication"
row chorus-solo "chorus, no followers"
echo "(TPC-B, $CLIENTS clients, $THREADS threads, scale $SCALE, $DURATION s per run; $(nproc) CPUs, all servers and"
echo " proxies on this one machine; figures from one run. Lag: follower applied_at - leader committed_at"
echo " per transaction of that run, over both followers. Elapsed: $(($(date +%s) - STARTED)) s)"
