#!/usr/bin/env bash
# What the loopback harnesses share (sourced by bench/load.sh, bench/ab.sh,
# bench/soak.sh and the others): the tools they need, release binaries, a
# work dir cleaned up on exit, free ports, a tiny origin (one nginx worker),
# Tollgate in front of it with a bench tenant whose limits are lifted, CPU
# and RSS readers, and a wrk sample of one process's req/s and CPU.
# Everything listens on 127.0.0.1. (Function bodies are not indented: they
# hold here-documents.)

# shellcheck source=scripts/api.sh
. scripts/api.sh

need() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    [ "${#missing[@]}" -eq 0 ] && return
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # The package starts a system nginx on port 80; this harness runs its own.
        service nginx stop >/dev/null 2>&1 || true
    else
        echo "error: bench/load.sh needs ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
        exit 1
    fi
}
need
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"


# build_tools: the harnesses' helpers (mint, seed), plain release builds,
# into $TOOLS.
build_tools() {
cargo build --release -q -p tollgate-bench --bin mint --bin seed
TOOLS="${CARGO_TARGET_DIR:-target}/release"
}

# build_release: the gateway and the passthrough it is measured against,
# both with the `production` profile (optimized across crates: the way to
# build Tollgate for deployment), into $BIN; the harnesses' helpers (mint,
# seed) as plain release builds into $TOOLS. With PGO=1 both are
# profile-guided builds (bench/pgo.sh), trained on the harness's scenarios.
build_release() {
PROFILE=production
build_tools
if [ "${PGO:-0}" = "1" ]; then
    PROFILE="production (profile-guided: bench/pgo.sh)"
    bench/pgo.sh
    BIN="${CARGO_TARGET_DIR:-target}/pgo/production"
    return
fi
echo "building release binaries (profile $PROFILE; the first build takes about 20 minutes)"
cargo build --profile "$PROFILE" -q --bin tollgate
cargo build --profile "$PROFILE" -q -p tollgate-bench --bin passthrough
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE"
}

# binaries [DIR]: the builds to measure: DIR's `tollgate` and `passthrough`
# when a harness is given a directory (GIVEN names it for the report's
# command), else build_release's.
binaries() {
if [ "$#" -ge 1 ]; then
    BIN="$(cd "$1" && pwd)"; PROFILE="given"; GIVEN=" $BIN"
    local binary
    for binary in tollgate passthrough; do
        [ -x "$BIN/$binary" ] || { echo "error: no $binary in $BIN" >&2; exit 2; }
    done
else
    build_release
fi
}

WORK="$(mktemp -d /tmp/tollgate-load.XXXXXX)"
PIDS=()
cleanup() {
    # SIGINT: pingora's fast shutdown (on SIGTERM the passthrough would
    # linger through its graceful period); Tollgate stops the same on both.
    for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    [ -f "$WORK/origin.pid" ] && kill "$(cat "$WORK/origin.pid")" 2>/dev/null || true
    [ -f "$WORK/proxy.pid" ] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_port() {
    for _ in $(seq 1 300); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "error: nothing listens on port $1" >&2
    exit 1
}


# nginx_head NAME WORKERS: the start of an nginx config whose pid, logs and
# temp files live under $WORK/NAME, up to the inside of its http block.
nginx_head() {
cat <<EOF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/$1; proxy_temp_path $WORK/$1;
    fastcgi_temp_path $WORK/$1; uwsgi_temp_path $WORK/$1; scgi_temp_path $WORK/$1;
EOF
}

# start_origin: one nginx worker answering "ok" to everything on $ORIGIN.
start_origin() {
mkdir -p "$WORK/origin" "$WORK/proxy"
cat > "$WORK/origin.conf" <<EOF
$(nginx_head origin 1)
    server { listen 127.0.0.1:$ORIGIN; location / { return 200 "ok\n"; } }
}
EOF
"$NGINX" -q -p "$WORK" -c "$WORK/origin.conf"
wait_port "$ORIGIN"
}

