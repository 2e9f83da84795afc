//! Finding the packages installed in an image's filesystem.
//!
//! One walk of the merged tree (`rootfs`) collects what each ecosystem leaves behind —
//! Python's `*.dist-info/METADATA` and `*.egg-info`, npm's `node_modules/**/package.json`
//! and `package-lock.json`, executable ELF files (Go build info, `cargo auditable` data) —
//! and the package databases at fixed paths are read directly (dpkg's `status` and
//! `status.d/`, apk's `installed`). The key decision: every scanner is a pure function of
//! file bytes (unit-tested on bytes built in the test), and the walk is the only part that
//! touches the filesystem, so adding an ecosystem is adding a parser.

mod apk;
mod binary;
mod dpkg;
mod gopclntab;
mod npm;
mod python;

use std::collections::BTreeMap;
use std::path::Path;

use crate::rootfs::{Dir, Entry, Kind, RootFs};

pub use binary::{parse_auditable, parse_go_buildinfo};

/// The ecosystems kiln recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ecosystem {
    Deb,
    Apk,
    Python,
    Npm,
    Go,
    Cargo,
}

impl Ecosystem {
    /// The purl type (`pkg:<type>/…`).
    pub fn purl_type(self) -> &'static str {
        match self {
            Ecosystem::Deb => "deb",
            Ecosystem::Apk => "apk",
            Ecosystem::Python => "pypi",
            Ecosystem::Npm => "npm",
            Ecosystem::Go => "golang",
            Ecosystem::Cargo => "cargo",
        }
    }
}

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// Its package URL (<https://github.com/package-url/purl-spec>).
    pub purl: String,
    /// The declared license text as the package states it (not checked as an SPDX expression).
    pub license: Option<String>,
    /// Maintainer or author, as the package states it.
    pub supplier: Option<String>,
    /// Where it was found, from the image root (`/var/lib/dpkg/status`).
    pub found_in: String,
}

/// The Linux distribution of the image, from `/etc/os-release` (purl namespace and qualifier).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Distro {
    /// `ID` (`debian`, `ubuntu`, `alpine`).
    pub id: Option<String>,
    /// `VERSION_ID` (`12`, `3.20.1`).
    pub version_id: Option<String>,
}

impl Distro {
    pub fn parse(os_release: &str) -> Distro {
        let mut d = Distro::default();
        for line in os_release.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches('"').trim_matches('\'').to_owned();
            match k.trim() {
                "ID" => d.id = Some(v),
                "VERSION_ID" => d.version_id = Some(v),
                _ => {}
            }
        }
        d
    }

    /// purl's `distro` qualifier (`debian-12`).
    fn qualifier(&self) -> Option<String> {
        Some(format!(
            "{}-{}",
            self.id.as_ref()?,
            self.version_id.as_ref()?
        ))
    }
}

