//! Matrix multiplication.

use super::Expected;
use ds_core::DType;
use ds_core::params::GemmSpec;

/// `C = alpha op(A) op(B) + beta C` per batch entry; `c` is the whole C view, and elements
/// between batch entries come back unchanged.
pub fn gemm(spec: &GemmSpec, a: &[f64], b: &[f64], c: &[f64], dtype: DType) -> Expected {
    let mut e = Expected {
        value: c.to_vec(),
        mag: c.iter().map(|v| v.abs()).collect(),
    };
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (alpha, beta) = (f64::from(spec.alpha), f64::from(spec.beta));
    for t in 0..spec.batch {
        let (oa, ob, oc) = (t * spec.stride_a, t * spec.stride_b, t * spec.stride_c);
        for i in 0..m {
            for j in 0..n {
                let (mut acc, mut mag) = (0.0, 0.0);
                for p in 0..k {
                    let av = if spec.trans_a {
                        a[oa + p * m + i]
                    } else {
                        a[oa + i * k + p]
                    };
                    let bv = if spec.trans_b {
                        b[ob + j * k + p]
                    } else {
                        b[ob + p * n + j]
                    };
                    acc += av * bv;
                    mag += (av * bv).abs();
                }
                let old = c[oc + i * n + j];
                let (extra, extra_mag) = if beta == 0.0 {
                    (0.0, 0.0)
                } else {
                    (beta * old, (beta * old).abs())
                };
                e.value[oc + i * n + j] = super::round_to(dtype, alpha * acc + extra);
                e.mag[oc + i * n + j] = alpha.abs() * mag + extra_mag;
            }
        }
    }
    e
}
