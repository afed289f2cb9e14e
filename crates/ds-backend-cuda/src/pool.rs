//! A caching device allocator.
//!
//! `cuMemAlloc`/`cuMemFree` synchronise and cost tens of microseconds; a training step
//! allocates and frees the same sizes every time. Freed blocks go back to per-size free lists
//! and are reused; sizes are rounded to 512 bytes below 1 MiB and to 2 MiB above, which bounds
//! waste. When the driver runs out of memory the cache is released and the allocation retried.
//! Statistics distinguish bytes in live buffers (in use, and its peak) from bytes held from the
//! driver (reserved: live plus cached).

use crate::error;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use ds_core::{Error, MemoryStats, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The size class a request of `bytes` is served from.
pub(crate) fn size_class(bytes: usize) -> usize {
    const SMALL: usize = 512;
    const LARGE: usize = 2 << 20;
    if bytes == 0 {
        0
    } else if bytes < (1 << 20) {
        bytes.div_ceil(SMALL) * SMALL
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// Whether the driver's error is "out of memory", by its code.
fn is_out_of_memory(e: &DriverError) -> bool {
    e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
}

/// The pool of one backend (one device, one stream).
#[derive(Debug)]
pub(crate) struct Pool {
    stream: Arc<CudaStream>,
    device: String,
    free: Mutex<HashMap<usize, Vec<CudaSlice<u8>>>>,
    in_use: AtomicU64,
    peak: AtomicU64,
    reserved: AtomicU64,
}

impl Pool {
    pub(crate) fn new(stream: Arc<CudaStream>, device: String) -> Self {
        Pool {
            stream,
            device,
            free: Mutex::new(HashMap::new()),
            in_use: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            reserved: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<usize, Vec<CudaSlice<u8>>>>> {
        self.free.lock().map_err(|_| Error::Device {
            device: self.device.clone(),
            message: "the memory pool's lock was poisoned by a panic".into(),
        })
    }

    /// A block of at least `bytes` bytes (uninitialised), its class, from the cache or driver.
    pub(crate) fn take(&self, bytes: usize) -> Result<(Option<CudaSlice<u8>>, usize)> {
        let class = size_class(bytes);
        if class == 0 {
            return Ok((None, 0));
        }
        let cached = self.lock()?.get_mut(&class).and_then(Vec::pop);
        let slice = match cached {
            Some(s) => s,
            None => self.fresh(class)?,
        };
        let now = self.in_use.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        self.peak.fetch_max(now, Ordering::Relaxed);
        Ok((Some(slice), class))
    }

    fn fresh(&self, class: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: the memory is uninitialised; the caller (CudaBackend::alloc) zero-fills it
        // before any view of it is handed out.
        let first = unsafe { self.stream.alloc::<u8>(class) };
        let slice = match first {
            Ok(s) => s,
            Err(_) => {
                // Out of memory (or fragmented): give the cache back to the driver and retry.
                self.release_cache()?;
                // SAFETY: as above.
                unsafe { self.stream.alloc::<u8>(class) }.map_err(|e| {
                    let free = self
                        .stream
                        .context()
                        .mem_get_info()
                        .map(|(f, _)| f as u64)
                        .unwrap_or(0);
                    if is_out_of_memory(&e) {
                        Error::OutOfMemory {
                            device: self.device.clone(),
                            requested: class as u64,
                            available: free,
                        }
                    } else {
                        error::driver(&self.device, "cuMemAlloc", e)
                    }
                })?
            }
        };
        self.reserved.fetch_add(class as u64, Ordering::Relaxed);
        Ok(slice)
    }

    /// Returns a live block (of `bytes` requested bytes) to the cache.
    pub(crate) fn give_back(&self, slice: CudaSlice<u8>, class: usize, bytes: usize) {
        self.in_use.fetch_sub(bytes as u64, Ordering::Relaxed);
        match self.free.lock() {
            Ok(mut free) => free.entry(class).or_default().push(slice),
            // A poisoned lock: free the block instead of caching it.
            Err(_) => {
                self.reserved.fetch_sub(class as u64, Ordering::Relaxed);
                drop(slice);
            }
        }
    }

    /// Frees every cached block.
    pub(crate) fn release_cache(&self) -> Result<()> {
        let drained: Vec<(usize, Vec<CudaSlice<u8>>)> = self.lock()?.drain().collect();
        for (class, blocks) in drained {
            self.reserved
                .fetch_sub((class * blocks.len()) as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> MemoryStats {
        MemoryStats {
            in_use: self.in_use.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            reserved: self.reserved.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn reset_peak(&self) {
        self.peak
            .store(self.in_use.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::{CUresult, DriverError, is_out_of_memory, size_class};

    #[test]
    fn out_of_memory_is_known_by_its_code() {
        assert!(is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        )));
        assert!(!is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_INVALID_VALUE
        )));
    }

    #[test]
    fn size_classes_round_up_and_bound_waste() {
        assert_eq!(size_class(0), 0);
        assert_eq!(size_class(1), 512);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 1024);
        assert_eq!(size_class((1 << 20) - 1), 1 << 20);
        assert_eq!(size_class(1 << 20), 2 << 20);
        assert_eq!(size_class((2 << 20) + 1), 4 << 20);
        for bytes in [1usize, 700, 4096, 999_999, 3 << 20, 123_456_789] {
            let c = size_class(bytes);
            assert!(c >= bytes);
            assert!(c - bytes < (2 << 20), "{bytes} -> {c}");
        }
    }
}
