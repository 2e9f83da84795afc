//! dpkg's database: `/var/lib/dpkg/status` (Debian, Ubuntu) and the one-file-per-package
//! `/var/lib/dpkg/status.d/` of distroless images. Paragraphs of `Field: value` lines
//! (deb822); continuation lines start with a space.

use super::{Distro, Ecosystem, Package, purl};

/// The installed packages of a status file. A paragraph with a `Status` is kept only when its
/// last word is `installed` (removed packages keep `config-files` paragraphs); `status.d`
/// files have no `Status` and are all installed.
pub(super) fn parse_status(text: &str, distro: &Distro, found_in: &str) -> Vec<Package> {
    paragraphs(text)
        .filter_map(|fields| {
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f.eq_ignore_ascii_case(k))
                    .map(|(_, v)| v.clone())
            };
            if let Some(status) = get("Status")
                && status.split_whitespace().last() != Some("installed")
            {
                return None;
            }
            let name = get("Package")?;
            let version = get("Version")?;
            let arch = get("Architecture");
            let namespace = distro.id.clone().unwrap_or_else(|| "debian".to_owned());
            Some(Package {
                ecosystem: Ecosystem::Deb,
                purl: purl(
                    Ecosystem::Deb,
                    Some(&namespace),
                    &name,
                    &version,
                    &[("arch", arch), ("distro", distro.qualifier())],
                ),
                name,
                version,
                license: None,
                supplier: get("Maintainer"),
                found_in: found_in.to_owned(),
            })
        })
        .collect()
}

/// deb822 paragraphs as (field, first-line value) lists.
fn paragraphs(text: &str) -> impl Iterator<Item = Vec<(String, String)>> + '_ {
    text.split("\n\n").map(|para| {
        para.lines()
            .filter(|l| !l.starts_with([' ', '\t']))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_paragraphs_with_continuations_and_epochs() {
        let text = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\
                    Architecture: amd64\nMaintainer: GNU Libc Maintainers <x@y>\n\
                    Description: C library\n multi-line\n more: not a field\n\n\
                    Package: old\nStatus: deinstall ok config-files\nVersion: 1.0\n\n\
                    Package: perl-base\nStatus: hold ok installed\nVersion: 1:5.36.0-7\n";
        let d = Distro {
            id: Some("ubuntu".into()),
            version_id: Some("24.04".into()),
        };
        let got = parse_status(text, &d, "/var/lib/dpkg/status");
        let purls: Vec<_> = got.iter().map(|p| p.purl.as_str()).collect();
        assert_eq!(
            purls,
            [
                "pkg:deb/ubuntu/libc6@2.36-9?arch=amd64&distro=ubuntu-24.04",
                "pkg:deb/ubuntu/perl-base@1%3A5.36.0-7?distro=ubuntu-24.04",
            ]
        );
        assert_eq!(
            got[0].supplier.as_deref(),
            Some("GNU Libc Maintainers <x@y>")
        );
        assert_eq!(got[1].version, "1:5.36.0-7");
    }
}
