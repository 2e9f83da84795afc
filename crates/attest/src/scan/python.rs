//! Python distributions: the core metadata of `*.dist-info/METADATA` (wheels, pip) and
//! `*.egg-info/PKG-INFO` or a bare `*.egg-info` file (setuptools) — email-style headers up to
//! the first blank line.

use super::{Ecosystem, Package, purl};

pub(super) fn parse_metadata(text: &str, found_in: &str) -> Option<Package> {
    let header = text.split("\n\n").next().unwrap_or("");
    let get = |key: &str| {
        header.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(key)
                .then(|| v.trim().to_owned())
                .filter(|v| !v.is_empty() && v != "UNKNOWN")
        })
    };
    let name = get("Name")?;
    let version = get("Version")?;
    // PEP 503 normalisation, as the pypi purl type asks: lower case, runs of -_. become -.
    let mut normalized = String::new();
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !normalized.ends_with('-') {
                normalized.push('-');
            }
        } else {
            normalized.extend(c.to_lowercase());
        }
    }
    Some(Package {
        ecosystem: Ecosystem::Python,
        purl: purl(Ecosystem::Python, None, &normalized, &version, &[]),
        license: get("License-Expression").or_else(|| get("License")),
        supplier: get("Author"),
        name,
        version,
        found_in: found_in.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_up_to_the_body_and_normalised_purl_names() {
        let text = "Metadata-Version: 2.1\nName: Foo_Bar.baz\nVersion: 1.0.post1\n\
                    License: UNKNOWN\nLicense-Expression: MIT\n\nName: not-this\n";
        let p = parse_metadata(text, "/x").unwrap();
        assert_eq!(p.name, "Foo_Bar.baz");
        assert_eq!(p.purl, "pkg:pypi/foo-bar-baz@1.0.post1");
        assert_eq!(p.license.as_deref(), Some("MIT"));
        assert!(parse_metadata("Name: x\n", "/x").is_none(), "no version");
    }
}
