#!/usr/bin/env bash
# SCIM at scale: one tenant with USERS SCIM users (100,000 by default), then
# filtered, paginated lists through `tollgate up` (gateway and backend, over
# loopback HTTP) on embedded SQLite and on a throwaway PostgreSQL: p50 and
# p99 of one client in a loop for DURATION seconds per query, with how many
# users each filter matches. Loopback only, stops by itself.
#
# Usage: bench/scim-scale.sh   (USERS=100000 DURATION=5, RECORD=0 to not append)
set -euo pipefail
cd "$(dirname "$0")/.."

USERS="${USERS:-100000}"
DURATION="${DURATION:-5}"
RECORD="${RECORD:-1}"

# shellcheck source=bench/common.sh
. bench/common.sh
# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh
echo "building release binaries"
cargo build --release -q --bin tollgate
cargo build --release -q -p tollgate-bench --bin scim-seed
BIN="${CARGO_TARGET_DIR:-target}/release"
quote() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
ROWS=()

# measure KIND DATABASE_URL: seeds a tenant on that database and lists.
measure() {
local kind="$1" db="$2" dir port pid
dir="$WORK/$kind"
mkdir -p "$dir"
port=$(free_port)
cat > "$dir/tollgate.toml" <<CONF
demo = false
[gateway.rate_limits]
per_ip = 0
per_user = 0
CONF
local cli store
cli=(--config "$dir/tollgate.toml")
store=(--data-dir "$dir/data")
[ -n "$db" ] && store+=(--database-url "$db")
TOLLGATE_LOG=warn "$BIN/tollgate" "${cli[@]}" up --listen "127.0.0.1:$port" "${store[@]}" \
    >"$dir/out.log" 2>"$dir/err.log" &
pid=$!; PIDS+=("$pid")
wait_port "$port"
local B scim started S
B="http://127.0.0.1:$port/api/v1"
sign_up "$B" owner@scale.test Scale
"$BIN/tollgate" "${cli[@]}" platform-admin grant owner@scale.test "${store[@]}" >/dev/null
scim=$(scim_token "$B")
echo "$kind: seeding $USERS SCIM users"
started=$SECONDS
"$BIN/scim-seed" "${db:-sqlite:$dir/data/tollgate.db}" "$TENANT" "$USERS"
echo "$kind: seeded in $((SECONDS - started)) s"
if [ -n "$db" ]; then
    # What autovacuum would do within a minute: statistics for the planner.
    PGPASSWORD=tollgate-superuser-pw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d scale -q \
        -c "ANALYZE scim_users, scim_user_values"
fi
S="http://127.0.0.1:$port/scim/v2/Users"
# The moment after which the last 1% of the users were written.
local late since
late=$(( USERS - USERS / 100 ))
since=$(curl -sf "$S?filter=$(quote "userName eq \"user$late@scale.test\"")" -H "authorization: Bearer $scim" |
    json '["Resources"][0]["meta"]["created"]')
local q name filter
for q in "userName eq|userName eq \"user$((USERS / 2))@scale.test\"" \
         "emails[type eq \"work\"].value co|emails[type eq \"work\"].value co \"@corp7.test\"" \
         "meta.lastModified gt|meta.lastModified gt \"$since\""; do
    name="${q%%|*}"; filter="${q#*|}"
    local url total out p50 p99 rps
    url="$S?filter=$(quote "$filter")&startIndex=1&count=50"
    total=$(curl -sf "$url" -H "authorization: Bearer $scim" | json '["totalResults"]')
    out=$(wrk -t1 -c1 -d"${DURATION}s" --latency -H "authorization: Bearer $scim" "$url")
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    ROWS+=("| $kind | \`$filter\` | $total | $p50 | $p99 | $rps |")
    echo "  $kind, $name: $total matches, p50 $p50, p99 $p99"
done
kill "$pid"; wait "$pid" 2>/dev/null || true
}

measure sqlite ""
PGBIN="$(find_pg_bin || true)"
if [ -n "$PGBIN" ]; then
    start_postgres "$PGBIN"
    trap 'stop_postgres; cleanup' EXIT
    PGPASSWORD=tollgate-superuser-pw "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -q \
        -c "CREATE DATABASE scale OWNER tollgate"
    measure postgres "postgres://tollgate:tollgate@127.0.0.1:$PG_PORT/scale"
else
    echo "PostgreSQL binaries not found: SQLite only" >&2
fi

report_start "SCIM scale"
{
    echo "Command: \`USERS=$USERS DURATION=$DURATION bench/scim-scale.sh\`"
    echo "(one tenant with $USERS SCIM users; \`GET /scim/v2/Users?filter=...&startIndex=1&count=50\` through the gateway,"
    echo "wrk 1 thread, 1 connection, ${DURATION}s per query; totalResults counted by the same request;"
    echo "PostgreSQL analyzed after seeding, as autovacuum would within a minute)."
    echo
    echo "| database | filter | matches | p50 | p99 | req/s |"
    echo "|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >>"$REPORT"
record_report
