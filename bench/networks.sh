#!/usr/bin/env bash
# Bridge networks (issue 13): the start-up cost of `kiln run --rm --network NET
# bench-base:latest true` on a user-defined bridge network, on the default bridge and on
# `--network none` (the baseline: the issue asks for the user network within 1.3x of it), and
# TCP throughput between two containers on one bridge against a bare veth pair between two
# plain network namespaces (iperf3; the issue asks for 0.8x), in one run, rounds of the two
# interleaved. Everything happens in network namespaces this script makes. Prints Markdown
# tables with medians; docs/benchmarks.md's "Bridge networks" section is written from them
# by hand.
#
#   bench/networks.sh                     # target/release/kiln
#   KILN=target/debug/kiln RUNS=30 ROUNDS=7 SECONDS_PER_ROUND=5 bench/networks.sh
#
# Runs as root; needs hyperfine, iperf3 (Debian's, dynamically linked: the containers get it
# with the host's libraries bind-mounted read-only, as busybox has none), nftables,
# iproute2, busybox-static, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
RUNS=${RUNS:-20}
ROUNDS=${ROUNDS:-7}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
[[ $(id -u) -eq 0 ]] || { echo "networks.sh: must run as root" >&2; exit 1; }
for tool in hyperfine iperf3 python3; do
    command -v $tool >/dev/null || { echo "networks.sh: needs $tool" >&2; exit 1; }
done
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

echo "## kiln run --rm (hyperfine, $RUNS runs; median, min, max in ms)"
echo
hyperfine --style basic --warmup 3 --runs "$RUNS" --export-json "$WORK/start.json" \
    --command-name "none" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network none bench-base:latest true" \
    --command-name "benchnet" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network benchnet bench-base:latest true" \
    --command-name "bridge" "nsenter --net=/run/netns/$NS $KILN --root $WORK/store run --rm --network bridge bench-base:latest true" >&2
python3 - "$WORK/start.json" <<'PY'
import json, statistics, sys
results = json.load(open(sys.argv[1]))["results"]
print("| `--network` | median | min | max |")
print("|---|---|---|---|")
medians = {}
for r in results:
    times = [t * 1000 for t in r["times"]]
    medians[r["command"]] = statistics.median(times)
    print(f"| {r['command']} | {medians[r['command']]:.1f} | {min(times):.1f} | {max(times):.1f} |")
print()
print(f"user network / none: {medians['benchnet'] / medians['none']:.2f}x; "
      f"default bridge / none: {medians['bridge'] / medians['none']:.2f}x")
PY
echo

# Throughput: iperf3, one TCP stream for $SECONDS_PER_ROUND s per round, the receiver's
# figure. The containers run Debian's iperf3 with the host's libraries mounted read-only.
TOOL_MOUNTS=(-v /usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro -v /usr/lib64:/lib64:ro
    -v "$(command -v iperf3):/usr/local/bin/iperf3:ro")
kiln run -d --name sink --network benchnet --ip 10.123.0.10 "${TOOL_MOUNTS[@]}" \
    bench-base:latest iperf3 -s >/dev/null
ip netns add "$NS-a"; ip netns add "$NS-b"
ip -n "$NS-a" link add v0 type veth peer name v1 netns "$NS-b"
ip -n "$NS-a" addr add 10.124.0.1/24 dev v0; ip -n "$NS-a" link set v0 up
ip -n "$NS-b" addr add 10.124.0.2/24 dev v1; ip -n "$NS-b" link set v1 up
ip -n "$NS-a" link set lo up; ip -n "$NS-b" link set lo up
nsenter --net=/run/netns/$NS-b iperf3 -s -D -I "$WORK/iperf3-veth.pid"
sleep 1
# Gbit/s the receiver counted, from iperf3's JSON on stdin.
gbits() { python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9)'; }
: >"$WORK/rounds"
for round in $(seq 1 "$ROUNDS"); do
    veth=$(nsenter --net=/run/netns/$NS-a iperf3 -c 10.124.0.2 -t "$SECONDS_PER_ROUND" -J | gbits)
    bridge=$(kiln run --rm --network benchnet "${TOOL_MOUNTS[@]}" bench-base:latest \
        iperf3 -c 10.123.0.10 -t "$SECONDS_PER_ROUND" -J | gbits)
    echo "$round $veth $bridge" >>"$WORK/rounds"
    echo "round $round: veth $veth, bridge $bridge Gbit/s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
kill "$(cat "$WORK/iperf3-veth.pid")" 2>/dev/null || true

echo "## TCP throughput, iperf3 ($ROUNDS rounds of $SECONDS_PER_ROUND s, interleaved; Gbit/s)"
echo
python3 - "$WORK/rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
veth = [float(r[1]) for r in rows]
bridge = [float(r[2]) for r in rows]
print("| path | median | min | max |")
print("|---|---|---|---|")
print(f"| bare veth pair between two namespaces | {statistics.median(veth):.2f} | {min(veth):.2f} | {max(veth):.2f} |")
print(f"| two containers on a kiln bridge | {statistics.median(bridge):.2f} | {min(bridge):.2f} | {max(bridge):.2f} |")
print()
ratios = [b / v for v, b in zip(veth, bridge)]
print(f"ratio bridge/veth: {statistics.median(bridge) / statistics.median(veth):.2f} of the medians; "
      f"per round {', '.join(f'{r:.2f}' for r in ratios)}")
PY
