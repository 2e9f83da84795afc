#!/usr/bin/env bash
# Start-up cost of a container (issue 11): `kiln run --rm bench-base:latest true`, with the
# default network (slirp4netns, when installed) and with `--network none`, for one or more
# kiln binaries, measured by hyperfine (Debian's package). The image is the busybox rootfs the
# tests use (scripts/busybox-rootfs.sh), imported into a store of each binary's own. Prints
# hyperfine's Markdown tables; docs/benchmarks.md's "Container start" section is written from
# them by hand.
#
#   bench/run-rm.sh                                      # target/release/kiln
#   RUNS=30 bench/run-rm.sh before=/tmp/kiln-before after=target/release/kiln
#
# Each argument is LABEL=PATH (a bare path is labelled by its file name). Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${RUNS:-20}
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-run-rm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

[[ $(id -u) -eq 0 ]] || { echo "run-rm.sh: must run as root" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "run-rm.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "run-rm.sh: RUNS must be a positive integer" >&2; exit 1; }
if (($# == 0)); then
    cargo build --release --quiet --locked --bin kiln
    set -- "kiln=$ROOT/target/release/kiln"
fi
"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null

for network in default none; do
    commands=()
    for arg in "$@"; do
        if [[ $arg == *=* ]]; then label=${arg%%=*} bin=${arg#*=}; else label=$(basename "$arg") bin=$arg; fi
        [[ -x $bin ]] || { echo "run-rm.sh: $bin is not an executable" >&2; exit 1; }
        store=$WORK/store-$label
        if [[ ! -d $store ]]; then
            "$bin" --root "$store" import "$WORK/busybox.tar" bench-base:latest >/dev/null
        fi
        commands+=(--command-name "$label ($network)"
            "$bin --root $store run --rm --network $network bench-base:latest true")
    done
    # Runs alternate between the binaries only per hyperfine command; warm-up runs fill the
    # page cache and the snapshot.
    hyperfine --style basic --warmup 3 --runs "$RUNS" --export-markdown "$WORK/$network.md" \
        "${commands[@]}" >&2
    cat "$WORK/$network.md"
    echo
done
