//! Attaching to a container: the supervisor serves `containers/<id>/attach.sock`, and any
//! process may connect to it, several at once (`kiln attach`, a foreground `kiln run`, and
//! later the Engine API's attach).
//!
//! The protocol: the client sends one JSON line ([`AttachRequest`]: which streams and the
//! detach keys, or a window size for a pty), then its stdin as raw bytes (shutting its write side down ends its input).
//! The supervisor sends the output the way Docker's attach does, so an API server can pass it
//! through unchanged: without a tty, frames of an 8-byte header (stream type 1 = stdout,
//! 2 = stderr, three zero bytes, the payload size as a big-endian u32) and the payload; with a
//! tty, the terminal's bytes raw. The supervisor closes the connection when the container's
//! output ends.
//!
//! Socket paths under the store easily pass the 108 bytes `sun_path` holds, so both sides
//! reach the socket through `/proc/self/fd/<dir fd>/attach.sock`, which is always short.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use kiln_store::{ContainerRecord, Store};
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};

pub const SOCKET_NAME: &str = "attach.sock";

/// What an attaching client asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdout: bool,
    #[serde(default)]
    pub stderr: bool,
    /// Instead of attaching: set the pty's window size (rows, columns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<(u16, u16)>,
    /// With a tty: the keys that end this client's attach and leave the container running
    /// (the supervisor then closes the connection without closing the container's stdin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detach_keys: Option<crate::detach::DetachKeys>,
}

impl AttachRequest {
    /// Output only (`kiln start -a`, `kiln attach --no-stdin`).
    pub fn output() -> Self {
        AttachRequest {
            stdout: true,
            stderr: true,
            ..AttachRequest::default()
        }
    }

    /// All three streams.
    pub fn all() -> Self {
        AttachRequest {
            stdin: true,
            ..AttachRequest::output()
        }
    }
}

/// Docker's stream types in frame headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// Writes one frame: the 8-byte header, then `payload`.
pub fn write_frame(out: &mut impl Write, stream: StreamType, payload: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.push(stream as u8);
    frame.extend_from_slice(&[0, 0, 0]);
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(payload);
    out.write_all(&frame)
}

/// Reads one frame; `None` at the end of the stream.
pub fn read_frame(input: &mut impl Read) -> io::Result<Option<(StreamType, Vec<u8>)>> {
    let mut header = [0u8; 8];
    match input.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let stream = match header[0] {
        0 => StreamType::Stdin,
        1 => StreamType::Stdout,
        2 => StreamType::Stderr,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("attach frame of unknown stream type {other}"),
            ));
        }
    };
    let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let mut payload = vec![0; size];
    input.read_exact(&mut payload)?;
    Ok(Some((stream, payload)))
}

/// The container directory, opened so its path can be given as `/proc/self/fd/N`.
fn short_path(store: &Store, id: &str) -> Result<(File, PathBuf)> {
    let dir_path = store.container_dir(id);
    let dir = File::open(&dir_path).map_err(RuntimeError::io(&dir_path))?;
    let path = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(SOCKET_NAME);
    Ok((dir, path))
}

/// The supervisor's listening socket (a stale one from an earlier run is replaced).
pub(crate) fn listen(store: &Store, id: &str) -> Result<UnixListener> {
    let (_dir, path) = short_path(store, id)?;
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).map_err(RuntimeError::io(store.container_dir(id).join(SOCKET_NAME)))
}

/// An attached client's connection.
#[derive(Debug)]
pub struct AttachStream {
    socket: UnixStream,
    /// Output is raw (a pty), not framed.
    pub tty: bool,
}

impl AttachStream {
    /// A handle to write the container's stdin with (its `shutdown` ends the input).
    pub fn input(&self) -> Result<UnixStream> {
        self.socket
            .try_clone()
            .map_err(RuntimeError::io(SOCKET_NAME))
    }

    /// Ends this client's input (the container's stdin closes too if it is `stdin_once`).
    pub fn close_input(&self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
    }

    /// The next piece of output and its stream; `None` once the container's output ended.
    /// With a tty everything is stdout.
    pub fn read_output(&mut self) -> io::Result<Option<(StreamType, Vec<u8>)>> {
        if !self.tty {
            return read_frame(&mut self.socket);
        }
        let mut buf = vec![0u8; 32 * 1024];
        let n = self.socket.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((StreamType::Stdout, buf)))
    }
}

fn open(
    store: &Store,
    record: &ContainerRecord,
    request: &AttachRequest,
) -> io::Result<UnixStream> {
    let (_dir, path) = short_path(store, &record.id).map_err(io::Error::other)?;
    let mut socket = UnixStream::connect(&path)?;
    let mut hello = serde_json::to_vec(request).map_err(io::Error::other)?;
    hello.push(b'\n');
    socket.write_all(&hello)?;
    Ok(socket)
}

/// Connects to a running container's supervisor.
pub(crate) fn connect(
    store: &Store,
    record: &ContainerRecord,
    request: &AttachRequest,
) -> Result<AttachStream> {
    let socket = open(store, record, request).map_err(RuntimeError::io(
        store.container_dir(&record.id).join(SOCKET_NAME),
    ))?;
    Ok(AttachStream {
        socket,
        tty: record.config.tty,
    })
}

/// Connects if the supervisor listens yet; `None` if it does not (no socket, or refused).
pub(crate) fn try_connect(
    store: &Store,
    record: &ContainerRecord,
    request: &AttachRequest,
) -> Result<Option<AttachStream>> {
    match open(store, record, request) {
        Ok(socket) => Ok(Some(AttachStream {
            socket,
            tty: record.config.tty,
        })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(RuntimeError::io(
            store.container_dir(&record.id).join(SOCKET_NAME),
        )(e)),
    }
}

/// Sets the window size of a running `-t` container's pty.
pub fn resize(store: &Store, record: &ContainerRecord, rows: u16, cols: u16) -> Result<()> {
    let request = AttachRequest {
        resize: Some((rows, cols)),
        ..AttachRequest::default()
    };
    let mut socket = open(store, record, &request).map_err(RuntimeError::io(
        store.container_dir(&record.id).join(SOCKET_NAME),
    ))?;
    // The supervisor closes the connection once the size is set.
    let _ = socket.read(&mut [0u8; 1]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_docker_headers() {
        let mut wire = Vec::new();
        write_frame(&mut wire, StreamType::Stdout, b"hello").unwrap();
        write_frame(&mut wire, StreamType::Stderr, b"").unwrap();
        assert_eq!(&wire[..8], &[1, 0, 0, 0, 0, 0, 0, 5]);
        let mut input = &wire[..];
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Some((StreamType::Stdout, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut input).unwrap(),
            Some((StreamType::Stderr, Vec::new()))
        );
        assert_eq!(read_frame(&mut input).unwrap(), None);
        let mut bad = &[7u8, 0, 0, 0, 0, 0, 0, 0][..];
        assert!(read_frame(&mut bad).is_err());
        // A frame cut short is an error, not a silent end.
        let mut cut = &wire[..10];
        assert!(read_frame(&mut cut).is_err());
    }

    #[test]
    fn requests_are_one_json_line() {
        let text = serde_json::to_string(&AttachRequest::all()).unwrap();
        assert_eq!(text, r#"{"stdin":true,"stdout":true,"stderr":true}"#);
        let resize: AttachRequest = serde_json::from_str(r#"{"resize":[24,80]}"#).unwrap();
        assert_eq!(resize.resize, Some((24, 80)));
        assert!(!resize.stdout);
    }
}
