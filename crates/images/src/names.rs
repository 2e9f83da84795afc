//! Finding images by name or ID, and the names themselves: tag, untag, remove.
//!
//! An image is known by its names (`names.json`: name → manifest) and by its ID, the digest of
//! its config, as in Docker. Lookups by ID (full, with or without `sha256:`, or a prefix of at
//! least four hex digits) look through the named images and the images of containers; a prefix
//! that two IDs start with is an error, as for containers. Several manifests may share one
//! config (a push with `--compression` writes a converted manifest): they are one image ID.

use kiln_image::{Digest, Reference};
use kiln_store::{ContainerRecord, ContainerStatus, Store};

use crate::error::{ImageError, Result};
use crate::stored::StoredImage;

/// The shortest ID prefix accepted, so that a short name is never taken for an ID by accident.
const MIN_ID_PREFIX: usize = 4;

/// Loads the image `query` names: a local name (or a digest reference to a stored manifest),
/// else an image ID or an unambiguous ID prefix.
pub fn find_image(store: &Store, query: &str) -> Result<StoredImage> {
    if let Ok(reference) = query.parse::<Reference>()
        && let Some(img) = StoredImage::load_by_name(store, &reference)?
    {
        return Ok(img);
    }
    match id_prefix(query) {
        Some(prefix) => find_by_id(store, query, prefix),
        None => Err(ImageError::NotFound(query.to_owned())),
    }
}

/// The hex digits of `query` if it can be an image ID or a prefix of one.
fn id_prefix(query: &str) -> Option<&str> {
    let id = query.strip_prefix("sha256:").unwrap_or(query);
    (id.len() >= MIN_ID_PREFIX && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(id)
}

/// The image whose ID starts with `prefix`, among the named images, the containers' images and
/// the unnamed images in the store.
fn find_by_id(store: &Store, query: &str, prefix: &str) -> Result<StoredImage> {
    let prefix = prefix.to_ascii_lowercase();
    let mut found: Vec<StoredImage> = Vec::new();
    let mut named_ids = Vec::new();
    for manifest in known_manifests(store)? {
        let img = StoredImage::load(store, &manifest)?;
        named_ids.push(img.config_digest.clone());
        if img.config_digest.hex().starts_with(&prefix)
            && !found.iter().any(|f| f.config_digest == img.config_digest)
        {
            found.push(img);
        }
    }
    // Unnamed images are found by ID too (`kiln run <id>` after `kiln build` without `-t`).
    let names = store.list_names()?;
    for img in crate::list::unnamed_images(store, &names, &named_ids)? {
        if img.config_digest.hex().starts_with(&prefix) {
            found.push(img);
        }
    }
    match found.len() {
        0 => Err(ImageError::NotFound(query.to_owned())),
        1 => Ok(found.remove(0)),
        count => Err(ImageError::Ambiguous {
            query: query.to_owned(),
            count,
        }),
    }
}

/// Manifests of named images first (in name order), then those only containers hold, each
/// once. A container's manifest that is gone from the store (a damaged store) is skipped.
fn known_manifests(store: &Store) -> Result<Vec<Digest>> {
    let mut out: Vec<Digest> = Vec::new();
    for (_, manifest) in store.list_names()? {
        if !out.contains(&manifest) {
            out.push(manifest);
        }
    }
    for c in store.list_containers()? {
        if let Ok(manifest) = c.manifest.parse::<Digest>()
            && !out.contains(&manifest)
            && store.has_blob(&manifest)
        {
            out.push(manifest);
        }
    }
    Ok(out)
}

/// Points `target` at `image` (a tag, not a digest), replacing what it pointed at; an image
/// reached through an index is tagged as that index, so its attestations go with it.
pub fn tag(store: &Store, image: &StoredImage, target: &Reference) -> Result<()> {
    if target.digest().is_some() {
        return Err(ImageError::TagWithDigest(target.to_string()));
    }
    store.set_name(&target.to_string(), image.root_digest())?;
    Ok(())
}

/// Removes the name `reference`; returns the manifest it pointed at, `None` when there was no
/// such name. No check for containers: see [`remove`].
pub fn untag(store: &Store, reference: &Reference) -> Result<Option<Digest>> {
    Ok(store.remove_name(&reference.to_string())?)
}

/// What [`remove`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed {
    /// The names removed.
    pub untagged: Vec<Reference>,
    /// The image ID, when no name and no container refers to the image any more: its blobs
    /// are then garbage that `kiln prune` takes.
    pub deleted: Option<Digest>,
}

