//! GELU (tanh form) and ReLU, forward and backward.

use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, map, math};
use crate::error::Result;
use crate::kernels::{View, ViewMut};

/// sqrt(2/pi).
pub(crate) const GELU_C: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
pub(crate) const GELU_A: f32 = 0.044_715;

// GELU's tanh form through the identity `0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^{-2u})`:
// one exponential and one division per element instead of tanh's polynomial, exp and division,
// and no cancellation in `1 + tanh(u)` for negative inputs. The exponential is taken in base 2,
// `e^{-2u} = 2^z` with `z = x (Z1 + Z3 x^2)`, clamped into `exp2_in_range`'s domain: about 19
// vector operations per element forward. The general `exp` of `-2u` (range checks, a
// Cody-Waite split, a two-step scale) made the forward compute-bound at a third of the copy
// bandwidth on a Zen 3.
//
// Edges: a clamped `z` changes the result by less than `2^-126 |x|` (below the lower clamp
// `1 + 2^z` is 1; at the upper one the result is `x / 2^128 = -0`, as the exact value rounds).
// NaN reaches the result through `x`; `x = -inf` gives NaN (`-inf / inf`), as the formula
// `0.5 x (1 + tanh u)` does.

/// `-2 sqrt(2/pi) log2(e)`: `z`'s linear coefficient.
const Z1: f32 = -2.0 * GELU_C * math::LOG2E;
/// `z`'s cubic coefficient.
const Z3: f32 = Z1 * GELU_A;
/// The gradient works on `x` clamped to this: beyond it the slope term is below 2^-100.
const SLOPE_X_MAX: f32 = 30.0;
/// The gradient's bound on `z`: `e = 2^z` stays finite, so `1 - s = e s` holds.
const GRAD_Z_MAX: f32 = 126.0;

/// `z` with `e^{-2u} = 2^z`.
#[inline(always)]
fn gelu_z(x: f32) -> f32 {
    x * (x * x).mul_add(Z3, Z1)
}

#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let e = math::exp2_in_range(math::clamp_exp2_arg(gelu_z(x), math::EXP2_HI));
    x / (1.0 + e)
}

#[inline(always)]
fn gelu_grad_one(x: f32) -> f32 {
    // x clamped first: beyond the clamp the slope term is below 2^-100 and the exponential is
    // clamped anyway, and x^3 cannot overflow into `inf * 0`. `clamp` keeps NaN.
    let xc = x.clamp(-SLOPE_X_MAX, SLOPE_X_MAX);
    let e = math::exp2_in_range(math::clamp_exp2_arg(gelu_z(xc), GRAD_Z_MAX));
    let s = 1.0 / (1.0 + e);
    // d(2u)/dx = 2c (1 + 3a x^2).
    let du = (xc * xc).mul_add(6.0 * GELU_C * GELU_A, 2.0 * GELU_C);
    (xc * du * s).mul_add(e * s, s)
}

vectorized! {
    /// GELU over a slice, compiled for each instruction set. The map's own clones only
    /// vectorize closures LLVM inlines into them, and the gradient's (tanh and exp inlined) is
    /// too large to be: without its own clones it ran scalar, 6% of a GPT step. Index loops, not
    /// iterator chains: LLVM declined to inline the gradient's `Zip::fold` into the clones, which
    /// left the loop compiled for the baseline.
    fn gelu_slice(x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let (x, y) = (&x[..n], &mut y[..n]);
        for i in 0..n {
            y[i] = gelu_one(x[i]);
        }
    }
}

vectorized! {
    /// `dx = dy * GELU'(x)` over slices; see [`gelu_slice`].
    fn gelu_backward_slice(x: &[f32], dy: &[f32], dx: &mut [f32]) {
        let n = x.len().min(dy.len()).min(dx.len());
        let (x, dy, dx) = (&x[..n], &dy[..n], &mut dx[..n]);
        for i in 0..n {
            dx[i] = dy[i] * gelu_grad_one(x[i]);
        }
    }
}

pub(super) fn gelu(
    be: &CpuBackend,
    x: View<'_, CpuBackend>,
    y: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    with_float!(x.dtype(), T => {
        let (x, y) = (typed::<T>(x)?, typed_mut::<T>(y)?);
        be.run(|| map::unary(x, y, gelu_slice));
        Ok(())
    })
}

pub(super) fn gelu_backward(
    be: &CpuBackend,
    x: View<'_, CpuBackend>,
    dy: View<'_, CpuBackend>,
    dx: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    with_float!(x.dtype(), T => {
        let (x, dy, dx) = (typed::<T>(x)?, typed::<T>(dy)?, typed_mut::<T>(dx)?);
        be.run(|| map::binary(x, dy, dx, gelu_backward_slice));
        Ok(())
    })
}

pub(super) fn relu(
    be: &CpuBackend,
    x: View<'_, CpuBackend>,
    y: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    with_float!(x.dtype(), T => {
        let (x, y) = (typed::<T>(x)?, typed_mut::<T>(y)?);
        // `!(x <= 0)` keeps NaN and maps -0 to +0.
        be.run(|| map::unary(x, y, |x, y| y.iter_mut().zip(x).for_each(|(y, x)| *y = if *x <= 0.0 { 0.0 } else { *x })));
        Ok(())
    })
}

pub(super) fn relu_backward(
    be: &CpuBackend,
    x: View<'_, CpuBackend>,
    dy: View<'_, CpuBackend>,
    dx: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    with_float!(x.dtype(), T => {
        let (x, dy, dx) = (typed::<T>(x)?, typed::<T>(dy)?, typed_mut::<T>(dx)?);
        be.run(|| {
            map::binary(x, dy, dx, |x, dy, dx| {
                dx.iter_mut().zip(x.iter().zip(dy)).for_each(|(dx, (x, dy))| *dx = if *x > 0.0 { *dy } else { 0.0 })
            })
        });
        Ok(())
    })
}
