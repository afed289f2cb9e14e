//! The training engine: DeepSpeed's `initialize` → `forward` / `backward(loss)` / `step()`.
//!
//! The user calls `forward`, `backward` and `step` on every micro-batch; `step` applies the
//! optimizer only at a gradient-accumulation boundary (every `gradient_accumulation_steps`
//! micro-steps), as DeepSpeed does. `backward` scales the loss by the loss scale and divides it
//! by the accumulation steps. At the boundary the engine reduces the gradients over ranks
//! (per the ZeRO stage), computes the global gradient norm over all ranks, detects overflow
//! from it, and applies the optimizer with unscaling, clipping and averaging fused into one
//! gradient multiplier; a step whose gradients overflowed is skipped and counted, and the LR
//! schedule does not advance.

mod boundary;
mod init;
mod log;
mod optimizer_state;

pub(crate) use init::layout_for;
pub use init::{Initialized, initialize, initialize_with_host};
pub use optimizer_state::{OffloadReport, OptimizerState};

use crate::config::Config;
use crate::grads::{Grads, Sink};
use crate::host::{bytes_to_f32, download_f32};
use crate::layout::Layout;
use crate::model::{Model, ParamSpec, ParamTable};
use crate::optimizer::StateKind;
use crate::owned::OwnedElements;
use crate::scaler::LossScaler;
use crate::schedule::LrSchedule;
use crate::store::ParamStore;
use crate::zero3::{Zero3Event, Zero3Stats};
use crate::{Error, Result};
use ds_core::{Backend, Collectives, DType, Device, MemoryStats};
use std::time::Duration;

/// The engine's step counters, as DeepSpeed names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Optimizer steps taken, skipped ones included.
    pub global_steps: u64,
    /// Samples consumed by those steps over all ranks.
    pub global_samples: u64,
    /// Steps skipped because the gradients overflowed.
    pub skipped_steps: u64,
    /// Micro-steps (forward/backward/step rounds) taken.
    pub micro_steps: u64,
}

/// Parameter elements moved through collectives (see [`Engine::traffic`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Gradient elements reduced.
    pub reduced_elements: u64,
    /// Parameter elements all-gathered.
    pub gathered_elements: u64,
}

/// The loss of one forward, which `backward` takes back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    /// The mean loss of this rank's micro-batch.
    pub value: f32,
    forward_id: u64,
}

/// What one optimizer step (an accumulation boundary) did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// `global_steps` after this step.
    pub global_step: u64,
    /// The loss averaged over ranks and micro-steps of this step.
    pub loss: f32,
    /// The LR the step used (or would have used, when skipped).
    pub lr: f64,
    /// The loss scale the step's gradients carried (1 without fp16).
    pub loss_scale: f32,
    /// The global L2 norm of the unscaled, averaged gradients, before clipping; `None` when
    /// they overflowed.
    pub grad_norm: Option<f32>,
    /// Whether the step was skipped because the gradients overflowed.
    pub skipped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Ready for a forward.
    Ready,
    /// A forward ran; its loss (by forward number) awaits backward.
    Forwarded(u64),
    /// Backward ran; `step` must come next.
    Backwarded,
    /// A backward or step failed part-way: the state is undefined.
    Broken,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Timers {
    forward: Duration,
    backward: Duration,
    step: Duration,
}

/// A model being trained: its parameters, gradients, optimizer state, loss scaler, LR schedule
/// and counters, on one rank.
pub struct Engine<B: Backend, M: Model<B>> {
    pub(crate) config: Config,
    pub(crate) dev: Device<B>,
    pub(crate) comm: Box<dyn Collectives<B>>,
    pub(crate) model: M,
    pub(crate) table: ParamTable,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) params: ParamStore<B>,
    pub(crate) grads: Grads<B>,
    pub(crate) optimizer: OptimizerState<B>,
    pub(crate) schedule: Option<LrSchedule>,
    /// DeepSpeed's `last_batch_iteration`: -1 until the first applied step.
    pub(crate) schedule_iter: i64,
    pub(crate) scaler: LossScaler,
    pub(crate) counters: Counters,
    pub(crate) phase: Phase,
    /// Forwards run, to match a loss to its forward.
    pub(crate) forwards: u64,
    /// Sum of this rank's micro-step losses in the current accumulation window.
    pub(crate) window_loss: f64,
    /// One f32 per bucket for the squared norms, and two for the cross-rank reduction.
    pub(crate) norm_parts: B::Buffer,
    pub(crate) reduced: B::Buffer,
    pub(crate) timers: Timers,
    /// Elements all-gathered after optimizer steps (stages 1-2; stage 3's persistent ones).
    pub(crate) step_gathered: u64,
    pub(crate) log: log::LogState,
    pub(crate) save_fault: Option<usize>,
    /// `curriculum_learning`'s state, when enabled.
    pub(crate) curriculum: Option<crate::config::Curriculum>,
}

