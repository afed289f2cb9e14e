//! The driver interface: what a GPU vendor's runtime gives the shared layer.
//!
//! Everything above it (the pool, the kernel families, launch geometry, GEMM's row-major
//! mapping) is written once in this crate; a driver (CUDA through cudarc, HIP through its
//! runtime-loaded libraries) maps these calls to its API and nothing else.

use crate::backend::GpuBackend;
use crate::launch::Arg;
use ds_core::pool::RawFailure;
use ds_core::{Collectives, DType, DeviceInfo, Result};

/// A launch's geometry: one-dimensional grids of one-dimensional blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Blocks in the grid (0 launches nothing).
    pub blocks: u32,
    /// Threads per block.
    pub threads: u32,
    /// Bytes of dynamic shared memory per block.
    pub shared_bytes: u32,
}

/// One strided-batched GEMM in BLAS's column-major form, f32 accumulation:
/// `C_i = alpha op(A_i) op(B_i) + beta C_i` for `i < batch`, every operand of `dtype`.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    /// Whether A is transposed.
    pub trans_a: bool,
    /// Whether B is transposed.
    pub trans_b: bool,
    /// Rows of op(A) and C.
    pub m: i32,
    /// Columns of op(B) and C.
    pub n: i32,
    /// The shared dimension.
    pub k: i32,
    /// Scale of the product.
    pub alpha: f32,
    /// Device address of A.
    pub a: u64,
    /// A's leading dimension.
    pub lda: i32,
    /// Elements between A's batch entries.
    pub stride_a: i64,
    /// Device address of B.
    pub b: u64,
    /// B's leading dimension.
    pub ldb: i32,
    /// Elements between B's batch entries.
    pub stride_b: i64,
    /// Scale of C's old value.
    pub beta: f32,
    /// Device address of C.
    pub c: u64,
    /// C's leading dimension.
    pub ldc: i32,
    /// Elements between C's batch entries.
    pub stride_c: i64,
    /// Batch entries.
    pub batch: i32,
    /// The operands' storage type (f32, f16 or bf16).
    pub dtype: DType,
}

/// A vendor's GPU runtime, as the shared layer uses it. One driver value is one device with
/// one in-order stream: every call is ordered after the ones before it.
pub trait Driver: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// A device allocation.
    type Block: std::fmt::Debug + Send + Sync;

    /// The backend's name in errors and reports (`"cuda"`, `"rocm"`).
    const BACKEND: &'static str;

    /// Opens device `ordinal` (among the visible ones) and compiles the kernels for it.
    ///
    /// # Errors
    /// `Error::NoDevice` when the runtime or the device is missing; driver errors.
    fn open(ordinal: usize) -> Result<Self>;

    /// How many devices are visible (after the vendor's visibility variables).
    ///
    /// # Errors
    /// `Error::NoDevice` when the runtime is missing.
    fn device_count() -> Result<usize>;

    /// The device's description (its capabilities included).
    fn info(&self) -> &DeviceInfo;

    /// Multiprocessors (NVIDIA) or compute units (AMD): the launch grids fill them.
    fn compute_units(&self) -> u32;

    /// A fresh allocation of `bytes` (uninitialised).
    ///
    /// # Errors
    /// [`RawFailure::OutOfMemory`] by the runtime's error code; other errors as they are.
    fn alloc(&self, bytes: usize) -> std::result::Result<Self::Block, RawFailure>;

    /// Free device memory, for the out-of-memory error.
    fn available(&self) -> u64;

    /// The device address of a block's first byte.
    fn addr(&self, block: &Self::Block) -> u64;

    /// Zero-fills a whole block.
    ///
    /// # Errors
    /// Driver errors.
    fn zero(&self, block: &mut Self::Block) -> Result<()>;

    /// Copies host bytes into `dst` at `offset` bytes.
    ///
    /// # Errors
    /// Driver errors.
    fn upload(&self, src: &[u8], dst: &mut Self::Block, offset: usize) -> Result<()>;

    /// Copies `dst.len()` bytes from `src` at `offset` into host memory, waiting for them.
    ///
    /// # Errors
    /// Driver errors.
    fn download(&self, src: &Self::Block, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Copies `bytes` bytes between blocks, from `src` at `src_offset` to `dst` at `dst_offset`.
    ///
    /// # Errors
    /// Driver errors.
    fn copy(
        &self,
        src: &Self::Block,
        src_offset: usize,
        dst: &mut Self::Block,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()>;

    /// Waits for all queued work and reports any asynchronous error it raised.
    ///
    /// # Errors
    /// The first error of queued work.
    fn sync(&self) -> Result<()>;

    /// Queues kernel `name` (one of [`crate::kernel_names`]) over `grid`.
    ///
    /// # Safety
    /// `args` match the kernel's parameters (the shared layer checks them against the launch
    /// table first) and every address points at device memory valid for what the kernel
    /// touches.
    ///
    /// # Errors
    /// Driver errors (a missing kernel, a launch failure).
    unsafe fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()>;

    /// The device's own collectives, bootstrapped by `share` (see
    /// `ds_core::Memory::native_collectives`); `None` when the driver has none. Drivers with
    /// NCCL-shaped calls answer with [`crate::comm::bootstrap`].
    fn native_collectives(
        _backend: &GpuBackend<Self>,
        _rank: usize,
        _world: usize,
        _share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn Collectives<GpuBackend<Self>>>>> {
        None
    }

    /// Queues one strided-batched GEMM (cuBLAS / rocBLAS `gemm_strided_batched_ex`).
    ///
    /// # Safety
    /// The addresses hold every element the batch reaches at the given leading dimensions and
    /// strides, and C's batch entries do not overlap.
    ///
    /// # Errors
    /// The BLAS library's errors.
    unsafe fn gemm(&self, g: &Gemm) -> Result<()>;
}
