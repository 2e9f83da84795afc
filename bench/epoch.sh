#!/usr/bin/env bash
# SOURCE_DATE_EPOCH cost benchmark (issue 14): cold builds of bench/run.sh's *small* scenario
# with and without `--build-arg SOURCE_DATE_EPOCH=…`, taking turns in rotating order, each from
# an empty store holding only the base image. Prints a Markdown table of medians (wall time and
# CPU time of kiln and its children); the "Reproducible builds" section of docs/benchmarks.md
# is written from it by hand. Every run with the epoch must give the same manifest digest (the
# script fails otherwise), so the figures are those of builds that were reproducible.
#
#   bench/epoch.sh                      # target/release/kiln (built when missing), 5 runs
#   RUNS=9 bench/epoch.sh               # more runs
#   KILN=target/debug/kiln bench/epoch.sh   # another binary
#   KEEP=1 bench/epoch.sh               # keep the work dir and its results.tsv
#
# Runs as root (kiln build mounts overlays); needs /usr/bin/time and python3. The page cache
# is not dropped (the machine is shared): cold means an empty store holding only the base.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
EPOCH=${EPOCH:-1700000000}
[[ $(id -u) -eq 0 ]] || { echo "epoch.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "epoch.sh: RUNS must be a positive integer" >&2; exit 1; }
((BASH_VERSINFO[0] >= 5)) || { echo "epoch.sh: needs bash 5 (for \$EPOCHREALTIME)" >&2; exit 1; }
bench_kiln_binary epoch.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-epoch.XXXXXX")

cleanup() {
    bench_unmount_under "$WORK"
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK (results.tsv)" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
# `kiln import` stamps the image with the time of the import, so the base is imported once and
# loaded from one archive into every store: each build then starts from the same base image.
"$KILN" --root "$WORK/seed" import "$WORK/busybox.tar" bench-base:latest >/dev/null
"$KILN" --root "$WORK/seed" save -o "$WORK/base.tar" bench-base:latest

# bench/run.sh's small scenario.
ctx=$WORK/small
bench_small_context "$ctx"

results=$WORK/results.tsv
modes=(without with)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    for ((j = 0; j < 2; j++)); do
        mode=${modes[(j + rep) % 2]} # rotate which mode goes first
        store=$WORK/store-$mode
        bench_unmount_under "$store"
        rm -rf "$store"
        "$KILN" --root "$store" load -i "$WORK/base.tar" >/dev/null
        args=(build --network none --progress plain -t bench-small --metadata-file "$WORK/meta.json")
        [[ $mode == with ]] && args+=(--build-arg "SOURCE_DATE_EPOCH=$EPOCH")
        start=$EPOCHREALTIME
        /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$KILN" --root "$store" "${args[@]}" "$ctx" \
            >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
        end=$EPOCHREALTIME
        digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["containerimage.digest"])' "$WORK/meta.json")
        read -r user sys <"$WORK/cpu"
        python3 -c "print(f'$mode\t{$end - $start:.3f}\t{$user + $sys:.2f}\t$digest')" >>"$results"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
digests = {r[3] for r in rows if r[0] == "with"}
if len(digests) != 1:
    sys.exit(f"epoch.sh: builds with the epoch gave {len(digests)} different manifests: {digests}")
print("| small scenario, cold | median wall (s) | min–max (s) | median CPU (s) | runs | manifests |")
print("|---|---:|---:|---:|---:|---:|")
for mode in ["without", "with"]:
    mine = [r for r in rows if r[0] == mode]
    wall = [float(r[1]) for r in mine]
    cpu = [float(r[2]) for r in mine]
    label = "with SOURCE_DATE_EPOCH" if mode == "with" else "without"
    print(f"| {label} | {statistics.median(wall):.2f} | {min(wall):.2f}–{max(wall):.2f} | "
          f"{statistics.median(cpu):.2f} | {len(mine)} | {len({r[3] for r in mine})} distinct |")
EOF
