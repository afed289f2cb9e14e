//! Cases for the neural-network kernels.

use super::{CaseResult, Config, expect, expect_all, pads, placed, prop, upload, upload_i32};
use crate::data::{Rng, Values, dims, sizes, values};
use crate::oracle::{self, Expected, round_to};
use crate::tolerance::{Tolerance, compare};
use ds_core::kernels::{
    AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs,
};
use ds_core::params::{AttentionShape, Shape2};
use ds_core::{Backend, BufferExt, DType, Device};
use proptest::prelude::*;

fn rows_cols() -> impl Strategy<Value = (usize, usize)> {
    (
        prop_oneof![dims(), Just(0usize), Just(100usize)],
        prop_oneof![dims(), Just(768usize)],
    )
}

pub(super) fn bias_add<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(cfg, (rows_cols(), any::<u64>(), pads()), |(
        (rows, cols),
        seed,
        pad,
    )| {
        let mut rng = Rng::new(seed);
        let x = values(&mut rng, rows * cols, Values::Normal, dtype);
        let b = values(&mut rng, cols, Values::Normal, dtype);
        let (mut xb, xr) = placed(dev, dtype, &x, pad)?;
        let (bb, br) = placed(dev, dtype, &b, pad)?;
        dev.bias_add(
            Shape2::new(rows, cols),
            xb.range_mut(xr.clone()),
            bb.range(br),
        )?;
        expect(
            dev,
            &xb,
            xr,
            &oracle::bias_add(&x, &b, cols, dtype),
            Tolerance::new(dtype, 2.0),
            "x",
        )
    },)
}

pub(super) fn bias_grad<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(
        cfg,
        (rows_cols(), any::<u64>(), pads(), prop::bool::ANY),
        |((rows, cols), seed, pad, acc)| {
            let mut rng = Rng::new(seed);
            let dy = values(&mut rng, rows * cols, Values::Normal, dtype);
            let old = values(&mut rng, cols, Values::Normal, dtype);
            let (dyb, dyr) = placed(dev, dtype, &dy, pad)?;
            let (mut db, dr) = placed(dev, dtype, &old, pad)?;
            dev.bias_grad(
                Shape2::new(rows, cols),
                dyb.range(dyr),
                db.range_mut(dr.clone()),
                acc,
            )?;
            let want = oracle::bias_grad(&dy, cols, acc.then_some(old.as_slice()), dtype);
            expect(dev, &db, dr, &want, Tolerance::reduction(dtype, rows), "db")
        },
    )
}

/// The four activation kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Act {
    Gelu,
    GeluBackward,
    Relu,
    ReluBackward,
}

pub(super) fn activation<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
    act: Act,
) -> CaseResult {
    let kind = prop::sample::select(vec![Values::Normal, Values::Special, Values::Tiny]);
    prop!(cfg, (sizes(), any::<u64>(), pads(), kind), |(
        n,
        seed,
        pad,
        kind,
    )| {
        let mut rng = Rng::new(seed);
        let x: Vec<f64> = values(&mut rng, n, kind, dtype)
            .iter()
            .map(|v| round_to(dtype, v * 3.0))
            .collect();
        let dy = values(&mut rng, n, Values::Normal, dtype);
        let (xb, xr) = placed(dev, dtype, &x, pad)?;
        let (dyb, dyr) = placed(dev, dtype, &dy, pad)?;
        let (mut yb, yr) = placed(dev, dtype, &vec![0.0; n], pad)?;
        let (xv, dyv, yv) = (xb.range(xr), dyb.range(dyr), yb.range_mut(yr.clone()));
        let (want, tol) = match act {
            Act::Gelu => {
                dev.gelu(xv, yv)?;
                (oracle::gelu(&x, dtype), Tolerance::new(dtype, 16.0))
            }
            Act::GeluBackward => {
                dev.gelu_backward(xv, dyv, yv)?;
                (
                    oracle::gelu_backward(&x, &dy, dtype),
                    Tolerance::new(dtype, 24.0),
                )
            }
            Act::Relu => {
                dev.relu(xv, yv)?;
                (
                    Expected {
                        value: oracle::relu(&x, dtype),
                        mag: vec![],
                    },
                    Tolerance::EXACT,
                )
            }
            Act::ReluBackward => {
                dev.relu_backward(xv, dyv, yv)?;
                (
                    Expected {
                        value: oracle::relu_backward(&x, &dy, dtype),
                        mag: vec![],
                    },
                    Tolerance::EXACT,
                )
            }
        };
        expect(dev, &yb, yr, &want, tol, "out")
    },)
}

