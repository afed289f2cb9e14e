//! Softmax cross-entropy over class logits with an ignore index.

use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, math};
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

/// Independent accumulator lanes of the row reductions: four AVX-512 (eight AVX2) registers,
/// so the reductions run at the vector units' throughput instead of one add's latency.
const LANES: usize = 64;

/// The maximum of a row (vectorizes); NaN is skipped here and propagates through the
/// exponentials instead.
#[inline(always)]
fn row_max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    // `if v > m { v } else { m }` is one vmaxps (NaN fails the comparison and is skipped);
    // `f32::max` costs a compare and a blend more per vector.
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// `sum(exp(x - m))`, reading `x` only.
#[inline(always)]
fn exp_sum(x: &[f32], m: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| math::exp_nonpositive(v - m))
        .sum();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] += math::exp_nonpositive(c[l] - m);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Replaces `x` by `exp(x - m)` and returns the sum, in one pass.
#[inline(always)]
fn exp_shifted_sum(x: &mut [f32], m: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let e = math::exp_nonpositive(c[l] - m);
            c[l] = e;
            lanes[l] += e;
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = math::exp_nonpositive(*v - m);
        tail += *v;
    }
    lanes.iter().sum::<f32>() + tail
}

vectorized! {
    /// `logsumexp(row) - row[class]`, reading the row twice (max, then the exponentials).
    fn row_loss(row: &[f32], class: usize) -> f32 {
        let m = row_max(row);
        m + exp_sum(row, m).ln() - row[class]
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
                        Label::Class(c) => match T::as_f32(row) {
                            Some(row) => row_loss(row, c),
                            None => {
                                T::load(row, row32);
                                row_loss(row32, c)
                            }
                        },
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
                |out32, ((drow, row), &label)| {
                    let fill = match classify(label, ignore_index, shape.cols) {
                        Label::Ignored => 0.0,
                        Label::Invalid => f32::NAN,
                        Label::Class(c) => {
                            // In place in a row in cache, then copied out: writing the
                            // exponentials straight to memory and scaling them there ran 2.4x
                            // slower (measured at 2048 x 8192).
                            T::load(row, out32);
                            row_grad(out32, c, scale);
                            T::store(out32, drow);
                            return;
                        }
                    };
                    out32.fill(fill);
                    T::store(out32, drow);
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
