#!/usr/bin/env bash
# MySQL benchmark: sysbench oltp_read_only and oltp_read_write directly on a
# MariaDB leader and through chorus replicating to two followers, in one run.
#
#   bash bench/sysbench.sh [SECONDS] [THREADS]     (default 10 s per run, 8 threads)
#
# Prints TPS and p95 latency per (workload, target), chorus's ratio to direct,
# and how far the followers were behind: sampled every 200 ms during each
# chorus run (in transactions: leader LSN minus the follower's applied LSN)
# and how long they took to catch up after it; then `chorus verify`. The
# direct runs use a database of their own on the leader (not replicated).
# Needs MariaDB server binaries and sysbench (installed when run as root).
set -euo pipefail
DURATION=${1:-10}
THREADS=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
ensure_packages mariadb-server mariadb-client sysbench

WORK="$ROOT/target/bench-sysbench"
rm -rf "$WORK"; mkdir -p "$WORK"
CHORUS_PORT=$(free_port)
PORTS=($(free_port) $(free_port) $(free_port))
PIDS=()
cleanup() {
  set +e
  [ -n "${CHORUS_PID:-}" ] && kill "$CHORUS_PID" 2>/dev/null
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT

sql() { mariadb --no-defaults -h 127.0.0.1 -P "$1" -ubench -pbench -N -B -e "$2"; }
echo "== starting 3 MariaDB servers on ${PORTS[*]}"
mariadb-install-db --no-defaults --datadir="$WORK/template" --user=root --auth-root-authentication-method=normal \
  --skip-test-db >"$WORK/install.log" 2>&1
for i in 0 1 2; do
  cp -a "$WORK/template" "$WORK/data$i"
  /usr/sbin/mariadbd --no-defaults --datadir="$WORK/data$i" --port="${PORTS[$i]}" --bind-address=127.0.0.1 \
    --socket="$WORK/s$i.sock" --pid-file="$WORK/m$i.pid" --user=root --log-error="$WORK/mysqld$i.log" \
    --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=256M \
    --innodb-flush-log-at-trx-commit=2 --character-set-server=utf8mb4 &
  PIDS+=($!)
done
for i in 0 1 2; do
  wait_port "${PORTS[$i]}"
  for _ in $(seq 1 100); do
    mariadb --no-defaults -S "$WORK/s$i.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  mariadb --no-defaults -S "$WORK/s$i.sock" -uroot -e \
    "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench'; GRANT ALL ON *.* TO 'bench'@'%' WITH GRANT OPTION"
done
sql "${PORTS[0]}" "CREATE DATABASE sbdirect"

echo "== building and starting chorus on $CHORUS_PORT (leader + 2 followers)"
(cd "$ROOT" && cargo build --release --bin chorus -q)
{
  echo "[listen]"; echo "mysql = \"127.0.0.1:$CHORUS_PORT\""
  for i in 0 1 2; do
    role=follower; [ "$i" = 0 ] && role=leader
    printf '[[nodes]]\nname = "node%s"\ndialect = "mysql"\nrole = "%s"\nhost = "127.0.0.1"\nport = %s\nuser = "bench"\npassword = "bench"\n' \
      "$i" "$role" "${PORTS[$i]}"
  done
  printf '[[users]]\nname = "bench"\npassword = "bench"\n'
} >"$WORK/chorus.toml"
RUST_LOG=warn "$ROOT/target/release/chorus" run --config "$WORK/chorus.toml" >"$WORK/chorus.log" 2>&1 &
CHORUS_PID=$!
wait_port "$CHORUS_PORT"
# Through chorus, so the database reaches the followers too.
sql "$CHORUS_PORT" "CREATE DATABASE sbtest"

sb() { # port db workload command...
  local port=$1 db=$2 workload=$3; shift 3
  sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user=bench \
    --mysql-password=bench --mysql-db="$db" --tables=4 --table-size=20000 "$workload" "$@"
}
echo "== sysbench prepare (4 tables x 20000 rows), directly and through chorus"
sb "${PORTS[0]}" sbdirect oltp_read_write prepare >/dev/null
sb "$CHORUS_PORT" sbtest oltp_read_write prepare >/dev/null

behind() { # the most any follower is behind the leader, in transactions
  local l f1 f2
  l=$(sql "${PORTS[0]}" "SELECT lsn FROM _chorus.lsn WHERE id = 1")
  f1=$(sql "${PORTS[1]}" "SELECT lsn FROM _chorus.applied WHERE id = 1")
  f2=$(sql "${PORTS[2]}" "SELECT lsn FROM _chorus.applied WHERE id = 1")
  echo $(( l - (f1 < f2 ? f1 : f2) ))
}
sample() { while :; do behind >>"$WORK/behind.$1"; sleep 0.2; done; }
catch_up() { # seconds until the followers have everything
  local start; start=$(date +%s.%N)
  while [ "$(behind)" -gt 0 ]; do sleep 0.05; done
  python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$start" "$(date +%s.%N)"
}

declare -A TPS
run() { # label port db workload
  local out tps p95
  out=$(sb "$2" "$3" "$4" --threads="$THREADS" --time="$DURATION" --report-interval=0 run)
  tps=$(echo "$out" | awk '/transactions:/ {gsub(/[()]/, "", $3); print $3}')
  p95=$(echo "$out" | awk '/95th percentile:/ {print $3}')
  TPS["$1 $4"]=$tps
  printf '%-8s %-16s %10s TPS   p95 %8s ms\n' "$1" "$4" "$tps" "$p95"
}
echo "== runs: $THREADS threads, $DURATION s each"
for w in oltp_read_only oltp_read_write; do
  run direct "${PORTS[0]}" sbdirect "$w"
  sample "$w" & SAMPLER=$!
  run chorus "$CHORUS_PORT" sbtest "$w"
  kill "$SAMPLER"; wait "$SAMPLER" 2>/dev/null || true
  lag=$(sort -n "$WORK/behind.$w" | awk '{a[NR]=$1} END {print "p50 " a[int(NR*0.5)+1] ", max " a[NR]}')
  echo "         followers behind during the run (transactions): $lag; caught up $(catch_up) s after it"
done
echo
echo "== chorus / direct (same servers, same run)"
for w in oltp_read_only oltp_read_write; do
  python3 -c "import sys; print(f'{sys.argv[1]:<16} {float(sys.argv[3])/float(sys.argv[2]):.2f}')" \
    "$w" "${TPS["direct $w"]}" "${TPS["chorus $w"]}"
done
echo
echo "== chorus verify -d sbtest"
"$ROOT/target/release/chorus" verify --config "$WORK/chorus.toml" -d sbtest | tail -3
