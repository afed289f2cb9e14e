//! Cases for sum, sum of squares, the non-finite check and the fused unscale-and-check.

use super::{CaseResult, Config, download, expect, pads, placed, prop, upload};
use crate::data::{Rng, Values, sizes, values};
use crate::oracle;
use crate::tolerance::{Tolerance, compare};
use ds_core::{Backend, BufferExt, DType, Device};
use proptest::prelude::*;

pub(super) fn sum<B: Backend>(
    dev: &Device<B>,
    dtype: DType,
    cfg: &Config,
    squares: bool,
) -> CaseResult {
    let kind = prop::sample::select(vec![
        Values::Normal,
        Values::Integers,
        Values::Special,
        Values::Tiny,
    ]);
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), kind, 0usize..3),
        |(n, seed, pad, kind, at)| {
            let x = values(&mut Rng::new(seed), n, kind, dtype);
            let (xb, xr) = placed(dev, dtype, &x, pad)?;
            // The result lands at an offset inside a small buffer; its neighbours must survive.
            let mut out = upload(dev, DType::F32, &[5.0, 5.0, 5.0])?;
            if squares {
                dev.sum_squares(xb.range(xr), out.range_mut(at..at + 1))?;
            } else {
                dev.sum(xb.range(xr), out.range_mut(at..at + 1))?;
            }
            let want = if squares {
                oracle::sum_squares(&x)
            } else {
                oracle::sum(&x)
            };
            let got = download(dev, out.all())?;
            let others: Vec<f64> = got
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != at)
                .map(|(_, v)| *v)
                .collect();
            if others != [5.0, 5.0] {
                return Err(
                    format!("out: neighbours of the result were overwritten: {got:?}").into(),
                );
            }
            // Sums of small integers are exact in f32 (partial sums stay below 2^24).
            let tol = if kind == Values::Integers && !squares {
                Tolerance::EXACT
            } else {
                Tolerance::reduction(DType::F32, n)
            };
            Ok(compare(
                "out",
                &got[at..at + 1],
                &want.value,
                &want.mag,
                tol,
            )?)
        },
    )
}

/// The flag's dtype and its value before the call.
fn flag_setups() -> impl Strategy<Value = (DType, f64)> {
    (
        prop::sample::select(vec![DType::F32, DType::U8]),
        prop::sample::select(vec![0.0, 1.0]),
    )
}

fn check_flag<B: Backend>(
    dev: &Device<B>,
    flag: &B::Buffer,
    before: f64,
    found: bool,
) -> CaseResult {
    let got = download(dev, flag.all())?[0];
    let want = if found { 1.0 } else { before };
    if got != want {
        return Err(format!(
            "flag: got {got}, want {want} (it was {before}; non-finite found: {found})"
        )
        .into());
    }
    Ok(1)
}

pub(super) fn non_finite<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let kind = prop::sample::select(vec![
        Values::Normal,
        Values::Special,
        Values::Extreme,
        Values::Tiny,
    ]);
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), kind, flag_setups()),
        |(n, seed, pad, kind, (fdt, before))| {
            let x = values(&mut Rng::new(seed), n, kind, dtype);
            let (xb, xr) = placed(dev, dtype, &x, pad)?;
            let mut flag = upload(dev, fdt, &[before])?;
            dev.non_finite(xb.range(xr), flag.all_mut())?;
            check_flag(dev, &flag, before, x.iter().any(|v| !v.is_finite()))
        },
    )
}

pub(super) fn unscale<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let kind = prop::sample::select(vec![
        Values::Normal,
        Values::Special,
        Values::Extreme,
        Values::Tiny,
    ]);
    let inv = prop::sample::select(vec![1.0f32, 0.5, 2.0, 3.0, 1.0 / 65536.0, 1.0 / 1024.0]);
    prop!(
        cfg,
        (sizes(), any::<u64>(), pads(), kind, inv, flag_setups()),
        |(n, seed, pad, kind, inv, (fdt, before))| {
            let x = values(&mut Rng::new(seed), n, kind, dtype);
            let (mut xb, xr) = placed(dev, dtype, &x, pad)?;
            let mut flag = upload(dev, fdt, &[before])?;
            dev.unscale_and_check(xb.range_mut(xr.clone()), inv, flag.all_mut())?;
            let (want, found) = oracle::unscale(&x, f64::from(inv), dtype);
            let checked = expect(dev, &xb, xr, &want, Tolerance::new(dtype, 2.0), "x")?;
            Ok(checked + check_flag(dev, &flag, before, found)?)
        },
    )
}
