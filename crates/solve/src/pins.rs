//! Base images pinned for the length of one build.

use std::sync::{Arc, OnceLock};

use kiln_image::{Platform, Reference};
use kiln_images::StoredImage;

use crate::progress::Progress;

/// The images one build has resolved, by reference and platform: every stage, `COPY --from`
/// and `RUN --mount=from=` naming the same image gets the same manifest, even if its tag moves
/// while the build runs, and it is resolved (or pulled) once however many stages name it, also
/// when they ask at the same time.
#[derive(Default)]
pub(crate) struct ImagePins {
    cells: std::sync::Mutex<std::collections::HashMap<PinKey, Arc<OnceLock<PinResult>>>>,
}

/// A reference and a platform, as text.
type PinKey = (String, String);
type PinResult = std::result::Result<StoredImage, String>;

impl ImagePins {
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
