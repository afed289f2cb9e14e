//! One caching memory pool for every backend, over each backend's raw alloc/free.
//!
//! Asking the system for memory (`cuMemAlloc`, a wgpu buffer, an `mmap`) costs system calls,
//! synchronisation or page faults, and a training step allocates and frees the same sizes
//! every step. The pool keeps freed blocks in per-size-class free lists, up to a cap, and
//! serves the next request of the same class from them. When the system refuses an
//! allocation, the pool gives its cache back and tries once more before reporting
//! [`Error::OutOfMemory`]. One [`MemoryTracker`] counts bytes in live buffers (in use, and its
//! peak) and bytes held from the system (reserved: live plus cached), the same way on every
//! backend.
//!
//! A backend supplies the raw layer ([`RawMemory`]): its size classes, fresh blocks, how much
//! is still available, and freeing. Zero-filling stays with the backend, which knows whether a
//! block is fresh or reused ([`Taken::reused`]): fresh host mappings are zero already, reused
//! ones are cleared; GPU memory is zeroed either way.

use crate::error::{Error, Result};
use crate::memory::{MemoryStats, MemoryTracker};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why the system refused a fresh block.
#[derive(Debug)]
pub enum RawFailure {
    /// Not enough memory (the pool releases its cache and retries once).
    OutOfMemory,
    /// Any other failure, reported as is.
    Other(Error),
}

/// A backend's raw memory: what the pool caches over.
pub trait RawMemory: Send + Sync {
    /// One block as the system hands it out.
    type Block: Send;

    /// The device's name, for errors.
    fn device(&self) -> &str;

    /// The size of block that serves a request of `bytes`; requests of one class share
    /// cached blocks, so rounding bounds waste and raises reuse.
    fn class(&self, bytes: usize) -> usize;

    /// A fresh block of `class` bytes.
    ///
    /// # Errors
    /// [`RawFailure::OutOfMemory`] when the system has too little memory; anything else as
    /// [`RawFailure::Other`].
    fn alloc(&self, class: usize) -> std::result::Result<Self::Block, RawFailure>;

    /// Bytes the system could still hand out, for the out-of-memory error.
    fn available(&self) -> u64;

    /// Gives a block back to the system.
    fn free(&self, block: Self::Block);
}

/// A block handed out by [`Pool::take`].
#[derive(Debug)]
pub struct Taken<B> {
    /// The block, of [`Taken::class`] bytes.
    pub block: B,
    /// Its size class, to pass back to [`Pool::give_back`].
    pub class: usize,
    /// Whether it came from the cache (its contents are stale) rather than the system.
    pub reused: bool,
}

