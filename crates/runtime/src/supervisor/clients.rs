//! The attached clients of a supervised container: the attach socket's connections, the
//! output sent to each (framed unless the container has a terminal), and their input into the
//! container's stdin. Shared by every run of the container, so a restart keeps its clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::attach::{AttachRequest, StreamType};
use crate::pty::set_window_size;

/// A client that takes longer than this to accept output is dropped, so one stuck client
/// cannot stop the output of the others (or the log).
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The output side of one attached client.
#[derive(Debug)]
struct Client {
    /// Which connection it is (a detaching client removes itself).
    id: u64,
    socket: UnixStream,
    stdout: bool,
    stderr: bool,
}

/// What the supervisor shares between its threads.
#[derive(Debug)]
pub(super) struct Streams {
    pub(super) tty: bool,
    pub(super) stdin_once: bool,
    clients: Mutex<Vec<Client>>,
    /// The container's stdin (a pipe, or the pty master), while it is open.
    pub(super) stdin: Mutex<Option<Box<dyn WriteDebug>>>,
    /// The pty master, for resize requests.
    pub(super) pty: Mutex<Option<std::fs::File>>,
    /// Clients accepted so far (an attach-first start waits for one); also their IDs.
    pub(super) accepted: Mutex<usize>,
    pub(super) accepted_changed: Condvar,
}

pub(super) trait WriteDebug: Write + Send + std::fmt::Debug {}
impl<T: Write + Send + std::fmt::Debug> WriteDebug for T {}

impl Streams {
    pub(super) fn new(tty: bool, stdin_once: bool) -> Streams {
        Streams {
            tty,
            stdin_once,
            clients: Mutex::new(Vec::new()),
            stdin: Mutex::new(None),
            pty: Mutex::new(None),
            accepted: Mutex::new(0),
            accepted_changed: Condvar::new(),
        }
    }

    /// Sends output to every client that asked for its stream, dropping clients that fail.
    pub(super) fn broadcast(&self, stream: StreamType, bytes: &[u8]) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients.retain_mut(|c| {
            let wanted = match stream {
                StreamType::Stderr => c.stderr,
                _ => c.stdout,
            };
            if !wanted {
                return true;
            }
            let sent = if self.tty {
                c.socket.write_all(bytes)
            } else {
                crate::attach::write_frame(&mut c.socket, stream, bytes)
            };
            sent.is_ok()
        });
    }

    pub(super) fn close_stdin(&self) {
        self.stdin.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Ends every client's connection (the output ended).
    pub(super) fn hang_up(&self) {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        for c in clients.drain(..) {
            let _ = c.socket.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Accepts clients until the process ends.
pub(super) fn serve(listener: UnixListener, streams: Arc<Streams>) {
    std::thread::spawn(move || {
        for socket in listener.incoming().flatten() {
            let streams = streams.clone();
            std::thread::spawn(move || {
                let _ = handle_client(socket, &streams);
            });
        }
    });
}

fn handle_client(socket: UnixStream, streams: &Streams) -> std::io::Result<()> {
    let mut reader = BufReader::new(socket.try_clone()?);
    let mut hello = String::new();
    reader.read_line(&mut hello)?;
    let request: AttachRequest = serde_json::from_str(&hello)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if let Some((rows, cols)) = request.resize {
        if let Some(master) = &*streams.pty.lock().unwrap_or_else(|e| e.into_inner()) {
            set_window_size(master, rows, cols);
        }
        return Ok(());
    }
    socket.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))?;
    // The client is in the list before it is counted, so a start that waited for it sends
    // it everything.
    let id = {
        let mut clients = streams.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut accepted = streams.accepted.lock().unwrap_or_else(|e| e.into_inner());
        *accepted += 1;
        clients.push(Client {
            id: *accepted as u64,
            socket: socket.try_clone()?,
            stdout: request.stdout,
            stderr: request.stderr,
        });
        *accepted as u64
    };
    streams.accepted_changed.notify_all();
    if !request.stdin {
        return Ok(());
    }
    // Detach keys are watched on a terminal's input only, as dockerd does.
    let mut detach = request
        .detach_keys
        .filter(|_| streams.tty)
        .map(|keys| keys.watch());
    // The client's input goes to the container's stdin until the client ends it.
    let mut buf = [0u8; 8192];
    let mut pass = Vec::with_capacity(buf.len());
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        pass.clear();
        let detached = match detach.as_mut() {
            Some(watch) => watch.feed(&buf[..n], &mut pass),
            None => {
                pass.extend_from_slice(&buf[..n]);
                false
            }
        };
        let mut stdin = streams.stdin.lock().unwrap_or_else(|e| e.into_inner());
        match stdin.as_mut() {
            Some(w) => {
                if w.write_all(&pass).and_then(|()| w.flush()).is_err() {
                    stdin.take();
                }
            }
            None => break,
        }
        drop(stdin);
        if detached {
            // This client goes; the container, its stdin and the other clients stay.
            streams
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|c| c.id != id);
            let _ = socket.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
    }
    if streams.stdin_once {
        streams.close_stdin();
    }
    Ok(())
}
