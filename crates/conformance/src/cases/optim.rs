//! Cases for the fused Adam/AdamW, SGD and Lamb steps, with and without a weight copy.

use super::{CaseResult, Config, expect, pads, placed, prop};
use crate::data::{Rng, Values, sizes, values};
use crate::oracle::{self, Expected, round_to};
use crate::tolerance::Tolerance;
use ds_core::kernels::{AdamArgs, SgdArgs};
use ds_core::params::{AdamMode, AdamParams, LambParams, SgdParams};
use ds_core::{Backend, BufferExt, DType, Device};
use proptest::prelude::*;

/// The copy-outs to try for a gradient dtype: none, the same 16-bit type, and f32.
pub(super) fn copies(dtype: DType) -> Vec<Option<DType>> {
    let mut c = vec![None, Some(DType::F32)];
    if dtype.is_half() {
        c.push(Some(dtype));
    }
    c
}

/// State for one step: weights, gradient (in `dtype`), moments.
pub(super) struct State {
    pub(super) p: Vec<f64>,
    pub(super) g: Vec<f64>,
    pub(super) m: Vec<f64>,
    pub(super) v: Vec<f64>,
}

pub(super) fn state(seed: u64, n: usize, dtype: DType) -> State {
    let mut rng = Rng::new(seed);
    let p = values(&mut rng, n, Values::Tiny, DType::F32);
    let g = values(&mut rng, n, Values::Tiny, dtype);
    let m: Vec<f64> = values(&mut rng, n, Values::Normal, DType::F32)
        .iter()
        .map(|x| round_to(DType::F32, x * 0.1))
        .collect();
    let v: Vec<f64> = values(&mut rng, n, Values::Normal, DType::F32)
        .iter()
        .map(|x| round_to(DType::F32, x * x * 0.01))
        .collect();
    State { p, g, m, v }
}

/// Checks the weights and their copy.
pub(super) fn expect_weights<B: Backend>(
    dev: &Device<B>,
    pb: (&B::Buffer, std::ops::Range<usize>),
    copy: Option<(&B::Buffer, std::ops::Range<usize>)>,
    want: &Expected,
    ops: f64,
) -> CaseResult {
    let mut checked = expect(
        dev,
        pb.0,
        pb.1,
        want,
        Tolerance::new(DType::F32, ops),
        "param",
    )?;
    if let Some((cb, cr)) = copy {
        let dt = ds_core::DeviceBuffer::dtype(cb);
        let rounded = Expected {
            value: want.value.iter().map(|&x| round_to(dt, x)).collect(),
            mag: want.mag.clone(),
        };
        checked += expect(dev, cb, cr, &rounded, Tolerance::new(dt, ops), "param_copy")?;
    }
    Ok(checked)
}

/// Gradient multipliers: none, exact, inexact, and an fp16 loss-scale unscaling.
pub(super) fn grad_scales() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![1.0f32, 0.5, 1.0 / 3.0, 1.0 / 65536.0])
}

fn adam_params() -> impl Strategy<Value = AdamParams> {
    (
        prop::sample::select(vec![1e-3f32, 0.1]),
        prop::sample::select(vec![(0.9f32, 0.999f32), (0.5, 0.9), (0.0, 0.99)]),
        prop::sample::select(vec![1e-8f32, 1e-6]),
        prop::sample::select(vec![0.0f32, 0.01, 0.1]),
        prop::bool::ANY,
        prop::bool::ANY,
        prop::sample::select(vec![1u64, 2, 10, 1000]),
        grad_scales(),
    )
        .prop_map(
            |(lr, (beta1, beta2), eps, weight_decay, adamw, bias_correction, step, grad_scale)| {
                AdamParams {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    mode: if adamw { AdamMode::AdamW } else { AdamMode::L2 },
                    bias_correction,
                    step,
                    grad_scale,
                }
            },
        )
}

pub(super) fn adam<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let copy = prop::sample::select(copies(dtype));
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), adam_params(), copy),
        |(n, seed, pad, hp, copy)| {
            let s = state(seed, n, dtype);
            let (mut pb, pr) = placed(dev, DType::F32, &s.p, pad)?;
            let (gb, gr) = placed(dev, dtype, &s.g, pad)?;
            let (mut mb, mr) = placed(dev, DType::F32, &s.m, pad)?;
            let (mut vb, vr) = placed(dev, DType::F32, &s.v, pad)?;
            let mut cb = copy
                .map(|dt| placed(dev, dt, &vec![0.0; n], pad))
                .transpose()?;
            dev.adam_step(
                &hp,
                AdamArgs {
                    param: pb.range_mut(pr.clone()),
                    grad: gb.range(gr),
                    exp_avg: mb.range_mut(mr.clone()),
                    exp_avg_sq: vb.range_mut(vr.clone()),
                    param_copy: cb.as_mut().map(|(b, r)| b.range_mut(r.clone())),
                },
            )?;
            let want = oracle::adam(&hp, &s.p, &s.g, &s.m, &s.v);
            let mut checked = expect_weights(
                dev,
                (&pb, pr),
                cb.as_ref().map(|(b, r)| (b, r.clone())),
                &want.p,
                24.0,
            )?;
            checked += expect(
                dev,
                &mb,
                mr,
                &want.m,
                Tolerance::new(DType::F32, 4.0),
                "exp_avg",
            )?;
            checked += expect(
                dev,
                &vb,
                vr,
                &want.v,
                Tolerance::new(DType::F32, 6.0),
                "exp_avg_sq",
            )?;
            Ok(checked)
        },
    )
}