/// Size classes for device memory: multiples of `small` below 1 MiB, of 2 MiB from there.
/// Waste stays under 2 MiB per buffer, and small buffers share few classes.
pub fn device_class(bytes: usize, small: usize) -> usize {
    const LARGE: usize = 2 << 20;
    if bytes < (1 << 20) {
        bytes.max(1).div_ceil(small) * small
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// The caching pool of one device.
#[derive(Debug)]
pub struct Pool<R: RawMemory> {
    raw: R,
    cache_cap: u64,
    free: Mutex<HashMap<usize, Vec<R::Block>>>,
    cached: AtomicU64,
    tracker: MemoryTracker,
}

impl<R: RawMemory> Pool<R> {
    /// A pool over `raw` keeping at most `cache_cap` bytes of freed blocks.
    pub fn new(raw: R, cache_cap: u64) -> Self {
        Pool {
            raw,
            cache_cap,
            free: Mutex::new(HashMap::new()),
            cached: AtomicU64::new(0),
            tracker: MemoryTracker::default(),
        }
    }

    /// The raw layer (for backend calls the pool does not wrap).
    pub fn raw(&self) -> &R {
        &self.raw
    }

    /// The tracker, for memory a backend hands out without the pool (the CPU's small heap
    /// buffers), so one set of statistics covers everything.
    pub fn tracker(&self) -> &MemoryTracker {
        &self.tracker
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Vec<R::Block>>> {
        // The map stays consistent through a panic elsewhere (every update is one call).
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A block serving `bytes` bytes, from the cache when one of its class is free.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the system refuses even after the cache is released; the
    /// raw layer's other errors.
    pub fn take(&self, bytes: usize) -> Result<Taken<R::Block>> {
        let class = self.raw.class(bytes);
        let cached = self.lock().get_mut(&class).and_then(Vec::pop);
        let (block, reused) = match cached {
            Some(block) => {
                self.cached.fetch_sub(class as u64, Ordering::Relaxed);
                (block, true)
            }
            None => (self.fresh(class, bytes)?, false),
        };
        self.tracker.on_take(bytes as u64);
        Ok(Taken {
            block,
            class,
            reused,
        })
    }

    fn fresh(&self, class: usize, bytes: usize) -> Result<R::Block> {
        let block = match self.raw.alloc(class) {
            Ok(b) => b,
            Err(RawFailure::Other(e)) => return Err(e),
            Err(RawFailure::OutOfMemory) => {
                // Cached blocks of other sizes may be what stands in the way: free them, retry.
                self.release_cache();
                match self.raw.alloc(class) {
                    Ok(b) => b,
                    Err(RawFailure::Other(e)) => return Err(e),
                    Err(RawFailure::OutOfMemory) => {
                        return Err(Error::OutOfMemory {
                            device: self.raw.device().to_string(),
                            requested: bytes as u64,
                            available: self.raw.available(),
                        });
                    }
                }
            }
        };
        self.tracker.on_reserve(class as u64);
        Ok(block)
    }

    /// Takes back a block handed out for `bytes` bytes: cached while the cache has room,
    /// otherwise freed.
    pub fn give_back(&self, block: R::Block, class: usize, bytes: usize) {
        self.tracker.on_give_back(bytes as u64);
        let room = self.cached.load(Ordering::Relaxed) + class as u64 <= self.cache_cap;
        if room {
            self.cached.fetch_add(class as u64, Ordering::Relaxed);
            self.lock().entry(class).or_default().push(block);
        } else {
            self.tracker.on_release(class as u64);
            self.raw.free(block);
        }
    }

    /// Frees every cached block.
    pub fn release_cache(&self) {
        let drained: Vec<(usize, Vec<R::Block>)> = self.lock().drain().collect();
        for (class, blocks) in drained {
            for b in blocks {
                self.cached.fetch_sub(class as u64, Ordering::Relaxed);
                self.tracker.on_release(class as u64);
                self.raw.free(b);
            }
        }
    }

    /// Bytes cached for reuse.
    pub fn cached_bytes(&self) -> u64 {
        self.cached.load(Ordering::Relaxed)
    }

    /// The statistics: in use, peak, reserved.
    pub fn stats(&self) -> MemoryStats {
        self.tracker.stats()
    }

    /// Restarts the peak from the current use.
    pub fn reset_peak(&self) {
        self.tracker.reset_peak();
    }
}

impl<R: RawMemory> Drop for Pool<R> {
    fn drop(&mut self) {
        self.release_cache();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    /// A system with a fixed amount of memory, counting what it hands out.
    #[derive(Debug)]
    struct Fixed {
        capacity: usize,
        held: Arc<AtomicUsize>,
        allocs: AtomicUsize,
    }

    impl Fixed {
        fn new(capacity: usize) -> Self {
            Fixed {
                capacity,
                held: Arc::new(AtomicUsize::new(0)),
                allocs: AtomicUsize::new(0),
            }
        }
    }

    impl RawMemory for Fixed {
        type Block = usize;
        fn device(&self) -> &str {
            "fixed"
        }
        fn class(&self, bytes: usize) -> usize {
            device_class(bytes, 512)
        }
        fn alloc(&self, class: usize) -> std::result::Result<usize, RawFailure> {
            if self.held.load(Ordering::Relaxed) + class > self.capacity {
                return Err(RawFailure::OutOfMemory);
            }
            self.held.fetch_add(class, Ordering::Relaxed);
            self.allocs.fetch_add(1, Ordering::Relaxed);
            Ok(class)
        }
        fn available(&self) -> u64 {
            (self.capacity - self.held.load(Ordering::Relaxed)) as u64
        }
        fn free(&self, block: usize) {
            self.held.fetch_sub(block, Ordering::Relaxed);
        }
    }

    #[test]
    fn device_classes_round_up_and_bound_waste() {
        assert_eq!(device_class(0, 512), 512);
        assert_eq!(device_class(1, 512), 512);
        assert_eq!(device_class(513, 512), 1024);
        assert_eq!(device_class(257, 256), 512);
        assert_eq!(device_class((1 << 20) - 1, 512), 1 << 20);
        assert_eq!(device_class(1 << 20, 512), 2 << 20);
        assert_eq!(device_class((2 << 20) + 1, 256), 4 << 20);
        for bytes in [1usize, 700, 4096, 999_999, 3 << 20, 123_456_789] {
            let c = device_class(bytes, 512);
            assert!(c >= bytes && c - bytes < (2 << 20), "{bytes} -> {c}");
        }
    }

    #[test]
    fn a_freed_block_is_reused_and_the_statistics_follow() {
        let pool = Pool::new(Fixed::new(1 << 30), 1 << 30);
        let a = pool.take(1000).expect("fits");
        assert!(!a.reused);
        assert_eq!(a.class, 1024);
        assert_eq!(
            pool.stats(),
            MemoryStats {
                in_use: 1000,
                peak: 1000,
                reserved: 1024
            }
        );
        pool.give_back(a.block, a.class, 1000);
        assert_eq!(pool.stats().in_use, 0);
        assert_eq!(pool.stats().reserved, 1024, "cached, still reserved");
        let b = pool.take(900).expect("fits");
        assert!(b.reused, "same class, served from the cache");
        assert_eq!(pool.raw().allocs.load(Ordering::Relaxed), 1);
        pool.give_back(b.block, b.class, 900);
        pool.release_cache();
        assert_eq!(pool.stats().reserved, 0);
        assert_eq!(pool.raw().held.load(Ordering::Relaxed), 0);
        assert_eq!(pool.stats().peak, 1000);
        pool.reset_peak();
        assert_eq!(pool.stats().peak, 0);
    }

    #[test]
    fn out_of_memory_releases_the_cache_retries_and_then_says_how_much() {
        let pool = Pool::new(Fixed::new(4 << 20), 1 << 30);
        let a = pool.take(3 << 20).expect("fits"); // class 4 MiB: all of it
        pool.give_back(a.block, a.class, 3 << 20);
        // A different class only fits once the cached 4 MiB go back to the system.
        let b = pool.take(1 << 20).expect("fits after the release");
        assert!(!b.reused);
        assert_eq!(pool.cached_bytes(), 0);
        match pool.take(3 << 20) {
            Err(Error::OutOfMemory {
                device,
                requested,
                available,
            }) => {
                assert_eq!(device, "fixed");
                assert_eq!(requested, 3 << 20, "the bytes asked for, not the class");
                assert_eq!(available, 2 << 20);
            }
            other => panic!("expected OutOfMemory, got {other:?}"),
        }
        pool.give_back(b.block, b.class, 1 << 20);
    }

    #[test]
    fn past_the_cap_blocks_go_back_to_the_system_and_drop_frees_the_cache() {
        let raw = Fixed::new(1 << 30);
        let held = Arc::clone(&raw.held);
        let pool = Pool::new(raw, 1024);
        let a = pool.take(1024).expect("fits");
        let b = pool.take(1024).expect("fits");
        pool.give_back(a.block, a.class, 1024);
        pool.give_back(b.block, b.class, 1024); // over the cap: freed
        assert_eq!(pool.cached_bytes(), 1024);
        assert_eq!(pool.stats().reserved, 1024);
        assert_eq!(held.load(Ordering::Relaxed), 1024);
        drop(pool);
        assert_eq!(
            held.load(Ordering::Relaxed),
            0,
            "the cache is freed with the pool"
        );
    }
}
