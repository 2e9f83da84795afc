//! `kiln run`: create, then (without `-d`) attach + start + wait, all through the container
//! runtime, so a foreground container is supervised exactly as a detached one (health probes
//! included). Signals to this process are passed on to the container, as `docker run` does;
//! killing this process outright leaves the container running in its supervisor.

use std::process::ExitCode;

use anyhow::Result;
use kiln_runtime::{AttachRequest, Runtime};

use super::super::Env;
use super::{attach, create};
use crate::cli::RunArgs;

pub fn run(env: &Env, args: RunArgs) -> Result<ExitCode> {
    let record = create::create(env, &args, !args.detach)?;
    let rt = Runtime::new(env.store.clone());
    if args.detach {
        rt.start(&record.id)?;
        println!("{}", record.id);
        return Ok(ExitCode::SUCCESS);
    }
    let request = AttachRequest {
        stdin: args.interactive,
        detach_keys: Some(args.detach_keys.parse()?),
        ..AttachRequest::output()
    };
    attach::run_attached(env, &rt, &record, request, true)
}
