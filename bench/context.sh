#!/usr/bin/env bash
# Context hashing benchmark (issue 4, item 3): how long kiln takes to hash a big build context
# cold, on a no-op rebuild (the store's metadata cache knows every file) and after one file
# changed, how many bytes each reads, and kiln's peak memory; then the same three cases as whole
# `kiln build`s of `FROM scratch` + `COPY . /ctx/`. Writes the "Context hashing" section of
# docs/benchmarks.md (other sections of that file are left alone).
#
#   bench/context.sh                 # 20,000 small files + 5 × 50 MB, 3 runs of each case
#   RUNS=5 BENCH_DIR=/var/tmp/b bench/context.sh
#   REPORT_ONLY=1 bench/context.sh   # rewrite the section from the last run's results
#
# Runs as root (kiln build mounts overlays). Page cache stays warm: the machine is shared, so the
# script never drops caches; `proc read_bytes` shows what still came from the disk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${BENCH_DIR:-/tmp/kiln-bench-context}
RUNS=${RUNS:-3}
SMALL_FILES=${SMALL_FILES:-20000}
BIG_FILES=${BIG_FILES:-5}
BIG_MB=${BIG_MB:-50}
OUT=${OUT:-$ROOT/docs/benchmarks.md}

cargo build --release --quiet -p kiln-solve --example hash_context
cargo build --release --quiet --bin kiln
HASH=$ROOT/target/release/examples/hash_context
KILN=$ROOT/target/release/kiln

CTX=$WORK/context
STAMP="$SMALL_FILES small + $BIG_FILES x ${BIG_MB} MB"
if [[ ! -f $CTX/.generated || $(cat "$CTX/.generated") != "$STAMP" ]]; then
    echo "generating $CTX ($STAMP)" >&2
    rm -rf "$CTX"
    mkdir -p "$CTX"
    # Small files: 100 per directory, 200 B – 4 KB of text each, the same every time.
    python3 - "$CTX" "$SMALL_FILES" <<'PY'
