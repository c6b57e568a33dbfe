#!/usr/bin/env bash
# The loopback load harness: Tollgate's gateway side by side, in one run, with
# a tiny origin, nginx as a plain proxy, nginx + auth_request to a no-op
# authorizer (the ceiling of every external-authz design) and a bare pingora
# passthrough. Everything listens on 127.0.0.1 and every measurement stops by
# itself (DURATION seconds each). Needs Debian's nginx and wrk (installed
# when missing and running as root; named otherwise).
#
# Usage: bench/load.sh            (DURATION=5 by default; RECORD=0 to not append;
#                                  PAIRS=5 paired rounds; PGO=1: both the
#                                  gateway and the passthrough built
#                                  profile-guided, bench/pgo.sh)
# Prints a table (req/s, p50, p99, CPU per request of the proxy process, peak
# RSS) at 64 and 8 connections and the ratios, then paired rounds of the
# passthrough and the gateway measured back to back with the median of their
# ratios (at 64 connections, and at 8 for the added p50), and appends them to
# bench/RESULTS.md with the date, CPU model, commit and command.
#
# The passthrough also runs on the gateway's own workers (its `workers`
# argument; given the cached JWT's request), beside pingora's runtime: what
# the gateway gains from its server, and what its pipeline costs on it.
#
# The passthrough and nginx + auth_request are measured twice: with a bare
# request (as in every run before), and with the very request the gateway
# gets in the scenario compared (its `Authorization` header, which they
# forward as it is): proxies compared on the same traffic. Both ratios are
# printed.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-5}"
RECORD="${RECORD:-1}"

# shellcheck source=bench/common.sh
. bench/common.sh
need
build_release
ORIGIN=$(free_port)
PASS=$(free_port); PASSW=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
start_nginx_proxies

"$BIN/passthrough" "127.0.0.1:$PASS" "127.0.0.1:$ORIGIN" 2 >"$WORK/passthrough.log" 2>&1 &
PIDS+=($!); PASS_PID=$!
wait_port "$PASS"
"$BIN/passthrough" "127.0.0.1:$PASSW" "127.0.0.1:$ORIGIN" 2 workers >"$WORK/passthrough-workers.log" 2>&1 &
PIDS+=($!); PASSW_PID=$!
wait_port "$PASSW"

start_tollgate
bench_owner
scenario_callers $(( 150000 * DURATION / 5 ))

for check in "/public/x" "/tenant/x"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TG$check" -H "authorization: Bearer $TOKEN")
    [ "$status" = "200" ] || { echo "error: $check answers $status" >&2; exit 1; }
done

ROWS=()
declare -A RPS P50 CPU

