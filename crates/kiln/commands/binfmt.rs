//! `kiln system binfmt [--install]`: the binfmt_misc handlers RUN for a foreign platform
//! needs, and registering Debian's qemu-user-static ones (with the `F` flag) when asked.
//! kiln never registers handlers on its own: they are kernel-wide.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use kiln_sandbox::binfmt::{self, BINFMT_MISC, DEBIAN_BINFMT_D, INSTALL_HINT, Installed};

use crate::render::table;

pub fn binfmt(install: bool) -> Result<ExitCode> {
    let dir = Path::new(BINFMT_MISC);
    if install {
        for done in binfmt::install(dir, Path::new(DEBIAN_BINFMT_D))? {
            match done {
                Installed::Registered { name, flags } => {
                    println!("registered {name} (flags {flags})")
                }
                Installed::Reregistered { name, flags } => {
                    println!("registered {name} again, with F (flags {flags})")
                }
                Installed::AlreadyReady { name } => println!("{name}: already registered with F"),
                Installed::NoInterpreter { name, interpreter } => {
                    println!("{name}: skipped, {interpreter} is not installed")
                }
            }
        }
        println!();
    }
    let status = binfmt::status(dir)?;
    if !status.mounted {
        println!(
            "binfmt_misc is not mounted at {BINFMT_MISC} \
             (mount -t binfmt_misc binfmt_misc {BINFMT_MISC})"
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !status.enabled {
        println!("binfmt_misc is disabled (echo 1 > {BINFMT_MISC}/status)");
    }
    let mut rows = vec![[
        "HANDLER".to_owned(),
        "ENABLED".into(),
        "FLAGS".into(),
        "IN BUILDS".into(),
        "INTERPRETER".into(),
    ]];
    for h in &status.handlers {
        rows.push([
            h.name.clone(),
            if h.enabled { "yes" } else { "no" }.into(),
            h.flags.clone(),
            // Without F the interpreter is looked up inside the build's root, where it is not.
            if h.enabled && h.fixed_binary() {
                "yes"
            } else {
                "no"
            }
            .into(),
            h.interpreter.clone(),
        ]);
    }
    print!("{}", table(&rows));
    if !status
        .handlers
        .iter()
        .any(|h| h.name.starts_with("qemu-") && h.enabled && h.fixed_binary())
    {
        println!("no qemu handler with the F flag; to emulate other CPUs: {INSTALL_HINT}");
    }
    Ok(ExitCode::SUCCESS)
}
