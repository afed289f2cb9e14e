//! Storage types of the CPU kernels: every kernel computes in f32 and converts 16-bit storage
//! on load and store, a block at a time, so the arithmetic loops see plain f32 slices and
//! vectorize.
//!
//! f16 conversions use the F16C instructions when the processor has them (checked once at
//! run time); bf16 conversions are bit operations written so the compiler vectorizes them.
//! Both round to nearest even; NaN stays NaN.
use crate::cpu::isa::vectorized;

use crate::dtype::Element;
use half::{bf16, f16};

/// Elements processed per conversion block: small enough for a few blocks to stay in L1.
pub(crate) const BLOCK: usize = 512;

/// A float storage type of the CPU backend.
pub(crate) trait Float: Element + Copy + Default {
    /// The smallest f32 magnitude that rounds to infinity when stored as this type.
    const OVERFLOW: f32;
    /// Converts `src` into `dst` (equal lengths).
    fn load(src: &[Self], dst: &mut [f32]);
    /// Converts `src` into `dst` (equal lengths), rounding to nearest even.
    fn store(src: &[f32], dst: &mut [Self]);
    /// Like [`Float::store`] but with streaming stores (see [`super::stream`]); the caller
    /// fences after its last streaming write.
    fn store_stream(src: &[f32], dst: &mut [Self]) {
        let mut out = [Self::default(); BLOCK];
        for (s, d) in src.chunks(BLOCK).zip(dst.chunks_mut(BLOCK)) {
            Self::store(s, &mut out[..s.len()]);
            super::stream::stream_bytes(
                bytemuck::cast_slice(&out[..s.len()]),
                bytemuck::cast_slice_mut(d),
            );
        }
    }
    /// [`Float::store_stream`] when `streaming`, else [`Float::store`].
    fn store_or_stream(src: &[f32], dst: &mut [Self], streaming: bool) {
        if streaming {
            Self::store_stream(src, dst);
        } else {
            Self::store(src, dst);
        }
    }
    /// The slice itself when the storage is f32 (no conversion needed).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    /// Writable form of [`Float::as_f32`].
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// One f32 to this type.
    fn from_f32(v: f32) -> Self;
}

