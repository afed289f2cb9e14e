//! Non-temporal ("streaming") stores for outputs that are only written.
//!
//! A plain store first reads the destination line into the cache (read-for-ownership), so a
//! write-only output costs its bytes twice in memory traffic. For outputs much larger than the
//! caches (a cast or copy of a whole flat buffer) streaming stores skip that read and leave the
//! caches to the data that is reused: a copy moves 8 bytes per f32 instead of 12.
//!
//! Used only above [`STREAM_MIN_BYTES`]; below that the output likely stays in cache and is
//! read again soon, where a plain store is better.

/// Outputs at least this large are written with streaming stores.
pub(crate) const STREAM_MIN_BYTES: usize = 8 << 20;

/// Whether a write-only output is large enough for streaming stores (every streaming kernel
/// asks this, so the threshold is one policy). Kernels that stream
/// compute a block or row into a buffer in cache and stream it out, so the output's lines
/// are never read: a unary map or LayerNorm forward then moves 8 bytes per f32 instead of 12,
/// a binary map or LayerNorm backward 12 instead of 16.
pub(crate) fn streams<T>(out: &[T]) -> bool {
    std::mem::size_of_val(out) >= STREAM_MIN_BYTES
}

/// Makes this thread's streaming stores visible before anything it writes next: call once at
/// the end of every task that streamed, before it reports completion.
pub(crate) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no preconditions (SSE is part of the x86-64 baseline).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Copies `src` into `dst` (equal lengths) with streaming stores where the processor has them.
/// Call [`fence`] after the last streaming write of a task.
pub(crate) fn stream_bytes(src: &[u8], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is available (checked just above), the only requirement.
        unsafe { x86::stream_bytes(src, dst) };
        return;
    }
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// `dst = k src` (equal lengths) with streaming stores where the processor has them: a
/// scale on the way out of a row computed in cache. Call [`fence`] after the last streaming
/// write of a task.
pub(crate) fn stream_scaled(src: &[f32], k: f32, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: AVX is available (checked just above), the only requirement.
        unsafe { x86::stream_scaled(src, k, dst) };
        return;
    }
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s * k);
}

