#!/usr/bin/env bash
# Where the proxy's CPU time per request goes, beyond the one number of
# bench/load.sh: user and kernel time of its worker threads and of its
# other threads, and how often the workers are switched out (waiting:
# voluntary; preempted: involuntary), for the passthrough (given the cached
# JWT's request) and the gateway (cached JWT), in rounds at the same load.
# Then the same two with each proxy on CPU 0 alone and wrk and the origin on
# CPU 1: the workers share one core, so no cache line moves between cores
# and nothing else runs beside them; a ratio that holds there is the
# proxies' own work, not contention or the neighbours. Its ratios compare
# within one run; two builds are compared by bench/ab.sh (interleaved) or
# bench/instructions.sh, as separate runs drift by more than most changes.
# Loopback only; every measurement stops by itself.
#
# Usage: bench/split.sh [DIR]   (DIR holding `tollgate` and `passthrough`
#        builds; default: the production build; ROUNDS=3, DURATION=5,
#        CONNS=64, RECORD=0 to not append)
# Prints per round and scenario µs per request (user / kernel) of the
# workers and of the rest, and context switches per 1,000 requests, then
# the medians and their ratios to the passthrough, and appends them to
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-3}"; DURATION="${DURATION:-5}"; CONNS="${CONNS:-64}"; RECORD="${RECORD:-1}"

# shellcheck source=bench/common.sh
. bench/common.sh
binaries "$@"
[ "$(nproc)" -ge 2 ] || { echo "error: bench/split.sh needs two CPUs" >&2; exit 1; }
ORIGIN=$(free_port); PASS=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
"$BIN/passthrough" "127.0.0.1:$PASS" "127.0.0.1:$ORIGIN" 2 >"$WORK/passthrough.log" 2>&1 &
PIDS+=($!); PASS_PID=$!
start_tollgate
bench_owner
wait_port "$PASS"

# threads PID: one line per thread: "TID worker|other utime stime
# voluntary involuntary" (clock ticks and switches so far; pingora's
# workers are its HTTP service's threads).
threads() {
    local task name
    for task in /proc/"$1"/task/*; do
        name=$(cat "$task/comm" 2>/dev/null) || continue
        case $name in "Pingora HTTP"*) name=worker ;; *) name=other ;; esac
        # The fields after the command's closing parenthesis: utime and
        # stime are the 12th and 13th.
        echo "${task##*/} $name $(sed 's/.*) //' "$task/stat" | awk '{print $12, $13}') $(awk '
            /^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2} END {print v, n}' "$task/status")"
    done
}
# split PID URL [wrk args...] -> "worker-user worker-kernel other-user
# other-kernel voluntary involuntary": µs per request and the workers'
# switches per 1,000 requests over DURATION seconds at CONNS connections.
split() {
    local pid="$1" url="$2"; shift 2
    local before after out requests
    trim_logs
    before=$(threads "$pid")
    out=$("${WRK[@]}" -t1 -c"$CONNS" -d"${DURATION}s" "$@" "$url")
    after=$(threads "$pid")
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    if [ -z "${requests:-}" ] || [ "$requests" = 0 ]; then
        echo "error: no requests completed against $url" >&2
        return 1
    fi
    # Threads that came or went between the readings are left out: they
    # sum to nothing either way.
    printf '%s\n--\n%s\n' "$before" "$after" | awk -v n="$requests" -v clk="$CLK" '
        $1 == "--" { after = 1; next }
        !after { seen[$1] = $3 " " $4 " " $5 " " $6; next }
        $1 in seen {
            split(seen[$1], b, " "); k = $2
            u[k] += $3 - b[1]; t[k] += $4 - b[2]; if (k == "worker") { v += $5 - b[3]; i += $6 - b[4] }
        }
        END { us = 1e6 / clk / n;
              printf "%.1f %.1f %.1f %.1f %.0f %.0f\n", u["worker"] * us, t["worker"] * us, u["other"] * us, t["other"] * us, v * 1000 / n, i * 1000 / n }'
}

