//! exp for f32, written branch-free so loops over it vectorize (the standard library calls
//! libm once per element, which made GELU and softmax run at 1 GB/s).
//!
//! It follows the classic Cephes single-precision algorithm: range reduction `x = n ln2 + r`,
//! a degree-6 polynomial for `e^r` and a two-step scale by `2^n` (so subnormal results come
//! out right). Errors are within 2 ulp over the whole range; infinities and NaN behave as in
//! libm. Two cheaper forms serve callers that know their argument's range: softmax's
//! [`exp_nonpositive`] and GELU's base-2 [`exp2_in_range`]. The conformance suite holds the
//! kernels built on them (softmax, GELU, attention) to the f64 oracle like every kernel.

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

/// The polynomial for `2^f` on |f| <= 1/2, lowest degree first: a relative-error minimax fit
/// of degree 6 (Lawson's iteration on Chebyshev nodes, constant term pinned to 1; the linear
/// one came out as ln 2 in f32), within 1 ulp in f32 evaluated by fused multiply-adds.
pub(crate) const EXP2_POLY: [f32; 7] = [
    1.0,
    std::f32::consts::LN_2,
    0.240_226_46,
    0.055_503_286,
    0.009_618_489,
    0.001_339_993_2,
    0.000_153_458_08,
];
/// The lower end of [`exp2_in_range`]'s domain: 2^-126, the smallest normal f32.
pub(crate) const EXP2_LO: f32 = -126.0;
/// The upper end of [`exp2_in_range`]'s domain: 2^128 reads as +inf.
pub(crate) const EXP2_HI: f32 = 128.0;

/// `z` clamped to `[EXP2_LO, hi]` by two compare-and-selects (a `vmaxps` and a `vminps` per
/// vector); NaN comes out as `EXP2_LO`, so callers that must propagate NaN do so through
/// another operand.
#[inline(always)]
pub(crate) fn clamp_exp2_arg(z: f32, hi: f32) -> f32 {
    let z = if z > EXP2_LO { z } else { EXP2_LO };
    if z < hi { z } else { hi }
}

/// `2^z` for `z` in `[EXP2_LO, EXP2_HI]` (the caller clamps, [`clamp_exp2_arg`]): the integer
/// part goes to the exponent bits, the fraction through [`EXP2_POLY`]. Within 2 ulp where the
/// result is normal; `z >= 127.5` gives +inf (2^128 is its scale). Cheaper than [`exp`]
/// (about 13 vector operations against 21: no range checks, one scale, no Cody-Waite split)
/// for callers whose argument is already in base 2 and bounded.
#[inline(always)]
pub(crate) fn exp2_in_range(z: f32) -> f32 {
    // t's low mantissa bits hold round(z) (see ROUNDER); shifted to the exponent field and
    // biased, they are 2^round(z), with 2^128 = +inf's bits.
    let t = z + ROUNDER;
    let n = t - ROUNDER;
    let f = z - n;
    let mut p = EXP2_POLY[6];
    for &c in EXP2_POLY[..6].iter().rev() {
        p = p.mul_add(f, c);
    }
    p * f32::from_bits((t.to_bits() << 23).wrapping_add(127 << 23))
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
    fn exp2_in_range_is_within_two_ulp_over_its_normal_range() {
        let mut z = EXP2_LO;
        let mut worst = 0;
        while z < 127.4 {
            let want = 2f64.powf(f64::from(z)) as f32;
            let got = exp2_in_range(z);
            worst = worst.max(ulps(got, want));
            assert!(
                ulps(got, want) <= 2,
                "exp2_in_range({z}) = {got} want {want}"
            );
            z += 0.000_37;
        }
        assert!(worst >= 1, "the sweep compared nothing inexact");
        assert_eq!(exp2_in_range(0.0), 1.0);
        assert_eq!(exp2_in_range(EXP2_LO), f32::MIN_POSITIVE);
        assert_eq!(exp2_in_range(EXP2_HI), f32::INFINITY);
        assert_eq!(clamp_exp2_arg(f32::NAN, EXP2_HI), EXP2_LO);
        assert_eq!(clamp_exp2_arg(f32::INFINITY, 126.0), 126.0);
        assert_eq!(clamp_exp2_arg(f32::NEG_INFINITY, 126.0), EXP2_LO);
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
