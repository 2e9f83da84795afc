//! One repository on one registry as requests see it: its API URLs, the token scopes it needs,
//! and errors that name it.

use reqwest::Url;

use crate::auth::repository_scope;
use crate::error::RegistryError;
use crate::response::error_chain;

/// The repository a request is about and the access it needs, which selects its token.
#[derive(Debug, Clone)]
pub(crate) struct Repo {
    /// The registry as named in references (`docker.io`), for messages and token caching.
    pub registry: String,
    pub repository: String,
    /// `http(s)://<api host>/v2/`.
    pub base: Url,
    /// Token scopes: `repository:<repository>:<actions>`, then any others the requests need
    /// (the source repository of a cross-repository mount).
    pub scopes: Vec<String>,
}

impl Repo {
    /// `<base><repository>/<path>`.
    pub fn url(&self, path: &str) -> Url {
        let relative = format!("{}/{path}", self.repository);
        // Repository names are validated to `[a-z0-9._/-]`, and paths are built from digests and
        // validated tags, so joining cannot fail or escape the base.
        self.base
            .join(&relative)
            .unwrap_or_else(|_| self.base.clone())
    }

    /// The same repository, with pull access to `source` added to its token scopes, for
    /// mounting a blob from `source`.
    pub fn with_mount_source(mut self, source: &str) -> Repo {
        let scope = repository_scope(source, "pull");
        if !self.scopes.contains(&scope) {
            self.scopes.push(scope);
        }
        self
    }

    pub(crate) fn scope_key(&self) -> String {
        self.scopes.join(" ")
    }

    pub fn not_found(&self, object: &str, message: String) -> RegistryError {
        RegistryError::NotFound {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            message,
        }
    }

    pub fn protocol(&self, object: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            message: message.into(),
        }
    }

    pub fn transfer(&self, object: &str, error: &reqwest::Error) -> RegistryError {
        RegistryError::Transfer {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            object: object.to_owned(),
            detail: error_chain(error),
        }
    }
}