/// f32 to f16 bits with streaming stores (F16C when available); call [`fence`] after.
pub(crate) fn f32_to_f16_stream(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: AVX and F16C are available (checked just above), the only requirement.
        unsafe { x86::f32_to_f16_stream(src, dst) };
        return;
    }
    super::float::f32_to_f16(src, dst);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256i, _MM_FROUND_TO_NEAREST_INT, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_loadu_si256,
        _mm256_mul_ps, _mm256_set_m128i, _mm256_set1_ps, _mm256_stream_ps, _mm256_stream_si256,
    };

    /// # Safety
    /// The processor must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn stream_scaled(src: &[f32], k: f32, dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        let scale = |d: &mut [f32], s: &[f32]| d.iter_mut().zip(s).for_each(|(d, s)| *d = s * k);
        // Plain stores up to the first 32-byte aligned destination address.
        let head = dst.as_ptr().align_offset(32).min(n);
        scale(&mut dst[..head], &src[..head]);
        let body = (n - head) / 8 * 8;
        let kv = _mm256_set1_ps(k);
        let mut i = head;
        while i < head + body {
            // SAFETY: i + 8 <= n, so 8 f32 are readable at src[i] and writable at dst[i];
            // dst + i is 32-byte aligned (head aligned it and i advances by 8 f32), as the
            // streaming store requires; the load is the unaligned variant.
            unsafe {
                let v = _mm256_mul_ps(_mm256_loadu_ps(src.as_ptr().add(i)), kv);
                _mm256_stream_ps(dst.as_mut_ptr().add(i), v);
            }
            i += 8;
        }
        scale(&mut dst[head + body..n], &src[head + body..n]);
    }

    /// # Safety
    /// The processor must support AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn stream_bytes(src: &[u8], dst: &mut [u8]) {
        let n = src.len().min(dst.len());
        // Plain stores up to the first 32-byte aligned destination address.
        let head = dst.as_ptr().align_offset(32).min(n);
        dst[..head].copy_from_slice(&src[..head]);
        let body = (n - head) / 32 * 32;
        let mut i = head;
        while i < head + body {
            // SAFETY: i + 32 <= n, so 32 bytes are readable at src[i] and writable at dst[i];
            // dst + i is 32-byte aligned (head aligned it and i advances by 32), as the
            // streaming store requires; the load is the unaligned variant.
            unsafe {
                let v = _mm256_loadu_si256(src.as_ptr().add(i).cast::<__m256i>());
                _mm256_stream_si256(dst.as_mut_ptr().add(i).cast::<__m256i>(), v);
            }
            i += 32;
        }
        dst[head + body..n].copy_from_slice(&src[head + body..n]);
    }

    /// f32 to f16 bits (round to nearest even) written with streaming stores.
    ///
    /// # Safety
    /// The processor must support AVX and F16C.
    #[target_feature(enable = "avx,f16c")]
    pub(super) unsafe fn f32_to_f16_stream(src: &[f32], dst: &mut [u16]) {
        let n = src.len().min(dst.len());
        let head = (dst.as_ptr().align_offset(32)).min(n);
        for i in 0..head {
            dst[i] = half::f16::from_f32(src[i]).to_bits();
        }
        let body = (n - head) / 16 * 16;
        let mut i = head;
        while i < head + body {
            // SAFETY: i + 16 <= n: 16 f32 are readable at src[i] and 16 u16 (32 bytes) are
            // writable at dst[i], which is 32-byte aligned (head aligned it; i advances by 16
            // u16 = 32 bytes) as the streaming store requires.
            unsafe {
                let lo = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i),
                ));
                let hi = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(
                    src.as_ptr().add(i + 8),
                ));
                _mm256_stream_si256(
                    dst.as_mut_ptr().add(i).cast::<__m256i>(),
                    _mm256_set_m128i(hi, lo),
                );
            }
            i += 16;
        }
        for j in head + body..n {
            dst[j] = half::f16::from_f32(src[j]).to_bits();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{f32_to_f16_stream, stream_bytes, stream_scaled};

    #[test]
    fn scaled_streaming_matches_the_product_at_any_alignment() {
        let src: Vec<f32> = (0..100).map(|i| i as f32 * 0.37 - 11.0).collect();
        for offset in [0usize, 1, 3, 8, 9] {
            for len in [0usize, 1, 7, 8, 9, 90] {
                let mut dst = vec![-1f32; 110];
                stream_scaled(&src[..len], 0.3, &mut dst[offset..offset + len]);
                super::fence();
                for (i, s) in src[..len].iter().enumerate() {
                    assert_eq!(
                        dst[offset + i],
                        s * 0.3,
                        "offset {offset} len {len} index {i}"
                    );
                }
                assert!(dst[..offset].iter().all(|&v| v == -1.0));
                assert!(dst[offset + len..].iter().all(|&v| v == -1.0));
            }
        }
    }

    #[test]
    fn f16_streaming_matches_rounding_at_any_alignment() {
        let src: Vec<f32> = (0..300)
            .map(|i| (i as f32 - 150.0) * 0.731 + 1e-3)
            .collect();
        for offset in [0usize, 1, 5, 16, 17] {
            let mut dst = vec![0u16; 320];
            f32_to_f16_stream(&src, &mut dst[offset..offset + 300]);
            super::fence();
            for (i, s) in src.iter().enumerate() {
                assert_eq!(
                    dst[offset + i],
                    half::f16::from_f32(*s).to_bits(),
                    "offset {offset} index {i}"
                );
            }
        }
    }

    #[test]
    fn copies_every_byte_at_any_alignment() {
        let src: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        for offset in [0usize, 1, 7, 31, 32, 33] {
            for len in [0usize, 1, 31, 32, 33, 200, 900] {
                let mut dst = vec![0u8; 1000];
                stream_bytes(&src[..len], &mut dst[offset..offset + len]);
                super::fence();
                assert_eq!(
                    &dst[offset..offset + len],
                    &src[..len],
                    "offset {offset} len {len}"
                );
                assert!(dst[..offset].iter().all(|&b| b == 0));
                assert!(dst[offset + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
