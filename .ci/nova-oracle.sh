#!/usr/bin/env bash
# Install Nova 34.0.0's own nova-manage into .venv-nova (once; reused afterwards).
# The oracle tests (tests/integration/test_nova_oracle.py) run it next to novadb on
# the same data and compare end states. Prints the venv's python on stdout.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NOVADB_NOVA_VENV:-$ROOT/.venv-nova}"
if [ ! -x "$VENV/bin/nova-manage" ]; then
    echo "installing Nova 34.0.0 into $VENV (about 30 s) ..." >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check \
        -c "$ROOT/tests/oracle/nova-34-constraints.txt" nova==34.0.0 PyMySQL >&2
fi
"$VENV/bin/nova-manage" --version >/dev/null 2>&1
echo "$VENV/bin/nova-manage"
