//! Making a build's attestations and attaching them: what the build command (or a daemon's
//! build handler) calls once the image is written.

use std::path::PathBuf;

use kiln_image::{Digest, Reference};
use kiln_store::Store;

use crate::attach::{ImageEntry, attach};
use crate::error::Result;
use crate::options::Attestations;
use crate::provenance::ProvenanceInput;
use crate::rootfs::RootFs;
use crate::statement::{SPDX_PREDICATE, Statement, Subject, image_purl};

/// Everything the attestations of one image are made from.
#[derive(Debug, Clone)]
pub struct Request {
    pub which: Attestations,
    pub image: ImageEntry,
    /// The image's first name, for the subject's purl.
    pub name: Option<Reference>,
    /// The final image's snapshot directories, top first.
    pub layers: Vec<PathBuf>,
    /// More trees to describe in SBOMs of their own, by name, each as its layers top first:
    /// `context` for `BUILDKIT_SBOM_SCAN_CONTEXT` (one plain directory), `stage-<name>` for
    /// each stage `BUILDKIT_SBOM_SCAN_STAGE` selects.
    pub extra_scans: Vec<(String, Vec<PathBuf>)>,
    /// The provenance's content; its mode is taken from `which`.
    pub provenance: ProvenanceInput,
    /// When the SBOM was made (RFC 3339; the epoch's time in a reproducible build).
    pub created: String,
    /// `Tool: kiln-<version>`.
    pub tool: String,
}

/// What `attest` made.
#[derive(Debug, Clone)]
pub struct Attested {
    /// The index now standing for the image.
    pub index: Digest,
    /// Packages listed in the image's SBOM (0 without one).
    pub packages: usize,
}

/// Scans, writes the statements and the index; the caller points the image's names at
/// `Attested::index`.
pub fn attest(store: &Store, req: &Request) -> Result<Attested> {
    let subject = vec![Subject::image(
        req.name.as_ref(),
        &req.image.platform,
        &req.image.manifest,
    )];
    let purl = image_purl(req.name.as_ref(), &req.image.platform);
    let display = req
        .name
        .as_ref()
        .map_or_else(|| req.image.manifest.to_string(), ToString::to_string);
    let mut statements = Vec::new();
    let mut packages = 0;
    if req.which.sbom {
        let found = crate::scan::scan(&RootFs::new(req.layers.clone()));
        packages = found.len();
        statements.push(sbom_statement(req, &subject, &display, &purl, "", &found));
        for (name, layers) in &req.extra_scans {
            let found = crate::scan::scan(&RootFs::new(layers.clone()));
            let label = format!("{display} ({name})");
            statements.push(sbom_statement(req, &subject, &label, &purl, name, &found));
        }
    }
    if let Some(provenance) = req.which.provenance {
        let mut input = req.provenance.clone();
        input.mode = provenance.mode;
        statements.push(Statement::new(
            provenance.predicate_type(),
            subject.clone(),
            crate::provenance::predicate_of(provenance.version, &input),
        ));
    }
    let index = attach(store, &req.image, &statements)?;
    Ok(Attested { index, packages })
}

/// The SPDX namespace of an image's SBOM: `urn:kiln:spdx:<manifest hex>`, with `:<part>` for
/// an extra SBOM (`context`, `stage-<name>`). Unique per image and part, and the same for the
/// same image: reproducible.
fn sbom_namespace(image_manifest: &Digest, part: &str) -> String {
    if part.is_empty() {
        format!("{NAMESPACE_PREFIX}{}", image_manifest.hex())
    } else {
        format!("{NAMESPACE_PREFIX}{}:{part}", image_manifest.hex())
    }
}

const NAMESPACE_PREFIX: &str = "urn:kiln:spdx:";

/// Which extra SBOM a statement kiln made is (`context`, `stage-<name>`), read back from its
/// namespace; `None` for the image's own SBOM (or one kiln did not make).
pub fn sbom_part(statement: &Statement) -> Option<&str> {
    let rest = statement.predicate["namespace"]
        .as_str()?
        .strip_prefix(NAMESPACE_PREFIX)?;
    rest.split_once(':').map(|(_, part)| part)
}

fn sbom_statement(
    req: &Request,
    subject: &[Subject],
    name: &str,
    purl: &str,
    part: &str,
    found: &[crate::scan::Package],
) -> Statement {
    let info = crate::spdx::DocumentInfo {
        name: name.to_owned(),
        purl: purl.to_owned(),
        namespace: sbom_namespace(&req.image.manifest, part),
        created: req.created.clone(),
        creator: req.tool.clone(),
    };
    Statement::new(
        SPDX_PREDICATE,
        subject.to_vec(),
        crate::spdx::document(&info, found),
    )
}
