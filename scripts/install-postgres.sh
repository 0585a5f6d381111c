#!/usr/bin/env bash
# What a Synapse on PostgreSQL needs here (`npm run bench -- --postgres`, src/devtools/local-postgres.ts):
# Debian's PostgreSQL server binaries, and the psycopg2 driver inside the Synapse virtualenv.
# Idempotent; the cluster itself is created per run, throwaway, under .cache/postgres/.
set -euo pipefail
PSYCOPG2_VERSION="${PSYCOPG2_VERSION:-2.9.13}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SYNAPSE_VENV:-$ROOT/.cache/synapse-venv}"

bash "$ROOT/scripts/install-synapse.sh"
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "PostgreSQL's server binaries are missing: install Debian's postgresql package (apt-get install postgresql)" >&2
    exit 1
  fi
  echo "installing Debian's postgresql (once)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
exec 9>"$VENV.lock"
flock 9
if ! "$VENV/bin/python" -c "import psycopg2" 2>/dev/null; then
  echo "installing psycopg2-binary $PSYCOPG2_VERSION into $VENV (once)" >&2
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "psycopg2-binary==$PSYCOPG2_VERSION" >&2
fi