fn ln_shape() -> impl Strategy<Value = (usize, usize)> {
    (
        prop_oneof![dims(), Just(0usize)],
        prop_oneof![dims(), Just(100usize), Just(768usize)],
    )
}

/// LayerNorm inputs: x with a non-zero mean, gamma and beta.
fn ln_inputs(seed: u64, rows: usize, cols: usize, dtype: DType) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let x = values(&mut rng, rows * cols, Values::Normal, dtype)
        .iter()
        .map(|v| round_to(dtype, v * 2.0 + 0.5))
        .collect();
    (
        x,
        values(&mut rng, cols, Values::Normal, dtype),
        values(&mut rng, cols, Values::Normal, dtype),
    )
}

pub(super) fn layer_norm<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let eps = prop::sample::select(vec![1e-5f32, 1e-3]);
    prop!(cfg, (ln_shape(), any::<u64>(), pads(), eps), |(
        (rows, cols),
        seed,
        pad,
        eps,
    )| {
        let (x, gamma, beta) = ln_inputs(seed, rows, cols, dtype);
        let (xb, xr) = placed(dev, dtype, &x, pad)?;
        let (gb, gr) = placed(dev, dtype, &gamma, pad)?;
        let (bb, br) = placed(dev, dtype, &beta, pad)?;
        let (mut yb, yr) = placed(dev, dtype, &vec![0.0; x.len()], pad)?;
        let (mut mb, mr) = placed(dev, DType::F32, &vec![0.0; rows], pad)?;
        let (mut rb, rr) = placed(dev, DType::F32, &vec![0.0; rows], pad)?;
        dev.layer_norm(
            Shape2::new(rows, cols),
            eps,
            LayerNormArgs {
                x: xb.range(xr),
                gamma: gb.range(gr),
                beta: bb.range(br),
                y: yb.range_mut(yr.clone()),
                mean: mb.range_mut(mr.clone()),
                rstd: rb.range_mut(rr.clone()),
            },
        )?;
        let want = oracle::layer_norm(&x, &gamma, &beta, cols, f64::from(eps), dtype);
        let ops = 8.0 + 2.0 * (cols as f64).sqrt();
        let mut checked = expect(dev, &yb, yr, &want.y, Tolerance::new(dtype, ops), "y")?;
        checked += expect(
            dev,
            &mb,
            mr,
            &want.mean,
            Tolerance::new(DType::F32, ops),
            "mean",
        )?;
        checked += expect(
            dev,
            &rb,
            rr,
            &want.rstd,
            Tolerance::new(DType::F32, ops),
            "rstd",
        )?;
        Ok(checked)
    },)
}

