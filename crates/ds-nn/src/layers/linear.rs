//! `y = x W + b` over rows.

use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::kernels::View;
use ds_core::params::{GemmSpec, Shape2};
use ds_core::{Backend, BufferExt, Device, Result};
use ds_model::{GradSink, Params};

/// A fully connected layer: weight `inputs x outputs` (so `y = x W`), bias `outputs`.
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    /// Index of the weight.
    pub weight: usize,
    /// Index of the bias.
    pub bias: usize,
    /// Input features.
    pub inputs: usize,
    /// Output features.
    pub outputs: usize,
}

impl Linear {
    /// Registers `{name}.weight` (initialized with `init`) and a zero `{name}.bias`.
    pub fn new(reg: &mut Registry, name: &str, inputs: usize, outputs: usize, init: Init) -> Self {
        Linear {
            weight: reg.add(format!("{name}.weight"), &[inputs, outputs], init),
            bias: reg.add(format!("{name}.bias"), &[outputs], Init::Zeros),
            inputs,
            outputs,
        }
    }

    /// `y = x W + b` for `rows` rows of `x`.
    ///
    /// # Errors
    /// Kernel and allocation errors.
    pub fn forward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        x: View<'_, B>,
        rows: usize,
    ) -> Result<B::Buffer> {
        let mut y = dev.alloc_for_overwrite(x.dtype(), rows * self.outputs)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(rows, self.outputs, self.inputs),
            x,
            params.get(self.weight)?,
            y.all_mut(),
        )?;
        profile::timed(dev, Part::Bias, || {
            dev.bias_add(
                Shape2::new(rows, self.outputs),
                y.all_mut(),
                params.get(self.bias)?,
            )
        })?;
        Ok(y)
    }

    /// Accumulates the weight and bias gradients (marking both done) and returns `dx`.
    ///
    /// # Errors
    /// Kernel, allocation and engine errors.
    pub fn backward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        x: View<'_, B>,
        dy: View<'_, B>,
        rows: usize,
    ) -> Result<B::Buffer> {
        let (i, o) = (self.inputs, self.outputs);
        profile::timed(dev, Part::Bias, || {
            dev.bias_grad(Shape2::new(rows, o), dy, grads.grad(self.bias)?, true)
        })?;
        grads.done(self.bias)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(i, o, rows)
                .transpose(true, false)
                .scaled(1.0, 1.0),
            x,
            dy,
            grads.grad(self.weight)?,
        )?;
        grads.done(self.weight)?;
        let mut dx = dev.alloc_for_overwrite(dy.dtype(), rows * i)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(rows, i, o).transpose(false, true),
            dy,
            params.get(self.weight)?,
            dx.all_mut(),
        )?;
        Ok(dx)
    }
}
