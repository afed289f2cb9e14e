//! LayerNorm over the last dimension, forward and backward.

use super::ROW_BLOCK;
use super::bias::{store_sums, widen};
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::{LayerNormArgs, LayerNormBackwardArgs};
use crate::params::Shape2;
use rayon::prelude::*;

/// Sum of `f(x)` over eight f32 lanes (vectorizes), widened at the end.
#[inline(always)]
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            lanes[l] += f(c[l]);
        }
    }
    let tail: f32 = rest.iter().map(|&v| f(v)).sum();
    lanes.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(tail)
}

vectorized! {
    /// Mean and `1/sqrt(var + eps)` of one row (biased variance) in two passes, mean then squared
    /// deviations, so a large mean does not cost the variance its precision.
    fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
        let n = x.len() as f64;
        let mean = (lane_sum(x, |v| v) / n) as f32;
        let var = lane_sum(x, |v| (v - mean) * (v - mean)) / n;
        (mean, (1.0 / (var + f64::from(eps)).sqrt()) as f32)
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
        be.run(|| {
            y.par_chunks_mut(cols)
                .zip(x.par_chunks(cols))
                .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
                .for_each_init(
                    || vec![0f32; cols],
                    |row, ((y, x), (mean, rstd))| {
                        T::load(x, row);
                        let (mu, rs) = row_stats(row, eps);
                        for ((v, g), b) in row.iter_mut().zip(&gamma).zip(&beta) {
                            *v = (*v - mu) * rs * g + b;
                        }
                        T::store(row, y);
                        *mean = mu;
                        *rstd = rs;
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
    let n = cols as f64;
    let block = cols * ROW_BLOCK;
    // Each block of rows yields its dx rows and its partial dgamma and dbeta.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = be.run(|| {
        dx.par_chunks_mut(block)
            .zip(x.par_chunks(block).zip(dy.par_chunks(block)))
            .enumerate()
            .map(|(b, (dx, (x, dy)))| {
                let (mut dg, mut db) = (vec![0f32; cols], vec![0f32; cols]);
                let (mut xr, mut gr) = (vec![0f32; cols], vec![0f32; cols]);
                for (r, (dx, (x, dy))) in dx
                    .chunks_mut(cols)
                    .zip(x.chunks(cols).zip(dy.chunks(cols)))
                    .enumerate()
                {
                    let row = b * ROW_BLOCK + r;
                    let (mu, rs) = (mean[row], rstd[row]);
                    T::load(x, &mut xr);
                    T::load(dy, &mut gr);
                    let (mut c1, mut c2) = (0f64, 0f64);
                    for (((xh, g), gam), (dg, db)) in xr
                        .iter_mut()
                        .zip(gr.iter_mut())
                        .zip(&gamma)
                        .zip(dg.iter_mut().zip(db.iter_mut()))
                    {
                        *xh = (*xh - mu) * rs;
                        *dg += *g * *xh;
                        *db += *g;
                        *g *= gam;
                        c1 += f64::from(*g);
                        c2 += f64::from(*g * *xh);
                    }
                    let (c1, c2) = ((c1 / n) as f32, (c2 / n) as f32);
                    for (xh, g) in xr.iter_mut().zip(&gr) {
                        *xh = rs * (g - c1 - *xh * c2);
                    }
                    T::store(&xr, dx);
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
