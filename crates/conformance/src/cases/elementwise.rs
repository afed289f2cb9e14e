//! Cases for copy, fill, cast, scale, axpy, add and mul.

use super::{CaseError, CaseResult, Config, expect, pads, placed, prop, unpad};
use crate::data::{Rng, Values, sizes, values};
use crate::oracle::{self, Expected};
use crate::tolerance::{Tolerance, compare};
use ds_core::info::Support;
use ds_core::{Backend, BufferExt, DType, Device, KernelFamily};
use proptest::prelude::*;

fn kinds(all: &[Values]) -> impl Strategy<Value = Values> + use<> {
    prop::sample::select(all.to_vec())
}

pub(super) fn copy<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(cfg, (sizes(), any::<u64>(), pads(), pads()), |(
        n,
        seed,
        pad_x,
        pad_y,
    )| {
        let mut rng = Rng::new(seed);
        let x = values(&mut rng, n, Values::Extreme, dtype);
        let y0 = values(&mut rng, n, Values::Normal, dtype);
        let (xb, xr) = placed(dev, dtype, &x, pad_x)?;
        let (mut yb, yr) = placed(dev, dtype, &y0, pad_y)?;
        dev.copy(xb.range(xr), yb.range_mut(yr.clone()))?;
        let got = unpad(dev, &yb, yr, "dst")?;
        Ok(compare("dst", &got, &x, &[], Tolerance::EXACT)?)
    },)
}

pub(super) fn fill<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let value = prop::sample::select(vec![
        0.0,
        -0.0,
        1.5,
        -3.25,
        1e-40,
        3e-6,
        65519.0,
        65520.0,
        1e6,
        1e39,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    prop!(cfg, (sizes(), value, pads()), |(n, value, pad)| {
        let (mut yb, yr) = placed(dev, dtype, &vec![0.0; n], pad)?;
        dev.fill(yb.range_mut(yr.clone()), value)?;
        let got = unpad(dev, &yb, yr, "dst")?;
        Ok(compare(
            "dst",
            &got,
            &oracle::fill(n, value, dtype),
            &[],
            Tolerance::EXACT,
        )?)
    })
}

pub(super) fn cast<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    prop!(cfg, (sizes(), any::<u64>(), pads()), |(n, seed, pad)| {
        let mut rng = Rng::new(seed);
        let x = values(&mut rng, n, Values::Extreme, dtype);
        let (xb, xr) = placed(dev, dtype, &x, pad)?;
        let mut checked = 0;
        for to in DType::FLOATS {
            let (mut yb, yr) = placed(dev, to, &vec![0.0; n], pad)?;
            let result = dev.cast(xb.range(xr.clone()), yb.range_mut(yr.clone()));
            // A target the backend declares unsupported must be refused as unsupported; the
            // cell is about the source dtype, so that refusal counts as a check.
            if let Support::No(_) = dev.info().capabilities.support(KernelFamily::Cast, to) {
                match result {
                    Err(ds_core::Error::Unsupported { .. }) => checked += 1,
                    Ok(()) => {
                        return Err(CaseError::Fail(format!(
                            "cast to {to}: declared unsupported but the kernel ran"
                        )));
                    }
                    Err(e) => {
                        return Err(CaseError::Fail(format!(
                            "cast to {to}: declared unsupported but refused otherwise: {e}"
                        )));
                    }
                }
                continue;
            }
            result?;
            let got = unpad(dev, &yb, yr, "dst")?;
            checked += compare(
                &format!("cast to {to}"),
                &got,
                &oracle::cast(&x, to),
                &[],
                Tolerance::EXACT,
            )?;
        }
        Ok(checked)
    })
}

pub(super) fn scale<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let alpha = prop::sample::select(vec![0.5f32, -2.0, 0.0, 3.0, 1e-3, 1.0 / 65536.0]);
    prop!(cfg, (sizes(), any::<u64>(), pads(), alpha), |(
        n,
        seed,
        pad,
        alpha,
    )| {
        let x = values(&mut Rng::new(seed), n, Values::Extreme, dtype);
        let (mut xb, xr) = placed(dev, dtype, &x, pad)?;
        dev.scale(xb.range_mut(xr.clone()), alpha)?;
        let want = oracle::scale(&x, f64::from(alpha), dtype);
        expect(dev, &xb, xr, &want, Tolerance::new(dtype, 2.0), "x")
    },)
}

pub(super) fn axpy<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let alpha = prop::sample::select(vec![1.0f32, -0.5, 2.0, 0.0, 1e-4]);
    let kind = kinds(&[Values::Normal, Values::Special, Values::Tiny]);
    prop!(cfg, (sizes(), any::<u64>(), pads(), alpha, kind), |(
        n,
        seed,
        pad,
        alpha,
        kind,
    )| {
        let mut rng = Rng::new(seed);
        let x = values(&mut rng, n, kind, dtype);
        let (xb, xr) = placed(dev, dtype, &x, pad)?;
        let mut checked = 0;
        // Same dtype, and the mixed case of accumulating into f32.
        for ydt in [dtype, DType::F32] {
            let y = values(&mut rng, n, kind, ydt);
            let (mut yb, yr) = placed(dev, ydt, &y, pad)?;
            dev.axpy(alpha, xb.range(xr.clone()), yb.range_mut(yr.clone()))?;
            let want = oracle::axpy(f64::from(alpha), &x, &y, ydt);
            checked += expect(
                dev,
                &yb,
                yr,
                &want,
                Tolerance::new(ydt, 3.0),
                &format!("y ({ydt})"),
            )?;
        }
        Ok(checked)
    },)
}

pub(super) fn binary<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
    mul: bool,
) -> CaseResult {
    let kind = kinds(&[Values::Normal, Values::Special, Values::Tiny]);
    prop!(cfg, (sizes(), any::<u64>(), pads(), kind), |(
        n,
        seed,
        pad,
        kind,
    )| {
        let mut rng = Rng::new(seed);
        let a = values(&mut rng, n, kind, dtype);
        let b = values(&mut rng, n, kind, dtype);
        let (ab, ar) = placed(dev, dtype, &a, pad)?;
        let (bb, br) = placed(dev, dtype, &b, pad)?;
        let (mut ob, or) = placed(dev, dtype, &vec![0.0; n], pad)?;
        if mul {
            dev.mul(ab.range(ar), bb.range(br), ob.range_mut(or.clone()))?;
        } else {
            dev.add(ab.range(ar), bb.range(br), ob.range_mut(or.clone()))?;
        }
        let want: Expected = oracle::binary(&a, &b, mul, dtype);
        expect(dev, &ob, or, &want, Tolerance::new(dtype, 2.0), "out")
    },)
}
