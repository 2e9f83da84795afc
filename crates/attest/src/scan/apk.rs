//! Alpine's installed database, `/lib/apk/db/installed`: one block per package of
//! single-letter `X:value` lines (`P` name, `V` version, `A` arch, `L` license, `m`
//! maintainer), blocks separated by a blank line.

use super::{Distro, Ecosystem, Package, purl};

pub(super) fn parse_installed(text: &str, distro: &Distro, found_in: &str) -> Vec<Package> {
    text.split("\n\n")
        .filter_map(|block| {
            let get = |key: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(str::to_owned)
            };
            let name = get("P:")?;
            let version = get("V:")?;
            let namespace = distro.id.clone().unwrap_or_else(|| "alpine".to_owned());
            Some(Package {
                ecosystem: Ecosystem::Apk,
                purl: purl(
                    Ecosystem::Apk,
                    Some(&namespace),
                    &name,
                    &version,
                    &[("arch", get("A:")), ("distro", distro.qualifier())],
                ),
                name,
                version,
                license: get("L:"),
                supplier: get("m:"),
                found_in: found_in.to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_packages() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.5-r0\nA:x86_64\nL:MIT\nm:Someone <s@x>\n\n\
                    C:Q1def=\nP:busybox\nV:1.36.1-r29\nA:x86_64\nL:GPL-2.0-only\n\n";
        let d = Distro::parse("ID=alpine\nVERSION_ID=3.20.1\n");
        let got = parse_installed(text, &d, "/lib/apk/db/installed");
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].purl,
            "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64&distro=alpine-3.20.1"
        );
        assert_eq!(got[1].license.as_deref(), Some("GPL-2.0-only"));
    }
}
