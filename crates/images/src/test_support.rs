//! Small real images and containers in a temporary store, for the unit tests. Nothing here
//! needs root: layers are written as blobs and unpacked as the current user, containers are
//! records only.

use kiln_image::{ImageConfig, LayerRef};
use kiln_store::{ContainerRecord, ContainerState, ContainerStatus, Store, StoreLock};

use crate::{StoredImage, write_image};

/// A layer holding one file named `name`, written into the store as a blob only.
pub fn layer(store: &Store, name: &str) -> LayerRef {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), name).unwrap();
    kiln_layer::write_layer(store, dir.path(), kiln_layer::Compression::default())
        .unwrap()
        .unwrap()
}

/// The config of an image without layers, told apart by `seed`.
pub fn config(seed: &str) -> ImageConfig {
    ImageConfig {
        created: Some(seed.to_owned()),
        architecture: "amd64".into(),
        os: "linux".into(),
        ..Default::default()
    }
}

/// An image without layers whose config is [`config`]`(seed)`, not named.
pub fn image(store: &Store, seed: &str) -> StoredImage {
    write_image(store, &config(seed), Vec::new()).unwrap()
}

/// A container record made from `img`, in `status`. A running one needs its running lock held
/// (else it reads as exited): the lock is returned with it.
pub fn container_on(
    store: &Store,
    img: &StoredImage,
    status: ContainerStatus,
) -> (String, Option<StoreLock>) {
    let id = store.new_container_id(&format!("{}{status:?}", img.manifest_digest));
    let mut record = ContainerRecord {
        id: id.clone(),
        name: String::new(),
        schema_version: kiln_store::CONTAINER_SCHEMA_VERSION,
        created: "2026-01-01T00:00:00Z".parse().unwrap(),
        image: "test".into(),
        image_id: img.config_digest.to_string(),
        manifest: img.manifest_digest.to_string(),
        config: Default::default(),
        mounts: Vec::new(),
        auto_remove: false,
        state: ContainerState {
            status,
            ..Default::default()
        },
    };
    store.create_container(&mut record).unwrap();
    let lock =
        (status == ContainerStatus::Running).then(|| store.hold_container_running(&id).unwrap());
    (id, lock)
}
