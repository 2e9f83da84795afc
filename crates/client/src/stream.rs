//! Reading the daemon's two kinds of streamed answers as they arrive: JSON message streams
//! (build, pull, push: one object per line) and multiplexed output (logs of a container
//! without a tty: 8-byte frame headers saying stdout or stderr and the length).

use bytes::{Buf, BytesMut};
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::error::ClientError;

/// One line of a JSON message stream (`jsonmessage.JSONMessage` in moby's terms).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct JsonMessage {
    /// Build output: `Step 1/3 : FROM busybox\n`, RUN output, `Successfully built …`.
    #[serde(default)]
    pub stream: Option<String>,
    /// Pull and push progress: `Pulling from …`, `Pull complete`, `Digest: …`.
    #[serde(default)]
    pub status: Option<String>,
    /// The layer (or tag) a status is about.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub progress: Option<String>,
    #[serde(default, rename = "errorDetail")]
    pub error_detail: Option<ErrorDetail>,
    /// The legacy error text, sent beside `errorDetail`.
    #[serde(default)]
    pub error: Option<String>,
    /// Results: a build's `{"ID": …}`, a push's `{"Tag","Digest","Size"}`.
    #[serde(default)]
    pub aux: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: Option<i64>,
    #[serde(default)]
    pub message: String,
}

impl JsonMessage {
    /// The error this line carries, if it is an error line.
    pub fn as_error(&self) -> Option<ClientError> {
        let code = self.error_detail.as_ref().and_then(|d| d.code);
        let message = match (&self.error_detail, &self.error) {
            (Some(detail), _) if !detail.message.is_empty() => detail.message.clone(),
            (_, Some(legacy)) => legacy.clone(),
            (Some(_), None) => "the daemon reported an error without a message".to_owned(),
            (None, None) => return None,
        };
        Some(ClientError::Stream { message, code })
    }
}

/// Which of a container's outputs a chunk of its log belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
}

fn http_error(what: &str) -> impl Fn(hyper::Error) -> ClientError + '_ {
    move |e| ClientError::Protocol {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

/// Calls `on` with each message of a JSON message stream as it arrives, and fails with the
/// first in-band error (after `on` has seen it). A stream cut short without a final line is
/// not an error here: each operation checks it got the result it needs.
pub(crate) async fn json_messages(
    what: &str,
    response: Response<Incoming>,
    on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(http_error(what))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(end + 1);
            message_line(what, &line, on)?;
        }
    }
    message_line(what, &buf, on)
}

fn message_line(
    what: &str,
    line: &[u8],
    on: &mut dyn FnMut(&JsonMessage) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let message: JsonMessage = serde_json::from_slice(line).map_err(|e| ClientError::Protocol {
        what: what.to_owned(),
        reason: format!("{e}: {}", String::from_utf8_lossy(line).trim_end()),
    })?;
    on(&message)?;
    match message.as_error() {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Splits Docker's multiplexed output: each frame is `[stream, 0, 0, 0, len (u32 BE)]` then
/// `len` bytes; stream 1 is stdout, 2 stderr (0, stdin, is written to stdout as the docker
/// CLI does), 3 an error of the daemon's, which ends the stream.
#[derive(Debug, Default)]
pub(crate) struct Demux {
    buf: BytesMut,
}

impl Demux {
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        on: &mut dyn FnMut(Output, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), ClientError> {
        self.buf.extend_from_slice(data);
        loop {
            if self.buf.len() < 8 {
                return Ok(());
            }
            let len =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                return Ok(());
            }
            let kind = self.buf[0];
            self.buf.advance(8);
            let payload = self.buf.split_to(len);
            let output = match kind {
                0 | 1 => Output::Stdout,
                2 => Output::Stderr,
                3 => {
                    return Err(ClientError::Stream {
                        message: String::from_utf8_lossy(&payload).trim_end().to_owned(),
                        code: None,
                    });
                }
                other => {
                    return Err(ClientError::Protocol {
                        what: "container output".into(),
                        reason: format!("frame of unknown stream {other}"),
                    });
                }
            };
            on(output, &payload).map_err(|source| ClientError::Output {
                what: "the container's output",
                source,
            })?;
        }
    }

    /// Bytes of a frame the stream ended in the middle of.
    pub(crate) fn leftover(&self) -> usize {
        self.buf.len()
    }
}

/// Passes a container's output to `on` as it arrives: demultiplexed, or (a container with a
/// tty, whose output is one raw stream) all as stdout.
pub(crate) async fn output(
    what: &str,
    response: Response<Incoming>,
    tty: bool,
    on: &mut dyn FnMut(Output, &[u8]) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    let mut body = response.into_body();
    let mut demux = Demux::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(http_error(what))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if tty {
            on(Output::Stdout, &data).map_err(|source| ClientError::Output {
                what: "the container's output",
                source,
            })?;
        } else {
            demux.push(&data, on)?;
        }
    }
    if demux.leftover() > 0 {
        return Err(ClientError::Protocol {
            what: what.to_owned(),
            reason: "the output ended in the middle of a frame".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, data: &[u8]) -> Vec<u8> {
        let mut f = vec![kind, 0, 0, 0];
        f.extend_from_slice(&(data.len() as u32).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    #[test]
    fn frames_split_anywhere_are_put_back_together() {
        let mut wire = frame(1, b"out\n");
        wire.extend(frame(2, b"err\n"));
        wire.extend(frame(1, b""));
        wire.extend(frame(1, b"more"));
        for cut in 0..wire.len() {
            let mut got: Vec<(Output, Vec<u8>)> = Vec::new();
            let mut demux = Demux::default();
            let mut on = |o: Output, d: &[u8]| {
                if !d.is_empty() {
                    got.push((o, d.to_vec()));
                }
                Ok(())
            };
            demux.push(&wire[..cut], &mut on).unwrap();
            demux.push(&wire[cut..], &mut on).unwrap();
            assert_eq!(demux.leftover(), 0);
            assert_eq!(
                got,
                [
                    (Output::Stdout, b"out\n".to_vec()),
                    (Output::Stderr, b"err\n".to_vec()),
                    (Output::Stdout, b"more".to_vec())
                ],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_daemon_error_frame_ends_the_stream() {
        let mut demux = Demux::default();
        let err = demux
            .push(&frame(3, b"container gone\n"), &mut |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(err.to_string(), "container gone");
    }

    #[test]
    fn error_lines_become_errors_with_their_code() {
        let line: JsonMessage = serde_json::from_str(
            r#"{"errorDetail":{"code":2,"message":"The command 'false' returned a non-zero code: 2"},"error":"The command 'false' returned a non-zero code: 2"}"#,
        )
        .unwrap();
        let err = line.as_error().unwrap();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().starts_with("The command 'false'"));
        let legacy: JsonMessage = serde_json::from_str(r#"{"error":"boom"}"#).unwrap();
        assert_eq!(legacy.as_error().unwrap().to_string(), "boom");
        let fine: JsonMessage =
            serde_json::from_str(r#"{"stream":"Step 1/1 : FROM x\n"}"#).unwrap();
        assert!(fine.as_error().is_none());
    }

    #[test]
    fn lines_are_checked_one_by_one() {
        let mut seen = 0;
        let mut on = |_: &JsonMessage| {
            seen += 1;
            Ok(())
        };
        message_line("build", b"  \n", &mut on).unwrap();
        let err = message_line("build", b"{not json\n", &mut on).unwrap_err();
        assert!(err.to_string().contains("build"), "{err}");
        message_line("build", b"{\"stream\":\"x\"}", &mut on).unwrap();
        assert_eq!(seen, 1);
    }
}
