//! Softmax cross-entropy over class logits with an ignore index.

use crate::cpu::CpuBackend;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

/// log(sum(exp(x))) computed stably (max subtracted), in f64.
fn log_sum_exp(x: &[f32]) -> f64 {
    let m = x.iter().fold(
        f32::NEG_INFINITY,
        |a, &b| if b > a || b.is_nan() { b } else { a },
    );
    if !m.is_finite() {
        return f64::from(m);
    }
    let s: f64 = x.iter().map(|&v| (f64::from(v) - f64::from(m)).exp()).sum();
    f64::from(m) + s.ln()
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
                            (log_sum_exp(row32) - f64::from(row32[c])) as f32
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
                            let lse = log_sum_exp(row32);
                            for v in row32.iter_mut() {
                                *v = ((f64::from(*v) - lse).exp() as f32) * scale;
                            }
                            row32[c] -= scale;
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
