//! Hijacked connections: `attach` and `exec start` ask to upgrade (`Connection: Upgrade`,
//! `Upgrade: tcp`), the daemon answers `101 UPGRADED`, and the connection then carries the
//! client's input one way and the process's output the other (raw with a tty, framed
//! without). Also the calls that go with them: exec create and inspect, resize.
//!
//! The input is a channel the caller fills (from its stdin, on a thread of its own: a blocking
//! read cannot be cancelled, so it must not hold up the end of the output); when it closes,
//! the write side is shut down, which the daemon takes as the end of the process's stdin.

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::stream::{Demux, Output};
use crate::transport::{Body, Client, empty, full, query, segment};

/// A connection the daemon upgraded: the process's streams.
#[derive(Debug)]
pub struct Hijacked {
    io: TokioIo<Upgraded>,
    what: String,
}

/// `POST /containers/{id}/exec`'s answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecCreated {
    id: String,
}

impl Client {
    async fn hijack(&self, path: &str, body: Body) -> Result<Hijacked, ClientError> {
        let headers = [
            ("Connection", "Upgrade".to_owned()),
            ("Upgrade", "tcp".to_owned()),
            ("Content-Type", "application/json".to_owned()),
        ];
        let response = self.send(Method::POST, path, &headers, body).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ClientError::Protocol {
                what: path.to_owned(),
                reason: format!(
                    "expected 101 Switching Protocols, got {}",
                    response.status()
                ),
            });
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|source| ClientError::Http {
                host: self.host().to_string(),
                source,
            })?;
        Ok(Hijacked {
            io: TokioIo::new(upgraded),
            what: path.to_owned(),
        })
    }

    /// `POST /containers/{id}/attach?stream=1&stdout=1&stderr=1[&stdin=1][&detachKeys=…]`,
    /// hijacked; before a start it waits for the start, so nothing of the output is missed.
    /// `detach_keys` in Docker's notation (`ctrl-p,ctrl-q`): the daemon ends the attach when
    /// they are typed and leaves the container running.
    pub async fn container_attach(
        &self,
        id: &str,
        stdin: bool,
        detach_keys: Option<&str>,
    ) -> Result<Hijacked, ClientError> {
        let mut pairs = vec![("stream", "1"), ("stdout", "1"), ("stderr", "1")];
        if stdin {
            pairs.push(("stdin", "1"));
        }
        if let Some(keys) = detach_keys {
            pairs.push(("detachKeys", keys));
        }
        let path = format!("/containers/{}/attach{}", segment(id), query(&pairs));
        self.hijack(&path, empty()).await
    }

    /// `POST /containers/{id}/resize?h=&w=`.
    pub async fn container_resize(
        &self,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), ClientError> {
        let path = format!(
            "/containers/{}/resize{}",
            segment(id),
            query(&[("h", &rows.to_string()), ("w", &cols.to_string())])
        );
        self.call(Method::POST, &path, empty()).await.map(|_| ())
    }

    /// `POST /containers/{id}/exec` with `body` (an `ExecConfig`: `Cmd`, `Env`, `Tty`,
    /// `AttachStdin`, …); the exec instance's ID.
    pub async fn exec_create<B: Serialize>(
        &self,
        container: &str,
        body: &B,
    ) -> Result<String, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| ClientError::Protocol {
            what: "exec create".into(),
            reason: e.to_string(),
        })?;
        let created: ExecCreated = self
            .json(
                Method::POST,
                &format!("/containers/{}/exec", segment(container)),
                full(body),
            )
            .await?;
        Ok(created.id)
    }

    /// `POST /exec/{id}/start`, hijacked: the process starts once the connection is upgraded.
    pub async fn exec_start(&self, exec: &str, tty: bool) -> Result<Hijacked, ClientError> {
        let body = serde_json::json!({ "Detach": false, "Tty": tty }).to_string();
        self.hijack(&format!("/exec/{}/start", segment(exec)), full(body))
            .await
    }

    /// `POST /exec/{id}/resize?h=&w=`.
    pub async fn exec_resize(&self, exec: &str, rows: u16, cols: u16) -> Result<(), ClientError> {
        let path = format!(
            "/exec/{}/resize{}",
            segment(exec),
            query(&[("h", &rows.to_string()), ("w", &cols.to_string())])
        );
        self.call(Method::POST, &path, empty()).await.map(|_| ())
    }

    /// The exit code of an exec instance, once its process ended: `GET /exec/{id}/json`,
    /// asked again for up to 5 s (the output can end a moment before the code is recorded).
    pub async fn exec_exit_code(&self, exec: &str) -> Result<i64, ClientError> {
        let path = format!("/exec/{}/json", segment(exec));
        for _ in 0..100 {
            let inspected: serde_json::Value = self.json(Method::GET, &path, empty()).await?;
            if let Some(code) = inspected["ExitCode"].as_i64()
                && !inspected["Running"].as_bool().unwrap_or(false)
            {
                return Ok(code);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Err(ClientError::Protocol {
            what: path,
            reason: "the exec's output ended but no exit code was recorded".into(),
        })
    }
}

impl Hijacked {
    /// Sends what arrives on `input` (until it closes, then shuts the write side) and passes
    /// the output to `on` (raw with `tty`, else demultiplexed) until the daemon ends it.
    pub async fn relay(
        self,
        tty: bool,
        input: Option<mpsc::Receiver<Bytes>>,
        on: &mut dyn FnMut(Output, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        let (mut reader, mut writer) = tokio::io::split(self.io);
        let send = async move {
            if let Some(mut input) = input {
                while let Some(chunk) = input.recv().await {
                    if writer.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = writer.shutdown().await;
            }
            // Done sending; the output decides when the relay ends.
            std::future::pending::<()>().await;
        };
        let what = self.what;
        let receive = async move {
            let mut demux = Demux::default();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|source| ClientError::Output {
                        what: "the process's output",
                        source,
                    })?;
                if n == 0 {
                    break;
                }
                if tty {
                    on(Output::Stdout, &buf[..n]).map_err(|source| ClientError::Output {
                        what: "the process's output",
                        source,
                    })?;
                } else {
                    demux.push(&buf[..n], on)?;
                }
            }
            if demux.leftover() > 0 {
                return Err(ClientError::Protocol {
                    what,
                    reason: "the output ended in the middle of a frame".into(),
                });
            }
            Ok(())
        };
        tokio::select! {
            result = receive => result,
            () = send => Ok(()),
        }
    }
}
