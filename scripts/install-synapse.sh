#!/usr/bin/env bash
# Installs a pinned Synapse from PyPI into a virtualenv that is cached between runs.
# Tests and the demo start it on loopback with a throwaway SQLite database (test/harness/synapse.ts).
set -euo pipefail
SYNAPSE_VERSION="${SYNAPSE_VERSION:-1.163.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${SYNAPSE_VENV:-$ROOT/.cache/synapse-venv}"
PY="${PYTHON:-python3}"

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('matrix-synapse') == '$SYNAPSE_VERSION' else 1)" 2>/dev/null
}
installed && exit 0
# Test files run in parallel processes and each may get here on a fresh machine: one installs, the
# others wait for it and then find it installed.
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
installed && exit 0
echo "installing matrix-synapse $SYNAPSE_VERSION into $VENV (once; cached afterwards)" >&2
rm -rf "$VENV.tmp"
"$PY" -m venv "$VENV.tmp"
"$VENV.tmp/bin/pip" install --quiet --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" >&2
rm -rf "$VENV"
mv "$VENV.tmp" "$VENV"
# venv scripts carry absolute shebangs to the .tmp path: run everything as "$VENV/bin/python -m ..."
"$VENV/bin/python" -c "import importlib.metadata as m; print('matrix-synapse', m.version('matrix-synapse'))" >&2
