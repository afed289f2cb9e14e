//! SGD (momentum, nesterov, weight decay) on the CPU.

use super::driver::for_each_block;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::SgdArgs;
use crate::params::SgdParams;
use crate::slice::SliceMut;

vectorized! {
    fn plain_block(p: &mut [f32], g: &[f32], lr: f32, wd: f32, gs: f32) {
        for (p, g) in p.iter_mut().zip(g) {
            *p -= lr * (g * gs + wd * *p);
        }
    }
}

vectorized! {
    fn momentum_block(p: &mut [f32], g: &[f32], buf: &mut [f32], hp: &SgdParams) {
        let (lr, wd, mu) = (hp.lr, hp.weight_decay, hp.momentum);
        let keep = 1.0 - hp.dampening;
        let first = hp.step == 1;
        for ((p, g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
            let d = g * hp.grad_scale + wd * *p;
            let nb = if first { d } else { mu * *b + keep * d };
            *b = nb;
            let step = if hp.nesterov { d + mu * nb } else { nb };
            *p -= lr * step;
        }
    }
}

fn run<G: Float, C: Float>(
    backend: &CpuBackend,
    hp: &SgdParams,
    args: SgdArgs<'_, CpuBuffer>,
    copy: Option<SliceMut<'_, CpuBuffer>>,
) -> Result<()> {
    let p = typed_mut::<f32>(args.param)?;
    let g = typed::<G>(args.grad)?;
    let momentum = if hp.momentum > 0.0 {
        args.momentum.map(typed_mut::<f32>).transpose()?
    } else {
        None
    };
    let copy = copy.map(typed_mut::<C>).transpose()?;
    backend.run(|| {
        for_each_block(p, g, momentum, None, copy, |p, g, buf, _| match buf {
            Some(buf) => momentum_block(p, g, buf, hp),
            None => plain_block(p, g, hp.lr, hp.weight_decay, hp.grad_scale),
        })
    });
    Ok(())
}

pub(super) fn sgd_step(
    backend: &CpuBackend,
    hp: &SgdParams,
    mut args: SgdArgs<'_, CpuBuffer>,
) -> Result<()> {
    let copy = args.param_copy.take();
    with_float!(args.grad.dtype(), G => match copy {
        None => run::<G, f32>(backend, hp, args, None),
        Some(c) => with_float!(c.dtype(), C => run::<G, C>(backend, hp, args, Some(c))),
    })
}
