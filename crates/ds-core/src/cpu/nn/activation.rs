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
// one exp and one division per element instead of tanh's polynomial, exp and division, and no
// cancellation in `1 + tanh(u)` for negative inputs. Same function, a few ulp either way.

/// `e^{-2u}` for GELU's `u = c (x + a x^3)`.
#[inline(always)]
fn neg_exp_2u(x: f32) -> f32 {
    math::exp(-2.0 * GELU_C * (x + GELU_A * x * x * x))
}

#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    x / (1.0 + neg_exp_2u(x))
}

#[inline(always)]
fn gelu_grad_one(x: f32) -> f32 {
    let e = neg_exp_2u(x);
    let s = 1.0 / (1.0 + e);
    // 1 - s = e s, exactly where e is finite; where it is not, s is 0 and so is the second term
    // (selected, not computed: x^3 or e overflowing would make 0 * inf = NaN).
    let du = 2.0 * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
    let slope = x * du * s * (e * s);
    s + if e.is_finite() && slope.is_finite() {
        slope
    } else {
        0.0
    }
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
