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
use crate::grads::Grads;
use crate::layout::Layout;
use crate::store::ParamStore;
use ds_core::kernels::{AdamArgs, LambApplyArgs, LambMomentArgs, SgdArgs, ViewMut};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, ReduceOp, Result};
use std::ops::Range;

/// One rank's optimizer: its configuration, state and step count.
pub struct Optimizer<B: Backend> {
    config: OptimizerConfig,
    /// fp32 master weights of the owned elements; `None` when the parameters are fp32.
    pub(crate) master: Option<B::Buffer>,
    /// First moment (Adam, Lamb) or momentum (SGD).
    pub(crate) exp_avg: Option<B::Buffer>,
    /// Second moment (Adam, Lamb).
    pub(crate) exp_avg_sq: Option<B::Buffer>,
    /// Lamb's per-parameter squared norms `[p^2, u^2]`.
    norms: Option<B::Buffer>,
    /// Applied steps (skipped overflow steps do not count): the next step is `steps + 1`.
    pub(crate) steps: u64,
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
    /// copied from `params` (in `dtype`).
    pub(crate) fn new(
        dev: &Device<B>,
        config: OptimizerConfig,
        layout: &Layout,
        params: &ParamStore<B>,
        dtype: DType,
    ) -> Result<Self> {
        let n = layout.owned_len;
        let zeros = |dev: &Device<B>| -> Result<B::Buffer> {
            let mut b = dev.alloc(DType::F32, n)?;
            dev.fill(b.all_mut(), 0.0)?;
            Ok(b)
        };
        let master = if dtype == DType::F32 {
            None
        } else {
            let mut m = dev.alloc(DType::F32, n)?;
            for (bi, b) in layout.buckets.iter().enumerate() {
                dev.cast(
                    params.owned(layout, bi),
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

    /// The resolved configuration (type and hyper-parameters).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Applied optimizer steps so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Whether the optimizer has Adam-style betas (what OneCycle's momentum cycling needs).
    pub fn has_betas(&self) -> bool {
        !matches!(self.config.kind, OptimizerKind::Sgd(_))
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
    /// they are partitioned.
    pub(crate) fn step(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        params: &mut ParamStore<B>,
        grads: &Grads<B>,
        inputs: StepInputs,
    ) -> Result<()> {
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
                for (bi, b) in layout.buckets.iter().enumerate() {
                    let local = b.local..b.local + b.owned.len();
                    let (param, param_copy) = targets::<B>(
                        &mut self.master,
                        params,
                        layout,
                        local.clone(),
                        b.owned.clone(),
                    );
                    let (Some(m), Some(v)) = (&mut self.exp_avg, &mut self.exp_avg_sq) else {
                        return unreachable_state();
                    };
                    dev.adam_step(
                        &hp,
                        AdamArgs {
                            param,
                            grad: grads.owned(layout, bi),
                            exp_avg: m.range_mut(local.clone()),
                            exp_avg_sq: v.range_mut(local),
                            param_copy,
                        },
                    )?;
                }
            }
            OptimizerKind::Sgd(mut hp) => {
                hp.lr = inputs.lr;
                hp.step = step;
                hp.grad_scale = inputs.grad_scale;
                for (bi, b) in layout.buckets.iter().enumerate() {
                    let local = b.local..b.local + b.owned.len();
                    let (param, param_copy) = targets::<B>(
                        &mut self.master,
                        params,
                        layout,
                        local.clone(),
                        b.owned.clone(),
                    );
                    dev.sgd_step(
                        &hp,
                        SgdArgs {
                            param,
                            grad: grads.owned(layout, bi),
                            momentum: self.exp_avg.as_mut().map(|m| m.range_mut(local)),
                            param_copy,
                        },
                    )?;
                }
            }
            OptimizerKind::Lamb(mut hp) => {
                hp.lr = inputs.lr;
                if let Some((b1, b2)) = inputs.betas {
                    (hp.beta1, hp.beta2) = (b1, b2);
                }
                hp.step = step;
                hp.grad_scale = inputs.grad_scale;
                self.lamb(dev, comm, layout, params, grads, &hp)?;
            }
        }
        Ok(())
    }

    /// Lamb's trust ratio is per parameter tensor, so its two passes go piece by piece (the
    /// part of each parameter this rank owns), with the pieces' squared norms summed over
    /// ranks in between.
    fn lamb(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        params: &mut ParamStore<B>,
        grads: &Grads<B>,
        hp: &ds_core::params::LambParams,
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
                None => params.piece(layout, range.clone(), local),
            };
            dev.lamb_moments(
                hp,
                LambMomentArgs {
                    param,
                    grad: grads.piece(range, local),
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
            let (param, param_copy) =
                targets::<B>(&mut self.master, params, layout, lr.clone(), range);
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
}

/// What a step updates for owned flat elements `owned` (at `local` in the partition): the
/// fp32 master, with the parameters as the rounded copy, or the fp32 parameters themselves.
fn targets<'a, B: Backend>(
    master: &'a mut Option<B::Buffer>,
    params: &'a mut ParamStore<B>,
    layout: &Layout,
    local: Range<usize>,
    owned: Range<usize>,
) -> (ViewMut<'a, B>, Option<ViewMut<'a, B>>) {
    let start = local.start;
    match master {
        Some(m) => (
            m.range_mut(local),
            Some(params.piece_mut(layout, owned, start)),
        ),
        None => (params.piece_mut(layout, owned, start), None),
    }
}

fn unreachable_state() -> Result<()> {
    Err(ds_core::Error::invalid(
        "Optimizer::step",
        "state",
        "internal: the optimizer's moment buffers are missing",
    ))
}