# measure NAME CONNECTIONS "PIDS" URL [wrk args...]
measure() {
    local name="$1" conns="$2" pids="$3" url="$4"; shift 4
    local before after out requests rps p50 p99 non2xx cpu rss
    trim_logs
    # shellcheck disable=SC2086
    before=$( [ -n "$pids" ] && ticks $pids || echo 0 )
    out=$(wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$@" "$url")
    # shellcheck disable=SC2086
    after=$( [ -n "$pids" ] && ticks $pids || echo 0 )
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')
    p50=$(echo "$out" | awk '$1 == "50%" {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx/ {print $5}')
    if [ -n "$pids" ]; then
        cpu=$(per_request_us $(( after - before )) "$requests" 0)
        # shellcheck disable=SC2086
        rss=$(awk -v k="$(hwm_kib $pids)" 'BEGIN { printf "%.0f", k / 1024 }')
    else
        cpu="—"; rss="—"
    fi
    RPS["$name/$conns"]="$rps"; P50["$name/$conns"]="$p50"; CPU["$name/$conns"]="$cpu"
    ROWS+=("| $name | $conns | $rps | $p50 | $p99 | $cpu | $rss | ${non2xx:-0} |")
    echo "  $name, $conns connections: $rps req/s, p50 $p50, p99 $p99, ${cpu} µs CPU/request"
}

# measure_gateway NAME CONNECTIONS URL [wrk args...]: measure, of the gateway.
measure_gateway() { measure "$1" "$2" "$TG_PID" "${@:3}"; }

ON_WORKERS="pingora passthrough on the gateway's workers, the cached JWT's request"
echo "measuring (${DURATION}s each)"
for conns in 64 8; do
    measure "origin direct" "$conns" "" "http://127.0.0.1:$ORIGIN/x"
    measure "nginx proxy" "$conns" "$NGX_PIDS" "http://127.0.0.1:$NGX_PROXY/x"
    measure "nginx + auth_request" "$conns" "$NGX_PIDS" "http://127.0.0.1:$NGX_AUTH/x"
    measure "pingora passthrough" "$conns" "$PASS_PID" "http://127.0.0.1:$PASS/x"
    measure "pingora passthrough, the cached JWT's request" "$conns" "$PASS_PID" "http://127.0.0.1:$PASS/tenant/x" \
        -H "Authorization: Bearer $TOKEN"
    measure "nginx + auth_request, the cached JWT's request" "$conns" "$NGX_PIDS" "http://127.0.0.1:$NGX_AUTH/tenant/x" \
        -H "Authorization: Bearer $TOKEN"
    measure "$ON_WORKERS" "$conns" "$PASSW_PID" "http://127.0.0.1:$PASSW/tenant/x" -H "Authorization: Bearer $TOKEN"
    gateway_scenarios measure_gateway "$conns"
done

# take CONNECTIONS TARGETS...: one sample of each target, in order, at
# CONNECTIONS, into GOT_RPS, GOT_CPU and GOT_P50 by the target's name: the
# passthrough (`pass`: a bare request; `pass_jwt`, `pass_key`: given the
# credential's request), the gateway (`jwt`, `key`, `limited`), nginx +
# auth_request (`nginx_jwt`, `nginx_key`) and the passthrough on the
# gateway's workers (`workers_jwt`).
declare -A GOT_RPS GOT_CPU GOT_P50
take() {
    local conns="$1" target pid port path credential; shift
    for target in "$@"; do
        path=/tenant/x
        case "$target" in
            pass) pid=$PASS_PID port=$PASS path=/x credential="" ;;
            pass_jwt) pid=$PASS_PID port=$PASS credential=$TOKEN ;;
            pass_key) pid=$PASS_PID port=$PASS credential=$KEY ;;
            jwt) pid=$TG_PID port=$TG credential=$TOKEN ;;
            key) pid=$TG_PID port=$TG credential=$KEY ;;
            limited) pid=$TG_PID port=$TG credential=$LIMITED_KEY ;;
            nginx_jwt) pid=$NGX_PIDS port=$NGX_AUTH credential=$TOKEN ;;
            nginx_key) pid=$NGX_PIDS port=$NGX_AUTH credential=$KEY ;;
            workers_jwt) pid=$PASSW_PID port=$PASSW credential=$TOKEN ;;
            *) echo "error: no target $target" >&2; exit 1 ;;
        esac
        local args=()
        [ -n "$credential" ] && args=(-H "Authorization: Bearer $credential")
        read -r "GOT_RPS[$target]" "GOT_CPU[$target]" "GOT_P50[$target]" \
            <<<"$(sample "$pid" "$conns" "http://127.0.0.1:$port$path" "${args[@]}")"
    done
}

