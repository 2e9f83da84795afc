//! [`LayerRef`]: the one way kiln refers to a layer it holds — the blob (media type, digest,
//! size, as a descriptor names it) together with the diffID of the tar inside it.
//!
//! Every part of kiln that passes a layer around (the layer writer, cache records, the shared
//! cache document, the image service's snapshots, compression variants) uses this type, so the
//! blob digest and the diffID cannot be swapped and no caller rebuilds the pair from two
//! parallel lists. Its JSON form (`digest`, `diff_id`, `size`, `media_type`, in that order) is
//! the cache record's layer as it has always been written, so records in existing stores load
//! unchanged.

use serde::{Deserialize, Serialize};

use crate::{Descriptor, DiffId, Digest};

/// A layer blob in the store and the tar it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// Digest of the blob (compressed, unless the media type says otherwise).
    pub digest: Digest,
    /// Digest of the uncompressed tar.
    pub diff_id: DiffId,
    /// Size of the blob in bytes.
    pub size: u64,
    pub media_type: String,
}

impl LayerRef {
    /// The layer held in the blob `descriptor` names, whose tar is `diff_id`. Whatever else the
    /// descriptor says (annotations, URLs) is not part of the layer's identity and is dropped:
    /// a caller writing a manifest keeps the original descriptor for that.
    pub fn from_descriptor(descriptor: &Descriptor, diff_id: DiffId) -> LayerRef {
        LayerRef {
            digest: descriptor.digest.clone(),
            diff_id,
            size: descriptor.size,
            media_type: descriptor.media_type.clone(),
        }
    }

    /// The layers of an image: its manifest's layer descriptors paired with its config's
    /// diffIDs, bottom first. The lists are checked to be the same length when an image is
    /// read (`parse_config`); extra entries of either are not paired.
    pub fn pair_all<'a>(
        descriptors: &'a [Descriptor],
        diff_ids: &'a [DiffId],
    ) -> impl Iterator<Item = LayerRef> + 'a {
        descriptors
            .iter()
            .zip(diff_ids)
            .map(|(d, id)| LayerRef::from_descriptor(d, id.clone()))
    }

    /// The descriptor a manifest lists for this layer.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> LayerRef {
        LayerRef {
            digest: Digest::of(b"blob"),
            diff_id: DiffId::of_tar(b"tar"),
            size: 4,
            media_type: crate::media_type::OCI_LAYER_GZIP.to_owned(),
        }
    }

    #[test]
    fn serialises_as_the_cache_records_layer_always_was() {
        let l = layer();
        let json = serde_json::to_string(&l).unwrap();
        let old = format!(
            r#"{{"digest":"{}","diff_id":"{}","size":4,"media_type":"{}"}}"#,
            Digest::of(b"blob"),
            Digest::of(b"tar"),
            crate::media_type::OCI_LAYER_GZIP
        );
        assert_eq!(json, old);
        assert_eq!(serde_json::from_str::<LayerRef>(&old).unwrap(), l);
    }

    #[test]
    fn malformed_layers_are_refused() {
        let no_media_type = format!(
            r#"{{"digest":"{}","diff_id":"{}","size":4}}"#,
            Digest::of(b"blob"),
            Digest::of(b"tar")
        );
        assert!(serde_json::from_str::<LayerRef>(&no_media_type).is_err());
        let bad_diff_id = format!(
            r#"{{"digest":"{}","diff_id":"sha256:00","size":4,"media_type":"m"}}"#,
            Digest::of(b"blob")
        );
        assert!(serde_json::from_str::<LayerRef>(&bad_diff_id).is_err());
    }

    #[test]
    fn descriptors_round_trip_and_pair_with_diff_ids() {
        let l = layer();
        let mut d = l.descriptor();
        assert_eq!(LayerRef::from_descriptor(&d, l.diff_id.clone()), l);
        d.annotations.insert("a".into(), "b".into());
        assert_eq!(LayerRef::from_descriptor(&d, l.diff_id.clone()), l);
        let other = DiffId::of_tar(b"other");
        let paired: Vec<_> =
            LayerRef::pair_all(&[d.clone(), d], &[l.diff_id.clone(), other.clone()]).collect();
        assert_eq!(paired.len(), 2);
        assert_eq!(paired[0], l);
        assert_eq!(paired[1].diff_id, other);
    }
}