import os, random, sys
root, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(4)
line = b"fn function_name(argument: Type) -> Result<Output, Error> { body(); }\n"
for n in range(count):
    d = os.path.join(root, "src", f"m{n // 100:04d}")
    os.makedirs(d, exist_ok=True)
    size = rng.randint(200, 4000)
    with open(os.path.join(d, f"f{n:05d}.rs"), "wb") as f:
        f.write((line * (size // len(line) + 1))[:size])
PY
    mkdir -p "$CTX/assets"
    for n in $(seq 1 "$BIG_FILES"); do
        head -c "$((BIG_MB * 1000 * 1000))" /dev/urandom >"$CTX/assets/blob$n.bin"
    done
    printf 'FROM scratch\nCOPY . /ctx/\n' >"$CTX/Dockerfile"
    printf '.generated\n' >"$CTX/.dockerignore"
    echo "$STAMP" >"$CTX/.generated"
fi
CTX_BYTES=$(du -sb --exclude=.generated "$CTX" | cut -f1)
CTX_FILES=$(find "$CTX" -type f ! -name .generated | wc -l)
# Let the newest files age past the metadata cache's clock-granularity window.
sleep 1

RESULTS=$WORK/results.tsv
LOAD_FILE=$WORK/load.txt
if [[ -z ${REPORT_ONLY:-} ]]; then
    : >"$RESULTS"
    cut -d' ' -f1 /proc/loadavg >"$LOAD_FILE"
    # record TOOL CASE SECONDS RSS_KB FILES_READ BYTES_READ PROC_READ_BYTES
    record() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$RESULTS"; }

    # hash_context under /usr/bin/time: prints "seconds rss_kb files_read bytes_read read_bytes".
    hash_once() {
        local store=$1 json
        json=$(/usr/bin/time -f '%M' -o "$WORK/time.txt" "$HASH" "$store" "$CTX")
        python3 -c 'if True:  # the body below is indented with the shell function
    import json, sys
    j = json.loads(sys.argv[1])
    print(j["hash_seconds"], sys.argv[2], j["files_read"], j["bytes_read"], j["proc_read_bytes"])
    ' "$json" "$(tail -1 "$WORK/time.txt")"
    }

    # kiln build under /usr/bin/time: prints "seconds rss_kb files_read bytes_read -".
    build_once() {
        local root=$1 log=$WORK/build.log
        /usr/bin/time -f '%e %M' -o "$WORK/time.txt" \
            env KILN_ROOT="$root" "$KILN" build -t bench:ctx "$CTX" 2>"$log"
        local counts
        counts=$(sed -n 's/.* context: \([0-9]*\) files, \([0-9]*\) hashed (\([0-9]*\) bytes read)/\2 \3/p' "$log")
        echo "$(tail -1 "$WORK/time.txt") $counts -"
    }

    change_one_file() {
        # A new size as well as new timestamps; the file stays small.
        printf '// edit %s\n' "$RANDOM" >>"$CTX/src/m0000/f00000.rs"
    }

    for run in $(seq 1 "$RUNS"); do
        echo "run $run/$RUNS" >&2
        rm -rf "$WORK/store"
        record hash cold $(hash_once "$WORK/store")
        record hash noop $(hash_once "$WORK/store")
        change_one_file
        record hash one-file $(hash_once "$WORK/store")

        rm -rf "$WORK/kiln-root"
        record build cold $(build_once "$WORK/kiln-root")
        record build noop $(build_once "$WORK/kiln-root")
        change_one_file
        record build one-file $(build_once "$WORK/kiln-root")
    done
    rm -rf "$WORK/store" "$WORK/kiln-root"
fi

CPU=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
SHA_NI=$(grep -q sha_ni /proc/cpuinfo && echo yes || echo no)
MACHINE="$CPU, $(nproc) vCPU (SHA-NI: $SHA_NI), $(free -g | awk '/^Mem:/ {print $2}') GB RAM, \
Linux $(uname -r), context on $(df -T "$CTX" | awk 'NR == 2 {print $2}')"

python3 - "$RESULTS" "$OUT" "$MACHINE" "$CTX_FILES" "$CTX_BYTES" "$RUNS" "$(cat "$LOAD_FILE")" <<'PY'
import statistics, sys, datetime
results, out, machine, files, size, runs, load = sys.argv[1:8]
rows = {}
for line in open(results):
    tool, case, secs, rss, fread, bread, disk = line.rstrip("\n").split("\t")
    rows.setdefault((tool, case), []).append((float(secs), int(rss), fread, bread, disk))

def med(values):
    return statistics.median(values)

def amount(n):
    n = int(n)
    for unit, scale in [("MB", 1e6), ("KB", 1e3)]:
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"

def cell(tool, case):
    runs_ = rows[(tool, case)]
    secs = med([r[0] for r in runs_])
    rss = max(r[1] for r in runs_) / 1024
    fread = runs_[-1][2]
    bread = amount(runs_[-1][3])
    disk = runs_[-1][4]
    disk = "–" if disk == "-" else amount(disk)
    return f"| {secs:.3f} s | {fread} | {bread} | {disk} | {rss:.0f} MB |"

names = {"cold": "cold (empty store)", "noop": "no-op rebuild", "one-file": "one file changed"}
section = [
    "<!-- context-hashing:begin (written by bench/context.sh) -->",
    "## Context hashing",
    "",
    f"Context: {int(files):,} files, {int(size) / 1e6:.0f} MB (20,000 small source files and a few "
    "50 MB random blobs). Machine: " + machine + ". "
    f"Median of {runs} runs, page cache warm (the script never drops caches on a shared machine), "
    f"load average {load} when it started, {datetime.date.today().isoformat()}.",
    "",
    "`hash_context` hashes the context as `COPY . /ctx/` does (walk, `.dockerignore`, content "
    "hashes through the store's metadata cache). `kiln build` is the whole build of "
    "`FROM scratch` + `COPY . /ctx/`, including (on a miss) copying the files and writing and "
    "gzip-compressing the 300 MB layer. *Files read* and *bytes read* are kiln's own counters "
    "(the `context: N files, M hashed (B bytes read)` progress line); *from disk* is "
    "`read_bytes` from `/proc/self/io`; *peak RSS* is `/usr/bin/time`'s maximum resident set, "
    "the largest over the runs.",
    "",
    "| what | case | time | files read | bytes read | from disk | peak RSS |",
    "|---|---|---|---|---|---|---|",
]
for tool, label in [("hash", "hash_context"), ("build", "kiln build")]:
    for case in ["cold", "noop", "one-file"]:
        section.append(f"| {label} | {names[case]} " + cell(tool, case))
section += [
    "",
    "Reading: a no-op rebuild reads no file (only `lstat`s the 20,000 entries and checks them "
    "against the index), so its time is the walk, whose directory listings are made ahead of "
    "it by a small thread pool. A changed file is read alone. The cold hash "
    "is per-file open/read costs plus SHA-256 (SHA-NI, ~1.5 GB/s per core); its worker pool "
    "has one thread per core (at most 8), and this machine's two shared vCPUs give about one "
    "core of CPU-bound throughput, so it cannot show a parallel gain here. The cold and one-file "
    "`kiln build`s are dominated by copying the 20,000 files into the new layer and hashing its "
    "tar and blob (one `COPY .` step: any change rewrites its whole layer), not by hashing the "
    "context; the random blobs cost almost no compression, since gzip chunks that deflate "
    "cannot shrink are stored. Peak "
    "memory stays far under the 150 MB target: file contents are streamed through a 256 KB "
    "buffer per worker, the hash keeps at most 4,096 entries in flight and the walk lists at "
    "most 32,768 entries ahead.",
    "",
    "<!-- context-hashing:end -->",
]
text = "\n".join(section) + "\n"

try:
    existing = open(out).read()
except FileNotFoundError:
    existing = "# Benchmarks\n\nFigures measured by the scripts in `bench/`; each section says how.\n"
begin, end = "<!-- context-hashing:begin", "<!-- context-hashing:end -->"
if begin in existing:
    head = existing[: existing.index(begin)]
    tail = existing[existing.index(end) + len(end):].lstrip("\n")
    existing = head + text + ("\n" + tail if tail else "")
else:
    existing = existing.rstrip("\n") + "\n\n" + text
open(out, "w").write(existing)
print(text)
PY
