#!/usr/bin/env bash
# Builds the same scenarios with kiln, BuildKit (Debian's dockerd) and buildah, interleaved and
# in rotating order, and writes medians, ratios and targets into docs/benchmarks.md (section
# "Builds against BuildKit and buildah").
#
#   bench/run.sh            # full run: BENCH_N repetitions (default 5), full-size contexts
#   bench/run.sh --quick    # smoke test: one repetition, small contexts; the doc is not touched
#
# Environment:
#   BENCH_N       repetitions of every scenario per tool (default 5; --quick forces 1)
#   BENCH_TOOLS   comma list of tools to run (default kiln,buildkit,buildah)
#   BENCH_SCENARIOS  comma list of scenarios (default all: small,big,stages-wait,stages-cpu,thirty);
#                 with a subset the table goes to the results dir, docs/benchmarks.md is not touched
#   BENCH_NOTE    a sentence written above the table (e.g. "measured on a loaded machine")
#   BENCH_KEEP=1  keep the temporary directory (contexts, stores, logs) after the run
#   BENCH_TMP     where the temporary directory goes (default /var/tmp)
#   KILN_BIN      a kiln binary to measure instead of building this checkout (e.g. an older
#                 release build, to tell a regression from a slower machine)
#
# Needs root (kiln, dockerd and buildah all mount overlays), Debian packages (installed when
# missing: docker.io, buildah, runc, docker-registry, busybox-static, time) and cargo. Every
# daemon, container and mount it starts is removed on exit, also on failure or Ctrl-C. It is a
# benchmark, not a test: nothing in the test suite runs it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$repo/bench/lib.sh"
quick=0
for arg in "$@"; do
    case $arg in
        --quick) quick=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "bench: unknown argument: $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "bench: error: $*" >&2
    exit 1
}
log() { echo "bench: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "must run as root (kiln, dockerd and buildah mount overlays)"
((BASH_VERSINFO[0] >= 5)) || die "needs bash 5 (for \$EPOCHREALTIME)"

# --- sizes -----------------------------------------------------------------------------------

quick_label=""
if ((quick)); then
    quick_label=" (quick mode: small contexts)"
    reps=1
    big_small_files=2000   # the big context: many small files ...
    big_large_files=2      # ... and a few large ones
    big_large_mb=5
    cpu_mb=40              # data each CPU-bound stage hashes
    sleep_s=1              # how long each waiting stage sleeps
else
    reps=${BENCH_N:-5}
    big_small_files=20000
    big_large_files=4
    big_large_mb=50
    cpu_mb=300
    sleep_s=2
fi
[[ $reps =~ ^[1-9][0-9]*$ ]] || die "BENCH_N must be a positive integer, got '$reps'"
IFS=, read -r -a tools <<<"${BENCH_TOOLS:-kiln,buildkit,buildah}"
for t in "${tools[@]}"; do
    case $t in kiln | buildkit | buildah) ;; *) die "BENCH_TOOLS: unknown tool '$t' (kiln, buildkit, buildah)" ;; esac
done
has_tool() {
    local t
    for t in "${tools[@]}"; do [[ $t == "$1" ]] && return 0; done
    return 1
}

# --- prerequisites ---------------------------------------------------------------------------

# Debian packages: dockerd and its client, buildah with runc (crun fails on this kind of host),
# the CNCF registry, the busybox the base image is made of, and GNU time for peak RSS.
# Only what the chosen tools need: a kiln-only run (BENCH_TOOLS=kiln) installs no dockerd.
packages=(docker-registry busybox-static time)
has_tool buildkit && packages+=(docker.io)
has_tool buildah && packages+=(buildah runc)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
# Debian's own client: a newer docker earlier on PATH wants the buildx plugin for BuildKit.
docker_cli=/usr/bin/docker
needed=(docker-registry /bin/busybox /usr/bin/time python3 cargo)
has_tool buildkit && needed+=(dockerd "$docker_cli")
has_tool buildah && needed+=(buildah runc)
for bin in "${needed[@]}"; do
    command -v "$bin" >/dev/null || die "$bin not found (package missing or PATH incomplete)"
done

# --- kiln ------------------------------------------------------------------------------------

if [[ -n ${KILN_BIN:-} ]]; then
    kiln_bin=$KILN_BIN
