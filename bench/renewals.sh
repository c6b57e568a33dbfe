#!/usr/bin/env bash
# Renewals: the policy stage of the requests decided anew (the rest are
# admitted whole, repeating one of the last second) for one person's cached
# JWT at 8 connections, in phases of DURATION seconds starting right after
# the bench's set-up. The liveness feed reads each change again for
# FEED_OVERLAP_SECS (10 s) after it was recorded, so the first phase has the
# set-up's changes named over and over (each reading drops the kept
# principals, and reloads the tenants it names) and the next ones none: the
# two show what a change costs the requests that follow it. Reports, per
# phase, the requests, how many were decided anew, the policy stage's
# histogram (from the gateway's own metrics) and the changes the feed named.
# Loopback only, stops by itself.
#
# Usage: bench/renewals.sh [DIR]   (DIR holding `tollgate` and `passthrough`
#        builds; default: the production build; PHASES=2 DURATION=10,
#        RECORD=0 to not append)
set -euo pipefail
cd "$(dirname "$0")/.."

PHASES="${PHASES:-2}"
DURATION="${DURATION:-10}"

# shellcheck source=bench/common.sh
. bench/common.sh
need
binaries "$@"
ORIGIN=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
start_tollgate
bench_owner
URL="http://127.0.0.1:$TG/tenant/x"

ROWS=()
for phase in $(seq 1 "$PHASES"); do
    before=$(policy_stage)
    sent=$(wrk -t1 -c8 -d"${DURATION}s" "$URL" -H "Authorization: Bearer $TOKEN" | awk '/requests in/ {print $1}')
    after=$(policy_stage)
    # policy_stage's fields before ($1-$7) and after ($8-$14), then the requests sent.
    row=$(echo "$before $after $sent" | awk -v phase="$phase" '{
        n = $9 - $2
        printf "| %d | %d | %d | %d | %d | %d | %d | %d | %s | %d |", phase, $15, n, $10 - $3, ($11 - $4) - ($10 - $3),
            ($12 - $5) - ($11 - $4), ($13 - $6) - ($12 - $5), n - ($13 - $6),
            (n > 0 ? sprintf("%.1f", ($8 - $1) / n * 1e6) : "—"), $14 - $7 }')
    ROWS+=("$row")
    echo "  phase $phase: $row"
done

report_start renewals
{
    echo "Command: \`PHASES=$PHASES DURATION=$DURATION bench/renewals.sh${GIVEN:-}\`"
    echo "(one person's cached JWT on a Cedar-checked tenant route; wrk, 1 thread, 8 connections, phases of ${DURATION} s"
    echo "from the end of the set-up; the policy stage of the requests decided anew, from the gateway's own histogram)."
    echo
    echo "| phase | requests | decided anew | ≤ 10 µs | 10-50 µs | 50-100 µs | 100-250 µs | > 250 µs | mean µs | changes named |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >>"$REPORT"
record_report
