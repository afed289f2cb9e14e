//! Device buffers: a block from the pool, its dtype and length, and its device address
//! (kernels receive addresses plus element offsets of validated views).

use crate::backend::DriverPool;
use crate::driver::Driver;
use ds_core::{DType, DeviceBuffer};
use std::sync::Arc;

/// A buffer in device memory. Dropping it returns the memory to the backend's pool.
#[derive(Debug)]
pub struct GpuBuffer<D: Driver> {
    /// The block (none for an empty buffer), until drop.
    pub(crate) block: Option<D::Block>,
    /// The block's device address (0 for an empty buffer).
    pub(crate) ptr: u64,
    pub(crate) class: usize,
    pub(crate) bytes: usize,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) pool: Arc<DriverPool<D>>,
}

impl<D: Driver> GpuBuffer<D> {
    /// The device address of element `offset` (what collectives libraries are handed).
    pub fn addr(&self, offset: usize) -> u64 {
        self.ptr + (offset * self.dtype.size_bytes()) as u64
    }
}

impl<D: Driver> DeviceBuffer for GpuBuffer<D> {
    fn dtype(&self) -> DType {
        self.dtype
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl<D: Driver> Drop for GpuBuffer<D> {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.pool.give_back(block, self.class, self.bytes);
        }
    }
}
