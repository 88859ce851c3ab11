#!/usr/bin/env bash
# MySQL proxy benchmark: sysbench oltp_read_only and oltp_read_write against a
# MariaDB server directly and through chorus, in one run on the same server.
#
#   bash bench/sysbench.sh [SECONDS] [THREADS]     (default 10 s per run, 8 threads)
#
# Prints TPS and latency per (workload, target) and chorus's ratio to direct.
# chorus fronts the server as its leader with no followers: every statement
# pays chorus's full relay cost and nothing else differs. (MySQL writes are
# not replicated by chorus yet, so there is no apply lag to report.) Needs
# MariaDB server binaries and sysbench (installed when run as root).
set -euo pipefail
DURATION=${1:-10}
THREADS=${2:-8}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
ensure_packages mariadb-server mariadb-client sysbench
# Debian starts the packaged server; the benchmark runs its own, and leaves a
# server that was already running alone.

WORK="$ROOT/target/bench-sysbench"
rm -rf "$WORK"; mkdir -p "$WORK"
DB_PORT=$(free_port); CHORUS_PORT=$(free_port)
cleanup() {
  set +e
  [ -n "${CHORUS_PID:-}" ] && kill "$CHORUS_PID" 2>/dev/null
  [ -n "${DB_PID:-}" ] && kill "$DB_PID" 2>/dev/null && wait "$DB_PID" 2>/dev/null
}
trap cleanup EXIT

echo "== starting MariaDB on $DB_PORT"
mariadb-install-db --no-defaults --datadir="$WORK/data" --user=root --auth-root-authentication-method=normal \
  --skip-test-db >"$WORK/install.log" 2>&1
/usr/sbin/mariadbd --no-defaults --datadir="$WORK/data" --port="$DB_PORT" --bind-address=127.0.0.1 \
  --socket="$WORK/mysqld.sock" --pid-file="$WORK/mysqld.pid" --user=root --log-error="$WORK/mysqld.log" \
  --skip-name-resolve --max-connections=500 --innodb-buffer-pool-size=512M --innodb-flush-log-at-trx-commit=2 \
  --character-set-server=utf8mb4 &
DB_PID=$!
wait_port "$DB_PORT"
for _ in $(seq 1 100); do
  mariadb --no-defaults -S "$WORK/mysqld.sock" -uroot -e "SELECT 1" >/dev/null 2>&1 && break
  sleep 0.1
done
mariadb --no-defaults -S "$WORK/mysqld.sock" -uroot -e \
  "CREATE USER 'bench'@'%' IDENTIFIED BY 'bench'; GRANT ALL ON *.* TO 'bench'@'%'; CREATE DATABASE sbtest"

echo "== building and starting chorus on $CHORUS_PORT"
(cd "$ROOT" && cargo build --release --bin chorus -q)
cat > "$WORK/chorus.toml" <<TOML
[listen]
mysql = "127.0.0.1:$CHORUS_PORT"
[[nodes]]
name = "leader"
dialect = "mysql"
role = "leader"
host = "127.0.0.1"
port = $DB_PORT
user = "bench"
password = "bench"
[[users]]
name = "bench"
password = "bench"
TOML
RUST_LOG=warn "$ROOT/target/release/chorus" run --config "$WORK/chorus.toml" >"$WORK/chorus.log" 2>&1 &
CHORUS_PID=$!
wait_port "$CHORUS_PORT"

sb() { # port workload command...
  local port=$1 workload=$2; shift 2
  sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$port" --mysql-user=bench \
    --mysql-password=bench --mysql-db=sbtest --tables=4 --table-size=20000 "$workload" "$@"
}
echo "== sysbench prepare (4 tables x 20000 rows)"
sb "$DB_PORT" oltp_read_write prepare >/dev/null

declare -A TPS
run() { # label port workload
  local out
  out=$(sb "$2" "$3" --threads="$THREADS" --time="$DURATION" --report-interval=0 run)
  local tps p95
  tps=$(echo "$out" | awk '/transactions:/ {gsub(/[()]/, "", $3); print $3}')
  p95=$(echo "$out" | awk '/95th percentile:/ {print $3}')
  TPS["$1 $3"]=$tps
  printf '%-8s %-16s %10s TPS   p95 %8s ms\n' "$1" "$3" "$tps" "$p95"
}
echo "== runs: $THREADS threads, $DURATION s each"
for w in oltp_read_only oltp_read_write; do
  run direct "$DB_PORT" "$w"
  run chorus "$CHORUS_PORT" "$w"
done
echo
echo "== chorus / direct (same server, same run)"
for w in oltp_read_only oltp_read_write; do
  python3 -c "import sys; print(f'{sys.argv[1]:<16} {float(sys.argv[3])/float(sys.argv[2]):.2f}')" \
    "$w" "${TPS["direct $w"]}" "${TPS["chorus $w"]}"
done
echo "apply lag: n/a (chorus does not replicate MySQL writes yet)"
