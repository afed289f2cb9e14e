//! Adagrad on the CPU (DeepSpeedCPUAdagrad's update, see [`AdagradParams`]).

use super::driver::step_with_state;
use crate::cpu::isa::vectorized;
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::AdagradArgs;
use crate::params::AdagradParams;

vectorized! {
    fn adagrad_block(p: &mut [f32], g: &[f32], v: &mut [f32], hp: &AdagradParams) {
        let n = p.len().min(g.len()).min(v.len());
        let (p, g, v) = (&mut p[..n], &g[..n], &mut v[..n]);
        for i in 0..n {
            let pi = p[i];
            let gi = g[i] * hp.grad_scale;
            let decayed = gi + hp.weight_decay * pi;
            let vi = v[i] + decayed * decayed;
            p[i] = pi - hp.lr * (gi / (vi.sqrt() + hp.eps));
            v[i] = vi;
        }
    }
}

pub(super) fn adagrad_step(
    backend: &CpuBackend,
    hp: &AdagradParams,
    args: AdagradArgs<'_, CpuBuffer>,
) -> Result<()> {
    step_with_state(
        backend,
        args.param,
        args.grad,
        args.exp_avg_sq,
        args.param_copy,
        |p, g, v| adagrad_block(p, g, v, hp),
    )
}