# start_tollgate: `up` on $TG with the origin behind it, on a public route
# (anonymous callers may use it) and a tenant's route checked by Cedar;
# sets TG_PID. The per-address and per-person rate limits are off (one wrk
# client would hit them); tenants' limits come from plans and overrides.
start_tollgate() {
cat > "$WORK/tollgate.toml" <<EOF
demo = false
log_format = "json"
metrics_listen = "127.0.0.1:$METRICS"
[gateway.rate_limits]
per_ip = 0
per_user = 0
[gateway.upstreams.origin]
addresses = ["127.0.0.1:$ORIGIN"]
[[gateway.routes]]
name = "public"
path = "/public/{rest*}"
upstream = "origin"
methods = { GET = "platform.api" }
resource = { type = "Platform", id = "tollgate" }
[[gateway.routes]]
name = "tenant"
path = "/tenant/{rest*}"
upstream = "origin"
methods = { GET = "crm.read" }
resource = { type = "CrmApi", id = "bench" }
EOF
# Its log is opened for appending, so that trim_logs can empty it while
# it runs.
: >"$WORK/tollgate.log"
TOLLGATE_LOG="${TOLLGATE_LOG:-info}" "$BIN/tollgate" --config "$WORK/tollgate.toml" up \
    --listen "127.0.0.1:$TG" --data-dir "$WORK/data" >"$WORK/tollgate.out" 2>>"$WORK/tollgate.log" &
PIDS+=($!); TG_PID=$!
wait_port "$TG"

B="http://127.0.0.1:$TG/api/v1"
}

# start_nginx_proxies: nginx in front of $ORIGIN (two workers, like the
# gateway's two threads), plain on $NGX_PROXY and with auth_request to a
# no-op authorizer (on $AUTHZ, in the same nginx) on $NGX_AUTH; sets
# NGX_PIDS to its workers.
start_nginx_proxies() {
NGX_PROXY=$(free_port); NGX_AUTH=$(free_port); AUTHZ=$(free_port)
cat > "$WORK/proxy.conf" <<EOF
$(nginx_head proxy 2)
    upstream origin { server 127.0.0.1:$ORIGIN; keepalive 128; }
    upstream authz { server 127.0.0.1:$AUTHZ; keepalive 128; }
    server {
        listen 127.0.0.1:$NGX_PROXY;
        location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
    server {
        listen 127.0.0.1:$NGX_AUTH;
        location / {
            auth_request /_authz;
            proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection "";
        }
        location = /_authz {
            internal;
            proxy_pass http://authz; proxy_http_version 1.1; proxy_set_header Connection "";
            proxy_pass_request_body off; proxy_set_header Content-Length "";
        }
    }
    server { listen 127.0.0.1:$AUTHZ; location / { return 204; } }
}
EOF
"$NGINX" -q -p "$WORK" -c "$WORK/proxy.conf"
wait_port "$NGX_PROXY"; wait_port "$NGX_AUTH"
# The master listens before its workers are forked.
for _ in $(seq 1 50); do
    NGX_PIDS=$(nginx_pids "$WORK/proxy.pid")
    [ "$(echo "$NGX_PIDS" | wc -w)" -ge 2 ] && break
    sleep 0.1
done
}

# bench_owner: signs up bench@example.com with its tenant, makes it a
# platform administrator and lifts its tenant's limits (the quota stage
# still meters its calls); sets B, TOKEN, TENANT, SESSION, USER_ID and KEY.
bench_owner() {
sign_up "$B" bench@example.com Bench
SESSION=$(echo "$LOGIN" | json '["session_id"]')
USER_ID=$(curl -sf "$B/me" -H "authorization: Bearer $TOKEN" | json '["user"]["id"]')
KEY=$(curl -sf "$B/tenants/$TENANT/api-keys" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"bench","scopes":["crm.read"]}' | json '["secret"]')
# The bench tenant without limits (the quota stage still meters its calls);
# a second tenant whose limits are enforced but never reached (the stage's
# full cost); a third whose keys may send one request per second (429s).
"$BIN/tollgate" --config "$WORK/tollgate.toml" platform-admin grant bench@example.com --data-dir "$WORK/data" >/dev/null
overrides() { # TENANT JSON
    curl -sf -X PUT "$B/tenants/$1/entitlements" -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
        -d "$2" >/dev/null
}
unlimited='{"value": null}'
overrides "$TENANT" "{\"limits\": {\"requests_per_second\": $unlimited, \"requests_per_second_per_key\": $unlimited,
    \"api_calls_per_month\": $unlimited}}"
# The gateway follows the liveness feed every second: the override is
# there within two.
sleep 2
}

