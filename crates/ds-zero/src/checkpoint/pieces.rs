//! The tensors of a checkpoint: parameters whole by name, optimizer state in per-rank pieces,
//! and putting them back for whatever world size and stage loads them.

use super::files::read_verified;
use super::{MODEL_FILE, optim_file};
use crate::config::OptimizerKind;
use crate::engine::Engine;
use crate::host::bytes_to_f32;
use crate::model::Model;
use crate::optimizer::StateKind;
use crate::store::ParamStore;
use crate::{Error, Result};
use ds_core::{Backend, DType};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// The optimizer-state kinds a piece can hold.
pub(super) const MASTER: &str = "master";
/// Stage 3's training-dtype parameters, widened to f32 (exact), in per-rank pieces.
pub(super) const PARAM: &str = "param";
const EXP_AVG: &str = "exp_avg";
const EXP_AVG_SQ: &str = "exp_avg_sq";

fn st_dtype(d: DType) -> Result<Dtype> {
    match d {
        DType::F32 => Ok(Dtype::F32),
        DType::F16 => Ok(Dtype::F16),
        DType::BF16 => Ok(Dtype::BF16),
        other => Err(Error::Usage(format!(
            "cannot checkpoint {other:?} parameters"
        ))),
    }
}

pub(super) fn ds_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F16 => Some(DType::F16),
        Dtype::BF16 => Some(DType::BF16),
        _ => None,
    }
}

pub(super) fn serialize(
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    path_hint: &str,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::checkpoint(path_hint, format!("cannot encode `{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("producer".to_string(), "ds".to_string()),
    ]);
    safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::checkpoint(path_hint, e.to_string()))
}

/// The optimizer's kind as recorded in the checkpoint (state shapes differ between them).
pub(super) fn optimizer_kind<B: Backend, M: Model<B>>(e: &Engine<B, M>) -> &'static str {
    match &e.optimizer.config().kind {
        OptimizerKind::Adam(_) => "adam",
        OptimizerKind::Lamb(_) => "lamb",
        OptimizerKind::Sgd(p) if p.momentum > 0.0 => "sgd_momentum",
        OptimizerKind::Sgd(_) => "sgd",
        OptimizerKind::Adagrad(_) => "adagrad",
        OptimizerKind::Lion(_) => "lion",
    }
}

/// Every parameter, whole, in the training dtype; with `whole == false` (stage 3 without
/// `stage3_gather_16bit_weights_on_model_save`) a model file with no tensors, the weights
/// being in the ranks' `param` pieces. At stage 3 gathering is a collective: every rank calls
/// this.
pub(super) fn model_bytes<B: Backend, M: Model<B>>(
    e: &Engine<B, M>,
    whole: bool,
) -> Result<Vec<u8>> {
    let dt = st_dtype(e.dtype)?;
    let mut tensors = Vec::new();
    if whole {
        let bytes = e.params.whole_bytes(&e.dev, e.comm.as_ref(), &e.layout)?;
        for (spec, bytes) in e.table.specs().iter().zip(bytes) {
            tensors.push((spec.name.clone(), dt, spec.shape.clone(), bytes));
        }
    }
    serialize(tensors, MODEL_FILE)
}

/// The state kinds a checkpoint stores, by their piece names.
const STATE_KINDS: [(&str, StateKind); 3] = [
    (MASTER, StateKind::Master),
    (EXP_AVG, StateKind::ExpAvg),
    (EXP_AVG_SQ, StateKind::ExpAvgSq),
];

/// This rank's pieces of master weights and moments, keyed `KIND:START:NAME`, wherever the
/// optimizer keeps them (device or offloaded host: the format is the same).
pub(super) fn optim_bytes<B: Backend, M: Model<B>>(e: &Engine<B, M>) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for (i, spec) in e.table.specs().iter().enumerate() {
        let Some((range, local)) = e.layout.owned_piece(i) else {
            continue;
        };
        let start = range.start - e.layout.slots[i].offset;
        let mut pieces = Vec::new();
        for (name, kind) in STATE_KINDS {
            if let Some(values) =
                e.optimizer
                    .read_piece(&e.dev, kind, local..local + range.len())?
            {
                pieces.push((name, values));
            }
        }
        if matches!(e.params, ParamStore::Partitioned(_)) {
            let values = e
                .params
                .owned_f32(&e.dev, &e.layout, range.clone(), local)?;
            pieces.push((PARAM, values));
        }
        for (kind, values) in pieces {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            tensors.push((
                format!("{kind}:{start}:{}", spec.name),
                Dtype::F32,
                vec![range.len()],
                bytes,
            ));
        }
    }
    serialize(tensors, &optim_file(e.layout.rank))
}

