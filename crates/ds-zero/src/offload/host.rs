//! The optimizer state, the gradient partition and the step in host memory: ZeRO-Offload's
//! host side, on any host backend (the `ds` crate passes the CPU backend).
//!
//! Host memory per rank, with Ψ parameters over N ranks and Adam: the fp32 master weights and
//! both moments, `12Ψ/N` (the master is kept in fp32 training too, since the device's
//! parameters are then a copy); the gradient partition in the training dtype, `2Ψ/N` (`4Ψ/N`
//! in fp32); and one staging buffer of at most [`STAGING_ELEMENTS`] in the training dtype,
//! through which reduced gradients come in and updated parameters go out, chunk by chunk (every
//! step kernel is elementwise, so chunking changes no result).

use super::nvme::NvmeState;
use super::transfer::to_host;
use super::{Offload, OffloadSettings};
use crate::config::{GradDtypes, OptimizerConfig};
use crate::layout::Layout;
use crate::optimizer::{Optimizer, Prepared, StateKind, StepInputs, views_by_kind};
use crate::owned::{OwnedElements, OwnedElementsMut, Partition};
use crate::store::ParamStore;
use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, DType, Device, Error, MemoryStats, Result};
use std::ops::Range;

/// The most elements the staging buffer holds: 256K (512 KiB of 16-bit values), enough for
/// copies and kernels to run at bandwidth, small enough that a chunk the step wrote is still
/// in cache when it is copied out.
pub(crate) const STAGING_ELEMENTS: usize = 1 << 18;

/// `len` elements from `start`, in staging-sized chunks.
fn chunks(start: usize, len: usize) -> impl Iterator<Item = Range<usize>> {
    (start..start + len)
        .step_by(STAGING_ELEMENTS)
        .map(move |c| c..(c + STAGING_ELEMENTS).min(start + len))
}

/// One rank's offloaded optimizer on host backend `H`.
pub(crate) struct HostOptimizer<H: Backend> {
    host: Device<H>,
    settings: OffloadSettings,
    /// The step count and hyper-parameters, and the state when it is in host memory.
    optimizer: Optimizer<H>,
    /// The state in a swap file (`device: nvme`).
    nvme: Option<NvmeState<H>>,
    /// The reduced gradients of the owned elements, accumulated over the window.
    grads: Partition<H>,
    /// Up to [`STAGING_ELEMENTS`] owned elements in the training dtype.
    staging: H::Buffer,
    /// Reduced gradients arriving in another dtype than the training dtype
    /// (`communication_data_type`), allocated on first use.
    incoming: Option<H::Buffer>,
    /// One f32 squared sum per bucket.
    norms: H::Buffer,
}

impl<H: Backend> HostOptimizer<H> {
    /// The host state for the owned elements of `params` (on `dev`), the fp32 master copied
    /// from them.
    pub(crate) fn new<B: Backend>(
        dev: &Device<B>,
        host: Device<H>,
        settings: OffloadSettings,
        config: OptimizerConfig,
        layout: &Layout,
        params: &ParamStore<B>,
        dtypes: GradDtypes,
    ) -> Result<Self> {
        let dtype = dtypes.model;
        let widest = layout
            .buckets
            .iter()
            .map(|b| b.owned.len())
            .max()
            .unwrap_or(0);
        let staging = host.alloc(dtype, widest.clamp(1, STAGING_ELEMENTS))?;
        let (optimizer, nvme) = match &settings.nvme {
            Some(nvme) => {
                // The master weights are written to the swap file sub-group by sub-group,
                // from the owned parameters.
                let kinds = Optimizer::<H>::kinds_with_master(&config);
                let master = |range: Range<usize>| -> Result<Vec<f32>> {
                    let mut out = Vec::with_capacity(range.len());
                    for (flat, local, n) in bucket_pieces(layout, range) {
                        out.extend(params.owned_f32(dev, layout, flat..flat + n, local)?);
                    }
                    Ok(out)
                };
                let state = NvmeState::new(
                    host.clone(),
                    nvme,
                    layout.rank,
                    kinds,
                    layout.owned_len,
                    master,
                )?;
                (Optimizer::stateless(config), Some(state))
            }
            None => {
                // The owned parameters come over once, to seed the master weights.
                let mut owned = Partition::zeros(&host, layout, dtype)?;
                for b in &layout.buckets {
                    let values = params.owned_f32(dev, layout, b.owned.clone(), b.local)?;
                    crate::host::upload_f32(
                        &host,
                        &values,
                        owned.piece_mut(layout, b.owned.clone(), b.local)?,
                    )?;
                }
                let optimizer = Optimizer::new(&host, config, layout, &owned, dtype, true)?;
                (optimizer, None)
            }
        };
        let grads = Partition::zeros(&host, layout, dtypes.accumulate)?;
        let norms = host.alloc(DType::F32, layout.buckets.len().max(1))?;
        Ok(HostOptimizer {
            host,
            settings,
            optimizer,
            nvme,
            grads,
            staging,
            incoming: None,
            norms,
        })
    }
}

