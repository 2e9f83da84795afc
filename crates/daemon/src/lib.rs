//! `kiln serve`: Docker's Engine API (version 1.41, down to 1.24) on UNIX sockets (and TCP with
//! mutual TLS only), so the docker CLI, docker-py and compose drive kiln.
//!
//! The daemon is a thin layer: routing, wire formats and HTTP statuses here, every operation
//! a call into the libraries the CLI uses (`kiln_images` for images, `kiln_solve::Engine` for
//! builds, `kiln_export` for archives), on the same store, so an image built through the API is
//! the CLI's too. Library errors become statuses through their `kind()` (`error.rs`).
//!
//! HTTP is hyper 1.x's HTTP/1 server driven by hand (`serve_connection` per accepted socket)
//! rather than a framework: the Engine API needs exactly what hyper gives at that level — a
//! header read timeout and size limit, chunked streaming bodies whose drop tells us the client
//! left, and connection upgrades for attach/exec — and the routing is a match on
//! path segments because image names contain `/` and `:`, which path routers split on. hyper
//! and hyper-util were already in the build through reqwest.

#![deny(clippy::print_stdout, clippy::print_stderr)]
// `GET /info` is one big `json!` literal, as dockerd's `SystemInfo` is one big object.
#![recursion_limit = "256"]

mod build;
mod containers;
pub mod error;
pub mod events;
mod exec;
mod images;
pub mod listen;
mod networks;
mod prune;
mod query;
mod router;
mod stream;
mod system;
pub mod tls;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

pub use containers::start_restartable;
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
            max_header_bytes: router::MAX_HEAD_BYTES,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The state every request sees: the engine (store, registry client, runtime) and the events.
#[derive(Debug)]
pub struct Daemon {
    pub engine: Arc<kiln_solve::Engine>,
    pub events: events::EventBus,
    /// Attaches waiting for their container to start.
    attaches: containers::PendingAttaches,
    /// Exit codes of containers the daemon started, for waits begun before the start.
    exits: containers::Exits,
    /// What the daemon keeps of exec instances between their requests.
    execs: exec::Execs,
    /// Set when the daemon is stopping: open event streams end.
    stopping: watch::Sender<bool>,
}

impl Daemon {
    pub fn new(engine: kiln_solve::Engine) -> Arc<Daemon> {
        Arc::new(Daemon {
            engine: Arc::new(engine),
            events: events::EventBus::default(),
            attaches: containers::PendingAttaches::default(),
            exits: containers::Exits::default(),
            execs: exec::Execs::default(),
            stopping: watch::channel(false).0,
        })
    }

    pub fn store(&self) -> &kiln_store::Store {
        &self.engine.store
    }
}

/// A bound listener: a UNIX socket, or TCP whose clients must pass mutual TLS.
#[derive(Debug)]
pub enum Listener {
    Unix(std::os::unix::net::UnixListener),
    Tcp(std::net::TcpListener, Arc<rustls::ServerConfig>),
}

impl Listener {
    /// Binds what `host` names; TCP needs the TLS configuration.
    pub fn bind(
        host: &listen::Host,
        tls: Option<&Arc<rustls::ServerConfig>>,
    ) -> Result<Listener, DaemonError> {
        match host {
            listen::Host::Unix(path) => listen::bind_unix(path).map(Listener::Unix),
            listen::Host::Tcp(addr) => {
                let tls = tls.ok_or_else(|| DaemonError::PlainTcp { host: addr.clone() })?;
                let listener =
                    std::net::TcpListener::bind(addr).map_err(|source| DaemonError::Tcp {
                        addr: addr.clone(),
                        source,
                    })?;
                Ok(Listener::Tcp(listener, Arc::clone(tls)))
            }
        }
    }
}

/// Serves `listeners` until `shutdown` completes, then stops accepting, lets in-flight
/// requests finish for [`Options::shutdown_grace`] (event streams end at once) and cancels the
/// rest by dropping them (a dropped build or pull cancels itself).
pub async fn serve(
    daemon: Arc<Daemon>,
    listeners: Vec<Listener>,
    options: Options,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut accepting = tokio::task::JoinSet::new();
    let (conn_done_tx, mut conn_done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for listener in listeners {
        let ctx = Accepting {
            daemon: Arc::clone(&daemon),
            options: options.clone(),
            done: conn_done_tx.clone(),
            connections: Arc::clone(&connections),
        };
        match listener {
            Listener::Unix(std_listener) => {
                let path = std_listener
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(ToOwned::to_owned))
                    .unwrap_or_default();
                let socket_err = |source| DaemonError::Socket {
                    path: path.clone(),
                    source,
                };
                std_listener.set_nonblocking(true).map_err(socket_err)?;
                let listener =
                    tokio::net::UnixListener::from_std(std_listener).map_err(socket_err)?;
                accepting.spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((socket, _)) => ctx.spawn(async move { Some(socket) }),
                            // EMFILE and the like: back off instead of spinning.
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                });
            }
            Listener::Tcp(std_listener, tls) => {
                let addr = std_listener
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let tcp_err = |source| DaemonError::Tcp {
                    addr: addr.clone(),
                    source,
                };
                std_listener.set_nonblocking(true).map_err(tcp_err)?;
                let listener = tokio::net::TcpListener::from_std(std_listener).map_err(tcp_err)?;
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                accepting.spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((socket, _)) => {
                                let acceptor = acceptor.clone();
                                let timeout = ctx.options.header_timeout;
                                // The handshake runs on the connection's task, bounded like a
                                // request head: a client without the right certificate, or
                                // one that never finishes, is dropped there.
                                ctx.spawn(async move {
                                    tokio::time::timeout(timeout, acceptor.accept(socket))
                                        .await
                                        .ok()
                                        .and_then(Result::ok)
                                });
                            }
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                });
            }
        }
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

/// What an accept loop hands each connection.
struct Accepting {
    daemon: Arc<Daemon>,
    options: Options,
    done: tokio::sync::mpsc::UnboundedSender<()>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Accepting {
    /// Serves the stream `open` yields (after a TLS handshake, say) on a task of its own,
    /// counted until it ends.
    fn spawn<S, F>(&self, open: F)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        F: std::future::Future<Output = Option<S>> + Send + 'static,
    {
        let daemon = Arc::clone(&self.daemon);
        let done = self.done.clone();
        let options = self.options.clone();
        let connections = Arc::clone(&self.connections);
        connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::spawn(async move {
            if let Some(stream) = open.await {
                serve_connection(daemon, stream, &options).await;
            }
            connections.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let _ = done.send(());
        });
    }
}

/// One client connection: HTTP/1.1 with keep-alive, until the client closes it or the daemon
/// stops (then the request in flight finishes and the connection closes).
async fn serve_connection<S>(daemon: Arc<Daemon>, socket: S, options: &Options)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
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
    // Upgrades: attach and exec start hijack the connection.
    let conn = builder
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stopping.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}
