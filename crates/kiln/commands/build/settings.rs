//! buildx's metadata and limit flags (`--label`, `--annotation`, `--shm-size`, `--ulimit`)
//! turned into the engine's [`BuildSettings`], each checked before anything is built.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use kiln_solve::BuildSettings;

use crate::cli::BuildxArgs;

/// The `--ssh` agents of a build: checked, and started for keys; they run until dropped.
pub struct SshForwarding {
    pub agents: kiln_solve::ssh::SshAgents,
    _dir: Option<tempfile::TempDir>,
}

pub fn ssh_agents(env: &super::super::Env, flags: &[String]) -> Result<SshForwarding> {
    use kiln_solve::ssh::{SshAgents, SshSource, parse_ssh_flag};
    let auth_sock = std::env::var_os("SSH_AUTH_SOCK").map(std::path::PathBuf::from);
    let mut sources = BTreeMap::new();
    for flag in flags {
        let (id, source) = parse_ssh_flag(flag, auth_sock.as_deref())?;
        if sources.insert(id.clone(), source).is_some() {
            bail!("--ssh {id} is given twice");
        }
    }
    // Agents kiln starts keep their sockets in a private dir of the store's tmp/.
    let dir = if sources.values().any(|s| matches!(s, SshSource::Keys(_))) {
        Some(env.store.temp_dir("ssh-")?)
    } else {
        None
    };
    let scratch = dir
        .as_ref()
        .map_or_else(std::env::temp_dir, |d| d.path().to_owned());
    let agents = SshAgents::start(&sources, &scratch)?;
    Ok(SshForwarding { agents, _dir: dir })
}

pub fn settings(args: &BuildxArgs) -> Result<BuildSettings> {
    let mut labels = BTreeMap::new();
    for label in &args.labels {
        // As buildx: a label without `=` has an empty value.
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        if key.is_empty() {
            bail!("invalid --label {label:?}: expected KEY=VALUE");
        }
        labels.insert(key.to_owned(), value.to_owned());
    }
    let mut manifest_annotations = BTreeMap::new();
    for flag in &args.annotations {
        let (key, value) = annotation(flag)?;
        manifest_annotations.insert(key, value);
    }
    let shm_size = match &args.shm_size {
        Some(size) => {
            let bytes = super::super::flags::parse_size(size)
                .map_err(|e| anyhow::anyhow!("--shm-size: {e}"))?;
            if bytes == 0 {
                bail!("invalid --shm-size {size:?}: must be more than 0");
            }
            Some(bytes)
        }
        None => None,
    };
    let ulimits = args
        .ulimits
        .iter()
        .map(|u| kiln_sandbox::Ulimit::parse(u))
        .collect::<Result<_, _>>()?;
    let cwd = std::env::current_dir()?;
    let mut named_contexts = BTreeMap::new();
    for flag in &args.build_contexts {
        let (name, context) = kiln_solve::named_context::NamedContext::parse(flag, &cwd)?;
        if named_contexts.insert(name.clone(), context).is_some() {
            bail!("--build-context {name} is given twice");
        }
    }
    Ok(BuildSettings {
        ssh: BTreeMap::new(),
        named_contexts,
        labels,
        manifest_annotations,
        shm_size,
        ulimits,
    })
}

/// buildx's `[TYPE[,TYPE…][PLATFORM]:]KEY=VALUE`. kiln writes one manifest per build (an
/// index only for attestations), so the manifest is the one place an annotation can go; the
/// other types are refused by name rather than dropped.
fn annotation(flag: &str) -> Result<(String, String)> {
    let Some((target, value)) = flag.split_once('=') else {
        bail!("invalid --annotation {flag:?}: expected [TYPE:]KEY=VALUE");
    };
    let (types, key) = match target.split_once(':') {
        Some((types, key)) => (Some(types), key),
        None => (None, target),
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        bail!("invalid --annotation {flag:?}: the key must be non-empty, without spaces");
    }
    if let Some(types) = types {
        if types.contains('[') {
            bail!(
                "--annotation {flag:?}: per-platform annotations need a multi-platform build; \
                 drop the [PLATFORM]"
            );
        }
        for kind in types.split(',') {
            match kind {
                "manifest" => {}
                "index" | "index-descriptor" | "manifest-descriptor" => bail!(
                    "--annotation {flag:?}: kiln annotates only the image manifest \
                     (manifest:KEY=VALUE); {kind} annotations are not supported"
                ),
                other => bail!(
                    "invalid --annotation {flag:?}: unknown type {other:?} (manifest, \
                     manifest-descriptor, index or index-descriptor)"
                ),
            }
        }
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_as_buildx_spells_them() {
        assert_eq!(
            annotation("org.opencontainers.image.title=app").unwrap(),
            ("org.opencontainers.image.title".into(), "app".into())
        );
        assert_eq!(
            annotation("manifest:a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        for bad in [
            "novalue",
            "=v",
            "index:a=b",
            "bogus:a=b",
            "manifest[linux/amd64]:a=b",
        ] {
            let e = annotation(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