JWT=(-H "Authorization: Bearer $TOKEN")
WRK=(wrk)
declare -A GOT
measure() { # PHASE ROUND
    "${WRK[@]}" -t1 -c"$CONNS" -d2s "${JWT[@]}" "http://127.0.0.1:$PASS/x" >/dev/null
    GOT[$1,pass,$2]=$(split "$PASS_PID" "http://127.0.0.1:$PASS/x" "${JWT[@]}")
    "${WRK[@]}" -t1 -c"$CONNS" -d2s "${JWT[@]}" "http://127.0.0.1:$TG/tenant/x" >/dev/null
    GOT[$1,jwt,$2]=$(split "$TG_PID" "http://127.0.0.1:$TG/tenant/x" "${JWT[@]}")
    echo "  $1 round $2: passthrough ${GOT[$1,pass,$2]}; cached JWT ${GOT[$1,jwt,$2]}"
}
echo "shared cores (${ROUNDS} rounds, ${DURATION}s each, ${CONNS} connections)"
for round in $(seq 1 "$ROUNDS"); do measure shared "$round"; done
# Each proxy's threads on CPU 0; the origin's and wrk on CPU 1.
taskset -acp 0 "$PASS_PID" >/dev/null
taskset -acp 0 "$TG_PID" >/dev/null
for pid in $(cat "$WORK/origin.pid") $(pgrep -P "$(cat "$WORK/origin.pid")"); do taskset -cp 1 "$pid" >/dev/null; done
WRK=(taskset -c 1 wrk)
echo "one core each"
for round in $(seq 1 "$ROUNDS"); do measure pinned "$round"; done

# column PHASE NAME FIELD -> the median over the rounds of one field (1-6)
column() {
    local values=() round
    for round in $(seq 1 "$ROUNDS"); do values+=("$(echo "${GOT[$1,$2,$round]}" | cut -d' ' -f"$3")"); done
    median "${values[@]}"
}
report_start "CPU split" ", 24 GiB"
{
    echo "Command: \`ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS bench/split.sh${GIVEN:-}\` (wrk, 1 thread; the passthrough given the"
    echo "cached JWT's request; medians of the rounds; µs of CPU per request, from the threads' user and kernel"
    echo "times; the workers' context switches per 1,000 requests)."
    echo
    echo "| cores | scenario | workers user | workers kernel | other threads user / kernel | all | / passthrough | voluntary | involuntary |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for phase in shared pinned; do
        label="shared with wrk and the origin"; [ "$phase" = pinned ] && label="CPU 0 alone"
        declare -A all=()
        for name in pass jwt; do
            all[$name]=$(awk -v a="$(column $phase $name 1)" -v b="$(column $phase $name 2)" \
                -v c="$(column $phase $name 3)" -v d="$(column $phase $name 4)" 'BEGIN { printf "%.1f", a + b + c + d }')
        done
        for name in pass jwt; do
            scenario="pingora passthrough"; [ "$name" = jwt ] && scenario="tollgate cached JWT"
            echo "| $label | $scenario | $(column $phase $name 1) | $(column $phase $name 2) | $(column $phase $name 3) / $(column $phase $name 4) | ${all[$name]} | $(ratio "${all[$name]}" "${all[pass]}") | $(column $phase $name 5) | $(column $phase $name 6) |"
        done
    done
    echo
    echo "Workers' user time / passthrough's: $(ratio "$(column shared jwt 1)" "$(column shared pass 1)") shared, $(ratio "$(column pinned jwt 1)" "$(column pinned pass 1)") on one core;"
    echo "kernel time: $(ratio "$(column shared jwt 2)" "$(column shared pass 2)") shared, $(ratio "$(column pinned jwt 2)" "$(column pinned pass 2)") on one core."
} >>"$REPORT"
record_report
