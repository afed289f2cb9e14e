//! The one tolerance policy of the suite.
//!
//! A backend's result `got` matches the oracle's `want` (the exact f64 result, rounded to the
//! output's storage type) when
//!
//! ```text
//! |got - want| <= rel * max(|want|, mag) + abs
//! ```
//!
//! - `rel = eps(output dtype) + eps(f32) * ops`: one unit of the storage format (rounding
//!   may land on either side of a boundary) plus the f32 arithmetic the kernel does, `ops`
//!   being the number of dependent f32 operations, which for reductions grows with the
//!   reduction length (`8 + 2 sqrt(n)`).
//! - `mag` is the size of the terms that produced the value (for a sum, the sum of absolute
//!   values; for a product, |a||b|), computed by the oracle, so cancellation does not demand
//!   relative precision that f32 arithmetic cannot give.
//! - `abs` is the smallest normal value of the output type, so a backend that flushes
//!   subnormals to zero still matches.
//!
//! NaN and infinity are compared exactly: where the oracle says NaN the backend must say NaN,
//! where it says +inf the backend must say +inf, and a finite oracle value needs a finite
//! result.

use ds_core::DType;

/// How close a result must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Relative bound, against `max(|want|, mag)`.
    pub rel: f64,
    /// Absolute floor.
    pub abs: f64,
}

/// The smallest positive normal value of a float dtype.
pub fn min_normal(dtype: DType) -> f64 {
    match dtype {
        DType::F16 => 2f64.powi(-14),
        _ => f64::from(f32::MIN_POSITIVE),
    }
}

impl Tolerance {
    /// Bit-exact (casts, copies, fills, lookups).
    pub const EXACT: Tolerance = Tolerance { rel: 0.0, abs: 0.0 };

    /// For an output stored as `dtype` after `ops` dependent f32 operations.
    pub fn new(dtype: DType, ops: f64) -> Self {
        Tolerance {
            rel: dtype.epsilon() + f64::from(f32::EPSILON) * ops,
            abs: min_normal(dtype),
        }
    }

    /// For an output stored as `dtype` that sums `n` terms.
    pub fn reduction(dtype: DType, n: usize) -> Self {
        Self::new(dtype, 8.0 + 2.0 * (n as f64).sqrt())
    }
}

/// Compares `got` with `want` under `tol`; `mag` (same length, or empty for `|want|`) bounds
/// the terms behind each value. Returns the number of elements checked, or a description of
/// the first mismatches.
///
/// # Errors
/// A message naming the output, the index, both values and the bound.
pub fn compare(
    what: &str,
    got: &[f64],
    want: &[f64],
    mag: &[f64],
    tol: Tolerance,
) -> Result<usize, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: backend returned {} values, oracle {}",
            got.len(),
            want.len()
        ));
    }
    let mut failures = Vec::new();
    for i in 0..want.len() {
        let (g, w) = (got[i], want[i]);
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else if !g.is_finite() {
            false
        } else {
            let m = mag.get(i).copied().unwrap_or(0.0).max(w.abs());
            (g - w).abs() <= tol.rel * m + tol.abs
        };
        if !ok {
            let m = mag.get(i).copied().unwrap_or(0.0).max(w.abs());
            failures.push(format!(
                "{what}[{i}]: got {g:e}, want {w:e} (|diff| {:e} > bound {:e})",
                (g - w).abs(),
                tol.rel * m + tol.abs
            ));
            if failures.len() == 4 {
                break;
            }
        }
    }
    if failures.is_empty() {
        Ok(want.len())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_infinity_positions_are_exact() {
        let t = Tolerance::new(DType::F32, 4.0);
        assert!(compare("x", &[f64::NAN], &[f64::NAN], &[], t).is_ok());
        assert!(compare("x", &[1.0], &[f64::NAN], &[], t).is_err());
        assert!(compare("x", &[f64::NAN], &[1.0], &[], t).is_err());
        assert!(compare("x", &[f64::INFINITY], &[f64::NEG_INFINITY], &[], t).is_err());
        assert!(compare("x", &[f64::MAX], &[f64::INFINITY], &[], t).is_err());
    }

    #[test]
    fn bounds_scale_with_dtype_and_magnitude() {
        let t16 = Tolerance::new(DType::BF16, 2.0);
        assert!(compare("x", &[1.0 + 2f64.powi(-8)], &[1.0], &[], t16).is_ok());
        let t32 = Tolerance::new(DType::F32, 2.0);
        assert!(compare("x", &[1.0 + 2f64.powi(-8)], &[1.0], &[], t32).is_err());
        // Cancellation: a tiny result of large terms is judged against the terms.
        assert!(compare("x", &[1e-6], &[0.0], &[100.0], t32).is_ok());
        assert!(compare("x", &[1e-3], &[0.0], &[100.0], t32).is_err());
    }
}