# Paired rounds: the passthrough, then the gateway with a cached JWT, with an
# API key and with an API key of a tenant whose limits are enforced (never
# reached), back to back at 64 connections, PAIRS times. Each round's ratios
# compare measurements taken within seconds of each other, so drift of the
# machine (a whole run here moves by 10-20%) cancels out; the medians of the
# rounds are the figures to compare with the targets. Both keys are of one
# length, so the passthrough given the key's request stands for both.
PAIRS="${PAIRS:-5}"
PAIR_ROWS=(); JWT_RPS=(); KEY_RPS=(); LIM_RPS=(); JWT_CPU=(); KEY_CPU=(); LIM_CPU=()
JWT_RPS_BARE=(); KEY_RPS_BARE=(); JWT_CPU_BARE=(); KEY_CPU_BARE=()
PJ_CPUS=(); J_CPUS=(); PK_CPUS=(); K_CPUS=(); L_CPUS=()
# nginx + auth_request given each credential's request, and the passthrough
# on the gateway's workers, in the same rounds.
JWT_NGX=(); KEY_NGX=(); JWT_W_RPS=(); JWT_W_CPU=()
echo "paired rounds (${PAIRS} x 9 x ${DURATION}s)"
for round in $(seq 1 "$PAIRS"); do
    take 64 pass pass_jwt jwt pass_key key limited nginx_jwt nginx_key workers_jwt
    p_rps=${GOT_RPS[pass]} p_cpu=${GOT_CPU[pass]} pj_rps=${GOT_RPS[pass_jwt]} pj_cpu=${GOT_CPU[pass_jwt]}
    j_rps=${GOT_RPS[jwt]} j_cpu=${GOT_CPU[jwt]} pk_rps=${GOT_RPS[pass_key]} pk_cpu=${GOT_CPU[pass_key]}
    k_rps=${GOT_RPS[key]} k_cpu=${GOT_CPU[key]} l_rps=${GOT_RPS[limited]} l_cpu=${GOT_CPU[limited]}
    nj_rps=${GOT_RPS[nginx_jwt]} nk_rps=${GOT_RPS[nginx_key]} w_rps=${GOT_RPS[workers_jwt]} w_cpu=${GOT_CPU[workers_jwt]}
    JWT_NGX+=("$(ratio "$j_rps" "$nj_rps")"); KEY_NGX+=("$(ratio "$k_rps" "$nk_rps")")
    JWT_W_RPS+=("$(ratio "$j_rps" "$w_rps")"); JWT_W_CPU+=("$(ratio "$j_cpu" "$w_cpu")")
    PJ_CPUS+=("$pj_cpu"); J_CPUS+=("$j_cpu"); PK_CPUS+=("$pk_cpu"); K_CPUS+=("$k_cpu"); L_CPUS+=("$l_cpu")
    JWT_RPS+=("$(ratio "$j_rps" "$pj_rps")"); KEY_RPS+=("$(ratio "$k_rps" "$pk_rps")"); LIM_RPS+=("$(ratio "$l_rps" "$pk_rps")")
    JWT_CPU+=("$(ratio "$j_cpu" "$pj_cpu")"); KEY_CPU+=("$(ratio "$k_cpu" "$pk_cpu")"); LIM_CPU+=("$(ratio "$l_cpu" "$pk_cpu")")
    JWT_RPS_BARE+=("$(ratio "$j_rps" "$p_rps")"); KEY_RPS_BARE+=("$(ratio "$k_rps" "$p_rps")")
    JWT_CPU_BARE+=("$(ratio "$j_cpu" "$p_cpu")"); KEY_CPU_BARE+=("$(ratio "$k_cpu" "$p_cpu")")
    PAIR_ROWS+=("| $round | $p_rps / $p_cpu | $pj_rps / $pj_cpu | $j_rps / $j_cpu | $pk_rps / $pk_cpu | $k_rps / $k_cpu \
| $l_rps / $l_cpu | ${JWT_RPS[-1]} / ${JWT_CPU[-1]} | ${KEY_RPS[-1]} / ${KEY_CPU[-1]} | ${LIM_RPS[-1]} / ${LIM_CPU[-1]} \
| ${JWT_RPS_BARE[-1]} / ${JWT_CPU_BARE[-1]} | ${KEY_RPS_BARE[-1]} / ${KEY_CPU_BARE[-1]} \
| $nj_rps | $nk_rps | ${JWT_NGX[-1]} | ${KEY_NGX[-1]} | $w_rps / $w_cpu | ${JWT_W_RPS[-1]} / ${JWT_W_CPU[-1]} |")
    echo "  round $round: passthrough $p_rps req/s $p_cpu µs (JWT's request $pj_rps $pj_cpu, key's $pk_rps $pk_cpu)," \
        "cached JWT $j_rps $j_cpu, API key $k_rps $k_cpu, limits enforced $l_rps $l_cpu;" \
        "nginx + auth_request $nj_rps (key's request $nk_rps); passthrough on the workers $w_rps $w_cpu"
