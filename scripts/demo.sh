#!/usr/bin/env bash
# Bring up the local demo: a PostgreSQL leader, followers and chorus in front of
# them. Extra arguments go to `chorus demo` (--dir DIR, --followers N).
# Runs in the foreground; Ctrl-C stops everything. Scripts can wait for
# DIR/demo.env (default /var/tmp/chorus-demo/demo.env) and `source` it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
exec cargo run --release -- demo "$@"
