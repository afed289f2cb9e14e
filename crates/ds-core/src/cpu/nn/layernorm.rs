//! LayerNorm over the last dimension, forward and backward.

use super::ROW_BLOCK;
use super::bias::{store_sums, widen};
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::lanes::lane_sum;
use crate::cpu::prefetch::Ahead;
use crate::cpu::stream::{fence, streams};
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::{LayerNormArgs, LayerNormBackwardArgs};
use crate::params::Shape2;
use rayon::prelude::*;

/// Independent accumulator lanes of the row sums (two AVX-512 / four AVX2 registers), so a
/// sum runs at the vector units' throughput rather than one add's latency.
const LANES: usize = 32;

vectorized! {
    /// `y = (x - mean) * rstd * gamma + beta` over one row; returns its mean and
    /// `1/sqrt(var + eps)` (biased variance), computed in two passes, mean then squared
    /// deviations, so a large mean does not cost the variance its precision.
    fn normalize_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, y: &mut [f32]) -> (f32, f32) {
        let n = x.len() as f64;
        let mean = (lane_sum::<LANES>(x, |v| v) / n) as f32;
        let var = lane_sum::<LANES>(x, |v| (v - mean) * (v - mean)) / n;
        let rs = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
        let len = x.len().min(gamma.len()).min(beta.len()).min(y.len());
        let (x, gamma, beta, y) = (&x[..len], &gamma[..len], &beta[..len], &mut y[..len]);
        for i in 0..len {
            y[i] = (x[i] - mean) * rs * gamma[i] + beta[i];
        }
        (mean, rs)
    }
}

vectorized! {
    /// One row of the backward: `dx` from the row of `x` and `dy` and the row's `(mean,
    /// rstd)`; the row's contributions are added to `sums`, `(dgamma, dbeta)`. Two passes over
    /// the row (in cache after the first): the sums `c1 = mean(dy gamma)` and
    /// `c2 = mean(dy gamma xhat)`, then `dx = rstd (dy gamma - c1 - xhat c2)` with xhat and
    /// `dy gamma` recomputed and `dgamma += dy xhat`, `dbeta += dy` on the way. The first pass
    /// stores nothing, so its lane sums stay in registers: with the dgamma and dbeta updates
    /// in it, LLVM vectorized its lane loop over the sums in memory and every chunk waited
    /// on the previous chunk's stores.
    fn backward_row(
        x: &[f32],
        dy: &[f32],
        gamma: &[f32],
        stats: (f32, f32),
        sums: (&mut [f32], &mut [f32]),
        dx: &mut [f32],
        ahead: &[Ahead],
    ) {
        let (mu, rs) = stats;
        let (dg, db) = sums;
        let len = x.len().min(dy.len()).min(gamma.len()).min(dg.len()).min(db.len()).min(dx.len());
        let (x, dy, gamma) = (&x[..len], &dy[..len], &gamma[..len]);
        let (dg, db, dx) = (&mut dg[..len], &mut db[..len], &mut dx[..len]);
        let (mut c1, mut c2) = ([0f32; LANES], [0f32; LANES]);
        let (xs, ys, gs) = (x.chunks_exact(LANES), dy.chunks_exact(LANES), gamma.chunks_exact(LANES));
        let (x_tail, y_tail, g_tail) = (xs.remainder(), ys.remainder(), gs.remainder());
        for ((x, y), g) in xs.zip(ys).zip(gs) {
            for (((a1, a2), x), (y, g)) in c1.iter_mut().zip(c2.iter_mut()).zip(x).zip(y.iter().zip(g)) {
                let gg = y * g;
                *a1 += gg;
                *a2 += gg * ((x - mu) * rs);
            }
        }
        let (mut t1, mut t2) = (0f32, 0f32);
        for ((x, y), g) in x_tail.iter().zip(y_tail).zip(g_tail) {
            let gg = y * g;
            t1 += gg;
            t2 += gg * ((x - mu) * rs);
        }
        let n = len as f64;
        let sum = |l: &[f32; LANES], t: f32| {
            l.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(t)
        };
        let (c1, c2) = ((sum(&c1, t1) / n) as f32, (sum(&c2, t2) / n) as f32);
        // Memory fetches the next row's x and dy over this pass, which runs from cache.
        let out = dx.chunks_mut(LANES).zip(dg.chunks_mut(LANES).zip(db.chunks_mut(LANES)));
        let rows = x.chunks(LANES).zip(dy.chunks(LANES).zip(gamma.chunks(LANES)));
        for (ci, ((dx, (dg, db)), (x, (dy, g)))) in out.zip(rows).enumerate() {
            ahead.iter().for_each(|a| a.touch(ci));
            let lanes = dx.iter_mut().zip(dg.iter_mut().zip(db.iter_mut()));
            for ((dx, (dg, db)), (x, (dy, g))) in lanes.zip(x.iter().zip(dy.iter().zip(g))) {
                let xh = (x - mu) * rs;
                *dg += dy * xh;
                *db += dy;
                *dx = rs * (dy * g - c1 - xh * c2);
            }
        }
    }
}

