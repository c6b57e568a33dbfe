#!/usr/bin/env bash
# The soak: Tollgate's full pipeline (cached JWT, Cedar-checked tenant route,
# quota stage metering) held at about 70% of the capacity measured at the
# start, for SOAK_SECS (600 by default), with the gateway's resident memory
# sampled every 30 seconds. Memory is flat when the last sample is within
# 10% of the first one taken after warm-up. Loopback only, stops by itself.
#
# Usage: bench/soak.sh   (SOAK_SECS=600, SHARE=70 percent, RECORD=0 to not append)
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECS="${SOAK_SECS:-600}"
SHARE="${SHARE:-70}"
RECORD="${RECORD:-1}"
SAMPLE_SECS=30
CONNS=128

# shellcheck source=bench/common.sh
. bench/common.sh
need
build_release
ORIGIN=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
start_tollgate
bench_owner
URL="http://127.0.0.1:$TG/tenant/x"

capacity=$(wrk -t1 -c64 -d5s "$URL" -H "Authorization: Bearer $TOKEN" | awk '/Requests\/sec/ {printf "%.0f", $2}')
target=$(( capacity * SHARE / 100 ))
# wrk paces each connection with a delay (whole milliseconds) between its
# requests: a rate of about CONNS / (delay + latency). Enough connections
# that the delay is tens of milliseconds (so rounding it moves the rate by a
# few percent), and up to three 5-second trials, each correcting the delay
# by the latency it measured, until the rate is within 3% of the target.
pace() { # DELAY_MS
cat > "$WORK/pace.lua" <<LUA
request = function() return wrk.format("GET", "/tenant/x", { ["Authorization"] = "Bearer $TOKEN" }) end
delay = function() return $1 end
LUA
}
delay_ms=$(( CONNS * 1000 / (target > 0 ? target : 1) ))
for _ in 1 2 3; do
    pace "$delay_ms"
    trial=$(wrk -t1 -c"$CONNS" -d5s -s "$WORK/pace.lua" "$URL" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    echo "  trial: ${delay_ms} ms apart -> ${trial} req/s (target ${target})"
    if awk -v a="$trial" -v t="$target" 'BEGIN { exit !(a >= t * 0.97 && a <= t * 1.03) }'; then break; fi
    delay_ms=$(awk -v c="$CONNS" -v t="$target" -v a="$trial" -v d="$delay_ms" \
        'BEGIN { x = 1000 * c / t - (1000 * c / a - d); printf "%.0f", (x < 0 ? 0 : x) }')
done
pace "$delay_ms"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$TG_PID/status"; }
echo "capacity ${capacity} req/s; soaking at about ${target} req/s (${CONNS} connections, ${delay_ms} ms apart) for ${SOAK_SECS}s"
wrk -t1 -c"$CONNS" -d"${SOAK_SECS}s" --latency -s "$WORK/pace.lua" "$URL" >"$WORK/soak.out" &
WRK_PID=$!
samples=()
elapsed=0
while kill -0 "$WRK_PID" 2>/dev/null && [ "$elapsed" -lt "$SOAK_SECS" ]; do
    sleep "$SAMPLE_SECS"
    elapsed=$(( elapsed + SAMPLE_SECS ))
    samples+=("$(rss_kib)")
    trim_logs
    echo "  ${elapsed}s: RSS $(( ${samples[-1]} / 1024 )) MiB"
done
wait "$WRK_PID" || true
rps=$(awk '/Requests\/sec/ {printf "%.0f", $2}' "$WORK/soak.out")
p50=$(awk '$1 == "50%" {print $2}' "$WORK/soak.out")
p99=$(awk '$1 == "99%" {print $2}' "$WORK/soak.out")
non2xx=$(awk '/Non-2xx/ {print $5}' "$WORK/soak.out")
first="${samples[0]}"; last="${samples[-1]}"
max=$(printf '%s\n' "${samples[@]}" | sort -n | tail -1)
growth=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.1f", (b - a) * 100 / a }')
verdict=$(awk -v g="$growth" 'BEGIN { print (g <= 10 ? "flat" : "growing") }')
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
report_start soak
{
    echo "Command: \`SOAK_SECS=$SOAK_SECS SHARE=$SHARE bench/soak.sh\` (cached JWT on a"
    echo "Cedar-checked tenant route, quota stage metering; wrk, $CONNS connections paced ${delay_ms} ms apart)."
    echo
    echo "| capacity req/s | soak req/s | share | p50 | p99 | non-2xx | RSS first / last / max MiB | growth | verdict |"
    echo "|---|---|---|---|---|---|---|---|---|"
    echo "| $capacity | $rps | $(( (rps * 100 + capacity / 2) / capacity ))% | $p50 | $p99 | ${non2xx:-0} | $(mib "$first") / $(mib "$last") / $(mib "$max") | ${growth}% | $verdict |"
    echo
    echo "RSS every ${SAMPLE_SECS} s (MiB): $(for s in "${samples[@]}"; do printf '%s ' "$(mib "$s")"; done)"
} >>"$REPORT"
record_report
