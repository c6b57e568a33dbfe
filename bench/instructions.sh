#!/usr/bin/env bash
# Instructions per request: the passthrough and Tollgate's gateway each run
# under valgrind's callgrind, which counts the instructions a process
# executes (user space, all threads) instead of timing it, so the count for
# the same binary and requests is the same, within a fraction of a percent,
# on a quiet or a busy machine. It
# tells changes of a few percent apart that wall-clock runs here cannot (the
# same binary drifts by up to 30% between load runs). Loopback only; each
# scenario sends N requests over 8 connections and stops.
#
# Usage: bench/instructions.sh [DIR]   (DIR holding `tollgate` and
#        `passthrough` builds to count; default: the production build;
#        N=2000 requests per scenario; RECORD=0 to not append; KEEP=DIR
#        to keep the callgrind files there for callgrind_annotate;
#        CACHE_SIM=1 to also count simulated first-level cache misses)
# Prints, per scenario, thousands of instructions per request and the ratio
# to the passthrough, then where the gateway's instructions go for a cached
# JWT (inclusive, per hook of the proxy), and appends them to
# bench/RESULTS.md. valgrind reports a CPU without the SHA extensions, so
# SHA-256 runs in software here and its share (listed) is larger than on
# the machine itself. The cache misses of CACHE_SIM=1 are valgrind's model
# (first-level caches as the CPU reports them, no prefetcher): their ratios
# between the two processes, not their cost, are what they show.
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-2000}"
RECORD="${RECORD:-1}"
CACHE_SIM="${CACHE_SIM:-0}"
SIM=(); [ "$CACHE_SIM" = 1 ] && SIM=(--cache-sim=yes)

# shellcheck source=bench/common.sh
. bench/common.sh
if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
        echo "error: bench/instructions.sh needs valgrind (Debian: apt-get install valgrind)" >&2
        exit 1
    fi
fi
binaries "$@"
ORIGIN=$(free_port); PASS=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
# The bench tenant is set up with Tollgate running natively (password
# hashing under valgrind takes minutes), then Tollgate restarts counted.
start_tollgate
bench_owner
read -r LIMITED_TENANT LIMITED_KEY <<<"$(tenant_key limited@example.com Limited)"
enforce_limits "$LIMITED_TENANT"
kill -INT "$TG_PID"
wait "$TG_PID" || true

# wrk stops sending after N responses and says so in a file; it is then
# interrupted (it would otherwise wait out its duration), which ends it
# with its report.
cat >"$WORK/count.lua" <<LUA
local n = 0
response = function()
    n = n + 1
    if n == $N then
        wrk.thread:stop()
        io.open("$WORK/counted", "w"):close()
    end
end
LUA
send_counted() { # URL [wrk args...] -> wrk's report of N requests
    rm -f "$WORK/counted"
    wrk -t1 -c8 -d600s -s "$WORK/count.lua" "$@" >"$WORK/wrk.out" &
    local wrk_pid=$!
    while [ ! -e "$WORK/counted" ] && kill -0 "$wrk_pid" 2>/dev/null; do sleep 0.2; done
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" || true
    cat "$WORK/wrk.out"
}
counted() { # NAME COMMAND... : runs COMMAND under callgrind, collection off until asked
    local name="$1"; shift
    exec valgrind --tool=callgrind "${SIM[@]}" --instr-atstart=no --callgrind-out-file="$WORK/$name.%p" "$@" \
        >"$WORK/$name.log" 2>&1
}
counted passthrough "$BIN/passthrough" "127.0.0.1:$PASS" "127.0.0.1:$ORIGIN" 2 &
PIDS+=($!); PASS_PID=$!
TOLLGATE_LOG=info counted tollgate "$BIN/tollgate" --config "$WORK/tollgate.toml" up \
    --listen "127.0.0.1:$TG" --data-dir "$WORK/data" &
PIDS+=($!); TG_PID=$!
wait_port "$PASS"; wait_port "$TG"
# Under valgrind the gateway may take longer to serve than to listen.
for _ in $(seq 1 120); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TG/public/x")" = "200" ] && break
    sleep 1
done

