//! Response bodies: whole JSON documents, and the chunked streams dockerd writes for build,
//! pull, push, load and events.
//!
//! The key decision is when a stream commits to `200 OK`. dockerd answers a real error status
//! for whatever fails before its first flush and writes later errors in-band
//! (`errorDetail`), and clients depend on it (a pull of a missing image must be a 404,
//! docker-py expects an HTTP error for an empty Dockerfile). [`json_stream`] therefore holds
//! the response until the producer emits its first line or finishes: a producer emits nothing
//! until it has something real to report. The producer runs on a task of its own and is
//! dropped — which cancels a build or a pull — as soon as the client is gone.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;

pub type Body = BoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e: Infallible| match e {})
        .boxed()
}

pub fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = status;
    response
}

pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"message": ...}` with the error's status, `application/json` exactly (the Go client reads
/// the body as JSON only then).
pub fn error(err: &ApiError) -> Response<Body> {
    json(err.status, &json!({ "message": err.message }))
}

/// A line of a JSON message stream: an error, as both `errorDetail` (the Go CLI reads it) and
/// `error` (docker-py's build reads that one).
pub fn error_line(err: &ApiError) -> Value {
    let mut detail = json!({ "message": err.message });
    if let Some(code) = err.code {
        detail["code"] = json!(code);
    }
    json!({ "errorDetail": detail, "error": err.message })
}

enum Item {
    Line(Bytes),
    End(Result<(), ApiError>),
}

/// Where a streaming producer writes its lines. Cloneable and usable from any thread (build
/// progress arrives on the engine's stage threads).
#[derive(Debug, Clone)]
pub struct Emitter {
    tx: mpsc::UnboundedSender<Item>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Line(_) => f.write_str("Line"),
            Item::End(r) => write!(f, "End({r:?})"),
        }
    }
}

impl Emitter {
    /// Sends one JSON object as a line (`\r\n`-terminated, as dockerd's stream formatter).
    pub fn send(&self, value: &Value) {
        let mut bytes = serde_json::to_vec(value).unwrap_or_default();
        bytes.extend_from_slice(b"\r\n");
        // A closed channel means the client is gone; the producer is being dropped anyway.
        let _ = self.tx.send(Item::Line(bytes.into()));
    }

    /// `{"stream": text}`.
    pub fn stream(&self, text: impl Into<String>) {
        self.send(&json!({ "stream": text.into() }));
    }

    /// `{"status": text}` with an optional `id`.
    pub fn status(&self, id: Option<&str>, text: impl Into<String>) {
        match id {
            Some(id) => self.send(&json!({ "status": text.into(), "id": id })),
            None => self.send(&json!({ "status": text.into() })),
        }
    }
}

/// Runs `produce` and answers with its lines as a chunked `application/json` stream, or with
/// its error's status if it fails before sending a line (see the module docs).
pub async fn json_stream<F, Fut>(produce: F) -> Response<Body>
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    stream_lines(produce, false).await
}

/// Like [`json_stream`], but committed to `200` at once, every error in-band: `images/load`,
/// where docker-py raises its `ImageLoadError` only from an `errorDetail` line.
pub async fn json_stream_in_band<F, Fut>(produce: F) -> Response<Body>
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    stream_lines(produce, true).await
}

async fn stream_lines<F, Fut>(produce: F, in_band: bool) -> Response<Body>
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let emitter = Emitter { tx: tx.clone() };
    let work = produce(emitter);
    tokio::spawn(async move {
        let result = tokio::select! {
            result = work => result,
            // The response (and its receiver) was dropped: the client went away. Returning
            // drops `work`, which cancels what it was doing.
            () = tx.closed() => return,
        };
        let _ = tx.send(Item::End(result));
    });
    let first = if in_band {
        None
    } else {
        match rx.recv().await {
            Some(Item::End(Err(e))) => return error(&e),
            Some(item) => Some(item),
            None => return error(&ApiError::internal("the operation ended without a result")),
        }
    };
    let lines =
        futures_util::stream::unfold((first, rx, false), |(pending, mut rx, done)| async move {
            if done {
                return None;
            }
            let item = match pending {
                Some(item) => item,
                None => rx.recv().await?,
            };
            match item {
                Item::Line(bytes) => Some((Ok(Frame::data(bytes)), (None, rx, false))),
                Item::End(Ok(())) => None,
                Item::End(Err(e)) => {
                    let mut bytes = serde_json::to_vec(&error_line(&e)).unwrap_or_default();
                    bytes.extend_from_slice(b"\r\n");
                    Some((Ok(Frame::data(Bytes::from(bytes))), (None, rx, true)))
                }
            }
        });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(lines)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Like [`json_stream`], but the `200` headers go out at once and the stream carries only
/// lines (`/events`: clients wait for the headers before doing what they want events of).
pub fn live_json_stream<F, Fut>(produce: F) -> Response<Body>
where
    F: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded_channel();
    let work = produce(Emitter { tx: tx.clone() });
    tokio::spawn(async move {
        tokio::select! {
            () = work => {}
            () = tx.closed() => {}
        }
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        match rx.recv().await? {
            Item::Line(bytes) => Some((Ok(Frame::data(bytes)), rx)),
            Item::End(_) => None,
        }
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(lines)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// A raw byte stream (an image archive), fed from blocking code through [`ChannelWriter`].
pub fn byte_stream(
    content_type: &'static str,
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> Response<Body> {
    let frames = tokio_stream_of(rx).map(|chunk| chunk.map(Frame::data));
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

fn tokio_stream_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

/// A `Write` for blocking code whose bytes become chunks of a response. Once the client is
/// gone, writes fail with `BrokenPipe`, which stops the writer.
#[derive(Debug)]
pub struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

/// Bytes gathered before a chunk is sent.
const CHUNK: usize = 256 * 1024;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<std::io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }

    /// Ends the stream with an error the client sees as a broken transfer.
    pub fn fail(self, message: String) {
        let _ = self.tx.blocking_send(Err(std::io::Error::other(message)));
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buf()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn body_text(response: Response<Body>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn an_error_before_the_first_line_is_a_status() {
        rt().block_on(async {
            let r =
                json_stream(|_out| async { Err(ApiError::not_found("No such image: x")) }).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(body_text(r).await, "{\"message\":\"No such image: x\"}\n");
        });
    }

    #[test]
    fn an_error_after_a_line_is_in_band() {
        rt().block_on(async {
            let r = json_stream(|out| async move {
                out.stream("Step 1/1 : RUN false\n");
                Err(ApiError {
                    code: Some(1),
                    ..ApiError::bad_request("The command 'false' returned a non-zero code: 1")
                })
            })
            .await;
            assert_eq!(r.status(), StatusCode::OK);
            let text = body_text(r).await;
            let lines: Vec<Value> = text
                .split("\r\n")
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(lines[0]["stream"], "Step 1/1 : RUN false\n");
            assert_eq!(lines[1]["errorDetail"]["code"], 1);
            assert_eq!(lines[1]["error"], lines[1]["errorDetail"]["message"]);
        });
    }

    #[test]
    fn in_band_streams_commit_at_once() {
        rt().block_on(async {
            let r = json_stream_in_band(|_out| async { Err(ApiError::bad_request("bad archive")) })
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            assert!(
                body_text(r)
                    .await
                    .contains("\"errorDetail\":{\"message\":\"bad archive\"}")
            );
        });
    }

    #[test]
    fn a_dropped_response_drops_the_producer() {
        rt().block_on(async {
            let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
            struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    let _ = self.0.take().map(|tx| tx.send(()));
                }
            }
            let r = json_stream(|out| async move {
                let _guard = Guard(Some(dropped_tx));
                out.stream("started\n");
                std::future::pending::<()>().await;
                Ok(())
            })
            .await;
            drop(r);
            tokio::time::timeout(std::time::Duration::from_secs(5), dropped_rx)
                .await
                .expect("the producer outlived its response")
                .unwrap();
        });
    }
}