pub(super) fn layer_norm_backward<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
) -> CaseResult {
    prop!(cfg, (ln_shape(), any::<u64>(), prop::bool::ANY), |(
        (rows, cols),
        seed,
        acc,
    )| {
        let (x, gamma, _) = ln_inputs(seed, rows, cols, dtype);
        let mut rng = Rng::new(seed ^ 1);
        let dy = values(&mut rng, rows * cols, Values::Normal, dtype);
        let old_g = values(&mut rng, cols, Values::Normal, dtype);
        let old_b = values(&mut rng, cols, Values::Normal, dtype);
        let fwd = oracle::layer_norm(&x, &gamma, &vec![0.0; cols], cols, 1e-5, dtype);
        let (xb, gb, dyb) = (
            upload(dev, dtype, &x)?,
            upload(dev, dtype, &gamma)?,
            upload(dev, dtype, &dy)?,
        );
        let (mb, rb) = (
            upload(dev, DType::F32, &fwd.mean.value)?,
            upload(dev, DType::F32, &fwd.rstd.value)?,
        );
        let mut dxb = upload(dev, dtype, &vec![0.0; x.len()])?;
        let mut dgb = upload(dev, dtype, &old_g)?;
        let mut dbb = upload(dev, dtype, &old_b)?;
        dev.layer_norm_backward(
            Shape2::new(rows, cols),
            acc,
            LayerNormBackwardArgs {
                x: xb.all(),
                gamma: gb.all(),
                mean: mb.all(),
                rstd: rb.all(),
                dy: dyb.all(),
                dx: dxb.all_mut(),
                dgamma: dgb.all_mut(),
                dbeta: dbb.all_mut(),
            },
        )?;
        let old = acc.then_some((old_g.as_slice(), old_b.as_slice()));
        let want = oracle::layer_norm_backward(
            &x,
            &gamma,
            &fwd.mean.value,
            &fwd.rstd.value,
            &dy,
            cols,
            old,
            dtype,
        );
        let ops_row = 8.0 + 2.0 * (cols as f64).sqrt();
        let mut checked = expect_all(dev, &dxb, &want.dx, Tolerance::new(dtype, ops_row), "dx")?;
        checked += expect_all(
            dev,
            &dgb,
            &want.dgamma,
            Tolerance::reduction(dtype, rows),
            "dgamma",
        )?;
        checked += expect_all(
            dev,
            &dbb,
            &want.dbeta,
            Tolerance::reduction(dtype, rows),
            "dbeta",
        )?;
        Ok(checked)
    },)
}

const IGNORE: i32 = -100;

/// Logits and labels: mostly valid classes, some ignored rows, occasionally an invalid label.
fn xent_inputs(seed: u64, rows: usize, classes: usize, dtype: DType) -> (Vec<f64>, Vec<i32>) {
    let mut rng = Rng::new(seed);
    let logits = values(&mut rng, rows * classes, Values::Normal, dtype)
        .iter()
        .map(|v| round_to(dtype, v * 3.0))
        .collect();
    let labels = (0..rows)
        .map(|_| match rng.below(20) {
            0 => IGNORE,
            1 => classes as i32 + 3,
            2 => -5,
            _ => rng.below(classes) as i32,
        })
        .collect();
    (logits, labels)
}

fn xent_shape() -> impl Strategy<Value = (usize, usize)> {
    (
        prop_oneof![dims(), Just(0usize), Just(64usize)],
        prop::sample::select(vec![1usize, 2, 5, 17, 100, 1000]),
    )
}

pub(super) fn xent<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(cfg, (xent_shape(), any::<u64>(), pads()), |(
        (rows, classes),
        seed,
        pad,
    )| {
        let (logits, labels) = xent_inputs(seed, rows, classes, dtype);
        let (lb, lr) = placed(dev, dtype, &logits, pad)?;
        let yb = upload_i32(dev, &labels)?;
        let (mut ob, or) = placed(dev, DType::F32, &vec![0.0; rows], pad)?;
        dev.softmax_cross_entropy(
            Shape2::new(rows, classes),
            IGNORE,
            lb.range(lr),
            yb.all(),
            ob.range_mut(or.clone()),
        )?;
        let want = oracle::xent(&logits, &labels, classes, IGNORE);
        expect(
            dev,
            &ob,
            or,
            &want,
            Tolerance::new(DType::F32, 8.0 + 2.0 * (classes as f64).sqrt()),
            "losses",
        )
    },)
}

