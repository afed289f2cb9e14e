//! Device buffers and the raw wgpu memory the shared pool caches.
//!
//! Creating a wgpu buffer allocates and zero-fills driver memory; a training step allocates and
//! frees the same sizes every time. ds-core's [`Pool`] keeps freed buffers by size class (256
//! bytes below 1 MiB, 2 MiB above) up to [`CACHE_CAP_BYTES`]; a reused one is cleared on the
//! device before it is handed out again, so `alloc` still returns zeros.

use ds_core::pool::{Pool, RawFailure, RawMemory, device_class};
use ds_core::{DType, DeviceBuffer};
use std::sync::{Arc, Mutex};

/// The most bytes the pool keeps in freed buffers before it lets the driver have them back.
pub(crate) const CACHE_CAP_BYTES: u64 = 1 << 30;

/// The smallest buffer (a binding needs bytes) and the step of small size classes.
const SMALL: usize = 256;

const USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// One device's raw memory: wgpu buffers, created and destroyed.
#[derive(Debug)]
pub(crate) struct WgpuMemory {
    pub(crate) device: wgpu::Device,
    pub(crate) name: String,
    /// The largest buffer the device allows.
    pub(crate) max_buffer: u64,
    /// The device's error slot (validation and out-of-memory errors land there).
    pub(crate) error: Arc<Mutex<Option<String>>>,
}

impl RawMemory for WgpuMemory {
    type Block = wgpu::Buffer;

    fn device(&self) -> &str {
        &self.name
    }

    fn class(&self, bytes: usize) -> usize {
        device_class(bytes, SMALL)
    }

    fn alloc(&self, class: usize) -> Result<wgpu::Buffer, RawFailure> {
        if class as u64 > self.max_buffer {
            return Err(RawFailure::OutOfMemory);
        }
        let raw = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: class as u64,
            usage: USAGE,
            mapped_at_creation: false,
        });
        let refused = self
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some();
        if refused {
            return Err(RawFailure::OutOfMemory);
        }
        Ok(raw)
    }

    fn available(&self) -> u64 {
        // wgpu has no free-memory query; the largest buffer is the one limit it states.
        self.max_buffer
    }

    fn free(&self, block: wgpu::Buffer) {
        block.destroy();
    }
}

/// The pool of one wgpu device.
pub(crate) type WgpuPool = Pool<WgpuMemory>;

/// A buffer in device memory. Dropping it returns the memory to the backend's pool.
#[derive(Debug)]
pub struct WgpuBuffer {
    pub(crate) raw: Option<wgpu::Buffer>,
    pub(crate) class: usize,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
    pub(crate) pool: Arc<WgpuPool>,
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
            let bytes = self.bytes() as usize;
            self.pool.give_back(raw, self.class, bytes);
        }
    }
}
