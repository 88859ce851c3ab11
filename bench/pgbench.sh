#!/usr/bin/env bash
# Proxy overhead benchmark: pgbench select-only against the server directly,
# through chorus, and through pgbouncer, in one run on the same server.
#
#   bash bench/pgbench.sh [SECONDS]        (default 10 s per run)
#
# Prints TPS per (target, clients, protocol) and each proxy's ratio to direct.
# chorus fronts the single server as its leader with no followers, so every
# query pays chorus's full cost (classification, routing, relay) and nothing
# else differs. Needs PostgreSQL server binaries and pgbouncer (installed when
# run as root).
set -euo pipefail
DURATION=${1:-10}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/bench/lib.sh"
ensure_packages postgresql pgbouncer

PGBIN=$(pg_bindir)
WORK="$ROOT/target/bench-pgbench"
rm -rf "$WORK"; mkdir -p "$WORK"; chmod 755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$WORK"

PG_PORT=$(free_port); CHORUS_PORT=$(free_port); BOUNCER_PORT=$(free_port)
cleanup() {
  set +e
  [ -n "${CHORUS_PID:-}" ] && kill "$CHORUS_PID" 2>/dev/null
  [ -n "${BOUNCER_PID:-}" ] && kill "$BOUNCER_PID" 2>/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null 2>&1
}
trap cleanup EXIT

echo "== starting PostgreSQL on $PG_PORT"
as_pg "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
"$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "$PG_PORT" -U postgres postgres >/dev/null 2>&1

echo "== building and starting chorus on $CHORUS_PORT"
(cd "$ROOT" && cargo build --release --bin chorus -q)
cat > "$WORK/chorus.toml" <<TOML
[listen]
postgres = "127.0.0.1:$CHORUS_PORT"
[[nodes]]
name = "leader"
role = "leader"
host = "127.0.0.1"
port = $PG_PORT
user = "postgres"
[[users]]
name = "bench"
password = "bench"
TOML
RUST_LOG=warn "$ROOT/target/release/chorus" run --config "$WORK/chorus.toml" >"$WORK/chorus.log" 2>&1 &
CHORUS_PID=$!

echo "== starting pgbouncer on $BOUNCER_PORT"
cat > "$WORK/pgbouncer.ini" <<INI
[databases]
postgres = host=127.0.0.1 port=$PG_PORT user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $WORK/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 50
logfile = $WORK/pgbouncer.log
INI
echo '"bench" "bench"' > "$WORK/userlist.txt"
[ "$(id -u)" = 0 ] && chown postgres "$WORK"/pgbouncer.ini "$WORK"/userlist.txt
if [ "$(id -u)" = 0 ]; then runuser -u postgres -- pgbouncer -q "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 & else pgbouncer -q "$WORK/pgbouncer.ini" >"$WORK/pgbouncer.out" 2>&1 & fi
BOUNCER_PID=$!
wait_port "$CHORUS_PORT"; wait_port "$BOUNCER_PORT"

run() { # url clients mode -> tps
  PGPASSWORD=bench "$PGBIN/pgbench" -n -S -M "$3" -c "$2" -j "$(( $2 < 2 ? 1 : 2 ))" -T "$DURATION" "$1" 2>&1 \
    | awk '/^tps/ {print $3}' | head -1
}
DIRECT="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
CHORUS="postgres://bench:bench@127.0.0.1:$CHORUS_PORT/postgres"
BOUNCER="postgres://bench@127.0.0.1:$BOUNCER_PORT/postgres"

printf '\n%-8s %-8s %12s %12s %12s %10s %10s %14s\n' mode clients direct chorus pgbouncer chorus/dir bouncer/dir "chorus us/q+"
for mode in simple prepared; do
  for c in 1 16; do
    d=$(run "$DIRECT" $c $mode); ch=$(run "$CHORUS" $c $mode); b=$(run "$BOUNCER" $c $mode)
    awk -v m=$mode -v c=$c -v d="$d" -v ch="$ch" -v b="$b" 'BEGIN {
      printf "%-8s %-8s %12.0f %12.0f %12.0f %10.2f %10.2f %14.1f\n", m, c, d, ch, b, ch/d, b/d, (1e6/ch - 1e6/d) * c }'
  done
done
echo "(chorus us/q+: added latency per query, microseconds, at that concurrency)"