pub(super) fn xent_backward<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let scale = prop::sample::select(vec![1.0f32, 0.1, 1.0 / 64.0]);
    prop!(cfg, (xent_shape(), any::<u64>(), pads(), scale), |(
        (rows, classes),
        seed,
        pad,
        scale,
    )| {
        let (logits, labels) = xent_inputs(seed, rows, classes, dtype);
        let (lb, lr) = placed(dev, dtype, &logits, pad)?;
        let yb = upload_i32(dev, &labels)?;
        let (mut db, dr) = placed(dev, dtype, &vec![0.0; logits.len()], pad)?;
        dev.softmax_cross_entropy_backward(
            Shape2::new(rows, classes),
            IGNORE,
            scale,
            lb.range(lr),
            yb.all(),
            db.range_mut(dr.clone()),
        )?;
        let want =
            oracle::xent_backward(&logits, &labels, classes, IGNORE, f64::from(scale), dtype);
        expect(dev, &db, dr, &want, Tolerance::new(dtype, 16.0), "dlogits")
    },)
}

/// Ids into a `vocab` table: repeats on purpose, occasionally one out of range.
fn ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<i32> {
    (0..n)
        .map(|_| match rng.below(25) {
            0 => vocab as i32,
            1 => -1,
            // Half the ids come from the first three rows, so rows repeat.
            k if k % 2 == 0 => rng.below(vocab.min(3)) as i32,
            _ => rng.below(vocab) as i32,
        })
        .collect()
}

pub(super) fn embedding<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(
        cfg,
        ((dims(), dims(), dims()), any::<u64>(), pads()),
        |((vocab, dim, n), seed, pad)| {
            let mut rng = Rng::new(seed);
            let table = values(&mut rng, vocab * dim, Values::Special, dtype);
            let idv = ids(&mut rng, n * 3, vocab);
            let tb = upload(dev, dtype, &table)?;
            let ib = upload_i32(dev, &idv)?;
            let (mut ob, or) = placed(dev, dtype, &vec![0.0; idv.len() * dim], pad)?;
            dev.embedding(
                Shape2::new(vocab, dim),
                ib.all(),
                tb.all(),
                ob.range_mut(or.clone()),
            )?;
            let got = super::unpad(dev, &ob, or, "out")?;
            Ok(compare(
                "out",
                &got,
                &oracle::embedding(&idv, &table, vocab, dim),
                &[],
                Tolerance::EXACT,
            )?)
        },
    )
}

pub(super) fn embedding_backward<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
) -> CaseResult {
    prop!(
        cfg,
        ((dims(), dims(), dims()), any::<u64>(), prop::bool::ANY),
        |((vocab, dim, n), seed, acc)| {
            let mut rng = Rng::new(seed);
            let idv = ids(&mut rng, n * 3, vocab);
            let dout = values(&mut rng, idv.len() * dim, Values::Normal, dtype);
            let old = values(&mut rng, vocab * dim, Values::Normal, dtype);
            let ib = upload_i32(dev, &idv)?;
            let db = upload(dev, dtype, &dout)?;
            let mut tb = upload(dev, dtype, &old)?;
            dev.embedding_backward(
                Shape2::new(vocab, dim),
                acc,
                ib.all(),
                db.all(),
                tb.all_mut(),
            )?;
            let want = oracle::embedding_backward(
                &idv,
                &dout,
                vocab,
                dim,
                acc.then_some(old.as_slice()),
                dtype,
            );
            expect_all(
                dev,
                &tb,
                &want,
                Tolerance::reduction(dtype, idv.len()),
                "dtable",
            )
        },
    )
}

