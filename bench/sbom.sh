#!/usr/bin/env bash
# SBOM scanning cost benchmark (issue 14): cold builds of a small application on a Debian base,
# with and without `--sbom=true`, taking turns in rotating order, each from an empty store
# holding only the base image. Prints a Markdown table of medians (wall time and CPU time of
# kiln and its children); the "SBOM and provenance" section of docs/benchmarks.md is written
# from it by hand. Every run with the SBOM must list the base's dpkg packages, the Python
# distribution and the npm package (the script fails otherwise).
#
# The Debian base is made from this (Debian) machine's own dpkg database, offline: the files
# of every installed package of priority required or important and of what they depend on
# (`dpkg -L`), its status
# paragraphs as /var/lib/dpkg/status, and /etc/os-release — the package set of a minimal
# debootstrap plus its dependencies (130 packages, 165 MB on the machine of the figures).
#
#   bench/sbom.sh                       # target/release/kiln (built when missing), 5 runs
#   RUNS=9 bench/sbom.sh                # more runs
#   KILN=target/debug/kiln bench/sbom.sh
#   KEEP=1 bench/sbom.sh                # keep the work dir and its results.tsv
#
# Runs as root (kiln build mounts overlays); needs dpkg-query, /usr/bin/time and python3. The
# page cache is not dropped (the machine is shared): cold means an empty store holding only the
# base.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/bench/lib.sh"
RUNS=${RUNS:-5}
[[ $(id -u) -eq 0 ]] || { echo "sbom.sh: must run as root" >&2; exit 1; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "sbom.sh: RUNS must be a positive integer" >&2; exit 1; }
((BASH_VERSINFO[0] >= 5)) || { echo "sbom.sh: needs bash 5 (for \$EPOCHREALTIME)" >&2; exit 1; }
command -v dpkg-query >/dev/null || { echo "sbom.sh: needs a Debian host (dpkg-query)" >&2; exit 1; }
bench_kiln_binary sbom.sh
WORK=$(mktemp -d "${BENCH_TMP:-/var/tmp}/kiln-bench-sbom.XXXXXX")

