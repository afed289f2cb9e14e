//! The CUDA backend: one device, one stream, a memory pool, the compiled kernels and a cuBLAS
//! handle, shared by clones.

use crate::buffer::CudaBuffer;
use crate::kernels::Kernels;
use crate::pool::{CACHE_CAP_BYTES, CudaMemory, CudaPool};
use crate::{error, probe};
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaStream, DevicePtr};
use ds_core::kernels::{Memory, Validated, View, ViewMut};
use ds_core::{Capabilities, DType, DeviceInfo, Error, MemoryStats, Result};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) pool: Arc<CudaPool>,
    pub(crate) kernels: Arc<Kernels>,
    pub(crate) blas: Mutex<CudaBlas>,
    pub(crate) info: DeviceInfo,
    pub(crate) sm_count: u32,
}

/// A CUDA device. Clones share the context, stream, pool and kernels.
#[derive(Debug, Clone)]
pub struct CudaBackend {
    pub(crate) inner: Arc<Inner>,
}

impl CudaBackend {
    /// Opens device `ordinal` (counted among the devices `CUDA_VISIBLE_DEVICES` leaves
    /// visible) and compiles ds's kernels for its architecture (once per process).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when a library is missing, no device is visible or the ordinal is out
    /// of range; [`Error::Device`] when the driver, NVRTC or cuBLAS fail.
    pub fn new(ordinal: usize) -> Result<Self> {
        let count = probe::check()?;
        if ordinal >= count {
            return Err(Error::NoDevice {
                backend: "cuda",
                reason: format!(
                    "device {ordinal} asked for, but only {count} CUDA device(s) are visible"
                ),
            });
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| error::driver("cuda", "opening the device", e))?;
        // One stream orders everything this backend does, so cudarc's per-buffer event tracking
        // would only add work.
        // SAFETY: no buffers exist yet on this context's streams made by us, and all work of this
        // backend goes to the single stream created below.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx
            .name()
            .map_err(|e| error::driver("cuda", "reading the device name", e))?;
        let device = format!("cuda:{ordinal} ({name})");
        let stream = ctx
            .new_stream()
            .map_err(|e| error::driver(&device, "creating a stream", e))?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| error::driver(&device, "reading the multiprocessor count", e))?;
        let memory_total = ctx
            .total_mem()
            .map_err(|e| error::driver(&device, "reading the memory size", e))?
            as u64;
        let kernels = Kernels::for_context(&ctx, &device)?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| error::cublas(&device, "creating a handle", e))?;
        let info = DeviceInfo {
            backend: "cuda",
            name,
            vendor: "NVIDIA".into(),
            memory_total,
            compute_units: sm_count.max(0) as usize,
            max_buffer_elements: None,
            capabilities: Capabilities::all_floats(),
        };
        let pool = Arc::new(CudaPool::new(
            CudaMemory {
                stream: stream.clone(),
                device: device.clone(),
            },
            CACHE_CAP_BYTES,
        ));
        Ok(CudaBackend {
            inner: Arc::new(Inner {
                ctx,
                stream,
                pool,
                kernels,
                blas: Mutex::new(blas),
                info,
                sm_count: sm_count.max(1) as u32,
            }),
        })
    }

    /// The device's name as the errors use it.
    pub(crate) fn device(&self) -> &str {
        &self.inner.info.name
    }

    /// Frees the memory the pool keeps cached for reuse.
    ///
    /// # Errors
    /// When the pool's lock was poisoned.
    pub fn release_cached_memory(&self) -> Result<()> {
        self.inner.pool.release_cache();
        Ok(())
    }

    /// Compute capability (major, minor).
    ///
    /// # Errors
    /// Driver errors.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.inner
            .ctx
            .compute_capability()
            .map_err(|e| error::driver(self.device(), "reading the compute capability", e))
    }

    /// Waits for queued work (used by benches and collectives).
    pub(crate) fn wait(&self) -> Result<()> {
        self.inner
            .stream
            .synchronize()
            .map_err(|e| error::driver(self.device(), "synchronizing", e))
    }
}

/// The byte range of a view inside its buffer's block.
fn byte_range(buf: &CudaBuffer, offset: usize, len: usize) -> std::ops::Range<usize> {
    let size = buf.dtype.size_bytes();
    offset * size..(offset + len) * size
}

impl Memory for CudaBackend {
    type Buffer = CudaBuffer;

    fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    fn alloc(&self, dtype: DType, len: usize, _: Validated) -> Result<CudaBuffer> {
        let bytes = len * dtype.size_bytes();
        // Zero bytes need no block (a null address the kernels never dereference).
        let (mut slice, class) = if bytes == 0 {
            (None, 0)
        } else {
            let taken = self.inner.pool.take(bytes)?;
            (Some(taken.block), taken.class)
        };
        let mut ptr = 0;
        if let Some(s) = slice.as_mut() {
            self.inner
                .stream
                .memset_zeros(s)
                .map_err(|e| error::driver(self.device(), "zero-filling a new buffer", e))?;
            let (p, _guard) = s.device_ptr(&self.inner.stream);
            ptr = p;
        }
        Ok(CudaBuffer {
            slice,
            ptr,
            class,
            bytes,
            dtype,
            len,
            pool: self.inner.pool.clone(),
        })
    }

    fn upload(&self, src: &[u8], dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let (offset, len) = (dst.offset(), dst.len());
        let buf = dst.into_buffer();
        let range = byte_range(buf, offset, len);
        let Some(slice) = buf.slice.as_mut() else {
            return Ok(());
        };
        let mut view = slice.slice_mut(range);
        self.inner
            .stream
            .memcpy_htod(src, &mut view)
            .map_err(|e| error::driver(&self.inner.info.name, "copying to the device", e))
    }

    fn download(&self, src: View<'_, Self>, dst: &mut [u8], _: Validated) -> Result<()> {
        let buf = src.buffer();
        let Some(slice) = buf.slice.as_ref() else {
            return Ok(());
        };
        let view = slice.slice(byte_range(buf, src.offset(), src.len()));
        self.inner
            .stream
            .memcpy_dtoh(&view, dst)
            .map_err(|e| error::driver(self.device(), "copying from the device", e))?;
        self.wait()
    }

    fn copy(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let sbuf = src.buffer();
        let (Some(sslice), doff, dlen) = (sbuf.slice.as_ref(), dst.offset(), dst.len()) else {
            return Ok(());
        };
        let sview = sslice.slice(byte_range(sbuf, src.offset(), src.len()));
        let dbuf = dst.into_buffer();
        let range = byte_range(dbuf, doff, dlen);
        let Some(dslice) = dbuf.slice.as_mut() else {
            return Ok(());
        };
        let mut dview = dslice.slice_mut(range);
        self.inner
            .stream
            .memcpy_dtod(&sview, &mut dview)
            .map_err(|e| error::driver(&self.inner.info.name, "device-to-device copy", e))
    }

    fn sync(&self) -> Result<()> {
        self.wait()?;
        self.inner
            .ctx
            .check_err()
            .map_err(|e| error::driver(self.device(), "an earlier asynchronous operation", e))
    }

    fn memory_stats(&self) -> MemoryStats {
        self.inner.pool.stats()
    }

    fn reset_peak_memory(&self) {
        self.inner.pool.reset_peak();
    }
}