done

# Paired rounds at 8 connections: the passthrough (bare, and given the
# cached JWT's request), the gateway with a cached JWT, nginx + auth_request
# and the passthrough on the gateway's workers (both given the JWT's
# request), back to back, PAIRS times. A single pass at 8 connections moves
# by more than the target's margin between runs (the scheduler's placement
# of four busy threads on two cores); the medians of the per-round
# differences are the figures for the p50 target.
PAIR8_ROWS=(); ADDED8=(); ADDED8_SAME=(); ADDED8_W=(); JWT8_NGX=(); JWT8_W=()
# added A B: how many µs p50 A exceeds p50 B.
added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", a - b }'; }
echo "paired rounds at 8 connections (${PAIRS} x 5 x ${DURATION}s)"
for round in $(seq 1 "$PAIRS"); do
    take 8 pass pass_jwt jwt nginx_jwt workers_jwt
    ADDED8+=("$(added "${GOT_P50[jwt]}" "${GOT_P50[pass]}")")
    ADDED8_SAME+=("$(added "${GOT_P50[jwt]}" "${GOT_P50[pass_jwt]}")")
    ADDED8_W+=("$(added "${GOT_P50[jwt]}" "${GOT_P50[workers_jwt]}")")
    JWT8_NGX+=("$(ratio "${GOT_RPS[jwt]}" "${GOT_RPS[nginx_jwt]}")")
    JWT8_W+=("$(ratio "${GOT_RPS[jwt]}" "${GOT_RPS[workers_jwt]}")")
    cells=""
    for target in pass pass_jwt jwt nginx_jwt workers_jwt; do
        cells+="| ${GOT_RPS[$target]} / ${GOT_P50[$target]} "
    done
    PAIR8_ROWS+=("| $round $cells| ${ADDED8[-1]} | ${ADDED8_SAME[-1]} | ${ADDED8_W[-1]} | ${JWT8_NGX[-1]} | ${JWT8_W[-1]} |")
    echo "  round $round: p50 µs passthrough ${GOT_P50[pass]} (JWT's request ${GOT_P50[pass_jwt]}), cached JWT" \
        "${GOT_P50[jwt]}, nginx + auth_request ${GOT_P50[nginx_jwt]}, passthrough on the workers ${GOT_P50[workers_jwt]}"
done