pub(super) fn forward(
    be: &CpuBackend,
    shape: Shape2,
    eps: f32,
    args: LayerNormArgs<'_, CpuBuffer>,
) -> Result<()> {
    if shape.rows == 0 || shape.cols == 0 {
        return Ok(());
    }
    with_float!(args.x.dtype(), T => {
        let x = typed::<T>(args.x)?;
        let gamma = widen(typed::<T>(args.gamma)?);
        let beta = widen(typed::<T>(args.beta)?);
        let y = typed_mut::<T>(args.y)?;
        let mean = typed_mut::<f32>(args.mean)?;
        let rstd = typed_mut::<f32>(args.rstd)?;
        let cols = shape.cols;
        let streaming = streams(y);
        let block = cols * ROW_BLOCK;
        be.run(|| {
            y.par_chunks_mut(block)
                .zip(x.par_chunks(block))
                .zip(mean.par_chunks_mut(ROW_BLOCK).zip(rstd.par_chunks_mut(ROW_BLOCK)))
                .for_each_init(
                    || (vec![0f32; cols], vec![0f32; cols]),
                    |(xr, yr), ((y, x), (mean, rstd))| {
                        let rows = y.chunks_mut(cols).zip(x.chunks(cols));
                        for ((y, x), (mean, rstd)) in rows.zip(mean.iter_mut().zip(rstd.iter_mut())) {
                            // Memory fetches the next row while this one is worked in cache.
                            Ahead::next_row(x, 1, false).touch(0);
                            let x = match T::as_f32(x) {
                                Some(x) => x,
                                None => {
                                    T::load(x, xr);
                                    &xr[..]
                                }
                            };
                            let (mu, rs) = match T::as_f32_mut(&mut *y) {
                                Some(y) if !streaming => normalize_row(x, &gamma, &beta, eps, y),
                                _ => {
                                    let stats = normalize_row(x, &gamma, &beta, eps, yr);
                                    T::store_or_stream(yr, y, streaming);
                                    stats
                                }
                            };
                            *mean = mu;
                            *rstd = rs;
                        }
                        if streaming {
                            fence();
                        }
                    },
                )
        });
        Ok(())
    })
}

fn backward_typed<T: Float>(
    be: &CpuBackend,
    shape: Shape2,
    accumulate: bool,
    args: LayerNormBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    let cols = shape.cols;
    let x = typed::<T>(args.x)?;
    let gamma = widen(typed::<T>(args.gamma)?);
    let mean = typed::<f32>(args.mean)?;
    let rstd = typed::<f32>(args.rstd)?;
    let dy = typed::<T>(args.dy)?;
    let dx = typed_mut::<T>(args.dx)?;
    let dgamma = typed_mut::<T>(args.dgamma)?;
    let dbeta = typed_mut::<T>(args.dbeta)?;
    if shape.rows == 0 || cols == 0 {
        store_sums(&vec![0f32; dgamma.len()], dgamma, accumulate);
        store_sums(&vec![0f32; dbeta.len()], dbeta, accumulate);
        return Ok(());
    }
    let block = cols * ROW_BLOCK;
    let streaming = streams(dx);
    // The second pass's chunks, over which the next row's prefetch is spread.
    let chunks = cols.div_ceil(LANES);
    // Each block of rows yields its dx rows and its partial dgamma and dbeta.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = be.run(|| {
        dx.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
            .enumerate()
            .map(|(b, (dx, (x, dy)))| {
                let (mut dg, mut db) = (vec![0f32; cols], vec![0f32; cols]);
                let (mut xr, mut gr, mut dr) = (Vec::new(), Vec::new(), Vec::new());
                for (r, (dx, (x, dy))) in dx
                    .chunks_mut(cols)
                    .zip(x.chunks(cols).zip(dy.chunks(cols)))
                    .enumerate()
                {
                    let row = b * ROW_BLOCK + r;
                    let stats = (mean[row], rstd[row]);
                    let ahead = [
                        Ahead::next_row(x, chunks, false),
                        Ahead::next_row(dy, chunks, false),
                    ];
                    let (x, dy) = match (T::as_f32(x), T::as_f32(dy)) {
                        (Some(x), Some(dy)) => (x, dy),
                        _ => {
                            xr.resize(cols, 0.0);
                            gr.resize(cols, 0.0);
                            T::load(x, &mut xr);
                            T::load(dy, &mut gr);
                            (&xr[..], &gr[..])
                        }
                    };
                    match T::as_f32_mut(&mut *dx) {
                        Some(dx) if !streaming => {
                            backward_row(x, dy, &gamma, stats, (&mut dg, &mut db), dx, &ahead);
                        }
                        _ => {
                            dr.resize(cols, 0.0);
                            backward_row(x, dy, &gamma, stats, (&mut dg, &mut db), &mut dr, &ahead);
                            T::store_or_stream(&dr, dx, streaming);
                        }
                    }
                }
                if streaming {
                    fence();
                }
                (dg, db)
            })
            .collect()
    });
    let (mut sum_g, mut sum_b) = (vec![0f32; cols], vec![0f32; cols]);
    for (dg, db) in partials {
        sum_g.iter_mut().zip(&dg).for_each(|(s, v)| *s += v);
        sum_b.iter_mut().zip(&db).for_each(|(s, v)| *s += v);
    }
    store_sums(&sum_g, dgamma, accumulate);
    store_sums(&sum_b, dbeta, accumulate);
    Ok(())
}

pub(super) fn backward(
    be: &CpuBackend,
    shape: Shape2,
    accumulate: bool,
    args: LayerNormBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.x.dtype(), T => backward_typed::<T>(be, shape, accumulate, args))
}
