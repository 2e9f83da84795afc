#!/usr/bin/env bash
# Rootless user-defined networks (issue 13): the start-up cost of a rootless
# `kiln run --rm --network NET bench-base:latest true` on a user-defined network (its veth pair
# goes into the per-user network namespace), on the default network (slirp4netns) and on
# `--network none`, as an ordinary user. Everything happens in a network namespace this script
# makes; /dev/net/tun is given to the user in a mount namespace of the script's own, as the
# e2e tests do. Prints a Markdown table; docs/benchmarks.md's "Rootless networks" section is
# written from it by hand.
#
#   BENCH_USER=kiln-rootless bench/rootless-networks.sh          # target/release/kiln
#   KILN=target/debug/kiln RUNS=30 bench/rootless-networks.sh
#
# Runs as root (to make the namespace and switch to the user); needs hyperfine, iproute2,
# util-linux, slirp4netns, uidmap and an existing ordinary user with /etc/subuid ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source bench/lib.sh
RUNS=${RUNS:-20}
BENCH_USER=${BENCH_USER:-kiln-rootless}
[[ $(id -u) -eq 0 ]] || { echo "rootless-networks.sh: must run as root" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "rootless-networks.sh: needs hyperfine" >&2; exit 1; }
id -u "$BENCH_USER" >/dev/null || { echo "rootless-networks.sh: no user $BENCH_USER" >&2; exit 1; }
bench_kiln_binary rootless-networks.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-rootless-networks.XXXXXX")
chmod 755 "$WORK"
NS=kiln-bench-rl-$$
# The user's own copy of the binary (the build tree may not be reachable for the user).
install -m 755 "$KILN" "$WORK/kiln"
install -d -m 755 -o "$BENCH_USER" "$WORK/store" "$WORK/tun"
# As the user, in the namespace, with a tun device of the command's own mount namespace.
as_user() {
    nsenter --net=/run/netns/$NS unshare --mount sh -c \
        'mount -t tmpfs tun "$0" && mknod -m 666 "$0/tun" c 10 200 && mount --bind "$0/tun" /dev/net/tun && exec "$@"' \
        "$WORK/tun" runuser -u "$BENCH_USER" -- env KILN_ROOT="$WORK/store" HOME=/tmp XDG_DATA_HOME= "$WORK/kiln" "$@"
}
cleanup() {
    for id in $(as_user ps -aq 2>/dev/null); do as_user rm -f "$id" >/dev/null 2>&1 || true; done
    as_user network rm benchnet >/dev/null 2>&1 || true
    ip netns del "$NS" 2>/dev/null || true
    bench_unmount_under "$WORK"
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link set lo up

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
chmod 644 "$WORK/busybox.tar"
as_user import "$WORK/busybox.tar" bench-base:latest >/dev/null
as_user network create --subnet 10.123.0.0/16 benchnet >/dev/null
export -f as_user
export NS WORK BENCH_USER

echo "## rootless kiln run --rm (hyperfine, $RUNS runs, as $BENCH_USER)"
# bash, whose exported function as_user dash would drop from the environment.
hyperfine --shell bash --style basic --warmup 3 --runs "$RUNS" --export-markdown "$WORK/start.md" \
    --command-name "none" "as_user run --rm --network none bench-base:latest true" \
    --command-name "benchnet" "as_user run --rm --network benchnet bench-base:latest true" \
    --command-name "default" "as_user run --rm bench-base:latest true" >&2
cat "$WORK/start.md"