fn attention_shape() -> impl Strategy<Value = AttentionShape> {
    (
        prop::sample::select(vec![1usize, 2]),
        prop::sample::select(vec![1usize, 3]),
        prop_oneof![dims(), Just(0usize), Just(100usize)],
        prop::sample::select(vec![1usize, 4, 8, 16, 33, 64]),
    )
        .prop_map(|(b, h, s, d)| AttentionShape::new(b, h, s, d))
}

pub(super) fn attention<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(cfg, (attention_shape(), any::<u64>()), |(sh, seed)| {
        let mut rng = Rng::new(seed);
        let n = sh.qkv_len();
        let (q, k, v) = (
            values(&mut rng, n, Values::Normal, dtype),
            values(&mut rng, n, Values::Normal, dtype),
            values(&mut rng, n, Values::Normal, dtype),
        );
        let (qb, kb, vb) = (
            upload(dev, dtype, &q)?,
            upload(dev, dtype, &k)?,
            upload(dev, dtype, &v)?,
        );
        let mut ob = upload(dev, dtype, &vec![0.0; n])?;
        let mut lb = upload(dev, DType::F32, &vec![0.0; sh.lse_len()])?;
        dev.attention(
            &sh,
            AttentionArgs {
                q: qb.all(),
                k: kb.all(),
                v: vb.all(),
                out: ob.all_mut(),
                lse: lb.all_mut(),
            },
        )?;
        let (out, lse) = oracle::attention(&sh, &q, &k, &v, dtype);
        let ops = 8.0 + 2.0 * ((sh.seq * sh.head_dim) as f64).sqrt();
        let mut checked = expect_all(dev, &ob, &out, Tolerance::new(dtype, ops), "out")?;
        if sh.seq > 0 {
            checked += expect_all(dev, &lb, &lse, Tolerance::new(DType::F32, ops), "lse")?;
        }
        Ok(checked)
    })
}

pub(super) fn attention_backward<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
) -> CaseResult {
    prop!(cfg, (attention_shape(), any::<u64>()), |(sh, seed)| {
        let mut rng = Rng::new(seed);
        let n = sh.qkv_len();
        let (q, k, v) = (
            values(&mut rng, n, Values::Normal, dtype),
            values(&mut rng, n, Values::Normal, dtype),
            values(&mut rng, n, Values::Normal, dtype),
        );
        let dout = values(&mut rng, n, Values::Normal, dtype);
        let (out, lse) = oracle::attention(&sh, &q, &k, &v, dtype);
        let lse_values = if sh.seq == 0 { vec![] } else { lse.value };
        let (qb, kb, vb) = (
            upload(dev, dtype, &q)?,
            upload(dev, dtype, &k)?,
            upload(dev, dtype, &v)?,
        );
        let (obf, lb, db) = (
            upload(dev, dtype, &out.value)?,
            upload(dev, DType::F32, &lse_values)?,
            upload(dev, dtype, &dout)?,
        );
        let (mut dqb, mut dkb, mut dvb) = (
            upload(dev, dtype, &vec![0.0; n])?,
            upload(dev, dtype, &vec![0.0; n])?,
            upload(dev, dtype, &vec![0.0; n])?,
        );
        dev.attention_backward(
            &sh,
            AttentionBackwardArgs {
                q: qb.all(),
                k: kb.all(),
                v: vb.all(),
                out: obf.all(),
                lse: lb.all(),
                dout: db.all(),
                dq: dqb.all_mut(),
                dk: dkb.all_mut(),
                dv: dvb.all_mut(),
            },
        )?;
        let want =
            oracle::attention_backward(&sh, &q, &k, &v, &out.value, &lse_values, &dout, dtype);
        let tol = Tolerance::new(dtype, 8.0 + 2.0 * ((sh.seq * sh.head_dim) as f64).sqrt());
        Ok(expect_all(dev, &dqb, &want.dq, tol, "dq")?
            + expect_all(dev, &dkb, &want.dk, tol, "dk")?
            + expect_all(dev, &dvb, &want.dv, tol, "dv")?)
    })
}
