//! Softmax cross-entropy over class logits with an ignore index.

#[cfg(target_arch = "x86_64")]
use super::xent_avx512;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::{self, Isa, vectorized};
use crate::cpu::prefetch::Ahead;
use crate::cpu::stream::{fence, stream_scaled, streams};
use crate::cpu::{CpuBackend, math};
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

/// Values per chunk of the row passes (the prefetch slice), and the maximum's independent
/// lanes: four AVX-512 (eight AVX2) registers, so it runs at the vector units' throughput
/// instead of one comparison's latency.
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

/// Accumulator lanes of the exponential sums: two AVX2 registers. With [`LANES`] of them the
/// AVX2 build ran out of its 16 registers (the exponential's constants and temporaries beside
/// eight accumulators) and spilled every accumulator on every chunk.
const SUM_LANES: usize = 16;

/// `sum(exp(x - m))`, reading `x` only; touches `ahead` over its chunks.
#[inline(always)]
fn exp_sum(x: &[f32], m: f32, ahead: &[Ahead]) -> f32 {
    let mut lanes = [0f32; SUM_LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| math::exp_nonpositive(v - m))
        .sum();
    for (ci, c) in chunks.enumerate() {
        ahead.iter().for_each(|a| a.touch(ci));
        for part in c.chunks_exact(SUM_LANES) {
            for l in 0..SUM_LANES {
                lanes[l] += math::exp_nonpositive(part[l] - m);
            }
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `out = exp(x - m)`, returning its sum, in one pass; touches `ahead` over its chunks.
#[inline(always)]
fn exp_into(x: &[f32], m: f32, out: &mut [f32], ahead: &[Ahead]) -> f32 {
    let mut lanes = [0f32; SUM_LANES];
    let mut chunks = x.chunks_exact(LANES);
    let mut outs = out.chunks_exact_mut(LANES);
    for (ci, (c, o)) in (&mut chunks).zip(&mut outs).enumerate() {
        ahead.iter().for_each(|a| a.touch(ci));
        for (part, o) in c.chunks_exact(SUM_LANES).zip(o.chunks_exact_mut(SUM_LANES)) {
            for l in 0..SUM_LANES {
                let e = math::exp_nonpositive(part[l] - m);
                o[l] = e;
                lanes[l] += e;
            }
        }
    }
    let mut tail = 0f32;
    for (&v, o) in chunks.remainder().iter().zip(outs.into_remainder()) {
        *o = math::exp_nonpositive(v - m);
        tail += *o;
    }
    lanes.iter().sum::<f32>() + tail
}

vectorized! {
    /// [`row_max`] compiled for the active instruction set.
    fn max_of(row: &[f32]) -> f32 {
        row_max(row)
    }
}

vectorized! {
    fn portable_exp_sum(row: &[f32], m: f32, ahead: &[Ahead]) -> f32 {
        exp_sum(row, m, ahead)
    }
}

vectorized! {
    fn portable_exp_into(row: &[f32], m: f32, out: &mut [f32], ahead: &[Ahead]) -> f32 {
        exp_into(row, m, out, ahead)
    }
}

/// `sum(exp(row - m))`: the AVX-512 pass where it runs, the compiled portable one otherwise.
fn exps_summed(row: &[f32], m: f32, ahead: &[Ahead]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa::active() >= Isa::Avx512 {
        // SAFETY: the processor runs AVX-512 (`active` never exceeds what it has).
        return unsafe { xent_avx512::exp_sum(row, m, ahead) };
    }
    portable_exp_sum(row, m, ahead)
}

/// `out = exp(row - m)`, returning its sum; dispatched as [`exps_summed`].
fn exps_written(row: &[f32], m: f32, out: &mut [f32], ahead: &[Ahead]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa::active() >= Isa::Avx512 {
        // SAFETY: the processor runs AVX-512 (`active` never exceeds what it has).
        return unsafe { xent_avx512::exp_into(row, m, out, ahead) };
    }
    portable_exp_into(row, m, out, ahead)
}

vectorized! {
    /// `out = k x`.
    fn scale_into(x: &[f32], k: f32, out: &mut [f32]) {
        for i in 0..x.len().min(out.len()) {
            out[i] = x[i] * k;
        }
    }
}

/// Values per prefetch slice: the chunk both the portable and the AVX-512 passes step by.
const AHEAD_CHUNK: usize = LANES;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(xent_avx512::CHUNK == AHEAD_CHUNK);

/// The prefetch of the row after `row` over a pass along `row` in [`AHEAD_CHUNK`]s.
fn next_row<T>(row: &[T], write: bool) -> Ahead {
    Ahead::next_row(row, row.len() / AHEAD_CHUNK, write)
}

/// `logsumexp(row) - row[class]`, reading the row twice: the maximum from memory, the
/// exponentials from cache while the next row is prefetched.
fn row_loss(row: &[f32], class: usize, ahead: &[Ahead]) -> f32 {
    let m = max_of(row);
    m + exps_summed(row, m, ahead).ln() - row[class]
}

/// `exps = exp(row - max(row))`, returning their sum.
fn row_exps(row: &[f32], exps: &mut [f32], ahead: &[Ahead]) -> f32 {
    exps_written(row, max_of(row), exps, ahead)
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
                    let ahead = [next_row(row, false)];
                    *loss = match classify(label, ignore_index, shape.cols) {
                        Label::Ignored => 0.0,
                        Label::Invalid => f32::NAN,
                        Label::Class(c) => match T::as_f32(row) {
                            Some(row) => row_loss(row, c, &ahead),
                            None => {
                                T::load(row, row32);
                                row_loss(row32, c, &ahead)
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
    let streaming = streams(dlogits);
    be.run(|| {
        dlogits
            .par_chunks_mut(shape.cols)
            .zip(logits.par_chunks(shape.cols))
            .zip(labels.par_iter())
            .for_each_init(
                || vec![0f32; 2 * shape.cols],
                |scratch, ((drow, row), &label)| {
                    let fill = match classify(label, ignore_index, shape.cols) {
                        Label::Ignored => 0.0,
                        Label::Invalid => f32::NAN,
                        Label::Class(c) => {
                            // The exponentials go to a row of scratch in cache and are scaled
                            // on the way out: writing them straight to memory and scaling them
                            // there ran 2.4x slower (measured at 2048 x 8192). A large output
                            // is streamed, so its lines are not read for ownership first (8
                            // bytes of traffic per value instead of 12); a small one is stored,
                            // and prefetched for writing ahead of it.
                            let ahead = [next_row(row, false), next_row(drow, true)];
                            let ahead = if streaming { &ahead[..1] } else { &ahead[..] };
                            let (exps, row32) = scratch.split_at_mut(shape.cols);
                            // `scale (softmax(row) - onehot(c))`.
                            match (T::as_f32(row), T::as_f32_mut(drow)) {
                                (Some(row), Some(drow)) if !streaming => {
                                    let k = scale / row_exps(row, exps, ahead);
                                    scale_into(exps, k, drow);
                                    drow[c] -= scale;
                                }
                                (Some(row), Some(drow)) => {
                                    let k = scale / row_exps(row, exps, ahead);
                                    stream_scaled(exps, k, drow);
                                    fence();
                                    // One plain store after the fence (one line read back).
                                    drow[c] = exps[c] * k - scale;
                                }
                                _ => {
                                    T::load(row, row32);
                                    let k = scale / row_exps(row32, exps, ahead);
                                    scale_into(exps, k, row32);
                                    row32[c] -= scale;
                                    T::store_or_stream(row32, drow, streaming);
                                    if streaming {
                                        fence();
                                    }
                                }
                            }
                            return;
                        }
                    };
                    drow.fill(T::from_f32(fill));
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
