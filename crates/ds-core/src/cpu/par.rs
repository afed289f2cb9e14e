//! Parallel building blocks of the CPU kernels.
//!
//! Streaming kernels split their arrays into chunks of [`CHUNK`] elements and hand the chunks
//! to rayon; chunk boundaries depend only on the length, so reductions combine partial results
//! in the same order on every run (deterministic results whatever the thread timing).

use super::stream::{fence, stream_bytes, streams};
use rayon::prelude::*;

/// Elements per parallel task for streaming kernels: big enough that scheduling costs
/// nothing, small enough to balance two threads over a few megabytes.
pub(crate) const CHUNK: usize = 1 << 16;

/// Byte count from which filling or copying memory is spread over the pool.
pub(crate) const PARALLEL_BYTES: usize = 4 << 20;

/// `f(scratch, index, chunk)` over `x` in chunks of `size`: on the current pool when
/// `parallel` (one `init()` scratch per rayon task), else in order on this thread with one.
pub(crate) fn for_chunks<T: Send, S>(
    x: &mut [T],
    size: usize,
    parallel: bool,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync + Send,
) {
    let size = size.max(1);
    if parallel {
        x.par_chunks_mut(size)
            .enumerate()
            .for_each_init(init, |s, (i, c)| f(s, i, c));
    } else {
        let mut s = init();
        for (i, c) in x.chunks_mut(size).enumerate() {
            f(&mut s, i, c);
        }
    }
}

/// Rows per task when `rows` rows in strips of `strip` are split over the current pool
/// (`tasks_per_thread` tasks per thread, so a thread that falls behind can hand one over):
/// equal runs of whole strips; all rows in one task when not `parallel`.
pub(crate) fn rows_per_task(
    rows: usize,
    strip: usize,
    tasks_per_thread: usize,
    parallel: bool,
) -> usize {
    let tasks = if parallel {
        tasks_per_thread * rayon::current_num_threads().max(1)
    } else {
        1
    };
    rows.div_ceil(strip).div_ceil(tasks).max(1) * strip
}

/// Readies a mapping for a new buffer: a reused one is zeroed (its contents are stale), a fresh
/// one (already zero) is pre-faulted with one write per 4 KiB page. From [`PARALLEL_BYTES`] up
/// the work is spread over the current pool (call it inside the backend's); below, handing it
/// to a pool costs more than it saves and it runs on the calling thread.
pub(crate) fn prepare_mapping(bytes: &mut [u8], reused: bool) {
    const PAGE: usize = 4096;
    let touch = |chunk: &mut [u8]| chunk.chunks_mut(PAGE).for_each(|page| page[0] = 0);
    match (reused, bytes.len() >= PARALLEL_BYTES) {
        (true, true) => bytes.par_chunks_mut(1 << 20).for_each(|c| c.fill(0)),
        (true, false) => bytes.fill(0),
        (false, true) => bytes.par_chunks_mut(PAGE * 512).for_each(touch),
        (false, false) => touch(bytes),
    }
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
    let streaming = streams(dst);
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
