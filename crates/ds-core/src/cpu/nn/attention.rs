//! Causal softmax self-attention, forward and backward, in the memory-lean form: the forward
//! saves only the per-query log-sum-exp and the backward recomputes probabilities from it.

use super::bias::widen;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::{CpuBackend, CpuBuffer, math};
use crate::error::Result;
use crate::kernels::{AttentionArgs, AttentionBackwardArgs};
use crate::params::AttentionShape;
use rayon::prelude::*;
use std::borrow::Cow;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.chunks_exact(8).zip(b.chunks_exact(8));
    for (x, y) in chunks {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail = a.len() - a.len() % 8;
    let mut s: f32 = lanes.iter().sum();
    for i in tail..a.len().min(b.len()) {
        s += a[i] * b[i];
    }
    s
}

/// The storage as f32: borrowed when it already is, widened otherwise.
fn as_f32<T: Float>(x: &[T]) -> Cow<'_, [f32]> {
    match T::as_f32(x) {
        Some(x) => Cow::Borrowed(x),
        None => Cow::Owned(widen(x)),
    }
}

fn forward_typed<T: Float>(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionArgs<'_, CpuBuffer>,
) -> Result<()> {
    let (s, d) = (sh.seq, sh.head_dim);
    let q = as_f32(typed::<T>(args.q)?);
    let k = as_f32(typed::<T>(args.k)?);
    let v = as_f32(typed::<T>(args.v)?);
    let out = typed_mut::<T>(args.out)?;
    let lse = typed_mut::<f32>(args.lse)?;
    if s == 0 || d == 0 {
        lse.fill(f32::NEG_INFINITY);
        return Ok(());
    }
    be.run(|| {
        out.par_chunks_mut(d)
            .zip(lse.par_iter_mut())
            .enumerate()
            .for_each_init(
                || (vec![0f32; s], vec![0f32; d]),
                |(scores, acc), (row, (o, l))| {
                    let (bh, i) = (row / s, row % s);
                    let base = bh * s * d;
                    let qi = &q[base + i * d..base + (i + 1) * d];
                    let mut m = f32::NEG_INFINITY;
                    for j in 0..=i {
                        let sc = sh.scale * dot(qi, &k[base + j * d..base + (j + 1) * d]);
                        scores[j] = sc;
                        if sc > m || sc.is_nan() {
                            m = sc;
                        }
                    }
                    acc.fill(0.0);
                    let mut total = 0f32;
                    for j in 0..=i {
                        let p = (scores[j] - m).exp();
                        total += p;
                        let vj = &v[base + j * d..base + (j + 1) * d];
                        acc.iter_mut().zip(vj).for_each(|(a, x)| *a += p * x);
                    }
                    let inv = 1.0 / total;
                    acc.iter_mut().for_each(|a| *a *= inv);
                    T::store(acc, o);
                    *l = m + total.ln();
                },
            )
    });
    Ok(())
}

fn backward_typed<T: Float>(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    let (s, d) = (sh.seq, sh.head_dim);
    let q = as_f32(typed::<T>(args.q)?);
    let k = as_f32(typed::<T>(args.k)?);
    let v = as_f32(typed::<T>(args.v)?);
    let out = as_f32(typed::<T>(args.out)?);
    let dout = as_f32(typed::<T>(args.dout)?);
    let lse = typed::<f32>(args.lse)?;
    let dq = typed_mut::<T>(args.dq)?;
    let dk = typed_mut::<T>(args.dk)?;
    let dv = typed_mut::<T>(args.dv)?;
    let per_head = s * d;
    if per_head == 0 {
        return Ok(());
    }
    be.run(|| {
        dq.par_chunks_mut(per_head)
            .zip(dk.par_chunks_mut(per_head).zip(dv.par_chunks_mut(per_head)))
            .enumerate()
            .for_each(|(bh, (dq_h, (dk_h, dv_h)))| {
                let base = bh * per_head;
                let (qh, kh, vh) = (
                    &q[base..base + per_head],
                    &k[base..base + per_head],
                    &v[base..base + per_head],
                );
                let (oh, doh) = (&out[base..base + per_head], &dout[base..base + per_head]);
                let lse_h = &lse[bh * s..(bh + 1) * s];
                let (mut gq, mut gk, mut gv) = (
                    vec![0f32; per_head],
                    vec![0f32; per_head],
                    vec![0f32; per_head],
                );
                for i in 0..s {
                    let qi = &qh[i * d..(i + 1) * d];
                    let doi = &doh[i * d..(i + 1) * d];
                    let delta = dot(doi, &oh[i * d..(i + 1) * d]);
                    for j in 0..=i {
                        let kj = &kh[j * d..(j + 1) * d];
                        let p = math::exp(sh.scale * dot(qi, kj) - lse_h[i]);
                        let dp = dot(doi, &vh[j * d..(j + 1) * d]);
                        let ds = p * (dp - delta) * sh.scale;
                        gv[j * d..(j + 1) * d]
                            .iter_mut()
                            .zip(doi)
                            .for_each(|(g, x)| *g += p * x);
                        gq[i * d..(i + 1) * d]
                            .iter_mut()
                            .zip(kj)
                            .for_each(|(g, x)| *g += ds * x);
                        gk[j * d..(j + 1) * d]
                            .iter_mut()
                            .zip(qi)
                            .for_each(|(g, x)| *g += ds * x);
                    }
                }
                T::store(&gq, dq_h);
                T::store(&gk, dk_h);
                T::store(&gv, dv_h);
            })
    });
    Ok(())
}

pub(super) fn forward(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.q.dtype(), T => forward_typed::<T>(be, sh, args))
}

pub(super) fn backward(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.q.dtype(), T => backward_typed::<T>(be, sh, args))
}
