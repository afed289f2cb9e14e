//! Bad input to every kernel: mismatched lengths, wrong dtypes, views past the end of their
//! buffer, out-of-range hyper-parameters. Each call must fail with an error naming the
//! argument at fault, on every backend (validation lives in ds-core's `Device`).

use ds_core::kernels::{
    AdamArgs, AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs, SgdArgs,
};
use ds_core::kernels::{View, ViewMut};
use ds_core::params::{AdamParams, AttentionShape, GemmSpec, LambParams, SgdParams, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Kernel, Result};

/// Checks one refused call; returns 1 or a description of what went wrong.
pub(super) fn refuses(what: &str, result: Result<()>, arg: &str) -> Result<usize, String> {
    match result {
        Err(e) if e.argument() == Some(arg) => Ok(1),
        Err(e) => Err(format!(
            "{what}: expected an error naming `{arg}`, got: {e}"
        )),
        Ok(()) => Err(format!(
            "{what}: accepted bad input (expected an error naming `{arg}`)"
        )),
    }
}

/// Runs the bad-input checks of one kernel; returns how many refusals were verified.
///
/// # Errors
/// A description of the first call that was accepted or refused for the wrong reason.
pub fn bad_input<B: Backend>(dev: &Device<B>, kernel: Kernel) -> Result<usize, String> {
    let alloc = |dt: DType, n: usize| dev.alloc(dt, n).map_err(|e| e.to_string());
    let (a, b) = (alloc(DType::F32, 8)?, alloc(DType::F32, 8)?);
    let (mut c, mut d) = (alloc(DType::F32, 8)?, alloc(DType::F32, 8)?);
    let mut e = alloc(DType::F32, 8)?;
    let short = alloc(DType::F32, 4)?;
    let mut ints = alloc(DType::I32, 8)?;
    let mut half = alloc(DType::F16, 8)?;
    let mut one = alloc(DType::F32, 1)?;
    let mut n = 0;
    match kernel {
        Kernel::Copy => {
            let mut s4 = short_mut(dev)?;
            n += refuses("length", dev.copy(a.all(), s4.all_mut()), "dst")?;
            n += refuses("dtype", dev.copy(a.all(), half.all_mut()), "dst")?;
            n += refuses(
                "past end",
                dev.copy(a.range(4..12), c.range_mut(0..8)),
                "src",
            )?;
            #[allow(clippy::reversed_empty_ranges)] // an inverted range is the bad input under test
            let inverted = a.range(5..3);
            n += refuses("inverted", dev.copy(inverted, c.all_mut()), "src")?;
        }
        Kernel::Fill => {
            n += refuses("past end", dev.fill(c.range_mut(2..9), 1.0), "dst")?;
            n += refuses("non-integer i32", dev.fill(ints.all_mut(), 1.5), "value")?;
        }
        Kernel::Cast => {
            let mut s4 = short_mut(dev)?;
            n += refuses("length", dev.cast(a.all(), s4.all_mut()), "dst")?;
            n += refuses("int dtype", dev.cast(a.all(), ints.all_mut()), "dst")?;
            n += refuses("past end", dev.cast(a.range(1..9), half.all_mut()), "src")?;
        }
        Kernel::Scale => {
            n += refuses("dtype", dev.scale(ints.all_mut(), 2.0), "x")?;
            n += refuses("alpha", dev.scale(c.all_mut(), f32::NAN), "alpha")?;
            n += refuses("past end", dev.scale(c.range_mut(0..9), 2.0), "x")?;
        }
        Kernel::Axpy => {
            n += refuses("length", dev.axpy(1.0, short.all(), c.all_mut()), "y")?;
            n += refuses("dtype", dev.axpy(1.0, a.all(), ints.all_mut()), "y")?;
            n += refuses(
                "past end",
                dev.axpy(1.0, a.range(8..9), c.range_mut(0..1)),
                "x",
            )?;
        }
        Kernel::Add | Kernel::Mul => {
            n += refuses(
                "length",
                binary(dev, kernel, a.all(), short.all(), c.all_mut()),
                "b",
            )?;
            n += refuses(
                "dtype",
                binary(dev, kernel, a.all(), b.all(), half.all_mut()),
                "out",
            )?;
            n += refuses(
                "past end",
                binary(dev, kernel, a.all(), b.all(), c.range_mut(1..9)),
                "out",
            )?;
        }
        Kernel::Sum | Kernel::SumSquares => {
            n += refuses(
                "out length",
                reduce(dev, kernel, a.all(), c.range_mut(0..2)),
                "out",
            )?;
            n += refuses(
                "out dtype",
                reduce(dev, kernel, a.all(), half.range_mut(0..1)),
                "out",
            )?;
            n += refuses(
                "x dtype",
                reduce(dev, kernel, ints.all(), one.all_mut()),
                "x",
            )?;
        }
        Kernel::NonFinite => {
            n += refuses(
                "flag dtype",
                dev.non_finite(a.all(), ints.range_mut(0..1)),
                "flag",
            )?;
            n += refuses("flag length", dev.non_finite(a.all(), c.all_mut()), "flag")?;
            n += refuses(
                "past end",
                dev.non_finite(a.range(0..10), one.all_mut()),
                "x",
            )?;
        }
        Kernel::UnscaleCheck => {
            n += refuses(
                "inv_scale",
                dev.unscale_and_check(c.all_mut(), f32::INFINITY, one.all_mut()),
                "inv_scale",
            )?;
            n += refuses(
                "flag",
                dev.unscale_and_check(c.all_mut(), 0.5, half.range_mut(0..1)),
                "flag",
            )?;
            n += refuses(
                "dtype",
                dev.unscale_and_check(ints.all_mut(), 0.5, one.all_mut()),
                "x",
            )?;
        }
        Kernel::AdamStep | Kernel::LambStep => {
            n += refuses(
                "grad length",
                moments(
                    dev,
                    kernel,
                    1e-3,
                    AdamArgs {
                        param: c.all_mut(),
                        grad: short.all(),
                        exp_avg: d.all_mut(),
                        exp_avg_sq: e.all_mut(),
                        param_copy: None,
                    },
                ),
                "grad",
            )?;
            n += refuses(
                "param dtype",
                moments(
                    dev,
                    kernel,
                    1e-3,
                    AdamArgs {
                        param: half.all_mut(),
                        grad: a.all(),
                        exp_avg: d.all_mut(),
                        exp_avg_sq: e.all_mut(),
                        param_copy: None,
                    },
                ),
                "param",
            )?;
            n += refuses(
                "state past end",
                moments(
                    dev,
                    kernel,
                    1e-3,
                    AdamArgs {
                        param: c.all_mut(),
                        grad: a.all(),
                        exp_avg: d.range_mut(1..9),
                        exp_avg_sq: e.all_mut(),
                        param_copy: None,
                    },
                ),
                "exp_avg",
            )?;
            n += refuses(
                "lr",
                moments(
                    dev,
                    kernel,
                    -1.0,
                    AdamArgs {
                        param: c.all_mut(),
                        grad: a.all(),
                        exp_avg: d.all_mut(),
                        exp_avg_sq: e.all_mut(),
                        param_copy: None,
                    },
                ),
                "lr",
            )?;
            n += refuses(
                "copy dtype",
                moments(
                    dev,
                    kernel,
                    1e-3,
                    AdamArgs {
                        param: c.all_mut(),
                        grad: a.all(),
                        exp_avg: d.all_mut(),
                        exp_avg_sq: e.all_mut(),
                        param_copy: Some(ints.all_mut()),
                    },
                ),
                "param_copy",
            )?;
            if kernel == Kernel::AdamStep {
                let hp = AdamParams {
                    beta1: 1.0,
                    ..AdamParams::default()
                };
                let args = AdamArgs {
                    param: c.all_mut(),
                    grad: a.all(),
                    exp_avg: d.all_mut(),
                    exp_avg_sq: e.all_mut(),
                    param_copy: None,
                };
                n += refuses("beta1", dev.adam_step(&hp, args), "beta1")?;
                let hp = AdamParams {
                    step: 0,
                    ..AdamParams::default()
                };
                let args = AdamArgs {
                    param: c.all_mut(),
                    grad: a.all(),
                    exp_avg: d.all_mut(),
                    exp_avg_sq: e.all_mut(),
                    param_copy: None,
                };
                n += refuses("step", dev.adam_step(&hp, args), "step")?;
                let hp = AdamParams {
                    grad_scale: f32::NAN,
                    ..AdamParams::default()
                };
                let args = AdamArgs {
                    param: c.all_mut(),
                    grad: a.all(),
                    exp_avg: d.all_mut(),
                    exp_avg_sq: e.all_mut(),
                    param_copy: None,
                };
                n += refuses("grad_scale", dev.adam_step(&hp, args), "grad_scale")?;
            } else {
                let hp = LambParams {
                    min_coeff: 2.0,
                    max_coeff: 1.0,
                    ..LambParams::default()
                };
                let args = AdamArgs {
                    param: c.all_mut(),
                    grad: a.all(),
                    exp_avg: d.all_mut(),
                    exp_avg_sq: e.all_mut(),
                    param_copy: None,
                };
                n += refuses("coeffs", dev.lamb_step(&hp, args), "max_coeff")?;
            }
        }
        Kernel::AdagradStep | Kernel::LionStep => {
            n += super::errors_one_state::bad_input(dev, kernel)?;
        }
        Kernel::SgdStep => {
            let hp = SgdParams {
                momentum: 0.9,
                ..SgdParams::default()
            };
            let args = SgdArgs {
                param: c.all_mut(),
                grad: a.all(),
                momentum: None,
                param_copy: None,
            };
            n += refuses("missing momentum", dev.sgd_step(&hp, args), "momentum")?;
            let hp = SgdParams {
                nesterov: true,
                ..SgdParams::default()
            };
            let args = SgdArgs {
                param: c.all_mut(),
                grad: a.all(),
                momentum: None,
                param_copy: None,
            };
            n += refuses("nesterov", dev.sgd_step(&hp, args), "nesterov")?;
            let args = SgdArgs {
                param: c.all_mut(),
                grad: short.all(),
                momentum: None,
                param_copy: None,
            };
            n += refuses(
                "grad length",
                dev.sgd_step(&SgdParams::default(), args),
                "grad",
            )?;
        }
        Kernel::Gemm => {
            let spec = GemmSpec::new(2, 2, 2);
            n += refuses(
                "a short",
                dev.gemm(&spec, a.range(0..3), b.all(), c.all_mut()),
                "a",
            )?;
            n += refuses(
                "c dtype",
                dev.gemm(&spec, a.all(), b.all(), half.all_mut()),
                "c",
            )?;
            n += refuses(
                "b past end",
                dev.gemm(&spec, a.all(), b.range(6..10), c.all_mut()),
                "b",
            )?;
            let overlap = GemmSpec::new(2, 2, 2).strided(2, 4, 4, 3);
            n += refuses(
                "overlapping c",
                dev.gemm(&overlap, a.all(), b.all(), c.all_mut()),
                "spec.stride_c",
            )?;
            n += refuses(
                "alpha",
                dev.gemm(&spec.scaled(f32::NAN, 0.0), a.all(), b.all(), c.all_mut()),
                "alpha",
            )?;
        }
        Kernel::BiasAdd => {
            n += refuses(
                "bias length",
                dev.bias_add(Shape2::new(2, 4), c.all_mut(), a.range(0..3)),
                "bias",
            )?;
            n += refuses(
                "x length",
                dev.bias_add(Shape2::new(3, 4), c.all_mut(), a.range(0..4)),
                "x",
            )?;
        }
        Kernel::BiasGrad => {
            n += refuses(
                "db length",
                dev.bias_grad(Shape2::new(2, 4), a.all(), c.range_mut(0..3), false),
                "db",
            )?;
            n += refuses(
                "db dtype",
                dev.bias_grad(Shape2::new(2, 4), a.all(), half.range_mut(0..4), false),
                "db",
            )?;
        }
        Kernel::Gelu | Kernel::Relu => {
            let mut s4 = short_mut(dev)?;
            n += refuses("length", unary(dev, kernel, a.all(), s4.all_mut()), "y")?;
            n += refuses("dtype", unary(dev, kernel, a.all(), half.all_mut()), "y")?;
        }
        Kernel::GeluBackward | Kernel::ReluBackward => {
            n += refuses(
                "dy length",
                unary_backward(dev, kernel, a.all(), short.all(), c.all_mut()),
                "dy",
            )?;
            n += refuses(
                "dx past end",
                unary_backward(dev, kernel, a.all(), b.all(), c.range_mut(4..12)),
                "dx",
            )?;
        }
        Kernel::LayerNorm => {
            let args = LayerNormArgs {
                x: a.all(),
                gamma: b.range(0..3),
                beta: b.range(0..4),
                y: c.all_mut(),
                mean: d.range_mut(0..2),
                rstd: e.range_mut(0..2),
            };
            n += refuses(
                "gamma",
                dev.layer_norm(Shape2::new(2, 4), 1e-5, args),
                "gamma",
            )?;
            let args = LayerNormArgs {
                x: a.all(),
                gamma: b.range(0..4),
                beta: b.range(0..4),
                y: c.all_mut(),
                mean: half.range_mut(0..2),
                rstd: e.range_mut(0..2),
            };
            n += refuses(
                "mean dtype",
                dev.layer_norm(Shape2::new(2, 4), 1e-5, args),
                "mean",
            )?;
            let args = LayerNormArgs {
                x: a.all(),
                gamma: b.range(0..4),
                beta: b.range(0..4),
                y: c.all_mut(),
                mean: d.range_mut(0..2),
                rstd: e.range_mut(0..2),
            };
            n += refuses("eps", dev.layer_norm(Shape2::new(2, 4), -1.0, args), "eps")?;
        }
        Kernel::LayerNormBackward => {
            let args = LayerNormBackwardArgs {
                x: a.all(),
                gamma: b.range(0..4),
                mean: short.range(0..2),
                rstd: short.range(0..3),
                dy: a.all(),
                dx: c.all_mut(),
                dgamma: d.range_mut(0..4),
                dbeta: e.range_mut(0..4),
            };
            n += refuses(
                "rstd",
                dev.layer_norm_backward(Shape2::new(2, 4), false, args),
                "rstd",
            )?;
        }
        Kernel::SoftmaxCrossEntropy => {
            n += refuses(
                "labels dtype",
                dev.softmax_cross_entropy(
                    Shape2::new(2, 4),
                    -100,
                    a.all(),
                    b.range(0..2),
                    c.range_mut(0..2),
                ),
                "labels",
            )?;
            n += refuses(
                "losses length",
                dev.softmax_cross_entropy(
                    Shape2::new(2, 4),
                    -100,
                    a.all(),
                    ints.range(0..2),
                    c.range_mut(0..3),
                ),
                "losses",
            )?;
            n += refuses(
                "no classes",
                dev.softmax_cross_entropy(
                    Shape2::new(2, 0),
                    -100,
                    a.range(0..0),
                    ints.range(0..2),
                    c.range_mut(0..2),
                ),
                "shape",
            )?;
        }
        Kernel::SoftmaxCrossEntropyBackward => {
            n += refuses(
                "scale",
                dev.softmax_cross_entropy_backward(
                    Shape2::new(2, 4),
                    -100,
                    f32::NAN,
                    a.all(),
                    ints.range(0..2),
                    c.all_mut(),
                ),
                "scale",
            )?;
            n += refuses(
                "dlogits",
                dev.softmax_cross_entropy_backward(
                    Shape2::new(2, 4),
                    -100,
                    1.0,
                    a.all(),
                    ints.range(0..2),
                    half.all_mut(),
                ),
                "dlogits",
            )?;
        }
        Kernel::Embedding => {
            n += refuses(
                "ids dtype",
                dev.embedding(Shape2::new(2, 4), a.range(0..2), b.all(), c.all_mut()),
                "ids",
            )?;
            n += refuses(
                "table",
                dev.embedding(Shape2::new(3, 4), ints.range(0..2), b.all(), c.all_mut()),
                "table",
            )?;
            n += refuses(
                "out",
                dev.embedding(Shape2::new(2, 4), ints.range(0..3), b.all(), c.all_mut()),
                "out",
            )?;
        }
        Kernel::EmbeddingBackward => {
            n += refuses(
                "dout",
                dev.embedding_backward(
                    Shape2::new(2, 4),
                    false,
                    ints.range(0..1),
                    a.all(),
                    c.all_mut(),
                ),
                "dout",
            )?;
            n += refuses(
                "dtable",
                dev.embedding_backward(
                    Shape2::new(2, 4),
                    false,
                    ints.range(0..2),
                    a.all(),
                    c.range_mut(0..7),
                ),
                "dtable",
            )?;
            n += refuses(
                "ids past end",
                dev.embedding_backward(
                    Shape2::new(2, 4),
                    false,
                    ints.range(7..9),
                    a.all(),
                    c.all_mut(),
                ),
                "ids",
            )?;
        }
        Kernel::Attention => {
            let sh = AttentionShape::new(1, 1, 2, 4);
            let args = AttentionArgs {
                q: a.all(),
                k: b.all(),
                v: short.all(),
                out: c.all_mut(),
                lse: d.range_mut(0..2),
            };
            n += refuses("v", dev.attention(&sh, args), "v")?;
            let args = AttentionArgs {
                q: a.all(),
                k: b.all(),
                v: a.all(),
                out: c.all_mut(),
                lse: d.range_mut(0..3),
            };
            n += refuses("lse", dev.attention(&sh, args), "lse")?;
            let bad = AttentionShape {
                scale: f32::INFINITY,
                ..sh
            };
            let args = AttentionArgs {
                q: a.all(),
                k: b.all(),
                v: a.all(),
                out: c.all_mut(),
                lse: d.range_mut(0..2),
            };
            n += refuses("scale", dev.attention(&bad, args), "shape.scale")?;
        }
        Kernel::AttentionBackward => {
            let sh = AttentionShape::new(1, 1, 2, 4);
            let args = AttentionBackwardArgs {
                q: a.all(),
                k: b.all(),
                v: a.all(),
                out: b.all(),
                lse: short.range(0..2),
                dout: a.all(),
                dq: c.all_mut(),
                dk: d.all_mut(),
                dv: half.all_mut(),
            };
            n += refuses("dv dtype", dev.attention_backward(&sh, args), "dv")?;
        }
    }
    Ok(n)
}