fn sgd_params() -> impl Strategy<Value = SgdParams> {
    (
        prop::sample::select(vec![1e-2f32, 0.5]),
        prop::sample::select(vec![0.0f32, 0.9]),
        prop::sample::select(vec![0.0f32, 0.1]),
        prop::sample::select(vec![0.0f32, 1e-4, 0.1]),
        prop::bool::ANY,
        prop::sample::select(vec![1u64, 2, 7]),
        grad_scales(),
    )
        .prop_map(
            |(lr, momentum, dampening, weight_decay, nesterov, step, grad_scale)| SgdParams {
                lr,
                momentum,
                dampening,
                weight_decay,
                nesterov: nesterov && momentum > 0.0 && dampening == 0.0,
                step,
                grad_scale,
            },
        )
}

pub(super) fn sgd<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let copy = prop::sample::select(copies(dtype));
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), sgd_params(), copy),
        |(n, seed, pad, hp, copy)| {
            let s = state(seed, n, dtype);
            let (mut pb, pr) = placed(dev, DType::F32, &s.p, pad)?;
            let (gb, gr) = placed(dev, dtype, &s.g, pad)?;
            let (mut mb, mr) = placed(dev, DType::F32, &s.m, pad)?;
            let mut cb = copy
                .map(|dt| placed(dev, dt, &vec![0.0; n], pad))
                .transpose()?;
            dev.sgd_step(
                &hp,
                SgdArgs {
                    param: pb.range_mut(pr.clone()),
                    grad: gb.range(gr),
                    momentum: (hp.momentum > 0.0).then(|| mb.range_mut(mr.clone())),
                    param_copy: cb.as_mut().map(|(b, r)| b.range_mut(r.clone())),
                },
            )?;
            let want = oracle::sgd(&hp, &s.p, &s.g, &s.m);
            let mut checked = expect_weights(
                dev,
                (&pb, pr),
                cb.as_ref().map(|(b, r)| (b, r.clone())),
                &want.p,
                8.0,
            )?;
            if hp.momentum > 0.0 {
                checked += expect(
                    dev,
                    &mb,
                    mr,
                    &want.m,
                    Tolerance::new(DType::F32, 4.0),
                    "momentum",
                )?;
            }
            Ok(checked)
        },
    )
}

fn lamb_params() -> impl Strategy<Value = LambParams> {
    (
        prop::sample::select(vec![1e-3f32, 0.05]),
        prop::sample::select(vec![(0.9f32, 0.999f32), (0.5, 0.9)]),
        prop::sample::select(vec![0.0f32, 0.01]),
        prop::bool::ANY,
        prop::sample::select(vec![(0.01f32, 10.0f32), (0.5, 2.0), (0.0, 0.3)]),
        prop::sample::select(vec![1u64, 3, 100]),
        grad_scales(),
    )
        .prop_map(
            |(
                lr,
                (beta1, beta2),
                weight_decay,
                bias_correction,
                (min_coeff, max_coeff),
                step,
                grad_scale,
            )| {
                LambParams {
                    lr,
                    beta1,
                    beta2,
                    eps: 1e-6,
                    weight_decay,
                    bias_correction,
                    min_coeff,
                    max_coeff,
                    step,
                    grad_scale,
                }
            },
        )
}

pub(super) fn lamb<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let copy = prop::sample::select(copies(dtype));
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), lamb_params(), copy),
        |(n, seed, pad, hp, copy)| {
            let s = state(seed, n, dtype);
            let (mut pb, pr) = placed(dev, DType::F32, &s.p, pad)?;
            let (gb, gr) = placed(dev, dtype, &s.g, pad)?;
            let (mut mb, mr) = placed(dev, DType::F32, &s.m, pad)?;
            let (mut vb, vr) = placed(dev, DType::F32, &s.v, pad)?;
            let mut cb = copy
                .map(|dt| placed(dev, dt, &vec![0.0; n], pad))
                .transpose()?;
            dev.lamb_step(
                &hp,
                AdamArgs {
                    param: pb.range_mut(pr.clone()),
                    grad: gb.range(gr),
                    exp_avg: mb.range_mut(mr.clone()),
                    exp_avg_sq: vb.range_mut(vr.clone()),
                    param_copy: cb.as_mut().map(|(b, r)| b.range_mut(r.clone())),
                },
            )?;
            let want = oracle::lamb(&hp, &s.p, &s.g, &s.m, &s.v);
            let ops = 24.0 + 2.0 * (n as f64).sqrt();
            let mut checked = expect_weights(
                dev,
                (&pb, pr),
                cb.as_ref().map(|(b, r)| (b, r.clone())),
                &want.p,
                ops,
            )?;
            checked += expect(
                dev,
                &mb,
                mr,
                &want.m,
                Tolerance::new(DType::F32, 4.0),
                "exp_avg",
            )?;
            checked += expect(
                dev,
                &vb,
                vr,
                &want.v,
                Tolerance::new(DType::F32, 6.0),
                "exp_avg_sq",
            )?;
            Ok(checked)
        },
    )
}
