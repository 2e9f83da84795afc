#!/usr/bin/env bash
# Run latency through the Engine API (issue 12): `docker run --rm --network none busybox true`
# sent by the docker 20.10 client to `kiln serve` and to dockerd 20.10 on the same machine,
# side by side in rotating order (odd runs kiln first, even runs dockerd first), after two
# warm-up runs each. Prints a Markdown table of medians (with min and max) and the load
# average at start and end; docs/benchmarks.md's "docker run through kiln serve" section is
# written from it. Target: kiln at most 0.7x dockerd's time.
#
#   bench/serve-run.sh               # target/release/kiln, RUNS=15
#   RUNS=21 KILN=target/debug/kiln bench/serve-run.sh
#
# dockerd is Debian bookworm's docker.io 20.10.24 with its containerd and runc, taken out of
# the packages (apt-get download + dpkg-deb -x into /var/cache/kiln/dockerd-20.10, not
# installed: no service starts, nothing else on the machine changes; `apt-get install
# docker.io` would start one on a machine with an init). It runs with its own data-root,
# exec-root, pidfile, socket and config file in a temp dir, `--bridge=none --iptables=false
# --ip6tables=false --userland-proxy=false`, and starts its own containerd (state under the
# same temp dir); both are stopped and the dir removed at the end. busybox (the tests' rootfs,
# scripts/busybox-rootfs.sh) is imported into kiln's store and loaded into dockerd from a
# `kiln save` of it: offline. Runs as root. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-15}
[[ $(id -u) -eq 0 ]] || { echo "serve-run.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "serve-run.sh: RUNS must be a positive integer" >&2; exit 1; }
bench_kiln_binary serve-run.sh

CACHE=${KILN_DOCKERD_CACHE:-/var/cache/kiln/dockerd-20.10}
if [[ ! -x $CACHE/root/usr/sbin/dockerd || ! -x $CACHE/root/usr/bin/containerd ]]; then
    echo "serve-run.sh: fetching docker.io, containerd and runc into $CACHE" >&2
    mkdir -p "$CACHE/debs"
    chmod 0755 "$CACHE/debs"  # apt-get download drops privileges to _apt where it can
    (cd "$CACHE/debs" && apt-get download -qq docker.io containerd runc 2>/dev/null)
    for deb in "$CACHE"/debs/*.deb; do dpkg-deb -x "$deb" "$CACHE/root"; done
fi
DOCKER=$CACHE/root/usr/bin/docker

WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-serve-run.XXXXXX")
serve_pid=
cleanup() {
    [[ -n $serve_pid ]] && kill -TERM "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
    if [[ -f $WORK/docker.pid ]]; then
        kill -TERM "$(cat "$WORK/docker.pid")" 2>/dev/null || true
        # dockerd removes its pidfile once it (and the containerd it started) has stopped.
        for _ in $(seq 150); do [[ -f $WORK/docker.pid ]] || break; sleep 0.2; done
    fi
    bench_unmount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
export KILN_ROOT=$WORK/kiln-store
"$KILN" import "$WORK/busybox.tar" busybox:latest >/dev/null
"$KILN" save busybox:latest -o "$WORK/busybox-image.tar"

"$KILN" serve --host "unix://$WORK/kiln.sock" 2>>"$WORK/serve.log" &
serve_pid=$!

echo '{}' >"$WORK/daemon.json"
PATH=$CACHE/root/usr/bin:$CACHE/root/usr/sbin:$PATH dockerd \
    --config-file "$WORK/daemon.json" --data-root "$WORK/docker-data" \
    --exec-root "$WORK/docker-exec" --pidfile "$WORK/docker.pid" \
    -H "unix://$WORK/docker.sock" --bridge=none --iptables=false --ip6tables=false \
    --userland-proxy=false >"$WORK/dockerd.log" 2>&1 &

kiln_host=unix://$WORK/kiln.sock
docker_host=unix://$WORK/docker.sock
for host in "$kiln_host" "$docker_host"; do
    for _ in $(seq 300); do "$DOCKER" -H "$host" version >/dev/null 2>&1 && break; sleep 0.1; done
    "$DOCKER" -H "$host" version >/dev/null || { echo "serve-run.sh: no daemon at $host" >&2; tail "$WORK"/*.log >&2; exit 1; }
done
"$DOCKER" -H "$docker_host" load -i "$WORK/busybox-image.tar" >/dev/null

now() { date +%s.%N; }
run_on() {
    local t0
    t0=$(now)
    "$DOCKER" -H "$1" run --rm --network none busybox true
    echo "$(now) - $t0" | bc
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in 1 2; do run_on "$kiln_host" >/dev/null; run_on "$docker_host" >/dev/null; done
results=$WORK/results.tsv
for run in $(seq "$RUNS"); do
    if ((run % 2)); then order=(kiln dockerd); else order=(dockerd kiln); fi
    for daemon in "${order[@]}"; do
        host=$kiln_host
        [[ $daemon == dockerd ]] && host=$docker_host
        printf '%s\t%s\n' "$daemon" "$(run_on "$host")" >>"$results"
    done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$results" "$RUNS" "$KILN" "$load_start" "$load_end" <<'PY'
import statistics, subprocess, sys
path, runs, kiln, load_start, load_end = sys.argv[1:]
times = {}
for line in open(path).read().splitlines():
    daemon, t = line.split('\t')
    times.setdefault(daemon, []).append(float(t))
version = subprocess.run([kiln, '--version'], capture_output=True, text=True).stdout.strip()
print(f"runs: {runs} each, rotating order; kiln: {version}; load average {load_start} at start, {load_end} at end")
print()
print("| `docker run --rm --network none busybox true` (20.10 client) | median (ms) | min (ms) | max (ms) |")
print("|---|---:|---:|---:|")
for daemon, label in [("kiln", "kiln serve"), ("dockerd", "dockerd 20.10.24 (containerd 1.6, runc 1.1)")]:
    t = times[daemon]
    print(f"| {label} | {statistics.median(t) * 1000:.0f} | {min(t) * 1000:.0f} | {max(t) * 1000:.0f} |")
ratio = statistics.median(times["kiln"]) / statistics.median(times["dockerd"])
print()
print(f"kiln / dockerd: {ratio:.2f}x (target <= 0.7x: {'met' if ratio <= 0.7 else 'not met'})")
PY
