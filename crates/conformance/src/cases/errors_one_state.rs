//! Bad-input checks of the optimizers that keep one state (Adagrad, Lion): every view and
//! hyper-parameter the checks name.

use super::errors::refuses;
use ds_core::kernels::{AdagradArgs, LionArgs, View, ViewMut};
use ds_core::params::{AdagradParams, LionParams};
use ds_core::{Backend, BufferExt, DType, Device, Kernel, Result};

/// A hyper-parameter set to a value the step must refuse, or none (the defaults).
#[derive(Clone, Copy)]
enum Bad {
    None,
    NegativeLr,
    Beta2One,
    NanGradScale,
    NegativeEps,
}

/// The step `kernel` (Adagrad or Lion) with default hyper-parameters except `bad`.
fn step<B: Backend>(
    dev: &Device<B>,
    kernel: Kernel,
    bad: Bad,
    param: ViewMut<'_, B>,
    grad: View<'_, B>,
    state: ViewMut<'_, B>,
    param_copy: Option<ViewMut<'_, B>>,
) -> Result<()> {
    let (lr, grad_scale) = match bad {
        Bad::NegativeLr => (-1.0, 1.0),
        Bad::NanGradScale => (1e-3, f32::NAN),
        _ => (1e-3, 1.0),
    };
    if kernel == Kernel::AdagradStep {
        let hp = AdagradParams {
            lr,
            grad_scale,
            eps: if matches!(bad, Bad::NegativeEps) {
                -1.0
            } else {
                1e-10
            },
            ..AdagradParams::default()
        };
        let args = AdagradArgs {
            param,
            grad,
            exp_avg_sq: state,
            param_copy,
        };
        dev.adagrad_step(&hp, args)
    } else {
        let hp = LionParams {
            lr,
            grad_scale,
            beta2: if matches!(bad, Bad::Beta2One) {
                1.0
            } else {
                0.99
            },
            ..LionParams::default()
        };
        let args = LionArgs {
            param,
            grad,
            exp_avg: state,
            param_copy,
        };
        dev.lion_step(&hp, args)
    }
}

/// Runs the checks; returns how many refusals were verified.
///
/// # Errors
/// A description of the first call accepted, or refused for the wrong reason.
pub(super) fn bad_input<B: Backend>(dev: &Device<B>, kernel: Kernel) -> Result<usize, String> {
    let alloc = |dt: DType, n: usize| dev.alloc(dt, n).map_err(|e| e.to_string());
    let (g, short) = (alloc(DType::F32, 8)?, alloc(DType::F32, 4)?);
    let (mut p, mut s) = (alloc(DType::F32, 8)?, alloc(DType::F32, 8)?);
    let (mut half, mut ints) = (alloc(DType::F16, 8)?, alloc(DType::I32, 8)?);
    let state = if kernel == Kernel::AdagradStep {
        "exp_avg_sq"
    } else {
        "exp_avg"
    };
    let mut n = 0;
    let r = step(
        dev,
        kernel,
        Bad::None,
        p.all_mut(),
        short.all(),
        s.all_mut(),
        None,
    );
    n += refuses("grad length", r, "grad")?;
    let r = step(
        dev,
        kernel,
        Bad::None,
        half.all_mut(),
        g.all(),
        s.all_mut(),
        None,
    );
    n += refuses("param dtype", r, "param")?;
    let r = step(
        dev,
        kernel,
        Bad::None,
        p.all_mut(),
        g.all(),
        s.range_mut(1..9),
        None,
    );
    n += refuses("state past end", r, state)?;
    let r = step(
        dev,
        kernel,
        Bad::None,
        p.all_mut(),
        g.all(),
        half.all_mut(),
        None,
    );
    n += refuses("state dtype", r, state)?;
    let copy = Some(ints.all_mut());
    let r = step(
        dev,
        kernel,
        Bad::None,
        p.all_mut(),
        g.all(),
        s.all_mut(),
        copy,
    );
    n += refuses("copy dtype", r, "param_copy")?;
    let r = step(
        dev,
        kernel,
        Bad::NegativeLr,
        p.all_mut(),
        g.all(),
        s.all_mut(),
        None,
    );
    n += refuses("lr", r, "lr")?;
    let r = step(
        dev,
        kernel,
        Bad::NanGradScale,
        p.all_mut(),
        g.all(),
        s.all_mut(),
        None,
    );
    n += refuses("grad_scale", r, "grad_scale")?;
    let (bad, arg) = if kernel == Kernel::AdagradStep {
        (Bad::NegativeEps, "eps")
    } else {
        (Bad::Beta2One, "beta2")
    };
    let r = step(dev, kernel, bad, p.all_mut(), g.all(), s.all_mut(), None);
    n += refuses(arg, r, arg)?;
    Ok(n)
}