/// The verified bytes of a checkpoint's tensor files.
pub(super) struct Files {
    pub(super) model: (std::path::PathBuf, Vec<u8>),
    pub(super) optim: Vec<(std::path::PathBuf, Vec<u8>)>,
}

/// Reads every file `engine_state.json` lists, verifying sizes and checksums.
pub(super) fn read_files(tag_dir: &Path, state_path: &Path, state: &Value) -> Result<Files> {
    let bad = |what: &str| {
        Error::checkpoint(
            state_path,
            format!("{what}: the file is truncated or corrupt"),
        )
    };
    let list = state
        .get("files")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("has no file list"))?;
    let mut model = None;
    let mut optim = Vec::new();
    for entry in list {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("lists a file without a name"))?;
        if name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(bad("lists a file outside its directory"));
        }
        let size = entry
            .get("bytes")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("lists a file without a size"))?;
        let sum = entry
            .get("fnv1a64")
            .and_then(Value::as_str)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| bad("lists a file without a checksum"))?;
        let path = tag_dir.join(name);
        let bytes = read_verified(&path, size, sum)?;
        if name == MODEL_FILE {
            model = Some((path, bytes));
        } else {
            optim.push((path, bytes));
        }
    }
    let model = model.ok_or_else(|| {
        Error::checkpoint(tag_dir.join(MODEL_FILE), "is not listed in the checkpoint")
    })?;
    if optim.is_empty() {
        return Err(Error::checkpoint(
            tag_dir.join(optim_file(0)),
            "is not listed in the checkpoint",
        ));
    }
    Ok(Files { model, optim })
}

/// Everything a load puts back, assembled and checked on the host before the engine changes.
pub(super) struct Restored {
    /// Per parameter: the model file's values (widened to f32).
    model: Vec<Vec<f32>>,
    /// Per kind, per parameter: the whole assembled array.
    state: HashMap<&'static str, Vec<Vec<f32>>>,
    counters: crate::engine::Counters,
    optimizer_steps: u64,
    schedule_iter: i64,
    scaler: crate::scaler::LossScaler,
}

/// The counters, optimizer step count, LR schedule position and loss scaler in the state
/// file, checked for consistency (a damaged but well-formed file must not reach the engine).
fn read_scalars<B: Backend, M: Model<B>>(
    e: &Engine<B, M>,
    state_path: &Path,
    state: &Value,
) -> Result<(crate::engine::Counters, u64, i64, crate::scaler::LossScaler)> {
    let bad = |what: &str| Error::checkpoint(state_path, format!("{what}: the file is damaged"));
    let count = |k: &str| {
        state
            .get("counters")
            .and_then(|c| c.get(k))
            .and_then(Value::as_u64)
    };
    let (Some(global_steps), Some(global_samples), Some(skipped_steps)) = (
        count("global_steps"),
        count("global_samples"),
        count("skipped_steps"),
    ) else {
        return Err(bad("has no step counters"));
    };
    let optimizer_steps = state
        .get("optimizer_steps")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("has no optimizer step count"))?;
    let schedule_iter = state
        .pointer("/lr_schedule/last_batch_iteration")
        .and_then(Value::as_i64)
        .ok_or_else(|| bad("has no LR schedule position"))?;
    const LIMIT: u64 = 1 << 53;
    if skipped_steps > global_steps
        || optimizer_steps > global_steps
        || global_steps > LIMIT
        || global_samples > LIMIT
        || !(-1..LIMIT as i64).contains(&schedule_iter)
    {
        return Err(bad("has inconsistent step counters"));
    }
    // Micro-steps follow from the optimizer steps and *this* config's accumulation, so a run
    // may resume with another world size or micro-batch (same global batch).
    let micro_steps = global_steps
        .checked_mul(e.config.batch.gradient_accumulation_steps)
        .ok_or_else(|| bad("has a step count too large for this accumulation"))?;
    let mut scaler = e.scaler.clone();
    let scaler_state = state.get("loss_scaler").cloned().unwrap_or(Value::Null);
    if scaler.restore(&scaler_state).is_none() {
        return Err(Error::checkpoint(
            state_path,
            "has no valid loss scaler state for this precision (was it saved in another precision?)",
        ));
    }
    let counters = crate::engine::Counters {
        global_steps,
        global_samples,
        skipped_steps,
        micro_steps,
    };
    Ok((counters, optimizer_steps, schedule_iter, scaler))
}

