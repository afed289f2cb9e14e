//! Softmax cross-entropy over class logits with an ignore index.

use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, math};
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

/// The maximum of a row over eight lanes (vectorizes); NaN is skipped here and propagates
/// through the exponentials instead.
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Replaces `x` by `exp(x - m)` and returns the sum (eight lanes, so both loops vectorize).
#[inline(always)]
fn exp_shifted_sum(x: &mut [f32], m: f32) -> f32 {
    for v in x.iter_mut() {
        *v = math::exp(*v - m);
    }
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

vectorized! {
    /// `logsumexp(row) - row[class]`; `row` is scratch and is overwritten.
    fn row_loss(row: &mut [f32], class: usize) -> f32 {
        let target = row[class];
        let m = row_max(row);
        let s = exp_shifted_sum(row, m);
        m + s.ln() - target
    }
}

vectorized! {
    /// `scale * (softmax(row) - onehot(class))` in place.
    fn row_grad(row: &mut [f32], class: usize, scale: f32) {
        let m = row_max(row);
        let s = exp_shifted_sum(row, m);
        let k = scale / s;
        for v in row.iter_mut() {
            *v *= k;
        }
        row[class] -= scale;
    }
}

/// Whether a label selects a class, is ignored, or is invalid.
enum Label {
    Class(usize),
    Ignored,
    Invalid,
}

fn classify(label: i32, ignore_index: i32, classes: usize) -> Label {
    if label == ignore_index {
        Label::Ignored
    } else {
        match usize::try_from(label) {
            Ok(c) if c < classes => Label::Class(c),
            _ => Label::Invalid,
        }
    }
}

pub(super) fn forward(
    be: &CpuBackend,
    shape: Shape2,
    ignore_index: i32,
    logits: View<'_, CpuBackend>,
    labels: View<'_, CpuBackend>,
    losses: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    let labels = typed::<i32>(labels)?;
    let losses = typed_mut::<f32>(losses)?;
    if shape.cols == 0 {
        return Ok(());
    }
    with_float!(logits.dtype(), T => {
        let logits = typed::<T>(logits)?;
        be.run(|| {
            losses.par_iter_mut().zip(logits.par_chunks(shape.cols)).zip(labels.par_iter()).for_each_init(
                || vec![0f32; shape.cols],
                |row32, ((loss, row), &label)| {
                    *loss = match classify(label, ignore_index, shape.cols) {
                        Label::Ignored => 0.0,
                        Label::Invalid => f32::NAN,
                        Label::Class(c) => {
                            T::load(row, row32);
                            row_loss(row32, c)
                        }
                    };
                },
            )
        });
        Ok(())
    })
}

fn backward_typed<T: Float>(
    be: &CpuBackend,
    shape: Shape2,
    ignore_index: i32,
    scale: f32,
    logits: &[T],
    labels: &[i32],
    dlogits: &mut [T],
) {
    be.run(|| {
        dlogits
            .par_chunks_mut(shape.cols)
            .zip(logits.par_chunks(shape.cols))
            .zip(labels.par_iter())
            .for_each_init(
                || vec![0f32; shape.cols],
                |row32, ((drow, row), &label)| {
                    match classify(label, ignore_index, shape.cols) {
                        Label::Ignored => row32.fill(0.0),
                        Label::Invalid => row32.fill(f32::NAN),
                        Label::Class(c) => {
                            T::load(row, row32);
                            row_grad(row32, c, scale);
                        }
                    }
                    T::store(row32, drow);
                },
            )
    });
}

pub(super) fn backward(
    be: &CpuBackend,
    shape: Shape2,
    ignore_index: i32,
    scale: f32,
    logits: View<'_, CpuBackend>,
    labels: View<'_, CpuBackend>,
    dlogits: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    let labels = typed::<i32>(labels)?;
    if shape.cols == 0 {
        return Ok(());
    }
    with_float!(logits.dtype(), T => {
        let (logits, dlogits) = (typed::<T>(logits)?, typed_mut::<T>(dlogits)?);
        backward_typed(be, shape, ignore_index, scale, logits, labels, dlogits);
        Ok(())
    })
}
