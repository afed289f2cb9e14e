//! The raw CUDA memory ds-core's shared pool caches.
//!
//! `cuMemAlloc`/`cuMemFree` synchronise and cost tens of microseconds; a training step
//! allocates and frees the same sizes every time. ds-core's [`Pool`] keeps freed blocks by size
//! class (512 bytes below 1 MiB, 2 MiB above), releases its cache and retries when the driver
//! runs out of memory, and keeps the statistics (in use, peak, reserved).

use crate::error;
use cudarc::driver::sys::CUresult;
use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use ds_core::pool::{Pool, RawFailure, RawMemory, device_class};
use std::sync::Arc;

/// The step of small size classes (cudaMalloc's own granularity).
const SMALL: usize = 512;

/// The most bytes kept cached: no cap beyond the device itself (the pool releases its cache
/// before reporting out of memory).
pub(crate) const CACHE_CAP_BYTES: u64 = u64::MAX;

/// Whether the driver's error is "out of memory", by its code.
fn is_out_of_memory(e: &DriverError) -> bool {
    e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
}

/// One device's raw memory: allocations on the backend's stream.
#[derive(Debug)]
pub(crate) struct CudaMemory {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) device: String,
}

impl RawMemory for CudaMemory {
    type Block = CudaSlice<u8>;

    fn device(&self) -> &str {
        &self.device
    }

    fn class(&self, bytes: usize) -> usize {
        device_class(bytes, SMALL)
    }

    fn alloc(&self, class: usize) -> Result<CudaSlice<u8>, RawFailure> {
        // SAFETY: the memory is uninitialised; CudaBackend::alloc zero-fills every block, fresh
        // or reused, before any view of it is handed out.
        unsafe { self.stream.alloc::<u8>(class) }.map_err(|e| {
            if is_out_of_memory(&e) {
                RawFailure::OutOfMemory
            } else {
                RawFailure::Other(error::driver(&self.device, "cuMemAlloc", e))
            }
        })
    }

    fn available(&self) -> u64 {
        self.stream
            .context()
            .mem_get_info()
            .map(|(free, _)| free as u64)
            .unwrap_or(0)
    }

    fn free(&self, block: CudaSlice<u8>) {
        drop(block);
    }
}

/// The pool of one CUDA backend (one device, one stream).
pub(crate) type CudaPool = Pool<CudaMemory>;

#[cfg(test)]
mod tests {
    use super::{CUresult, DriverError, is_out_of_memory};

    #[test]
    fn out_of_memory_is_known_by_its_code() {
        assert!(is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        )));
        assert!(!is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_INVALID_VALUE
        )));
    }
}
