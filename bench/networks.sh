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
# Runs as root; needs iperf3 (Debian's, dynamically linked: the containers get it
# with the host's libraries bind-mounted read-only, as busybox has none), nftables,
# iproute2, busybox-static, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-7}
SECONDS_PER_ROUND=${SECONDS_PER_ROUND:-5}
[[ $(id -u) -eq 0 ]] || { echo "networks.sh: must run as root" >&2; exit 1; }
for tool in iperf3 python3; do
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
# BRIDGE_NF=0: bridged traffic in the bench's namespace skips the ip hooks (br_netfilter's
# per-namespace sysctl; 1 by default wherever br_netfilter is loaded, as dockerd loads it),
# to tell their cost (kiln's forward chains and conntrack on every packet) from the bridge's.
if [[ -n ${BRIDGE_NF:-} && -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    nsenter --net=/run/netns/$NS sh -c "echo $BRIDGE_NF > /proc/sys/net/bridge/bridge-nf-call-iptables"
fi
in_ns() { nsenter --net=/run/netns/$NS "$@"; }
kiln() { in_ns "$KILN" --root "$WORK/store" "$@"; }

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
kiln import "$WORK/busybox.tar" bench-base:latest >/dev/null
kiln network create --subnet 10.123.0.0/16 benchnet >/dev/null

# Start-up: rounds of the three, in rotating order (so a change of the shared machine's load
# falls on all three alike), each timed by this shell; medians per network.
echo "## kiln run --rm ($RUNS rounds, the three networks interleaved; ms)"
echo
for net in none benchnet bridge; do kiln run --rm --network $net bench-base:latest true; done
: >"$WORK/start"
nets=(none benchnet bridge)
for round in $(seq 0 $((RUNS - 1))); do
    for i in 0 1 2; do
        net=${nets[$(((round + i) % 3))]}
        start=$(date +%s%N)
        kiln run --rm --network "$net" bench-base:latest true
        echo "$net $((($(date +%s%N) - start) / 1000))" >>"$WORK/start"
    done
done
python3 - "$WORK/start" <<'PY'
import statistics, sys
times = {}
for line in open(sys.argv[1]):
    net, micros = line.split()
    times.setdefault(net, []).append(int(micros) / 1000)
print("| `--network` | median | min | max |")
print("|---|---|---|---|")
for net in ["none", "benchnet", "bridge"]:
    t = times[net]
    print(f"| {net} | {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} |")
m = {net: statistics.median(t) for net, t in times.items()}
print()
print(f"user network / none: {m['benchnet'] / m['none']:.2f}x; "
      f"default bridge / none: {m['bridge'] / m['none']:.2f}x (load {open('/proc/loadavg').read().split()[0]})")
PY
echo

# Throughput: iperf3, one TCP stream for $SECONDS_PER_ROUND s per round, the receiver's
# figure. The containers run Debian's iperf3 with the host's libraries mounted read-only.
TOOL_MOUNTS=(-v /usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:ro -v /usr/lib64:/lib64:ro
    -v "$(command -v iperf3):/usr/local/bin/iperf3:ro")
kiln run -d --name sink --network benchnet --ip 10.123.0.10 "${TOOL_MOUNTS[@]}" \
    bench-base:latest iperf3 -s >/dev/null
# The same bridge path without the containers' processes: a second server (port 5202) and
# the client entered into two containers' network namespaces with nsenter, so what the
# containers add (seccomp on every send and receive, their cgroups) is told from the bridge.
kiln run -d --name src --network benchnet bench-base:latest sleep 3600 >/dev/null
pid_of() { kiln inspect "$1" | python3 -c 'import json,sys; v=json.load(sys.stdin); v=v[0] if isinstance(v,list) else v; print(v["State"]["Pid"])'; }
sink_ns=/proc/$(pid_of sink)/ns/net
src_ns=/proc/$(pid_of src)/ns/net
nsenter --net="$sink_ns" iperf3 -s -p 5202 -D -I "$WORK/iperf3-bridge.pid"
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
    entered=$(nsenter --net="$src_ns" iperf3 -c 10.123.0.10 -p 5202 -t "$SECONDS_PER_ROUND" -J | gbits)
    echo "$round $veth $bridge $entered" >>"$WORK/rounds"
    echo "round $round: veth $veth, bridge $bridge, entered $entered Gbit/s (load $(cut -d' ' -f1 /proc/loadavg))" >&2
done
kill "$(cat "$WORK/iperf3-veth.pid")" "$(cat "$WORK/iperf3-bridge.pid")" 2>/dev/null || true

echo "## TCP throughput, iperf3 ($ROUNDS rounds of $SECONDS_PER_ROUND s, interleaved; Gbit/s)"
echo
python3 - "$WORK/rounds" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
veth = [float(r[1]) for r in rows]
bridge = [float(r[2]) for r in rows]
entered = [float(r[3]) for r in rows]
print("| path | median | min | max |")
print("|---|---|---|---|")
print(f"| bare veth pair between two namespaces | {statistics.median(veth):.2f} | {min(veth):.2f} | {max(veth):.2f} |")
print(f"| two containers on a kiln bridge | {statistics.median(bridge):.2f} | {min(bridge):.2f} | {max(bridge):.2f} |")
print(f"| the same bridge, iperf3 entered into the containers' namespaces | {statistics.median(entered):.2f} | {min(entered):.2f} | {max(entered):.2f} |")
print()
ratios = [b / v for v, b in zip(veth, bridge)]
print(f"ratio bridge/veth: {statistics.median(bridge) / statistics.median(veth):.2f} of the medians; "
      f"per round {', '.join(f'{r:.2f}' for r in ratios)}")
print(f"ratio entered/veth: {statistics.median(entered) / statistics.median(veth):.2f} of the medians (load {open('/proc/loadavg').read().split()[0]})")
PY
