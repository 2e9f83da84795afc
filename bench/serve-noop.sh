#!/usr/bin/env bash
# The no-op rebuild of bench/run.sh's *small* scenario, closer up than bench/serve.sh can (a
# no-op takes tens of milliseconds, where that script's single timings vary by ±50 % on a
# shared machine): hyperfine (Debian's package) runs, after warm-up runs, `kiln build DIR`,
# `kiln build -` (the context as a tar on stdin), `DOCKER_BUILDKIT=0 docker build` through
# `kiln serve`, and `docker version` through it (the docker CLI's own start-up and one request,
# which no build through that CLI can go below), all on one store whose cache already holds
# the build. One or more kiln binaries, each with its own store and daemon. Prints hyperfine's
# Markdown tables; docs/benchmarks.md's "kiln serve" section is written from them.
#
#   bench/serve-noop.sh                                     # target/release/kiln
#   RUNS=60 bench/serve-noop.sh before=/tmp/kiln-before after=target/release/kiln
#
# Each argument is LABEL=PATH (a bare path is labelled by its file name). Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-40}
[[ $(id -u) -eq 0 ]] || { echo "serve-noop.sh: must run as root" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "serve-noop.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }
command -v docker >/dev/null || { echo "serve-noop.sh: the docker CLI is not on PATH" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "serve-noop.sh: RUNS must be a positive integer" >&2; exit 1; }
if (($# == 0)); then
    bench_kiln_binary serve-noop.sh
    set -- "kiln=$KILN"
fi
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-serve-noop.XXXXXX")
serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
ctx=$WORK/small
bench_small_context "$ctx"
tar -C "$ctx" -cf "$WORK/small.tar" .
export DOCKER_BUILDKIT=0

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
for arg in "$@"; do
    if [[ $arg == *=* ]]; then label=${arg%%=*} bin=${arg#*=}; else label=$(basename "$arg") bin=$arg; fi
    [[ -x $bin ]] || { echo "serve-noop.sh: $bin is not an executable" >&2; exit 1; }
    store=$WORK/store-$label
    sock=$WORK/$label.sock
    KILN_ROOT=$store "$bin" import "$WORK/busybox.tar" bench-base >/dev/null
    KILN_ROOT=$store "$bin" build -q --network none -t app "$ctx" >/dev/null
    KILN_ROOT=$store "$bin" serve --host "unix://$sock" 2>>"$WORK/serve.log" &
    serve_pid=$!
    for _ in $(seq 200); do docker -H "unix://$sock" version >/dev/null 2>&1 && break; sleep 0.05; done
    # Through hyperfine's shell (its start-up subtracted): hyperfine 1.15 has no --input, and
    # the tar goes in by redirection.
    hyperfine --style basic --warmup 5 --runs "$RUNS" --export-markdown "$WORK/$label.md" \
        --command-name "$label: kiln build DIR" "env KILN_ROOT=$store $bin build -q --network none -t app $ctx" \
        --command-name "$label: kiln build - (tar)" "env KILN_ROOT=$store $bin build -q --network none -t app - <$WORK/small.tar" \
        --command-name "$label: docker build via kiln serve" "docker -H unix://$sock build -q --network none -t app $ctx" \
        --command-name "$label: docker version via kiln serve" "docker -H unix://$sock version" \
        >&2
    kill -TERM "$serve_pid"; wait "$serve_pid" || true; serve_pid=
    cat "$WORK/$label.md"
    echo
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
