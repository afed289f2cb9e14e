//! Cases for GEMM: every transpose, alpha/beta (with NaN in C when beta is 0, which must not
//! propagate), packed and padded batch strides.

use super::{CaseResult, Config, expect_all, prop, upload};
use crate::data::{Rng, Values, dims, values};
use crate::oracle;
use crate::tolerance::Tolerance;
use ds_core::params::GemmSpec;
use ds_core::{Backend, BufferExt, DType, Device};
use proptest::prelude::*;

pub(super) fn gemm<B: Backend>(dev: &Device<B>, dtype: DType, cfg: &Config) -> CaseResult {
    let shape = (
        dims(),
        dims(),
        prop_oneof![dims(), Just(0usize), Just(300usize)],
    );
    let scalars = (
        prop::sample::select(vec![1.0f32, 0.5, -2.0]),
        prop::sample::select(vec![0.0f32, 1.0, 0.25]),
    );
    let batching = (
        prop::sample::select(vec![1usize, 2, 3]),
        prop::sample::select(vec![0usize, 5]),
    );
    prop!(
        cfg,
        (
            shape,
            prop::bool::ANY,
            prop::bool::ANY,
            scalars,
            batching,
            any::<u64>(),
        ),
        |((m, n, k), ta, tb, (alpha, beta), (batch, gap), seed)| {
            let spec = GemmSpec::new(m, n, k)
                .transpose(ta, tb)
                .scaled(alpha, beta)
                .strided(batch, m * k + gap, k * n + gap, m * n + gap);
            let reach = |stride: usize, one: usize| (batch - 1) * stride + one;
            let mut rng = Rng::new(seed);
            let a = values(&mut rng, reach(spec.stride_a, m * k), Values::Normal, dtype);
            let b = values(&mut rng, reach(spec.stride_b, k * n), Values::Normal, dtype);
            let c0: Vec<f64> = if beta == 0.0 {
                vec![f64::NAN; reach(spec.stride_c, m * n)]
            } else {
                values(&mut rng, reach(spec.stride_c, m * n), Values::Normal, dtype)
            };
            let (ab, bb) = (upload(dev, dtype, &a)?, upload(dev, dtype, &b)?);
            let mut cb = upload(dev, dtype, &c0)?;
            dev.gemm(&spec, ab.all(), bb.all(), cb.all_mut())?;
            let want = oracle::gemm(&spec, &a, &b, &c0, dtype);
            expect_all(
                dev,
                &cb,
                &want,
                Tolerance::new(dtype, 8.0 + 2.0 * (k as f64).sqrt()),
                "c",
            )
        },
    )
}