impl Float for f32 {
    const OVERFLOW: f32 = f32::INFINITY;
    fn load(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store(src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn store_stream(src: &[f32], dst: &mut [f32]) {
        super::stream::stream_bytes(bytemuck::cast_slice(src), bytemuck::cast_slice_mut(dst));
    }
    fn as_f32(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [f32]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Float for f16 {
    // 65504 is f16's largest finite value; halfway to the next binade step (65536) rounds up.
    const OVERFLOW: f32 = 65520.0;
    fn load(src: &[f16], dst: &mut [f32]) {
        f16_to_f32(bytemuck::cast_slice(src), dst);
    }
    fn store(src: &[f32], dst: &mut [f16]) {
        f32_to_f16(src, bytemuck::cast_slice_mut(dst));
    }
    fn store_stream(src: &[f32], dst: &mut [f16]) {
        super::stream::f32_to_f16_stream(src, bytemuck::cast_slice_mut(dst));
    }
    fn as_f32(_: &[f16]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [f16]) -> Option<&mut [f32]> {
        None
    }
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
}

impl Float for bf16 {
    // Halfway between bf16's largest finite value (0x7f7f) and infinity: ties go to even, inf.
    const OVERFLOW: f32 = f32::from_bits(0x7f7f_8000);
    fn load(src: &[bf16], dst: &mut [f32]) {
        bf16_to_f32(bytemuck::cast_slice(src), dst);
    }
    fn store(src: &[f32], dst: &mut [bf16]) {
        f32_to_bf16(src, bytemuck::cast_slice_mut(dst));
    }
    fn as_f32(_: &[bf16]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [bf16]) -> Option<&mut [f32]> {
        None
    }
    fn from_f32(v: f32) -> Self {
        bf16::from_bits(bf16_bits(v))
    }
}

vectorized! {
    fn bf16_to_f32(src: &[u16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(*s) << 16);
        }
    }
}

vectorized! {
    fn f32_to_bf16(src: &[f32], dst: &mut [u16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = bf16_bits(*s);
        }
    }
}

/// f32 to bf16 bits with round-to-nearest-even; NaN becomes a quiet NaN. Branch-free so
/// loops over it vectorize.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    let quiet_nan = (b >> 16) | 0x0040;
    let is_nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    (if is_nan { quiet_nan } else { rounded }) as u16
}

/// f16 bits to f32, with F16C when available.
pub(crate) fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor supports AVX and F16C (checked just above), the only
        // requirement of this function.
        unsafe { x86::f16_to_f32(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_bits(*s).to_f32();
    }
}

/// f32 to f16 bits with round-to-nearest-even, with F16C when available.
pub(crate) fn f32_to_f16(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor supports AVX and F16C (checked just above), the only
        // requirement of this function.
        unsafe { x86::f32_to_f16(src, dst) };
        return;
    }
    for (d, s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(*s).to_bits();
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::{
        __m128i, _MM_FROUND_TO_NEAREST_INT, _mm_loadu_si128, _mm_storeu_si128, _mm256_cvtph_ps,
        _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps,
    };

    /// # Safety
    /// The processor must support AVX and F16C.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let whole = n - n % 8;
        let mut i = 0;
        while i < whole {
            // SAFETY: i + 8 <= n, so 8 u16 (16 bytes) are readable at src[i] and 8 f32 are
            // writable at dst[i]; the loads and stores are unaligned variants.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for j in whole..n {
            dst[j] = f16::from_bits(src[j]).to_f32();
        }
    }

    /// # Safety
    /// The processor must support AVX and F16C.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f32_to_f16(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let whole = n - n % 8;
        let mut i = 0;
        while i < whole {
            // SAFETY: i + 8 <= n, so 8 f32 are readable at src[i] and 8 u16 (16 bytes) are
            // writable at dst[i]; the loads and stores are unaligned variants.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(i).cast::<__m128i>(), h);
            }
            i += 8;
        }
        for j in whole..n {
            dst[j] = f16::from_f32(src[j]).to_bits();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_half_on_hard_cases() {
        let cases = [
            0.0f32,
            -0.0,
            1.0,
            f32::from_bits(0x3f80_8000), // exactly halfway, even below: rounds down
            f32::from_bits(0x3f81_8000), // exactly halfway, odd below: rounds up
            f32::from_bits(0x3f80_8001),
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        for x in cases {
            assert_eq!(bf16_bits(x), bf16::from_f32(x).to_bits(), "{x:e}");
        }
        assert!(f32::from_bits(u32::from(bf16_bits(f32::NAN)) << 16).is_nan());
    }

    #[test]
    fn overflow_thresholds_are_where_rounding_reaches_infinity() {
        fn below(x: f32) -> f32 {
            f32::from_bits(x.to_bits() - 1)
        }
        assert!(
            f16::from_f32(<f16 as Float>::OVERFLOW)
                .to_f32()
                .is_infinite()
        );
        assert!(
            f16::from_f32(below(<f16 as Float>::OVERFLOW))
                .to_f32()
                .is_finite()
        );
        assert!(
            bf16::from_f32(<bf16 as Float>::OVERFLOW)
                .to_f32()
                .is_infinite()
        );
        assert!(
            bf16::from_f32(below(<bf16 as Float>::OVERFLOW))
                .to_f32()
                .is_finite()
        );
    }

    #[test]
    fn f16_slices_round_trip_with_remainders() {
        let src: Vec<f32> = (0..37).map(|i| i as f32 * 0.37 - 5.0).collect();
        let mut h = vec![0u16; src.len()];
        f32_to_f16(&src, &mut h);
        for (s, b) in src.iter().zip(&h) {
            assert_eq!(*b, f16::from_f32(*s).to_bits());
        }
        let mut back = vec![0f32; src.len()];
        f16_to_f32(&h, &mut back);
        for (b, bits) in back.iter().zip(&h) {
            assert_eq!(*b, f16::from_bits(*bits).to_f32());
        }
    }
}
