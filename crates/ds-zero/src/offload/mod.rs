//! ZeRO-Offload and ZeRO-Infinity: the optimizer state and the gradient partition in host
//! memory (or the state in NVMe swap files, [`nvme`]), the step on the host; at stage 3 the
//! parameter slices too (`params.rs`).
//!
//! The engine stays generic over its device backend `B`; the host side is another backend `H`
//! (the `ds` crate passes the CPU backend) hidden behind [`Offload`], so the engine's type does
//! not change with offload. The flow per optimizer step, for each rank:
//!
//! 1. Backward reduce-scatters each gradient bucket on the device as soon as it is complete
//!    (stages 2-3) and hands this rank's slice to the host, which adds it into its partition;
//!    at stage 1 the owned slices come over after the boundary's reduce-scatter.
//! 2. The boundary takes the squared norm on the host, bucket by bucket (its non-finite value
//!    is the overflow flag), and all-reduces it with the loss on the device, as without
//!    offload.
//! 3. The host runs the fused step bucket by bucket (unscaling, clipping and averaging folded
//!    into `grad_scale`), writing each bucket's updated parameters in the training dtype into
//!    a staging buffer that goes to the device's owned slice; the device then all-gathers as
//!    without offload.
//!
//! The arithmetic is the non-offloaded engine's, kernel for kernel, so with the CPU backend on
//! both sides an offloaded run is bit-identical to the same run without offload.

mod host;
pub mod nvme;
mod params;
pub mod swap;
mod transfer;

pub(crate) use host::HostOptimizer;
pub(crate) use params::{HostParams, HostPartition, SwapPartition};
pub(crate) use transfer::{to_device, with_host_bytes};

use crate::config::{Config, GradDtypes, OptimizerConfig, OptimizerKind};
use crate::layout::Layout;
use crate::optimizer::{StateKind, StepInputs};
use crate::store::ParamStore;
use crate::{Error as EngineError, Result as EngineResult};
use ds_core::kernels::View;
use ds_core::{Backend, DType, Device, MemoryStats, Result};
use std::ops::Range;

/// Where offloaded state lives, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffloadSettings {
    /// `cpu` (host memory) or `nvme` (a swap file, streamed through host buffers).
    pub device: String,
    /// Whether the config asked for pinned host memory (`pin_memory`).
    pub pin_memory: bool,
    /// The swap settings, with `device: nvme`.
    pub nvme: Option<NvmeSettings>,
}

/// `device: nvme`'s settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmeSettings {
    /// The directory of the swap files.
    pub path: std::path::PathBuf,
    /// Host buffers the state streams through.
    pub buffer_count: usize,
    /// f32 elements per buffer (a sub-group's whole state).
    pub buffer_size: usize,
    /// The most elements in one sub-group (`zero_optimization.sub_group_size`).
    pub sub_group_size: usize,
    /// Read the next sub-groups while one is stepped.
    pub pipeline_read: bool,
    /// Write sub-groups back while the next is stepped.
    pub pipeline_write: bool,
    /// How I/O requests are cut and queued (`aio`).
    pub io: swap::IoShape,
}

/// The swap settings of one offload section with `device: nvme` (the zero section's
/// `sub_group_size`, `aio`'s request shape).
fn nvme_settings(o: &crate::config::OffloadConfig, config: &Config) -> NvmeSettings {
    let (elements, a) = (crate::config::elements, &config.aio);
    NvmeSettings {
        path: o.nvme_path.clone().unwrap_or_default().into(),
        buffer_count: elements(o.buffer_count),
        buffer_size: elements(o.buffer_size),
        sub_group_size: elements(config.zero.stage3.sub_group_size),
        pipeline_read: o.pipeline_read,
        pipeline_write: o.pipeline_write,
        io: swap::IoShape {
            block_size: elements(a.block_size),
            queue_depth: elements(a.queue_depth),
            single_submit: a.single_submit,
        },
    }
}

/// The optimizer offload `config` asks for, if any.
pub(crate) fn requested(config: &Config) -> Option<OffloadSettings> {
    let o = config.zero.offload_optimizer.as_ref()?;
    Some(OffloadSettings {
        device: o.device.clone(),
        pin_memory: o.pin_memory,
        nvme: (o.device == "nvme").then(|| nvme_settings(o, config)),
    })
}

/// The swap settings of `offload_param: {"device": "nvme"}` at stage 3, if configured.
pub(crate) fn param_swap(config: &Config) -> Option<NvmeSettings> {
    let z = &config.zero;
    let p = z
        .offload_param
        .as_ref()
        .filter(|p| p.device == "nvme" && z.stage >= 3)?;
    Some(nvme_settings(p, config))
}

