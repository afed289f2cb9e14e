//! Model-state bytes per rank, computed from the same layout the engine allocates with: what
//! `initialize` checks against the device before allocating, and what `ds estimate` prints
//! (DeepSpeed's `estimate_zero3_model_states_mem_needs`, but exact for ds).
//!
//! Model states are the parameters in the training dtype, the gradients, and the optimizer
//! state (fp32 master weights unless training in fp32, and the moments). With Ψ parameters,
//! N ranks and 16-bit training with Adam, ZeRO's formulas are: stage 0 `16Ψ`, stage 1
//! `4Ψ + 12Ψ/N`, stage 2 `2Ψ + 14Ψ/N`, stage 3 `16Ψ/N` plus `2P` for the P persistent
//! parameters every rank keeps whole. Accumulating in fp32 (`data_types.grad_accum_dtype`,
//! DeepSpeed's default for bf16 at stage 0) adds `4Ψ` at stages 0-1 and doubles the gradient
//! partition at stages 2-3. The figures here add the buckets' padding exactly.
//! Activations, stage 2's bucket buffers and stage 3's gathered groups are working memory on
//! top of these.
//!
//! With `offload_optimizer` (stages 1-3) the optimizer state moves to the host with the
//! gradient partition: the host holds `12Ψ/N` (the fp32 master is kept even in fp32 training)
//! plus the `2Ψ/N` gradient partition (`4Ψ/N` in fp32 or with `grad_accum_dtype` fp32); the device keeps the parameters, and at
//! stage 1 the whole gradient it reduces at the boundary. With `offload_param` too (stage 3),
//! the parameter slices move to the host as well (`2Ψ/N`), and the device keeps only the
//! persistent parameters.

use crate::config::{Config, OptimizerKind};
use crate::layout::Layout;
use crate::model::ParamTable;
use crate::offload::HostInfo;
use crate::{Error, Result};
use ds_core::{Backend, DType, Device};

/// One rank's model-state bytes at one ZeRO stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelStates {
    /// The ZeRO stage.
    pub stage: u8,
    /// Parameters in the training dtype (whole, or this rank's slices plus the persistent ones).
    pub params: u64,
    /// Gradients: the whole buffer in the training dtype plus, when the accumulation dtype
    /// differs, the window's sum in it (stages 0-1); or this rank's partition in the
    /// accumulation dtype (stages 2-3).
    pub grads: u64,
    /// fp32 master weights and optimizer moments.
    pub optimizer: u64,
    /// Parameter slices in host memory (`offload_param` at stage 3).
    pub host_params: u64,
    /// The gradient partition in host memory (offload).
    pub host_grads: u64,
    /// Optimizer state in host memory (offload; with NVMe, its swap buffers).
    pub host_optimizer: u64,
    /// Optimizer state in the NVMe swap file (`device: nvme`).
    pub nvme: u64,
}

impl ModelStates {
    /// The model states on the device.
    pub fn total(&self) -> u64 {
        self.params + self.grads + self.optimizer
    }

    /// The model states in host memory (0 without offload).
    pub fn host_total(&self) -> u64 {
        self.host_params + self.host_grads + self.host_optimizer
    }
}

