//! The optimizer state of one rank and the fused step over it.
//!
//! A rank keeps fp32 master weights, and the optimizer's moments, for the elements it owns
//! (everything without ZeRO, its slice of every bucket with ZeRO), concatenated in bucket
//! order. When the model trains in fp32 the parameter buffer itself is the master copy (no
//! second fp32 copy is kept); in fp16 or bf16 the step updates the fp32 master and writes the
//! rounded weights into the parameter buffer in the same pass.
//!
//! Loss unscaling, gradient clipping and gradient averaging all fold into one multiplier, the
//! kernels' `grad_scale`, so the step reads each gradient once.

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::host::{download_f32, upload_f32};
use crate::layout::Layout;
use crate::owned::{OwnedElements, OwnedElementsMut};
use ds_core::kernels::{
    AdagradArgs, AdamArgs, LambApplyArgs, LambMomentArgs, LionArgs, SgdArgs, View, ViewMut,
};
use ds_core::params::{AdagradParams, AdamParams, LambParams, LionParams, SgdParams};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, ReduceOp, Result};
use std::ops::Range;

/// The per-element optimizer state a checkpoint saves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    /// fp32 master weights.
    Master,
    /// First moment, SGD's or Lion's momentum.
    ExpAvg,
    /// Second moment, or Adagrad's sum of squared gradients.
    ExpAvgSq,
}

/// `views` (one per kind of `kinds`, in that order) by kind: master, first moment (or
/// momentum), second moment (or Adagrad's sum of squares).
pub(crate) fn views_by_kind<'s, T>(
    kinds: &[StateKind],
    views: &'s mut [T],
) -> (Option<&'s mut T>, Option<&'s mut T>, Option<&'s mut T>) {
    let (mut master, mut m, mut v) = (None, None, None);
    for (kind, view) in kinds.iter().zip(views) {
        match kind {
            StateKind::Master => master = Some(view),
            StateKind::ExpAvg => m = Some(view),
            StateKind::ExpAvgSq => v = Some(view),
        }
    }
    (master, m, v)
}

/// One step's hyper-parameters, prepared once and applied bucket by bucket.
#[derive(Debug, Clone)]
pub(crate) enum Prepared {
    Adam(AdamParams),
    Sgd(SgdParams),
    Lamb(LambParams),
    Adagrad(AdagradParams),
    Lion(LionParams),
}

impl Prepared {
    /// The elementwise update of one range from `grad`: `param` (the fp32 master, or the fp32
    /// parameters themselves), its rounded copy, and the moments the optimizer keeps. Every
    /// optimizer but Lamb.
    pub(crate) fn apply<B: Backend>(
        &self,
        dev: &Device<B>,
        param: ViewMut<'_, B>,
        param_copy: Option<ViewMut<'_, B>>,
        exp_avg: Option<ViewMut<'_, B>>,
        exp_avg_sq: Option<ViewMut<'_, B>>,
        grad: View<'_, B>,
    ) -> Result<()> {
        match self {
            Prepared::Adam(hp) => {
                let (Some(exp_avg), Some(exp_avg_sq)) = (exp_avg, exp_avg_sq) else {
                    return unreachable_state();
                };
                dev.adam_step(
                    hp,
                    AdamArgs {
                        param,
                        grad,
                        exp_avg,
                        exp_avg_sq,
                        param_copy,
                    },
                )
            }
            Prepared::Sgd(hp) => dev.sgd_step(
                hp,
                SgdArgs {
                    param,
                    grad,
                    momentum: exp_avg,
                    param_copy,
                },
            ),
            Prepared::Adagrad(hp) => {
                let Some(exp_avg_sq) = exp_avg_sq else {
                    return unreachable_state();
                };
                dev.adagrad_step(
                    hp,
                    AdagradArgs {
                        param,
                        grad,
                        exp_avg_sq,
                        param_copy,
                    },
                )
            }
            Prepared::Lion(hp) => {
                let Some(exp_avg) = exp_avg else {
                    return unreachable_state();
                };
                dev.lion_step(
                    hp,
                    LionArgs {
                        param,
                        grad,
                        exp_avg,
                        param_copy,
                    },
                )
            }
            Prepared::Lamb(_) => Err(ds_core::Error::invalid(
                "Optimizer::update",
                "optimizer",
                "internal: Lamb's trust ratio needs the whole step (Optimizer::step)",
            )),
        }
    }
}

