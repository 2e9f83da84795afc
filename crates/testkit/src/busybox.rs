//! The busybox base image: the rootfs tar from `scripts/busybox-rootfs.sh`, the same as a
//! one-layer OCI image layout, and that image pushed to a [`TestRegistry`].

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use flate2::Compression;
use flate2::write::GzEncoder;
use kiln_image::{
    ContainerConfig, Descriptor, DiffId, Digest, History, ImageConfig, Index, LayerRef, Manifest,
    Platform, RootFs, Sha256Hasher, media_type, to_canonical_json,
};

use crate::TestRegistry;
use crate::tools::{run_tool, skopeo_copy_oci_layout_to};

/// The annotation naming an image in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// A fixed timestamp so the layout (and so every digest derived from it) is reproducible.
const EPOCH: &str = "1970-01-01T00:00:00Z";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The tag `push_busybox` uses inside its cached layout.
const CACHED_TAG: &str = "busybox";

/// Where `scripts/busybox-rootfs.sh` is in the source tree.
pub fn rootfs_script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/busybox-rootfs.sh")
}

/// Writes the busybox rootfs tar to `dest` by running `scripts/busybox-rootfs.sh`.
pub fn busybox_rootfs_tar(dest: &Path) -> Result<()> {
    rootfs_tar_of(dest, None)
}

/// [`busybox_rootfs_tar`] of another static busybox binary (`busybox`, e.g. arm64's), or of
/// the script's default with `None`.
pub(crate) fn rootfs_tar_of(dest: &Path, busybox: Option<&Path>) -> Result<()> {
    let script = rootfs_script_path();
    if !script.is_file() {
        bail!("rootfs script {} not found", script.display());
    }
    let mut command = Command::new("bash");
    command.arg(&script).arg(dest);
    if let Some(busybox) = busybox {
        command.env("BUSYBOX", busybox);
    }
    run_tool(&mut command)
        .with_context(|| format!("building the busybox rootfs into {}", dest.display()))?;
    Ok(())
}

/// Writes (or adds to) an OCI image layout in `dir` holding the busybox image under `tag`:
/// one gzip layer made from [`busybox_rootfs_tar`], a config for the host platform running
/// `sh`, and an OCI manifest. An existing entry with the same tag in `index.json` is replaced.
pub fn busybox_oci_layout(dir: &Path, tag: &str) -> Result<()> {
    if tag.is_empty() {
        bail!("empty tag for the busybox layout in {}", dir.display());
    }
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let mut manifest_desc = busybox_image(&blobs, None, Platform::host())?;
    manifest_desc
        .annotations
        .insert(REF_NAME.into(), tag.into());
    add_to_layout(dir, tag, manifest_desc)
}

/// Names `desc` `tag` in the OCI layout `dir`'s `index.json` (replacing an entry of that tag).
pub(crate) fn add_to_layout(dir: &Path, tag: &str, desc: Descriptor) -> Result<()> {
    let oci_layout = dir.join("oci-layout");
    fs::write(&oci_layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .with_context(|| format!("writing {}", oci_layout.display()))?;
    let index_path = dir.join("index.json");
    let mut index = read_index(&index_path)?;
    index
        .manifests
        .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
    index.manifests.push(desc);
    write_atomically(&index_path, &to_canonical_json(&index))
}

/// Writes the busybox image of `busybox` (the default binary with `None`) for `platform` into
/// `blobs`; returns its manifest's descriptor, with the platform.
pub(crate) fn busybox_image(
    blobs: &Path,
    busybox: Option<&Path>,
    platform: Platform,
) -> Result<Descriptor> {
    let scratch = tempfile::tempdir().context("creating a temp dir for the rootfs tar")?;
    let rootfs_tar = scratch.path().join("rootfs.tar");
    rootfs_tar_of(&rootfs_tar, busybox)?;
    let layer = write_gzip_layer(&rootfs_tar, blobs)?;
    let config = ImageConfig {
        created: Some(EPOCH.into()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: ContainerConfig {
            env: vec![DEFAULT_PATH.into()],
            cmd: Some(vec!["sh".into()]),
            ..ContainerConfig::default()
        },
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: vec![layer.diff_id.clone()],
        },
        history: vec![History {
            created: Some(EPOCH.into()),
            created_by: Some("kiln-testkit: scripts/busybox-rootfs.sh".into()),
            ..History::default()
        }],
        ..ImageConfig::default()
    };
    let config_desc = write_json_blob(blobs, media_type::OCI_CONFIG, &config)?;
    let manifest = Manifest::oci(config_desc, vec![layer.descriptor()]);
    let mut manifest_desc = write_json_blob(blobs, media_type::OCI_MANIFEST, &manifest)?;
    manifest_desc.platform = Some(platform);
    Ok(manifest_desc)
}

/// Pushes the busybox image to `registry` as `repo_tag` (e.g. `busybox:latest`) with skopeo and
/// returns the full reference (`127.0.0.1:PORT/busybox:latest`). The layout is built once per
/// process and reused, so the image has the same digest in every registry.
pub fn push_busybox(registry: &TestRegistry, repo_tag: &str) -> Result<String> {
    if repo_tag.is_empty() || repo_tag.contains("://") {
        bail!("push_busybox wants a repository[:tag] like busybox:latest, got {repo_tag:?}");
    }
    let layout = cached_busybox_layout()?;
    let reference = format!("{}/{repo_tag}", registry.addr());
    skopeo_copy_oci_layout_to(layout, CACHED_TAG, &reference).with_context(|| {
        format!(
            "pushing busybox to {reference}; registry log:\n{}",
            registry.log()
        )
    })?;
    Ok(reference)
}

/// The busybox layout `push_busybox` copies from, built once per process. It lives in a
/// directory named after the hash of its inputs (the script, the busybox binary, the host
/// architecture) under `$TMPDIR`, so later test runs reuse it and nothing piles up: a
/// per-process temp dir could never be deleted, since statics are not dropped.
fn cached_busybox_layout() -> Result<&'static Path> {
    static LAYOUT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match LAYOUT.get_or_init(|| shared_busybox_layout().map_err(|e| format!("{e:#}"))) {
        Ok(dir) => Ok(dir),
        Err(message) => Err(anyhow!("building the busybox OCI layout failed: {message}")),
    }
}

