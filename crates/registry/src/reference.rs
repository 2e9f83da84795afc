//! Image references: the type lives in `kiln_image::reference` (every crate names images by it);
//! the registry adds the one rule that needs its credential keys, [`api_host_of`].

pub use kiln_image::reference::{DOCKER_HUB, DOCKER_HUB_API, Reference, ReferenceError};

/// The API host of a registry named on the command line (`kiln login docker.io`): Docker Hub's
/// names, or Docker's `https://index.docker.io/v1/` key, map to the host serving its API; any
/// other name is used as it is, with a scheme or path stripped.
pub fn api_host_of(registry: &str) -> String {
    match crate::credentials::server_key(registry).as_str() {
        crate::credentials::DOCKER_HUB_KEY => DOCKER_HUB_API.to_owned(),
        host => host.to_owned(),
    }
}
