//! Model-state bytes per rank, computed from the same layout the engine allocates with: what
//! `initialize` checks against the device before allocating, and what `ds estimate` prints
//! (DeepSpeed's `estimate_zero3_model_states_mem_needs`, but exact for ds).
//!
//! Model states are the parameters in the training dtype, the gradients, and the optimizer
//! state (fp32 master weights unless training in fp32, and the moments). With Ψ parameters,
//! N ranks and 16-bit training with Adam, ZeRO's formulas are: stage 0 `16Ψ`, stage 1
//! `4Ψ + 12Ψ/N`, stage 2 `2Ψ + 14Ψ/N`, stage 3 `16Ψ/N` plus `2P` for the P persistent
//! parameters every rank keeps whole. The figures here add the buckets' padding exactly.
//! Activations, stage 2's bucket buffers and stage 3's gathered groups are working memory on
//! top of these.

use crate::config::{Config, OptimizerKind};
use crate::layout::Layout;
use crate::model::ParamTable;
use crate::{Error, Result};
use ds_core::{Backend, DType, Device};

/// One rank's model-state bytes at one ZeRO stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelStates {
    /// The ZeRO stage.
    pub stage: u8,
    /// Parameters in the training dtype (whole, or this rank's slices plus the persistent ones).
    pub params: u64,
    /// Gradients in the training dtype (whole, or this rank's partition).
    pub grads: u64,
    /// fp32 master weights and optimizer moments.
    pub optimizer: u64,
}

impl ModelStates {
    /// All model states.
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer
    }
}

/// The model states `config` (its precision, optimizer and ZeRO settings, with `stage`
/// instead of its own) gives one rank of `world` for `table`.
pub fn model_states(config: &Config, table: &ParamTable, world: usize, stage: u8) -> ModelStates {
    let mut c = config.clone();
    c.zero.stage = stage;
    let layout: Layout = crate::engine::layout_for(&c, table, world, 0);
    let dtype = c.precision.dtype();
    let size = dtype.size_bytes() as u64;
    let (len, owned) = (layout.len as u64, layout.owned_len as u64);
    // At stage 3 the persistent bucket is held whole, its owned slice inside it.
    let (persistent, persistent_owned) = layout
        .persistent_bucket()
        .map_or((0, 0), |b| (b.range.len() as u64, b.owned.len() as u64));
    let params = if stage >= 3 {
        owned - persistent_owned + persistent
    } else {
        len
    } * size;
    let grads = if stage >= 2 { owned } else { len } * size;
    let master = if dtype == DType::F32 { 0 } else { owned };
    let moments = match c.optimizer.as_ref().map(|o| &o.kind) {
        Some(OptimizerKind::Adam(_)) => 2 * owned,
        Some(OptimizerKind::Lamb(_)) => 2 * owned + 2 * table.specs().len().max(1) as u64,
        Some(OptimizerKind::Sgd(p)) if p.momentum > 0.0 => owned,
        _ => 0,
    };
    ModelStates {
        stage,
        params,
        grads,
        optimizer: 4 * (master + moments),
    }
}

/// Refuses, before anything is allocated, a stage whose model states do not fit in the
/// device's free memory, naming the bytes and the lowest stage that would fit.
pub(crate) fn check_fits<B: Backend>(
    config: &Config,
    table: &ParamTable,
    device: &Device<B>,
    world: usize,
) -> Result<()> {
    let total = device.info().memory_total;
    if total == 0 {
        return Ok(());
    }
    let free = total.saturating_sub(device.memory_stats().in_use);
    let stage = config.zero.stage;
    let need = model_states(config, table, world, stage);
    if need.total() <= free {
        return Ok(());
    }
    let fitting = (stage + 1..=3)
        .map(|s| model_states(config, table, world, s))
        .find(|m| m.total() <= free);
    let advice = match fitting {
        Some(m) => format!(
            "ZeRO stage {} would need {} bytes per rank and fit",
            m.stage,
            m.total()
        ),
        None => format!(
            "no ZeRO stage fits on {world} ranks (stage 3 needs {} bytes per rank): add ranks",
            model_states(config, table, world, 3).total()
        ),
    };
    Err(Error::Usage(format!(
        "ZeRO stage {stage} needs {} bytes of model states per rank ({} parameters, {} gradients, {} optimizer \
         state) but the device ({}) has {free} of its {total} bytes free; {advice}",
        need.total(),
        need.params,
        need.grads,
        need.optimizer,
        device.info().name,
    )))
}
