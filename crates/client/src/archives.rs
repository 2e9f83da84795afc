//! Image archives and volumes: `images/get` (save), `images/load`, `images/create?fromSrc=-`
//! (import), `commit`, and the volume operations.

use std::collections::BTreeMap;

use http_body_util::BodyExt;
use hyper::Method;
use serde::Deserialize;

use crate::context::Upload;
use crate::error::ClientError;
use crate::stream::{JsonMessage, json_messages};
use crate::transport::{Client, empty, full, query, segment};

/// An entry of `GET /volumes`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeSummary {
    pub name: String,
    #[serde(default)]
    pub driver: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VolumeList {
    #[serde(default)]
    volumes: Option<Vec<VolumeSummary>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IdAnswer {
    id: String,
}

impl Client {
    /// `GET /images/get?names=…`: a docker-archive tar of the images, passed to `on` in
    /// chunks as it arrives. Every name is checked before the first byte (a 404 otherwise).
    pub async fn image_save(
        &self,
        names: &[String],
        on: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| ("names", n.as_str())).collect();
        let path = format!("/images/get{}", query(&pairs));
        let response = self.send(Method::GET, &path, &[], empty()).await?;
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Protocol {
                what: path.clone(),
                reason: e.to_string(),
            })?;
            if let Ok(data) = frame.into_data() {
                on(&data).map_err(|source| ClientError::Output {
                    what: "the image archive",
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// `POST /images/load`: a docker archive or OCI layout tar; its messages (`Loaded image:
    /// …`) passed to `on`, an in-band error as [`ClientError::Stream`].
    pub async fn image_load(
        &self,
        archive: Upload,
        on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let path = "/images/load?quiet=0";
        let result = async {
            let response = self
                .send(
                    Method::POST,
                    path,
                    &[("Content-Type", "application/x-tar".to_owned())],
                    archive.body,
                )
                .await?;
            json_messages(path, response, on).await
        }
        .await;
        Upload::finish(archive.done, result).await
    }

    /// `POST /images/create?fromSrc=-&repo=&tag=`: an image of a root filesystem tar.
    pub async fn image_import(
        &self,
        rootfs: Upload,
        repo: &str,
        tag: &str,
        on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/images/create{}",
            query(&[("fromSrc", "-"), ("repo", repo), ("tag", tag)])
        );
        let result = async {
            let response = self
                .send(
                    Method::POST,
                    &path,
                    &[("Content-Type", "application/x-tar".to_owned())],
                    rootfs.body,
                )
                .await?;
            json_messages(&path, response, on).await
        }
        .await;
        Upload::finish(rootfs.done, result).await
    }

    /// `POST /commit?container=&repo=&tag=&comment=&author=`: the new image's ID.
    pub async fn commit(
        &self,
        container: &str,
        target: Option<(&str, &str)>,
        comment: Option<&str>,
        author: Option<&str>,
    ) -> Result<String, ClientError> {
        let mut pairs = vec![("container", container)];
        // Without a repository the daemon commits an unnamed image (dockerd does too).
        if let Some((repo, tag)) = target {
            pairs.extend([("repo", repo), ("tag", tag)]);
        }
        if let Some(c) = comment {
            pairs.push(("comment", c));
        }
        if let Some(a) = author {
            pairs.push(("author", a));
        }
        let answer: IdAnswer = self
            .json(
                Method::POST,
                &format!("/commit{}", query(&pairs)),
                full("{}"),
            )
            .await?;
        Ok(answer.id)
    }

    /// `POST /volumes/create`: a named volume (or an anonymous one); dockerd's object.
    pub async fn volume_create(
        &self,
        name: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut body = serde_json::json!({ "Labels": labels });
        if let Some(name) = name {
            body["Name"] = name.into();
        }
        self.json(Method::POST, "/volumes/create", full(body.to_string()))
            .await
    }

    /// `GET /volumes`.
    pub async fn volumes(&self) -> Result<Vec<VolumeSummary>, ClientError> {
        let list: VolumeList = self.json(Method::GET, "/volumes", empty()).await?;
        Ok(list.volumes.unwrap_or_default())
    }

    /// `GET /volumes/{name}`: dockerd's object, as it came.
    pub async fn volume_inspect(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.json(Method::GET, &format!("/volumes/{}", segment(name)), empty())
            .await
    }

    /// `DELETE /volumes/{name}`.
    pub async fn volume_remove(&self, name: &str) -> Result<(), ClientError> {
        self.call(
            Method::DELETE,
            &format!("/volumes/{}", segment(name)),
            empty(),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_lists_may_be_null() {
        let list: VolumeList = serde_json::from_str(r#"{"Volumes":null,"Warnings":null}"#).unwrap();
        assert!(list.volumes.is_none());
        let list: VolumeList = serde_json::from_str(
            r#"{"Volumes":[{"Name":"v","Driver":"local","Mountpoint":"/x"}],"Warnings":[]}"#,
        )
        .unwrap();
        assert_eq!(list.volumes.unwrap()[0].name, "v");
    }
}
