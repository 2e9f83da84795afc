#!/usr/bin/env bash
# Installs what kiln's build, example and tests need on a fresh Debian machine with Rust.
# Idempotent and quick when everything is already there.
set -euo pipefail

packages=(
  busybox-static   # the base image for the example and the tests
  docker-registry  # the CNCF distribution registry the tests push to and pull from
  skopeo           # independent registry client: seeds the test registry, checks pushes
  umoci            # independent OCI unpacker: checks kiln's images
  oci-image-tool   # validates image layouts against the OCI schemas
  iproute2         # `ip`, used by network tests
  slirp4netns      # user-mode networking: RUN's and `kiln run`'s default network
  nftables         # `nft`: masquerade and isolation rules of bridge networks (kiln-network)
  zstd             # independent zstd decoder: checks zstd layers (gzip is always there)
  ca-certificates
  openssl          # test CAs, server/client certificates and token signing keys (registry auth tests)
  uidmap           # newuidmap/newgidmap: rootless kiln maps /etc/subuid ranges (rootless tests)
  gcc              # compiles the static syscall-attack program of the security tests
  libc6-dev        # its static libc
  python3-jsonschema  # validates SBOM and provenance statements against the SPDX, SLSA v1 and in-toto schemas
  fzf              # a real Go binary from a Debian package (GOPATH build): the Go SBOM e2e test
  docker-compose   # compose 1.29 (with its own python3-docker 5) against kiln serve (tests/e2e/compose.rs)
  curl             # fetches pages served by containers from a test's network namespace
  socat            # UDP between containers by name (busybox's nc has no -u; tests/e2e/bridges/names.rs)
  iperf3           # bench/networks.sh: container-to-container throughput (not used by the tests)
  qemu-user-static # RUN for a foreign --platform (multi-platform tests), through binfmt_misc
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy >/dev/null 2>&1 || true

# docker-py's integration suite against `kiln serve` (scripts/docker-py.sh): the client at the
# version its tests are taken from, and what the suite imports; schemathesis for the
# property-based checks of the API against moby's spec (scripts/schemathesis.sh).
if ! python3 -c 'import docker, pytest, pytest_timeout, paramiko; assert docker.__version__ == "7.2.0"' 2>/dev/null; then
  echo "setup: installing docker-py 7.2.0 and pytest" >&2
  python3 -m pip install -q docker==7.2.0 pytest pytest-timeout paramiko
fi
# schemathesis at the version scripts/schemathesis.sh was written against (its config file's
# dictionaries and per-operation parameters, and the CLI's flags, change between versions).
if ! python3 -c 'import importlib.metadata as m; assert m.version("schemathesis") == "4.32.5"' 2>/dev/null; then
  echo "setup: installing schemathesis 4.32.5" >&2
  python3 -m pip install -q schemathesis==4.32.5
fi

# The docker 20.10 client (Debian's docker.io) for tests/e2e/serve/docker_2010.rs: only the
# `docker` binary, taken out of the package with dpkg-deb, so that no dockerd, containerd or
# iptables rules come with it (bench/serve-run.sh installs the whole package when it is run).
docker2010=/var/cache/kiln/docker-20.10/docker
if [[ ! -x $docker2010 ]]; then
  echo "setup: extracting the docker 20.10 client into ${docker2010%/*}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  deb_dir=$(mktemp -d)
  chmod 0755 "$deb_dir"  # apt-get download drops privileges to _apt where it can
  (cd "$deb_dir" && apt-get download -qq docker.io >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download -qq docker.io; })
  dpkg-deb -x "$deb_dir"/docker.io_*.deb "$deb_dir/root"
  $SUDO install -D -m 0755 "$deb_dir/root/usr/bin/docker" "$docker2010"
  rm -rf "$deb_dir"
fi

# The arm64 base of the multi-platform tests (crates/testkit/src/busybox_arm64.rs): Debian's
# arm64 busybox-static binary, taken out of its .deb; apt needs the arm64 architecture to
# download it, but no arm64 package is installed.
arm64_busybox=/var/cache/kiln/arm64/busybox
if [[ ! -x $arm64_busybox ]]; then
  echo "setup: extracting arm64 busybox-static into ${arm64_busybox%/*}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  dpkg --print-foreign-architectures | grep -qx arm64 || {
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
  }
  deb_dir=$(mktemp -d)
  chmod 0755 "$deb_dir"
  (cd "$deb_dir" && apt-get download -qq busybox-static:arm64 >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download -qq busybox-static:arm64; })
  dpkg-deb -x "$deb_dir"/busybox-static_*_arm64.deb "$deb_dir/root"
  $SUDO install -D -m 0755 "$deb_dir/root/bin/busybox" "$arm64_busybox"
  rm -rf "$deb_dir"
fi

# Handlers for qemu-user with the F flag, which RUN under emulation needs (kernel-wide; kiln
# itself registers them only when asked: kiln system binfmt --install does the same).
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [[ -d /proc/sys/fs/binfmt_misc ]] && [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
  $SUDO mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
fi
if [[ -e /proc/sys/fs/binfmt_misc/register ]] && ! grep -qs '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  echo "setup: registering qemu-user-static's binfmt_misc handlers (with F)" >&2
  for conf in /usr/lib/binfmt.d/qemu-*.conf; do
    name=$(basename "$conf" .conf)
    [[ -e /proc/sys/fs/binfmt_misc/$name ]] && echo -1 | $SUDO tee "/proc/sys/fs/binfmt_misc/$name" >/dev/null
    line=$(grep -v '^#' "$conf" | head -n1)
    [[ $line == *F ]] || line="${line}F"
    echo "$line" | $SUDO tee /proc/sys/fs/binfmt_misc/register >/dev/null || true
  done
fi