impl<B: Backend, M: Model<B>> Engine<B, M> {
    /// The model's loss on `batch` without training on it (a validation pass): a forward with
    /// no backward to follow, which leaves the engine as it was (a checkpoint can be saved
    /// right after). Every rank calls it alike (at stage 3 the forward gathers parameters).
    ///
    /// # Errors
    /// [`Error::Usage`] between a forward and its step (the model holds that forward's
    /// activations); model and kernel errors.
    pub fn evaluate(&mut self, batch: &M::Batch) -> Result<f32> {
        if self.phase != Phase::Ready {
            return Err(Error::Usage(
                "evaluate between training steps: after step(), before the next forward".into(),
            ));
        }
        // Curriculum learning shortens training sequences only (DeepSpeed applies it when the
        // module is training): evaluation sees them whole.
        if self.curriculum.is_some() {
            self.model.set_curriculum_seqlen(usize::MAX)?;
        }
        let loss = self.forward_model(batch)?;
        self.phase = Phase::Ready;
        Ok(loss.value)
    }

    /// Runs the model forward on this rank's micro-batch and returns its loss.
    ///
    /// # Errors
    /// [`Error::Usage`] when `backward` ran but `step` did not; model and kernel errors.
    pub fn forward(&mut self, batch: &M::Batch) -> Result<Loss> {
        match self.phase {
            Phase::Backwarded => {
                return Err(Error::Usage(
                    "forward after backward: call step() after every backward, as with DeepSpeed"
                        .into(),
                ));
            }
            Phase::Broken => return Err(broken()),
            Phase::Ready | Phase::Forwarded(_) => {}
        }
        if let Some(c) = &mut self.curriculum {
            // DeepSpeed's engine: the difficulty of step global_steps + 1, before each forward.
            let seqlen = c.update(self.counters.global_steps + 1);
            self.model
                .set_curriculum_seqlen(usize::try_from(seqlen).unwrap_or(usize::MAX))?;
        }
        self.forward_model(batch)
    }

    /// The model's forward on `batch`, gathering (stage 3) what it reads.
    fn forward_model(&mut self, batch: &M::Batch) -> Result<Loss> {
        let t = std::time::Instant::now();
        self.params.begin_forward();
        let (dev, comm, model) = (&self.dev, self.comm.as_ref(), &mut self.model);
        let value = self.params.with_params(
            dev,
            comm,
            &self.layout,
            &self.table,
            "Model::forward",
            |params| model.forward(dev, params, batch),
        );
        let value = match value {
            Ok(v) => v,
            Err(e) => {
                // Nothing a failed forward gathered outlives it (every rank fails alike: the
                // same code meets the same batch shapes and scopes).
                self.params.release_gathered(&self.layout);
                return Err(e.into());
            }
        };
        self.timers.forward += t.elapsed();
        self.forwards += 1;
        self.phase = Phase::Forwarded(self.forwards);
        Ok(Loss {
            value,
            forward_id: self.forwards,
        })
    }

    /// Back-propagates `loss` (the last forward's) into the engine's gradients, scaled by the
    /// loss scale and divided by the accumulation steps; with ZeRO stage 2 each gradient bucket
    /// is reduce-scattered as soon as it is complete.
    ///
    /// # Errors
    /// [`Error::Usage`] for a loss that is not the last forward's; model, kernel and
    /// collective errors (after which the engine refuses further work: reload a checkpoint).
    pub fn backward(&mut self, loss: &Loss) -> Result<()> {
        match self.phase {
            Phase::Forwarded(id) if id == loss.forward_id => {}
            Phase::Broken => return Err(broken()),
            _ => {
                return Err(Error::Usage(
                    "backward needs the loss returned by the last forward (the model keeps only the last \
                     forward's activations)"
                        .into(),
                ));
            }
        }
        let t = std::time::Instant::now();
        let gas = self.config.batch.gradient_accumulation_steps as f32;
        let scale = self.scaler.scale() * self.pre_scale() / gas;
        let post_scale = self.post_scale();
        self.phase = Phase::Broken;
        self.grads.begin_backward(&self.layout);
        self.params.begin_backward();
        let (dev, comm, model) = (&self.dev, self.comm.as_ref(), &mut self.model);
        let mut sink = Sink {
            grads: &mut self.grads,
            layout: &self.layout,
            dev,
            comm,
            post_scale,
            host: self.optimizer.host_mut(),
        };
        self.params.with_params(
            dev,
            comm,
            &self.layout,
            &self.table,
            "Model::backward",
            |params| model.backward(dev, params, &mut sink, scale),
        )?;
        self.params.release_gathered(&self.layout);
        self.grads.end_backward(&self.dev, self.table.specs())?;
        self.window_loss += f64::from(loss.value);
        self.phase = Phase::Backwarded;
        self.timers.backward += t.elapsed();
        Ok(())
    }

