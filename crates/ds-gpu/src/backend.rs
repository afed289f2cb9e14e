//! The GPU backend, written once over a [`Driver`]: the pool, memory, launches and geometry.

use crate::buffer::GpuBuffer;
use crate::driver::{Driver, Grid};
use crate::launch::{self, Arg};
use ds_core::kernels::{Memory, Validated, View, ViewMut};
use ds_core::pool::{Pool, RawFailure, RawMemory, device_class};
use ds_core::{Collectives, DType, DeviceInfo, Error, MemoryStats, Result};
use std::sync::Arc;

/// The step of small size classes (the runtimes' own allocation granularity).
const SMALL: usize = 512;

/// A driver's memory as the shared pool's raw layer.
#[derive(Debug)]
pub struct DriverMemory<D: Driver>(Arc<D>);

impl<D: Driver> RawMemory for DriverMemory<D> {
    type Block = D::Block;

    fn device(&self) -> &str {
        &self.0.info().name
    }

    fn class(&self, bytes: usize) -> usize {
        device_class(bytes, SMALL)
    }

    fn alloc(&self, class: usize) -> std::result::Result<D::Block, RawFailure> {
        self.0.alloc(class)
    }

    fn available(&self) -> u64 {
        self.0.available()
    }

    fn free(&self, block: D::Block) {
        drop(block);
    }
}

/// The pool of one GPU backend.
pub type DriverPool<D> = Pool<DriverMemory<D>>;

/// A GPU device through driver `D`. Clones share the driver (context, stream, kernels, BLAS
/// handle) and the pool.
#[derive(Debug)]
pub struct GpuBackend<D: Driver> {
    driver: Arc<D>,
    pool: Arc<DriverPool<D>>,
}

impl<D: Driver> Clone for GpuBackend<D> {
    fn clone(&self) -> Self {
        GpuBackend {
            driver: Arc::clone(&self.driver),
            pool: Arc::clone(&self.pool),
        }
    }
}

impl<D: Driver> GpuBackend<D> {
    /// Opens device `ordinal` (counted among the devices the vendor's visibility variable
    /// leaves visible) and compiles ds's kernels for it (once per process).
    ///
    /// # Errors
    /// The driver's: `Error::NoDevice` when a library or the device is missing.
    pub fn new(ordinal: usize) -> Result<Self> {
        Ok(Self::from_driver(D::open(ordinal)?))
    }

    /// The device of the process that is `local_rank` on its machine (one GPU per rank under a
    /// launcher): that ordinal among the visible devices, modulo their number, so ranks that
    /// each see only their own GPU all open device 0.
    ///
    /// # Errors
    /// As [`GpuBackend::new`].
    pub fn for_local_rank(local_rank: usize) -> Result<Self> {
        let count = D::device_count()?.max(1);
        Self::new(local_rank % count)
    }

    /// A backend over an opened driver. The pool has no cap of its own: it releases its cache
    /// and retries before reporting out of memory.
    pub fn from_driver(driver: D) -> Self {
        let driver = Arc::new(driver);
        let pool = Arc::new(Pool::new(DriverMemory(Arc::clone(&driver)), u64::MAX));
        GpuBackend { driver, pool }
    }

    /// The driver, for vendor-specific calls.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The device's name as the errors use it.
    pub fn device(&self) -> &str {
        &self.driver.info().name
    }

    /// Frees the memory the pool keeps cached for reuse.
    pub fn release_cached_memory(&self) {
        self.pool.release_cache();
    }

    /// Waits for queued work.
    ///
    /// # Errors
    /// The driver's.
    pub fn wait(&self) -> Result<()> {
        self.driver.sync()
    }

    /// A one-dimensional launch over `n` items: enough blocks to fill the device a few times
    /// over, grid-stride loops doing the rest.
    pub(crate) fn grid(&self, n: usize) -> Grid {
        let want = n.div_ceil(crate::THREADS as usize).max(1);
        let cap = (self.driver.compute_units().max(1) * 16) as usize;
        Grid {
            blocks: want.min(cap) as u32,
            threads: crate::THREADS,
            shared_bytes: 0,
        }
    }

