#!/usr/bin/env bash
# A/B rounds of two gateway builds: the passthrough and two Tollgates (A and
# B, each with its own data dir and bench tenant) run side by side, and each
# round measures the passthrough and nginx + auth_request (given the cached
# JWT's request), then A and B with a cached JWT, with an
# API key, and with an API key of a tenant whose limits are enforced (but
# never reached), swapping the order of A and B every round. Changes smaller than
# the drift between whole harness runs (up to 30% on these machines) show
# only this way. Loopback only; every measurement stops by itself.
#
# Usage: bench/ab.sh DIR_A DIR_B   (each holding a `tollgate` binary; the
#        passthrough is DIR_A's when it has one, else the production build;
#        ROUNDS=4, DURATION=5, CONNS=64, RECORD=0 to not append,
#        A_LOG / B_LOG: TOLLGATE_LOG of each side, default info)
# Prints, per round, req/s / µs CPU per request of the measured process,
# then the medians, the medians of the per-round ratios B / A and those of
# A and B's cached JWT to nginx + auth_request, and
# appends them to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$#" -eq 2 ] || { echo "usage: bench/ab.sh DIR_A DIR_B" >&2; exit 2; }
A_DIR="$(cd "$1" && pwd)"; B_DIR="$(cd "$2" && pwd)"
for dir in "$A_DIR" "$B_DIR"; do
    [ -x "$dir/tollgate" ] || { echo "error: no tollgate binary in $dir" >&2; exit 2; }
done
ROUNDS="${ROUNDS:-4}"; DURATION="${DURATION:-5}"; CONNS="${CONNS:-64}"; RECORD="${RECORD:-1}"

# shellcheck source=bench/common.sh
. bench/common.sh
need
if [ -x "$A_DIR/passthrough" ]; then
    PASSTHROUGH="$A_DIR/passthrough"
else
    cargo build --profile production -q -p tollgate-bench --bin passthrough
    PASSTHROUGH="${CARGO_TARGET_DIR:-target}/production/passthrough"
fi
ROOT="$WORK"
ORIGIN=$(free_port); PASS=$(free_port)
start_origin
start_nginx_proxies
"$PASSTHROUGH" "127.0.0.1:$PASS" "127.0.0.1:$ORIGIN" 2 >"$ROOT/passthrough.log" 2>&1 &
PIDS+=($!); PASS_PID=$!
wait_port "$PASS"

declare -A PORT PID CRED_JWT CRED_KEY CRED_LIMITED
for side in A B; do
    mkdir -p "$ROOT/$side"
    WORK="$ROOT/$side"
    if [ "$side" = A ]; then BIN="$A_DIR"; TOLLGATE_LOG="${A_LOG:-info}"; else BIN="$B_DIR"; TOLLGATE_LOG="${B_LOG:-info}"; fi
    TG=$(free_port); METRICS=$(free_port)
    start_tollgate
    bench_owner
    read -r LIMITED_TENANT LIMITED_KEY <<<"$(tenant_key limited@example.com Limited)"
    enforce_limits "$LIMITED_TENANT"
    PORT[$side]=$TG; PID[$side]=$TG_PID; CRED_JWT[$side]=$TOKEN; CRED_KEY[$side]=$KEY; CRED_LIMITED[$side]=$LIMITED_KEY
done
WORK="$ROOT"
# The gateways follow the liveness feed every second: the overrides are
# there within two.
sleep 2

cell() { echo "$1" | awk '{print $1 " / " $2}'; }

for side in A B; do
    wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$side]}/tenant/x" -H "Authorization: Bearer ${CRED_JWT[$side]}" >/dev/null