/// `kiln rmi` (Docker's image delete): `query` is a name or an image ID.
///
/// A name is removed; when it was the last name of an image some container uses, only with
/// `force`. An ID removes every name of the image; refused without `force` when a stopped
/// container uses the image or the names are in several repositories, and refused even with
/// `force` while a running container uses it.
pub fn remove(store: &Store, query: &str, force: bool) -> Result<Removed> {
    let by_name = query
        .parse::<Reference>()
        .ok()
        .filter(|r| r.digest().is_none())
        .and_then(|r| match store.get_name(&r.to_string()) {
            Ok(Some(manifest)) => Some(Ok((r, manifest))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        })
        .transpose()?;
    match by_name {
        Some((reference, manifest)) => remove_name(store, reference, &manifest, force),
        None => remove_id(store, &find_image(store, query)?, force),
    }
}

fn remove_name(
    store: &Store,
    reference: Reference,
    manifest: &Digest,
    force: bool,
) -> Result<Removed> {
    // A name whose image no longer loads (a damaged store) can still be removed: its users and
    // other names are then found by manifest alone.
    let img = StoredImage::load(store, manifest).ok();
    let (names, using) = match &img {
        Some(img) => (names_of(store, img)?, users(store, img)?),
        None => {
            let names = store
                .list_names()?
                .into_iter()
                .filter(|(_, m)| m == manifest)
                .filter_map(|(n, _)| n.parse::<Reference>().ok())
                .collect();
            let using = store
                .list_containers()?
                .into_iter()
                .filter(|c| c.manifest == manifest.to_string())
                .collect();
            (names, using)
        }
    };
    let last = names.iter().all(|n| n == &reference);
    if last
        && !force
        && let Some(c) = using.first()
    {
        return Err(ImageError::ReferenceInUse {
            reference: reference.familiar(),
            container: short(&c.id).to_owned(),
            image: img.as_ref().map_or_else(
                || manifest.short().to_owned(),
                |i| i.config_digest.short().to_owned(),
            ),
        });
    }
    untag(store, &reference)?;
    let deleted = img
        .filter(|_| last && using.is_empty())
        .map(|i| i.config_digest);
    Ok(Removed {
        untagged: vec![reference],
        deleted,
    })
}

fn remove_id(store: &Store, img: &StoredImage, force: bool) -> Result<Removed> {
    let users = users(store, img)?;
    let image = img.config_digest.short().to_owned();
    if let Some(running) = users
        .iter()
        .find(|c| c.state.status == ContainerStatus::Running)
    {
        return Err(ImageError::ImageInUse {
            image,
            container: short(&running.id).to_owned(),
            running: true,
        });
    }
    if let (Some(stopped), false) = (users.first(), force) {
        return Err(ImageError::ImageInUse {
            image,
            container: short(&stopped.id).to_owned(),
            running: false,
        });
    }
    let names = names_of(store, img)?;
    let repositories: std::collections::BTreeSet<(&str, &str)> = names
        .iter()
        .map(|n| (n.registry(), n.repository()))
        .collect();
    if repositories.len() > 1 && !force {
        return Err(ImageError::MultipleRepositories { image });
    }
    for name in &names {
        untag(store, name)?;
    }
    Ok(Removed {
        untagged: names,
        deleted: users.is_empty().then(|| img.config_digest.clone()),
    })
}

/// The names whose image has `img`'s ID (whichever manifest they point at).
pub fn names_of(store: &Store, img: &StoredImage) -> Result<Vec<Reference>> {
    let mut out = Vec::new();
    for (name, manifest) in store.list_names()? {
        let same = manifest == img.manifest_digest
            || StoredImage::load(store, &manifest)
                .is_ok_and(|other| other.config_digest == img.config_digest);
        if same && let Ok(reference) = name.parse::<Reference>() {
            out.push(reference);
        }
    }
    Ok(out)
}

/// The containers (in any state) created from `img`: its manifest or its ID.
pub fn users(store: &Store, img: &StoredImage) -> Result<Vec<ContainerRecord>> {
    let manifest = img.manifest_digest.to_string();
    let id = img.config_digest.to_string();
    Ok(store
        .list_containers()?
        .into_iter()
        .filter(|c| c.manifest == manifest || c.image_id == id)
        .collect())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{container_on, image};
    use kiln_error::ErrorKind;

    fn reference(s: &str) -> Reference {
        s.parse().unwrap()
    }

    #[test]
    fn found_by_name_full_id_or_prefix() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let img = image(&store, "a");
        tag(&store, &img, &reference("app:1")).unwrap();
        let id = img.config_digest.to_string();
        for query in ["app:1", id.as_str(), &id[7..], &id[7..12], &id[..12]] {
            let found = find_image(&store, query).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(found.manifest_digest, img.manifest_digest, "{query}");
        }
        let err = find_image(&store, "app:2").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.to_string(), "no such image: app:2");
        // Three hex digits are a name, never an ID prefix.
        assert_eq!(
            find_image(&store, &id[7..10]).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_prefix_two_ids_share_is_ambiguous() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        // Two configs whose digests share their first four hex digits, found by hashing
        // (a few hundred tries), then written as images.
        let id_of = |i: u32| {
            let bytes = kiln_image::to_canonical_json(&crate::test_support::config(&i.to_string()));
            Digest::of(&bytes).hex()[..MIN_ID_PREFIX].to_owned()
        };
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u32..)
            .find_map(|i| seen.insert(id_of(i), i).map(|earlier| (earlier, i)))
            .unwrap();
        let (a, b) = (image(&store, &a.to_string()), image(&store, &b.to_string()));
        tag(&store, &a, &reference("a")).unwrap();
        tag(&store, &b, &reference("b")).unwrap();
        let shared = &a.config_digest.hex()[..MIN_ID_PREFIX];
        assert_eq!(shared, &b.config_digest.hex()[..MIN_ID_PREFIX]);
        let err = find_image(&store, shared).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            err.to_string(),
            format!("{shared:?} matches 2 images; give more of the ID or a name")
        );
        // rmi by that prefix removes nothing.
        assert!(remove(&store, shared, true).is_err());
        assert_eq!(store.list_names().unwrap().len(), 2);
        // The full IDs tell them apart.
        for img in [&a, &b] {
            let found = find_image(&store, img.config_digest.hex()).unwrap();
            assert_eq!(found.config_digest, img.config_digest);
        }
    }

    #[test]
    fn two_names_of_one_image_are_one_id_not_an_ambiguity() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let img = image(&store, "a");
        tag(&store, &img, &reference("one")).unwrap();
        tag(&store, &img, &reference("two")).unwrap();
        let found = find_image(&store, &img.config_digest.hex()[..6]).unwrap();
        assert_eq!(found.config_digest, img.config_digest);
        let digest_ref = format!("one@{}", img.manifest_digest);
        assert_eq!(
            find_image(&store, &digest_ref).unwrap().manifest_digest,
            img.manifest_digest
        );
        assert_eq!(
            tag(&store, &img, &reference(&digest_ref))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn the_last_name_of_a_used_image_goes_only_with_force() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let img = image(&store, "a");
        tag(&store, &img, &reference("app")).unwrap();
        tag(&store, &img, &reference("other")).unwrap();
        container_on(&store, &img, ContainerStatus::Exited);
        // Another name remains: untagging is fine.
        let removed = remove(&store, "other", false).unwrap();
        assert_eq!(removed.untagged, vec![reference("other")]);
        assert_eq!(removed.deleted, None);
        let err = remove(&store, "app", false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("must force"), "{err}");
        assert!(
            store
                .get_name(&reference("app").to_string())
                .unwrap()
                .is_some()
        );
        let removed = remove(&store, "app", true).unwrap();
        assert_eq!(removed.untagged, vec![reference("app")]);
        // A container still holds it: not deleted, and still found by ID.
        assert_eq!(removed.deleted, None);
        assert_eq!(
            find_image(&store, img.config_digest.hex())
                .unwrap()
                .manifest_digest,
            img.manifest_digest
        );
        assert_eq!(
            remove(&store, "app", false).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn the_name_of_a_damaged_image_can_still_be_removed() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let broken = store.write_blob(b"{ not a manifest").unwrap();
        store
            .set_name(&reference("broken").to_string(), &broken)
            .unwrap();
        assert_eq!(
            find_image(&store, "broken").unwrap_err().kind(),
            ErrorKind::Internal
        );
        let removed = remove(&store, "broken", false).unwrap();
        assert_eq!(removed.untagged, vec![reference("broken")]);
        assert!(store.list_names().unwrap().is_empty());
    }

    #[test]
    fn removing_by_id_takes_every_name_and_respects_users() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let img = image(&store, "a");
        tag(&store, &img, &reference("app:1")).unwrap();
        tag(&store, &img, &reference("app:2")).unwrap();
        let id = img.config_digest.hex()[..12].to_owned();

        let (running, lock) = container_on(&store, &img, ContainerStatus::Running);
        let err = remove(&store, &id, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert!(err.to_string().contains("cannot be forced"), "{err}");
        drop(lock);
        store.remove_container(&running).unwrap();

        container_on(&store, &img, ContainerStatus::Exited);
        let err = remove(&store, &id, false).unwrap_err();
        assert!(err.to_string().contains("stopped container"), "{err}");
        let removed = remove(&store, &id, true).unwrap();
        assert_eq!(
            removed.untagged,
            vec![reference("app:1"), reference("app:2")]
        );
        assert!(store.list_names().unwrap().is_empty());
    }

    #[test]
    fn an_id_named_in_two_repositories_needs_force() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path()).unwrap();
        let img = image(&store, "a");
        tag(&store, &img, &reference("one")).unwrap();
        tag(&store, &img, &reference("two")).unwrap();
        let id = img.config_digest.to_string();
        let err = remove(&store, &id, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let removed = remove(&store, &id, true).unwrap();
        assert_eq!(removed.untagged.len(), 2);
        assert_eq!(removed.deleted, Some(img.config_digest.clone()));
    }
}
