//! Parallel building blocks of the CPU kernels.
//!
//! Streaming kernels split their arrays into chunks of [`CHUNK`] elements and hand the chunks
//! to rayon; chunk boundaries depend only on the length, so reductions combine partial results
//! in the same order on every run (deterministic results whatever the thread timing).

use super::stream::{STREAM_MIN_BYTES, fence, stream_bytes};
use rayon::prelude::*;

/// Elements per parallel task for streaming kernels: big enough that scheduling costs
/// nothing, small enough to balance two threads over a few megabytes.
pub(crate) const CHUNK: usize = 1 << 16;

/// Byte count from which filling or copying memory is spread over the pool.
pub(crate) const PARALLEL_BYTES: usize = 4 << 20;

/// Pre-faults freshly mapped memory, one write per 4 KiB page, spread over the pool.
pub(crate) fn touch_pages(bytes: &mut [u8]) {
    const PAGE: usize = 4096;
    bytes.par_chunks_mut(PAGE * 512).for_each(|chunk| {
        for page in chunk.chunks_mut(PAGE) {
            page[0] = 0;
        }
    });
}

/// Zeroes `bytes` over the pool (a reused mapping's stale contents).
pub(crate) fn zero_bytes(bytes: &mut [u8]) {
    bytes
        .par_chunks_mut(1 << 20)
        .for_each(|chunk| chunk.fill(0));
}

/// `dst.copy_from_slice(src)` over the pool (sizes are equal after validation), with
/// streaming stores for large copies.
pub(crate) fn copy_bytes(src: &[u8], dst: &mut [u8]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    if n < CHUNK * 4 {
        dst.copy_from_slice(src);
        return;
    }
    let streaming = n >= STREAM_MIN_BYTES;
    dst.par_chunks_mut(CHUNK * 4)
        .zip(src.par_chunks(CHUNK * 4))
        .for_each(|(d, s)| {
            if streaming {
                stream_bytes(s, d);
                fence();
            } else {
                d.copy_from_slice(s);
            }
        });
}

/// Sums per-chunk partial results in chunk order.
pub(crate) fn ordered_sum(parts: Vec<f64>) -> f64 {
    parts.into_iter().fold(0.0, |a, b| a + b)
}
