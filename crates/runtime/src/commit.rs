//! `commit`: a new image from a container's writable layer, with the container's command,
//! environment, user and working directory as its config, as `docker commit` makes one. A
//! running container is frozen while its upper dir is read (`freeze`), so the layer is one
//! moment of its files, not a mix.

use kiln_image::{ContainerConfig, Descriptor, History, Reference};
use kiln_images::StoredImage;

use crate::error::{Result, RuntimeError};
use crate::freeze::freeze;
use crate::host::Host;
use crate::lifecycle::Runtime;

/// What `commit` records besides the layer.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The history entry's comment.
    pub message: Option<String>,
    pub author: Option<String>,
    /// Docker's `--pause` (default true): freeze a running container while reading.
    pub pause: bool,
    /// Docker's `--change`: applied to the new image's config last (the caller parses the
    /// Dockerfile lines; the runtime knows no Dockerfile).
    pub edit: Option<ConfigEdit>,
}

/// A change to a committed image's config.
#[derive(Clone)]
pub struct ConfigEdit(pub std::sync::Arc<dyn Fn(&mut ContainerConfig) + Send + Sync>);

impl std::fmt::Debug for ConfigEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigEdit")
    }
}

impl<H: Host> Runtime<H> {
    /// Commits the container `query` as a new image, named `reference` if given (dockerd
    /// commits unnamed images too: they are found by ID).
    pub fn commit(
        &self,
        query: &str,
        reference: Option<&Reference>,
        options: &CommitOptions,
    ) -> Result<StoredImage> {
        let c = self.container(query)?;
        let manifest = c.manifest.parse().map_err(|_| RuntimeError::Invalid {
            what: "image digest of the container",
            value: c.manifest.clone(),
            reason: "not a digest",
        })?;
        let img = StoredImage::load(&self.store, &manifest)?;
        let upper = self.store.container_dir(&c.id).join("upper");
        // A paused container is frozen already (and must stay so).
        let frozen =
            if options.pause && c.state.is_running() && !c.state.is_paused() && c.state.pid != 0 {
                match freeze(c.state.pid, &format!("kiln-commit-{}", &c.id[..12])) {
                    Ok(frozen) => Some(frozen),
                    // It exited between the look and the freeze (its PID 1 is gone, though its
                    // supervisor may not have recorded the exit yet): a stopped container's layer
                    // needs no freezing.
                    Err(RuntimeError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        None
                    }
                    Err(_) if !self.host.is_running(&c.id)? => None,
                    Err(e) => return Err(e),
                }
            } else {
                None
            };
        let layer =
            kiln_layer::write_layer(&self.store, &upper, kiln_layer::Compression::default());
        drop(frozen);
        let layer = layer?;
        let created = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut config = img.config.clone();
        config.created = Some(created.clone());
        if let Some(a) = &options.author {
            config.author = Some(a.clone());
        }
        let cfg = &mut config.config;
        cfg.cmd = Some(c.config.cmd.clone()).filter(|v| !v.is_empty());
        cfg.entrypoint = Some(c.config.entrypoint.clone()).filter(|v| !v.is_empty());
        cfg.env = c.config.env.clone();
        cfg.user = Some(c.config.user.clone()).filter(|u| !u.is_empty());
        cfg.working_dir = Some(c.config.working_dir.clone()).filter(|w| !w.is_empty());
        if let Some(edit) = &options.edit {
            (edit.0)(cfg);
        }
        let mut layers: Vec<Descriptor> = img.manifest.layers.clone();
        config.history.push(History {
            created: Some(created),
            created_by: Some(format!("kiln commit {}", c.name)),
            author: options.author.clone(),
            comment: options.message.clone(),
            empty_layer: layer.is_none(),
        });
        if let Some(layer) = layer {
            config.rootfs.diff_ids.push(layer.diff_id.clone());
            layers.push(Descriptor::new(layer.media_type, layer.digest, layer.size));
        }
        let new = kiln_images::write_image(&self.store, &config, layers)?;
        if let Some(reference) = reference {
            self.store
                .set_name(&reference.to_string(), &new.manifest_digest)?;
        }
        Ok(new)
    }
}
