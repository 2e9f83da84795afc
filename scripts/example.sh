#!/usr/bin/env bash
# Quick start: set up, build kiln, import a busybox base image made from Debian's
# busybox-static, build examples/hello with kiln and run it. Works offline once the Debian
# packages and crates are installed. Needs root (kiln mounts overlays and namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --locked --bin kiln
kiln=target/debug/kiln

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
scripts/busybox-rootfs.sh "$work/busybox.tar"
"$kiln" import "$work/busybox.tar" busybox:latest >/dev/null

"$kiln" build -t hello examples/hello
"$kiln" run --rm hello
