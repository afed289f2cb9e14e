//! ZeRO-Infinity's parameter offload at stage 3 (`offload_param: {"device": "cpu"}`): this
//! rank's slices of the gathered groups live in host memory, on the host backend. A group's
//! gather uploads this rank's slice into the device buffer of the whole bucket and all-gathers
//! it in place; the host step writes the updated slices straight into this partition, so
//! nothing goes back to the device after a step. The device then holds only the persistent
//! parameters and the groups gathered at the moment.

use super::NvmeSettings;
use super::swap::SwapFile;
use super::transfer::to_device;
use crate::host::{download_f32, upload_f32};
use ds_core::kernels::ViewMut;
use ds_core::{Backend, BufferExt, DType, Device, Error, Result};
use std::ops::Range;

/// This rank's host-resident parameter slices, whatever the host backend.
pub(crate) trait HostParams<B: Backend>: Send {
    /// Copies partition elements `local..local + dst.len()` into the device view `dst`.
    fn upload(&self, dev: &Device<B>, local: usize, dst: ViewMut<'_, B>) -> Result<()>;

    /// Writes training-dtype bytes (what the host step produced) from partition element
    /// `local`.
    fn write_bytes(&mut self, local: usize, bytes: &[u8]) -> Result<()>;

    /// Partition elements `local`, widened to f32 (checkpoints).
    fn read_f32(&self, local: Range<usize>) -> Result<Vec<f32>>;

    /// Writes f32 values, rounded to the training dtype, from partition element `local`.
    fn write_f32(&mut self, local: usize, values: &[f32]) -> Result<()>;
}

/// The partition on host backend `H`.
pub(crate) struct HostPartition<H: Backend> {
    host: Device<H>,
    part: H::Buffer,
    dtype: DType,
}

impl<H: Backend> HostPartition<H> {
    /// `len` zeroed elements of `dtype` on `host`.
    pub(crate) fn new(host: Device<H>, dtype: DType, len: usize) -> Result<Self> {
        let mut part = host.alloc(dtype, len)?;
        host.fill(part.all_mut(), 0.0)?;
        Ok(HostPartition { host, part, dtype })
    }

    fn range(&self, local: usize, len: usize) -> Result<Range<usize>> {
        let end = local
            .checked_add(len)
            .filter(|&e| e <= ds_core::DeviceBuffer::len(&self.part));
        end.map(|e| local..e).ok_or_else(|| {
            Error::invalid(
                "offload_param",
                "local",
                format!("internal: elements {local}+{len} lie outside this rank's partition"),
            )
        })
    }
}

impl<B: Backend, H: Backend> HostParams<B> for HostPartition<H> {
    fn upload(&self, dev: &Device<B>, local: usize, dst: ViewMut<'_, B>) -> Result<()> {
        let r = self.range(local, dst.len())?;
        to_device(&self.host, self.part.range(r), dev, dst)
    }

    fn write_bytes(&mut self, local: usize, bytes: &[u8]) -> Result<()> {
        let r = self.range(local, bytes.len() / self.dtype.size_bytes())?;
        self.host.upload_bytes(bytes, self.part.range_mut(r))
    }

    fn read_f32(&self, local: Range<usize>) -> Result<Vec<f32>> {
        let r = self.range(local.start, local.len())?;
        download_f32(&self.host, self.part.range(r))
    }

    fn write_f32(&mut self, local: usize, values: &[f32]) -> Result<()> {
        let r = self.range(local, values.len())?;
        upload_f32(&self.host, values, self.part.range_mut(r))
    }
}

/// The partition in an NVMe swap file (`offload_param: {"device": "nvme"}`), read into the
/// device through one host buffer of at most `buffer_size` elements (behind a lock: gathers
/// read through a shared reference).
pub(crate) struct SwapPartition<H: Backend> {
    host: Device<H>,
    file: SwapFile,
    staging: std::sync::Mutex<H::Buffer>,
    chunk: usize,
    dtype: DType,
    len: usize,
}

impl<H: Backend> SwapPartition<H> {
    /// A swap file for `len` elements of `dtype` (zeros) under `settings.path`, for `rank`.
    pub(crate) fn new(
        host: Device<H>,
        settings: &NvmeSettings,
        rank: usize,
        dtype: DType,
        len: usize,
    ) -> Result<Self> {
        let size = dtype.size_bytes();
        let file = SwapFile::create(
            &settings.path,
            &format!("rank{rank}-params.swap"),
            (len * size) as u64,
            settings.io,
        )?;
        let chunk = settings.buffer_size.clamp(1, len.max(1));
        let mut staging = host.alloc(dtype, chunk)?;
        if host.backend().host_bytes_mut(staging.all_mut()).is_none() {
            return Err(Error::invalid(
                "offload_param",
                "device",
                "NVMe offload needs a host backend whose buffers are host memory (the CPU backend's are)",
            ));
        }
        Ok(SwapPartition {
            host,
            file,
            staging: std::sync::Mutex::new(staging),
            chunk,
            dtype,
            len,
        })
    }

    fn check(&self, local: usize, n: usize) -> Result<()> {
        if local.checked_add(n).is_none_or(|e| e > self.len) {
            return Err(Error::invalid(
                "offload_param",
                "local",
                format!("internal: elements {local}+{n} lie outside this rank's partition"),
            ));
        }
        Ok(())
    }

    fn offset(&self, local: usize) -> u64 {
        (local * self.dtype.size_bytes()) as u64
    }
}

impl<B: Backend, H: Backend> HostParams<B> for SwapPartition<H> {
    fn upload(&self, dev: &Device<B>, local: usize, mut dst: ViewMut<'_, B>) -> Result<()> {
        let n = dst.len();
        self.check(local, n)?;
        let mut staging = self.staging.lock().map_err(|_| {
            Error::invalid("offload_param", "staging", "a swap read panicked earlier")
        })?;
        for start in (0..n).step_by(self.chunk) {
            let m = self.chunk.min(n - start);
            let bytes = self
                .host
                .backend()
                .host_bytes_mut(staging.range_mut(0..m))
                .ok_or_else(|| Error::invalid("offload_param", "staging", "not host memory"))?;
            self.file.read_at(self.offset(local + start), bytes)?;
            to_device(
                &self.host,
                staging.range(0..m),
                dev,
                dst.sub(start..start + m),
            )?;
        }
        Ok(())
    }

    fn write_bytes(&mut self, local: usize, bytes: &[u8]) -> Result<()> {
        self.check(local, bytes.len() / self.dtype.size_bytes())?;
        self.file.write_at(self.offset(local), bytes)
    }

    fn read_f32(&self, local: Range<usize>) -> Result<Vec<f32>> {
        self.check(local.start, local.len())?;
        let mut bytes = vec![0u8; local.len() * self.dtype.size_bytes()];
        self.file.read_at(self.offset(local.start), &mut bytes)?;
        crate::host::bytes_to_f32(self.dtype, &bytes)
    }

    fn write_f32(&mut self, local: usize, values: &[f32]) -> Result<()> {
        self.check(local, values.len())?;
        let bytes = crate::host::f32_to_bytes(self.dtype, values)?;
        self.file.write_at(self.offset(local), &bytes)
    }
}
