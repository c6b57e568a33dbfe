#!/usr/bin/env bash
# Profile-guided builds of the gateway and of the passthrough it is measured
# against: both built instrumented, trained on the load harness's own
# scenarios (each binary on its own traffic), then built again with the
# merged profiles. The result is a faster binary of each, built the same way,
# so ratios between them stay fair. Loopback only; every training run stops
# by itself.
#
# Usage: bench/pgo.sh   (TRAIN=3 seconds per scenario and connection count)
# Needs llvm-profdata of the same LLVM major version as rustc (Debian:
# apt-get install llvm-NN, installed when missing and running as root).
# Output: ${CARGO_TARGET_DIR:-target}/pgo/production/{tollgate,passthrough}.
# Each build has a target directory of its own (flags differ from the plain
# production build's) and rebuilds every dependency: about 20 minutes each
# on a 2-core machine. A new profile rebuilds the optimized binaries, so
# the binaries are kept, and neither trained nor built again, while the
# sources they were built from, this script, common.sh and scripts/api.sh
# (the training and its set-up),
# rustc and TRAIN stay the same; PGO_REBUILD=1 rebuilds anyway.
set -euo pipefail
cd "$(dirname "$0")/.."

TRAIN="${TRAIN:-3}"
TARGET="${CARGO_TARGET_DIR:-target}"
TARGET="$(mkdir -p "$TARGET" && cd "$TARGET" && pwd)"
PROFILES="$TARGET/pgo-profiles"

llvm_major="$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')"
PROFDATA="$(command -v "llvm-profdata-$llvm_major" || true)"
if [ -z "$PROFDATA" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "llvm-$llvm_major" >/dev/null
    PROFDATA="$(command -v "llvm-profdata-$llvm_major" || true)"
fi
[ -n "$PROFDATA" ] || { echo "error: bench/pgo.sh needs llvm-profdata-$llvm_major (Debian: llvm-$llvm_major)" >&2; exit 1; }

OUT="$TARGET/pgo/production"
# inputs: what the binaries and their profile are built from: the sources
# and the training (this script, common.sh and the scripts/api.sh it
# sources), not the other harnesses, the tests, CI or the docs.
inputs() {
    local only=(. ':!*.md' ':!bench/*.sh' ':!tests' ':!.ci' ':!scripts')
    rustc -vV
    echo "TRAIN=$TRAIN"
    git ls-files -s -- "${only[@]}"
    git diff HEAD -- "${only[@]}"
    git ls-files -z --others --exclude-standard -- "${only[@]}" | xargs -0r sha256sum
    sha256sum bench/pgo.sh bench/common.sh scripts/api.sh
}
STAMP="$(inputs | sha256sum | cut -d' ' -f1)"
if [ "${PGO_REBUILD:-0}" != 1 ] && [ -x "$OUT/tollgate" ] && [ -x "$OUT/passthrough" ] \
    && [ "$(cat "$OUT/inputs.sha256" 2>/dev/null)" = "$STAMP" ]; then
    echo "pgo: $OUT is up to date with the sources (PGO_REBUILD=1 rebuilds it)"
    exit 0
fi
rm -f "$OUT/inputs.sha256"

# shellcheck source=bench/common.sh
. bench/common.sh

# build FLAGS DIR: the gateway and the passthrough, production profile.
build() {
    RUSTFLAGS="$1" CARGO_TARGET_DIR="$2" cargo build --profile production -q --bin tollgate
    RUSTFLAGS="$1" CARGO_TARGET_DIR="$2" cargo build --profile production -q -p tollgate-bench --bin passthrough
}

echo "pgo: building instrumented binaries"
rm -rf "$PROFILES"
mkdir -p "$PROFILES/tollgate" "$PROFILES/passthrough"
# Each process writes its own raw profile (%p), merged below.
build "-Cprofile-generate=$PROFILES/raw" "$TARGET/pgo-generate"
BIN="$TARGET/pgo-generate/production"
build_tools

echo "pgo: training (${TRAIN}s per scenario)"
DURATION="$TRAIN"
ORIGIN=$(free_port); PASS=$(free_port); TG=$(free_port); METRICS=$(free_port)
start_origin
LLVM_PROFILE_FILE="$PROFILES/passthrough/%p.profraw" \
    "$BIN/passthrough" "127.0.0.1:$PASS" "127.0.0.1:$ORIGIN" 2 >"$WORK/passthrough.log" 2>&1 &
PASS_PID=$!; PIDS+=("$PASS_PID")
wait_port "$PASS"
export LLVM_PROFILE_FILE="$PROFILES/tollgate/%p.profraw"
start_tollgate
unset LLVM_PROFILE_FILE
bench_owner
scenario_callers $(( 20000 * TRAIN ))
# train NAME CONNECTIONS URL [wrk args...]
train() { wrk -t1 -c"$2" -d"${TRAIN}s" "${@:3}" >/dev/null; }
for conns in 64 8; do
    train "pingora passthrough" "$conns" "http://127.0.0.1:$PASS/x"
    train "pingora passthrough, the cached JWT's request" "$conns" "http://127.0.0.1:$PASS/tenant/x" \
        -H "Authorization: Bearer $TOKEN"
    gateway_scenarios train "$conns"
done
# A process writes its profile as it exits: stop both and wait for them.
for pid in "$PASS_PID" "$TG_PID"; do
    kill -INT "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
for which in tollgate passthrough; do
    compgen -G "$PROFILES/$which/*.profraw" >/dev/null || { echo "error: $which wrote no profile" >&2; exit 1; }
done
# One profile for both: the code they share (pingora, tokio) is weighted by
# both trainings, and both binaries are built from one set of dependencies.
"$PROFDATA" merge -o "$PROFILES/merged.profdata" "$PROFILES"/tollgate/*.profraw "$PROFILES"/passthrough/*.profraw

echo "pgo: building optimized binaries"
build "-Cprofile-use=$PROFILES/merged.profdata" "$TARGET/pgo-use"
mkdir -p "$OUT"
cp "$TARGET/pgo-use/production/tollgate" "$TARGET/pgo-use/production/passthrough" "$OUT/"
echo "$STAMP" >"$OUT/inputs.sha256"
echo "pgo: built $OUT/tollgate and passthrough"
