//! `POST /build`: the legacy builder protocol, as `DOCKER_BUILDKIT=0 docker build` speaks it.

use hyper::Method;
use std::collections::BTreeMap;

use crate::context::{Context, Upload};
use crate::error::ClientError;
use crate::stream::{JsonMessage, json_messages};
use crate::transport::{Client, query};

/// The query of a build (the context and its Dockerfile name come with the [`Context`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildOptions {
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    pub platform: Option<String>,
    pub network_mode: Option<String>,
    /// `NAME:ADDRESS` each.
    pub extra_hosts: Vec<String>,
    /// `shmsize`: bytes of each RUN step's `/dev/shm`.
    pub shm_size: Option<u64>,
    /// `ulimits`: `(name, soft, hard)`, -1 for unlimited.
    pub ulimits: Vec<(String, i64, i64)>,
    /// Only the `aux` ID and errors come back, no step output.
    pub quiet: bool,
}

impl BuildOptions {
    fn query(&self, dockerfile: &str) -> String {
        let flag = |b: bool| if b { "1" } else { "0" };
        let build_args = serde_json::to_string(&self.build_args).unwrap_or_default();
        let mut pairs: Vec<(&str, &str)> = vec![("dockerfile", dockerfile)];
        pairs.extend(self.tags.iter().map(|t| ("t", t.as_str())));
        if !self.build_args.is_empty() {
            pairs.push(("buildargs", &build_args));
        }
        if let Some(target) = &self.target {
            pairs.push(("target", target));
        }
        if let Some(platform) = &self.platform {
            pairs.push(("platform", platform));
        }
        if let Some(network) = &self.network_mode {
            pairs.push(("networkmode", network));
        }
        let hosts = self.extra_hosts.join(",");
        if !hosts.is_empty() {
            pairs.push(("extrahosts", &hosts));
        }
        let shm_size = self.shm_size.map(|s| s.to_string()).unwrap_or_default();
        if self.shm_size.is_some() {
            pairs.push(("shmsize", &shm_size));
        }
        // The docker CLI's shape: `[{"Name":…,"Soft":…,"Hard":…}]`.
        let ulimits = serde_json::Value::Array(
            self.ulimits
                .iter()
                .map(|(name, soft, hard)| serde_json::json!({"Name": name, "Soft": soft, "Hard": hard}))
                .collect(),
        )
        .to_string();
        if !self.ulimits.is_empty() {
            pairs.push(("ulimits", &ulimits));
        }
        pairs.push(("nocache", flag(self.no_cache)));
        pairs.push(("pull", flag(self.pull)));
        pairs.push(("q", flag(self.quiet)));
        pairs.push(("rm", "1"));
        query(&pairs)
    }
}

impl Client {
    /// Sends `context` to be built, passes each message to `on` as it arrives, and returns the
    /// image ID. A build that fails is the daemon's `errorDetail` ([`ClientError::Stream`],
    /// with a failed RUN's exit code); a context that cannot be read is that error instead,
    /// and the daemon sees a cut-off body, never a complete-looking context.
    pub async fn build(
        &self,
        context: Context,
        options: &BuildOptions,
        on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
    ) -> Result<String, ClientError> {
        let path = format!("/build{}", options.query(&context.dockerfile));
        // The `aux` ID is the full one; the `Successfully built` line (which follows it) only
        // counts from a daemon that sends no `aux`.
        let (mut aux_id, mut line_id) = (None, None);
        let result = async {
            let response = self
                .send(
                    Method::POST,
                    &path,
                    &[("Content-Type", "application/x-tar".to_owned())],
                    context.body,
                )
                .await?;
            json_messages("the build", response, &mut |m| {
                match build_id(m) {
                    Some((found, true)) => aux_id = Some(found),
                    Some((found, false)) => line_id = Some(found),
                    None => {}
                }
                on(m)
            })
            .await
        }
        .await;
        Upload::finish(context.done, result).await?;
        aux_id.or(line_id).ok_or_else(|| ClientError::Protocol {
            what: "the build".into(),
            reason: "the stream ended without an image ID".into(),
        })
    }
}

/// The image ID a build message carries: `{"aux":{"ID":…}}` (`true`: the full ID), or the
/// legacy `Successfully built <short id>` line of daemons without `aux`.
fn build_id(m: &JsonMessage) -> Option<(String, bool)> {
    if let Some(id) = m
        .aux
        .as_ref()
        .and_then(|a| a.get("ID"))
        .and_then(|v| v.as_str())
    {
        return Some((id.to_owned(), true));
    }
    m.stream
        .as_deref()
        .and_then(|s| s.trim_end().strip_prefix("Successfully built "))
        .map(|id| (id.to_owned(), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_carries_every_option() {
        let options = BuildOptions {
            tags: vec!["a:1".into(), "b".into()],
            build_args: [("V".to_owned(), "1 2".to_owned())].into(),
            target: Some("t".into()),
            no_cache: true,
            network_mode: Some("none".into()),
            extra_hosts: vec!["h:10.0.0.1".into(), "g:10.0.0.2".into()],
            ..BuildOptions::default()
        };
        let q = options.query("sub/Dockerfile");
        assert_eq!(
            q,
            "?dockerfile=sub%2FDockerfile&t=a%3A1&t=b&buildargs=%7B%22V%22%3A%221+2%22%7D\
             &target=t&networkmode=none&extrahosts=h%3A10.0.0.1%2Cg%3A10.0.0.2&nocache=1\
             &pull=0&q=0&rm=1"
        );
        let limits = BuildOptions {
            shm_size: Some(1024),
            ulimits: vec![("nofile".into(), 10, -1)],
            ..BuildOptions::default()
        };
        let q = limits.query("Dockerfile");
        assert!(
            q.contains(
                "&shmsize=1024&ulimits=%5B%7B%22Hard%22%3A-1%2C%22Name%22%3A%22nofile%22%2C\
                 %22Soft%22%3A10%7D%5D"
            ),
            "{q}"
        );
    }

    #[test]
    fn the_id_comes_from_aux_or_the_last_line() {
        let aux: JsonMessage = serde_json::from_str(r#"{"aux":{"ID":"sha256:abc"}}"#).unwrap();
        assert_eq!(build_id(&aux), Some(("sha256:abc".to_owned(), true)));
        let line: JsonMessage =
            serde_json::from_str(r#"{"stream":"Successfully built 0123456789ab\n"}"#).unwrap();
        assert_eq!(build_id(&line), Some(("0123456789ab".to_owned(), false)));
        let step: JsonMessage =
            serde_json::from_str(r#"{"stream":"Step 1/2 : FROM x\n"}"#).unwrap();
        assert_eq!(build_id(&step), None);
    }
}
