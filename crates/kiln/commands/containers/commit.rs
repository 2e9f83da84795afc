//! `kiln commit`: a new image from a container's changes (`kiln_runtime`'s commit, which
//! freezes a running container while its layer is read).

use std::process::ExitCode;

use anyhow::Result;
use kiln_runtime::{CommitOptions, Runtime};

use super::super::{Env, parse_reference};

pub fn commit(
    env: &Env,
    query: &str,
    name: Option<&str>,
    message: Option<&str>,
    author: Option<&str>,
) -> Result<ExitCode> {
    let reference = name.map(parse_reference).transpose()?;
    let options = CommitOptions {
        message: message.map(str::to_owned),
        author: author.map(str::to_owned),
        pause: true,
        edit: None,
    };
    let new = Runtime::new(env.store.clone()).commit(query, reference.as_ref(), &options)?;
    println!("{}", new.config_digest);
    Ok(ExitCode::SUCCESS)
}
