//! `kiln serve`: Docker's Engine API (version 1.41, down to 1.24) on UNIX sockets, so the
//! docker CLI, docker-py and compose drive kiln.
//!
//! The daemon is a thin layer: routing, wire formats and HTTP statuses here, every operation
//! a call into the libraries the CLI uses (`kiln_images` for images, `kiln_solve::Engine` for
//! builds, `kiln_export` for archives), on the same store, so an image built through the API is
//! the CLI's too. Library errors become statuses through their `kind()` (`error.rs`).
//!
//! HTTP is hyper 1.x's HTTP/1 server driven by hand (`serve_connection` per accepted socket)
//! rather than a framework: the Engine API needs exactly what hyper gives at that level — a
//! header read timeout and size limit, chunked streaming bodies whose drop tells us the client
//! left, and (next slice) connection upgrades for attach/exec — and the routing is a match on
//! path segments because image names contain `/` and `:`, which path routers split on. hyper
//! and hyper-util were already in the build through reqwest.

#![deny(clippy::print_stdout, clippy::print_stderr)]
// `GET /info` is one big `json!` literal, as dockerd's `SystemInfo` is one big object.
#![recursion_limit = "256"]

mod build;
pub mod error;
pub mod events;
mod images;
pub mod listen;
mod query;
mod router;
mod stream;
mod system;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use error::{ApiError, DaemonError};

/// The API version served, and the oldest one accepted.
pub const API_VERSION: &str = "1.41";
pub const MIN_API_VERSION: &str = "1.24";

/// What the daemon serves with.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a client may take to send a request's headers (slow clients are dropped).
    pub header_timeout: Duration,
    /// The largest request head accepted (hyper answers 431 beyond it).
    pub max_header_bytes: usize,
    /// How long in-flight requests may run on after SIGTERM before they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The state every request sees: the engine (store, registry client, runtime) and the events.
#[derive(Debug)]
pub struct Daemon {
    pub engine: Arc<kiln_solve::Engine>,
    pub events: events::EventBus,
    /// Set when the daemon is stopping: open event streams end.
    stopping: watch::Sender<bool>,
}

impl Daemon {
    pub fn new(engine: kiln_solve::Engine) -> Arc<Daemon> {
        Arc::new(Daemon {
            engine: Arc::new(engine),
            events: events::EventBus::default(),
            stopping: watch::channel(false).0,
        })
    }

    pub fn store(&self) -> &kiln_store::Store {
        &self.engine.store
    }
}

/// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish for [`Options::shutdown_grace`] (event streams end at once) and cancels the
/// rest by dropping them (a dropped build or pull cancels itself).
pub async fn serve(
    daemon: Arc<Daemon>,
    listeners: Vec<std::os::unix::net::UnixListener>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut accepting = tokio::task::JoinSet::new();
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for std_listener in listeners {
        let path = std_listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(ToOwned::to_owned))
            .unwrap_or_default();
        std_listener
            .set_nonblocking(true)
            .map_err(|source| DaemonError::Socket {
                path: path.clone(),
                source,
            })?;
        let listener =
            UnixListener::from_std(std_listener).map_err(|source| DaemonError::Socket {
                path: path.clone(),
                source,
            })?;
        let daemon = Arc::clone(&daemon);
        let options = options.clone();
        let done = conn_done_tx.clone();
        let connections = Arc::clone(&connections);
        accepting.spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    // EMFILE and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let daemon = Arc::clone(&daemon);
                let done = done.clone();
                let options = options.clone();
                let connections = Arc::clone(&connections);
                tokio::spawn(async move {
                    serve_connection(daemon, socket, &options).await;
                    connections.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = done.send(());
                });
            }
        });
    }
    shutdown.await;
    // Stop accepting: the listeners go with their tasks.
    accepting.abort_all();
    while accepting.join_next().await.is_some() {}
    let _ = daemon.stopping.send(true);
    let deadline = tokio::time::Instant::now() + options.shutdown_grace;
    while connections.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        if tokio::time::timeout_at(deadline, conn_done_rx.recv())
            .await
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// One client connection: HTTP/1.1 with keep-alive, until the client closes it or the daemon
/// stops (then the request in flight finishes and the connection closes).
async fn serve_connection(daemon: Arc<Daemon>, socket: tokio::net::UnixStream, options: &Options) {
    let mut stopping = daemon.stopping.subscribe();
    let service = {
        let daemon = Arc::clone(&daemon);
        hyper::service::service_fn(move |req| {
            let daemon = Arc::clone(&daemon);
            async move { Ok::<_, std::convert::Infallible>(router::handle(daemon, req).await) }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .max_buf_size(options.max_header_bytes.max(8192));
    let conn = builder.serve_connection(TokioIo::new(socket), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
