#!/usr/bin/env bash
# Layer compression benchmarks (docs/benchmarks.md, section "Compression").
#
#   bench/compress.sh throughput   # MB/s per backend and level, 1 vs all threads, chunking cost
#   bench/compress.sh placement    # build + push of a ~200 MB mixed layer: compress at build
#                                  # time (a) or keep it uncompressed until push (b)
#
# Needs root (kiln build), docker-registry (scripts/setup.sh). Work files go to $BENCH_DIR
# (default /tmp/kiln-bench-compress). Figures are printed as Markdown table rows.
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${BENCH_DIR:-/tmp/kiln-bench-compress}
SIZE_MB=${SIZE_MB:-64}
mkdir -p "$BENCH_DIR"

# Corpus A: binaries (/usr/lib), corpus B: source text (/usr/include, Rust crate sources), each a
# tar cut to SIZE_MB, as in docs/hot-path-limits.md.
corpora() {
  local a="$BENCH_DIR/binary.tar" b="$BENCH_DIR/text.tar"
  [ -s "$a" ] || tar -cf - -C / usr/lib 2>/dev/null | head -c "${SIZE_MB}M" >"$a" || true
  [ -s "$b" ] || tar -cf - -C / usr/include "${CARGO_HOME:-$HOME/.cargo}/registry/src" 2>/dev/null \
    | head -c "${SIZE_MB}M" >"$b" || true
  echo "$a" "$b"
}

throughput() {
  # shellcheck disable=SC2046
  cargo bench -q -p kiln-layer --bench compress -- $(corpora)
}

# A context with one ~200 MB COPY layer: ~150 MB of /usr/lib and ~50 MB of text.
mixed_context() {
  local ctx="$BENCH_DIR/ctx"
  if [ ! -f "$ctx/Dockerfile" ]; then
    mkdir -p "$ctx/files"
    tar -cf - -C / usr/lib 2>/dev/null | head -c 150M >"$ctx/files/lib.tar" || true
    tar -cf - -C / usr/include usr/share/doc 2>/dev/null | head -c 50M >"$ctx/files/text.tar" || true
    (cd "$ctx/files" && tar -xf lib.tar 2>/dev/null; tar -xf text.tar 2>/dev/null; rm -f lib.tar text.tar) || true
    printf 'FROM scratch\nCOPY files/ /data/\n' >"$ctx/Dockerfile"
  fi
  echo "$ctx"
}

start_registry() {
  local port=$1 dir="$BENCH_DIR/registry"
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
YML
  /usr/bin/docker-registry serve "$dir/config.yml" >"$dir/log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && return; sleep 0.1; done
  echo "registry did not start" >&2; exit 1
}

seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }

placement() {
  # KILN_BIN: an already built binary (the dev profile builds dependencies, where compression
  # happens, at opt-level 2); else a release build.
  local kiln=${KILN_BIN:-} ctx port=5077 runs=${RUNS:-3}
  if [ -z "$kiln" ]; then cargo build -q --release --bin kiln; kiln="$PWD/target/release/kiln"; fi
  ctx=$(mixed_context)
  echo "context: $(du -sm "$ctx" | cut -f1) MB, $(find "$ctx" -type f | wc -l) files"
  trap '[ -n "${REGISTRY_PID:-}" ] && kill $REGISTRY_PID' EXIT
  echo "| run | mode | build s | push s | total s | pushed MB |"
  echo "|---|---|---|---|---|---|"
  for run in $(seq "$runs"); do
    for mode in a b zstd; do
      local root="$BENCH_DIR/store-$mode" ref="127.0.0.1:$port/bench/$mode-$run:latest"
      rm -rf "$root"
      case $mode in
        a) build_flags=(--compression gzip); push_flags=() ;;
        b) build_flags=(--compression uncompressed); push_flags=(--compression gzip) ;;
        zstd) build_flags=(--compression zstd); push_flags=() ;;
      esac
      # A fresh, empty registry for every push, so every blob is uploaded.
      [ -n "${REGISTRY_PID:-}" ] && kill "$REGISTRY_PID" && wait "$REGISTRY_PID" 2>/dev/null || true
      start_registry $port
      sync
      local b p before after
      b=$(seconds "$kiln" --root "$root" build -q "${build_flags[@]}" -t "$ref" "$ctx")
      before=$(du -sm "$BENCH_DIR/registry/storage" 2>/dev/null | cut -f1 || echo 0)
      p=$(seconds "$kiln" --root "$root" push "${push_flags[@]}" "$ref")
      after=$(du -sm "$BENCH_DIR/registry/storage" | cut -f1)
      echo "| $run | $mode | $b | $p | $(echo "$b + $p" | bc) | $((after - before)) |"
    done
  done
}

case "${1:-}" in
  throughput) throughput ;;
  placement) placement ;;
  *) echo "usage: $0 throughput|placement" >&2; exit 2 ;;
esac
