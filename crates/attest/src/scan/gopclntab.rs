//! The Go packages compiled into a binary built without modules (GOPATH mode, as Debian's
//! `dh-golang` builds every Go package), read from the function names of its `.gopclntab`
//! section — the runtime's own symbol table, which stripping leaves in place.
//!
//! Such a binary's build info names only its main package (`path`), no `mod` or `dep`
//! lines, so the build info alone would list nothing but the Go toolchain. The function
//! names (`github.com/mattn/go-runewidth.StringWidth`, `golang.org/x/sys/unix.Syscall`)
//! say which packages are linked in (the linker writes a dot in a path's last element as
//! `%2e`, so `gopkg.in/yaml%2ev3.Unmarshal` is package `gopkg.in/yaml.v3`); each is folded to
//! its module by the import path
//! conventions of the hosts Go knows (`github.com/owner/repo`, `golang.org/x/name`,
//! `gopkg.in/name.vN`, a `/vN` major-version suffix). The key decision: the versions are not
//! in the binary, so these modules are listed without one (a purl without `@version`) rather
//! than guessed; a distribution's own record (dpkg's `Built-Using`) is where versions are.
//!
//! Header layout (Go's `runtime/symtab.go` `pcHeader`): magic (u32), two zero bytes, the
//! instruction size quantum, the pointer size, then pointer-sized fields `nfunc`, `nfiles`,
//! [`textStart`, Go 1.18+], `funcnameOffset`, `cuOffset`, …, offsets from the section start;
//! the function name table is NUL-separated names from `funcnameOffset` to `cuOffset`.

use std::collections::BTreeSet;

/// `pcHeader` magics: Go 1.16–1.17, 1.18–1.19, 1.20 and later.
const GO116: u32 = 0xffff_fffa;
const GO118: u32 = 0xffff_fff0;
const GO120: u32 = 0xffff_fff1;

/// Where the function name table is in a `.gopclntab` section whose first bytes are `head`
/// (at least 64): `(start, end)` offsets from the section start.
pub fn funcname_table(head: &[u8]) -> Option<(u64, u64)> {
    if head.len() < 8 || head[4] != 0 || head[5] != 0 {
        return None;
    }
    let ptr = head[7] as usize;
    if ptr != 4 && ptr != 8 {
        return None;
    }
    let little = u32::from_le_bytes(head[..4].try_into().ok()?);
    let big = u32::from_be_bytes(head[..4].try_into().ok()?);
    let (magic, le) = match (little, big) {
        (m @ (GO116 | GO118 | GO120), _) => (m, true),
        (_, m @ (GO116 | GO118 | GO120)) => (m, false),
        _ => return None,
    };
    let field = |i: usize| -> Option<u64> {
        let at = 8 + i * ptr;
        let bytes = head.get(at..at + ptr)?;
        Some(match (ptr, le) {
            (8, true) => u64::from_le_bytes(bytes.try_into().ok()?),
            (8, false) => u64::from_be_bytes(bytes.try_into().ok()?),
            (_, true) => u64::from(u32::from_le_bytes(bytes.try_into().ok()?)),
            (_, false) => u64::from(u32::from_be_bytes(bytes.try_into().ok()?)),
        })
    };
    // Go 1.18 put textStart before the offsets.
    let first = if magic == GO116 { 2 } else { 3 };
    let (start, end) = (field(first)?, field(first + 1)?);
    (start < end).then_some((start, end))
}

/// The import paths of the non-standard-library packages whose functions are in `table`
/// (the function name table), sorted.
pub fn packages(table: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in table.split(|&b| b == 0) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if let Some(pkg) = package_of(name)
            && pkg.split('/').next().is_some_and(|host| host.contains('.'))
        {
            out.insert(unescape(pkg));
        }
    }
    out
}