/// The model states `config` (its precision, optimizer, ZeRO and offload settings, with
/// `stage` instead of its own) gives one rank of `world` for `table`.
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
    // offload_param moves stage 3's slices to the host (only with offload_optimizer).
    let params_offloaded =
        stage >= 3 && c.zero.offload_param.is_some() && c.zero.offload_optimizer.is_some();
    let part = owned - persistent_owned;
    let params_on_nvme = c
        .zero
        .offload_param
        .as_ref()
        .filter(|p| p.device == "nvme" && params_offloaded);
    let (params, host_params) = if let Some(p) = params_on_nvme {
        // The slices in the swap file; one transfer buffer in host memory.
        (
            persistent * size,
            p.buffer_size.clamp(1, part.max(1)) * size,
        )
    } else if params_offloaded {
        (persistent * size, part * size)
    } else if stage >= 3 {
        ((owned - persistent_owned + persistent) * size, 0)
    } else {
        (len * size, 0)
    };
    let offload = stage >= 1 && c.zero.offload_optimizer.is_some();
    let master = if dtype == DType::F32 && !offload {
        0
    } else {
        owned
    };
    let moments = match c.optimizer.as_ref().map(|o| &o.kind) {
        Some(OptimizerKind::Adam(_)) => 2 * owned,
        Some(OptimizerKind::Lamb(_)) => 2 * owned + 2 * table.specs().len().max(1) as u64,
        Some(OptimizerKind::Sgd(p)) if p.momentum > 0.0 => owned,
        Some(OptimizerKind::Adagrad(_) | OptimizerKind::Lion(_)) => owned,
        _ => 0,
    };
    let optimizer = 4 * (master + moments);
    // Gradients sum in the accumulation dtype: stage 2-3's partition is in it, and stages 0-1
    // keep the window's sum beside the model's buffer when it differs from the training dtype.
    let grad_dtypes = c.grad_dtypes();
    let partition = owned * grad_dtypes.accumulate.size_bytes() as u64;
    let full_grads = len * size
        + if grad_dtypes.separate_accumulation() {
            len * grad_dtypes.accumulate.size_bytes() as u64
        } else {
            0
        };
    if offload {
        // NVMe keeps the state in the swap file and `buffer_count` buffers of one sub-group's
        // state in host memory (the swapper's geometry, `offload::nvme`).
        let (host_optimizer, nvme) = match crate::offload::requested(&c).and_then(|s| s.nvme) {
            Some(settings) if owned > 0 => {
                let kinds = ((master + moments) / owned) as usize;
                let (group, count) =
                    crate::offload::nvme::swap_buffers(&settings, kinds, owned as usize);
                ((4 * count * kinds * group) as u64, optimizer)
            }
            _ => (optimizer, 0),
        };
        ModelStates {
            stage,
            params,
            grads: if stage >= 2 { 0 } else { full_grads },
            optimizer: 0,
            host_params,
            host_grads: partition,
            host_optimizer,
            nvme: nvme + params_on_nvme.map_or(0, |_| part * size),
        }
    } else {
        ModelStates {
            stage,
            params,
            grads: if stage >= 2 { partition } else { full_grads },
            optimizer,
            host_params: 0,
            host_grads: 0,
            host_optimizer: 0,
            nvme: 0,
        }
    }
}

/// Refuses, before anything is allocated, a stage whose model states do not fit in the
/// device's free memory, naming the bytes and the lowest stage that would fit; with offload,
/// also a host that cannot hold the offloaded states.
pub(crate) fn check_fits<B: Backend>(
    config: &Config,
    table: &ParamTable,
    device: &Device<B>,
    host: Option<&HostInfo>,
    world: usize,
) -> Result<()> {
    let stage = config.zero.stage;
    let need = model_states(config, table, world, stage);
    if let Some(h) = host
        && h.total > 0
        && need.host_total() > h.free
    {
        return Err(Error::Usage(format!(
            "offload_optimizer needs {} bytes of host memory per rank ({} optimizer state, {} gradient partition, {} \
             parameters) but the host ({}) has {} of its {} bytes free: add ranks or host memory",
            need.host_total(),
            need.host_optimizer,
            need.host_grads,
            need.host_params,
            h.name,
            h.free,
            h.total,
        )));
    }
    let total = device.info().memory_total;
    if total == 0 {
        return Ok(());
    }
    let free = total.saturating_sub(device.memory_stats().in_use);
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
        None if config.zero.offload_optimizer.is_none() => {
            let mut offloaded = config.clone();
            offloaded.zero.offload_optimizer = Some(crate::config::OffloadConfig::defaults(
                crate::config::OffloadKind::Optimizer,
                "cpu",
            ));
            let m = model_states(&offloaded, table, world, 3);
            format!(
                "no ZeRO stage fits on {world} ranks (stage 3 needs {} bytes per rank): add ranks, or offload the \
                 optimizer state (offload_optimizer: {{\"device\": \"cpu\"}}: stage 3 would then need {} bytes on the \
                 device and {} on the host)",
                model_states(config, table, world, 3).total(),
                m.total(),
                m.host_total()
            )
        }
        None => format!(
            "no ZeRO stage fits on {world} ranks (stage 3 needs {} bytes per rank on the device): add ranks",
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
