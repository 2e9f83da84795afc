//! The arm64 busybox base: Debian's `busybox-static` for arm64 (the binary taken out of its
//! .deb by `scripts/setup.sh`, no arm64 package installed), made into an image like the host's
//! busybox, and both as one multi-platform image index pushed to a [`TestRegistry`] — the base
//! of the multi-platform tests. Running its binaries needs qemu-user through binfmt_misc
//! (`kiln system binfmt`); building the image does too (`busybox --list-full` runs once).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kiln_image::{Index, Platform, media_type};

use crate::TestRegistry;
use crate::busybox::{add_to_layout, busybox_image, write_json_blob};
use crate::tools::skopeo_copy_oci_layout_to;

/// Where `scripts/setup.sh` puts the arm64 busybox binary.
pub const ARM64_BUSYBOX: &str = "/var/cache/kiln/arm64/busybox";

/// The arm64 static busybox, or an error saying how to get it.
pub fn arm64_busybox() -> Result<PathBuf> {
    let path = PathBuf::from(ARM64_BUSYBOX);
    if !path.is_file() {
        bail!(
            "{ARM64_BUSYBOX} is missing: scripts/setup.sh extracts it from Debian's \
             busybox-static:arm64 package"
        );
    }
    Ok(path)
}

/// Pushes a two-platform busybox index (the host's image and arm64's) to `registry` as
/// `repo_tag` with `skopeo copy --all`; returns the full reference.
pub fn push_busybox_index(registry: &TestRegistry, repo_tag: &str) -> Result<String> {
    let arm64 = arm64_busybox()?;
    let layout = tempfile::tempdir().context("creating a temp dir for the busybox index")?;
    busybox_index_layout(layout.path(), &arm64, "multi")?;
    let reference = format!("{}/{repo_tag}", registry.addr());
    skopeo_copy_oci_layout_to(layout.path(), "multi", &reference).with_context(|| {
        format!(
            "pushing the busybox index to {reference}; registry log:\n{}",
            registry.log()
        )
    })?;
    Ok(reference)
}

/// Writes an OCI layout in `dir` whose `tag` is an index of the host's busybox image and the
/// image of `arm64` (an arm64 static busybox).
pub fn busybox_index_layout(dir: &Path, arm64: &Path, tag: &str) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let host = busybox_image(&blobs, None, Platform::host())?;
    let arm = busybox_image(&blobs, Some(arm64), Platform::new("linux", "arm64"))?;
    let index = Index {
        schema_version: 2,
        media_type: Some(media_type::OCI_INDEX.to_owned()),
        manifests: vec![host, arm],
        annotations: Default::default(),
    };
    let mut desc = write_json_blob(&blobs, media_type::OCI_INDEX, &index)?;
    desc.annotations
        .insert("org.opencontainers.image.ref.name".into(), tag.into());
    add_to_layout(dir, tag, desc)
}
