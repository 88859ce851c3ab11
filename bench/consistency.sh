#!/usr/bin/env bash
# Read-consistency benchmark: a 90% read / 10% write load through chorus
# with the default policy (read-your-writes + monotonic), against the leader
# alone and against chorus with eventual reads, in one run on the same
# servers.
#
#   bash bench/consistency.sh [SECONDS]        (default 15 s per run)
#
# Three PostgreSQL servers (leader + 2 followers) on free loopback ports,
# pgbench -i -s 10 through chorus (replicated to both followers). Then
# pgbench (8 clients, 2 threads) with two scripts in every client session:
#   read  (weight 9): SELECT one account by primary key;
#   write (weight 1): UPDATE one account, then read it back at once (the
#                     hard case for read-your-writes: the very next read
#                     needs the write on a follower, or the leader);
#   - directly on the leader: the baseline;
#   - through chorus, default policy;
#   - through chorus, consistency = ["eventual"] (no waiting, any follower).
# From chorus's Prometheus endpoint after each run: the share of reads
# followers served, fallbacks to the leader (and why), waits and their
# p50/p99 (from the histogram's buckets). Every chorus run ends with
# `chorus verify`. Needs PostgreSQL server binaries.
set -euo pipefail
DURATION=${1:-15}
CLIENTS=8
THREADS=2
SCALE=10
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
ensure_packages postgresql postgresql-client

PGBIN=$(pg_bindir)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CHORUS_BIN="$TARGET_DIR/release/chorus"
WORK="$ROOT/target/bench-consistency"
NODES=(leader follower1 follower2)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