/// What one offloaded step reads and writes besides the optimizer state.
struct StepTargets<'a, B: Backend, H: Backend> {
    host: &'a Device<H>,
    grads: &'a Partition<H>,
    staging: &'a mut H::Buffer,
    dev: &'a Device<B>,
    layout: &'a Layout,
    params: &'a mut ParamStore<B>,
    /// The state kinds of the views `update` is given, in their order.
    kinds: &'a [StateKind],
}

impl<B: Backend, H: Backend> StepTargets<'_, B, H> {
    /// Steps partition elements `range`, whose state (one view per kind of `kinds`) is
    /// `state`, indexed from `range.start`: chunk by chunk through the
    /// staging buffer, each chunk's updated parameters written to the device (or the host
    /// partition under `offload_param`).
    fn update(
        &mut self,
        hp: &Prepared,
        range: Range<usize>,
        state: &mut [ViewMut<'_, H>],
    ) -> Result<()> {
        let start = range.start;
        let (Some(master), mut m, mut v) = views_by_kind(self.kinds, state) else {
            return Err(Error::invalid(
                "offload",
                "state",
                "internal: no master weights",
            ));
        };
        for (flat, local, len) in bucket_pieces(self.layout, range) {
            for c in chunks(0, len) {
                let n = c.len();
                let (at, local) = (local + c.start - start, local + c.start);
                hp.apply(
                    self.host,
                    master.sub(at..at + n),
                    Some(self.staging.range_mut(0..n)),
                    m.as_mut().map(|m| m.sub(at..at + n)),
                    v.as_mut().map(|v| v.sub(at..at + n)),
                    self.grads.0.range(local..local + n),
                )?;
                let flat = flat + c.start;
                self.params.write_from_host(
                    self.dev,
                    self.layout,
                    flat..flat + n,
                    local,
                    self.host,
                    self.staging.range(0..n),
                )?;
            }
        }
        Ok(())
    }
}

/// The parts of the buckets inside partition elements `range`: (flat start, local start,
/// length) each, in order (buckets are consecutive in partition order).
fn bucket_pieces(layout: &Layout, range: Range<usize>) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    for b in &layout.buckets {
        let (lo, hi) = (b.local, b.local + b.owned.len());
        let (start, end) = (lo.max(range.start), hi.min(range.end));
        if start < end {
            out.push((b.owned.start + start - lo, start, end - start));
        }
    }
    out
}

