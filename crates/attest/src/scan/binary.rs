//! Packages compiled into executables: Go's build info (the `.go.buildinfo` section: the Go
//! version and the module list `go version -m` prints) and Rust's `cargo auditable` data (the
//! `.dep-v0` section: zlib-compressed JSON of the dependency tree).
//!
//! Only ELF files are read, and only their section headers and those two sections (`pread`,
//! never the whole file). Go binaries from before Go 1.18 keep their build info behind
//! pointers into the data segment instead of inline; kiln does not follow them and lists no
//! modules for such binaries. A Go binary built without modules (GOPATH mode, as Debian
//! builds them) has build info naming only its main package: its modules are then read from
//! the function names of `.gopclntab` ([`super::gopclntab`]), without versions.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{Ecosystem, Package, purl};

/// Sections worth reading are far smaller than this; a larger one is not trusted.
const MAX_SECTION: u64 = 8 << 20;
/// The largest Go function name table read (a big binary's is a few megabytes).
const MAX_FUNCNAME_TABLE: u64 = 32 << 20;

/// The packages recorded in the ELF file at `path` (none when it is not ELF or has neither
/// section).
pub(super) fn scan_elf(path: &Path, found_in: &str) -> Vec<Package> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let Some(sections) = elf_sections(&file) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut gopclntab = None;
    let mut go_main_only = None;
    for (name, offset, size) in sections {
        if name == ".gopclntab" {
            gopclntab = Some((offset, size));
            continue;
        }
        if size > MAX_SECTION {
            continue;
        }
        let read = || {
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, offset).ok().map(|_| buf)
        };
        match name.as_str() {
            ".go.buildinfo" => {
                if let Some(data) = read() {
                    if let Some(info) = go_buildinfo(&data)
                        && info.modules.is_empty()
                    {
                        go_main_only = info.path;
                    }
                    out.extend(parse_go_buildinfo(&data, found_in));
                }
            }
            ".dep-v0" => {
                if let Some(data) = read() {
                    out.extend(parse_auditable(&data, found_in));
                }
            }
            _ => {}
        }
    }
    if let (Some(main), Some((offset, size))) = (go_main_only, gopclntab) {
        out.extend(gopath_modules(&file, offset, size, &main, found_in));
    }
    out
}

/// A GOPATH-mode binary's modules: its main package's module, then every other module whose
/// functions are linked in, all without versions.
fn gopath_modules(
    file: &std::fs::File,
    offset: u64,
    size: u64,
    main: &str,
    found_in: &str,
) -> Vec<Package> {
    let mut head = [0u8; 64];
    if size < head.len() as u64 || file.read_exact_at(&mut head, offset).is_err() {
        return Vec::new();
    }
    let Some((start, end)) = super::gopclntab::funcname_table(&head) else {
        return Vec::new();
    };
    if end > size || end - start > MAX_FUNCNAME_TABLE {
        return Vec::new();
    }
    let mut table = vec![0u8; (end - start) as usize];
    if file.read_exact_at(&mut table, offset + start).is_err() {
        return Vec::new();
    }
    let main_module = super::gopclntab::module_of(main);
    let mut modules: Vec<&str> = vec![main_module];
    let packages = super::gopclntab::packages(&table);
    let deps: std::collections::BTreeSet<&str> = packages
        .iter()
        .map(|p| super::gopclntab::module_of(p))
        .filter(|m| *m != main_module)
        .collect();
    modules.extend(deps);
    modules
        .into_iter()
        .map(|m| go_module(m, "", found_in))
        .collect()
}

/// A Go module as a package.
fn go_module(path: &str, version: &str, found_in: &str) -> Package {
    let (namespace, name) = match path.rsplit_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, path),
    };
    Package {
        ecosystem: Ecosystem::Go,
        purl: purl(Ecosystem::Go, namespace, name, version, &[]),
        name: path.to_owned(),
        version: version.to_owned(),
        license: None,
        supplier: None,
        found_in: found_in.to_owned(),
    }
}

/// What a Go build info section says.
#[derive(Debug, Default, PartialEq, Eq)]
struct GoBuildInfo {
    go_version: String,
    /// The main package's import path (`path` line).
    path: Option<String>,
    /// Main module and dependencies, `=>` replacements applied: (path, version).
    modules: Vec<(String, String)>,
}

