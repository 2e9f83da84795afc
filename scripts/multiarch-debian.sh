#!/usr/bin/env bash
# The multi-platform build of issue 14 on a real Debian base, outside CI (it is slow: the
# arm64 Debian is made by debootstrap running arm64 binaries through qemu-user):
#
#   1. debootstrap a minimal Debian (bookworm by default) for amd64 and for arm64, the arm64
#      one through QEMU user emulation (binfmt_misc handlers with the F flag);
#   2. build them into one two-platform base image with kiln (`FROM scratch` + `ADD` of each
#      platform's rootfs tar, chosen by TARGETARCH);
#   3. build a Dockerfile with RUN steps on it for linux/amd64,linux/arm64 (arm64's RUN under
#      emulation) and check each image's `uname -m` and `dpkg --print-architecture`;
#   4. push the index to a docker-registry on 127.0.0.1, pull arm64's image back with skopeo
#      (`--override-arch arm64`) and unpack it with umoci, and check its files.
#
#   scripts/multiarch-debian.sh                  # target/debug/kiln, bookworm
#   KILN=target/release/kiln SUITE=trixie scripts/multiarch-debian.sh
#   KEEP=1 scripts/multiarch-debian.sh           # keep the work dir (rootfs tars: ~400 MB)
#
# Runs as root; needs network access to the Debian mirror, debootstrap, qemu-user-static,
# docker-registry, skopeo and umoci (the script installs debootstrap when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
KILN=${KILN:-$ROOT/target/debug/kiln}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
die() { echo "multiarch-debian.sh: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root"
[[ -x $KILN ]] || die "$KILN is not built (cargo build)"
command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
for tool in docker-registry skopeo umoci qemu-aarch64-static; do
    command -v "$tool" >/dev/null || die "$tool is missing (scripts/setup.sh)"
done
# kiln says whether RUN for arm64 can work (a handler with the F flag) and how to register it.
"$KILN" system binfmt | grep -q '^qemu-aarch64 .* yes ' ||
    die "no qemu-aarch64 handler with the F flag: kiln system binfmt --install"

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/kiln-multiarch-debian.XXXXXX")
registry_pid=
cleanup() {
    if [[ -n $registry_pid ]]; then
        kill "$registry_pid" 2>/dev/null || true
        wait "$registry_pid" 2>/dev/null || true
    fi
    awk -v w="$WORK" 'index($2, w "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
        while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
store=$WORK/store
k() { "$KILN" --root "$store" "$@"; }

# 1. The two Debian root filesystems, as plain tars.
mkdir -p "$WORK/base"
for arch in amd64 arm64; do
    echo "== debootstrap $SUITE for $arch" >&2
    debootstrap --variant=minbase --arch="$arch" "$SUITE" "$WORK/rootfs-$arch" "$MIRROR" \
        >"$WORK/debootstrap-$arch.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap-$arch.log" >&2; die "debootstrap for $arch failed"; }
    tar -C "$WORK/rootfs-$arch" --numeric-owner -cf "$WORK/base/debian-$arch.tar" .
    rm -rf "$WORK/rootfs-$arch"
done

# 2. One base image index of both.
cat >"$WORK/base/Dockerfile" <<'DOCKERFILE'
FROM scratch
ARG TARGETARCH
ADD debian-$TARGETARCH.tar /
CMD ["bash"]
DOCKERFILE
echo "== the two-platform base" >&2
k build --progress plain --platform linux/amd64,linux/arm64 -t debian-multi "$WORK/base"

# 3. RUN steps on it, for both platforms.
mkdir -p "$WORK/app"
cat >"$WORK/app/Dockerfile" <<'DOCKERFILE'
FROM debian-multi
ARG TARGETPLATFORM
RUN uname -m > /machine && dpkg --print-architecture > /dpkg-arch \
 && echo "$TARGETPLATFORM" > /target && ls /usr/bin | wc -l > /tools
CMD ["cat", "/machine", "/dpkg-arch", "/target"]
DOCKERFILE
echo "== the app, for linux/amd64 and linux/arm64" >&2
k build --progress plain --platform linux/amd64,linux/arm64 -t app "$WORK/app"
k images
arm=$(k run --rm --platform linux/arm64 app)
amd=$(k run --rm --platform linux/amd64 app)
[[ $arm == $'aarch64\narm64\nlinux/arm64' ]] || die "arm64 image printed: $arm"
[[ $amd == $'x86_64\namd64\nlinux/amd64' ]] || die "amd64 image printed: $amd"
echo "arm64: $(echo "$arm" | tr '\n' ' ')" >&2
echo "amd64: $(echo "$amd" | tr '\n' ' ')" >&2

# 4. Pushed to a loopback registry; arm64's pulled back by skopeo and unpacked by umoci.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YAML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done
ref=127.0.0.1:$port/app:multi
k tag app "$ref"
k push "$ref"
skopeo inspect --raw --tls-verify=false "docker://$ref" |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["manifests"]; print(" ".join(d["platform"]["architecture"] for d in m))' >&2
skopeo --insecure-policy --override-arch arm64 copy --quiet --src-tls-verify=false \
    "docker://$ref" "oci:$WORK/layout:arm"
umoci unpack --image "$WORK/layout:arm" "$WORK/bundle" >/dev/null
[[ $(cat "$WORK/bundle/rootfs/machine") == aarch64 ]] || die "unpacked /machine: $(cat "$WORK/bundle/rootfs/machine")"
[[ $(cat "$WORK/bundle/rootfs/dpkg-arch") == arm64 ]] || die "unpacked /dpkg-arch"
echo "multiarch-debian.sh: ok: the arm64 image ran uname -m = aarch64 and round-tripped through the registry" >&2
