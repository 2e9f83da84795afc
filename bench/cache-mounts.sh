#!/usr/bin/env bash
# Cache mounts that travel (issue 15 item 4): what `--cache-to …,cache-mounts=true` saves a
# fresh machine, and what the export and import cost. A package step fills a download cache
# (`RUN --mount=type=cache`) from a loopback package index (`python3 -m http.server`, whose
# log counts the GETs) with $PKGS packages of $PKG_MIB MiB of random bytes, fetching only what
# the cache lacks. Per repetition, each from a store holding only the base image:
#   export   the step with `--cache-to type=local,…` without and with `cache-mounts=true` and
#            `--cache-to type=registry,…,cache-mounts=true` (a fresh loopback registry), and
#            without any --cache-to (the difference is the export's cost);
#   import   the step with one more package (so it runs), `--cache-from` the export: with the
#            mounts (local and registry) and with `cache-mounts=false` (downloads everything).
# Prints a Markdown table of medians; the "Cache mounts that travel" section of
# docs/benchmarks.md is written from it by hand.
#
#   bench/cache-mounts.sh                        # target/release/kiln (built when missing), 3 runs
#   KILN=target/debug/kiln RUNS=5 bench/cache-mounts.sh
#   PKGS=20 PKG_MIB=4 bench/cache-mounts.sh      # another cache size
#
# Runs as root; needs python3 and docker-registry (Debian's). The index and the registry are on
# 127.0.0.1, and the package step runs with --network host (allowed with --allow network.host).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-3}
PKGS=${PKGS:-40}
PKG_MIB=${PKG_MIB:-1}
[[ $(id -u) -eq 0 ]] || { echo "cache-mounts.sh: must run as root" >&2; exit 1; }
command -v docker-registry >/dev/null || { echo "cache-mounts.sh: needs docker-registry" >&2; exit 1; }
bench_kiln_binary cache-mounts.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-cachemnt.XXXXXX")
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bench_unmount_under "$WORK"
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_http() {
    local i
    for ((i = 0; i < 100; i++)); do
        python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" \
            2>/dev/null && return 0
        sleep 0.1
    done
    echo "cache-mounts.sh: $1 did not come up" >&2
    exit 1
}

"$ROOT/scripts/busybox-rootfs.sh" "$WORK/busybox.tar" >/dev/null
"$KILN" --root "$WORK/seed" import "$WORK/busybox.tar" bench-base:latest >/dev/null
"$KILN" --root "$WORK/seed" save -o "$WORK/base.tar" bench-base:latest

# The package index: $PKGS + 1 packages of random bytes (the last one is the "new" package).
mkdir -p "$WORK/index"
names=()
for ((i = 0; i <= PKGS; i++)); do
    head -c "$((PKG_MIB << 20))" /dev/urandom >"$WORK/index/pkg$i.tar"
    names+=("pkg$i")
done
old=${names[*]:0:PKGS}
all=${names[*]}
index_port=$(free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/index" "$index_port" \
    2>"$WORK/index.log" >/dev/null &
pids+=($!)
wait_http "http://127.0.0.1:$index_port/"

registry_port=$(free_port)
mkdir -p "$WORK/registry"
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: "$WORK/registry/data"
http:
  addr: 127.0.0.1:$registry_port
EOF
docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$registry_port/v2/"

mkdir -p "$WORK/ctx"
cat >"$WORK/ctx/Dockerfile" <<'DOCKERFILE'
FROM bench-base
ARG PKGS
ARG INDEX
RUN --network=host --mount=type=cache,id=pkgs,target=/var/cache/pkgs,sharing=locked \
    mkdir -p /opt/pkgs && for p in $PKGS; do \
      [ -f /var/cache/pkgs/$p.tar ] || { wget -q -O /var/cache/pkgs/$p.part $INDEX/$p.tar && mv /var/cache/pkgs/$p.part /var/cache/pkgs/$p.tar; } || exit 1; \
      cp /var/cache/pkgs/$p.tar /opt/pkgs/; \
    done
DOCKERFILE

results=$WORK/results.tsv
# build LABEL PKGS [kiln build flags...]: one build from a store holding only the base; appends
# LABEL, wall seconds and index GETs to results.tsv.
build() {
    local label=$1 pkgs=$2
    shift 2
    local store=$WORK/store
    bench_unmount_under "$store"
    rm -rf "$store"
    "$KILN" --root "$store" load -i "$WORK/base.tar" >/dev/null
    local before after start end
    before=$(grep -c '"GET ' "$WORK/index.log" || true)
    start=$EPOCHREALTIME
    "$KILN" --root "$store" build --progress plain --allow network.host \
        --build-arg "PKGS=$pkgs" --build-arg "INDEX=http://127.0.0.1:$index_port" "$@" \
        "$WORK/ctx" >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
    end=$EPOCHREALTIME
    after=$(grep -c '"GET ' "$WORK/index.log" || true)
    python3 -c "print(f'$label\t{$end - $start:.3f}\t{$after - $before}')" >>"$results"
}

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    rm -rf "$WORK/cache" "$WORK/cache-plain"
    build "export: no --cache-to" "$old"
    build "export: type=local, without cache-mounts" "$old" \
        --cache-to "type=local,dest=$WORK/cache-plain"
    build "export: type=local, cache-mounts=true" "$old" \
        --cache-to "type=local,dest=$WORK/cache,cache-mounts=true"
    build "export: type=registry, cache-mounts=true" "$old" \
        --cache-to "type=registry,ref=127.0.0.1:$registry_port/bench/pkgs:rep$rep,cache-mounts=true"
    build "import: cache-mounts=false (control)" "$all" \
        --cache-from "type=local,src=$WORK/cache,cache-mounts=false"
    build "import: type=local" "$all" --cache-from "type=local,src=$WORK/cache"
    build "import: type=registry" "$all" \
        --cache-from "type=registry,ref=127.0.0.1:$registry_port/bench/pkgs:rep$rep"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
mount_blob=$(python3 - "$WORK/cache" <<'EOF'
import json, sys, os
d = sys.argv[1]
blob = lambda dg: os.path.join(d, "blobs/sha256", dg.split(":")[1])
index = json.load(open(os.path.join(d, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
doc = json.load(open(blob(manifest["config"]["digest"])))
print(doc["cacheMounts"][0]["layer"]["size"])
EOF
)
echo "cache: $PKGS packages × $PKG_MIB MiB; exported cache mount blob: $mount_blob bytes" >&2

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("| build (fresh store) | median wall (s) | min–max (s) | package GETs | runs |")
print("|---|---:|---:|---:|---:|")
for label in dict.fromkeys(r[0] for r in rows):
    mine = [r for r in rows if r[0] == label]
    wall = [float(r[1]) for r in mine]
    gets = sorted({r[2] for r in mine})
    print(f"| {label} | {statistics.median(wall):.2f} | {min(wall):.2f}–{max(wall):.2f} | "
          f"{'/'.join(gets)} | {len(mine)} |")
EOF