/// (name, file offset, size) of each section with file content.
fn elf_sections(file: &std::fs::File) -> Option<Vec<(String, u64, u64)>> {
    let mut ident = [0u8; 64];
    file.read_exact_at(&mut ident, 0).ok()?;
    if ident[..4] != *b"\x7fELF" {
        return None;
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let u16_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1]];
        u64::from(if big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        })
    };
    let u32_at = |b: &[u8], o: usize| {
        let v = [b[o], b[o + 1], b[o + 2], b[o + 3]];
        u64::from(if big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        })
    };
    let u64_at = |b: &[u8], o: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[o..o + 8]);
        if big {
            u64::from_be_bytes(v)
        } else {
            u64::from_le_bytes(v)
        }
    };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        (
            u64_at(&ident, 0x28),
            u16_at(&ident, 0x3A),
            u16_at(&ident, 0x3C),
            u16_at(&ident, 0x3E),
        )
    } else {
        (
            u32_at(&ident, 0x20),
            u16_at(&ident, 0x2E),
            u16_at(&ident, 0x30),
            u16_at(&ident, 0x32),
        )
    };
    let min_entsize = if wide { 64 } else { 40 };
    if shoff == 0 || shnum == 0 || shentsize < min_entsize || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; usize::try_from(shentsize * shnum).ok()?];
    file.read_exact_at(&mut table, shoff).ok()?;
    // (name offset, type, file offset, size)
    let headers: Vec<(u64, u64, u64, u64)> = table
        .chunks_exact(shentsize as usize)
        .map(|h| {
            if wide {
                (u32_at(h, 0), u32_at(h, 4), u64_at(h, 24), u64_at(h, 32))
            } else {
                (u32_at(h, 0), u32_at(h, 4), u32_at(h, 16), u32_at(h, 20))
            }
        })
        .collect();
    let (_, _, str_off, str_size) = headers[shstrndx as usize];
    if str_size > MAX_SECTION {
        return None;
    }
    let mut names = vec![0u8; str_size as usize];
    file.read_exact_at(&mut names, str_off).ok()?;
    const SHT_NOBITS: u64 = 8;
    Some(
        headers
            .iter()
            .filter(|(_, ty, _, _)| *ty != SHT_NOBITS)
            .filter_map(|&(name, _, off, size)| {
                let rest = names.get(name as usize..)?;
                let end = rest.iter().position(|&b| b == 0)?;
                Some((
                    String::from_utf8_lossy(&rest[..end]).into_owned(),
                    off,
                    size,
                ))
            })
            .collect(),
    )
}

/// Go's build info section (Go 1.18 and later): a 32-byte header — the magic
/// `\xff Go buildinf:`, the pointer size, flags (bit 1: strings inline) — then the Go version
/// and the module info as varint-length-prefixed strings. The module info is framed by
/// 16-byte sentinels and lists `path`, `mod` and `dep` lines (`=>` replaces the line before).
pub fn parse_go_buildinfo(data: &[u8], found_in: &str) -> Vec<Package> {
    let Some(info) = go_buildinfo(data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if !info.go_version.is_empty() {
        out.push(go_module("stdlib", &info.go_version, found_in));
    }
    for (path, version) in &info.modules {
        out.push(go_module(path, version, found_in));
    }
    out
}

fn go_buildinfo(data: &[u8]) -> Option<GoBuildInfo> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    const INLINE: u8 = 0x2;
    let start = data.windows(MAGIC.len()).position(|w| w == MAGIC)?;
    let data = &data[start..];
    if data.len() < 32 || data[15] & INLINE == 0 {
        return None;
    }
    let mut rest = &data[32..];
    let go_version = varint_string(&mut rest)?;
    let mut modinfo = varint_string(&mut rest)?;
    if modinfo.len() >= 33 && modinfo[modinfo.len() - 17] == b'\n' {
        modinfo = &modinfo[16..modinfo.len() - 16];
    }
    let mut info = GoBuildInfo {
        go_version: String::from_utf8_lossy(go_version).into_owned(),
        ..GoBuildInfo::default()
    };
    for line in String::from_utf8_lossy(modinfo).lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields.as_slice() {
            ["path", path, ..] => info.path = Some((*path).to_owned()),
            ["mod" | "dep", path, version, ..] => {
                info.modules
                    .push(((*path).to_owned(), (*version).to_owned()));
            }
            ["=>", path, version, ..] if !info.modules.is_empty() => {
                let last = info.modules.len() - 1;
                info.modules[last] = ((*path).to_owned(), (*version).to_owned());
            }
            _ => {}
        }
    }
    Some(info)
}

fn varint_string<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let len = usize::try_from(len).ok()?;
    if rest.len() < len {
        return None;
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    Some(s)
}