fn shared_busybox_layout() -> Result<PathBuf> {
    let cache_root = std::env::temp_dir().join(format!(
        "kiln-testkit-{}",
        rustix::process::geteuid().as_raw()
    ));
    fs::create_dir_all(&cache_root)
        .with_context(|| format!("creating {}", cache_root.display()))?;
    let key = layout_inputs_digest()?;
    let layout = cache_root.join(format!("busybox-layout-{}", key.short()));
    // index.json is written last, and the directory is renamed into place only when complete.
    if layout.join("index.json").is_file() {
        return Ok(layout);
    }
    let staging = tempfile::Builder::new()
        .prefix(".busybox-layout-")
        .tempdir_in(&cache_root)
        .with_context(|| format!("creating a temp dir in {}", cache_root.display()))?;
    busybox_oci_layout(staging.path(), CACHED_TAG)?;
    match fs::rename(staging.path(), &layout) {
        Ok(()) => {
            // Renamed away: nothing is left for the TempDir to delete.
            let _ = staging.keep();
            Ok(layout)
        }
        // Another test process finished the same layout first; ours is dropped.
        Err(_) if layout.join("index.json").is_file() => Ok(layout),
        Err(e) => {
            Err(e).with_context(|| format!("moving the busybox layout to {}", layout.display()))
        }
    }
}

/// A digest of everything the busybox layout is made from.
fn layout_inputs_digest() -> Result<Digest> {
    let script_path = rootfs_script_path();
    // The same override the script honours.
    let busybox_path =
        std::env::var_os("BUSYBOX").map_or_else(|| PathBuf::from("/bin/busybox"), PathBuf::from);
    let mut hasher = Sha256Hasher::new();
    for path in [&script_path, &busybox_path] {
        let mut file = File::open(path).with_context(|| {
            format!(
                "opening {} (the busybox image needs busybox-static and the kiln source tree)",
                path.display()
            )
        })?;
        io::copy(&mut file, &mut hasher).with_context(|| format!("reading {}", path.display()))?;
    }
    hasher.update(Platform::host().to_string().as_bytes());
    Ok(hasher.finish())
}

/// Passes bytes through to `inner` while hashing them.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Gzips `tar_path` into `blobs`, hashing the tar (diff id) and the gzip (blob digest) in one
/// streaming pass.
fn write_gzip_layer(tar_path: &Path, blobs: &Path) -> Result<LayerRef> {
    let staged = tempfile::NamedTempFile::new_in(blobs)
        .with_context(|| format!("creating a temp file in {}", blobs.display()))?;
    let (diff_id, digest, size) = {
        let compressed = HashingWriter {
            inner: BufWriter::new(staged.as_file()),
            hasher: Sha256Hasher::new(),
        };
        let mut uncompressed = HashingWriter {
            inner: GzEncoder::new(compressed, Compression::default()),
            hasher: Sha256Hasher::new(),
        };
        let tar =
            File::open(tar_path).with_context(|| format!("opening {}", tar_path.display()))?;
        io::copy(&mut BufReader::new(tar), &mut uncompressed)
            .with_context(|| format!("compressing {}", tar_path.display()))?;
        let mut compressed = uncompressed
            .inner
            .finish()
            .context("finishing the gzip stream")?;
        compressed.flush().context("flushing the layer blob")?;
        let size = compressed.hasher.len();
        (
            uncompressed.hasher.finish(),
            compressed.hasher.finish(),
            size,
        )
    };
    let blob_path = blobs.join(digest.hex());
    make_world_readable(staged.path())?;
    staged
        .persist(&blob_path)
        .with_context(|| format!("publishing {}", blob_path.display()))?;
    Ok(LayerRef {
        digest,
        diff_id: DiffId::from_tar_digest(diff_id),
        size,
        media_type: media_type::OCI_LAYER_GZIP.to_owned(),
    })
}

pub(crate) fn write_json_blob<T: serde::Serialize>(
    blobs: &Path,
    media_type: &str,
    value: &T,
) -> Result<Descriptor> {
    let bytes = to_canonical_json(value);
    let digest = Digest::of(&bytes);
    write_atomically(&blobs.join(digest.hex()), &bytes)?;
    Ok(Descriptor::new(media_type, digest, bytes.len() as u64))
}

fn read_index(path: &Path) -> Result<Index> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
            schema_version: 2,
            media_type: Some(media_type::OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let mut staged = tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("creating a temp file in {}", parent.display()))?;
    staged
        .write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    make_world_readable(staged.path())?;
    staged
        .persist(path)
        .with_context(|| format!("publishing {}", path.display()))?;
    Ok(())
}

/// Temp files are created 0600; layouts are read by tools that may run as another user.
fn make_world_readable(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("setting the mode of {}", path.display()))
}
