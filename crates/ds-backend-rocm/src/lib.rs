//! ds-backend-rocm: ds's backend for AMD GPUs, as the HIP driver of the shared GPU layer.
//!
//! - [`RocmBackend`] is `ds_gpu::GpuBackend<HipDriver>`: the layer the CUDA backend runs
//!   (ds-core's pool, every kernel family, launches checked against the launch table, GEMM's
//!   mapping) over [`HipDriver`]: HIP's runtime (memory, one stream, ds's kernels compiled by
//!   hiprtc for the device's ISA and loaded once per process) and rocBLAS
//!   (`gemm_strided_batched_ex`, f32 accumulation).
//! - Finding ROCm ([`Search`]: `$DS_ROCM_LIBS`, `$ROCM_PATH`, `/opt/rocm`, the system's
//!   search), the runtime and its devices ([`probe`]: name, ISA, wave size, memory, honouring
//!   `HIP_VISIBLE_DEVICES` / `ROCR_VISIBLE_DEVICES`), and compiling ds's kernels for an ISA
//!   checked against comgr's list ([`hiprtc`]).
//!
//! Building needs no ROCm; a machine without it gets [`ds_core::Error::NoDevice`] naming every
//! path tried, never a panic. [`RcclComm`] runs ds's collectives on RCCL (the communicator
//! shared with NCCL). None of the device code has run on an AMD GPU (none was available).

mod calls;
mod driver;
mod hip;
pub mod hiprtc;
mod loader;
pub mod probe;
pub mod rccl;

pub use driver::{HipBlock, HipDriver};
pub use hip::HipDevice;
pub use loader::{LIBS_ENV, Search};

/// An AMD device: the shared GPU layer over the HIP driver.
pub type RocmBackend = ds_gpu::GpuBackend<HipDriver>;

/// One rank of an RCCL communicator over ROCm buffers (`ds_gpu::GpuComm` on RCCL).
pub type RcclComm = ds_gpu::GpuComm<HipDriver>;

/// A buffer in an AMD device's memory.
pub type RocmBuffer = ds_gpu::GpuBuffer<HipDriver>;