/// Undoes the linker's escaping of a symbol's package path (`gopkg.in/yaml%2ev3`: dots in the
/// last element, and control characters, `%` and `"` anywhere, are `%xx`), so the path's
/// own dots cannot be taken for the one before the symbol name.
fn unescape(pkg: &str) -> String {
    let bytes = pkg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The package a function name belongs to: `a/b/c.F` → `a/b/c`, `a/b.(*T).M` → `a/b`,
/// `a/b.F[...]` → `a/b`. Compiler-made names (`type..eq.…`, `go:…`) belong to none.
fn package_of(name: &str) -> Option<&str> {
    if name.starts_with("type:")
        || name.starts_with("type..")
        || name.starts_with("go:")
        || name.starts_with("vendor/")
    {
        return None;
    }
    // `go.shape.…`, `go.itab.…`, `go.buildid` are the compiler's; `go.uber.org/…` is a host.
    if name.starts_with("go.") {
        let host = name.split('/').next().unwrap_or(name);
        let domain = host.len() < name.len()
            && host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !domain {
            return None;
        }
    }
    // Type arguments of a generic instantiation may name other packages: cut them off.
    let name = name.split('[').next()?;
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[last_slash..].find('.')? + last_slash;
    Some(&name[..dot])
}

/// The module a package path belongs to, by the layout of well-known hosts; elsewhere the
/// first two path elements (a vanity domain and a name: `go.uber.org/zap`).
pub fn module_of(package: &str) -> &str {
    let parts: Vec<&str> = package.split('/').collect();
    let mut take = match parts[0] {
        "github.com" | "gitlab.com" | "bitbucket.org" | "golang.org" | "codeberg.org" => 3,
        "gopkg.in" => {
            // gopkg.in/name.vN or gopkg.in/user/name.vN.
            parts
                .iter()
                .position(|p| is_gopkg_version(p))
                .map_or(2, |i| i + 1)
        }
        _ => 2,
    };
    take = take.min(parts.len());
    // A major version suffix is part of the module path (`github.com/x/y/v2`).
    if parts.get(take).is_some_and(|p| is_major_version(p)) {
        take += 1;
    }
    let len = parts[..take].iter().map(|p| p.len()).sum::<usize>() + take - 1;
    &package[..len]
}

fn is_major_version(p: &str) -> bool {
    p.strip_prefix('v').is_some_and(|n| {
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n != "0" && n != "1"
    })
}

fn is_gopkg_version(p: &str) -> bool {
    p.rsplit_once(".v")
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_give_their_packages_and_modules() {
        let table = b"internal/cpu.Initialize\0runtime.main\0main.main\0\
github.com/mattn/go-runewidth.StringWidth\0\
github.com/junegunn/fzf/src/tui.(*LightRenderer).Init\0\
golang.org/x/sys/unix.Syscall\0type..eq.github.com/x/y.T\0\
github.com/a/b/v2.F[go.shape.int]\0sort.Slice[github.com/c/d.T]\0go.shape.int\0\
go.itab.*github.com/e/f.T,io.Writer\0go.buildid\0\
gopkg.in/yaml%2ev3.Unmarshal\0go.uber.org/zap/zapcore.NewCore\0\
vendor/golang.org/x/net/dns/dnsmessage.(*Parser).Start\0\xff\xfe\0";
        let pkgs = packages(table);
        assert_eq!(
            pkgs.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "github.com/a/b/v2",
                "github.com/junegunn/fzf/src/tui",
                "github.com/mattn/go-runewidth",
                "go.uber.org/zap/zapcore",
                "golang.org/x/sys/unix",
                "gopkg.in/yaml.v3",
            ]
        );
        let modules: BTreeSet<&str> = pkgs.iter().map(|p| module_of(p)).collect();
        assert_eq!(
            modules.into_iter().collect::<Vec<_>>(),
            [
                "github.com/a/b/v2",
                "github.com/junegunn/fzf",
                "github.com/mattn/go-runewidth",
                "go.uber.org/zap",
                "golang.org/x/sys",
                "gopkg.in/yaml.v3",
            ]
        );
        assert_eq!(
            module_of("gopkg.in/src-d/go-git.v4/plumbing"),
            "gopkg.in/src-d/go-git.v4"
        );
        assert_eq!(module_of("github.com/x"), "github.com/x");
    }

    #[test]
    fn header_offsets_for_each_layout_and_byte_order() {
        let mut h = vec![0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8];
        for v in [10u64, 20, 0x400000, 96, 1000] {
            h.extend(v.to_le_bytes());
        }
        assert_eq!(funcname_table(&h), Some((96, 1000)));
        let mut h = vec![0xff, 0xff, 0xff, 0xfa, 0, 0, 4, 4];
        for v in [10u32, 20, 64, 500] {
            h.extend(v.to_be_bytes());
        }
        assert_eq!(funcname_table(&h), Some((64, 500)));
        assert_eq!(funcname_table(b"\x7fELF\0\0\0\0"), None);
    }
}