    /// Ends a micro-step. At a gradient-accumulation boundary it takes the optimizer step and
    /// returns its report; otherwise it returns `None`.
    ///
    /// # Errors
    /// [`Error::Usage`] without a backward first; [`Error::ScaleFloor`] when fp16 gradients
    /// overflow at the minimum loss scale; kernel and collective errors.
    pub fn step(&mut self) -> Result<Option<StepReport>> {
        match self.phase {
            Phase::Backwarded => {}
            Phase::Broken => return Err(broken()),
            _ => {
                return Err(Error::Usage(
                    "step needs a backward in this micro-step first".into(),
                ));
            }
        }
        self.counters.micro_steps += 1;
        self.phase = Phase::Ready;
        if !self
            .counters
            .micro_steps
            .is_multiple_of(self.config.batch.gradient_accumulation_steps)
        {
            return Ok(None);
        }
        let t = std::time::Instant::now();
        self.phase = Phase::Broken;
        let report = self.boundary_step()?;
        self.phase = Phase::Ready;
        self.timers.step += t.elapsed();
        self.log_step(&report);
        Ok(Some(report))
    }

    /// Whether the next `step` is an accumulation boundary.
    pub fn is_gradient_accumulation_boundary(&self) -> bool {
        (self.counters.micro_steps + 1)
            .is_multiple_of(self.config.batch.gradient_accumulation_steps)
    }

    /// One whole optimizer step: `gradient_accumulation_steps` micro-batches from `loader`,
    /// each through forward, backward and step.
    ///
    /// # Errors
    /// [`Error::Usage`] when the dataset is smaller than one global batch; as the three calls.
    pub fn train_batch<D>(&mut self, loader: &mut crate::data::DataLoader<D>) -> Result<StepReport>
    where
        D: crate::data::Dataset,
        M: Model<B, Batch = Vec<D::Item>>,
    {
        loop {
            let batch = loader.next_batch().ok_or_else(|| {
                Error::Usage(format!(
                    "the dataset ({} samples) is smaller than one global batch of {}",
                    loader.dataset().len(),
                    self.config.batch.train_batch_size
                ))
            })?;
            let loss = self.forward(&batch)?;
            self.backward(&loss)?;
            if let Some(report) = self.step()? {
                return Ok(report);
            }
        }
    }

    /// How gradients are averaged over ranks: `(before, after)` the reduction, as DeepSpeed
    /// does it. Summing (`gradient_allreduce_op: "sum"`): `(1, 1)`. `prescale_gradients`:
    /// `(1/world, 1)`. ZeRO 1-2 (DeepSpeed's reduce-scatter path divides before reducing, which
    /// keeps loss-scaled fp16 sums N times further from overflow): `(1/world, 1)`. Otherwise
    /// (stage 0, or a `gradient_predivide_factor` f): `(1/f, f/world)`. The factor before is
    /// folded into backward's scale and the one after into the optimizer's gradient multiplier.
    fn averaging(&self) -> (f32, f32) {
        let world = self.layout.world as f32;
        let f = self.config.gradient_predivide_factor;
        if !self.config.gradient_average {
            (1.0, 1.0)
        } else if self.config.prescale_gradients || (self.config.zero.stage >= 1 && f == 1.0) {
            (1.0 / world, 1.0)
        } else {
            (1.0 / f, f / world)
        }
    }

    fn pre_scale(&self) -> f32 {
        self.averaging().0
    }

    pub(crate) fn post_scale(&self) -> f32 {
        self.averaging().1
    }

    /// The resolved configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The step counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The LR the next optimizer step will use.
    pub fn lr(&self) -> f64 {
        match &self.schedule {
            Some(s) => s.lr_at(self.schedule_iter),
            None => f64::from(self.optimizer.config().lr()),
        }
    }

    /// The current loss scale (1 without fp16).
    pub fn loss_scale(&self) -> f32 {
        self.scaler.scale()
    }

    /// The loss scaler.
    pub fn loss_scaler(&self) -> &LossScaler {
        &self.scaler
    }

    /// The optimizer (configuration, state size, applied steps, offload placement).
    pub fn optimizer(&self) -> &OptimizerState<B> {
        &self.optimizer
    }

    /// The LR schedule, when the config has one.
    pub fn lr_schedule(&self) -> Option<&LrSchedule> {
        self.schedule.as_ref()
    }

    /// DeepSpeed's `last_batch_iteration` of the LR schedule (-1 before the first applied step).
    pub fn lr_schedule_iteration(&self) -> i64 {
        self.schedule_iter
    }