# tenant_key EMAIL NAME -> "TENANT KEY": signs up a second person with a
# tenant of their own and makes them an API key.
tenant_key() {
    curl -sf "$B/auth/signup" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"correct horse battery staple\",\"name\":\"$2\",\"tenant_name\":\"$2\"}" >/dev/null
    local login token tenant key
    login=$(curl -sf "$B/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"correct horse battery staple\"}")
    token=$(echo "$login" | json '["access_token"]')
    tenant=$(echo "$login" | json '["tenant"]["id"]')
    key=$(curl -sf "$B/tenants/$tenant/api-keys" -H "authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"name":"bench","scopes":["crm.read"]}' | json '["secret"]')
    echo "$tenant $key"
}

# scenario_callers FRESH: besides the bench owner (bench_owner first), the
# callers of the harness's quota and fresh-token scenarios: LIMITED_KEY (a
# tenant whose limits are enforced, never reached), THROTTLED_KEY (one
# request per second per key: 429s), and $WORK/fresh-64.lua and
# $WORK/fresh-8.lua (one for each connection count measured) each sending
# FRESH newly minted access tokens of its own in turn (needs $TOOLS/mint):
# a token one measurement sent is in the gateway's cache for the next.
scenario_callers() {
read -r LIMITED_TENANT LIMITED_KEY <<<"$(tenant_key limited@example.com Limited)"
enforce_limits "$LIMITED_TENANT"
read -r THROTTLED_TENANT THROTTLED_KEY <<<"$(tenant_key throttled@example.com Throttled)"
overrides "$THROTTLED_TENANT" '{"limits": {"requests_per_second_per_key": {"value": 1}}}'
local conns
for conns in 64 8; do
    "$TOOLS/mint" "sqlite:$WORK/data/tollgate.db" "$WORK/data/keys" "http://127.0.0.1:$TG" "$USER_ID" "$TENANT" \
        "$SESSION" "$1" >"$WORK/fresh-$conns.txt"
    rotate "$WORK/fresh-$conns.txt"
done
}

# gateway_scenarios FN CONNECTIONS: calls FN NAME CONNECTIONS URL [wrk
# args...] for each of the harness's scenarios of the gateway (after
# bench_owner and scenario_callers): load.sh measures them, pgo.sh trains
# on them.
gateway_scenarios() {
local fn="$1" conns="$2" url="http://127.0.0.1:$TG/tenant/x"
"$fn" "tollgate public route" "$conns" "http://127.0.0.1:$TG/public/x"
"$fn" "tollgate cached JWT" "$conns" "$url" -H "Authorization: Bearer $TOKEN"
"$fn" "tollgate API key" "$conns" "$url" -H "Authorization: Bearer $KEY"
"$fn" "tollgate API key, limits enforced" "$conns" "$url" -H "Authorization: Bearer $LIMITED_KEY"
"$fn" "tollgate 429 (key limit)" "$conns" "$url" -H "Authorization: Bearer $THROTTLED_KEY"
"$fn" "tollgate fresh JWT" "$conns" "$url" -s "$WORK/fresh-$conns.lua"
"$fn" "tollgate 401" "$conns" "$url" -H "Authorization: Bearer not-a-token"
"$fn" "tollgate 403" "$conns" "$url"
}

# enforce_limits TENANT: limits on every rate and the monthly quota, set so
# high that no run reaches them (the quota stage's full cost, no 429s).
enforce_limits() {
overrides "$1" '{"limits": {"requests_per_second": {"value": 1000000000},
    "requests_per_second_per_key": {"value": 1000000000}, "api_calls_per_month": {"value": 1000000000000}}}'
}

ticks() { # CPU time (clock ticks) of the processes with these pids, threads included
    local total=0 pid
    for pid in "$@"; do
        total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") ))
    done
    echo "$total"
}
hwm_kib() { local total=0 pid; for pid in "$@"; do total=$(( total + $(awk '/VmHWM/ {print $2}' "/proc/$pid/status") )); done; echo "$total"; }
nginx_pids() { pgrep -P "$(cat "$1")" | tr '\n' ' '; }
CLK=$(getconf CLK_TCK)
# per_request_us TICKS REQUESTS DECIMALS: CPU time per request in µs, of
# TICKS clock ticks spent over REQUESTS requests.
per_request_us() { awk -v d="$1" -v clk="$CLK" -v n="$2" -v p="$3" 'BEGIN { printf "%.*f", p, d / clk / n * 1e6 }'; }

