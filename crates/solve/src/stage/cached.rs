//! The cache lookup of a filesystem step: its key, the per-key lock across builds, the local
//! then imported (`--cache-from`) record, else running the step and recording its layer.

use std::time::Instant;

use kiln_dockerfile::Instruction;
use kiln_image::LayerRef;
use kiln_store::CacheKey;

use super::{StageBuilder, StageState};
use crate::cache::{CacheRecord, KeyBuilder};
use crate::error::Result;
use crate::explain::{KeyedStep, StepOutcome};
use crate::progress::{ProgressEvent, StepLabel};

/// How often a step waiting for another build's run of the same step tries its lock again.
const STEP_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(50);

impl StageBuilder<'_> {
    /// The lock making "look `key` up, else run the step and record it" one critical section
    /// across every build on the store (none when the user forces a miss, which never looks up).
    /// Another build may hold it for as long as its step runs, so the wait polls, giving up
    /// when this build is cancelled.
    pub(crate) fn step_lock(&self, key: &CacheKey) -> Result<Option<kiln_store::StoreLock>> {
        if self.forced_miss().is_some() {
            return Ok(None);
        }
        let cancel = &self.engine.cancel;
        loop {
            let store = &self.engine.store;
            if let Some(lock) = store.try_lock_object(kiln_store::ObjectLock::Step(key))? {
                return Ok(Some(lock));
            }
            if cancel.wait_timeout(STEP_LOCK_POLL) {
                return Err(crate::SolveError::Cancelled);
            }
        }
    }

    /// A step that changes the filesystem: look its key up, else run it and record the layer.
    pub(crate) fn fs_step(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        key_inputs: impl FnOnce(&mut KeyBuilder) -> Result<()>,
        execute: impl FnOnce(&Self, &StageState, &StepLabel) -> Result<Option<LayerRef>>,
    ) -> Result<()> {
        let mut key = KeyBuilder::new(&ins.keyword, Some(&state.key));
        key.field("platform", &state.platform.to_string());
        self.key_epoch(&mut key);
        key_inputs(&mut key)?;
        let (key, inputs) = key.finish_recorded();
        self.cached_or_run(state, ins, label, &key, key.clone(), inputs, execute)
    }

    /// The part of a filesystem step after its key: take the result recorded under
    /// `record_key` (in the build's compression) unless the user forces a miss, else run
    /// `execute` and record what it made; either way the explainer sees the step's `inputs`
    /// and the stage continues from `stage_key` (the same key, except for `COPY --link`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn cached_or_run(
        &self,
        state: &mut StageState,
        ins: &Instruction,
        label: StepLabel,
        record_key: &CacheKey,
        stage_key: CacheKey,
        inputs: Vec<crate::cache::KeyInput>,
        execute: impl FnOnce(&Self, &StageState, &StepLabel) -> Result<Option<LayerRef>>,
    ) -> Result<()> {
        // "Look up, else run and record" is one critical section per key across every build on
        // this store: a second build reaching the same step waits here, then finds the record.
        let _step_lock = self.step_lock(record_key)?;
        let forced = self.forced_miss();
        let mut cached = match forced {
            None => CacheRecord::load(&self.engine.store, record_key)?,
            Some(_) => None,
        };
        // Not here, but in a `--cache-from`: a hit too, its layer left where it is for now.
        let mut remote_source = None;
        if cached.is_none()
            && forced.is_none()
            && let Some(hit) = self.remote.hit(
                self.engine,
                record_key,
                &self.req.compression,
                self.progress,
            )?
        {
            cached = Some(hit.record);
            remote_source = Some(hit.source);
        }
        let outcome = match cached {
            Some(_) => StepOutcome::Hit,
            None => StepOutcome::Miss { forced },
        };
        if cached.is_none() {
            (self.progress)(ProgressEvent::StepStarted(label.clone()));
        }
        let pending = self.explainer().step(
            state,
            KeyedStep {
                label: &label,
                slot: Self::slot(&label),
                key: record_key,
                inputs,
                outcome,
            },
        );
        if let Some(record) = cached {
            if let Some(pending) = pending {
                pending.save(&self.engine.store)?;
            }
            let mut record = crate::compress::record_in_compression(
                &self.engine.store,
                record,
                &self.req.compression,
            )?;
            // The key holds the epoch, so a hit was recorded with this one; should a record
            // say otherwise, the image still takes the build's epoch as its time.
            if let Some(epoch) = self.epoch() {
                record.created = epoch.rfc3339();
            }
            (self.progress)(match remote_source {
                Some(source) => ProgressEvent::StepCachedRemote {
                    step: label,
                    source,
                },
                None => ProgressEvent::StepCached(label),
            });
            self.remote.note(self.stage.index, record_key, &record);
            state.apply_record(ins, stage_key, &record);
            return Ok(());
        }
        let started = Instant::now();
        let layer = execute(self, state, &label)?;
        let record = CacheRecord {
            layer,
            // The key holds the epoch, so every hit on this record has the same one.
            created: match self.epoch() {
                Some(epoch) => epoch.rfc3339(),
                None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        };
        record.save(&self.engine.store, record_key)?;
        self.remote.note(self.stage.index, record_key, &record);
        if let Some(pending) = pending {
            pending.save(&self.engine.store)?;
        }
        state.apply_record(ins, stage_key, &record);
        (self.progress)(ProgressEvent::StepDone {
            step: label,
            elapsed: started.elapsed(),
        });
        Ok(())
    }
}
