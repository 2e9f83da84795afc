# Shared pieces of the benchmark scripts; sourced, not run.
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# bench_small_context DIR: writes bench/run.sh's *small* scenario into DIR (a WORKDIR, two
# COPY, three RUN and metadata on `bench-base`; src/main.txt is the file the "one file
# changed" runs edit). Every script that measures the small scenario builds this same context.
bench_small_context() {
    local dir=$1
    mkdir -p "$dir/src" "$dir/config"
    for i in $(seq -w 1 20); do seq 1 40 | sed "s/^/module $i line /" >"$dir/src/mod$i.txt"; done
    echo "main v1" >"$dir/src/main.txt"
    echo "level=info" >"$dir/config/app.conf"
    cat >"$dir/Dockerfile" <<'DOCKERFILE'
FROM bench-base
WORKDIR /app
COPY config/ /app/config/
RUN mkdir -p /app/out && echo ready > /app/out/stamp
COPY src/ /app/src/
RUN cat /app/src/*.txt | wc -c > /app/out/size
RUN ls -l /app/src > /app/out/listing && sha256sum /app/src/* > /app/out/sums
ENV APP_MODE=production
CMD ["cat", "/app/out/size"]
DOCKERFILE
}

# bench_unmount_under DIR: unmounts whatever a killed build left mounted below DIR, deepest
# first, so that DIR can be removed.
bench_unmount_under() {
    awk -v w="$1" 'index($2, w "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
        while IFS= read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}

# bench_kiln_binary NAME: sets KILN to the binary to measure ($KILN if given, else the release
# build, built when missing) and fails, naming the script NAME, if it is not an executable.
bench_kiln_binary() {
    if [[ -z ${KILN:-} ]]; then
        KILN=$ROOT/target/release/kiln
        [[ -x $KILN ]] || cargo build --release --quiet --locked --bin kiln
    fi
    [[ -x $KILN ]] || { echo "$1: $KILN is not an executable" >&2; exit 1; }
}
