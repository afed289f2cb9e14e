//! Adam and AdamW on the CPU.

use super::driver::for_each_block;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::AdamArgs;
use crate::params::{AdamParams, AdamScalars};
use crate::slice::SliceMut;

/// The per-step constants of the update, in the form the loop uses.
#[derive(Clone, Copy)]
struct Consts {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    eps: f32,
    grad_scale: f32,
    s: AdamScalars,
}

vectorized! {
    fn adam_block(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], k: &Consts) {
        let n = p.len().min(g.len()).min(m.len()).min(v.len());
        let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
        for i in 0..n {
            let pi = p[i];
            let gi = g[i] * k.grad_scale + k.s.l2 * pi;
            let mi = k.b1 * m[i] + k.one_minus_b1 * gi;
            let vi = k.b2 * v[i] + k.one_minus_b2 * (gi * gi);
            let denom = vi.sqrt() * k.s.inv_sqrt_bc2 + k.eps;
            p[i] = pi * k.s.decay_factor - k.s.step_size * (mi / denom);
            m[i] = mi;
            v[i] = vi;
        }
    }
}

fn run<G: Float, C: Float>(
    backend: &CpuBackend,
    hp: &AdamParams,
    args: AdamArgs<'_, CpuBuffer>,
    copy: Option<SliceMut<'_, CpuBuffer>>,
) -> Result<()> {
    let k = Consts {
        b1: hp.beta1,
        one_minus_b1: 1.0 - hp.beta1,
        b2: hp.beta2,
        one_minus_b2: 1.0 - hp.beta2,
        eps: hp.eps,
        grad_scale: hp.grad_scale,
        s: hp.scalars(),
    };
    let p = typed_mut::<f32>(args.param)?;
    let g = typed::<G>(args.grad)?;
    let m = typed_mut::<f32>(args.exp_avg)?;
    let v = typed_mut::<f32>(args.exp_avg_sq)?;
    let copy = copy.map(typed_mut::<C>).transpose()?;
    backend.run(|| {
        for_each_block(p, g, Some(m), Some(v), copy, |p, g, m, v| {
            if let (Some(m), Some(v)) = (m, v) {
                adam_block(p, g, m, v, &k);
            }
        })
    });
    Ok(())
}

pub(super) fn adam_step(
    backend: &CpuBackend,
    hp: &AdamParams,
    mut args: AdamArgs<'_, CpuBuffer>,
) -> Result<()> {
    let copy = args.param_copy.take();
    with_float!(args.grad.dtype(), G => match copy {
        None => run::<G, f32>(backend, hp, args, None),
        Some(c) => with_float!(c.dtype(), C => run::<G, C>(backend, hp, args, Some(c))),
    })
}