R1=$(ratio "${RPS[tollgate cached JWT/64]}" "${RPS[pingora passthrough/64]}")
R2=$(ratio "${RPS[tollgate cached JWT/64]}" "${RPS[nginx + auth_request/64]}")
# The bare passthrough against the same: how near that target anything built
# on pingora can come on this machine.
R2P=$(ratio "${RPS[pingora passthrough/64]}" "${RPS[nginx + auth_request/64]}")
R3=$(ratio "${RPS[tollgate API key/64]}" "${RPS[pingora passthrough/64]}")
# The same target for the API key, and both at 8 connections too.
R2K=$(ratio "${RPS[tollgate API key/64]}" "${RPS[nginx + auth_request/64]}")
R2_8=$(ratio "${RPS[tollgate cached JWT/8]}" "${RPS[nginx + auth_request/8]}")
R2K_8=$(ratio "${RPS[tollgate API key/8]}" "${RPS[nginx + auth_request/8]}")
R2P_8=$(ratio "${RPS[pingora passthrough/8]}" "${RPS[nginx + auth_request/8]}")
R5=$(ratio "${RPS[tollgate API key, limits enforced/64]}" "${RPS[tollgate API key/64]}")
R4=$(ratio "${CPU[tollgate cached JWT/64]}" "${CPU[pingora passthrough/64]}")
SAME="pingora passthrough, the cached JWT's request"
R1S=$(ratio "${RPS[tollgate cached JWT/64]}" "${RPS[$SAME/64]}")
SAME_AUTH="nginx + auth_request, the cached JWT's request"
R2S=$(ratio "${RPS[tollgate cached JWT/64]}" "${RPS[$SAME_AUTH/64]}")
R4S=$(ratio "${CPU[tollgate cached JWT/64]}" "${CPU[$SAME/64]}")
ADDED_SAME=$(added "$(to_us "${P50[tollgate cached JWT/8]}")" "$(to_us "${P50[$SAME/8]}")")
R1W=$(ratio "${RPS[tollgate cached JWT/64]}" "${RPS[$ON_WORKERS/64]}")
R1W_8=$(ratio "${RPS[tollgate cached JWT/8]}" "${RPS[$ON_WORKERS/8]}")
R4W=$(ratio "${CPU[tollgate cached JWT/64]}" "${CPU[$ON_WORKERS/64]}")
RWS=$(ratio "${RPS[$ON_WORKERS/64]}" "${RPS[$SAME/64]}")
ADDED=$(added "$(to_us "${P50[tollgate cached JWT/8]}")" "$(to_us "${P50[pingora passthrough/8]}")")

