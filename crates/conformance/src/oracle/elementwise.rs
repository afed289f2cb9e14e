//! Elementwise operations, casts and reductions.

use super::{Expected, round_to};
use ds_core::DType;

/// `n` copies of `value`, first rounded to f32 (kernels take f32 scalars), then to `dtype`.
pub fn fill(n: usize, value: f64, dtype: DType) -> Vec<f64> {
    let v = if dtype.is_float() {
        round_to(dtype, f64::from(value as f32))
    } else {
        value
    };
    vec![v; n]
}

/// `x` converted to `dtype`.
pub fn cast(x: &[f64], dtype: DType) -> Vec<f64> {
    x.iter().map(|&v| round_to(dtype, v)).collect()
}

/// `x * alpha`.
pub fn scale(x: &[f64], alpha: f64, dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(x.len());
    for &v in x {
        e.push(dtype, v * alpha, (v * alpha).abs());
    }
    e
}

/// `y + alpha * x`.
pub fn axpy(alpha: f64, x: &[f64], y: &[f64], dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(y.len());
    for (&xv, &yv) in x.iter().zip(y) {
        e.push(dtype, yv + alpha * xv, yv.abs() + (alpha * xv).abs());
    }
    e
}

/// `a op b` for add (`mul = false`) or mul.
pub fn binary(a: &[f64], b: &[f64], mul: bool, dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(a.len());
    for (&x, &y) in a.iter().zip(b) {
        if mul {
            e.push(dtype, x * y, (x * y).abs());
        } else {
            e.push(dtype, x + y, x.abs() + y.abs());
        }
    }
    e
}

/// `sum(x)` as f32 with `sum(|x|)`.
pub fn sum(x: &[f64]) -> Expected {
    let mut e = Expected::default();
    e.push(DType::F32, x.iter().sum(), x.iter().map(|v| v.abs()).sum());
    e
}

/// `sum(x*x)` as f32.
pub fn sum_squares(x: &[f64]) -> Expected {
    let mut e = Expected::default();
    let s: f64 = x.iter().map(|v| v * v).sum();
    e.push(DType::F32, s, s.abs());
    e
}

/// `x * inv_scale` in `dtype` and whether any result is inf or NaN.
pub fn unscale(x: &[f64], inv_scale: f64, dtype: DType) -> (Expected, bool) {
    let e = scale(x, inv_scale, dtype);
    let bad = e.value.iter().any(|v| !v.is_finite());
    (e, bad)
}
