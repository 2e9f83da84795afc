#!/usr/bin/env bash
# Multi-platform build cost (issue 14): cold builds of bench/run.sh's *small* scenario without
# its RUN steps (COPY and metadata only, so nothing runs under emulation) for one platform
# (linux/amd64) and for two (linux/amd64,linux/arm64), taking turns in rotating order, each
# from a store holding only the base. The base is a two-platform index (the host's busybox
# and Debian's arm64 busybox-static, scripts/setup.sh), built into each store by kiln itself
# before the timed build. A third mode, *two-unshared*, builds two platforms with
# KILN_NO_LAYER_SHARING=1 (each platform writes its own copy of the layers the targets could
# share, as before that sharing existed), so one run shows what it saves. Prints a Markdown
# table of medians and the ratios; the
# "Multi-platform builds" section of docs/benchmarks.md is written from it by hand. The
# target is a ratio of at most 1.3.
#
#   bench/multiplatform.sh                      # target/release/kiln (built when missing), 5 runs
#   RUNS=9 bench/multiplatform.sh               # more runs
#   KILN=target/debug/kiln bench/multiplatform.sh
#   KEEP=1 bench/multiplatform.sh               # keep the work dir and its results.tsv
#
# Runs as root; needs /usr/bin/time, python3 and /var/cache/kiln/arm64/busybox.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
ARM64_BUSYBOX=${ARM64_BUSYBOX:-/var/cache/kiln/arm64/busybox}
[[ $(id -u) -eq 0 ]] || { echo "multiplatform.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "multiplatform.sh: RUNS must be a positive integer" >&2; exit 1; }
[[ -x $ARM64_BUSYBOX ]] || { echo "multiplatform.sh: $ARM64_BUSYBOX missing (scripts/setup.sh)" >&2; exit 1; }
((BASH_VERSINFO[0] >= 5)) || { echo "multiplatform.sh: needs bash 5 (for \$EPOCHREALTIME)" >&2; exit 1; }
bench_kiln_binary multiplatform.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-multiplatform.XXXXXX")

cleanup() {
    bench_unmount_under "$WORK"
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK (results.tsv)" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The base: one rootfs tar per platform, ADDed by a two-platform build of its own.
base=$WORK/base
mkdir -p "$base"
"$ROOT/scripts/busybox-rootfs.sh" "$base/busybox-amd64.tar" >/dev/null
# Listing the arm64 binary's applets runs it: through qemu-user (binfmt_misc).
BUSYBOX=$ARM64_BUSYBOX "$ROOT/scripts/busybox-rootfs.sh" "$base/busybox-arm64.tar" >/dev/null
cat >"$base/Dockerfile" <<'DOCKERFILE'
FROM scratch
ARG TARGETARCH
ADD busybox-$TARGETARCH.tar /
CMD ["sh"]
DOCKERFILE

# bench/run.sh's small scenario, its RUN steps left out.
ctx=$WORK/small
bench_small_context "$ctx"
grep -v '^RUN ' "$ctx/Dockerfile" >"$ctx/Dockerfile.copy"
mv "$ctx/Dockerfile.copy" "$ctx/Dockerfile"

results=$WORK/results.tsv
modes=(one two two-unshared)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    for ((j = 0; j < ${#modes[@]}; j++)); do
        mode=${modes[(j + rep) % ${#modes[@]}]} # rotate which mode goes first
        store=$WORK/store-$mode
        bench_unmount_under "$store"
        rm -rf "$store"
        "$KILN" --root "$store" build --progress quiet --platform linux/amd64,linux/arm64 \
            -t bench-base "$base" >/dev/null 2>&1
        platforms=linux/amd64
        [[ $mode == two* ]] && platforms=linux/amd64,linux/arm64
        unshared=()
        [[ $mode == two-unshared ]] && unshared=(KILN_NO_LAYER_SHARING=1)
        start=$EPOCHREALTIME
        env "${unshared[@]}" /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$KILN" --root "$store" build --network none \
            --progress plain --platform "$platforms" -t bench-small "$ctx" \
            >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
        end=$EPOCHREALTIME
        read -r user sys <"$WORK/cpu"
        python3 -c "print(f'$mode\t{$end - $start:.3f}\t{$user + $sys:.2f}')" >>"$results"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("| small scenario, COPY and metadata only, cold | median wall (s) | min–max (s) | median CPU (s) | total CPU (s) | runs |")
print("|---|---:|---:|---:|---:|---:|")
med = {}
for mode, label in [("one", "--platform linux/amd64"),
                    ("two-unshared", "--platform linux/amd64,linux/arm64, KILN_NO_LAYER_SHARING=1"),
                    ("two", "--platform linux/amd64,linux/arm64")]:
    wall = [float(r[1]) for r in rows if r[0] == mode]
    cpu = [float(r[2]) for r in rows if r[0] == mode]
    med[mode] = statistics.median(wall)
    # Wall in milliseconds' precision: a cold small build takes tens of them when the machine
    # is quiet. CPU comes from time(1) in hundredths, so the total over the runs says more.
    print(f"| {label} | {med[mode]:.3f} | {min(wall):.3f}–{max(wall):.3f} | "
          f"{statistics.median(cpu):.2f} | {sum(cpu):.2f} | {len(wall)} |")
print(f"\nratio two/one (median wall): {med['two'] / med['one']:.2f} (target ≤ 1.3); "
      f"without layer sharing: {med['two-unshared'] / med['one']:.2f}")
PY
