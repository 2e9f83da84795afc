//! A `kiln serve` whose binary is replaced on disk while it runs (a package upgrade, a relink
//! by `cargo build`) keeps starting containers: supervisors are started from the running
//! binary (`/proc/self/exe`), not from the path it was started as.

use std::process::Command;

use super::super::harness::Kiln;
use super::Daemon;
use super::docker_cli::Docker;

#[test]
fn a_daemon_whose_binary_was_replaced_still_runs_containers() {
    let k = Kiln::new();
    k.ok(&["pull", &k.base]);
    let bin_dir = tempfile::tempdir().unwrap();
    let copy = bin_dir.path().join("kiln");
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &copy).unwrap();
    let mut command = Command::new(&copy);
    // In the machine's own network namespace: no default bridge there (see harness).
    crate::e2e::harness::in_the_machines_netns(&mut command);
    let d = Daemon::spawn(&k, command, &[], &[]);
    // What an upgrade does: a new file renamed over the old one, whose inode the daemon keeps.
    let new = bin_dir.path().join("kiln.new");
    std::fs::write(&new, b"#!/bin/sh\nexit 99\n").unwrap();
    std::fs::rename(&new, &copy).unwrap();
    let out = Docker::new(&d).ok(&["run", "--rm", &k.base, "echo", "still here"]);
    assert_eq!(out.trim(), "still here", "{}", d.log());
}
