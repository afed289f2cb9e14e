//! exp for f32, written branch-free so loops over it vectorize (the standard library calls
//! libm once per element, which made GELU and softmax run at 1 GB/s).
//!
//! It follows the classic Cephes single-precision algorithm: range reduction `x = n ln2 + r`,
//! a degree-6 polynomial for `e^r` and a two-step scale by `2^n` (so subnormal results come
//! out right). Errors are within 2 ulp over the whole range; infinities and NaN behave as in
//! libm. The conformance suite holds the kernels built on it (softmax, GELU through
//! `sigmoid(2u) = 0.5 (1 + tanh u)`, attention) to the f64 oracle like every kernel.

pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in two so `n * LN2_HI` is exact for every reachable n.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// The polynomial for `(e^r - 1 - r) / r^2` on |r| <= ln2 / 2, highest degree first (Cephes).
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5e-1,
];
/// Above this, e^x overflows f32.
const EXP_MAX: f32 = 88.722_84;
/// Below this, e^x rounds to zero even as a subnormal.
const EXP_MIN: f32 = -103.972_08;

/// `2^n` for `n` in [-126, 127], from the exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// 1.5 * 2^23: adding it rounds an f32 of magnitude below 2^22 to an integer (to nearest)
/// and leaves that integer in the low mantissa bits. Used instead of `round`/`floor`, which
/// are library calls on baseline x86-64 and would stop the loop from vectorizing.
pub(crate) const ROUNDER: f32 = 12_582_912.0;

/// e^x.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let t = xc * LOG2E + ROUNDER;
    let n = t - ROUNDER;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p * r + c;
    }
    let er = p * r * r + r + 1.0;
    // Scale in two halves so n down to -150 (subnormal results) stays representable.
    let n = t.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let half = n / 2;
    let y = er * pow2i(half) * pow2i(n - half);
    if x > EXP_MAX {
        f32::INFINITY
    } else if x < EXP_MIN {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}
/// The smallest x whose e^x is a normal f32 (2^-126).
pub(crate) const EXP_NORMAL_MIN: f32 = -87.336_54;

/// e^x for the x <= 0 of a softmax (scores minus their maximum), cheaper than [`exp`]: fused
/// multiply-adds (`mul_add` is correctly rounded everywhere, so the bits do not depend on the
/// processor; without FMA hardware it is a library call, slow but equal), one scale by `2^n`,
/// and results below the smallest normal f32 flushed to zero (they add nothing next to the
/// maximum's 1). Within 2 ulp above that; NaN stays NaN; valid up to x = 88.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    // NaN fails the comparison and flows through as NaN.
    let xc = if x < EXP_NORMAL_MIN {
        EXP_NORMAL_MIN
    } else {
        x
    };
    let t = xc.mul_add(LOG2E, ROUNDER);
    let n = t - ROUNDER;
    let r = n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, xc));
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let er = (p * r).mul_add(r, r) + 1.0;
    let y = er * pow2i(t.to_bits() as i32 - ROUNDER.to_bits() as i32);
    if x < EXP_NORMAL_MIN { 0.0 } else { y }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            return 0;
        }
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_f64_result() {
        let mut x = -110.0f32;
        while x < 90.0 {
            let want = (f64::from(x)).exp() as f32;
            assert!(ulps(exp(x), want) <= 2, "exp({x}) = {} want {want}", exp(x));
            x += 0.0137;
        }
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_nonpositive_is_within_two_ulp_above_the_normal_range_and_zero_below() {
        let mut x = -87.3f32;
        while x < 1.0 {
            let want = (f64::from(x)).exp() as f32;
            let got = exp_nonpositive(x);
            assert!(
                ulps(got, want) <= 2,
                "exp_nonpositive({x}) = {got} want {want}"
            );
            x += 0.00731;
        }
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }
}
