//! Image operations: list, inspect, tag, remove, pull, push.

use std::collections::BTreeMap;

use hyper::Method;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::stream::{JsonMessage, json_messages};
use crate::transport::{Client, empty, query, segment};

/// An entry of `GET /images/json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    /// `name:tag`s, familiar (`busybox:latest`); `null` or `[]` when untagged.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub size: i64,
}

/// An entry of `DELETE /images/{name}`'s answer: one name untagged or one image deleted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteItem {
    #[serde(default)]
    pub untagged: Option<String>,
    #[serde(default)]
    pub deleted: Option<String>,
}

/// Registry credentials for `X-Registry-Auth` (Docker's `AuthConfig`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryAuth {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub password: String,
    #[serde(rename = "identitytoken", skip_serializing_if = "String::is_empty")]
    pub identity_token: String,
    #[serde(rename = "serveraddress")]
    pub server_address: String,
}

impl RegistryAuth {
    /// The header value: base64url of the JSON, as the docker CLI sends it.
    pub fn header(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE
            .encode(serde_json::to_vec(self).unwrap_or_default())
    }
}

fn auth_headers(auth: Option<&RegistryAuth>) -> Vec<(&'static str, String)> {
    auth.map(|a| vec![("X-Registry-Auth", a.header())])
        .unwrap_or_default()
}

impl Client {
    /// `GET /images/json` with `filters` (`reference`, `dangling`, `label`: each a list).
    pub async fn images(
        &self,
        filters: &BTreeMap<String, Vec<String>>,
    ) -> Result<Vec<ImageSummary>, ClientError> {
        let filters = serde_json::to_string(filters).unwrap_or_default();
        let q = if filters == "{}" {
            String::new()
        } else {
            query(&[("filters", &filters)])
        };
        self.json(Method::GET, &format!("/images/json{q}"), empty())
            .await
    }

    /// `GET /images/{name}/json`: dockerd's `ImageInspect` object, as it came.
    pub async fn image_inspect(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/images/{}/json", segment(name)),
            empty(),
        )
        .await
    }

    /// `POST /images/{source}/tag?repo=&tag=`.
    pub async fn image_tag(&self, source: &str, repo: &str, tag: &str) -> Result<(), ClientError> {
        let path = format!(
            "/images/{}/tag{}",
            segment(source),
            query(&[("repo", repo), ("tag", tag)])
        );
        self.call(Method::POST, &path, empty()).await.map(|_| ())
    }

    /// `DELETE /images/{name}`.
    pub async fn image_remove(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<DeleteItem>, ClientError> {
        let path = format!(
            "/images/{}{}",
            segment(name),
            query(&[("force", if force { "1" } else { "0" })])
        );
        self.json(Method::DELETE, &path, empty()).await
    }

    /// `POST /images/create?fromImage=&tag=`: a pull, its progress passed to `on`. `tag` is a
    /// tag or a digest.
    pub async fn image_pull(
        &self,
        from_image: &str,
        tag: &str,
        platform: Option<&str>,
        auth: Option<&RegistryAuth>,
        on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let mut pairs = vec![("fromImage", from_image), ("tag", tag)];
        if let Some(p) = platform {
            pairs.push(("platform", p));
        }
        let path = format!("/images/create{}", query(&pairs));
        let response = self
            .send(Method::POST, &path, &auth_headers(auth), empty())
            .await?;
        json_messages(&path, response, on).await
    }

    /// `POST /images/{name}/push?tag=`: `name` without its tag; an empty `tag` pushes every
    /// tag of the repository. Returns the `aux` results (`Tag`, `Digest`, `Size`).
    pub async fn image_push(
        &self,
        name: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
        on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
    ) -> Result<Vec<serde_json::Value>, ClientError> {
        let path = format!("/images/{}/push{}", segment(name), query(&[("tag", tag)]));
        // dockerd refuses a push without the header; an empty AuthConfig means anonymous.
        let anonymous = RegistryAuth::default();
        let response = self
            .send(
                Method::POST,
                &path,
                &auth_headers(Some(auth.unwrap_or(&anonymous))),
                empty(),
            )
            .await?;
        let mut results = Vec::new();
        json_messages(&path, response, &mut |m| {
            if let Some(aux) = &m.aux {
                results.push(aux.clone());
            }
            on(m)
        })
        .await?;
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_is_base64url_json() {
        use base64::Engine as _;
        let auth = RegistryAuth {
            username: "alice".into(),
            password: "s3cret?>".into(),
            server_address: "127.0.0.1:5000".into(),
            ..RegistryAuth::default()
        };
        let header = auth.header();
        assert!(!header.contains('+') && !header.contains('/'), "{header}");
        let json: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"username":"alice","password":"s3cret?>","serveraddress":"127.0.0.1:5000"})
        );
    }

    #[test]
    fn untagged_images_list_as_null_or_empty() {
        let rows: Vec<ImageSummary> = serde_json::from_str(
            r#"[{"Id":"sha256:ab","RepoTags":null,"Created":5,"Size":7,"Labels":{}},
                {"Id":"sha256:cd","RepoTags":["a:1"],"Created":6,"Size":8}]"#,
        )
        .unwrap();
        assert_eq!(rows[0].repo_tags, None);
        assert_eq!(rows[1].repo_tags.as_deref(), Some(&["a:1".to_owned()][..]));
    }
}
