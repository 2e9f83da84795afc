#!/usr/bin/env bash
# Snapshot cost benchmark (issue 10): cold-build time (wall and CPU), kiln's peak RSS and the
# store's disk use after the build (all of it, and snapshots/ alone) for bench/run.sh's *small*
# and *thirty small layers* scenarios and the issue's repeated-layer Dockerfile, with one or
# more kiln binaries taking turns in rotating order. Prints a Markdown table of medians; the
# "Repeated layers" section of docs/benchmarks.md is written from it by hand. CPU time (user +
# system of kiln and its children) is the steadier figure on a loaded machine.
#
#   bench/snapshots.sh                           # target/release/kiln, 3 runs
#   RUNS=5 bench/snapshots.sh before=/tmp/kiln-main after=target/release/kiln
#   KEEP=1 bench/snapshots.sh                    # keep the work dir and its results.tsv
#
# Each argument is LABEL=PATH (a bare path is labelled by its file name). A binary that fails
# a scenario (a kiln before issue 10 cannot build the repeated-layer one) gets "fails" there.
# Runs as root (kiln build mounts overlays); needs /usr/bin/time. The page cache is not
# dropped (the machine is shared): cold means an empty store holding only the base image.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-3}
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-snapshots.XXXXXX")
trap '[[ ${KEEP:-0} == 1 ]] && echo "kept $WORK (results.tsv)" >&2 || rm -rf "$WORK"' EXIT

[[ $(id -u) -eq 0 ]] || { echo "snapshots.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "snapshots.sh: RUNS must be a positive integer" >&2; exit 1; }
if (($# == 0)); then
    cargo build --release --quiet --locked --bin kiln
    set -- "kiln=$ROOT/target/release/kiln"
fi
labels=() bins=()
for arg in "$@"; do
    if [[ $arg == *=* ]]; then labels+=("${arg%%=*}") bins+=("${arg#*=}"); else labels+=("$(basename "$arg")") bins+=("$arg"); fi
    [[ -x ${bins[-1]} ]] || { echo "snapshots.sh: ${bins[-1]} is not an executable" >&2; exit 1; }
done

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null

# The scenarios, as bench/run.sh writes them (small, thirty), and issue 10's Dockerfile.
ctx=$WORK/ctx
mkdir -p "$ctx/thirty" "$ctx/repeated"
bench_small_context "$ctx/small"
echo "app v1" >"$ctx/thirty/app.txt"
{
    echo "FROM bench-base"
    for i in $(seq -w 1 29); do
        ((10#$i == 15)) && echo "COPY app.txt /app.txt"
        echo "RUN echo layer $i > /layer$i"
    done
} >"$ctx/thirty/Dockerfile"
printf '#!/bin/sh\necho "$@"\n' >"$ctx/repeated/entrypoint.sh"
chmod 755 "$ctx/repeated/entrypoint.sh"
cat >"$ctx/repeated/Dockerfile" <<'EOF'
FROM bench-base
COPY entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
RUN echo after > /after
EOF

results=$WORK/results.tsv
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    for scenario in small thirty repeated; do
        n=${#bins[@]}
        for ((j = 0; j < n; j++)); do
            t=$(((j + rep) % n)) # rotate which binary goes first
            label=${labels[t]} bin=${bins[t]} store=$WORK/store-$label
            bench_unmount_under "$store"
            rm -rf "$store"
            "$bin" --root "$store" import "$WORK/busybox.tar" bench-base:latest >/dev/null
            start=$EPOCHREALTIME
            if /usr/bin/time -f '%M %U %S' -o "$WORK/rss" "$bin" --root "$store" build --network none \
                --progress plain -t "bench-$scenario" "$ctx/$scenario" >"$WORK/log" 2>&1; then
                end=$EPOCHREALTIME
                secs=$(python3 -c "print(f'{$end - $start:.3f}')")
                disk=$(du -s --block-size=1 "$store" | cut -f1)
                snaps=$(du -s --block-size=1 "$store/snapshots" | cut -f1)
                read -r rss user sys <"$WORK/rss"
                cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$label" "$secs" "$rss" \
                    "$disk" "$snaps" "$cpu" >>"$results"
            else
                printf '%s\t%s\tfails\n' "$scenario" "$label" >>"$results"
            fi
        done
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" "${labels[@]}" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
labels = sys.argv[2:]
names = {"small": "small (a few RUN and COPY)", "thirty": "thirty small layers",
         "repeated": "issue 10 (a layer twice)"}
print("| scenario | kiln | cold build (s) | min–max (s) | CPU (s) | peak RSS (MiB) | store (KiB) | snapshots/ (KiB) | runs |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for s in ["small", "thirty", "repeated"]:
    for label in labels:
        mine = [r for r in rows if r[0] == s and r[1] == label]
        ok = [r for r in mine if r[2] != "fails"]
        if not ok:
            print(f"| {names[s]} | {label} | fails | | | | | | {len(mine)} |")
            continue
        med = lambda i: statistics.median(float(r[i]) for r in ok)
        times = [float(r[2]) for r in ok]
        print(f"| {names[s]} | {label} | {med(2):.2f} | {min(times):.2f}–{max(times):.2f} | "
              f"{med(6):.2f} | "
              f"{med(3) / 1024:.1f} | "
              f"{med(4) / 1024:.0f} | {med(5) / 1024:.0f} | {len(ok)} |")
EOF
