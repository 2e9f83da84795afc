//! Pushing an image with `docker push`'s progress lines, shared by `kiln push` and
//! `kiln build --push` (a helper, not a command, so neither command imports the other).

use std::path::Path;

use anyhow::{Context, Result};
use kiln_image::Reference;
use kiln_images::{PushProgress, StoredImage};
use kiln_registry::{PushEvent, PushFormat};

pub use kiln_images::Pushed;

use super::Env;
use crate::cli::PushOutputArgs;

/// The `--format` flag.
pub fn parse_format(output: &PushOutputArgs) -> Result<Option<PushFormat>> {
    output
        .format
        .as_deref()
        .map(|f| f.parse::<PushFormat>().map_err(anyhow::Error::msg))
        .transpose()
}

/// Pushes `img` under each of `references` (in `format`, or as stored), printing progress and
/// each tag's digest line as `docker push` does.
pub fn push_image(
    env: &Env,
    img: &StoredImage,
    references: &[Reference],
    format: Option<PushFormat>,
) -> Result<Pushed> {
    let on_event = |e: PushProgress| match e {
        PushProgress::Started { reference } => println!(
            "The push refers to repository [{}]",
            reference.repository_with_registry()
        ),
        PushProgress::Blob(PushEvent::BlobExists { digest }) => {
            println!("{}: Layer already exists", digest.short());
        }
        PushProgress::Blob(PushEvent::BlobMounted { digest, from }) => {
            println!("{}: Mounted from {from}", digest.short());
        }
        PushProgress::Blob(PushEvent::BlobUploadResumed { digest, offset: 0 }) => {
            println!(
                "{}: Restarting upload (the registry kept nothing)",
                digest.short()
            );
        }
        PushProgress::Blob(PushEvent::BlobUploadResumed { digest, offset }) => {
            println!("{}: Resuming upload at byte {offset}", digest.short());
        }
        PushProgress::Blob(PushEvent::BlobUploaded { digest }) => {
            println!("{}: Pushed", digest.short());
        }
        PushProgress::Blob(_) => {}
        PushProgress::Pushed {
            reference,
            digest,
            size,
        } => println!(
            "{}: digest: {} size: {}",
            reference.tag().unwrap_or("latest"),
            digest,
            size
        ),
    };
    Ok(env.rt.block_on(kiln_images::push_image(
        &env.store,
        env.registry()?,
        img,
        references,
        format,
        &on_event,
    ))?)
}

/// Writes BuildKit's `--metadata-file` JSON: the manifest (`containerimage.digest`, and its
/// descriptor), the config (`containerimage.config.digest`, the image ID) and the names
/// (`image.name`, comma-separated).
/// BuildKit's `--metadata-file` keys. `config` is the image's config digest; a multi-platform
/// build has one per platform and, as under BuildKit, the key is then left out.
pub fn write_metadata(
    path: &Path,
    config: Option<&kiln_image::Digest>,
    pushed: &Pushed,
) -> Result<()> {
    let names: Vec<String> = pushed.references.iter().map(ToString::to_string).collect();
    let mut metadata = serde_json::json!({
        "containerimage.digest": pushed.digest.to_string(),
        "containerimage.descriptor": {
            "mediaType": pushed.media_type,
            "digest": pushed.digest.to_string(),
            "size": pushed.size,
        },
        "image.name": names.join(","),
    });
    if let Some(config) = config {
        metadata["containerimage.config.digest"] = config.to_string().into();
    }
    let mut bytes = serde_json::to_vec_pretty(&metadata).expect("metadata serialises");
    bytes.push(b'\n');
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
