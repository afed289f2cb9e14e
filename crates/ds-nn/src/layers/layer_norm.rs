//! LayerNorm over the last dimension, with a gain and a bias.

use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::kernels::{LayerNormArgs, LayerNormBackwardArgs, View};
use ds_core::params::Shape2;
use ds_core::{Backend, BufferExt, DType, Device, Result};
use ds_model::{GradSink, Params};

/// GPT-2's LayerNorm (eps 1e-5): gain `{name}.weight` (ones) and bias `{name}.bias` (zeros).
#[derive(Debug, Clone, Copy)]
pub struct LayerNorm {
    /// Index of the gain.
    pub gain: usize,
    /// Index of the bias.
    pub bias: usize,
    /// Features per row.
    pub dim: usize,
    /// Added to the variance.
    pub eps: f32,
}

/// What the forward keeps for the backward.
pub struct LayerNormSaved<B: Backend> {
    /// The normalized output.
    pub y: B::Buffer,
    mean: B::Buffer,
    rstd: B::Buffer,
}

impl LayerNorm {
    /// Registers the gain and bias.
    pub fn new(reg: &mut Registry, name: &str, dim: usize) -> Self {
        LayerNorm {
            gain: reg.add(format!("{name}.weight"), &[dim], Init::Ones),
            bias: reg.add(format!("{name}.bias"), &[dim], Init::Zeros),
            dim,
            eps: 1e-5,
        }
    }

    /// Normalizes `rows` rows of `x`.
    ///
    /// # Errors
    /// Kernel and allocation errors.
    pub fn forward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        x: View<'_, B>,
        rows: usize,
    ) -> Result<LayerNormSaved<B>> {
        let mut y = dev.alloc_for_overwrite(x.dtype(), rows * self.dim)?;
        let mut mean = dev.alloc_for_overwrite(DType::F32, rows)?;
        let mut rstd = dev.alloc_for_overwrite(DType::F32, rows)?;
        profile::timed(dev, Part::LayerNorm, || {
            dev.layer_norm(
                Shape2::new(rows, self.dim),
                self.eps,
                LayerNormArgs {
                    x,
                    gamma: params.get(self.gain)?,
                    beta: params.get(self.bias)?,
                    y: y.all_mut(),
                    mean: mean.all_mut(),
                    rstd: rstd.all_mut(),
                },
            )
        })?;
        Ok(LayerNormSaved { y, mean, rstd })
    }

    /// Accumulates the gain and bias gradients (marking both done) and returns `dx`.
    ///
    /// # Errors
    /// Kernel, allocation and engine errors.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        saved: &LayerNormSaved<B>,
        x: View<'_, B>,
        dy: View<'_, B>,
        rows: usize,
    ) -> Result<B::Buffer> {
        let mut dx = dev.alloc_for_overwrite(dy.dtype(), rows * self.dim)?;
        // The kernel writes both parameter gradients in one call: give it scratch for the
        // bias and fold that in, since a sink hands out one gradient view at a time.
        let mut dbeta = dev.alloc(dy.dtype(), self.dim)?;
        profile::timed(dev, Part::LayerNorm, || {
            dev.layer_norm_backward(
                Shape2::new(rows, self.dim),
                true,
                LayerNormBackwardArgs {
                    x,
                    gamma: params.get(self.gain)?,
                    mean: saved.mean.all(),
                    rstd: saved.rstd.all(),
                    dy,
                    dx: dx.all_mut(),
                    dgamma: grads.grad(self.gain)?,
                    dbeta: dbeta.all_mut(),
                },
            )
        })?;
        grads.done(self.gain)?;
        profile::timed(dev, Part::LayerNorm, || {
            dev.axpy(1.0, dbeta.all(), grads.grad(self.bias)?)
        })?;
        grads.done(self.bias)?;
        Ok(dx)
    }
}