/// One rank's optimizer: its configuration, state and step count.
pub struct Optimizer<B: Backend> {
    config: OptimizerConfig,
    /// fp32 master weights of the owned elements; `None` when the parameters are fp32.
    master: Option<B::Buffer>,
    /// First moment (Adam, Lamb) or momentum (SGD, Lion).
    exp_avg: Option<B::Buffer>,
    /// Second moment (Adam, Lamb) or sum of squared gradients (Adagrad).
    exp_avg_sq: Option<B::Buffer>,
    /// Lamb's per-parameter squared norms `[p^2, u^2]`.
    norms: Option<B::Buffer>,
    /// Applied steps (skipped overflow steps do not count): the next step is `steps + 1`.
    steps: u64,
}

/// What changes from step to step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepInputs {
    pub lr: f32,
    pub betas: Option<(f32, f32)>,
    pub grad_scale: f32,
}

impl<B: Backend> Optimizer<B> {
    /// State for `config` over the elements `layout` gives this rank, the master weights
    /// copied from `params` (in `dtype`). fp32 parameters are their own master unless
    /// `keep_master` (offload keeps an fp32 master on the host whatever the dtype, the
    /// device's parameters being a copy).
    pub(crate) fn new(
        dev: &Device<B>,
        config: OptimizerConfig,
        layout: &Layout,
        params: &impl OwnedElements<B>,
        dtype: DType,
        keep_master: bool,
    ) -> Result<Self> {
        let n = layout.owned_len;
        let zeros = |dev: &Device<B>| -> Result<B::Buffer> {
            let mut b = dev.alloc(DType::F32, n)?;
            dev.fill(b.all_mut(), 0.0)?;
            Ok(b)
        };
        let master = if dtype == DType::F32 && !keep_master {
            None
        } else {
            let mut m = dev.alloc(DType::F32, n)?;
            for (bi, b) in layout.buckets.iter().enumerate() {
                dev.cast(
                    params.owned(layout, bi)?,
                    m.range_mut(b.local..b.local + b.owned.len()),
                )?;
            }
            Some(m)
        };
        let (exp_avg, exp_avg_sq, norms) = match &config.kind {
            OptimizerKind::Adam(_) => (Some(zeros(dev)?), Some(zeros(dev)?), None),
            OptimizerKind::Sgd(p) => (
                (p.momentum > 0.0).then(|| zeros(dev)).transpose()?,
                None,
                None,
            ),
            OptimizerKind::Lamb(_) => {
                let norms = dev.alloc(DType::F32, 2 * layout.slots.len().max(1))?;
                (Some(zeros(dev)?), Some(zeros(dev)?), Some(norms))
            }
            OptimizerKind::Adagrad(_) => (None, Some(zeros(dev)?), None),
            OptimizerKind::Lion(_) => (Some(zeros(dev)?), None, None),
        };
        Ok(Optimizer {
            config,
            master,
            exp_avg,
            exp_avg_sq,
            norms,
            steps: 0,
        })
    }

    /// The step counter and hyper-parameters without state buffers: the state lives
    /// elsewhere (NVMe offload's swap file).
    pub(crate) fn stateless(config: OptimizerConfig) -> Self {
        Optimizer {
            config,
            master: None,
            exp_avg: None,
            exp_avg_sq: None,
            norms: None,
            steps: 0,
        }
    }

    /// The per-element state kinds `config` keeps with an fp32 master: master, then the
    /// moments.
    pub(crate) fn kinds_with_master(config: &OptimizerConfig) -> Vec<StateKind> {
        let mut kinds = vec![StateKind::Master];
        match &config.kind {
            OptimizerKind::Adam(_) | OptimizerKind::Lamb(_) => {
                kinds.extend([StateKind::ExpAvg, StateKind::ExpAvgSq]);
            }
            OptimizerKind::Sgd(p) if p.momentum > 0.0 => kinds.push(StateKind::ExpAvg),
            OptimizerKind::Sgd(_) => {}
            OptimizerKind::Adagrad(_) => kinds.push(StateKind::ExpAvgSq),
            OptimizerKind::Lion(_) => kinds.push(StateKind::ExpAvg),
        }
        kinds
    }

