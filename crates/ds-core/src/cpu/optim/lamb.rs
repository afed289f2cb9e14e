//! Lamb on the CPU, in DeepSpeed FusedLamb's two passes: moments and norms, then the
//! trust-ratio-scaled update.

use crate::cpu::float::{BLOCK, Float};
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::par::{CHUNK, ordered_sum};
use crate::cpu::stream::{fence, streams};
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::{LambApplyArgs, LambMomentArgs};
use crate::params::LambParams;
use rayon::prelude::*;

/// Updates the moments of one element and returns its `(p^2, u^2)`.
#[inline(always)]
fn moment(p: f32, g: f32, m: &mut f32, v: &mut f32, hp: &LambParams) -> (f32, f32) {
    let g = g * hp.grad_scale;
    let mi = hp.beta1 * *m + (1.0 - hp.beta1) * g;
    let vi = hp.beta2 * *v + (1.0 - hp.beta2) * (g * g);
    *m = mi;
    *v = vi;
    let u = mi / (vi.sqrt() + hp.eps) + hp.weight_decay * p;
    (p * p, u * u)
}

vectorized! {
    /// Updates the moments of one block and returns its `(sum p^2, sum u^2)`, with eight f32
    /// lanes per sum so the loop vectorizes.
    fn moments_block(
        p: &[f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        hp: &LambParams,
    ) -> (f64, f64) {
        let (mut p_sq, mut u_sq) = ([0f32; 8], [0f32; 8]);
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        let whole = n - n % 8;
        for (((p, g), m), v) in p[..whole]
            .chunks_exact(8)
            .zip(g[..whole].chunks_exact(8))
            .zip(m[..whole].chunks_exact_mut(8))
            .zip(v[..whole].chunks_exact_mut(8))
        {
            for l in 0..8 {
                let (a, b) = moment(p[l], g[l], &mut m[l], &mut v[l], hp);
                p_sq[l] += a;
                u_sq[l] += b;
            }
        }
        let widen = |a: [f32; 8]| a.iter().map(|&x| f64::from(x)).sum::<f64>();
        let (mut ps, mut us) = (widen(p_sq), widen(u_sq));
        for i in whole..n {
            let (a, b) = moment(p[i], g[i], &mut m[i], &mut v[i], hp);
            ps += f64::from(a);
            us += f64::from(b);
        }
        (ps, us)
    }
}

vectorized! {
    fn apply_block(p: &mut [f32], m: &[f32], v: &[f32], hp: &LambParams, scale: f32) {
        for ((p, m), v) in p.iter_mut().zip(m).zip(v) {
            let u = m / (v.sqrt() + hp.eps) + hp.weight_decay * *p;
            *p -= scale * u;
        }
    }
}

fn moments_typed<G: Float>(
    backend: &CpuBackend,
    hp: &LambParams,
    args: LambMomentArgs<'_, CpuBuffer>,
) -> Result<()> {
    let p = typed::<f32>(args.param)?;
    let g = typed::<G>(args.grad)?;
    let m = typed_mut::<f32>(args.exp_avg)?;
    let v = typed_mut::<f32>(args.exp_avg_sq)?;
    let parts: Vec<(f64, f64)> = backend.run(|| {
        p.par_chunks(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .map(|((p, g), (m, v))| {
                let mut gbuf = [0f32; BLOCK];
                let mut sums = (0.0, 0.0);
                for (((p, g), m), v) in p
                    .chunks(BLOCK)
                    .zip(g.chunks(BLOCK))
                    .zip(m.chunks_mut(BLOCK))
                    .zip(v.chunks_mut(BLOCK))
                {
                    let g = match G::as_f32(g) {
                        Some(g) => g,
                        None => {
                            G::load(g, &mut gbuf[..g.len()]);
                            &gbuf[..g.len()]
                        }
                    };
                    let (a, b) = moments_block(p, g, m, v, hp);
                    sums = (sums.0 + a, sums.1 + b);
                }
                sums
            })
            .collect()
    });
    let p_sq = ordered_sum(parts.iter().map(|s| s.0).collect());
    let u_sq = ordered_sum(parts.iter().map(|s| s.1).collect());
    let norms = typed_mut::<f32>(args.norms)?;
    norms[0] = p_sq as f32;
    norms[1] = u_sq as f32;
    Ok(())
}

pub(super) fn moments(
    backend: &CpuBackend,
    hp: &LambParams,
    args: LambMomentArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.grad.dtype(), G => moments_typed::<G>(backend, hp, args))
}

fn apply_typed<C: Float>(
    backend: &CpuBackend,
    hp: &LambParams,
    args: LambApplyArgs<'_, CpuBuffer>,
) -> Result<()> {
    let norms = typed::<f32>(args.norms)?;
    let scale = hp.step_size() * hp.trust_ratio(norms[0], norms[1]);
    let p = typed_mut::<f32>(args.param)?;
    let m = typed::<f32>(args.exp_avg)?;
    let v = typed::<f32>(args.exp_avg_sq)?;
    let copy = args.param_copy.map(typed_mut::<C>).transpose()?;
    let chunks = p.len().div_ceil(CHUNK);
    let streaming = copy.as_ref().is_some_and(|c| streams(c));
    let mut copy_parts: Vec<Option<&mut [C]>> = match copy {
        Some(c) => c.chunks_mut(CHUNK).map(Some).collect(),
        None => (0..chunks).map(|_| None).collect(),
    };
    backend.run(|| {
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .zip(copy_parts.par_iter_mut())
            .for_each(|((p, (m, v)), copy)| {
                apply_block(p, m, v, hp, scale);
                if let Some(c) = copy.as_deref_mut() {
                    if streaming {
                        C::store_stream(p, c);
                        fence();
                    } else {
                        C::store(p, c);
                    }
                }
            });
    });
    Ok(())
}

pub(super) fn apply(
    backend: &CpuBackend,
    hp: &LambParams,
    args: LambApplyArgs<'_, CpuBuffer>,
) -> Result<()> {
    match args.param_copy.as_ref().map(|c| c.dtype()) {
        None => apply_typed::<f32>(backend, hp, args),
        Some(d) => with_float!(d, C => apply_typed::<C>(backend, hp, args)),
    }
}
