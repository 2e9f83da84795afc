#!/usr/bin/env bash
# `docker build` through `kiln serve` against `kiln build`, on bench/run.sh's *small* scenario
# (issue 12: within 1.2x). Both build the same context with --network none from the same
# busybox base, on one store, the two taking turns: *cold* (the build's cache records removed
# by a fresh store holding only the base image), *no-op rebuild* (the same build again) and
# *one file changed* (src/main.txt edited, so its COPY and the RUNs after it re-run). Prints a
# Markdown table of medians; docs/benchmarks.md's "kiln serve" section is written from it.
# The docker CLI's own floor (`docker version` through the same daemon) is timed in every round
# too, and the last column is the API build's ratio to `kiln build` without it.
#
#   bench/serve.sh              # target/release/kiln, RUNS=5
#   RUNS=9 KILN=target/debug/kiln bench/serve.sh
#
# The docker CLI sends the context as a tar, which the daemon unpacks before building;
# `kiln build DIR` reads the directory. That unpacking is part of what is measured; the
# `kiln build -` column (the same tar on stdin) shows how much of the difference it is. The
# `kiln --host` column is kiln's own client through the same daemon (it tars the directory
# while streaming it, as the docker CLI does), against the docker CLI. The last line times
# `docker version` through the daemon: the docker CLI's own start-up, which a no-op build
# through it cannot go below. Runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
KILN=${KILN:-$ROOT/target/release/kiln}
[[ $(id -u) -eq 0 ]] || { echo "serve.sh: must run as root" >&2; exit 1; }
[[ -x $KILN ]] || cargo build --release --quiet --locked --bin kiln
command -v docker >/dev/null || { echo "serve.sh: the docker CLI is not on PATH" >&2; exit 1; }
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-serve.XXXXXX")
serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
ctx=$WORK/small
bench_small_context "$ctx"

now() { date +%s.%N; }
# One store per run and tool, with the base image imported: a cold build finds no records.
fresh_store() {
    local store=$1
    rm -rf "$store"
    KILN_ROOT=$store "$KILN" import "$WORK/busybox.tar" bench-base >/dev/null
}
start_daemon() {
    local store=$1
    KILN_ROOT=$store "$KILN" serve --host "unix://$WORK/kiln.sock" 2>>"$WORK/serve.log" &
    serve_pid=$!
    for _ in $(seq 200); do [[ -S $WORK/kiln.sock ]] && docker -H "unix://$WORK/kiln.sock" version >/dev/null 2>&1 && return; sleep 0.05; done
    echo "serve.sh: kiln serve did not start" >&2; exit 1
}
stop_daemon() {
    kill -TERM "$serve_pid"; wait "$serve_pid" || true; serve_pid=
}
build_cli() { KILN_ROOT=$1 "$KILN" build -q --network none -t app "$ctx" >/dev/null; }
# The same context as a tar on stdin, as the daemon receives it: separates the daemon's own
# cost from that of a tar context (unpacked per build, no file digest index).
build_stdin() {
    tar -C "$ctx" -cf - . | KILN_ROOT=$1 "$KILN" build -q --network none -t app - >/dev/null
}
build_api() {
    DOCKER_BUILDKIT=0 docker -H "unix://$WORK/kiln.sock" build -q --network none -t app "$ctx" >/dev/null 2>&1
}
# kiln as the client: its own store stays empty; everything happens in the daemon's.
build_client() {
    KILN_ROOT=$WORK/client-root "$KILN" --host "unix://$WORK/kiln.sock" build -q --network none -t app "$ctx" >/dev/null
}
docker_version() { docker -H "unix://$WORK/kiln.sock" version >/dev/null; }
timed() { local t0; t0=$(now); "$@"; echo "$(now) - $t0" | bc; }

results=$WORK/results.tsv
for run in $(seq "$RUNS"); do
    for tool in cli stdin api client; do
        store=$WORK/store-$tool
        fresh_store "$store"
        echo "main v1" >"$ctx/src/main.txt"
        [[ $tool == api || $tool == client ]] && start_daemon "$store"
        fn=build_$tool
        printf '%s\tcold\t%s\n' "$tool" "$(timed $fn "$store")" >>"$results"
        printf '%s\tnoop\t%s\n' "$tool" "$(timed $fn "$store")" >>"$results"
        if [[ $tool == api ]]; then printf 'cli\tversion\t%s\n' "$(timed docker_version)" >>"$results"; fi
        echo "main v$run-$tool" >"$ctx/src/main.txt"
        printf '%s\tchanged\t%s\n' "$tool" "$(timed $fn "$store")" >>"$results"
        [[ $tool == api || $tool == client ]] && stop_daemon
    done
done

python3 - "$results" "$RUNS" "$KILN" <<'PY'
import statistics, sys, subprocess
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines()]
med = {}
for tool, mode, t in rows:
    med.setdefault((tool, mode), []).append(float(t))
print(f"runs: {sys.argv[2]}; kiln: {subprocess.run([sys.argv[3], '--version'], capture_output=True, text=True).stdout.strip()}; "
      f"load: {open('/proc/loadavg').read().split()[:3]}")
print()
# The docker CLI's floor (`docker version`: its start-up and one request, timed in every
# round beside the builds) is no part of kiln; the last ratio leaves it out.
version = statistics.median(med[("cli", "version")])
print("| small scenario | kiln build DIR (s) | kiln build - (tar) (s) | docker build via kiln serve (s) | serve / DIR | target | met | serve / tar | kiln --host build (s) | kiln --host / docker | (serve − docker floor) / DIR |")
print("|---|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|")
for mode, label in [("cold", "cold"), ("noop", "no-op rebuild"), ("changed", "one file changed")]:
    cli, tar, api, client = (statistics.median(med[(t, mode)]) for t in ("cli", "stdin", "api", "client"))
    ratio = api / cli
    print(f"| {label} | {cli:.3f} | {tar:.3f} | {api:.3f} | {ratio:.2f}× | ≤ 1.2× | {'yes' if ratio <= 1.2 else 'no'} | {api / tar:.2f}× | {client:.3f} | {client / api:.2f}× | {(api - version) / cli:.2f}× |")
print()
print(f"docker CLI floor, `docker version` through kiln serve (median of {sys.argv[2]}): {version:.3f} s")
print(f"load average at end: {open('/proc/loadavg').read().split()[:3]}")
PY