/// Refuses, by name, the offload settings this engine does not run. `offload_param` below
/// stage 3 is ignored, as DeepSpeed ignores it (only stage 3 partitions parameters).
pub(crate) fn check_supported(config: &Config) -> EngineResult<()> {
    let refuse = |what: String| Err(EngineError::Usage(what));
    let z = &config.zero;
    let on_nvme =
        |o: &Option<crate::config::OffloadConfig>| o.as_ref().is_some_and(|o| o.device == "nvme");
    if config.aio.use_gds && (on_nvme(&z.offload_optimizer) || on_nvme(&z.offload_param)) {
        return refuse(
            "aio.use_gds (GPUDirect Storage, NVMe to GPU memory without the host) is not implemented; the swap \
             files go through host buffers: set use_gds false"
                .into(),
        );
    }
    if let Some(o) = &z.offload_optimizer {
        if z.stage == 0 {
            return refuse(
                "zero_optimization.offload_optimizer needs ZeRO stage 1, 2 or 3: it offloads this rank's partition of \
                 the optimizer state (set zero_optimization.stage)"
                    .into(),
            );
        }
        if o.device == "nvme" && o.nvme_path.as_deref().is_none_or(str::is_empty) {
            return refuse(
                "zero_optimization.offload_optimizer.device = nvme needs nvme_path: the directory for the swap files \
                 (on a local NVMe drive)"
                    .into(),
            );
        }
        if o.ratio < 1.0 {
            return refuse(format!(
                "zero_optimization.offload_optimizer.ratio = {} (offloading part of the optimizer state, DeepSpeed's \
                 Twin-Flow) is not implemented; use 1",
                o.ratio
            ));
        }
        if o.super_offload {
            return refuse(
                "zero_optimization.offload_optimizer.super_offload (DeepSpeed's SuperOffload for superchips) is not \
                 implemented; remove it"
                    .into(),
            );
        }
        if let Some(OptimizerKind::Lamb(_)) = config.optimizer.as_ref().map(|c| &c.kind) {
            return refuse(
                "Lamb with zero_optimization.offload_optimizer: its per-tensor trust ratio is not offloaded (nor in \
                 DeepSpeed, whose offload runs Adam, AdamW, Adagrad and Lion); use Adam, AdamW, Adagrad, Lion or SGD"
                    .into(),
            );
        }
    }
    if let Some(p) = &z.offload_param
        && z.stage >= 3
    {
        if p.device == "nvme" && p.nvme_path.as_deref().is_none_or(str::is_empty) {
            return refuse(
                "zero_optimization.offload_param.device = nvme needs nvme_path: the directory for the swap files \
                 (on a local NVMe drive)"
                    .into(),
            );
        }
        if z.offload_optimizer.is_none() {
            return refuse(
                "zero_optimization.offload_param needs offload_optimizer too: the host step writes the updated \
                 parameters into their host partition (add \"offload_optimizer\": {\"device\": \"cpu\"})"
                    .into(),
            );
        }
    }
    Ok(())
}

/// What the engine will do with `config`'s offload sections, for `ds config check`: where the
/// optimizer state and parameters will live, or why the engine refuses the settings.
pub fn plan(config: &Config) -> serde_json::Value {
    use serde_json::json;
    if let Err(e) = check_supported(config) {
        return json!({"refused": e.to_string()});
    }
    let z = &config.zero;
    let optimizer = match &z.offload_optimizer {
        None => json!("device (no offload_optimizer)"),
        Some(o) if o.device == "nvme" => json!({
            "device": "nvme",
            "nvme_path": o.nvme_path,
            "in_swap_file": "fp32 master weights and optimizer moments, one file per rank",
            "on_host": format!(
                "gradient partition (accumulation dtype), {} swap buffers of {} f32",
                o.buffer_count, o.buffer_size
            ),
            "pipeline_read": o.pipeline_read,
            "pipeline_write": o.pipeline_write,
            "io": swap::probe().to_string(),
            "step": "on the host backend's fused kernels, sub-group by sub-group",
        }),
        Some(o) => json!({
            "device": o.device,
            "on_host": "fp32 master weights, optimizer moments, gradient partition (accumulation dtype)",
            "step": "on the host backend's fused kernels, bucket by bucket",
            "pin_memory": o.pin_memory,
        }),
    };
    let param = match (&z.offload_param, z.stage) {
        (None, _) => json!("device (no offload_param)"),
        (Some(_), s) if s < 3 => json!("ignored below ZeRO stage 3, as DeepSpeed ignores it"),
        (Some(o), _) if o.device == "nvme" => json!({
            "device": "nvme",
            "nvme_path": o.nvme_path,
            "in_swap_file": "this rank's slices of the gathered groups (training dtype), one file per rank",
            "on_host": format!("one transfer buffer of {} elements", o.buffer_size),
            "on_device": "the persistent parameters and the groups gathered at the moment",
            "io": swap::probe().to_string(),
        }),
        (Some(o), _) => json!({
            "device": o.device,
            "on_host": "this rank's slices of the gathered groups (training dtype)",
            "on_device": "the persistent parameters and the groups gathered at the moment",
        }),
    };
    json!({"optimizer": optimizer, "param": param})
}

/// The host backend an engine offloads to, behind a trait so the engine's type does not name
/// it.
pub(crate) trait HostSide<B: Backend> {
    /// Its name and memory, for the fit check.
    fn info(&self) -> HostInfo;

