//! Cases for the optimizers that keep one state beside the weights: Adagrad (its sum of
//! squares) and Lion (its momentum), with and without a weight copy.

use super::optim::{State, copies, expect_weights, grad_scales, state};
use super::{CaseResult, Config, expect, pads, placed, prop};
use crate::data::sizes;
use crate::oracle;
use crate::tolerance::Tolerance;
use ds_core::kernels::{AdagradArgs, LionArgs};
use ds_core::params::{AdagradParams, LionParams};
use ds_core::{Backend, BufferExt, DType, Device};
use proptest::prelude::*;

fn adagrad_params() -> impl Strategy<Value = AdagradParams> {
    (
        prop::sample::select(vec![1e-2f32, 0.5]),
        prop::sample::select(vec![1e-10f32, 1e-6]),
        prop::sample::select(vec![0.0f32, 0.01, 0.1]),
        grad_scales(),
    )
        .prop_map(|(lr, eps, weight_decay, grad_scale)| AdagradParams {
            lr,
            eps,
            weight_decay,
            grad_scale,
        })
}

pub(super) fn adagrad<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let copy = prop::sample::select(copies(dtype));
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), adagrad_params(), copy),
        |(n, seed, pad, hp, copy)| {
            let s = state(seed, n, dtype);
            let (mut pb, pr) = placed(dev, DType::F32, &s.p, pad)?;
            let (gb, gr) = placed(dev, dtype, &s.g, pad)?;
            let (mut vb, vr) = placed(dev, DType::F32, &s.v, pad)?;
            let mut cb = copy
                .map(|dt| placed(dev, dt, &vec![0.0; n], pad))
                .transpose()?;
            dev.adagrad_step(
                &hp,
                AdagradArgs {
                    param: pb.range_mut(pr.clone()),
                    grad: gb.range(gr),
                    exp_avg_sq: vb.range_mut(vr.clone()),
                    param_copy: cb.as_mut().map(|(b, r)| b.range_mut(r.clone())),
                },
            )?;
            let want = oracle::adagrad(&hp, &s.p, &s.g, &s.v);
            let mut checked = expect_weights(
                dev,
                (&pb, pr),
                cb.as_ref().map(|(b, r)| (b, r.clone())),
                &want.p,
                16.0,
            )?;
            checked += expect(
                dev,
                &vb,
                vr,
                &want.v,
                Tolerance::new(DType::F32, 4.0),
                "exp_avg_sq",
            )?;
            Ok(checked)
        },
    )
}

fn lion_params() -> impl Strategy<Value = LionParams> {
    (
        prop::sample::select(vec![1e-4f32, 1e-3, 0.1]),
        prop::sample::select(vec![(0.9f32, 0.999f32), (0.95, 0.98), (0.0, 0.5)]),
        prop::sample::select(vec![0.0f32, 0.01, 1.0]),
        grad_scales(),
    )
        .prop_map(
            |(lr, (beta1, beta2), weight_decay, grad_scale)| LionParams {
                lr,
                beta1,
                beta2,
                weight_decay,
                grad_scale,
            },
        )
}

/// Every seventh element with zero momentum and gradient, so `sign(0) = 0` is exercised on
/// every size.
fn with_idle_weights(mut s: State) -> State {
    for i in (0..s.p.len()).step_by(7) {
        s.m[i] = 0.0;
        s.g[i] = 0.0;
    }
    s
}

pub(super) fn lion<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let copy = prop::sample::select(copies(dtype));
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), lion_params(), copy),
        |(n, seed, pad, hp, copy)| {
            let s = with_idle_weights(state(seed, n, dtype));
            let (mut pb, pr) = placed(dev, DType::F32, &s.p, pad)?;
            let (gb, gr) = placed(dev, dtype, &s.g, pad)?;
            let (mut mb, mr) = placed(dev, DType::F32, &s.m, pad)?;
            let mut cb = copy
                .map(|dt| placed(dev, dt, &vec![0.0; n], pad))
                .transpose()?;
            dev.lion_step(
                &hp,
                LionArgs {
                    param: pb.range_mut(pr.clone()),
                    grad: gb.range(gr),
                    exp_avg: mb.range_mut(mr.clone()),
                    param_copy: cb.as_mut().map(|(b, r)| b.range_mut(r.clone())),
                },
            )?;
            let want = oracle::lion(&hp, &s.p, &s.g, &s.m);
            let mut checked = expect_weights(
                dev,
                (&pb, pr),
                cb.as_ref().map(|(b, r)| (b, r.clone())),
                &want.p,
                4.0,
            )?;
            checked += expect(
                dev,
                &mb,
                mr,
                &want.m,
                Tolerance::new(DType::F32, 4.0),
                "exp_avg",
            )?;
            Ok(checked)
        },
    )
}
