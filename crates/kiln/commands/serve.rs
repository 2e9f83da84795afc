//! `kiln serve`: opens the store and the engine as every command does, binds the sockets, and
//! hands them to `kiln_daemon`, which owns everything about the API. SIGTERM and SIGINT stop
//! it: no new connections, in-flight requests finish or are cancelled, exit 0.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::Env;
use crate::cli::{GlobalOpts, ServeArgs};

/// Set by rootless kiln before it re-executes itself in its user namespace, where it would
/// otherwise pick root's socket path.
pub const DEFAULT_HOST_ENV: &str = "KILN_SERVE_DEFAULT_HOST";

pub fn serve(global: &GlobalOpts, args: &ServeArgs) -> Result<ExitCode> {
    let hosts = if args.hosts.is_empty() {
        vec![
            std::env::var(DEFAULT_HOST_ENV)
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(kiln_daemon::listen::default_host),
        ]
    } else {
        args.hosts.clone()
    };
    let tls = if args.tlsverify {
        let (Some(ca), Some(cert), Some(key)) = (&args.tlscacert, &args.tlscert, &args.tlskey)
        else {
            anyhow::bail!("--tlsverify needs --tlscacert, --tlscert and --tlskey");
        };
        Some(kiln_daemon::tls::server_config(
            &kiln_daemon::tls::TlsFiles {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            },
        )?)
    } else {
        None
    };
    // Every host is checked and bound before any is served, so a bad one fails the start.
    let mut listeners = Vec::new();
    let mut sockets = Vec::new();
    for host in &hosts {
        let parsed = kiln_daemon::listen::parse_host(host, tls.is_some())?;
        listeners.push(kiln_daemon::Listener::bind(&parsed, tls.as_ref())?);
        if let kiln_daemon::listen::Host::Unix(path) = &parsed {
            sockets.push((path.clone(), kiln_daemon::listen::socket_identity(path)));
        }
    }
    let (engine, rt) = Env::open(global)?.into_engine()?;
    let daemon = kiln_daemon::Daemon::new(engine);
    // What a crash left of networks is looked for before serving: endpoints of removed
    // containers are released (their addresses free again); bridges and rules no network of
    // this store names are reported (another store may own them).
    match super::leftovers::network_leftovers(daemon.store(), true) {
        Ok(found) => {
            for l in found {
                let what = if l.repaired {
                    "removed a leftover"
                } else {
                    "leftover"
                };
                eprintln!("kiln serve: {what}: {}: {}", l.object, l.problem);
            }
        }
        Err(e) => eprintln!("kiln serve: WARNING: could not check networks for leftovers: {e:#}"),
    }
    let options = kiln_daemon::Options {
        header_timeout: Duration::from_secs(args.header_timeout.max(1)),
        ..kiln_daemon::Options::default()
    };
    for host in &hosts {
        eprintln!("kiln serve: listening on {host}");
    }
    rt.block_on(async {
        // As dockerd at its start: containers whose restart policy says so run again (after
        // a reboot, or a supervisor killed while no daemon ran).
        for (name, e) in kiln_daemon::start_restartable(&daemon).await {
            eprintln!(
                "kiln serve: WARNING: could not restart container {name}: {}",
                e.message
            );
        }
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        kiln_daemon::serve(daemon, listeners, options, shutdown).await
    })
    .context("serving the API")?;
    eprintln!("kiln serve: stopped");
    // Builds cancelled at shutdown end their blocking threads promptly; do not wait forever.
    rt.shutdown_timeout(Duration::from_secs(10));
    for (path, bound) in sockets {
        if let Some(identity) = bound {
            kiln_daemon::listen::remove_socket_if_ours(&path, identity);
        }
    }
    Ok(ExitCode::SUCCESS)
}