    /// A zeroed host partition of `len` parameter elements for `rank` (`offload_param`: in host
    /// memory, or in a swap file with `nvme`).
    fn params(
        &self,
        dtype: DType,
        len: usize,
        rank: usize,
        nvme: Option<&NvmeSettings>,
    ) -> Result<Box<dyn HostParams<B>>>;

    /// The offloaded optimizer over the owned elements of `params`, its gradient partition in
    /// `dtypes.accumulate`.
    fn optimizer(
        self: Box<Self>,
        dev: &Device<B>,
        config: OptimizerConfig,
        layout: &Layout,
        params: &ParamStore<B>,
        dtypes: GradDtypes,
    ) -> Result<Box<dyn Offload<B>>>;
}

/// A host backend and the placement the config asked for.
pub(crate) struct HostBackend<H: Backend> {
    host: Device<H>,
    settings: OffloadSettings,
}

impl<H: Backend> HostBackend<H> {
    pub(crate) fn new(host: Device<H>, settings: OffloadSettings) -> Self {
        HostBackend { host, settings }
    }
}

impl<B: Backend, H: Backend> HostSide<B> for HostBackend<H> {
    fn info(&self) -> HostInfo {
        HostInfo::of(&self.host)
    }

    fn params(
        &self,
        dtype: DType,
        len: usize,
        rank: usize,
        nvme: Option<&NvmeSettings>,
    ) -> Result<Box<dyn HostParams<B>>> {
        Ok(match nvme {
            Some(n) => Box::new(SwapPartition::new(self.host.clone(), n, rank, dtype, len)?),
            None => Box::new(HostPartition::new(self.host.clone(), dtype, len)?),
        })
    }

    fn optimizer(
        self: Box<Self>,
        dev: &Device<B>,
        config: OptimizerConfig,
        layout: &Layout,
        params: &ParamStore<B>,
        dtypes: GradDtypes,
    ) -> Result<Box<dyn Offload<B>>> {
        let h = HostOptimizer::new(
            dev,
            self.host,
            self.settings,
            config,
            layout,
            params,
            dtypes,
        )?;
        Ok(Box::new(h))
    }
}

/// A host backend's name and memory, for the fit check before anything is allocated.
#[derive(Debug, Clone)]
pub(crate) struct HostInfo {
    pub(crate) name: String,
    /// Total bytes (0: unknown, unchecked).
    pub(crate) total: u64,
    pub(crate) free: u64,
}

impl HostInfo {
    pub(crate) fn of<H: Backend>(host: &Device<H>) -> Self {
        let total = host.info().memory_total;
        HostInfo {
            name: host.info().name.clone(),
            total,
            free: total.saturating_sub(host.memory_stats().in_use),
        }
    }
}

/// The host side of an offloaded rank, whatever its host backend.
pub(crate) trait Offload<B: Backend>: Send {
    /// Adds `alpha` times `reduced` (this rank's reduced slice of a bucket, on the device) into
    /// the host gradient partition at `local`.
    fn accumulate(
        &mut self,
        dev: &Device<B>,
        reduced: View<'_, B>,
        local: usize,
        alpha: f32,
    ) -> Result<()>;

    /// Copies `reduced` into the host gradient partition at `local` (stage 1's boundary).
    fn store(&mut self, dev: &Device<B>, reduced: View<'_, B>, local: usize) -> Result<()>;

    /// Zeroes the host gradient partition for a new accumulation window.
    fn zero_grads(&mut self) -> Result<()>;

    /// The squared sum of each bucket's owned gradients, in bucket order.
    fn bucket_sum_squares(&mut self, layout: &Layout) -> Result<Vec<f32>>;

    /// One optimizer step on the host; each bucket's updated owned parameters go to `params`
    /// on the device (the caller all-gathers them).
    fn step(
        &mut self,
        dev: &Device<B>,
        layout: &Layout,
        params: &mut ParamStore<B>,
        inputs: StepInputs,
    ) -> Result<()>;

    /// The optimizer's type and hyper-parameters.
    fn config(&self) -> &OptimizerConfig;

    /// Applied optimizer steps.
    fn steps(&self) -> u64;

    /// Bytes of optimizer state (master weights included).
    fn state_bytes(&self) -> u64;

    /// Sets the applied-step count (a checkpoint load).
    fn set_steps(&mut self, steps: u64);

    /// The `kind` state of partition elements `local`, as f32.
    fn read_piece(&self, kind: StateKind, local: Range<usize>) -> Result<Option<Vec<f32>>>;

    /// Whether the optimizer keeps `kind` state.
    fn keeps(&self, kind: StateKind) -> bool;

    /// Writes `values` into the `kind` state at `local` (nothing when there is no such state).
    fn write_piece(&mut self, kind: StateKind, local: usize, values: &[f32]) -> Result<()>;

    /// The configured placement.
    fn settings(&self) -> &OffloadSettings;

    /// The host backend's memory statistics.
    fn host_memory(&self) -> MemoryStats;

    /// The host backend's name.
    fn host_name(&self) -> &str;

    /// The swap file and its I/O path, with `device: nvme`.
    fn swap(&self) -> Option<(std::path::PathBuf, String)>;
}
