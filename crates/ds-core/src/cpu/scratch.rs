//! Reusable per-thread scratch for kernels that pack operands (the GEMMs' panels).
//!
//! A GEMM packs a few hundred KiB to a few MiB per call. Freshly allocated, that memory comes
//! back from the kernel as new pages on every call (glibc's per-thread arenas return freed
//! tops of their heaps with `MADV_DONTNEED`): page clearing took 4-12% of a bf16 1024^3
//! product on two threads. A scratch buffer instead returns to its thread's small cache when
//! dropped and the next kernel on that thread reuses it, pages already mapped.
//!
//! The contents of a reused buffer are stale: callers write every element they read.

use bytemuck::Pod;
use std::cell::RefCell;

/// Largest buffer a thread keeps for reuse; larger ones are freed (bounding what each of the
/// backend's threads holds to [`KEPT`] of these).
const RETAIN_BYTES: usize = 8 << 20;
/// Buffers a thread keeps.
const KEPT: usize = 2;
/// The alignment of every slice: a cache line.
const LINE: usize = 64;

thread_local! {
    static CACHE: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of 8-byte words, viewed as any plain element type.
pub(crate) struct Scratch {
    words: Vec<u64>,
}

impl Scratch {
    /// This thread's largest cached buffer, or an empty one.
    pub(crate) fn new() -> Scratch {
        let words = CACHE
            .with(|c| {
                let mut c = c.borrow_mut();
                let best = (0..c.len()).max_by_key(|&i| c[i].capacity())?;
                Some(c.swap_remove(best))
            })
            .unwrap_or_default();
        Scratch { words }
    }

    /// `len` elements of the buffer as `T`, starting on a 64-byte boundary (grown when needed;
    /// stale contents).
    ///
    /// The boundary matters to the packed GEMM panels: a 64-byte vector load that straddles two
    /// cache lines costs two. A `Vec` of this size comes from `mmap` 16 bytes past a page, so
    /// every zmm load of an unaligned panel straddled; on an Emerald Rapids Xeon the f32 tile
    /// ran 3-20% slower on such a panel than on an aligned one (interleaved, one thread).
    pub(crate) fn slice<T: Pod>(&mut self, len: usize) -> &mut [T] {
        const { assert!(align_of::<T>() <= align_of::<u64>()) };
        let bytes = len * size_of::<T>();
        let words = (bytes + LINE).div_ceil(size_of::<u64>());
        if self.words.len() < words {
            self.words.resize(words, 0);
        }
        let all: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words[..]);
        let skip = all.as_ptr().align_offset(LINE).min(LINE);
        bytemuck::cast_slice_mut(&mut all[skip..skip + bytes])
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let words = std::mem::take(&mut self.words);
        if words.capacity() == 0 || words.capacity() * size_of::<u64>() > RETAIN_BYTES {
            return;
        }
        // `try_with`: a thread being torn down has no cache left; the buffer is freed.
        let _ = CACHE.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.len() < KEPT {
                c.push(words);
            } else if let Some(smallest) = (0..c.len()).min_by_key(|&i| c[i].capacity())
                && c[smallest].capacity() < words.capacity()
            {
                c[smallest] = words;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn a_dropped_buffer_is_reused_by_the_next_one_on_its_thread() {
        let ptr = {
            let mut s = Scratch::new();
            let v = s.slice::<f32>(100_000);
            v[99_999] = 7.0;
            v.as_ptr() as usize
        };
        let mut s = Scratch::new();
        let v = s.slice::<u16>(200_000);
        assert_eq!(v.as_ptr() as usize, ptr, "same allocation");
        assert_eq!(v.len(), 200_000);
        // A second live buffer on the same thread is a different one.
        let mut t = Scratch::new();
        assert_ne!(t.slice::<u32>(10).as_ptr() as usize, ptr);
    }

    #[test]
    fn every_slice_starts_on_a_cache_line_whatever_its_type_and_length() {
        for len in [1usize, 3, 1000, 40_000, 300_000] {
            let mut s = Scratch::new();
            assert_eq!(s.slice::<u16>(len).as_ptr() as usize % 64, 0, "u16 x {len}");
            assert_eq!(s.slice::<f32>(len).len(), len);
            assert_eq!(s.slice::<f32>(len).as_ptr() as usize % 64, 0, "f32 x {len}");
        }
    }
}
