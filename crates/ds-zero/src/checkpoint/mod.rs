//! Checkpoints in DeepSpeed's layout, with tensors in safetensors and metadata in JSON.
//!
//! ```text
//! DIR/latest                                              the newest tag, written last
//! DIR/TAG/mp_rank_00_model_states.safetensors             parameters by name (training dtype)
//! DIR/TAG/zero_pp_rank_R_mp_rank_00_optim_states.safetensors   rank R's optimizer state
//! DIR/TAG/engine_state.json                               counters, scaler, schedule, loader,
//!                                                         client state, and every file's size
//!                                                         and checksum
//! ```
//!
//! Optimizer state is stored per parameter piece (`KIND:START:NAME`, the elements a rank owns
//! of parameter NAME from element START), so a checkpoint loads on any world size and ZeRO
//! stage: each rank picks the pieces that overlap what it owns now. Without ZeRO, rank 0 writes
//! the one optimizer file.
//!
//! Saving is atomic at every level: each file is written under a temporary name and renamed;
//! the tag is assembled in `DIR/.TAG.partial` and renamed into place once every rank has
//! written and `engine_state.json` records the files; `latest` is replaced last. A save that
//! dies part-way leaves the previous checkpoint and `latest` as they were. Loading verifies
//! every file's size and checksum before touching the engine, and names the file at fault.
//! Ranks must share the checkpoint directory (as with DeepSpeed's default).

mod consolidate;
mod files;
mod pieces;

pub use consolidate::{Consolidated, consolidate_fp32};

use crate::data::Resumable;
use crate::engine::Engine;
use crate::model::Model;
use crate::{Error, Result};
use ds_core::{Backend, BufferExt, ReduceOp};
use files::{fnv1a64, sync_dir, write_atomic};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The model-state file's name.
pub const MODEL_FILE: &str = "mp_rank_00_model_states.safetensors";
/// The engine-state file's name.
pub const STATE_FILE: &str = "engine_state.json";
/// The file naming the newest tag.
pub const LATEST_FILE: &str = "latest";
const FORMAT: &str = "ds-checkpoint";
const VERSION: u64 = 1;

/// Rank `rank`'s optimizer-state file name.
pub fn optim_file(rank: usize) -> String {
    format!("zero_pp_rank_{rank}_mp_rank_00_optim_states.safetensors")
}

/// What a load restored besides the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The tag loaded.
    pub tag: String,
    /// The client state saved with it.
    pub client_state: Value,
}

fn check_tag(tag: &str) -> Result<()> {
    if tag.is_empty() || tag.starts_with('.') || tag.contains(['/', '\\']) || tag == LATEST_FILE {
        return Err(Error::Usage(format!(
            "checkpoint tag `{tag}` must be a plain, non-hidden directory name other than `latest`"
        )));
    }
    Ok(())
}

impl<B: Backend, M: Model<B>> Engine<B, M> {
    /// Whether every rank passed `ok` (an all-reduce of failure flags, so that no rank waits
    /// forever on one that failed).
    fn all_ok(&mut self, ok: bool) -> Result<bool> {
        if self.world_size() == 1 {
            return Ok(ok);
        }
        let (dev, comm, buf) = self.reduction_parts();
        dev.upload(&[if ok { 0.0f32 } else { 1.0 }, 0.0], buf.all_mut())?;
        comm.all_reduce(dev, buf.all_mut(), ReduceOp::Max)?;
        Ok(dev.read_scalar(buf.range(0..1))? == 0.0)
    }

    /// Saves a checkpoint under `dir/tag` on every rank (all ranks must call it), with
    /// `client_state` and, when given, the data loader's position; returns the tag directory.
    ///
    /// # Errors
    /// [`Error::Usage`] for a bad tag or a save inside an accumulation window;
    /// [`Error::Checkpoint`] naming the file on I/O failure (the previous checkpoint stays
    /// loadable).
    pub fn save_checkpoint(
        &mut self,
        dir: impl AsRef<Path>,
        tag: &str,
        client_state: &Value,
        loader: Option<&dyn Resumable>,
    ) -> Result<PathBuf> {
        check_tag(tag)?;
        if !self.at_clean_boundary() {
            return Err(Error::Usage(
                "save_checkpoint inside a gradient-accumulation window: save after the step() that ends it".into(),
            ));
        }
        let dir = dir.as_ref();
        let partial = dir.join(format!(".{tag}.partial"));
        let rank = self.rank();
        let prepared = (rank != 0) || prepare_dir(dir, &partial).is_ok();
        if !self.all_ok(prepared)? {
            return Err(Error::checkpoint(
                &partial,
                "rank 0 could not create the directory",
            ));
        }
        let written = self.write_rank_files(&partial);
        if !self.all_ok(written.is_ok())? {
            written?;
            return Err(Error::checkpoint(
                &partial,
                "another rank failed to write its files",
            ));
        }
        let finished = if rank == 0 {
            self.finish_save(dir, tag, &partial, client_state, loader)
        } else {
            Ok(())
        };
        if !self.all_ok(finished.is_ok())? {
            finished?;
            return Err(Error::checkpoint(
                dir,
                "rank 0 failed to finish the checkpoint",
            ));
        }
        Ok(dir.join(tag))
    }