    /// One block per row.
    pub(crate) fn rows(&self, rows: usize, shared_bytes: u32) -> Result<Grid> {
        let blocks = u32::try_from(rows).map_err(|_| {
            Error::invalid(D::BACKEND, "rows", format!("{rows} rows exceed one launch"))
        })?;
        Ok(Grid {
            blocks,
            threads: crate::THREADS,
            shared_bytes,
        })
    }

    /// Launches kernel `name` with `args`, checked against its entry in the launch table (a
    /// mismatch is an error, never a launch); pointers must address memory valid for what the
    /// kernel touches.
    pub(crate) fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        launch::check(name, args).map_err(|message| Error::Device {
            device: self.device().to_string(),
            message,
        })?;
        if grid.blocks == 0 {
            return Ok(());
        }
        // SAFETY: the arguments match the kernel's parameters in number and type (checked
        // above against the launch table, which a test holds to the sources), and the device
        // addresses are of views ds-core validated against their buffers, or scratch buffers
        // sized for the kernel.
        unsafe { self.driver.launch(name, grid, args) }
    }
}

/// The byte range of a view inside its buffer's block.
fn byte_offset<D: Driver>(buf: &GpuBuffer<D>, offset: usize) -> usize {
    offset * buf.dtype.size_bytes()
}

impl<D: Driver> Memory for GpuBackend<D> {
    type Buffer = GpuBuffer<D>;

    fn info(&self) -> &DeviceInfo {
        self.driver.info()
    }

    fn alloc(&self, dtype: DType, len: usize, _: Validated) -> Result<GpuBuffer<D>> {
        let bytes = len * dtype.size_bytes();
        // Zero bytes need no block (a null address the kernels never dereference).
        let (block, class, ptr) = if bytes == 0 {
            (None, 0, 0)
        } else {
            let mut taken = self.pool.take(bytes)?;
            // Fresh or reused, the whole block is zeroed before any view of it exists.
            if let Err(e) = self.driver.zero(&mut taken.block) {
                self.pool.give_back(taken.block, taken.class, bytes);
                return Err(e);
            }
            let ptr = self.driver.addr(&taken.block);
            (Some(taken.block), taken.class, ptr)
        };
        Ok(GpuBuffer {
            block,
            ptr,
            class,
            bytes,
            dtype,
            len,
            pool: Arc::clone(&self.pool),
        })
    }

    fn upload(&self, src: &[u8], dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let offset = dst.offset();
        let buf = dst.into_buffer();
        let at = byte_offset(buf, offset);
        match buf.block.as_mut() {
            Some(block) => self.driver.upload(src, block, at),
            None => Ok(()),
        }
    }

    fn download(&self, src: View<'_, Self>, dst: &mut [u8], _: Validated) -> Result<()> {
        let buf = src.buffer();
        match buf.block.as_ref() {
            Some(block) => self
                .driver
                .download(block, byte_offset(buf, src.offset()), dst),
            None => Ok(()),
        }
    }

    fn copy(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let sbuf = src.buffer();
        let bytes = src.len() * sbuf.dtype.size_bytes();
        let (Some(sblock), soff) = (sbuf.block.as_ref(), byte_offset(sbuf, src.offset())) else {
            return Ok(());
        };
        let doffset = dst.offset();
        let dbuf = dst.into_buffer();
        let doff = byte_offset(dbuf, doffset);
        match dbuf.block.as_mut() {
            Some(dblock) => self.driver.copy(sblock, soff, dblock, doff, bytes),
            None => Ok(()),
        }
    }

    fn sync(&self) -> Result<()> {
        self.driver.sync()
    }

    fn memory_stats(&self) -> MemoryStats {
        self.pool.stats()
    }

    fn reset_peak_memory(&self) {
        self.pool.reset_peak();
    }

    fn native_collectives(
        &self,
        rank: usize,
        world: usize,
        share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn Collectives<Self>>>> {
        D::native_collectives(self, rank, world, share)
    }
}
