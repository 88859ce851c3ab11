#!/usr/bin/env bash
# THE test command of chorus (README, CI): installs what the tests need when it
# can, builds the workspace, runs every test against real servers.
#
#   bash scripts/test.sh [extra `cargo test` arguments, e.g. a test name filter]
#
# As root on Debian/Ubuntu it installs missing packages with apt-get; otherwise it
# says exactly what to install and exits non-zero. Tests start their own servers
# on free loopback ports (never the machine's own PostgreSQL) and stop them when
# they finish, also when they fail or are interrupted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

# --- what the tests need --------------------------------------------------
pg_bin_has() { # any /usr/lib/postgresql/*/bin holding all of "$@"
  local dir tool
  for dir in /usr/lib/postgresql/*/bin; do
    for tool in "$@"; do [ -x "$dir/$tool" ] || continue 2; done
    return 0
  done
  return 1
}

missing=()
pg_bin_has initdb postgres pgbench || missing+=(postgresql)
pg_bin_has psql || command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev) # ring (TLS) and the linker need a C toolchain
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip) # the Python client tests (psycopg, PyMySQL, from PyPI)
command -v javac >/dev/null 2>&1 || missing+=(default-jdk-headless)   # the JDBC client tests
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
[ -f /usr/share/java/mariadb-java-client.jar ] || missing+=(libmariadb-java) # MariaDB Connector/J
# MariaDB for the MySQL frontend's tests (they start servers of their own; the
# machine's MariaDB service is irrelevant). Debian keeps mariadbd in /usr/sbin.
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null 2>&1 || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
command -v sysbench >/dev/null 2>&1 || missing+=(sysbench) # the MySQL load-tool tests
command -v node >/dev/null 2>&1 || missing+=(nodejs)      # the Node.js client tests
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
  else
    echo "error: missing packages: ${missing[*]}" >&2
    echo "install them (Debian/Ubuntu):  sudo apt-get install -y ${missing[*]}" >&2
    echo "or run this script as root, which installs them itself." >&2
    exit 1
  fi
fi

# Python packages from PyPI: pip_need IMPORTS SPEC installs SPEC unless
# `import IMPORTS` works (Debian's Python wants --break-system-packages).
pip_need() {
  python3 -c "import $1" 2>/dev/null && return 0
  log "pip install $2"
  python3 -m pip install --quiet "$2" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "$2" || {
    echo "error: cannot install $2 from PyPI (python3 -m pip install '$2')" >&2
    exit 1
  }
}
# psycopg 3 for integration-tests/tests/python_clients.rs and python_orms.rs.
pip_need psycopg "psycopg[binary]>=3.1"
# PyMySQL ([rsa]: cryptography, for caching_sha2_password's full
# authentication) for integration-tests/tests/mysql_clients.rs and python_orms.rs.
pip_need "pymysql, cryptography" "PyMySQL[rsa]>=1.1"
# Django's and SQLAlchemy's ORMs on both dialects: integration-tests/tests/python_orms.rs.
pip_need django "Django>=4.2,<6"
pip_need sqlalchemy "SQLAlchemy>=2.0,<3"

# Node.js drivers (from npm, versions in integration-tests/node/package-lock.json)
# for integration-tests/tests/node_clients.rs.
if [ ! -d integration-tests/node/node_modules/mysql2 ] || [ ! -d integration-tests/node/node_modules/pg ]; then
  log "npm install (integration-tests/node)"
  npm install --prefix integration-tests/node --no-audit --no-fund --silent || {
    echo "error: cannot install the Node.js drivers from npm (npm install --prefix integration-tests/node)" >&2
    exit 1
  }
fi

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found. Install a current stable Rust toolchain (edition 2024):" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  exit 1
fi

# --- build and test -------------------------------------------------------
# Plain `cargo test`, not nextest: the harness shares one PostgreSQL cluster among
# the tests of a binary, which needs the tests to share a process.
log "cargo build --workspace"
cargo build --workspace
log "cargo test --workspace"
cargo test --workspace "$@"
log "all tests passed"
