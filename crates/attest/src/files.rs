//! Attestations beside a filesystem output (`--output type=local|tar`), as BuildKit's local
//! and tar exporters write them: one JSON file per statement at the output's root —
//! `sbom.spdx.json`, `sbom-<part>.spdx.json` for each extra SBOM (`context`,
//! `stage-<name>`), `provenance.json` — each an in-toto statement whose subjects are the
//! output's regular files (path from the root, sha256), pretty-printed with two-space
//! indentation.
//!
//! The key decision: the statements are the ones already attached to the image in the store
//! (so the files say exactly what the index says), with only the subject replaced: a
//! directory of files has no manifest digest to name. The subjects are hashed from the
//! image's merged snapshot directories ([`RootFs`]), which hold what the export writes, so a
//! `local` output into a directory that already has other files names only the image's.

use std::path::Path;

use kiln_image::{Digest, Sha256Hasher};
use kiln_store::Store;

use crate::error::{AttestError, Result};
use crate::options::Attestations;
use crate::rootfs::{Kind, RootFs};
use crate::statement::{SPDX_PREDICATE, Statement, Subject};

/// One file to write at the output's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The regular files of `fs` as statement subjects, in sorted path order.
pub fn subjects(fs: &RootFs) -> Result<Vec<Subject>> {
    let mut out = Vec::new();
    let mut failed = None;
    fs.walk(&fs.root(), &mut |dir, entry| {
        if failed.is_some() {
            return false;
        }
        if entry.kind == Kind::File {
            let rel = dir.rel.join(&entry.name);
            match hash_file(&entry.path) {
                Ok(digest) => out.push(Subject {
                    name: rel.to_string_lossy().into_owned(),
                    digest: [("sha256".to_owned(), digest.hex().to_owned())].into(),
                }),
                Err(source) => {
                    failed = Some(AttestError::Io {
                        path: entry.path.clone(),
                        source,
                    })
                }
            }
        }
        true
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256Hasher::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher.finish())
}

/// The files for the statements `which` selects among those attached to `image_manifest` in
/// the index `index`, each with `subjects` as its subject.
pub fn files(
    store: &Store,
    index: &Digest,
    image_manifest: &Digest,
    which: Attestations,
    subjects: &[Subject],
) -> Result<Vec<AttestationFile>> {
    let mut out = Vec::new();
    if which.sbom {
        for statement in crate::attach::find(store, index, image_manifest, SPDX_PREDICATE)? {
            let name = match crate::make::sbom_part(&statement) {
                Some(part) => format!("sbom-{part}.spdx.json"),
                None => "sbom.spdx.json".to_owned(),
            };
            out.push(file(name, statement, subjects));
        }
    }
    if let Some(provenance) = which.provenance {
        let predicate = provenance.predicate_type();
        for statement in crate::attach::find(store, index, image_manifest, predicate)? {
            out.push(file("provenance.json".to_owned(), statement, subjects));
        }
    }
    Ok(out)
}

fn file(name: String, mut statement: Statement, subjects: &[Subject]) -> AttestationFile {
    statement.subject = subjects.to_vec();
    let mut bytes = serde_json::to_vec_pretty(&statement).expect("a statement serialises");
    bytes.push(b'\n');
    AttestationFile { name, bytes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attach::{ImageEntry, attach};
    use crate::provenance::Provenance;
    use crate::statement::SLSA_V02_PREDICATE;
    use kiln_image::{Platform, media_type};

    #[test]
    fn each_statement_becomes_a_file_whose_subjects_are_the_output_files() {
        let t = tempfile::tempdir().unwrap();
        let store = Store::open(t.path().join("store")).unwrap();
        let layer = t.path().join("layer");
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(layer.join("etc/hostname"), b"kiln\n").unwrap();
        std::os::unix::fs::symlink("hostname", layer.join("etc/link")).unwrap();
        let fs = RootFs::new(vec![layer]);
        let subjects = subjects(&fs).unwrap();
        assert_eq!(subjects.len(), 1, "the symlink is no subject: {subjects:?}");
        assert_eq!(subjects[0].name, "etc/hostname");
        assert_eq!(subjects[0].digest["sha256"], Digest::of(b"kiln\n").hex());

        let manifest = store.write_blob(br#"{"schemaVersion":2}"#).unwrap();
        let image = ImageEntry {
            manifest: manifest.clone(),
            media_type: media_type::OCI_MANIFEST.to_owned(),
            platform: Platform::new("linux", "amd64"),
        };
        let subject = vec![Subject::image(None, &image.platform, &manifest)];
        let main = Statement::new(
            SPDX_PREDICATE,
            subject.clone(),
            serde_json::json!({"namespace": format!("urn:kiln:spdx:{}", manifest.hex())}),
        );
        let context = Statement::new(
            SPDX_PREDICATE,
            subject.clone(),
            serde_json::json!({"namespace": format!("urn:kiln:spdx:{}:context", manifest.hex())}),
        );
        let prov = Statement::new(SLSA_V02_PREDICATE, subject, serde_json::json!({"p": 1}));
        let index = attach(&store, &image, &[main, context, prov]).unwrap();

        let all = Attestations {
            sbom: true,
            provenance: Some(Provenance::MIN),
        };
        let written = files(&store, &index, &manifest, all, &subjects).unwrap();
        let names: Vec<_> = written.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sbom.spdx.json",
                "sbom-context.spdx.json",
                "provenance.json"
            ]
        );
        let back: Statement = serde_json::from_slice(&written[2].bytes).unwrap();
        assert_eq!(back.subject, subjects);
        assert_eq!(back.predicate, serde_json::json!({"p": 1}));
        assert!(written[0].bytes.starts_with(b"{\n  \""));

        let sbom_only = Attestations {
            sbom: true,
            provenance: None,
        };
        let written = files(&store, &index, &manifest, sbom_only, &subjects).unwrap();
        assert_eq!(written.len(), 2);
    }
}
