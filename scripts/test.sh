#!/usr/bin/env bash
# Runs the whole test suite: SQLite always, and PostgreSQL on a throwaway
# cluster started here (a temp dir, a free loopback port, stopped on exit).
# Without PostgreSQL binaries the PostgreSQL tests are skipped, except in CI
# (CI set), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh

if [ -z "${TOLLGATE_TEST_DATABASE_URL:-}" ]; then
    bin="$(find_pg_bin || true)"
    if [ -n "$bin" ]; then
        start_postgres "$bin"
    elif [ -n "${CI:-}" ]; then
        echo "error: PostgreSQL binaries not found; CI must run the PostgreSQL tests" >&2
        exit 1
    else
        echo "warning: PostgreSQL binaries not found; running the SQLite tests only" >&2
    fi
fi

# The end-to-end tests talk to real protocol peers on Node.js (an OpenID
# Provider, a SAML identity provider, an SMTP server), installed from
# tests/peers' lockfile (again whenever it changes).
if ! cmp -s tests/peers/package-lock.json tests/peers/node_modules/.installed-lock.json; then
    npm ci --prefix tests/peers --no-audit --no-fund
    cp tests/peers/package-lock.json tests/peers/node_modules/.installed-lock.json
fi

# The end-to-end tests drive the real binary: build it (with the test
# targets, so both share one feature resolution) before running the suite.
cargo build --workspace --all-targets
cargo test --workspace "$@"
