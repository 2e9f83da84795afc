#!/usr/bin/env bash
# Builds a minimal root filesystem from Debian's busybox-static, as a plain, reproducible tar.
#
#   scripts/busybox-rootfs.sh OUT.tar
#
# The tar holds /bin/busybox, one symlink per applet pointing at it, /etc/passwd and /etc/group
# (root, nobody/nogroup, and a kiln user 1000:1000 whose home /home/kiln it owns) and the usual
# empty directories. Running it twice gives byte-identical output: names are sorted, every
# mtime is the epoch and ownership is fixed (0:0 except /home/kiln), so the layer digest only
# changes when the busybox binary does. Set BUSYBOX to use another static busybox binary.
set -euo pipefail

die() {
    echo "busybox-rootfs.sh: error: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 OUT.tar"
out=$1
busybox=${BUSYBOX:-/bin/busybox}

[[ -x $busybox ]] || die "$busybox not found or not executable; install it with: apt-get install busybox-static"
# A dynamically linked busybox (Debian's plain `busybox` package) would not run inside the
# rootfs, which has no libc.
if ldd "$busybox" >/dev/null 2>&1; then
    die "$busybox is dynamically linked; install the static one with: apt-get install busybox-static"
fi
command -v tar >/dev/null || die "tar not found"

staging=$(mktemp -d "${TMPDIR:-/tmp}/busybox-rootfs.XXXXXX")
trap 'rm -rf "$staging"' EXIT
# Modes below are set explicitly; the umask must not leak into the image.
umask 022

install -d -m 0755 "$staging"/{bin,sbin,etc,home,var,usr,usr/bin,usr/sbin}
install -d -m 1777 "$staging/tmp"
install -d -m 0700 "$staging/root"
install -d -m 0755 "$staging/home/kiln"
install -m 0755 "$busybox" "$staging/bin/busybox"

applets=$("$busybox" --list-full) || die "$busybox --list-full failed"
[[ -n $applets ]] || die "$busybox --list-full printed no applets"
while IFS= read -r applet; do
    case $applet in
        # The binary itself; and /linuxrc, an initrd boot hook that has no place in a container.
        bin/busybox | linuxrc) continue ;;
        /* | *..*) die "unexpected applet path from --list-full: $applet" ;;
    esac
    mkdir -p "$staging/$(dirname "$applet")"
    ln -sf /bin/busybox "$staging/$applet"
done <<<"$applets"

cat >"$staging/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
kiln:x:1000:1000:kiln:/home/kiln:/bin/sh
PASSWD
cat >"$staging/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
kiln:x:1000:
GROUP
chmod 0644 "$staging/etc/passwd" "$staging/etc/group"

# Names are listed and sorted here (C locale) rather than by tar's directory walk, so the
# order does not depend on the filesystem or the locale, and entries carry no "./" prefix.
list_dir=$(mktemp -d "${TMPDIR:-/tmp}/busybox-rootfs-lists.XXXXXX")
trap 'rm -rf "$staging" "$list_dir"' EXIT
(cd "$staging" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort) >"$list_dir/all"
# /home/kiln must belong to the kiln user while everything else belongs to root, and tar's
# --owner applies to a whole run; so the archive is written in three sorted runs, the middle
# one holding only home/kiln.
kiln_home=home/kiln
LC_ALL=C awk -v k="$kiln_home" '$0 < k' "$list_dir/all" >"$list_dir/before"
LC_ALL=C awk -v k="$kiln_home" '$0 > k' "$list_dir/all" >"$list_dir/after"

tmp_out="$out.tmp.$$"
trap 'rm -rf "$staging" "$list_dir" "$tmp_out"' EXIT
tar_run() { # MODE OWNER LIST
    tar "$1" --file="$tmp_out" --directory="$staging" \
        --format=ustar --no-recursion --files-from="$3" \
        --mtime=@0 --owner="$2" --group="$2" --numeric-owner \
        || die "tar failed writing $out"
}
tar_run --create 0 "$list_dir/before"
echo "$kiln_home" >"$list_dir/kiln"
tar_run --append 1000 "$list_dir/kiln"
tar_run --append 0 "$list_dir/after"
mv -f "$tmp_out" "$out"
