//! Container operations: list, create, start, stop, remove, inspect, logs.

use hyper::Method;
use hyper::Response;
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::stream::{Output, output};
use crate::transport::{Client, empty, full, query, segment};

/// An entry of `GET /containers/json`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    /// `/name`s, as dockerd writes them.
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// `Up 3 minutes`, `Exited (0) 2 seconds ago`.
    #[serde(default)]
    pub status: String,
    /// `running`, `exited`, `created`, …
    #[serde(default)]
    pub state: String,
    /// `[{"IP", "PrivatePort", "PublicPort", "Type"}]`, as dockerd lists published ports.
    #[serde(default)]
    pub ports: serde_json::Value,
}

/// `POST /containers/create`'s answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Created {
    pub id: String,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

/// What `GET /containers/{id}/logs` sends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsOptions {
    pub follow: bool,
    pub timestamps: bool,
    /// Unix seconds (with a fraction) or RFC 3339.
    pub since: Option<String>,
    pub until: Option<String>,
    /// A number of lines, or `all`.
    pub tail: String,
}

impl Client {
    /// `GET /containers/json` (`all`: stopped ones too).
    pub async fn containers(&self, all: bool) -> Result<Vec<ContainerSummary>, ClientError> {
        let q = query(&[("all", if all { "1" } else { "0" })]);
        self.json(Method::GET, &format!("/containers/json{q}"), empty())
            .await
    }

    /// `POST /containers/create?name=` with `body`, a `ContainerCreateRequest` (Config fields
    /// and `HostConfig`). A missing image is [`ClientError::Api`] with status 404.
    pub async fn container_create<B: Serialize>(
        &self,
        name: Option<&str>,
        body: &B,
    ) -> Result<Created, ClientError> {
        let q = match name {
            Some(n) => query(&[("name", n)]),
            None => String::new(),
        };
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            what: "containers/create".into(),
            reason: e.to_string(),
        })?;
        self.json(Method::POST, &format!("/containers/create{q}"), full(body))
            .await
    }

    /// `POST /containers/{id}/start`; `false` when it was already running.
    pub async fn container_start(&self, id: &str) -> Result<bool, ClientError> {
        let path = format!("/containers/{}/start", segment(id));
        self.call(Method::POST, &path, empty()).await
    }

    /// `POST /containers/{id}/stop?t=`; `false` when it was not running.
    pub async fn container_stop(&self, id: &str, grace: Option<u64>) -> Result<bool, ClientError> {
        let t = grace.map(|g| g.to_string());
        let q = match &t {
            Some(t) => query(&[("t", t)]),
            None => String::new(),
        };
        let path = format!("/containers/{}/stop{q}", segment(id));
        self.call(Method::POST, &path, empty()).await
    }

    /// `DELETE /containers/{id}?force=&v=`.
    pub async fn container_remove(
        &self,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), ClientError> {
        let flag = |b: bool| if b { "1" } else { "0" };
        let path = format!(
            "/containers/{}{}",
            segment(id),
            query(&[("force", flag(force)), ("v", flag(volumes))])
        );
        self.call(Method::DELETE, &path, empty()).await.map(|_| ())
    }

    /// `GET /containers/{id}/json`: dockerd's container object, as it came.
    pub async fn container_inspect(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/containers/{}/json", segment(id)),
            empty(),
        )
        .await
    }

    /// `GET /containers/{id}/logs`, each chunk passed to `on` as it arrives (with `follow`,
    /// until the container stops). The container is inspected first, as the docker CLI does:
    /// with a tty its output is one raw stream, without one it is multiplexed.
    pub async fn container_logs(
        &self,
        id: &str,
        options: &LogsOptions,
        on: &mut dyn FnMut(Output, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let inspected = self.container_inspect(id).await?;
        let tty = inspected["Config"]["Tty"].as_bool().unwrap_or(false);
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut pairs = vec![
            ("stdout", "1"),
            ("stderr", "1"),
            ("follow", flag(options.follow)),
            ("timestamps", flag(options.timestamps)),
            ("tail", options.tail.as_str()),
        ];
        if let Some(since) = &options.since {
            pairs.push(("since", since));
        }
        if let Some(until) = &options.until {
            pairs.push(("until", until));
        }
        let path = format!("/containers/{}/logs{}", segment(id), query(&pairs));
        let response = self.send(Method::GET, &path, &[], empty()).await?;
        output(&path, response, tty, on).await
    }
}

