#!/usr/bin/env bash
# Build history cost benchmark (issue 15): what recording every build costs.
#  - no-op rebuilds of bench/run.sh's *small* scenario (every step cached) with the history
#    recorded and with KILN_NO_BUILD_HISTORY=1, taking turns in rotating order: median wall
#    time of each, so the difference is the recording's overhead on the cheapest build;
#  - the disk cost per build: the bytes of history/<id>/ after a no-op rebuild, after a cold
#    build of the small scenario, and after a build whose RUN prints LOG_MB of output (the
#    log holds every line, so this grows with the output).
# Prints Markdown tables; the "Build history" section of docs/benchmarks.md is written from
# them by hand.
#
#   bench/history.sh                      # target/release/kiln (built when missing), 15 runs
#   RUNS=31 bench/history.sh              # more runs
#   KILN=target/debug/kiln bench/history.sh   # another binary
#
# Runs as root (kiln build mounts overlays); needs /usr/bin/time, python3 and bash 5.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-15}
LOG_MB=${LOG_MB:-10}
[[ $(id -u) -eq 0 ]] || { echo "history.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "history.sh: RUNS must be a positive integer" >&2; exit 1; }
((BASH_VERSINFO[0] >= 5)) || { echo "history.sh: needs bash 5 (for \$EPOCHREALTIME)" >&2; exit 1; }
bench_kiln_binary history.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-history.XXXXXX")

cleanup() {
    bench_unmount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
store=$WORK/store
"$KILN" --root "$store" import "$WORK/busybox.tar" bench-base:latest >/dev/null
ctx=$WORK/small
bench_small_context "$ctx"
build() { "$KILN" --root "$store" build --network none --progress plain -t bench-small "$@" >"$WORK/log" 2>&1 ||
    { cat "$WORK/log" >&2; exit 1; }; }
newest_size() {
    local ids
    ids=$("$KILN" --root "$store" build history ls -q)
    local id=${ids%%$'\n'*}
    du -sb --apparent-size "$store/history/$id" | cut -f1
}

build --no-cache "$ctx"
cold=$(newest_size)
build "$ctx"
noop=$(newest_size)

results=$WORK/results.tsv
modes=(recorded off)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    for ((j = 0; j < 2; j++)); do
        mode=${modes[(j + rep) % 2]}
        start=$EPOCHREALTIME
        if [[ $mode == off ]]; then off=1; else off=; fi
        KILN_NO_BUILD_HISTORY=$off /usr/bin/time -f '%U %S' -o "$WORK/cpu" \
            "$KILN" --root "$store" build --network none --progress plain -t bench-small "$ctx" \
            >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
        end=$EPOCHREALTIME
        read -r user sys <"$WORK/cpu"
        python3 -c "print(f'$mode\t{$end - $start:.4f}\t{$user + $sys:.3f}')" >>"$results"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# A step printing LOG_MB MB of short lines: the log keeps all of it.
chatty=$WORK/chatty
mkdir -p "$chatty"
lines=$((LOG_MB * 1000000 / 64))
cat >"$chatty/Dockerfile" <<DOCKERFILE
FROM bench-base
RUN i=0; while [ \$i -lt $lines ]; do echo "line \$i of the chatty step, padded to be sixty-four bytes long"; i=\$((i+1)); done | head -c ${LOG_MB}000000
DOCKERFILE
build "$chatty"
chatty_size=$(newest_size)
records=$("$KILN" --root "$store" build history ls -q | wc -l)

python3 - "$results" "$cold" "$noop" "$chatty_size" "$LOG_MB" "$records" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
cold, noop, chatty, log_mb, records = (int(x) for x in sys.argv[2:7])
med = {m: statistics.median(float(r[1]) for r in rows if r[0] == m) for m in ("recorded", "off")}
cpu = {m: statistics.median(float(r[2]) for r in rows if r[0] == m) for m in ("recorded", "off")}
print("| no-op rebuild, small scenario | median wall (ms) | median CPU (ms) | runs |")
print("|---|---:|---:|---:|")
for m, label in (("off", "KILN_NO_BUILD_HISTORY=1"), ("recorded", "history recorded")):
    n = sum(1 for r in rows if r[0] == m)
    print(f"| {label} | {med[m] * 1000:.1f} | {cpu[m] * 1000:.0f} | {n} |")
print(f"| overhead | {(med['recorded'] - med['off']) * 1000:+.1f} | {(cpu['recorded'] - cpu['off']) * 1000:+.0f} | |")
print()
print("| build | history/<id>/ on disk (bytes) |")
print("|---|---:|")
print(f"| small scenario, cold (3 RUN, 2 COPY, no output) | {cold} |")
print(f"| small scenario, no-op rebuild (all cached) | {noop} |")
print(f"| one RUN printing {log_mb} MB | {chatty} |")
print(f"\n(records in the store at the end: {records})")
PY
