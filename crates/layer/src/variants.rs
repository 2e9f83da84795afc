//! A layer in the compression a build or push asks for: the blob it already has, a variant made
//! earlier, or (once per setting) a re-encoding of the stored blob, recorded for next time.

use std::io;

use kiln_image::{DiffId, LayerRef};
use kiln_store::{Store, StoreError};

use crate::LayerError;
use crate::compression::{Algorithm, CompressionRequest, decompressed};
use crate::encode::Encoder;
use crate::hashing::HashingReader;
use crate::write::commit_layer;

/// The blob chosen for a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInCompression {
    /// The layer as the request wants it (the same diffID, perhaps another blob).
    pub layer: LayerRef,
    /// Whether this call compressed the layer (rather than finding a blob that would do).
    pub reencoded: bool,
}

/// `layer` as `request` wants it compressed: `layer` itself if it will do, else a recorded
/// variant, else its blob decompressed and compressed again (its diffID checked on the way),
/// published and recorded as the variant for that setting.
///
/// Layers of a media type kiln cannot re-encode (foreign layers) are returned unchanged.
pub fn layer_in_compression(
    store: &Store,
    layer: &LayerRef,
    request: &CompressionRequest,
) -> Result<LayerInCompression, LayerError> {
    let unchanged = |layer: LayerRef| LayerInCompression {
        layer,
        reencoded: false,
    };
    if Algorithm::of_media_type(&layer.media_type).is_none() {
        return Ok(unchanged(layer.clone()));
    }
    let variants = store.layer_variants(&layer.diff_id)?;
    let own_setting = variants
        .iter()
        .find(|v| v.digest == layer.digest)
        .map(|v| v.compression.as_str());
    if request.accepts(&layer.media_type, own_setting) {
        return Ok(unchanged(layer.clone()));
    }
    if let Some(v) = variants
        .iter()
        .find(|v| request.accepts(&v.media_type, Some(&v.compression)))
    {
        return Ok(unchanged(LayerRef {
            digest: v.digest.clone(),
            diff_id: layer.diff_id.clone(),
            size: v.size,
            media_type: v.media_type.clone(),
        }));
    }

    let compression = request.compression;
    let source = store.open_blob(&layer.digest)?;
    let source_path = store.blob_path(&layer.digest);
    let mut tar = HashingReader::new(decompressed(source).map_err(LayerError::Archive)?);
    let mut encoder = Encoder::new(store.blob_writer()?, compression)?;
    io::copy(&mut tar, &mut encoder).map_err(LayerError::io(&source_path))?;
    let actual = DiffId::from_tar_digest(tar.drain_and_finish().map_err(LayerError::Archive)?);
    if actual != layer.diff_id {
        // Dropping the encoder discards the temp blob.
        return Err(StoreError::Corrupt {
            path: source_path,
            message: format!("layer's content has diffID {actual}, not {}", layer.diff_id),
        }
        .into());
    }
    let blob = encoder
        .finish()
        .map_err(LayerError::io(store.root().join("tmp")))?;
    Ok(LayerInCompression {
        layer: commit_layer(store, blob, actual, compression)?,
        reencoded: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, write_layer};
    use kiln_image::Digest;

    fn setup() -> (tempfile::TempDir, Store, LayerRef, DiffId) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("file"), "some content\n".repeat(1000)).unwrap();
        let layer = write_layer(&store, &src, Compression::default())
            .unwrap()
            .unwrap();
        let diff_id = layer.diff_id.clone();
        (dir, store, layer, diff_id)
    }

    fn request(algorithm: &str, level: Option<i32>) -> CompressionRequest {
        CompressionRequest::from_flags(algorithm, level).unwrap()
    }

    #[test]
    fn a_setting_is_encoded_once_then_reused() {
        let (_d, store, gzip, diff_id) = setup();
        let same = layer_in_compression(&store, &gzip, &request("gzip", None)).unwrap();
        assert_eq!(same.layer, gzip);
        assert!(!same.reencoded);
        // The layer was written at gzip-6, so asking for exactly that reuses it too.
        let exact = layer_in_compression(&store, &gzip, &request("gzip", Some(6)));
        assert!(!exact.unwrap().reencoded);

        let zstd = layer_in_compression(&store, &gzip, &request("zstd", None)).unwrap();
        assert!(zstd.reencoded);
        assert_eq!(
            zstd.layer.media_type,
            kiln_image::media_type::OCI_LAYER_ZSTD
        );
        let blob = store.read_blob(&zstd.layer.digest).unwrap();
        assert_eq!(Digest::of(&blob), zstd.layer.digest);
        assert_eq!(blob.len() as u64, zstd.layer.size);
        assert_eq!(
            DiffId::of_tar(&zstd::stream::decode_all(&blob[..]).unwrap()),
            diff_id
        );

        let again = layer_in_compression(&store, &gzip, &request("zstd", None)).unwrap();
        assert_eq!(again.layer, zstd.layer);
        assert!(!again.reencoded, "the recorded variant is reused");
        // From the zstd blob back to gzip: the original gzip variant, not a new encoding.
        let back = layer_in_compression(&store, &zstd.layer, &request("gzip", None)).unwrap();
        assert_eq!(back.layer, gzip);
        assert!(!back.reencoded);

        // An explicit level that no blob has is encoded once.
        let nine = layer_in_compression(&store, &gzip, &request("gzip", Some(9))).unwrap();
        assert!(nine.reencoded);
        assert_ne!(nine.layer.digest, gzip.digest);
        let nine_again =
            layer_in_compression(&store, &zstd.layer, &request("gzip", Some(9))).unwrap();
        assert_eq!(nine_again.layer, nine.layer);
        assert!(!nine_again.reencoded);
    }

    #[test]
    fn a_blob_that_is_not_the_layer_is_refused() {
        let (_d, store, mut gzip, _) = setup();
        let wrong = DiffId::of_tar(b"another tar");
        gzip.diff_id = wrong.clone();
        let err = layer_in_compression(&store, &gzip, &request("zstd", None)).unwrap_err();
        assert!(err.to_string().contains("not sha256:"), "{err}");
        assert!(store.layer_variants(&wrong).unwrap().is_empty());
        assert_eq!(
            std::fs::read_dir(store.root().join("tmp")).unwrap().count(),
            0,
            "the partial blob is discarded"
        );
    }

    #[test]
    fn foreign_layers_are_left_alone() {
        let (_d, store, gzip, _) = setup();
        let foreign = LayerRef {
            media_type: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".to_owned(),
            ..gzip
        };
        let out = layer_in_compression(&store, &foreign, &request("zstd", None)).unwrap();
        assert_eq!(out.layer, foreign);
        assert!(!out.reencoded);
    }
}
