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

#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    let t = math::tanh(GELU_C * (x + GELU_A * x * x * x));
    0.5 * x * (1.0 + t)
}

#[inline(always)]
fn gelu_grad_one(x: f32) -> f32 {
    let t = math::tanh(GELU_C * (x + GELU_A * x * x * x));
    let sech2 = 1.0 - t * t;
    let slope = 0.5 * x * sech2 * GELU_C * (1.0 + 3.0 * GELU_A * x * x);
    // Once tanh saturates the second term is exactly 0; selecting 0 avoids 0 * inf = NaN when
    // x^3 overflows (computed, then selected, so the loop stays branch-free and vectorizes).
    0.5 * (1.0 + t) + if sech2 == 0.0 { 0.0 } else { slope }
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
