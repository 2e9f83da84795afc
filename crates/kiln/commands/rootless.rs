//! Rootless kiln: an ordinary user's command runs again inside a user namespace where kiln is
//! root over the user's subordinate ids (`kiln_sandbox::rootless` has the mechanism). The
//! store then defaults to `$XDG_DATA_HOME/kiln` (`~/.local/share/kiln`), decided out here
//! where the user is still themselves.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_sandbox::rootless::{UserNamespacePlan, reexec_in_user_namespace};
use kiln_store::Store;

use crate::cli::{Command, GlobalOpts};

/// Whether `command` must run inside the user namespace when kiln is not root: everything that
/// mounts, or reads or writes snapshots and cache mounts (whose files belong to mapped ids the
/// user cannot touch directly). Registry logins only handle the user's own config.
///
/// `exec` stays outside too: every rootless kiln process makes a user namespace of its own,
/// and a running container lives in the one of the kiln that started it. Joining that
/// namespace (`setns`) needs `CAP_SYS_ADMIN` over it, which a sibling namespace never has but
/// the host user owning it does; so the exec helper joins it straight from here (see
/// `kiln_sandbox::spawn_in`).
pub fn needs_user_namespace(command: &Command) -> bool {
    !matches!(
        command,
        Command::Login(_) | Command::Logout { .. } | Command::Exec(_)
    )
}

/// Whether a single-id map deserves a warning for `command`: it writes files of images.
fn writes_image_files(command: &Command) -> bool {
    matches!(
        command,
        Command::Build(_)
            | Command::Run(_)
            | Command::Create(_)
            | Command::Pull { .. }
            | Command::Load { .. }
            | Command::Import { .. }
    )
}

/// Runs this very command line again in a new user namespace and gives its exit status.
pub fn run_in_user_namespace(global: &GlobalOpts, command: &Command) -> Result<ExitCode> {
    let plan = UserNamespacePlan::for_current_user();
    if plan.is_single_id() && writes_image_files(command) {
        eprintln!(
            "warning: no /etc/subuid and /etc/subgid ranges for this user: running rootless with a \
             single id, so files owned by other users are stored as root's and RUN/USER cannot \
             switch to another user (add ranges with `usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 $USER`)"
        );
    }
    // Computed here: inside the namespace kiln is uid 0 and would pick the system store.
    let store_root = global.root.clone().unwrap_or_else(Store::default_root);
    let mut env: Vec<(OsString, OsString)> =
        vec![("KILN_ROOT".into(), store_root.clone().into_os_string())];
    // Likewise the daemon's socket: the user's runtime dir, not root's /run.
    if matches!(command, Command::Serve(_)) {
        env.push((
            super::serve::DEFAULT_HOST_ENV.into(),
            kiln_daemon::listen::default_host().into(),
        ));
    }
    // While this store's per-user network namespace exists, every rootless command runs in
    // the user namespace that owns it (so it may connect containers to its bridges).
    let join = kiln_network::user_namespace_to_join(&store_root);
    let code = reexec_in_user_namespace(&plan, &env, join)
        .context("starting rootless kiln in a user namespace")?;
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(255)))
}
