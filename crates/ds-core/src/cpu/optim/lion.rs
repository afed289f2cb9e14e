//! Lion on the CPU (formulas on [`LionParams`]).

use super::driver::step_with_state;
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::LionArgs;
use crate::params::{LionParams, lion_sign};

/// The per-step constants of the update, in the form the loop uses.
#[derive(Clone, Copy)]
struct Consts {
    lr: f32,
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    decay: f32,
    grad_scale: f32,
}

vectorized! {
    fn lion_block(p: &mut [f32], g: &[f32], m: &mut [f32], k: &Consts) {
        let n = p.len().min(g.len()).min(m.len());
        let (p, g, m) = (&mut p[..n], &g[..n], &mut m[..n]);
        for i in 0..n {
            let gi = g[i] * k.grad_scale;
            let mi = m[i];
            let c = k.b1 * mi + k.one_minus_b1 * gi;
            p[i] = p[i] * k.decay - k.lr * lion_sign(c);
            m[i] = k.b2 * mi + k.one_minus_b2 * gi;
        }
    }
}

pub(super) fn lion_step(
    backend: &CpuBackend,
    hp: &LionParams,
    args: LionArgs<'_, CpuBuffer>,
) -> Result<()> {
    let k = Consts {
        lr: hp.lr,
        b1: hp.beta1,
        one_minus_b1: 1.0 - hp.beta1,
        b2: hp.beta2,
        one_minus_b2: 1.0 - hp.beta2,
        decay: hp.decay_factor(),
        grad_scale: hp.grad_scale,
    };
    step_with_state(
        backend,
        args.param,
        args.grad,
        args.exp_avg,
        args.param_copy,
        |p, g, m| lion_block(p, g, m, &k),
    )
}
