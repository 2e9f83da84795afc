//! One HTTP/1.1 exchange with the daemon: connect (UNIX socket, or TCP and a TLS handshake),
//! send the request, hand back the response, or an [`ClientError::Api`] for an error status.
//!
//! A connection per request, as `docker` does over a UNIX socket in practice: the CLI makes a
//! handful of calls per command, so keeping connections alive would save a connect() or a
//! handshake at most, and the streams (build, logs -f) hold their connection anyway.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::ClientError;
use crate::host::{Host, TlsFiles, client_config, server_name};

/// The API version every path is sent under (the daemon's; dockerd accepts it too).
pub const API_VERSION: &str = "1.41";

/// A request body: whole, or streamed (a build context) with an I/O error ending it early.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A request body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An Engine API client for one daemon.
#[derive(Clone)]
pub struct Client {
    host: Host,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Client {
    /// A client for `host`. A `tcp://` host needs `tls` (plain TCP is refused before anything
    /// is sent); for a UNIX socket the TLS files are not used, as with `docker -H unix://`.
    pub fn new(host: Host, tls: Option<&TlsFiles>) -> Result<Client, ClientError> {
        let tls = match (&host, tls) {
            (Host::Tcp { .. }, None) => {
                return Err(ClientError::PlainTcp {
                    host: host.to_string(),
                });
            }
            (Host::Tcp { host: name, .. }, Some(files)) => {
                Some((client_config(files)?, server_name(name)?))
            }
            (Host::Unix(_), _) => None,
        };
        Ok(Client { host, tls })
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let connect_err = |source| ClientError::Connect {
            host: self.host.to_string(),
            source,
        };
        match &self.host {
            Host::Unix(path) => Ok(Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(connect_err)?,
            )),
            Host::Tcp { host, port } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(connect_err)?;
                let _ = tcp.set_nodelay(true);
                let (config, name) = self.tls.clone().ok_or_else(|| ClientError::PlainTcp {
                    host: self.host.to_string(),
                })?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|source| ClientError::Handshake {
                        host: self.host.to_string(),
                        source,
                    })?;
                Ok(Box::new(tls))
            }
        }
    }

    /// Sends `method path` (`path` with its query, without the version prefix) and returns
    /// the response when its status is below 400; an error status becomes
    /// [`ClientError::Api`] with the body's `message`.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        let http_err = |source: hyper::Error| match tls_alert(&source) {
            Some(alert) => ClientError::Refused {
                host: self.host.to_string(),
                alert,
            },
            None => ClientError::Http {
                host: self.host.to_string(),
                source,
            },
        };
        let io = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http_err)?;
        // The connection is driven on its own task until the response body is read out (or,
        // upgraded, handed over: attach and exec).
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        let authority = match &self.host {
            Host::Unix(_) => "api.moby.localhost".to_owned(),
            Host::Tcp { host, port } => format!("{host}:{port}"),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/v{API_VERSION}{path}"))
            .header(hyper::header::HOST, authority)
            .header(
                hyper::header::USER_AGENT,
                concat!("kiln/", env!("CARGO_PKG_VERSION")),
            );
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request.body(body).map_err(|e| ClientError::Protocol {
            what: path.to_owned(),
            reason: e.to_string(),
        })?;
        let response = sender.send_request(request).await.map_err(http_err)?;
        if response.status().as_u16() < 400 {
            return Ok(response);
        }
        let status = response.status();
        let bytes = self.read_body(response).await?;
        Err(api_error(status, &bytes))
    }

    /// The whole body of a response.
    pub(crate) async fn read_body(
        &self,
        response: Response<Incoming>,
    ) -> Result<Bytes, ClientError> {
        Ok(response
            .into_body()
            .collect()
            .await
            .map_err(|source| ClientError::Http {
                host: self.host.to_string(),
                source,
            })?
            .to_bytes())
    }

    /// Sends a request and decodes its JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let response = self
            .send(
                method,
                path,
                &[("Content-Type", "application/json".to_owned())],
                body,
            )
            .await?;
        let bytes = self.read_body(response).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            what: path.to_owned(),
            reason: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    /// Sends a request whose answer is only its status; `304 Not Modified` (start of a running
    /// container, stop of a stopped one) gives `false`.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<bool, ClientError> {
        let response = self.send(method, path, &[], body).await?;
        let changed = response.status() != StatusCode::NOT_MODIFIED;
        self.read_body(response).await?;
        Ok(changed)
    }

    /// `GET /_ping`: whether the daemon answers at all.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.call(Method::GET, "/_ping", empty()).await.map(|_| ())
    }
}

/// The TLS alert the daemon ended the connection with, if that is what `e` is.
fn tls_alert(e: &hyper::Error) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        // An io::Error's `source()` skips the error it wraps, so that is looked at first.
        let inner = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        for candidate in [Some(c), inner].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) =
                candidate.downcast_ref::<rustls::Error>()
            {
                return Some(format!("received fatal alert: {alert:?}"));
            }
        }
        cause = c.source();
    }
    None
}

/// The error an error status stands for: the `message` of a JSON body verbatim, else the
/// body's text, else the status's reason.
fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    let message = match serde_json::from_slice::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_owned()
            } else {
                text
            }
        }
    };
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// A query string of these pairs (values percent-encoded), `?` included; empty for none.
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let mut q = form_urlencoded::Serializer::for_suffix(String::from("?"), 1);
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// A path segment (an image or container name) percent-encoded, `/` included: dockerd takes
/// `images/{name}/json` with the name's slashes as they are, so only what would break the
/// path or query is escaped.
pub(crate) fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'/'
            | b':'
            | b'@' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_surfaced_verbatim() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            br#"{"message":"No such image: nothere:1"}"#,
        );
        assert_eq!(e.to_string(), "No such image: nothere:1");
        let plain = api_error(StatusCode::BAD_GATEWAY, b"upstream down\n");
        assert_eq!(plain.to_string(), "upstream down");
        let empty = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(empty.to_string(), "Service Unavailable");
    }

    #[test]
    fn names_and_queries_are_escaped() {
        assert_eq!(segment("127.0.0.1:5000/app:1"), "127.0.0.1:5000/app:1");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
        assert_eq!(query(&[]), "");
        assert_eq!(query(&[("t", "a b"), ("q", "1")]), "?t=a+b&q=1");
    }

    #[test]
    fn plain_tcp_is_refused_before_connecting() {
        let host = Host::parse("tcp://127.0.0.1:1").unwrap();
        let err = Client::new(host, None).unwrap_err();
        assert!(matches!(err, ClientError::PlainTcp { .. }));
        assert!(err.to_string().contains("--tlsverify"), "{err}");
    }
}
