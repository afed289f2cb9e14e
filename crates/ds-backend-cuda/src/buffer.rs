//! Device buffers: a block from the pool, its dtype and length, and its raw device address
//! (kernels receive addresses plus element offsets of validated views).

use crate::pool::CudaPool;
use cudarc::driver::CudaSlice;
use ds_core::{DType, DeviceBuffer};
use std::sync::Arc;

/// A buffer in device memory. Dropping it returns the memory to the backend's pool.
#[derive(Debug)]
pub struct CudaBuffer {
    pub(crate) slice: Option<CudaSlice<u8>>,
    pub(crate) ptr: u64,
    pub(crate) class: usize,
    pub(crate) bytes: usize,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) pool: Arc<CudaPool>,
}

impl CudaBuffer {
    /// The device address of element `offset`.
    pub(crate) fn addr(&self, offset: usize) -> u64 {
        self.ptr + (offset * self.dtype.size_bytes()) as u64
    }
}

impl DeviceBuffer for CudaBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Drop for CudaBuffer {
    fn drop(&mut self) {
        if let Some(slice) = self.slice.take() {
            self.pool.give_back(slice, self.class, self.bytes);
        }
    }
}