    fn write_rank_files(&mut self, partial: &Path) -> Result<()> {
        let mut budget = self.save_fault.take();
        let mut write = |path: PathBuf, bytes: Vec<u8>| -> Result<()> {
            if let Some(left) = budget.as_mut() {
                if *left == 0 {
                    return Err(Error::checkpoint(path, "save interrupted (injected fault)"));
                }
                *left -= 1;
            }
            write_atomic(&path, &bytes)
        };
        // At stage 3 gathering the weights is a collective, so every rank takes part.
        let stage3 = self.config().zero.stage >= 3;
        let whole = !stage3 || self.config().zero.stage3.gather_16bit_weights_on_model_save;
        if self.rank() == 0 || (stage3 && whole) {
            let bytes = pieces::model_bytes(self, whole)?;
            if self.rank() == 0 {
                write(partial.join(MODEL_FILE), bytes)?;
            }
        }
        if self.layout().partitioned || self.rank() == 0 {
            write(
                partial.join(optim_file(self.rank())),
                pieces::optim_bytes(self)?,
            )?;
        }
        Ok(())
    }

    fn finish_save(
        &self,
        dir: &Path,
        tag: &str,
        partial: &Path,
        client_state: &Value,
        loader: Option<&dyn Resumable>,
    ) -> Result<()> {
        let optim_files = if self.layout().partitioned {
            self.world_size()
        } else {
            1
        };
        let mut names = vec![MODEL_FILE.to_string()];
        names.extend((0..optim_files).map(optim_file));
        let mut listed = Vec::new();
        for name in &names {
            let path = partial.join(name);
            let bytes = std::fs::read(&path)
                .map_err(|e| Error::checkpoint(&path, format!("cannot read back: {e}")))?;
            listed.push(json!({"name": name, "bytes": bytes.len(), "fnv1a64": format!("{:016x}", fnv1a64(&bytes))}));
        }
        let state = json!({
            "format": FORMAT,
            "version": VERSION,
            "tag": tag,
            "files": listed,
            "world_size": self.world_size(),
            "zero_stage": self.config().zero.stage,
            "dtype": format!("{:?}", self.dtype()),
            "parameters": self.param_specs().iter().map(|s| json!({"name": s.name, "shape": s.shape})).collect::<Vec<_>>(),
            "optimizer": pieces::optimizer_kind(self),
            "optimizer_steps": self.optimizer().steps(),
            "counters": {
                "global_steps": self.counters().global_steps,
                "global_samples": self.counters().global_samples,
                "skipped_steps": self.counters().skipped_steps,
                "micro_steps": self.counters().micro_steps,
            },
            "loss_scaler": self.loss_scaler().to_json(),
            "lr_schedule": {"last_batch_iteration": self.lr_schedule_iteration()},
            "data_loader": loader.map_or(Value::Null, |l| l.state()),
            "client_state": client_state,
        });
        let text = serde_json::to_vec_pretty(&state)
            .map_err(|e| Error::checkpoint(partial.join(STATE_FILE), e.to_string()))?;
        write_atomic(&partial.join(STATE_FILE), &text)?;
        let target = dir.join(tag);
        let old = dir.join(format!(".{tag}.old"));
        if target.exists() {
            remove_dir(&old)?;
            std::fs::rename(&target, &old).map_err(|e| {
                Error::checkpoint(&target, format!("cannot move the previous copy aside: {e}"))
            })?;
        }
        std::fs::rename(partial, &target)
            .map_err(|e| Error::checkpoint(&target, format!("cannot move into place: {e}")))?;
        sync_dir(dir)?;
        remove_dir(&old)?;
        write_atomic(&dir.join(LATEST_FILE), tag.as_bytes())
    }