    /// The device.
    pub fn device(&self) -> &Device<B> {
        &self.dev
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutable (for evaluation settings and the like).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.layout.rank
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.layout.world
    }

    /// The flat layout of the parameters on this rank.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The training dtype of the parameters and gradients.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The backend's memory statistics for this rank's device.
    pub fn memory_stats(&self) -> MemoryStats {
        self.dev.memory_stats()
    }

    /// Every parameter's current values (widened to f32), by name, in model order. At ZeRO
    /// stage 3 this gathers every group, so every rank must call it.
    ///
    /// # Errors
    /// Download and collective errors.
    pub fn parameters(&self) -> Result<Vec<(String, Vec<f32>)>> {
        let bytes = self
            .params
            .whole_bytes(&self.dev, self.comm.as_ref(), &self.layout)?;
        self.table
            .specs()
            .iter()
            .zip(bytes)
            .map(|(spec, b)| Ok((spec.name.clone(), bytes_to_f32(self.dtype, &b)?)))
            .collect()
    }

    /// This rank's fp32 master weights of the elements it owns (the parameters themselves in
    /// fp32 training), in its partition order.
    ///
    /// # Errors
    /// Download errors.
    pub fn master_partition(&self) -> Result<Vec<f32>> {
        let all = 0..self.layout.owned_len;
        if let Some(master) = self
            .optimizer
            .read_piece(&self.dev, StateKind::Master, all)?
        {
            return Ok(master);
        }
        let mut out = Vec::with_capacity(self.layout.owned_len);
        for bi in 0..self.layout.buckets.len() {
            out.extend(download_f32(
                &self.dev,
                self.params.owned(&self.layout, bi)?,
            )?);
        }
        Ok(out)
    }

    /// The model's parameter descriptions, in order.
    pub fn param_specs(&self) -> &[ParamSpec] {
        self.table.specs()
    }

    /// The model's parameters and groups.
    pub fn param_table(&self) -> &ParamTable {
        &self.table
    }

    /// The parameter elements this rank has passed through collectives since initialize:
    /// gradients reduced (all-reduce or reduce-scatter) and parameters all-gathered (after
    /// steps, and at stage 3 for every group's use). Divide by the steps for the per-step
    /// volume the ZeRO paper counts (Ψ each way at stages 1-2; at stage 3, 2Ψ gathered).
    pub fn traffic(&self) -> Traffic {
        let groups = self.zero3_stats().map_or(0, |s| s.gathered_elements);
        Traffic {
            reduced_elements: self.grads.reduced_elements,
            gathered_elements: self.step_gathered + groups,
        }
    }

    /// ZeRO stage 3's gather counters (`None` at stages 0-2).
    pub fn zero3_stats(&self) -> Option<Zero3Stats> {
        match &self.params {
            ParamStore::Partitioned(p) => Some(p.stats()),
            ParamStore::Flat(_) => None,
        }
    }

    /// What ZeRO stage 3 gathered, kept and released during the current or last micro-step,
    /// in order (empty at stages 0-2).
    pub fn zero3_events(&self) -> &[Zero3Event] {
        match &self.params {
            ParamStore::Partitioned(p) => p.events(),
            ParamStore::Flat(_) => &[],
        }
    }

    /// Whether the engine sits between accumulation windows, ready for a forward.
    pub(crate) fn at_clean_boundary(&self) -> bool {
        self.phase == Phase::Ready
            && self
                .counters
                .micro_steps
                .is_multiple_of(self.config.batch.gradient_accumulation_steps)
    }

    /// Starts a fresh accumulation window (after a checkpoint load).
    pub(crate) fn reset_window(&mut self) -> Result<()> {
        self.zero_grads()?;
        self.window_loss = 0.0;
        self.phase = Phase::Ready;
        Ok(())
    }

    /// Zeroes the gradients, on the device and, offloaded, on the host.
    pub(crate) fn zero_grads(&mut self) -> Result<()> {
        self.grads.zero(&self.dev)?;
        if let Some(host) = self.optimizer.host_mut() {
            host.zero_grads()?;
        }
        Ok(())
    }

    /// The device, the collectives and a two-f32 scratch buffer, for small cross-rank
    /// agreements.
    pub(crate) fn reduction_parts(&mut self) -> (&Device<B>, &dyn Collectives<B>, &mut B::Buffer) {
        (&self.dev, self.comm.as_ref(), &mut self.reduced)
    }

    /// Makes the next checkpoint save fail after writing `files` files, as a crash would:
    /// for testing that an interrupted save leaves the previous checkpoint loadable.
    #[doc(hidden)]
    pub fn inject_save_fault(&mut self, files: usize) {
        self.save_fault = Some(files);
    }
}

fn broken() -> Error {
    Error::Usage(
        "a previous backward or step failed part-way, so the engine's state is undefined; \
         load a checkpoint or start again"
            .into(),
    )
}
