//! Memory accounting shared by every backend.
//!
//! The engine reads these numbers to report ZeRO's savings and the tests read them to prove
//! them, so every backend counts the same way: bytes of live buffers, and the high-water mark
//! since the last reset.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a device's memory use, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes held by live buffers.
    pub in_use: u64,
    /// The most `in_use` has been since the device was opened or the peak was last reset.
    pub peak: u64,
    /// Bytes the backend holds from the system, live buffers and caches together.
    pub reserved: u64,
}

/// Lock-free counters a backend embeds and updates on every allocation and free.
#[derive(Debug, Default)]
pub struct MemoryTracker {
    in_use: AtomicU64,
    peak: AtomicU64,
    reserved: AtomicU64,
}

impl MemoryTracker {
    /// Records a new live buffer of `bytes` taken straight from the system (also reserved).
    pub fn on_alloc(&self, bytes: u64) {
        self.on_reserve(bytes);
        self.on_take(bytes);
    }

    /// Records that a live buffer of `bytes` was released straight back to the system.
    pub fn on_free(&self, bytes: u64) {
        self.on_give_back(bytes);
        self.on_release(bytes);
    }

    /// Records `bytes` more held from the system (a fresh block, live or cached).
    pub fn on_reserve(&self, bytes: u64) {
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records `bytes` given back to the system.
    pub fn on_release(&self, bytes: u64) {
        self.reserved.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Records `bytes` handed out in a live buffer.
    pub fn on_take(&self, bytes: u64) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Records a live buffer of `bytes` returned (to a cache or the system).
    pub fn on_give_back(&self, bytes: u64) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            in_use: self.in_use.load(Ordering::Relaxed),
            peak: self.peak.load(Ordering::Relaxed),
            reserved: self.reserved.load(Ordering::Relaxed),
        }
    }

    /// Restarts the high-water mark from the current use.
    pub fn reset_peak(&self) {
        self.peak
            .store(self.in_use.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}