fn short_mut<B: Backend>(dev: &Device<B>) -> Result<B::Buffer, String> {
    dev.alloc(DType::F32, 4).map_err(|e| e.to_string())
}

// Generic helpers rather than closures, so each call gets its own borrow lifetimes.

fn binary<B: Backend>(
    dev: &Device<B>,
    k: Kernel,
    a: View<'_, B>,
    b: View<'_, B>,
    out: ViewMut<'_, B>,
) -> Result<()> {
    if k == Kernel::Add {
        dev.add(a, b, out)
    } else {
        dev.mul(a, b, out)
    }
}

fn reduce<B: Backend>(
    dev: &Device<B>,
    k: Kernel,
    x: View<'_, B>,
    out: ViewMut<'_, B>,
) -> Result<()> {
    if k == Kernel::Sum {
        dev.sum(x, out)
    } else {
        dev.sum_squares(x, out)
    }
}

fn moments<B: Backend>(
    dev: &Device<B>,
    k: Kernel,
    lr: f32,
    args: AdamArgs<'_, B::Buffer>,
) -> Result<()> {
    if k == Kernel::AdamStep {
        dev.adam_step(
            &AdamParams {
                lr,
                ..AdamParams::default()
            },
            args,
        )
    } else {
        dev.lamb_step(
            &LambParams {
                lr,
                ..LambParams::default()
            },
            args,
        )
    }
}

fn unary<B: Backend>(dev: &Device<B>, k: Kernel, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
    if k == Kernel::Gelu {
        dev.gelu(x, y)
    } else {
        dev.relu(x, y)
    }
}

fn unary_backward<B: Backend>(
    dev: &Device<B>,
    k: Kernel,
    x: View<'_, B>,
    dy: View<'_, B>,
    dx: ViewMut<'_, B>,
) -> Result<()> {
    if k == Kernel::GeluBackward {
        dev.gelu_backward(x, dy, dx)
    } else {
        dev.relu_backward(x, dy, dx)
    }
}