cleanup() {
  local rc=$?
  set +e
  trap - ERR
  if [ -n "${CHORUS_PID:-}" ]; then kill "$CHORUS_PID" 2>/dev/null; wait "$CHORUS_PID" 2>/dev/null; fi
  for n in "${NODES[@]}"; do
    [ -f "$WORK/$n/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -m fast stop >/dev/null 2>&1
  done
  [ "$rc" = 0 ] || echo "FAILED (exit $rc). Logs in $WORK: chorus.log, <node>.log, pgbench-*.log, verify-*.log" >&2
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "error: line $LINENO: $BASH_COMMAND" >&2' ERR

for n in "${NODES[@]}"; do
  [ -f "$WORK/$n/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -m immediate stop >/dev/null 2>&1 || true
done
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

declare -A PORT
for n in "${NODES[@]}"; do PORT[$n]=$(free_port); done
CHORUS_PORT=$(free_port); METRICS_PORT=$(free_port)
q() { "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORT[$1]}" -U postgres -d "$2" -c "$3"; }

echo "== starting PostgreSQL: leader on ${PORT[leader]}, followers on ${PORT[follower1]} and ${PORT[follower2]}"
for n in "${NODES[@]}"; do
  as_pg "$PGBIN/initdb" -D "$WORK/$n" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$WORK/$n" -l "$WORK/$n.log" -w -o "-p ${PORT[$n]} -k $WORK \
    -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
done

cat >"$WORK/read.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL
cat >"$WORK/write.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
SQL

mixed() { # name url -> sets TPS
  local log="$WORK/pgbench-$1.log"
  timeout $((DURATION + 120)) "$PGBIN/pgbench" -n -c "$CLIENTS" -j "$THREADS" -T "$DURATION" \
    -f "$WORK/read.sql@9" -f "$WORK/write.sql@1" "$2" >"$log" 2>&1
  TPS=$(awk '/^tps = / {print $3; exit}' "$log")
  local failed
  failed=$(awk -F': ' '/^number of failed transactions/ {split($2, a, " "); print a[1]; exit}' "$log")
  printf '   %s: %.0f TPS (one script run = one transaction), failed: %s\n' "$1" "${TPS:-0}" "${failed:-?}"
}

echo "== building chorus (release)"
(cd "$ROOT" && cargo build --release --bin chorus -q)

start_chorus() { # label, extra [reads] lines
  cat >"$WORK/chorus.toml" <<TOML
[listen]
postgres = "127.0.0.1:$CHORUS_PORT"
[metrics]
listen = "127.0.0.1:$METRICS_PORT"
[replication]
databases = ["bench"]
[reads]
$2
[[nodes]]
name = "leader"
role = "leader"
host = "127.0.0.1"
port = ${PORT[leader]}
user = "postgres"
[[nodes]]
name = "follower1"
role = "follower"
host = "127.0.0.1"
port = ${PORT[follower1]}
user = "postgres"
[[nodes]]
name = "follower2"
role = "follower"
host = "127.0.0.1"
port = ${PORT[follower2]}
user = "postgres"
[[users]]
name = "bench"
password = "bench"
TOML
  echo "---- chorus $1 ($(date +%T))" >>"$WORK/chorus.log"
  NO_COLOR=1 RUST_LOG=warn "$CHORUS_BIN" run --config "$WORK/chorus.toml" >>"$WORK/chorus.log" 2>&1 &
  CHORUS_PID=$!
  wait_port "$CHORUS_PORT"
}
stop_chorus() { kill "$CHORUS_PID"; wait "$CHORUS_PID" || true; CHORUS_PID=; }
verify_bench() {
  local rc=0
  "$CHORUS_BIN" verify --config "$WORK/chorus.toml" -d bench --wait 10m >"$WORK/verify-$1.log" 2>&1 || rc=$?
  echo "   chorus verify -d bench: exit $rc: $(tail -1 "$WORK/verify-$1.log")"
  [ "$rc" = 0 ] || sed 's/^/     /' "$WORK/verify-$1.log" | head -20
}
# Reads served by followers, fallbacks, waits: from chorus's own counters.
report_metrics() { # label
  curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/metrics-$1.txt" 2>/dev/null \
    || python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics').read().decode())" >"$WORK/metrics-$1.txt"
  python3 - "$WORK/metrics-$1.txt" <<'PY'
import re, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("#") or not line.strip():
        continue
    key, value = line.rsplit(" ", 1)
    name, _, labels = key.partition("{")
    rows.append((name, dict(re.findall(r'(\w+)="([^"]*)"', labels)), float(value)))
def total(name, **want):
    return sum(v for n, l, v in rows if n == name and all(l.get(k) == x for k, x in want.items()))
follower = total("chorus_requests_total", route="follower")
fallback = total("chorus_requests_total", route="fallback")
reads = follower + fallback
print(f"   reads routed: {reads:.0f}, served by followers: {follower:.0f} ({100 * follower / max(reads, 1):.1f}%), "
      f"fell back to the leader: {fallback:.0f} ({100 * fallback / max(reads, 1):.1f}%)")
for n, l, v in rows:
    if n == "chorus_read_fallbacks_total" and v:
        print(f"     fallback reason: {l.get('reason')}: {v:.0f}")
waits = total("chorus_read_wait_seconds_count")
timed_out = total("chorus_read_waits_total", outcome="timed-out")
buckets = sorted((float(l["le"]) if l["le"] != "+Inf" else float("inf"), v)
                 for n, l, v in rows if n == "chorus_read_wait_seconds_bucket")
def quantile(q):
    if not waits:
        return float("nan")
    rank, prev_le, prev_c = q * waits, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le * 1000
            return (prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)) * 1000
        prev_le, prev_c = le, c
    return float("nan")
print(f"   reads that waited for a follower: {waits:.0f} ({100 * waits / max(reads, 1):.1f}% of reads), "
      f"timed out: {timed_out:.0f}; wait p50 {quantile(0.5):.2f} ms, p99 {quantile(0.99):.2f} ms")
print(f"RESULT {100 * follower / max(reads, 1):.1f} {100 * fallback / max(reads, 1):.1f} {100 * waits / max(reads, 1):.1f} {quantile(0.5):.2f} {quantile(0.99):.2f}")
PY
}

echo "== direct on the leader: pgbench -i -s $SCALE and the mixed load (database direct)"
q leader postgres "CREATE DATABASE direct" >/dev/null
"$PGBIN/pgbench" -i -s "$SCALE" -q -h 127.0.0.1 -p "${PORT[leader]}" -U postgres direct >"$WORK/pgbench-init-direct.log" 2>&1
mixed direct "postgres://postgres@127.0.0.1:${PORT[leader]}/direct"
DIRECT=$TPS

echo "== through chorus: pgbench -i -s $SCALE (database bench, replicated)"
q leader postgres "CREATE DATABASE bench" >/dev/null
start_chorus init ""
CHORUS_URL="postgres://bench:bench@127.0.0.1:$CHORUS_PORT/bench"
"$PGBIN/pgbench" -i -s "$SCALE" -q "$CHORUS_URL" >"$WORK/pgbench-init-chorus.log" 2>&1
verify_bench init
stop_chorus

declare -A RTPS RES
for policy in default eventual; do
  case $policy in
    default) lines="" ;;
    eventual) lines='consistency = ["eventual"]' ;;
  esac
  echo "== chorus, $policy reads: the mixed load"
  start_chorus "$policy" "$lines"
  mixed "chorus-$policy" "$CHORUS_URL"
  RTPS[$policy]=$TPS
  report_metrics "$policy" | tee "$WORK/report-$policy.txt" | grep -v '^RESULT'
  RES[$policy]=$(grep '^RESULT' "$WORK/report-$policy.txt" | cut -d' ' -f2-)
  stop_chorus
  verify_bench "$policy"
done

echo
echo "== summary ($DURATION s per run, $CLIENTS clients, 90% reads / 10% write + read back)"
printf '   %-28s %8s %7s %10s %10s %8s %9s %9s\n' "" TPS ratio followers% fallback% waited% wait-p50 wait-p99
printf '   %-28s %8.0f %7s\n' "direct on the leader" "$DIRECT" "1.00"
for policy in default eventual; do
  read -r fol fb wt p50 p99 <<<"${RES[$policy]}"
  printf '   %-28s %8.0f %7.2f %10s %10s %8s %8sms %8sms\n' "chorus, $policy" "${RTPS[$policy]}" \
    "$(python3 -c "print(${RTPS[$policy]} / $DIRECT)")" "$fol" "$fb" "$wt" "$p50" "$p99"
done