/// Scans the merged tree. Unreadable or malformed files are skipped: an SBOM lists what can be
/// read, it does not fail the build over a broken `METADATA`.
pub fn scan(fs: &RootFs) -> Vec<Package> {
    let distro = fs
        .read("etc/os-release")
        .or_else(|| fs.read("usr/lib/os-release"))
        .map(|b| Distro::parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let mut found = Vec::new();
    if let Some(status) = fs.read("var/lib/dpkg/status") {
        found.extend(dpkg::parse_status(
            &String::from_utf8_lossy(&status),
            &distro,
            "/var/lib/dpkg/status",
        ));
    }
    if let Some(dir) = fs.lookup_dir("var/lib/dpkg/status.d") {
        for entry in fs.read_dir(&dir) {
            if entry.kind != Kind::File || entry.name.to_string_lossy().ends_with(".md5sums") {
                continue;
            }
            if let Ok(text) = std::fs::read(&entry.path) {
                let at = format!("/var/lib/dpkg/status.d/{}", entry.name.to_string_lossy());
                found.extend(dpkg::parse_status(
                    &String::from_utf8_lossy(&text),
                    &distro,
                    &at,
                ));
            }
        }
    }
    if let Some(db) = fs.read("lib/apk/db/installed") {
        found.extend(apk::parse_installed(
            &String::from_utf8_lossy(&db),
            &distro,
            "/lib/apk/db/installed",
        ));
    }
    fs.walk(&fs.root(), &mut |dir, entry| visit(dir, entry, &mut found));
    dedupe(found)
}

/// Looks at one entry of the walk; returns whether to descend into it.
fn visit(dir: &Dir, entry: &Entry, found: &mut Vec<Package>) -> bool {
    let name = entry.name.to_string_lossy();
    let rel = dir.rel.join(&entry.name);
    let at = format!("/{}", rel.display());
    if dir.rel.as_os_str().is_empty() && matches!(&*name, "proc" | "sys" | "dev") {
        return false;
    }
    match entry.kind {
        Kind::Dir if name.ends_with(".dist-info") => {
            let meta = entry.path.join("METADATA");
            if let Some(p) = read_small(&meta).and_then(|t| python::parse_metadata(&t, &at)) {
                found.push(p);
            }
            false
        }
        Kind::Dir if name.ends_with(".egg-info") => {
            let meta = entry.path.join("PKG-INFO");
            if let Some(p) = read_small(&meta).and_then(|t| python::parse_metadata(&t, &at)) {
                found.push(p);
            }
            false
        }
        Kind::Dir => true,
        Kind::File if name.ends_with(".egg-info") => {
            if let Some(p) = read_small(&entry.path).and_then(|t| python::parse_metadata(&t, &at)) {
                found.push(p);
            }
            false
        }
        Kind::File if name == "package.json" && npm::in_node_modules(&rel) => {
            if let Some(p) = read_small(&entry.path).and_then(|t| npm::parse_package_json(&t, &at))
            {
                found.push(p);
            }
            false
        }
        Kind::File if name == "package-lock.json" && !npm::in_node_modules(&rel) => {
            if let Some(t) = read_small(&entry.path) {
                found.extend(npm::parse_lockfile(&t, &at));
            }
            false
        }
        Kind::File if entry.mode & 0o111 != 0 && entry.size >= 64 => {
            found.extend(binary::scan_elf(&entry.path, &at));
            false
        }
        _ => false,
    }
}

/// Text files bigger than this are not package metadata (and are not read whole).
const MAX_METADATA: u64 = 16 << 20;

fn read_small(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_METADATA {
        return None;
    }
    std::fs::read(path)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// One package per purl, at the first place it was found (a package in `node_modules` and
/// in the lockfile beside it is one package), sorted by ecosystem and name.
fn dedupe(found: Vec<Package>) -> Vec<Package> {
    let mut by_purl: BTreeMap<(Ecosystem, String, String, String), Package> = BTreeMap::new();
    for p in found {
        by_purl
            .entry((
                p.ecosystem,
                p.name.clone(),
                p.version.clone(),
                p.purl.clone(),
            ))
            .or_insert(p);
    }
    by_purl.into_values().collect()
}

/// A package URL: `pkg:type/namespace/name@version?qualifiers`, each part percent-encoded as
/// the purl specification asks (`:` in a Debian epoch, `+`, `@` of an npm scope, …).
pub fn purl(
    ecosystem: Ecosystem,
    namespace: Option<&str>,
    name: &str,
    version: &str,
    qualifiers: &[(&str, Option<String>)],
) -> String {
    let mut out = format!("pkg:{}/", ecosystem.purl_type());
    if let Some(ns) = namespace {
        for seg in ns.split('/').filter(|s| !s.is_empty()) {
            out.push_str(&encode(seg));
            out.push('/');
        }
    }
    out.push_str(&encode(name));
    if !version.is_empty() {
        out.push('@');
        out.push_str(&encode(version));
    }
    let mut qs: Vec<_> = qualifiers
        .iter()
        .filter_map(|(k, v)| v.as_ref().filter(|v| !v.is_empty()).map(|v| (*k, v)))
        .collect();
    qs.sort();
    for (i, (k, v)) in qs.into_iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(k);
        out.push('=');
        out.push_str(&encode(v));
    }
    out
}

/// Percent-encodes everything but unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_encode_epochs_scopes_and_qualifiers() {
        assert_eq!(
            purl(
                Ecosystem::Deb,
                Some("debian"),
                "libc6",
                "1:2.36-9+deb12u4",
                &[
                    ("arch", Some("amd64".into())),
                    ("distro", Some("debian-12".into()))
                ]
            ),
            "pkg:deb/debian/libc6@1%3A2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl(Ecosystem::Npm, Some("@babel"), "core", "7.0.0", &[]),
            "pkg:npm/%40babel/core@7.0.0"
        );
        assert_eq!(
            purl(
                Ecosystem::Go,
                Some("golang.org/x"),
                "text",
                "v0.3.0",
                &[("x", None)]
            ),
            "pkg:golang/golang.org/x/text@v0.3.0"
        );
    }

    #[test]
    fn os_release_gives_the_distro() {
        let d =
            Distro::parse("PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\nVERSION_ID=\"12\"\n");
        assert_eq!(d.qualifier().as_deref(), Some("debian-12"));
    }

    #[test]
    fn a_tree_with_every_kind_of_metadata_is_scanned_once_per_package() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let write = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n");
        write(
            "var/lib/dpkg/status",
            "Package: hello\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.10-3\n\n\
             Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n",
        );
        write(
            "var/lib/dpkg/status.d/tzdata",
            "Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n",
        );
        write(
            "usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n\nbody\n",
        );
        write(
            "app/node_modules/left-pad/package.json",
            r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#,
        );
        write(
            "app/package-lock.json",
            r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/left-pad":{"version":"1.3.0"},"node_modules/@s/x":{"version":"2.0.0"}}}"#,
        );
        let fs = RootFs::new(vec![root.to_path_buf()]);
        let found: Vec<_> = scan(&fs)
            .into_iter()
            .map(|p| format!("{} {}", p.purl, p.found_in))
            .collect();
        assert_eq!(
            found,
            [
                "pkg:deb/debian/hello@2.10-3?arch=amd64&distro=debian-12 /var/lib/dpkg/status",
                "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12 /var/lib/dpkg/status.d/tzdata",
                "pkg:pypi/requests@2.31.0 /usr/lib/python3/dist-packages/requests-2.31.0.dist-info",
                "pkg:npm/%40s/x@2.0.0 /app/package-lock.json",
                "pkg:npm/left-pad@1.3.0 /app/node_modules/left-pad/package.json",
            ]
        );
    }
}
