//! Memory: allocation from the pool, uploads, downloads, copies, synchronisation.
//!
//! wgpu copies need 4-byte aligned offsets and sizes. Aligned transfers use the queue and
//! the command encoder directly; a view of 16-bit or byte elements that starts or ends inside
//! a word is moved by a small kernel that writes only its own elements.

use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param};
use ds_core::kernels::{Memory, Validated};
use ds_core::{DType, DeviceInfo, Error, MemoryStats, Result, Slice, SliceMut};
use std::sync::mpsc;

/// Copies raw elements: `dst[i] = src[i]`.
const COPY: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    str_dst(gi, ldr_src(gi));
}
";

/// Writes one raw element value everywhere.
const FILL: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    str_dst(gi, p_bits());
}
";

impl WgpuBackend {
    /// A buffer of `len` elements from the pool, zero-filled.
    pub(crate) fn alloc_buffer(&self, dtype: DType, len: usize) -> Result<WgpuBuffer> {
        let bytes = len
            .checked_mul(dtype.size_bytes())
            .ok_or_else(|| Error::invalid("alloc", "len", format!("{len} elements overflow")))?;
        let pool = &self.inner.pool;
        if let Some(cap) = self.inner.capacity {
            let in_use = pool.stats().in_use;
            if in_use.saturating_add(bytes as u64) > cap {
                return Err(Error::OutOfMemory {
                    device: self.inner.info.name.clone(),
                    requested: bytes as u64,
                    available: cap.saturating_sub(in_use),
                });
            }
        }
        let taken = pool.take(bytes)?;
        if taken.reused {
            let mut enc = self
                .inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            enc.clear_buffer(&taken.block, 0, None);
            self.inner.queue.submit([enc.finish()]);
        }
        Ok(WgpuBuffer {
            raw: Some(taken.block),
            class: taken.class,
            dtype,
            len,
            pool: pool.clone(),
        })
    }

    /// Copies raw elements between views of equal length and element size with a kernel.
    fn copy_kernel(&self, src: Bind<'_>, dst: Bind<'_>, n: usize) -> Result<()> {
        self.run(Launch {
            name: "copy",
            body: COPY,
            binds: vec![src, dst],
            params: vec![],
            grid: Grid::Each(n),
        })
    }

    /// Writes `bits` (one element's raw value) into every element of `dst`.
    pub(crate) fn fill_bits(&self, dst: &SliceMut<'_, WgpuBuffer>, bits: u32) -> Result<()> {
        let store = Self::raw_store(dst.dtype());
        self.run(Launch {
            name: "fill",
            body: FILL,
            binds: vec![Bind::write("dst", dst, store)],
            params: vec![("bits", Param::U(bits))],
            grid: Grid::Each(dst.len()),
        })
    }

    fn wait(&self) -> Result<()> {
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.device_error(format!("waiting for the queue: {e}")))?;
        self.check()
    }
}

/// Byte range of a view, and the 4-byte aligned range that covers it.
fn span(start: usize, len: usize, dtype: DType) -> (u64, u64, u64, u64) {
    let es = dtype.size_bytes() as u64;
    let b0 = start as u64 * es;
    let b1 = b0 + len as u64 * es;
    (b0, b1, b0 / 4 * 4, b1.div_ceil(4) * 4)
}

impl Memory for WgpuBackend {
    type Buffer = WgpuBuffer;

    fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    fn alloc(&self, dtype: DType, len: usize, _: Validated) -> Result<WgpuBuffer> {
        self.alloc_buffer(dtype, len)
    }

    fn upload(&self, src: &[u8], dst: SliceMut<'_, WgpuBuffer>, _: Validated) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let (b0, b1, a0, a1) = span(dst.offset(), dst.len(), dst.dtype());
        if a0 == b0 && a1 == b1 {
            self.inner.queue.write_buffer(dst.buffer().raw(), b0, src);
            return self.check();
        }
        // A view that starts or ends inside a word: stage the bytes, then copy the elements.
        let mut padded = src.to_vec();
        padded.resize(src.len().div_ceil(4) * 4, 0);
        let staged = self.alloc_buffer(dst.dtype(), dst.len())?;
        self.inner.queue.write_buffer(staged.raw(), 0, &padded);
        let store = Self::raw_store(dst.dtype());
        let n = dst.len();
        let whole = Slice::new(&staged, 0..n);
        self.copy_kernel(
            Bind::read("src", &whole, store),
            Bind::write("dst", &dst, store),
            n,
        )
    }

    fn download(&self, src: Slice<'_, WgpuBuffer>, dst: &mut [u8], _: Validated) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        let (b0, b1, a0, a1) = span(src.offset(), src.len(), src.dtype());
        let size = a1 - a0;
        let staging = self.inner.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ds download"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        enc.copy_buffer_to_buffer(src.buffer().raw(), a0, &staging, 0, size);
        self.inner.queue.submit([enc.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| self.device_error("the download's mapping was dropped"))?
            .map_err(|e| self.device_error(format!("mapping a download: {e}")))?;
        {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| self.device_error(format!("reading a download: {e}")))?;
            let from = (b0 - a0) as usize;
            dst.copy_from_slice(&view[from..from + (b1 - b0) as usize]);
        }
        staging.unmap();
        Ok(())
    }

    fn copy(
        &self,
        src: Slice<'_, WgpuBuffer>,
        dst: SliceMut<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        let (s0, s1, sa0, sa1) = span(src.offset(), src.len(), src.dtype());
        let (d0, _, da0, _) = span(dst.offset(), dst.len(), dst.dtype());
        if s0 == sa0 && s1 == sa1 && d0 == da0 {
            let mut enc = self
                .inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            enc.copy_buffer_to_buffer(src.buffer().raw(), s0, dst.buffer().raw(), d0, s1 - s0);
            self.inner.queue.submit([enc.finish()]);
            return self.check();
        }
        let store = Self::raw_store(dst.dtype());
        let n = dst.len();
        self.copy_kernel(
            Bind::read("src", &src, store),
            Bind::write("dst", &dst, store),
            n,
        )
    }

    fn sync(&self) -> Result<()> {
        self.wait()
    }

    fn memory_stats(&self) -> MemoryStats {
        self.inner.pool.stats()
    }

    fn reset_peak_memory(&self) {
        self.inner.pool.reset_peak();
    }
}
