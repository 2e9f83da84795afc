//! `POST /images/create?fromSrc=-`: an image from a root filesystem tar in the body, as
//! `docker import` makes one (`kiln_images::import_rootfs`), with `changes` applied to its
//! config. A `fromSrc` URL is not fetched (501).
//!
//! `changes` are Dockerfile lines; dockerd accepts CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
//! ONBUILD, USER, VOLUME, WORKDIR (and STOPSIGNAL) there. They are parsed with kiln's Dockerfile
//! parser and applied here, ONBUILD excepted (refused with a 400).

use std::sync::Arc;

use hyper::{Response, StatusCode};
use kiln_dockerfile::{Command, ShellOrExec};
use kiln_image::ContainerConfig;
use serde_json::json;

use super::{blocking, body_reader, parse_name};
use crate::Daemon;
use crate::error::ApiError;
use crate::router::Req;
use crate::stream::{self, Body};

pub async fn import(daemon: Arc<Daemon>, req: Req) -> Result<Response<Body>, ApiError> {
    let source = req.query.get("fromSrc").unwrap_or("").to_owned();
    if source != "-" {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!(
                "importing from {source:?}: kiln imports only a tar sent in the request body (fromSrc=-)"
            ),
        ));
    }
    let repo = req.query.get("repo").unwrap_or("").trim().to_owned();
    let tag = req.query.get("tag").unwrap_or("").trim().to_owned();
    let target = match (repo.is_empty(), tag.is_empty()) {
        (true, _) => None,
        (false, true) => Some(parse_name(&repo)?),
        (false, false) => Some(parse_name(&format!("{repo}:{tag}"))?),
    };
    let changes: Vec<String> = req
        .query
        .all("changes")
        .into_iter()
        .map(str::to_owned)
        .collect();
    // Checked before anything is imported, so a bad change is a 400 that leaves nothing.
    let mut probe = ContainerConfig::default();
    if let Err(e) = apply_changes(&mut probe, &changes) {
        crate::router::drain(req.body).await;
        return Err(e);
    }
    let reader = body_reader(req.body);
    Ok(stream::json_stream(move |out| async move {
        let d = Arc::clone(&daemon);
        let img = blocking(move || {
            let _lock = d.store().lock_shared()?;
            let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let mut img = kiln_images::import_rootfs(
                d.store(),
                std::io::BufReader::new(reader),
                &created,
                "kiln import (Engine API)".to_owned(),
            )?;
            if !changes.is_empty() {
                let mut config = img.config.clone();
                apply_changes(&mut config.config, &changes)?;
                img = kiln_images::write_image(d.store(), &config, img.manifest.layers.clone())?;
            }
            if let Some(target) = &target {
                kiln_images::tag(d.store(), &img, target)?;
            }
            Ok(img)
        })
        .await?;
        let id = img.config_digest.to_string();
        daemon.events.image("import", &id, None);
        out.send(&json!({ "status": id }));
        Ok(())
    })
    .await)
}

/// Applies `changes` (one Dockerfile instruction each) to `config` (also `commit`'s).
pub(crate) fn apply_changes(
    config: &mut ContainerConfig,
    changes: &[String],
) -> Result<(), ApiError> {
    for change in changes.iter().filter(|c| !c.trim().is_empty()) {
        let bad = |why: String| ApiError::bad_request(format!("invalid change {change:?}: {why}"));
        let file = kiln_dockerfile::parse(&format!("FROM scratch\n{change}\n"))
            .map_err(|e| bad(e.to_string()))?;
        for ins in file.instructions.iter().skip(1) {
            let command = ins
                .command
                .expand(&|_| None, file.escape)
                .map_err(|e| bad(e.to_string()))?;
            let argv = |c: ShellOrExec| match c {
                ShellOrExec::Exec(v) => v,
                ShellOrExec::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
            };
            match command {
                Command::Cmd(c) => config.cmd = Some(argv(c)),
                Command::Entrypoint(c) => config.entrypoint = Some(argv(c)),
                Command::Env(pairs) => {
                    for (k, v) in pairs {
                        config.env_set(&k, &v);
                    }
                }
                Command::Label(pairs) => config.labels.extend(pairs),
                Command::User(u) => config.user = Some(u),
                Command::Workdir(w) => config.working_dir = Some(w),
                Command::Expose(ports) => {
                    for p in ports {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        config.exposed_ports.insert(p, ());
                    }
                }
                Command::Volume(paths) => {
                    for p in paths {
                        config.volumes.insert(p, ());
                    }
                }
                Command::StopSignal(s) => config.stop_signal = Some(s),
                _ => {
                    return Err(bad(format!(
                        "{} cannot be applied to an image config",
                        ins.keyword
                    )));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_set_the_config_as_dockerfile_lines_do() {
        let mut c = ContainerConfig::default();
        apply_changes(
            &mut c,
            &[
                "USER foobar".into(),
                r#"CMD ["echo"]"#.into(),
                "ENTRYPOINT /bin/app --x".into(),
                "ENV A=1 B=\"two words\"".into(),
                "EXPOSE 80 53/udp".into(),
                "WORKDIR /srv".into(),
                "LABEL k=v".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.user.as_deref(), Some("foobar"));
        assert_eq!(c.cmd, Some(vec!["echo".to_owned()]));
        assert_eq!(c.entrypoint.as_ref().unwrap()[..2], ["/bin/sh", "-c"]);
        assert!(c.env.contains(&"B=two words".to_owned()), "{:?}", c.env);
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.labels["k"], "v");
        let err = apply_changes(&mut c, &["RUN rm -rf /".into()]).unwrap_err();
        assert!(
            err.message
                .contains("RUN cannot be applied to an image config"),
            "{}",
            err.message
        );
        assert!(apply_changes(&mut c, &["NOPE x".into()]).is_err());
    }
}
