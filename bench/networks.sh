#!/usr/bin/env bash
# Bridge networks (issue 13): the start-up cost of `kiln run --rm --network NET
# bench-base:latest true` on a user-defined bridge network, on the default bridge and on
# `--network none` (the baseline: the issue asks for the user network within 1.3x of it), and
# TCP throughput between two containers on one bridge against a bare veth pair between two
# plain network namespaces (busybox nc pushing zeros; the issue asks for 0.8x), in one run.
# Everything happens in a network namespace this script makes. Prints Markdown tables;
# docs/benchmarks.md's "Bridge networks" section is written from them by hand.
#
#   bench/networks.sh                     # target/release/kiln
#   KILN=target/debug/kiln RUNS=30 bench/networks.sh
#
# Runs as root; needs hyperfine, nftables, iproute2, busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
RUNS=${RUNS:-20}
MIB=${MIB:-512}
[[ $(id -u) -eq 0 ]] || { echo "networks.sh: must run as root" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "networks.sh: needs hyperfine" >&2; exit 1; }
bench_kiln_binary networks.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-networks.XXXXXX")
NS=kiln-bench-$$
cleanup() {
    ip netns exec "$NS" true 2>/dev/null && {
        for id in $(nsenter --net=/run/netns/$NS "$KILN" --root "$WORK/store" ps -aq 2>/dev/null); do
            nsenter --net=/run/netns/$NS "$KILN" --root "$WORK/store" rm -f "$id" >/dev/null 2>&1 || true
        done
    }
    ip netns del "$NS" 2>/dev/null || true
    ip netns del "$NS-a" 2>/dev/null || true
    ip netns del "$NS-b" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up
in_ns() { nsenter --net=/run/netns/$NS "$@"; }
kiln() { in_ns "$KILN" --root "$WORK/store" "$@"; }

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
kiln import "$WORK/busybox.tar" bench-base:latest >/dev/null
kiln network create --subnet 10.123.0.0/16 benchnet >/dev/null

echo "## kiln run --rm (hyperfine, $RUNS runs)"
hyperfine --style basic --warmup 3 --runs "$RUNS" --export-markdown "$WORK/start.md" \
    --command-name "none" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network none bench-base:latest true" \
    --command-name "benchnet" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network benchnet bench-base:latest true" \
    --command-name "bridge" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network bridge bench-base:latest true" >&2
cat "$WORK/start.md"
echo

# Throughput: $MIB MiB of zeros through busybox nc, receiver on port 5001, timed by the
# sender itself from /proc/uptime (so a container's start is not counted).
SEND='s=$(cut -d" " -f1 /proc/uptime); dd if=/dev/zero bs=1M count='$MIB' 2>/dev/null | busybox nc "$0" 5001; e=$(cut -d" " -f1 /proc/uptime); busybox awk "BEGIN { print $e - $s }"'
kiln run -d --name sink --network benchnet --ip 10.123.0.10 bench-base:latest \
    sh -c 'sleep 3600 | nc -l -p 5001 > /dev/null' >/dev/null
sleep 0.5
bridge=$(kiln run --rm --network benchnet bench-base:latest sh -c "$SEND" 10.123.0.10)

ip netns add "$NS-a"; ip netns add "$NS-b"
ip -n "$NS-a" link add v0 type veth peer name v1 netns "$NS-b"
ip -n "$NS-a" addr add 10.124.0.1/24 dev v0; ip -n "$NS-a" link set v0 up
ip -n "$NS-b" addr add 10.124.0.2/24 dev v1; ip -n "$NS-b" link set v1 up
# busybox nc ends a connection when its own stdin ends: the receivers read from a sleep.
nsenter --net=/run/netns/$NS-b sh -c 'sleep 3600 | busybox nc -l -p 5001 > /dev/null' &
sink_pid=$!
sleep 0.5
veth=$(nsenter --net=/run/netns/$NS-a sh -c "$SEND" 10.124.0.2)
# The receiver's shell and its sleep, by their ids.
for child in $(cat /proc/$sink_pid/task/$sink_pid/children 2>/dev/null); do kill "$child" 2>/dev/null || true; done
kill "$sink_pid" 2>/dev/null || true

echo "## TCP throughput, $MIB MiB through busybox nc"
echo
echo "| path | seconds | MiB/s |"
echo "|---|---|---|"
printf '| bare veth pair between two namespaces | %.2f | %.0f |\n' "$veth" "$(echo "$MIB / $veth" | bc -l)"
printf '| two containers on a kiln bridge | %.2f | %.0f |\n' "$bridge" "$(echo "$MIB / $bridge" | bc -l)"
printf '\nratio bridge/veth: %.2f\n' "$(echo "$veth / $bridge" | bc -l)"