    /// Loads the checkpoint `dir/tag` (or the one `dir/latest` names) on every rank: parameters,
    /// optimizer state (repartitioned for this world size and stage), loss scaler, LR schedule,
    /// counters and, when given, the data loader's position. Nothing changes unless every file
    /// checks out.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming the file that is missing, truncated, corrupt or does not fit
    /// the model or optimizer.
    pub fn load_checkpoint(
        &mut self,
        dir: impl AsRef<Path>,
        tag: Option<&str>,
        loader: Option<&mut dyn Resumable>,
    ) -> Result<Loaded> {
        // Everything is read and checked first; the ranks then agree that all of them can
        // load before any of them changes, so a load is all or nothing on every rank.
        let prepared = self.prepare_load(dir.as_ref(), tag, loader.as_deref());
        if !self.all_ok(prepared.is_ok())? {
            prepared?;
            return Err(Error::checkpoint(
                dir.as_ref(),
                "another rank could not load this checkpoint",
            ));
        }
        let prepared = prepared?;
        prepared.restored.apply(self, &prepared.state_path)?;
        if let (Some(l), Some(s)) = (loader, &prepared.loader_state) {
            l.restore(s)
                .map_err(|e| Error::checkpoint(&prepared.state_path, e))?;
        }
        Ok(Loaded {
            tag: prepared.tag,
            client_state: prepared.client_state,
        })
    }

    fn prepare_load(
        &self,
        dir: &Path,
        tag: Option<&str>,
        loader: Option<&dyn Resumable>,
    ) -> Result<Prepared> {
        let (tag, tag_dir) = resolve_tag(dir, tag)?;
        let (state_path, state) = read_state(&tag_dir)?;
        let files = pieces::read_files(&tag_dir, &state_path, &state)?;
        let restored = pieces::Restored::build(self, &state_path, &state, &files)?;
        let loader_state = state.get("data_loader").filter(|v| !v.is_null()).cloned();
        if let Some(l) = loader {
            let s = loader_state.as_ref().ok_or_else(|| {
                Error::checkpoint(&state_path, "has no data loader position to restore")
            })?;
            l.check(s).map_err(|e| Error::checkpoint(&state_path, e))?;
        }
        Ok(Prepared {
            tag,
            client_state: state.get("client_state").cloned().unwrap_or(Value::Null),
            state_path,
            restored,
            loader_state,
        })
    }
}

/// The tag to read (the one named, or `latest`'s) and its directory (or the complete copy a
/// replacing save moved aside, when it died before moving the new one in).
fn resolve_tag(dir: &Path, tag: Option<&str>) -> Result<(String, PathBuf)> {
    let tag = match tag {
        Some(t) => t.to_string(),
        None => {
            let latest = dir.join(LATEST_FILE);
            let text = std::fs::read_to_string(&latest).map_err(|e| {
                Error::checkpoint(
                    &latest,
                    format!("cannot read it ({e}): name the tag to load"),
                )
            })?;
            text.trim().to_string()
        }
    };
    check_tag(&tag)?;
    let mut tag_dir = dir.join(&tag);
    // A save that replaced this tag and died between moving the old copy aside and moving
    // the new one in leaves the old copy complete under `.TAG.old`: load that.
    let aside = dir.join(format!(".{tag}.old"));
    if !tag_dir.exists() && aside.join(STATE_FILE).exists() {
        tag_dir = aside;
    }
    Ok((tag, tag_dir))
}

/// The parsed `engine_state.json` of a tag directory, and its path.
fn read_state(tag_dir: &Path) -> Result<(PathBuf, Value)> {
    let state_path = tag_dir.join(STATE_FILE);
    let text = std::fs::read(&state_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::checkpoint(
                &state_path,
                "is missing: this is not a complete ds checkpoint",
            )
        } else {
            Error::checkpoint(&state_path, format!("cannot read: {e}"))
        }
    })?;
    let state: Value = serde_json::from_slice(&text).map_err(|e| {
        Error::checkpoint(
            &state_path,
            format!("is not valid JSON ({e}): the file is truncated or corrupt"),
        )
    })?;
    if state.get("format").and_then(Value::as_str) != Some(FORMAT) {
        return Err(Error::checkpoint(
            &state_path,
            "is not a ds checkpoint state file",
        ));
    }
    Ok((state_path, state))
}

/// A checkpoint read and checked, ready to apply.
struct Prepared {
    tag: String,
    client_state: Value,
    state_path: PathBuf,
    restored: pieces::Restored,
    loader_state: Option<Value>,
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::checkpoint(path, format!("cannot remove: {e}"))),
    }
}

fn prepare_dir(dir: &Path, partial: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::checkpoint(dir, format!("cannot create: {e}")))?;
    remove_dir(partial)?;
    std::fs::create_dir(partial)
        .map_err(|e| Error::checkpoint(partial, format!("cannot create: {e}")))
}