impl<B: Backend, H: Backend> Offload<B> for HostOptimizer<H> {
    fn accumulate(
        &mut self,
        dev: &Device<B>,
        reduced: View<'_, B>,
        local: usize,
        alpha: f32,
    ) -> Result<()> {
        let staging = if reduced.dtype() == ds_core::DeviceBuffer::dtype(&self.staging) {
            &mut self.staging
        } else {
            let len = ds_core::DeviceBuffer::len(&self.staging);
            if self.incoming.is_none() {
                self.incoming = Some(self.host.alloc(reduced.dtype(), len)?);
            }
            self.incoming.as_mut().ok_or_else(|| {
                Error::invalid("offload", "incoming", "internal: no staging buffer")
            })?
        };
        for c in chunks(0, reduced.len()) {
            let n = c.len();
            let from = reduced.sub(c.clone());
            to_host(dev, from, &self.host, staging.range_mut(0..n))?;
            self.host.axpy(
                alpha,
                staging.range(0..n),
                self.grads.0.range_mut(local + c.start..local + c.end),
            )?;
        }
        Ok(())
    }

    fn store(&mut self, dev: &Device<B>, reduced: View<'_, B>, local: usize) -> Result<()> {
        let n = reduced.len();
        to_host(
            dev,
            reduced,
            &self.host,
            self.grads.0.range_mut(local..local + n),
        )
    }

    fn zero_grads(&mut self) -> Result<()> {
        self.host.fill(self.grads.0.all_mut(), 0.0)
    }

    fn bucket_sum_squares(&mut self, layout: &Layout) -> Result<Vec<f32>> {
        for bi in 0..layout.buckets.len() {
            self.host.sum_squares(
                self.grads.owned(layout, bi)?,
                self.norms.range_mut(bi..bi + 1),
            )?;
        }
        let mut parts: Vec<f32> = self.host.to_vec(self.norms.all())?;
        parts.truncate(layout.buckets.len());
        Ok(parts)
    }

    fn step(
        &mut self,
        dev: &Device<B>,
        layout: &Layout,
        params: &mut ParamStore<B>,
        inputs: StepInputs,
    ) -> Result<()> {
        let hp: Prepared = self.optimizer.begin_step(inputs);
        let kinds = Optimizer::<H>::kinds_with_master(self.optimizer.config());
        let mut to = StepTargets {
            host: &self.host,
            grads: &self.grads,
            staging: &mut self.staging,
            dev,
            layout,
            params,
            kinds: &kinds,
        };
        match &mut self.nvme {
            Some(nvme) => nvme.step(|range, mut state| to.update(&hp, range, &mut state)),
            None => {
                let mut state = self.optimizer.state_views();
                to.update(&hp, 0..layout.owned_len, &mut state)
            }
        }
    }

    fn config(&self) -> &OptimizerConfig {
        self.optimizer.config()
    }

    fn steps(&self) -> u64 {
        self.optimizer.steps()
    }

    fn state_bytes(&self) -> u64 {
        match &self.nvme {
            Some(n) => n.state_bytes(),
            None => self.optimizer.state_bytes(),
        }
    }

    fn set_steps(&mut self, steps: u64) {
        self.optimizer.set_steps(steps);
    }

    fn read_piece(&self, kind: StateKind, local: Range<usize>) -> Result<Option<Vec<f32>>> {
        match &self.nvme {
            Some(n) => n.read_piece(kind, local),
            None => self.optimizer.read_piece(&self.host, kind, local),
        }
    }

    fn keeps(&self, kind: StateKind) -> bool {
        match &self.nvme {
            Some(n) => n.keeps(kind),
            None => self.optimizer.keeps(kind),
        }
    }

    fn write_piece(&mut self, kind: StateKind, local: usize, values: &[f32]) -> Result<()> {
        match &mut self.nvme {
            Some(n) => n.write_piece(kind, local, values),
            None => self.optimizer.write_piece(&self.host, kind, local, values),
        }
    }

    fn settings(&self) -> &OffloadSettings {
        &self.settings
    }

    fn host_memory(&self) -> MemoryStats {
        self.host.memory_stats()
    }

    fn host_name(&self) -> &str {
        &self.host.info().name
    }

    fn swap(&self) -> Option<(std::path::PathBuf, String)> {
        self.nvme
            .as_ref()
            .map(|n| (n.path().to_path_buf(), n.io_path().to_string()))
    }
}