done
ROWS=()
declare -A RPS CPU RPS_RATIO CPU_RATIO NGINX_RATIO
ratio3() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "A/B rounds (${ROUNDS} x 8 x ${DURATION}s, ${CONNS} connections)"
for round in $(seq 1 "$ROUNDS"); do
    order="A B"; [ $(( round % 2 )) = 0 ] && order="B A"
    declare -A got=()
    got["pass"]=$(sample "$PASS_PID" "$CONNS" "http://127.0.0.1:$PASS/x")
    # nginx + auth_request given the cached JWT's request (it forwards the
    # header as it is).
    got["nginx"]=$(sample "$NGX_PIDS" "$CONNS" "http://127.0.0.1:$NGX_AUTH/tenant/x" -H "Authorization: Bearer ${CRED_JWT[A]}")
    for side in $order; do
        url="http://127.0.0.1:${PORT[$side]}/tenant/x"
        got["$side jwt"]=$(sample "${PID[$side]}" "$CONNS" "$url" -H "Authorization: Bearer ${CRED_JWT[$side]}")
        got["$side key"]=$(sample "${PID[$side]}" "$CONNS" "$url" -H "Authorization: Bearer ${CRED_KEY[$side]}")
        got["$side limited"]=$(sample "${PID[$side]}" "$CONNS" "$url" -H "Authorization: Bearer ${CRED_LIMITED[$side]}")
    done
    for k in nginx "A jwt" "B jwt" "A key" "B key" "A limited" "B limited"; do
        read -r r c _ <<<"${got[$k]}"
        RPS["$k"]+="$r "; CPU["$k"]+="$c "
    done
    for k in jwt key limited; do
        read -r ra ca _ <<<"${got["A $k"]}"; read -r rb cb _ <<<"${got["B $k"]}"
        RPS_RATIO["$k"]+="$(ratio3 "$rb" "$ra") "; CPU_RATIO["$k"]+="$(ratio3 "$cb" "$ca") "
    done
    read -r rn _ <<<"${got[nginx]}"
    for side in A B; do
        read -r r _ <<<"${got["$side jwt"]}"
        NGINX_RATIO[$side]+="$(ratio3 "$r" "$rn") "
    done
    ROWS+=("| $round | $(cell "${got["pass"]}") | $(cell "${got[nginx]}") | $(cell "${got["A jwt"]}") | $(cell "${got["B jwt"]}") | $(cell "${got["A key"]}") | $(cell "${got["B key"]}") | $(cell "${got["A limited"]}") | $(cell "${got["B limited"]}") |")
    echo "  ${ROWS[-1]}"
done
med() { # KEY -> "req/s / µs"
    # shellcheck disable=SC2086
    printf '%.0f / %.1f' "$(median ${RPS["$1"]})" "$(median ${CPU["$1"]})"
}

# (The binaries are the caller's, built however A and B say.)
PROFILE="given"
report_start "A/B rounds"
{
    echo "A: \`$A_DIR\`, B: \`$B_DIR\` (A_LOG=${A_LOG:-info}, B_LOG=${B_LOG:-info}). Command:"
    echo "\`ROUNDS=$ROUNDS DURATION=$DURATION CONNS=$CONNS bench/ab.sh A B\` (wrk, 1 thread; A and B swap order every round;"
    echo "cells: req/s / µs CPU per request of the measured process)."
    echo
    echo "| round | passthrough | nginx + auth_request, the JWT's request | cached JWT, A | cached JWT, B | API key, A | API key, B | API key, limits enforced, A | API key, limits enforced, B |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo "| median | | $(med nginx) | $(med "A jwt") | $(med "B jwt") | $(med "A key") | $(med "B key") | $(med "A limited") | $(med "B limited") |"
    echo
    # shellcheck disable=SC2086
    for k in jwt key limited; do
        case $k in jwt) name="cached JWT" ;; key) name="API key" ;; *) name="API key, limits enforced" ;; esac
        echo "- $name, medians of the per-round ratios B / A: CPU per request **$(median ${CPU_RATIO[$k]})**, req/s **$(median ${RPS_RATIO[$k]})**;" \
            "least CPU per request of any round: A $(least ${CPU["A $k"]}), B $(least ${CPU["B $k"]}) µs"
    done
    echo "- cached JWT / nginx + auth_request given the same request, medians of the per-round req/s ratios:" \
        "A **$(median ${NGINX_RATIO[A]})**, B **$(median ${NGINX_RATIO[B]})**"
} >>"$REPORT"
record_report