    /// The resolved configuration (type and hyper-parameters).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Applied optimizer steps so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Bytes of optimizer state on this rank (master weights included).
    pub fn state_bytes(&self) -> u64 {
        [&self.master, &self.exp_avg, &self.exp_avg_sq, &self.norms]
            .into_iter()
            .flatten()
            .map(|b| 4 * ds_core::DeviceBuffer::len(b) as u64)
            .sum()
    }

    /// One step over the owned elements; the caller all-gathers the parameters afterwards when
    /// they are partitioned. Lamb sums its per-tensor norms over `comm` (the device's
    /// collectives; offload, which has none on the host, does not take Lamb).
    pub(crate) fn step(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        params: &mut impl OwnedElementsMut<B>,
        grads: &impl OwnedElements<B>,
        inputs: StepInputs,
    ) -> Result<()> {
        let hp = self.begin_step(inputs);
        if let Prepared::Lamb(hp) = &hp {
            return self.lamb(dev, comm, layout, params, grads, hp);
        }
        for (bi, b) in layout.buckets.iter().enumerate() {
            let local = b.local..b.local + b.owned.len();
            let out = params.piece_mut(layout, b.owned.clone(), b.local)?;
            self.update(dev, &hp, local, grads.owned(layout, bi)?, out)?;
        }
        Ok(())
    }

    /// Counts a step and resolves its hyper-parameters.
    pub(crate) fn begin_step(&mut self, inputs: StepInputs) -> Prepared {
        self.steps += 1;
        let step = self.steps;
        match self.config.kind.clone() {
            OptimizerKind::Adam(mut hp) => {
                hp.lr = inputs.lr;
                if let Some((b1, b2)) = inputs.betas {
                    (hp.beta1, hp.beta2) = (b1, b2);
                }
                hp.step = step;
                hp.grad_scale = inputs.grad_scale;
                Prepared::Adam(hp)
            }
            OptimizerKind::Sgd(mut hp) => {
                hp.lr = inputs.lr;
                hp.step = step;
                hp.grad_scale = inputs.grad_scale;
                Prepared::Sgd(hp)
            }
            OptimizerKind::Lamb(mut hp) => {
                hp.lr = inputs.lr;
                if let Some((b1, b2)) = inputs.betas {
                    (hp.beta1, hp.beta2) = (b1, b2);
                }
                hp.step = step;
                hp.grad_scale = inputs.grad_scale;
                Prepared::Lamb(hp)
            }
            OptimizerKind::Adagrad(mut hp) => {
                hp.lr = inputs.lr;
                hp.grad_scale = inputs.grad_scale;
                Prepared::Adagrad(hp)
            }
            OptimizerKind::Lion(mut hp) => {
                hp.lr = inputs.lr;
                if let Some((b1, b2)) = inputs.betas {
                    (hp.beta1, hp.beta2) = (b1, b2);
                }
                hp.grad_scale = inputs.grad_scale;
                Prepared::Lion(hp)
            }
        }
    }

    /// The elementwise update of the owned elements at `local` in partition order, from
    /// `grad`: the fp32 master when there is one, with `out` as its rounded copy, or `out`
    /// itself (fp32 parameters without a master). Every optimizer but Lamb.
    pub(crate) fn update(
        &mut self,
        dev: &Device<B>,
        hp: &Prepared,
        local: Range<usize>,
        grad: View<'_, B>,
        out: ViewMut<'_, B>,
    ) -> Result<()> {
        let (param, param_copy) = match &mut self.master {
            Some(m) => (m.range_mut(local.clone()), Some(out)),
            None => (out, None),
        };
        let exp_avg = self.exp_avg.as_mut().map(|m| m.range_mut(local.clone()));
        let exp_avg_sq = self.exp_avg_sq.as_mut().map(|v| v.range_mut(local));
        hp.apply(dev, param, param_copy, exp_avg, exp_avg_sq, grad)
    }