/// The body of `POST /containers/{id}/wait`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitBody {
    status_code: i64,
    #[serde(default)]
    error: Option<WaitError>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WaitError {
    #[serde(default)]
    message: String,
}

/// A wait the daemon has accepted (its headers came back), whose exit code comes later: so a
/// caller can be sure the wait is in place before it starts the container.
#[derive(Debug)]
pub struct PendingWait {
    client: Client,
    path: String,
    response: Response<Incoming>,
}

impl PendingWait {
    /// The exit code, once the condition is met.
    pub async fn exit_code(self) -> Result<i64, ClientError> {
        let bytes = self.client.read_body(self.response).await?;
        let body: WaitBody = serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            what: self.path.clone(),
            reason: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })?;
        match body.error {
            Some(e) if !e.message.is_empty() => Err(ClientError::Stream {
                message: e.message,
                code: None,
            }),
            _ => Ok(body.status_code),
        }
    }
}

/// A container's output on its way (a plain attach: output only, no stdin).
#[derive(Debug)]
pub struct AttachedOutput {
    path: String,
    tty: bool,
    response: Response<Incoming>,
}

impl AttachedOutput {
    /// Passes the output to `on` until the container's streams close.
    pub async fn copy(
        self,
        on: &mut dyn FnMut(Output, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        output(&self.path, self.response, self.tty, on).await
    }
}

impl Client {
    /// `POST /containers/{id}/kill?signal=`.
    pub async fn container_kill(&self, id: &str, signal: &str) -> Result<(), ClientError> {
        let path = format!(
            "/containers/{}/kill{}",
            segment(id),
            query(&[("signal", signal)])
        );
        self.call(Method::POST, &path, empty()).await.map(|_| ())
    }

    /// `POST /containers/{id}/restart?t=`.
    pub async fn container_restart(&self, id: &str, grace: u64) -> Result<(), ClientError> {
        let path = format!(
            "/containers/{}/restart{}",
            segment(id),
            query(&[("t", &grace.to_string())])
        );
        self.call(Method::POST, &path, empty()).await.map(|_| ())
    }

    /// `POST /containers/{id}/wait?condition=`, returned as soon as the daemon has accepted
    /// it (`not-running`, `next-exit` or `removed`).
    pub async fn container_wait(
        &self,
        id: &str,
        condition: &str,
    ) -> Result<PendingWait, ClientError> {
        let path = format!(
            "/containers/{}/wait{}",
            segment(id),
            query(&[("condition", condition)])
        );
        let response = self.send(Method::POST, &path, &[], empty()).await?;
        Ok(PendingWait {
            client: self.clone(),
            path,
            response,
        })
    }

    /// `POST /containers/{id}/attach?stream=1&stdout=1&stderr=1` without an upgrade: the
    /// daemon answers at once (before a start) and sends the output as the body. `tty` says how
    /// the output is framed (the container's `Config.Tty`).
    pub async fn container_attach_output(
        &self,
        id: &str,
        tty: bool,
    ) -> Result<AttachedOutput, ClientError> {
        let path = format!(
            "/containers/{}/attach{}",
            segment(id),
            query(&[("stream", "1"), ("stdout", "1"), ("stderr", "1")])
        );
        let response = self.send(Method::POST, &path, &[], empty()).await?;
        Ok(AttachedOutput {
            path,
            tty,
            response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_rows_take_dockerds_shape() {
        let rows: Vec<ContainerSummary> = serde_json::from_str(
            r#"[{"Id":"abc","Names":["/web"],"Image":"busybox","ImageID":"sha256:1","Command":"sleep 60","Created":1,"Ports":[],"Labels":{},"State":"running","Status":"Up 2 seconds","HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{}},"Mounts":[]}]"#,
        )
        .unwrap();
        assert_eq!(rows[0].names, ["/web"]);
        assert_eq!(rows[0].state, "running");
        let created: Created = serde_json::from_str(r#"{"Id":"abc","Warnings":null}"#).unwrap();
        assert_eq!(created.warnings, None);
        let waited: WaitBody = serde_json::from_str(r#"{"StatusCode":3,"Error":null}"#).unwrap();
        assert_eq!((waited.status_code, waited.error), (3, None));
    }
}
