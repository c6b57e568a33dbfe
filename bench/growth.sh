#!/usr/bin/env bash
# Growth: the full pipeline with many principals warm in the gateway's
# caches: TENANTS tenants (10,000 by default) with an owner each, and USERS
# members (1,000) of one more tenant, every request from a different person
# in turn. Reports req/s, latency, the policy stage's mean time (from the
# gateway's own histogram, which times admissions made anew: a request
# repeating one of the last second is admitted whole, without the stages)
# with the share of requests decided anew, and resident memory, beside one
# person's cached token in the same run. With CHURN=N the bench owner renames themself N
# times a second meanwhile: each rename is a change the liveness feed names,
# so the gateway drops its kept principals (and the renamed person's facts)
# at every reading, as writes elsewhere in a busy deployment make it do.
# Loopback only, stops by itself.
#
# Usage: bench/growth.sh   (TENANTS=10000 USERS=1000 DURATION=10 CHURN=0, RECORD=0 to not append)
set -euo pipefail
cd "$(dirname "$0")/.."

TENANTS="${TENANTS:-10000}"
USERS="${USERS:-1000}"
DURATION="${DURATION:-10}"
RECORD="${RECORD:-1}"
CHURN="${CHURN:-0}"

# shellcheck source=bench/common.sh
. bench/common.sh
need
build_release
ORIGIN=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
start_tollgate
bench_owner
echo "seeding $TENANTS tenants and $USERS members of one more"
"$TOOLS/seed" "sqlite:$WORK/data/tollgate.db" "$WORK/data/keys" "http://127.0.0.1:$TG" "$TENANTS" "$USERS" >"$WORK/all.txt"
head -n "$TENANTS" "$WORK/all.txt" >"$WORK/owners.txt"
tail -n "$USERS" "$WORK/all.txt" >"$WORK/members.txt"
rotate "$WORK/owners.txt"
rotate "$WORK/members.txt"
URL="http://127.0.0.1:$TG/tenant/x"
ROWS=()
measure() { # NAME WARM_SECS [wrk args...]
    local name="$1" warm="$2"; shift 2
    local out before after mean rss
    trim_logs
    # Warm the caches first: long enough to send every token once.
    wrk -t1 -c64 -d"${warm}s" "$@" "$URL" >/dev/null
    before=$(policy_stage)
    out=$(wrk -t1 -c64 -d"${DURATION}s" --latency "$@" "$URL")
    after=$(policy_stage)
    # policy_stage's sum and count, before ($1, $2) and after ($8, $9).
    mean=$(echo "$before $after" | awk '{ if ($9 > $2) printf "%.1f", ($8 - $1) / ($9 - $2) * 1e6; else print "—" }')
    local sent anew
    sent=$(echo "$out" | awk '/requests in/ {print $1}')
    anew=$(echo "$before $after $sent" | awk '{ if ($15 > 0) printf "%.1f%%", ($9 - $2) / $15 * 100; else print "—" }')
    rss=$(awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$TG_PID/status")
    local rps p50 p99 non2xx
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    ROWS+=("| $name | $rps | $p50 | $p99 | $mean | $anew | $rss | ${non2xx:-0} |")
    echo "  $name: $rps req/s, p50 $p50, policy stage ${mean} µs (decided anew: $anew), RSS ${rss} MiB"
}
if [ "$CHURN" != "0" ]; then
    pause=$(awk -v n="$CHURN" 'BEGIN { printf "%.3f", 1 / n }')
    # Stopped below, or by itself once the gateway is gone.
    (
        i=0
        while kill -0 "$TG_PID" 2>/dev/null; do
            i=$((i + 1))
            curl -sf -X PATCH "$B/me" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
                -d "{\"name\":\"Bench $i\"}" >/dev/null || true
            sleep "$pause"
        done
    ) &
    CHURN_PID=$!
    echo "churn: the bench owner renames themself $CHURN times a second"
fi
echo "measuring (${DURATION}s each, 64 connections)"
# A pass of the tokens at ~800 req/s (the slowest rate seen) takes this long.
warm_for() { echo $(( 3 + $1 / 800 )); }
measure "one person (cached JWT)" 3 -H "Authorization: Bearer $TOKEN"
measure "$TENANTS tenants, one owner each, in turn" "$(warm_for "$TENANTS")" -s "$WORK/owners.lua"
measure "$USERS members of one tenant, in turn" "$(warm_for "$USERS")" -s "$WORK/members.lua"
[ "$CHURN" != "0" ] && kill "$CHURN_PID"

report_start growth
{
    echo "Command: \`TENANTS=$TENANTS USERS=$USERS DURATION=$DURATION CHURN=$CHURN bench/growth.sh\`"
    echo "(wrk, 1 thread, 64 connections, after a warm-up pass sending every token; policy stage = the gateway's own histogram,"
    echo "of the requests decided anew: the rest were admitted whole, repeating one of the last second)."
    echo
    echo "| scenario | req/s | p50 | p99 | policy stage mean µs | decided anew | RSS MiB after | non-2xx |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >>"$REPORT"
record_report