    /// Lamb's trust ratio is per parameter tensor, so its two passes go piece by piece (the
    /// part of each parameter this rank owns), with the pieces' squared norms summed over
    /// ranks in between.
    fn lamb(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        params: &mut impl OwnedElementsMut<B>,
        grads: &impl OwnedElements<B>,
        hp: &LambParams,
    ) -> Result<()> {
        let (Some(m), Some(v), Some(norms)) =
            (&mut self.exp_avg, &mut self.exp_avg_sq, &mut self.norms)
        else {
            return unreachable_state();
        };
        dev.fill(norms.all_mut(), 0.0)?;
        for i in 0..layout.slots.len() {
            let Some((range, local)) = layout.owned_piece(i) else {
                continue;
            };
            let lr = local..local + range.len();
            let param = match &self.master {
                Some(master) => master.range(lr.clone()),
                None => params.piece(layout, range.clone(), local)?,
            };
            dev.lamb_moments(
                hp,
                LambMomentArgs {
                    param,
                    grad: grads.piece(layout, range, local)?,
                    exp_avg: m.range_mut(lr.clone()),
                    exp_avg_sq: v.range_mut(lr),
                    norms: norms.range_mut(2 * i..2 * i + 2),
                },
            )?;
        }
        if layout.partitioned && layout.world > 1 {
            comm.all_reduce(dev, norms.all_mut(), ReduceOp::Sum)?;
        }
        for i in 0..layout.slots.len() {
            let Some((range, local)) = layout.owned_piece(i) else {
                continue;
            };
            let lr = local..local + range.len();
            let out = params.piece_mut(layout, range, local)?;
            let (param, param_copy) = match &mut self.master {
                Some(m) => (m.range_mut(lr.clone()), Some(out)),
                None => (out, None),
            };
            dev.lamb_apply(
                hp,
                LambApplyArgs {
                    param,
                    exp_avg: m.range(lr.clone()),
                    exp_avg_sq: v.range(lr),
                    norms: norms.range(2 * i..2 * i + 2),
                    param_copy,
                },
            )?;
        }
        Ok(())
    }

    fn buffer(&self, kind: StateKind) -> Option<&B::Buffer> {
        match kind {
            StateKind::Master => self.master.as_ref(),
            StateKind::ExpAvg => self.exp_avg.as_ref(),
            StateKind::ExpAvgSq => self.exp_avg_sq.as_ref(),
        }
    }

    /// Writable views of the whole state, master first, then the moments kept (the order of
    /// [`Optimizer::kinds_with_master`]).
    pub(crate) fn state_views(&mut self) -> Vec<ViewMut<'_, B>> {
        [&mut self.master, &mut self.exp_avg, &mut self.exp_avg_sq]
            .into_iter()
            .flatten()
            .map(|b| b.all_mut())
            .collect()
    }

    /// Whether this optimizer keeps `kind` state.
    pub(crate) fn keeps(&self, kind: StateKind) -> bool {
        self.buffer(kind).is_some()
    }

    fn buffer_mut(&mut self, kind: StateKind) -> Option<&mut B::Buffer> {
        match kind {
            StateKind::Master => self.master.as_mut(),
            StateKind::ExpAvg => self.exp_avg.as_mut(),
            StateKind::ExpAvgSq => self.exp_avg_sq.as_mut(),
        }
    }

    /// The `kind` state of partition elements `local`, widened to f32 (`None` when this
    /// optimizer keeps no such state).
    ///
    /// # Errors
    /// Download errors.
    pub(crate) fn read_piece(
        &self,
        dev: &Device<B>,
        kind: StateKind,
        local: Range<usize>,
    ) -> Result<Option<Vec<f32>>> {
        self.buffer(kind)
            .map(|b| download_f32(dev, b.range(local)))
            .transpose()
    }

    /// Writes `values` into the `kind` state at partition element `local` (nothing when this
    /// optimizer keeps no such state).
    ///
    /// # Errors
    /// Upload errors.
    pub(crate) fn write_piece(
        &mut self,
        dev: &Device<B>,
        kind: StateKind,
        local: usize,
        values: &[f32],
    ) -> Result<()> {
        match self.buffer_mut(kind) {
            Some(b) => upload_f32(dev, values, b.range_mut(local..local + values.len())),
            None => Ok(()),
        }
    }

    /// Sets the applied-step count (a checkpoint load).
    pub(crate) fn set_steps(&mut self, steps: u64) {
        self.steps = steps;
    }
}

fn unreachable_state() -> Result<()> {
    Err(ds_core::Error::invalid(
        "Optimizer::step",
        "state",
        "internal: the optimizer's moment buffers are missing",
    ))
}