MEM=$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
report_start "load harness" ", $MEM"
{
    echo "Command: \`$([ "${PGO:-0}" = 1 ] && echo "PGO=1 ")DURATION=$DURATION bench/load.sh\` (wrk, 1 thread, ${DURATION} s per row;"
    echo "nginx with 2 workers, the passthrough and the gateway with 2 threads, both on mimalloc; origin: one nginx worker)."
    echo
    echo "| scenario | connections | req/s | p50 | p99 | proxy CPU µs/request | peak RSS MiB | non-2xx |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "- full pipeline (cached JWT) / pingora passthrough, 64 connections: **$R1** (target ≥ 0.80)"
    echo "- full pipeline (cached JWT) / nginx + auth_request, 64 connections: **$R2** (target ≥ 1.0);" \
        "the bare passthrough's own: **$R2P**"
    echo "- API key / nginx + auth_request, 64 connections: **$R2K**; at 8 connections: cached JWT **$R2_8**," \
        "API key **$R2K_8**, the bare passthrough **$R2P_8**"
    echo "- API key / pingora passthrough, 64 connections: **$R3**"
    echo "- API key with its tenant's limits enforced / without, 64 connections: **$R5**"
    echo "- gateway CPU per request / passthrough's, 64 connections: **$R4** (target ≤ 1.3)"
    echo "- added p50 over passthrough, 8 connections: **${ADDED} µs** (target < 100 µs)"
    echo "- the same with the passthrough and nginx + auth_request given the cached JWT's request:" \
        "**$R1S** of the passthrough's req/s, **$R2S** of nginx + auth_request's, **$R4S×** the passthrough's CPU," \
        "added p50 **${ADDED_SAME} µs**"
    echo "- the passthrough on the gateway's workers / on pingora's runtime, given the cached JWT's request," \
        "64 connections: **$RWS** req/s; the full pipeline (cached JWT) against it: **$R1W** req/s at 64 connections" \
        "(**$R1W_8** at 8), **$R4W×** its CPU per request"
    echo
    echo "Paired rounds at 64 connections (\`PAIRS=$PAIRS\`; req/s / µs CPU per request; ratios req/s / CPU to the passthrough"
    echo "of the same round, given the same request as the gateway, and given a bare request; then nginx + auth_request"
    echo "given each credential's request, its req/s ratio, and the passthrough on the gateway's workers given the JWT's):"
    echo
    echo "| round | passthrough, bare | passthrough, JWT's request | cached JWT | passthrough, key's request | API key \
| API key, limits enforced | cached JWT ratio | API key ratio | limits enforced ratio | cached JWT ratio, bare \
| API key ratio, bare | nginx + auth_request, JWT's request | nginx + auth_request, key's request \
| cached JWT / nginx + auth_request | API key / nginx + auth_request | passthrough on the workers \
| cached JWT / passthrough on the workers |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${PAIR_ROWS[@]}"
    echo
    echo "- median, cached JWT / passthrough given the same request: **$(median "${JWT_RPS[@]}")** req/s (target ≥ 0.80)," \
        "**$(median "${JWT_CPU[@]}")×** CPU per request (target ≤ 1.3); given a bare request:" \
        "**$(median "${JWT_RPS_BARE[@]}")** / **$(median "${JWT_CPU_BARE[@]}")×**"
    echo "- median, API key / passthrough given the same request: **$(median "${KEY_RPS[@]}")** req/s (target ≥ 0.80)," \
        "**$(median "${KEY_CPU[@]}")×** CPU per request (target ≤ 1.3); given a bare request:" \
        "**$(median "${KEY_RPS_BARE[@]}")** / **$(median "${KEY_CPU_BARE[@]}")×**"
    echo "- median, API key with its tenant's limits enforced / passthrough given the key's request:" \
        "**$(median "${LIM_RPS[@]}")** req/s (target ≥ 0.80), **$(median "${LIM_CPU[@]}")×** CPU per request (target ≤ 1.3)"
    echo "- median, cached JWT / nginx + auth_request given the same request: **$(median "${JWT_NGX[@]}")** req/s;" \
        "API key: **$(median "${KEY_NGX[@]}")** (target ≥ 1.0)"
    echo "- median, cached JWT / the passthrough on the gateway's workers given the same request:" \
        "**$(median "${JWT_W_RPS[@]}")** req/s, **$(median "${JWT_W_CPU[@]}")×** CPU per request (the pipeline's own cost)"
    pj=$(least "${PJ_CPUS[@]}"); j=$(least "${J_CPUS[@]}")
    pk=$(least "${PK_CPUS[@]}"); k=$(least "${K_CPUS[@]}"); l=$(least "${L_CPUS[@]}")
    echo "- least CPU per request of any round (µs; the round least disturbed by the rest of the machine):" \
        "passthrough given the JWT's request $pj, cached JWT $j (**$(ratio "$j" "$pj")×**);" \
        "passthrough given the key's request $pk, API key $k (**$(ratio "$k" "$pk")×**)," \
        "limits enforced $l (**$(ratio "$l" "$pk")×**)"
    echo
    echo "Paired rounds at 8 connections (\`PAIRS=$PAIRS\`; req/s / p50 µs; then the cached JWT's added p50 in µs over the"
    echo "passthrough (bare; given the JWT's request; on the gateway's workers, given the JWT's request) and its req/s ratios):"
    echo
    echo "| round | passthrough, bare | passthrough, JWT's request | cached JWT | nginx + auth_request, JWT's request \
| passthrough on the workers | added p50, bare | added p50, same request | added p50, on the workers \
| cached JWT / nginx + auth_request | cached JWT / passthrough on the workers |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${PAIR8_ROWS[@]}"
    echo
    echo "- median added p50 of the cached JWT over the passthrough, 8 connections: **$(median "${ADDED8[@]}") µs**" \
        "(target < 100 µs); given the same request: **$(median "${ADDED8_SAME[@]}") µs**; over the passthrough on the" \
        "gateway's workers: **$(median "${ADDED8_W[@]}") µs**"
    echo "- median, cached JWT / nginx + auth_request given the same request, 8 connections: **$(median "${JWT8_NGX[@]}")**" \
        "req/s; / the passthrough on the gateway's workers: **$(median "${JWT8_W[@]}")**"
} >>"$REPORT"
record_report
