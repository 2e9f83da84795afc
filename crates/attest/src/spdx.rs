//! SPDX 2.3 JSON documents (<https://spdx.github.io/spdx-spec/v2.3/>) from scanned packages.
//!
//! The document describes one root package — the image — which CONTAINS every package found;
//! each package carries its purl as a `PACKAGE-MANAGER` external reference, which is what
//! scanners (grype, trivy, docker scout) match vulnerabilities by. Licenses are passed through
//! only as comments: what packages declare is free text, and an invalid SPDX license
//! expression would make the document invalid.

use serde_json::{Value, json};

use crate::scan::Package;

/// What the document is about and when it was made.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    /// The image's name (`docker.io/library/app:latest`), or its digest.
    pub name: String,
    /// The image purl (the statement's subject name).
    pub purl: String,
    /// A unique URI for this document (SPDX requires one).
    pub namespace: String,
    /// RFC 3339, UTC, whole seconds.
    pub created: String,
    /// `Tool: kiln-<version>`.
    pub creator: String,
}

pub fn document(info: &DocumentInfo, packages: &[Package]) -> Value {
    let mut spdx_packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": info.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [purl_ref(&info.purl)],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for (i, p) in packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{}", p.ecosystem.purl_type(), i + 1);
        let mut pkg = json!({
            "SPDXID": id,
            "name": p.name,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("found in {}", p.found_in),
            "externalRefs": [purl_ref(&p.purl)],
        });
        if p.version.is_empty() {
            // Not known (a Go module of a binary built without modules): SPDX makes the
            // field optional, and an empty version would claim one.
            pkg.as_object_mut()
                .expect("a package is an object")
                .remove("versionInfo");
        }
        if let Some(license) = &p.license {
            pkg["licenseComments"] = json!(format!("declared: {license}"));
        }
        if let Some(supplier) = &p.supplier {
            // SPDX's supplier is "Person: …" or "Organization: …"; which one is not known.
            pkg["supplier"] = json!(format!("Organization: {}", supplier.replace('\n', " ")));
        }
        spdx_packages.push(pkg);
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": info.name,
        "documentNamespace": info.namespace,
        "creationInfo": {
            "created": info.created,
            "creators": [info.creator],
        },
        "packages": spdx_packages,
        "relationships": relationships,
    })
}

fn purl_ref(purl: &str) -> Value {
    json!({
        "referenceCategory": "PACKAGE-MANAGER",
        "referenceType": "purl",
        "referenceLocator": purl,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{Ecosystem, purl};

    #[test]
    fn packages_are_contained_by_the_image_and_carry_purls() {
        let info = DocumentInfo {
            name: "app".into(),
            purl: "pkg:docker/app@latest?platform=linux%2Famd64".into(),
            namespace: "https://example.invalid/x".into(),
            created: "2024-01-01T00:00:00Z".into(),
            creator: "Tool: kiln-0".into(),
        };
        let p = Package {
            ecosystem: Ecosystem::Python,
            name: "requests".into(),
            version: "2.31.0".into(),
            purl: purl(Ecosystem::Python, None, "requests", "2.31.0", &[]),
            license: Some("Apache 2.0".into()),
            supplier: None,
            found_in: "/x".into(),
        };
        let doc = document(&info, &[p]);
        assert_eq!(doc["packages"].as_array().unwrap().len(), 2);
        assert_eq!(doc["packages"][1]["SPDXID"], "SPDXRef-Package-pypi-1");
        assert_eq!(
            doc["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:pypi/requests@2.31.0"
        );
        assert_eq!(
            doc["relationships"][1]["relatedSpdxElement"],
            "SPDXRef-Package-pypi-1"
        );
    }
}