declare -A TOTAL MISSES
# count NAME PID URL [wrk args...]: warms up, then counts N requests.
count() {
    local name="$1" pid="$2" url="$3"; shift 3
    send_counted "$@" "$url" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    callgrind_control -i on "$pid" >/dev/null 2>&1
    local out requests
    out=$(send_counted "$@" "$url")
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$name" "$pid" >/dev/null 2>&1
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    local file
    file=$(grep -l "^desc: Trigger: dump $name\$" "$WORK"/*.[0-9]*.[0-9]* | head -1)
    TOTAL[$name]=$(awk -v n="$requests" '/^totals:/ {printf "%.1f", $2 / n / 1000}' "$file")
    echo "  $name: ${TOTAL[$name]}k instructions per request ($requests requests)"
    if [ "$CACHE_SIM" = 1 ]; then
        # Thousands per request of the events I1mr, D1mr and D1mw, found by
        # name in the file's `events:` line.
        MISSES[$name]=$(awk -v n="$requests" '
            /^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
            /^totals:/ { printf "%.2f | %.2f | %.2f", $col["I1mr"] / n / 1000, $col["D1mr"] / n / 1000, $col["D1mw"] / n / 1000 }' "$file")
        echo "  $name: ${MISSES[$name]} k L1 instruction / data read / data write misses per request"
    fi
    eval "FILE_${name//-/_}=\"$file\""
}
echo "counting ($N requests per scenario, 8 connections)"
count passthrough "$PASS_PID" "http://127.0.0.1:$PASS/x"
count public "$TG_PID" "http://127.0.0.1:$TG/public/x"
count jwt "$TG_PID" "http://127.0.0.1:$TG/tenant/x" -H "Authorization: Bearer $TOKEN"
count key "$TG_PID" "http://127.0.0.1:$TG/tenant/x" -H "Authorization: Bearer $KEY"
count limited "$TG_PID" "http://127.0.0.1:$TG/tenant/x" -H "Authorization: Bearer $LIMITED_KEY"
count refused "$TG_PID" "http://127.0.0.1:$TG/tenant/x"

# Inclusive instructions per request of the functions matching a pattern
# (summed), from the cached-JWT dump.
# shellcheck disable=SC2154
hooks() {
    callgrind_annotate --inclusive=yes --threshold=100 "$FILE_jwt" 2>/dev/null |
        awk -v n="$N" -v pat="$1" 'index($0, pat) { v = $1; gsub(",", "", v); s += v } END { printf "%.1f", s / n / 1000 }'
}
report_start "instructions per request (callgrind)"
{
    echo "Command: \`$([ "$CACHE_SIM" = 1 ] && echo "CACHE_SIM=1 ")N=$N bench/instructions.sh${GIVEN:-}\` (valgrind --tool=callgrind${SIM[*]:+ ${SIM[*]}}; wrk, 1 thread, 8 connections,"
    echo "$N requests counted per scenario after a warm-up of as many; thousands of instructions per request"
    echo "of the proxy process, all its threads)."
    echo
    head="| scenario | k instructions / request | / passthrough |"; rule="|---|---|---|"
    if [ "$CACHE_SIM" = 1 ]; then
        head+=" k L1 instruction misses | k L1 data read misses | k L1 data write misses |"; rule+="---|---|---|"
    fi
    echo "$head"; echo "$rule"
    for name in passthrough public jwt key limited refused; do
        label=$name
        case $name in
            public) label="tollgate public route" ;;
            jwt) label="tollgate cached JWT" ;;
            key) label="tollgate API key" ;;
            limited) label="tollgate API key, limits enforced" ;;
            refused) label="tollgate 403 (anonymous on the tenant route)" ;;
        esac
        echo "| $label | ${TOTAL[$name]} | $(ratio "${TOTAL[$name]}" "${TOTAL[passthrough]}") |${MISSES[$name]:+ ${MISSES[$name]} |}"
    done
    echo
    echo "Cached JWT, inclusive k instructions per request of the gateway's hooks:"
    echo "request_filter $(hooks 'ProxyHttp>::request_filter::{{closure}}')"
    echo "(of which SHA-256 in software $(hooks 'sha2::sha256::compress256')),"
    echo "upstream_peer $(hooks 'ProxyHttp>::upstream_peer::{{closure}}'),"
    echo "upstream_request_filter $(hooks 'ProxyHttp>::upstream_request_filter::{{closure}}'),"
    echo "response_filter $(hooks 'ProxyHttp>::response_filter::{{closure}}'),"
    echo "logging $(hooks 'ProxyHttp>::logging::{{closure}}')."
} >>"$REPORT"
record_report
if [ -n "${KEEP:-}" ]; then
    mkdir -p "$KEEP"
    cp "$WORK"/passthrough.*.* "$WORK"/tollgate.*.* "$KEEP"/
    echo "callgrind files kept in $KEEP"
fi