impl Restored {
    pub(super) fn build<B: Backend, M: Model<B>>(
        e: &Engine<B, M>,
        state_path: &Path,
        state: &Value,
        files: &Files,
    ) -> Result<Restored> {
        // A damaged list reads as empty, and then does not fit the model.
        let saved = saved_parameters(state_path, state).unwrap_or_default();
        let ours: Vec<(String, Vec<usize>)> = e
            .table
            .specs()
            .iter()
            .map(|s| (s.name.clone(), s.shape.clone()))
            .collect();
        if saved != ours {
            let first = ours.iter().zip(&saved).find(|(a, b)| a != b);
            let detail = match first {
                Some((a, b)) => format!(
                    "the model has `{}` {:?} where the checkpoint has `{}` {:?}",
                    a.0, a.1, b.0, b.1
                ),
                None => format!(
                    "the model has {} parameters, the checkpoint {}",
                    ours.len(),
                    saved.len()
                ),
            };
            return Err(Error::checkpoint(
                state_path,
                format!("does not fit this model: {detail}"),
            ));
        }
        let kind = state
            .get("optimizer")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if kind != optimizer_kind(e) {
            return Err(Error::checkpoint(
                state_path,
                format!(
                    "holds `{kind}` optimizer state but the config asks for `{}`",
                    optimizer_kind(e)
                ),
            ));
        }
        let model = match read_model(e, files)? {
            Some(model) => model,
            None => assemble(e, files, PARAM, state_path)?.ok_or_else(|| {
                Error::checkpoint(
                    &files.model.0,
                    "has no tensors and no rank saved `param` pieces: the weights are missing",
                )
            })?,
        };
        let mut arrays = HashMap::new();
        let needed: &[&'static str] = match optimizer_kind(e) {
            "adam" | "lamb" => &[EXP_AVG, EXP_AVG_SQ],
            "sgd_momentum" => &[EXP_AVG],
            _ => &[],
        };
        for kind in [MASTER, EXP_AVG, EXP_AVG_SQ] {
            if let Some(found) = assemble(e, files, kind, state_path)? {
                arrays.insert(kind, found);
            } else if needed.contains(&kind) {
                return Err(Error::checkpoint(
                    state_path,
                    format!("has no `{kind}` optimizer state"),
                ));
            }
        }
        let (counters, optimizer_steps, schedule_iter, scaler) =
            read_scalars(e, state_path, state)?;
        Ok(Restored {
            model,
            state: arrays,
            counters,
            optimizer_steps,
            schedule_iter,
            scaler,
        })
    }

    /// Writes the restored state into the engine (everything was checked by `build`).
    pub(super) fn apply<B: Backend, M: Model<B>>(
        self,
        e: &mut Engine<B, M>,
        state_path: &Path,
    ) -> Result<()> {
        // Parameters: the fp32 master when the checkpoint has it (exact), else the model file.
        let weights = self.state.get(MASTER).unwrap_or(&self.model);
        for (i, w) in weights.iter().enumerate() {
            e.params.load_param(&e.dev, &e.layout, i, w)?;
        }
        e.params.after_load(&e.dev, e.comm.as_ref(), &e.layout)?;
        let pieces: Vec<_> = (0..e.table.specs().len())
            .filter_map(|i| e.layout.owned_piece(i).map(|p| (i, p)))
            .collect();
        for (name, kind) in STATE_KINDS {
            if !e.optimizer.keeps(kind) {
                continue;
            }
            // Master weights saved in fp32 training are the parameters themselves.
            let source = match self.state.get(name) {
                Some(s) => s,
                None if kind == StateKind::Master => &self.model,
                None => &Vec::new(),
            };
            for (i, (range, local)) in &pieces {
                let start = range.start - e.layout.slots[*i].offset;
                let Some(values) = source
                    .get(*i)
                    .and_then(|v| v.get(start..start + range.len()))
                else {
                    return Err(Error::checkpoint(
                        state_path,
                        format!("has no `{name}` optimizer state"),
                    ));
                };
                e.optimizer.write_piece(&e.dev, kind, *local, values)?;
            }
        }
        e.optimizer.set_steps(self.optimizer_steps);
        e.schedule_iter = self.schedule_iter;
        e.scaler = self.scaler;
        e.counters = self.counters;
        // The curriculum's difficulty follows from the steps taken (replayed exactly).
        if let Some(c) = &e.config.curriculum {
            e.curriculum = Some(crate::config::Curriculum::after(
                c.clone(),
                self.counters.global_steps,
            ));
        }
        e.reset_window()?;
        Ok(())
    }
}