else
    log "building kiln (release)"
    (cd "$repo" && cargo build --release --locked --bin kiln) >&2 || die "cargo build --release failed"
    kiln_bin=${CARGO_TARGET_DIR:-$repo/target}/release/kiln
fi
[[ -x $kiln_bin ]] || die "kiln binary not found at $kiln_bin"

# --- the temporary directory and cleanup -----------------------------------------------------

work=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench.XXXXXX")
dockerd_pid=""
registry_pid=""

# Unmounts everything still mounted under the work directory, deepest first.
unmount_all_under() {
    local m
    awk -v w="$1" '$2 == w || index($2, w "/") == 1 { print $2 }' /proc/self/mounts |
        sort -r | while IFS= read -r m; do
        umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
}

stop_pid() { # PID [SECONDS]
    local pid=$1 wait=${2:-20} i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    log "cleaning up"
    if [[ -n ${buildah_ready:-} ]]; then
        buildah rm --all >/dev/null 2>&1
        buildah umount --all >/dev/null 2>&1
    fi
    stop_pid "$registry_pid" 5
    if [[ -n $dockerd_pid ]]; then
        # dockerd stops the containerd it started when it exits cleanly.
        stop_pid "$dockerd_pid" 30
        if [[ -f $work/docker/containerd.pid ]]; then stop_pid "$(cat "$work/docker/containerd.pid")" 5; fi
    fi
    unmount_all_under "$work"
    if [[ ${BENCH_KEEP:-0} == 1 || $rc -ne 0 ]]; then
        log "kept $work (logs in $work/logs)"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$work"/{logs,ctx,kiln,docker,buildah,registry}
results=$work/results.tsv # scenario, mode, tool, repetition, seconds
rss=$work/rss.tsv         # scenario, mode, repetition, kiln's peak RSS in KiB
: >"$results"
: >"$rss"

# Runs a command with its output in a log; on failure shows the log's tail and stops.
run_logged() { # LOGNAME CMD...
    local logfile=$work/logs/$1.log
    shift
    if ! "$@" >>"$logfile" 2>&1; then
        echo "bench: command failed: $*" >&2
        tail -n 30 "$logfile" >&2
        exit 1
    fi
}

drop_caches_ok=1
drop_caches() {
    sync
    if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
        if ((drop_caches_ok)); then log "warning: cannot drop the page cache; cold runs start warm"; fi
        drop_caches_ok=0
    fi
}

# --- the base image ---------------------------------------------------------------------------

rootfs=$work/busybox.tar
"$repo/scripts/busybox-rootfs.sh" "$rootfs"

# --- anchors: a private dockerd, buildah's private configuration, a loopback registry ---------

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

docker_sock=$work/docker/docker.sock
docker() { DOCKER_HOST=unix://$docker_sock DOCKER_BUILDKIT=1 "$docker_cli" "$@"; }
start_dockerd() {
    log "starting a private dockerd"
    dockerd --data-root "$work/docker/root" --exec-root "$work/docker/exec" \
        --pidfile "$work/docker/pid" -H "unix://$docker_sock" \
        --iptables=false --ip-masq=false --bridge=none --storage-driver=overlay2 \
        >"$work/logs/dockerd.log" 2>&1 &
    dockerd_pid=$!
    local i
    for ((i = 0; i < 300; i++)); do
        docker version >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || break
        sleep 0.2
    done
    tail -n 30 "$work/logs/dockerd.log" >&2
    die "dockerd did not come up"
}

# buildah gets its own storage, registries and containers configuration so it neither touches
# the host's nor creates a CNI bridge and iptables rules.
setup_buildah() {
    local b=$work/buildah
    mkdir -p "$b/graph" "$b/run" "$b/cni"
    cat >"$b/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$b/graph"
runroot = "$b/run"
EOF
    cat >"$b/registries.conf" <<EOF
unqualified-search-registries = []
EOF
    cat >"$b/containers.conf" <<EOF
[network]
network_config_dir = "$b/cni"
[engine]
runtime = "runc"
EOF
    export CONTAINERS_STORAGE_CONF=$b/storage.conf
    export CONTAINERS_REGISTRIES_CONF=$b/registries.conf
    export CONTAINERS_CONF=$b/containers.conf
    buildah_ready=1
}

registry_port=""
# A fresh, empty registry for every push, so each push uploads every blob.
restart_registry() {
    stop_pid "$registry_pid" 5
    registry_pid=""
    rm -rf "$work/registry/data"
    mkdir -p "$work/registry/data"
    registry_port=$(free_port)
    cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: "$work/registry/data"
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$registry_port
EOF
    docker-registry serve "$work/registry/config.yml" >>"$work/logs/registry.log" 2>&1 &
    registry_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        python3 - "$registry_port" <<'EOF' 2>/dev/null && return 0
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
EOF
        kill -0 "$registry_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$work/logs/registry.log" >&2
    die "the registry did not come up"
}

has_tool buildkit && start_dockerd
has_tool buildah && setup_buildah

# --- per-tool operations ----------------------------------------------------------------------
# reset_TOOL: an empty store holding only the base image `bench-base` (untimed).
# build_TOOL LOG CTX TAG [--target STAGE]: one build, --network none, output to the log.
# push_TOOL LOG TAG REF: push the image TAG as REF.

kiln_root=$work/kiln/store
kiln() { "$kiln_bin" --root "$kiln_root" "$@"; }
reset_kiln() {
    unmount_all_under "$kiln_root"
    rm -rf "$kiln_root"
    run_logged reset-kiln kiln import "$rootfs" bench-base:latest
}
build_kiln() { # LOG CTX TAG [ARGS...]
    local logname=$1 ctx=$2 tag=$3
    shift 3
    run_logged "$logname" /usr/bin/time -f %M -o "$work/kiln-rss" \
        "$kiln_bin" --root "$kiln_root" build --network none --progress plain -t "$tag" "$@" "$ctx"
}
push_kiln() {
    run_logged "$1" kiln tag "$2" "$3"
    run_logged "$1" kiln push "$3"
}

reset_buildkit() {
    run_logged reset-buildkit docker system prune --all --force
    run_logged reset-buildkit docker builder prune --all --force
    run_logged reset-buildkit docker import "$rootfs" bench-base:latest
}
build_buildkit() {
    local logname=$1 ctx=$2 tag=$3
    shift 3
    run_logged "$logname" docker build --network none --progress plain -t "$tag" "$@" "$ctx"
}
push_buildkit() {
    run_logged "$1" docker tag "$2" "$3"
    run_logged "$1" docker push "$3"
}

reset_buildah() {
    run_logged reset-buildah buildah rm --all
    run_logged reset-buildah buildah rmi --all --force
    local ctr
    ctr=$(buildah from scratch 2>>"$work/logs/reset-buildah.log") || die "buildah from scratch failed"
    run_logged reset-buildah buildah add "$ctr" "$rootfs" /
    run_logged reset-buildah buildah commit --rm "$ctr" bench-base:latest
}
build_buildah() {
    local logname=$1 ctx=$2 tag=$3
    shift 3
    # --layers: buildah caches no steps by default; --jobs 0: it builds stages one at a time
    # by default. Both would be unfair to it.
    run_logged "$logname" buildah build --layers --jobs 0 --isolation oci --runtime runc \
        --network none -t "$tag" "$@" "$ctx"
}
push_buildah() {
    run_logged "$1" buildah push --tls-verify=false "$2" "docker://$3"
}

# Records one timed build: SCENARIO MODE TOOL REP CTX TAG [ARGS...]
timed_build() {
    local scenario=$1 mode=$2 tool=$3 rep=$4 ctx=$5 tag=$6
    shift 6
    local start end
    start=$EPOCHREALTIME
    "build_$tool" "$scenario-$mode-$tool-$rep" "$ctx" "$tag" "$@"
    end=$EPOCHREALTIME
    printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$mode" "$tool" "$rep" \
        "$(python3 -c "print(f'{$end - $start:.3f}')")" >>"$results"
    if [[ $tool == kiln ]]; then
        printf '%s\t%s\t%s\t%s\n' "$scenario" "$mode" "$rep" "$(cat "$work/kiln-rss")" >>"$rss"
    fi
}

timed_push() { # SCENARIO TOOL REP TAG
    local scenario=$1 tool=$2 rep=$3 tag=$4 start end
    restart_registry
    start=$EPOCHREALTIME
    "push_$tool" "$scenario-push-$tool-$rep" "$tag" "127.0.0.1:$registry_port/bench/$tag:r$rep"
    end=$EPOCHREALTIME
    printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" push "$tool" "$rep" \
        "$(python3 -c "print(f'{$end - $start:.3f}')")" >>"$results"
}

# --- contexts ---------------------------------------------------------------------------------

ctx=$work/ctx
log "writing the build contexts"

# small: a few RUN and COPY; the edited file is src/main.txt (its COPY and the RUNs after it
# re-run).
bench_small_context "$ctx/small"

# big: many small files plus a few large, half-compressible ones (a random half and a text half
# in every 64 KiB block, like typical binaries), copied whole; the edited file is one small one.
python3 - "$ctx/big" "$big_small_files" "$big_large_files" "$big_large_mb" <<'EOF'
import os, random, sys
root, n_small, n_large, large_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(4)
for i in range(n_small):
    d = os.path.join(root, "tree", f"d{i // 200:03d}")
    if i % 200 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.txt"), "w") as f:
        f.write(f"file {i}\n" * rng.randint(50, 400))
os.makedirs(os.path.join(root, "blobs"), exist_ok=True)
text = (b"the quick brown fox jumps over the lazy dog 0123456789\n" * 700)[:32768]
for j in range(n_large):
    with open(os.path.join(root, "blobs", f"large{j}.bin"), "wb") as f:
        for _ in range(large_mb * 16):
            f.write(rng.randbytes(32768))
            f.write(text)
EOF
cat >"$ctx/big/Dockerfile" <<'EOF'
FROM bench-base
COPY . /ctx/
RUN find /ctx -type f | wc -l > /file-count
EOF

# three independent stages joined by COPY --from; each stage copies its own input file, so
# editing s1.txt re-runs one stage.
write_stages() { # DIR RUN-COMMAND-WITH-@N@
    local dir=$1 cmd=$2 n
    mkdir -p "$dir"
    {
        for n in 1 2 3; do
            echo "FROM bench-base AS s$n"
            echo "COPY s$n.txt /"
            echo "RUN ${cmd//@N@/$n}"
            echo "s$n input" >"$dir/s$n.txt"
        done
        echo "FROM bench-base"
        for n in 1 2 3; do echo "COPY --from=s$n /out$n /"; done
    } >"$dir/Dockerfile"
}
write_stages "$ctx/stages-wait" "sleep $sleep_s && cat /s@N@.txt > /out@N@"
write_stages "$ctx/stages-cpu" \
    "{ cat /s@N@.txt; dd if=/dev/zero bs=1M count=$cpu_mb 2>/dev/null; } | sha256sum > /out@N@"

# thirty small layers: 29 RUN and one COPY in the middle; the edited file is that COPY's, so
# fifteen steps re-run.
mkdir -p "$ctx/thirty"
echo "app v1" >"$ctx/thirty/app.txt"
{
    echo "FROM bench-base"
    for i in $(seq -w 1 29); do
        ((10#$i == 15)) && echo "COPY app.txt /app.txt"
        echo "RUN echo layer $i > /layer$i"
    done
} >"$ctx/thirty/Dockerfile"

# The file each scenario's "one file changed" mode edits, and its original content.
declare -A edit_file=(
    [small]=src/main.txt
    [big]=tree/d000/f00000.txt
    [stages-wait]=s1.txt
    [stages-cpu]=s1.txt
    [thirty]=app.txt
)
declare -A edit_orig
for s in "${!edit_file[@]}"; do edit_orig[$s]=$(cat "$ctx/$s/${edit_file[$s]}"); done

# --- one scenario, one tool, one repetition ----------------------------------------------------

# cold (empty store, page cache dropped), then (for the pushed scenarios) a push to an empty
# registry, then a no-op rebuild, then a rebuild after editing one file.
run_sequence() { # SCENARIO TOOL REP
    local s=$1 tool=$2 rep=$3 tag
    tag=bench-$s
    printf '%s\n' "${edit_orig[$s]}" >"$ctx/$s/${edit_file[$s]}"

    if [[ $s == stages-wait ]]; then
        # The stages one at a time, each from an empty store: their sum is what a strictly
        # sequential builder would take for the joined build.
        local n
        "reset_$tool"
        drop_caches
        for n in 1 2 3; do timed_build "$s" "stage$n" "$tool" "$rep" "$ctx/$s" "$tag-s$n" --target "s$n"; done
    fi

    "reset_$tool"
    drop_caches
    timed_build "$s" cold "$tool" "$rep" "$ctx/$s" "$tag"
    if [[ $s == big || $s == thirty ]]; then
        timed_push "$s" "$tool" "$rep" "$tag"
    fi
    timed_build "$s" noop "$tool" "$rep" "$ctx/$s" "$tag"
    printf '%s\nedited in repetition %s\n' "${edit_orig[$s]}" "$rep" >"$ctx/$s/${edit_file[$s]}"
    timed_build "$s" change "$tool" "$rep" "$ctx/$s" "$tag"
    printf '%s\n' "${edit_orig[$s]}" >"$ctx/$s/${edit_file[$s]}"
}

# --- the machine ------------------------------------------------------------------------------

machine=$work/machine.txt
{
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "cpus: $(nproc) × $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "memory: $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "kernel: $(uname -r)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [[ -n ${KILN_BIN:-} ]]; then
        echo "kiln: $("$kiln_bin" --version) ($kiln_bin)"
    else
        echo "kiln: $("$kiln_bin" --version) ($(git -C "$repo" rev-parse --short HEAD))"
    fi
    has_tool buildkit && echo "dockerd: $(docker version --format '{{.Server.Version}}') (BuildKit built in)"
    has_tool buildah && echo "buildah: $(buildah --version | awk '{ print $3 }'), runc $(runc --version | awk 'NR == 1 { print $3 }')"
    echo "registry: $(docker-registry --version 2>/dev/null | awk '{ print $NF }')"
    echo "repetitions: $reps$quick_label"
    echo "big context: $big_small_files small files + $big_large_files × $big_large_mb MB; waiting stages: sleep $sleep_s; CPU-bound stages: sha256sum of $cpu_mb MB each"
    echo "page cache dropped before cold builds: PLACEHOLDER_DROP"
} >"$machine"

# --- the run ----------------------------------------------------------------------------------

IFS=, read -r -a scenarios <<<"${BENCH_SCENARIOS:-small,big,stages-wait,stages-cpu,thirty}"
for s in "${scenarios[@]}"; do
    case $s in small | big | stages-wait | stages-cpu | thirty) ;; *) die "BENCH_SCENARIOS: unknown scenario '$s'" ;; esac
done
log "running ${#scenarios[@]} scenarios × ${#tools[@]} tools × $reps repetitions in $work"
for ((rep = 1; rep <= reps; rep++)); do
    for si in "${!scenarios[@]}"; do
        s=${scenarios[$si]}
        # Rotate the order of the tools with every scenario and repetition.
        for ((k = 0; k < ${#tools[@]}; k++)); do
            tool=${tools[$(((rep + si + k) % ${#tools[@]}))]}
            log "repetition $rep/$reps: $s with $tool"
            run_sequence "$s" "$tool" "$rep"
        done
    done
done

dropped=no
if ((drop_caches_ok)); then dropped=yes; fi
sed -i "s/PLACEHOLDER_DROP/$dropped/" "$machine"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$machine"

# --- the report -------------------------------------------------------------------------------

# (A `$( ((quick)) && …)` here would fail the assignment, and the script, under set -e.)
out_dir=$repo/bench/results/$(date -u +%Y%m%dT%H%M%SZ)${quick_label:+-quick}
mkdir -p "$out_dir"
cp "$results" "$rss" "$machine" "$out_dir/"
if ((quick)) || [[ -n ${BENCH_SCENARIOS:-} ]]; then
    doc=$out_dir/benchmarks.md
    [[ -f $repo/docs/benchmarks.md ]] && cp "$repo/docs/benchmarks.md" "$doc"
else
    doc=$repo/docs/benchmarks.md
fi
python3 "$repo/bench/report.py" --results "$out_dir/results.tsv" --rss "$out_dir/rss.tsv" \
    --machine "$out_dir/machine.txt" --doc "$doc" --note "${BENCH_NOTE:-}"
log "raw figures in $out_dir; table written to $doc"
