//! Device buffers and the caching pool they come from.
//!
//! Creating a wgpu buffer allocates and zero-fills driver memory; a training step allocates and
//! frees the same sizes every time. Freed buffers go back to per-size free lists and are reused
//! (cleared on the device before they are handed out again, so `alloc` still returns zeros).
//! Sizes are rounded to 256 bytes below 1 MiB and to 2 MiB above, which bounds waste; at most
//! [`CACHE_CAP_BYTES`] are kept cached.

use ds_core::{DType, DeviceBuffer, MemoryStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The most bytes the pool keeps in freed buffers before it lets the driver have them back.
pub(crate) const CACHE_CAP_BYTES: u64 = 1 << 30;

/// The byte size a request of `bytes` is served with (at least 256: a binding needs bytes).
pub(crate) fn size_class(bytes: u64) -> u64 {
    const SMALL: u64 = 256;
    const LARGE: u64 = 2 << 20;
    if bytes < (1 << 20) {
        bytes.max(1).div_ceil(SMALL) * SMALL
    } else {
        bytes.div_ceil(LARGE) * LARGE
    }
}

/// Free lists and the statistics of one device.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    free: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    cached: AtomicU64,
    in_use: AtomicU64,
    peak: AtomicU64,
    reserved: AtomicU64,
}

impl Pool {
    /// A cached buffer of exactly `class` bytes, if one is free.
    pub(crate) fn reuse(&self, class: u64) -> Option<wgpu::Buffer> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let buf = free.get_mut(&class).and_then(Vec::pop)?;
        self.cached.fetch_sub(class, Ordering::Relaxed);
        Some(buf)
    }

    /// Records a buffer of `class` bytes freshly created from the driver.
    pub(crate) fn on_create(&self, class: u64) {
        self.reserved.fetch_add(class, Ordering::Relaxed);
    }

    /// Records `bytes` handed out in a live buffer.
    pub(crate) fn on_take(&self, bytes: u64) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Takes a buffer back: cached when there is room, else destroyed.
    fn give_back(&self, buffer: wgpu::Buffer, class: u64, bytes: u64) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        if self.cached.load(Ordering::Relaxed) + class <= CACHE_CAP_BYTES {
            self.cached.fetch_add(class, Ordering::Relaxed);
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            free.entry(class).or_default().push(buffer);
        } else {
            self.reserved.fetch_sub(class, Ordering::Relaxed);
            buffer.destroy();
        }
    }

    /// Destroys every cached buffer (before retrying an allocation the driver refused).
    pub(crate) fn release_cache(&self) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for (class, list) in free.drain() {
            for b in list {
                self.reserved.fetch_sub(class, Ordering::Relaxed);
                self.cached.fetch_sub(class, Ordering::Relaxed);
                b.destroy();
            }
        }
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

/// A buffer in device memory. Dropping it returns the memory to the backend's pool.
#[derive(Debug)]
pub struct WgpuBuffer {
    pub(crate) raw: Option<wgpu::Buffer>,
    pub(crate) class: u64,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) pool: Arc<Pool>,
}

impl WgpuBuffer {
    /// The wgpu buffer (present until drop).
    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        // The option is only emptied by Drop.
        self.raw
            .as_ref()
            .unwrap_or_else(|| unreachable!("buffer used after drop"))
    }

    /// Bytes of the elements (not of the rounded allocation).
    pub(crate) fn bytes(&self) -> u64 {
        (self.len * self.dtype.size_bytes()) as u64
    }
}

impl DeviceBuffer for WgpuBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for WgpuBuffer {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            let bytes = self.bytes();
            self.pool.give_back(raw, self.class, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn classes_round_up_and_never_hold_zero_bytes() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(257), 512);
        assert_eq!(size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(size_class(3 << 20), 4 << 20);
    }
}