# trim_logs: empties the access logs under $WORK grown past 64 MiB (a
# gateway logs a line per request: a whole load run would leave gigabytes).
# Called between measurements of CPU time (and by soak.sh between its
# memory readings).
trim_logs() { find "$WORK" -name tollgate.log -size +64M -exec truncate -s 0 {} +; }

# sample PIDS CONNECTIONS URL [wrk args...] -> "req/s µs-CPU-per-request
# p50-µs" of the processes PIDS (one, or several separated by spaces) over
# DURATION seconds of wrk at CONNECTIONS.
sample() {
local pid="$1" conns="$2" url="$3"; shift 3
local before after rps requests p50
trim_logs
# shellcheck disable=SC2086
before=$(ticks $pid)
read -r rps requests p50 < <(wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$@" "$url" |
    awk '/requests in/ {n = $1} /Requests\/sec/ {r = $2} $1 == "50%" {p = $2} END {printf "%.0f %s %s\n", r, n, p}')
# (wrk's status is lost in the pipe: a run without a report is the failure.)
[ -n "${requests:-}" ] && [ "$requests" != 0 ] || { echo "error: no requests completed against $url" >&2; return 1; }
# shellcheck disable=SC2086
after=$(ticks $pid)
echo "$rps $(per_request_us $(( after - before )) "$requests" 1) $(to_us "$p50")"
}
# to_us DURATION: wrk's latency (e.g. 166.00us, 1.32ms) in µs.
to_us() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); print v + 0 } else if (v ~ /ms$/) { sub(/ms$/, "", v); print v * 1000 } else if (v ~ /s$/) { sub(/s$/, "", v); print v * 1000000 } else print v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
# least VALUES...: the smallest, from the round least disturbed by the rest
# of the machine (neighbours only ever add CPU time per request).
least() { printf '%s\n' "$@" | sort -g | head -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

# rotate TOKENS_FILE: a wrk script (TOKENS_FILE with .lua for .txt) sending
# each token of the file in turn to /tenant/x.
rotate() { # TOKENS_FILE -> a wrk script sending each token in turn
cat > "$WORK/$(basename "$1" .txt).lua" <<LUA
local tokens = {}
for line in io.lines("$1") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i + 1
    if i > #tokens then i = 1 end
    return wrk.format("GET", "/tenant/x", { ["Authorization"] = "Bearer " .. tokens[i] })
end
LUA
}

# policy_stage: the gateway's policy stage histogram (the requests decided
# anew) and the changes its feed has named, on one line: sum (seconds),
# count, the buckets up to 10, 50, 100 and 250 µs, changes.
policy_stage() {
curl -sf "http://127.0.0.1:$METRICS/metrics" | awk '
    /^tollgate_gateway_stage_seconds_sum\{stage="policy"\}/ { sum = $2 }
    /^tollgate_gateway_stage_seconds_count\{stage="policy"\}/ { count = $2 }
    /^tollgate_gateway_stage_seconds_bucket\{stage="policy",le="0.00001"\}/ { b10 = $2 }
    /^tollgate_gateway_stage_seconds_bucket\{stage="policy",le="0.00005"\}/ { b50 = $2 }
    /^tollgate_gateway_stage_seconds_bucket\{stage="policy",le="0.0001"\}/ { b100 = $2 }
    /^tollgate_gateway_stage_seconds_bucket\{stage="policy",le="0.00025"\}/ { b250 = $2 }
    /^tollgate_gateway_liveness_changes_total/ { changes = $2 }
    END { printf "%.9f %d %d %d %d %d %d\n", sum, count, b10, b50, b100, b250, changes }'
}

# report_start TITLE [MACHINE]: starts $REPORT with the heading every run
# has (date, title, cores, CPU model and MACHINE), then the commit.
report_start() {
local cpu commit dirty
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git diff --quiet 2>/dev/null || echo " (with uncommitted changes)")
REPORT="$WORK/report.md"
printf '\n## %s — %s — %s cores (%s)%s\n\nCommit %s%s, binaries built with the %s profile. ' \
    "$(date -u +%Y-%m-%d)" "$1" "$(nproc)" "$cpu" "${2:-}" "$commit" "$dirty" "${PROFILE:-release}" >"$REPORT"
}

# record_report: prints $REPORT and appends it to bench/RESULTS.md (unless RECORD=0).
record_report() {
cat "$REPORT"
if [ "${RECORD:-1}" = "1" ]; then
    cat "$REPORT" >>bench/RESULTS.md
    echo "appended to bench/RESULTS.md"
fi
}
