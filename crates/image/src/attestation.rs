//! BuildKit's attestation manifests in an image index, as far as moving an image needs to
//! know them: an entry annotated `vnd.docker.reference.type: attestation-manifest` whose
//! `vnd.docker.reference.digest` names the image manifest it describes.
//!
//! The key decision: when one image is taken out of an index (a pull or a load picks the
//! platform it needs), its attestation manifests go with it, so `kiln inspect --sbom` works
//! on it and a push carries them. The store keeps the index itself when it lists nothing
//! else (its digest, and so a re-push, stays the same), and otherwise a new index of that
//! image and its attestations: the other platforms' manifests are not in the store, and an
//! index naming absent manifests could be neither pushed nor saved. The statements name the
//! image manifest by digest, which is unchanged, so they stay true.

use crate::manifest::media_type;
use crate::{Descriptor, Digest, Index};

pub const REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST_ANNOTATION: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// Whether `desc` is an attestation manifest describing the image manifest `image`.
pub fn describes(desc: &Descriptor, image: &Digest) -> bool {
    desc.annotations
        .get(REFERENCE_TYPE_ANNOTATION)
        .map(String::as_str)
        == Some(ATTESTATION_MANIFEST)
        && desc.annotations.get(REFERENCE_DIGEST_ANNOTATION) == Some(&image.to_string())
}

/// The attestation manifests of `index` that describe `image`.
pub fn of<'a>(index: &'a Index, image: &Digest) -> Vec<&'a Descriptor> {
    index
        .manifests
        .iter()
        .filter(|d| describes(d, image))
        .collect()
}

/// What to keep of `index` for its image `image` (an entry of it).
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    /// No attestation describes the image: keep the bare image manifest.
    Manifest,
    /// The index lists only the image and its attestations: keep it as it is.
    Whole,
    /// The index lists more (other platforms): keep this index of the image and its
    /// attestations (the original's annotations kept).
    Reduced(Index),
}

/// Decides what the store keeps of `index` when it takes the image `image` out of it.
pub fn keep(index: &Index, image: &Descriptor) -> Kept {
    let attestations = of(index, &image.digest);
    if attestations.is_empty() {
        return Kept::Manifest;
    }
    let only_these = index
        .manifests
        .iter()
        .all(|d| d.digest == image.digest || describes(d, &image.digest));
    if only_these {
        return Kept::Whole;
    }
    let mut manifests = vec![image.clone()];
    manifests.extend(attestations.into_iter().cloned());
    Kept::Reduced(Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests,
        annotations: index.annotations.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Platform;

    fn image(platform: &str, data: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(data), 10);
        d.platform = Some(platform.parse().unwrap());
        d
    }

    fn attestation(of: &Descriptor, data: &[u8]) -> Descriptor {
        let mut d = Descriptor::new(media_type::OCI_MANIFEST, Digest::of(data), 5);
        d.platform = Some(Platform::new("unknown", "unknown"));
        d.annotations.insert(
            REFERENCE_TYPE_ANNOTATION.into(),
            ATTESTATION_MANIFEST.into(),
        );
        d.annotations
            .insert(REFERENCE_DIGEST_ANNOTATION.into(), of.digest.to_string());
        d
    }

    fn index(manifests: Vec<Descriptor>) -> Index {
        Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.to_owned()),
            manifests,
            annotations: [(
                "org.opencontainers.image.created".to_owned(),
                "x".to_owned(),
            )]
            .into(),
        }
    }

    #[test]
    fn an_image_keeps_its_own_attestations_and_nothing_else() {
        let amd = image("linux/amd64", b"amd");
        let arm = image("linux/arm64", b"arm");
        let amd_att = attestation(&amd, b"amd-att");
        let arm_att = attestation(&arm, b"arm-att");

        let plain = index(vec![amd.clone(), arm.clone()]);
        assert_eq!(keep(&plain, &amd), Kept::Manifest);

        let single = index(vec![amd.clone(), amd_att.clone()]);
        assert_eq!(keep(&single, &amd), Kept::Whole);
        assert_eq!(of(&single, &amd.digest), [&amd_att]);
        assert!(of(&single, &arm.digest).is_empty());

        let multi = index(vec![amd.clone(), arm.clone(), amd_att.clone(), arm_att]);
        let Kept::Reduced(reduced) = keep(&multi, &amd) else {
            panic!("expected a reduced index");
        };
        assert_eq!(reduced.manifests, [amd.clone(), amd_att]);
        assert_eq!(reduced.annotations, multi.annotations);
        assert_eq!(reduced.select(&"linux/amd64".parse().unwrap()), Some(&amd));
    }
}
