//! Base images pinned for the length of one build.

use std::sync::{Arc, OnceLock};

use kiln_image::{Digest, Platform, Reference};
use kiln_images::StoredImage;

use crate::named_context::NamedContext;
use crate::progress::Progress;

/// The images one build has resolved, by reference and platform: every stage, `COPY --from`
/// and `RUN --mount=from=` naming the same image gets the same manifest, even if its tag moves
/// while the build runs, and it is resolved (or pulled) once however many stages name it, also
/// when they ask at the same time.
#[derive(Default)]
pub(crate) struct ImagePins {
    cells: std::sync::Mutex<std::collections::HashMap<PinKey, Arc<OnceLock<PinResult>>>>,
    /// `--build-context`s by the reference their name is (`docker.io/library/NAME:latest`),
    /// with the name as given: resolved instead of that reference.
    named: std::collections::BTreeMap<String, (String, NamedContext)>,
    /// How git reaches a named context's repository.
    git_access: crate::remote_context::GitAccess,
}

/// A reference and a platform, as text.
type PinKey = (String, String);
type PinResult = std::result::Result<StoredImage, String>;

/// A base image as one build resolved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBase {
    /// The reference as the Dockerfile named it, normalised (`docker.io/library/busybox:latest`).
    pub reference: String,
    pub platform: Platform,
    /// The image manifest it was pinned to.
    pub manifest: Digest,
}

impl ImagePins {
    /// Pins that resolve the names of `named` (a build's `--build-context`s) to their
    /// contexts. A name that is no image reference could never be looked up, so it is left
    /// out (`FROM`/`--from` would not accept it either).
    pub fn with_named(
        named: &std::collections::BTreeMap<String, NamedContext>,
        git_access: crate::remote_context::GitAccess,
    ) -> ImagePins {
        ImagePins {
            cells: Default::default(),
            git_access,
            named: named
                .iter()
                .filter_map(|(name, ctx)| {
                    let reference: Reference = name.parse().ok()?;
                    Some((reference.to_string(), (name.clone(), ctx.clone())))
                })
                .collect(),
        }
    }

    /// Every image resolved so far, sorted by reference and platform (failed ones left out).
    pub fn resolved(&self) -> Vec<ResolvedBase> {
        let cells = self
            .cells
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<ResolvedBase> = cells
            .iter()
            .filter_map(|((reference, _), cell)| match cell.get() {
                Some(Ok(image)) => Some(ResolvedBase {
                    reference: reference.clone(),
                    platform: Platform {
                        variant: image.config.variant.clone(),
                        ..Platform::new(&image.config.os, &image.config.architecture)
                    },
                    manifest: image.manifest_digest.clone(),
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| {
            (&a.reference, a.platform.to_string()).cmp(&(&b.reference, b.platform.to_string()))
        });
        out
    }

    /// [`kiln_images::resolve_image`], once per build for each reference and platform. The error is the
    /// first resolution's message, for every asker.
    pub fn resolve(
        &self,
        engine: &crate::Engine,
        reference: &Reference,
        platform: &Platform,
        pull: bool,
        progress: Progress<'_>,
    ) -> PinResult {
        let key = (reference.to_string(), platform.to_string());
        let cell = Arc::clone(
            self.cells
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        // Concurrent askers of one image block here until the first one has it.
        // A cancelled build stops a pull in progress; the build then reports `Cancelled`
        // whatever this message says.
        cell.get_or_init(|| {
            let named = self.named.get(&reference.to_string());
            let reference = match named {
                Some((_, NamedContext::Image(other))) => other,
                Some((name, local)) => {
                    return local
                        .local_image(name, engine, &self.git_access, platform)
                        .map_err(|e| e.to_string());
                }
                None => reference,
            };
            let on_event = |e: kiln_images::ImageEvent| progress(e.into());
            let resolve = kiln_images::resolve(
                &engine.store,
                &engine.registry,
                reference,
                platform,
                pull,
                &on_event,
            );
            match crate::cancel::block_on(&engine.rt, &engine.cancel, resolve) {
                Ok(resolved) => resolved.map_err(|e| e.to_string()),
                Err(cancelled) => Err(cancelled.to_string()),
            }
        })
        .clone()
    }
}
