//! The optimizer step at a gradient-accumulation boundary.
//!
//! 1. Reduce the gradients over ranks (stage 0: all-reduce; stage 1: reduce-scatter onto the
//!    owners; stage 2 already did during backward).
//! 2. Sum the squares of the gradients this rank owns, and all-reduce that sum together with the
//!    micro-step losses. An inf or NaN anywhere propagates through the sum, so this one
//!    reduction is also the overflow flag of every rank.
//! 3. On overflow: skip the step, update the loss scaler (an error at its floor), count it.
//!    Otherwise: one fused optimizer pass with `grad_scale = post / (loss_scale * clip)`, where
//!    `clip = max(1, (norm + 1e-6) / gradient_clipping)` on the unscaled norm (DeepSpeed's
//!    formula); all-gather the updated parameters (stages 1-2; at stage 3 only the persistent
//!    ones, the rest are gathered when next used); advance the LR schedule and scaler.
//! 4. Count the step and zero the gradients for the next window.

use super::optimizer_state::Side;
use super::{Engine, StepReport};
use crate::Result;
use crate::model::Model;
use crate::optimizer::StepInputs;
use crate::owned::OwnedElements;
use ds_core::{Backend, BufferExt, ReduceOp};

impl<B: Backend, M: Model<B>> Engine<B, M> {
    pub(super) fn boundary_step(&mut self) -> Result<StepReport> {
        let (dev, layout) = (&self.dev, &self.layout);
        let comm = self.comm.as_ref();
        self.grads.reduce_at_boundary(dev, comm, layout)?;

        let parts: Vec<f32> = match self.optimizer.host_mut() {
            Some(host) => {
                if self.config.zero.stage == 1 {
                    // Stage 1 reduced in place on the device: the owned slices go over now.
                    for (bi, b) in layout.buckets.iter().enumerate() {
                        host.store(dev, self.grads.owned(layout, bi)?, b.local)?;
                    }
                }
                host.bucket_sum_squares(layout)?
            }
            None => {
                for bi in 0..layout.buckets.len() {
                    dev.sum_squares(
                        self.grads.owned(layout, bi)?,
                        self.norm_parts.range_mut(bi..bi + 1),
                    )?;
                }
                dev.to_vec(self.norm_parts.all())?
            }
        };
        let local: f64 = parts.iter().map(|&x| f64::from(x)).sum();
        // Without ZeRO every rank holds the whole reduced gradient: rank 0 alone contributes.
        let contribution = if layout.partitioned || layout.rank == 0 {
            local
        } else {
            0.0
        };
        let gas = self.config.batch.gradient_accumulation_steps as f64;
        let mean_loss = self.window_loss / gas;
        dev.upload(
            &[contribution as f32, mean_loss as f32],
            self.reduced.all_mut(),
        )?;
        if layout.world > 1 {
            comm.all_reduce(dev, self.reduced.all_mut(), ReduceOp::Sum)?;
        }
        let reduced: Vec<f32> = dev.to_vec(self.reduced.all())?;
        let (sum_sq, loss) = (reduced[0], reduced[1] / layout.world as f32);

        let loss_scale = self.scaler.scale();
        // Stages 2-3 applied the post-reduction factor as they accumulated each bucket.
        let post = if self.config.zero.stage >= 2 {
            1.0
        } else {
            self.post_scale()
        };
        let lr = self.lr();
        let overflow = !sum_sq.is_finite();
        let mut grad_norm = None;
        if overflow {
            self.scaler.update(true)?;
            self.counters.skipped_steps += 1;
        } else {
            let norm = (f64::from(sum_sq).sqrt() * f64::from(post) / f64::from(loss_scale)) as f32;
            grad_norm = Some(norm);
            let max_norm = self.config.gradient_clipping;
            let clip = if max_norm > 0.0 {
                ((norm + 1e-6) / max_norm).max(1.0)
            } else {
                1.0
            };
            let inputs = StepInputs {
                lr: lr as f32,
                betas: self
                    .schedule
                    .as_ref()
                    .and_then(|s| s.betas_at(self.schedule_iter))
                    .map(|(a, b)| (a as f32, b as f32)),
                grad_scale: post / (loss_scale * clip),
            };
            match &mut self.optimizer.side {
                Side::Device(o) => {
                    o.step(dev, comm, layout, &mut self.params, &self.grads, inputs)?
                }
                Side::Host(h) => h.step(dev, layout, &mut self.params, inputs)?,
            }
            self.step_gathered += self.params.after_update(dev, comm, layout)?;
            if self.schedule.is_some() {
                self.schedule_iter += 1;
            }
            self.scaler.update(false)?;
        }
        self.counters.global_steps += 1;
        self.counters.global_samples += self.config.batch.train_batch_size;
        self.zero_grads()?;
        self.window_loss = 0.0;
        Ok(StepReport {
            global_step: self.counters.global_steps,
            loss,
            lr,
            loss_scale,
            grad_norm,
            skipped: overflow,
        })
    }
}