cleanup() {
    bench_unmount_under "$WORK"
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK (results.tsv)" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# The Debian base.
# Priority required and important, and what they depend on (libc6 itself is "optional").
mapfile -t pkgs < <(dpkg-query -W -f='${binary:Package}\t${Package}\t${Priority}\t${db:Status-Status}\t${Pre-Depends}, ${Depends}\n' |
    python3 -c '
import re, sys
rows = [l.rstrip("\n").split("\t") for l in sys.stdin]
rows = [r for r in rows if len(r) == 5 and r[3] == "installed"]
by_name = {r[1]: r for r in rows}
todo = [r[1] for r in rows if r[2] in ("required", "important")]
keep = set()
while todo:
    name = todo.pop()
    if name in keep or name not in by_name:
        continue
    keep.add(name)
    for dep in by_name[name][4].split(","):
        alternatives = [re.split(r"[ :(]", a.strip())[0] for a in dep.split("|")]
        present = [a for a in alternatives if a in by_name]
        if present:
            todo.append(present[0])
print("\n".join(sorted(by_name[n][0] for n in keep)))
')
rootfs=$WORK/rootfs
mkdir -p "$rootfs/var/lib/dpkg" "$rootfs/etc" "$rootfs/tmp"
# dpkg -L lists paths as packaged (/bin/sh); on a merged-/usr host /bin is a link to usr/bin,
# so each path is taken with its directory resolved (/usr/bin/sh), and the top-level links are
# recreated. (dpkg -L also prints "diverted by …" notes: only absolute paths are files.)
for p in "${pkgs[@]}"; do dpkg -L "$p"; done | python3 -c '
import os, sys
seen = set()
for line in sys.stdin:
    f = line.rstrip("\n")
    if not f.startswith("/") or not os.path.lexists(f):
        continue
    if os.path.isdir(f) and not os.path.islink(f):
        continue
    real = os.path.join(os.path.realpath(os.path.dirname(f)), os.path.basename(f))
    if real not in seen:
        seen.add(real)
        print(real[1:])
' | sort >"$WORK/files"
tar -C / --no-recursion -cf - -T "$WORK/files" | tar -C "$rootfs" -xf -
for d in bin sbin lib lib64; do
    if [[ -L /$d && ! -e $rootfs/$d ]]; then ln -s "$(readlink "/$d")" "$rootfs/$d"; fi
done
# The x86-64 loader's usual name, where the host lacks it (libc6 ships it as a link).
if [[ -e $rootfs/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 && ! -e $rootfs/usr/lib64/ld-linux-x86-64.so.2 ]]; then
    mkdir -p "$rootfs/usr/lib64"
    ln -s ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$rootfs/usr/lib64/ld-linux-x86-64.so.2"
fi
dpkg-query -s "${pkgs[@]}" >"$rootfs/var/lib/dpkg/status"
cp /etc/os-release "$rootfs/etc/os-release" 2>/dev/null || cp /usr/lib/os-release "$rootfs/etc/os-release"
tar -C "$rootfs" -cf "$WORK/debian.tar" .
"$KILN" --root "$WORK/seed" import "$WORK/debian.tar" bench-debian:latest >/dev/null
"$KILN" --root "$WORK/seed" save -o "$WORK/base.tar" bench-debian:latest
echo "base: ${#pkgs[@]} packages, $(du -sh "$rootfs" | cut -f1)" >&2

# The application: a Python distribution and an npm package installed as pip and npm leave
# them, plus a RUN step (the build must run a container on the base, as real ones do).
ctx=$WORK/app
mkdir -p "$ctx/site/demo-1.4.2.dist-info" "$ctx/node_modules/left-pad" "$ctx/site/demo"
printf 'Metadata-Version: 2.1\nName: demo\nVersion: 1.4.2\n\n' >"$ctx/site/demo-1.4.2.dist-info/METADATA"
echo 'print("demo")' >"$ctx/site/demo/__init__.py"
echo '{"name":"left-pad","version":"1.3.0"}' >"$ctx/node_modules/left-pad/package.json"
echo 'module.exports = (s) => s;' >"$ctx/node_modules/left-pad/index.js"
cat >"$ctx/Dockerfile" <<'EOF'
FROM bench-debian
COPY site/ /usr/lib/python3/dist-packages/
COPY node_modules/ /srv/app/node_modules/
RUN echo ready > /srv/app/stamp && ls /usr/lib/python3/dist-packages > /srv/app/python
CMD ["cat", "/srv/app/stamp"]
EOF

results=$WORK/results.tsv
modes=(without with)
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((rep = 0; rep < RUNS; rep++)); do
    for ((j = 0; j < 2; j++)); do
        mode=${modes[(j + rep) % 2]} # rotate which mode goes first
        store=$WORK/store-$mode
        bench_unmount_under "$store"
        rm -rf "$store"
        "$KILN" --root "$store" load -i "$WORK/base.tar" >/dev/null
        args=(build --network none --progress plain -t bench-sbom)
        [[ $mode == with ]] && args+=(--sbom=true)
        start=$EPOCHREALTIME
        /usr/bin/time -f '%U %S' -o "$WORK/cpu" "$KILN" --root "$store" "${args[@]}" "$ctx" \
            >"$WORK/log" 2>&1 || { cat "$WORK/log" >&2; exit 1; }
        end=$EPOCHREALTIME
        packages=0
        scan=0
        if [[ $mode == with ]]; then
            # kiln reports how long scanning and attaching took: "attestations: … (0.12s)".
            scan=$(sed -n 's/^attestations: .*(\([0-9.]*\)s)$/\1/p' "$WORK/log")
            [[ -n $scan ]] || { cat "$WORK/log" >&2; exit 1; }
            "$KILN" --root "$store" inspect --sbom bench-sbom >"$WORK/sbom.json"
            packages=$(python3 - "$WORK/sbom.json" <<'EOF'
import json, sys
purls = [p["externalRefs"][0]["referenceLocator"]
         for p in json.load(open(sys.argv[1]))[0]["predicate"]["packages"][1:]]
debs = [p for p in purls if p.startswith("pkg:deb/")]
assert any(p.startswith("pkg:pypi/demo@1.4.2") for p in purls), purls
assert any(p.startswith("pkg:npm/left-pad@1.3.0") for p in purls), purls
assert len(debs) >= 20, f"only {len(debs)} dpkg packages"
print(len(purls))
EOF
)
        fi
        read -r user sys <"$WORK/cpu"
        python3 -c "print(f'$mode\t{$end - $start:.3f}\t{$user + $sys:.2f}\t$packages\t$scan')" >>"$results"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$results" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
print("| Debian app, cold | median wall (s) | min–max (s) | median CPU (s) | runs | packages listed |")
print("|---|---:|---:|---:|---:|---:|")
med = {}
for mode in ["without", "with"]:
    mine = [r for r in rows if r[0] == mode]
    wall = [float(r[1]) for r in mine]
    cpu = [float(r[2]) for r in mine]
    med[mode] = statistics.median(wall)
    label = "with --sbom=true" if mode == "with" else "without"
    listed = mine[0][3] if mode == "with" else "–"
    print(f"| {label} | {med[mode]:.2f} | {min(wall):.2f}–{max(wall):.2f} | "
          f"{statistics.median(cpu):.2f} | {len(mine)} | {listed} |")
scan = [float(r[4]) for r in rows if r[0] == "with"]
print(f"\nSBOM overhead (median wall): {100 * (med['with'] / med['without'] - 1):+.1f}%; "
      f"scan + attach as kiln timed it: median {statistics.median(scan):.3f} s "
      f"(min–max {min(scan):.3f}–{max(scan):.3f}), "
      f"{100 * statistics.median(scan) / med['without']:.1f}% of the median build without")
EOF