/// `cargo auditable`'s `.dep-v0` section: zlib-compressed JSON
/// `{"packages":[{"name","version","source","kind"?,…}]}`. Build-time dependencies
/// (`"kind":"build"`) are not in the binary and are left out.
pub fn parse_auditable(data: &[u8], found_in: &str) -> Vec<Package> {
    let mut json = Vec::new();
    if flate2::read::ZlibDecoder::new(data)
        .take(MAX_SECTION)
        .read_to_end(&mut json)
        .is_err()
    {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) else {
        return Vec::new();
    };
    let Some(packages) = v.get("packages").and_then(|p| p.as_array()) else {
        return Vec::new();
    };
    packages
        .iter()
        .filter(|p| p.get("kind").and_then(|k| k.as_str()) != Some("build"))
        .filter_map(|p| {
            let name = p.get("name")?.as_str()?;
            let version = p.get("version")?.as_str()?;
            Some(Package {
                ecosystem: Ecosystem::Cargo,
                purl: purl(Ecosystem::Cargo, None, name, version, &[]),
                name: name.to_owned(),
                version: version.to_owned(),
                license: None,
                supplier: None,
                found_in: found_in.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A Go 1.18+ build info section as the linker lays it out.
    fn go_section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut s = b"\xff Go buildinf:".to_vec();
        s.push(8); // pointer size
        s.push(0x2); // inline strings, little endian
        s.resize(32, 0);
        // 16-byte sentinels frame the text, whose last byte is a newline.
        let framed = format!("{}{modinfo}{}", "0".repeat(16), "1".repeat(16));
        for text in [version, &framed] {
            let mut n = text.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                s.push(if n > 0 { b | 0x80 } else { b });
                if n == 0 {
                    break;
                }
            }
            s.extend_from_slice(text.as_bytes());
        }
        s
    }

    #[test]
    fn go_build_info_lists_the_toolchain_main_module_and_deps_with_replacements() {
        let modinfo = "path\texample.com/app\nmod\texample.com/app\t(devel)\t\n\
                       dep\tgolang.org/x/text\tv0.14.0\th1:abc=\n\
                       dep\tgithub.com/old/lib\tv1.0.0\th1:def=\n\
                       =>\tgithub.com/new/lib\tv1.2.0\th1:ghi=\nbuild\t-compiler=gc\n";
        let mut data = vec![0u8; 48]; // the section need not start at the magic
        data.extend(go_section("go1.22.1", modinfo));
        let got: Vec<_> = parse_go_buildinfo(&data, "/app")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(
            got,
            [
                "pkg:golang/stdlib@go1.22.1",
                "pkg:golang/example.com/app@%28devel%29",
                "pkg:golang/golang.org/x/text@v0.14.0",
                "pkg:golang/github.com/new/lib@v1.2.0",
            ]
        );
        let mut pointer_form = go_section("go1.17", modinfo);
        pointer_form[15] = 0;
        assert!(parse_go_buildinfo(&pointer_form, "/app").is_empty());
        assert!(
            parse_go_buildinfo(&data[..40], "/app").is_empty(),
            "truncated"
        );
    }

    #[test]
    fn auditable_data_skips_build_dependencies() {
        let json = br#"{"packages":[{"name":"app","version":"0.1.0","source":"local","root":true},
            {"name":"serde","version":"1.0.200","source":"crates.io"},
            {"name":"cc","version":"1.0.0","source":"crates.io","kind":"build"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let got: Vec<_> = parse_auditable(&z.finish().unwrap(), "/bin/app")
            .into_iter()
            .map(|p| p.purl)
            .collect();
        assert_eq!(got, ["pkg:cargo/app@0.1.0", "pkg:cargo/serde@1.0.200"]);
        assert!(parse_auditable(b"not zlib", "/x").is_empty());
    }

    #[test]
    fn elf_sections_are_found_by_name_in_a_file_built_here() {
        // A minimal ELF64 little-endian file: header, the two sections' data, a string table
        // and three section headers (null, .dep-v0, .shstrtab).
        let json = br#"{"packages":[{"name":"tiny","version":"0.0.1","source":"local"}]}"#;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(json).unwrap();
        let dep = z.finish().unwrap();
        let strtab = b"\0.dep-v0\0.shstrtab\0";
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        let dep_off = f.len() as u64;
        f.extend_from_slice(&dep);
        let str_off = f.len() as u64;
        f.extend_from_slice(strtab);
        let shoff = f.len() as u64;
        let mut sh = |name: u32, ty: u32, off: u64, size: u64| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&ty.to_le_bytes());
            h[24..32].copy_from_slice(&off.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            f.extend(h);
        };
        sh(0, 0, 0, 0);
        sh(1, 1, dep_off, dep.len() as u64);
        sh(9, 3, str_off, strtab.len() as u64);
        f[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        f[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        f[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
        f[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("tiny");
        std::fs::write(&path, &f).unwrap();
        let got = scan_elf(&path, "/tiny");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].purl, "pkg:cargo/tiny@0.0.1");
        std::fs::write(
            &path,
            b"#!/bin/sh\necho not elf, long enough to be looked at....\n",
        )
        .unwrap();
        assert!(scan_elf(&path, "/x").is_empty());
    }
}
