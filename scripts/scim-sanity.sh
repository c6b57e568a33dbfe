#!/usr/bin/env bash
# Runs the independent SCIM conformance probe `scim-sanity` (from PyPI)
# against a throwaway `tollgate up` on loopback: a tenant on the enterprise
# plan, a SCIM token, then `scim-sanity probe` (which creates, changes and
# deletes users and groups). Extra arguments go to the probe.
#
# Usage: scripts/scim-sanity.sh [--compat ...]
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=$(mktemp -d)
VENV="${SCIM_SANITY_VENV:-target/scim-sanity-venv}"
if [ ! -x "$VENV/bin/scim-sanity" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q scim-sanity
fi
cargo build -q --bin tollgate
BIN="${CARGO_TARGET_DIR:-target}/debug/tollgate"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" up --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" >"$WORK/out.log" 2>"$WORK/err.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.1; done

B="http://127.0.0.1:$PORT/api/v1"
# shellcheck source=scripts/api.sh
. scripts/api.sh
sign_up "$B" owner@sanity.test Sanity
"$BIN" platform-admin grant owner@sanity.test --data-dir "$WORK/data" >/dev/null
SCIM=$(scim_token "$B")
"$VENV/bin/scim-sanity" probe "http://127.0.0.1:$PORT/scim/v2" --token "$SCIM" --i-accept-side-effects "$@"