/// The model file's weights, or `None` when it holds no tensors (a stage-3 save without
/// gathering, whose weights are the ranks' `param` pieces).
fn read_model<B: Backend, M: Model<B>>(
    e: &Engine<B, M>,
    files: &Files,
) -> Result<Option<Vec<Vec<f32>>>> {
    let (path, bytes) = &files.model;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|err| {
        Error::checkpoint(path, format!("is not a valid safetensors file: {err}"))
    })?;
    if st.is_empty() && !e.table.specs().is_empty() {
        return Ok(None);
    }
    e.table
        .specs()
        .iter()
        .map(|spec| {
            let (shape, values) = tensor_f32(&st, path, &spec.name)?;
            if shape != spec.shape {
                return Err(Error::checkpoint(
                    path,
                    format!(
                        "`{}` has shape {shape:?}, the model {:?}",
                        spec.name, spec.shape
                    ),
                ));
            }
            Ok(values)
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Tensor `name` of a model file (at `path`, for errors): its shape and values widened to f32.
pub(super) fn tensor_f32(
    st: &safetensors::SafeTensors<'_>,
    path: &Path,
    name: &str,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|_| Error::checkpoint(path, format!("has no tensor `{name}`")))?;
    let dt = ds_dtype(t.dtype()).ok_or_else(|| {
        Error::checkpoint(
            path,
            format!("`{name}` is {:?}, not a float type ds trains in", t.dtype()),
        )
    })?;
    Ok((t.shape().to_vec(), bytes_to_f32(dt, t.data())?))
}

/// The parameter names and shapes `engine_state.json` lists.
pub(super) fn saved_parameters(
    state_path: &Path,
    state: &serde_json::Value,
) -> Result<Vec<(String, Vec<usize>)>> {
    let bad = || {
        Error::checkpoint(
            state_path,
            "has no valid parameter list: the file is damaged",
        )
    };
    let list = state
        .get("parameters")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(bad)?;
    list.iter()
        .map(|p| {
            let name = p
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(bad)?;
            let shape = p
                .get("shape")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(bad)?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(bad))
                .collect::<Result<Vec<_>>>()?;
            Ok((name.to_string(), shape))
        })
        .collect()
}

/// Assembles the whole per-parameter arrays of `kind` from every rank's pieces; `None` when no
/// file has that kind.
fn assemble<B: Backend, M: Model<B>>(
    e: &Engine<B, M>,
    files: &Files,
    kind: &str,
    state_path: &Path,
) -> Result<Option<Vec<Vec<f32>>>> {
    let params: Vec<(&str, usize)> = e
        .table
        .specs()
        .iter()
        .map(|s| (s.name.as_str(), s.numel()))
        .collect();
    assemble_pieces(&params, files, kind, state_path)
}

/// [`assemble`] for parameters given by name and element count, in order (what consolidation
/// reads from the model file, without an engine).
pub(super) fn assemble_pieces(
    params: &[(&str, usize)],
    files: &Files,
    kind: &str,
    state_path: &Path,
) -> Result<Option<Vec<Vec<f32>>>> {
    let index: HashMap<&str, usize> = params
        .iter()
        .enumerate()
        .map(|(i, (name, _))| (*name, i))
        .collect();
    let mut arrays: Vec<Vec<f32>> = params.iter().map(|(_, n)| vec![0.0; *n]).collect();
    let mut covered = vec![0usize; params.len()];
    let mut any = false;
    for (path, bytes) in &files.optim {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|err| {
            Error::checkpoint(path, format!("is not a valid safetensors file: {err}"))
        })?;
        for (key, t) in st.iter() {
            let mut parts = key.splitn(3, ':');
            let (Some(k), Some(start), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::checkpoint(
                    path,
                    format!("has an unexpected tensor `{key}`"),
                ));
            };
            if k != kind {
                continue;
            }
            any = true;
            let (Some(&i), Ok(start)) = (index.get(name), start.parse::<usize>()) else {
                return Err(Error::checkpoint(
                    path,
                    format!("has state for `{name}`, which the model does not have"),
                ));
            };
            let values = bytes_to_f32(DType::F32, t.data())?;
            let end = start.saturating_add(values.len());
            if t.dtype() != Dtype::F32 || end > arrays[i].len() {
                return Err(Error::checkpoint(
                    path,
                    format!("piece `{key}` does not fit parameter `{name}`"),
                ));
            }
            arrays[i][start..end].copy_from_slice(&values);
            covered[i] += values.len();
        }
    }
    if !any {
        return Ok(None);
    }
    for (i, (name, numel)) in params.iter().enumerate() {
        if covered[i] != *numel {
            return Err(Error::checkpoint(
                state_path,
                format!(
                    "`{kind}` state of `{name}` covers {} of its {numel} elements: an optimizer file is missing from the list",
                    covered[i],
                ),
            ));
        }
    }
    Ok(Some(arrays))
}
