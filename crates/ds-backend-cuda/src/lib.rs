//! ds-backend-cuda: ds's backend for NVIDIA GPUs, as the CUDA driver of the shared GPU layer.
//!
//! - [`CudaBackend`] is `ds_gpu::GpuBackend<CudaDriver>`: the shared layer (ds-core's pool,
//!   every kernel family, launches checked against the launch table) over [`CudaDriver`]: a
//!   context and one stream per backend, `ds-gpu`'s kernel sources compiled with NVRTC on
//!   first use for the device's architecture and cached per process, and GEMM through cuBLAS
//!   with f32 accumulation for every dtype. The ROCm backend runs the same layer over HIP.
//! - [`NcclComm`] implements [`ds_core::Collectives`] on device buffers with NCCL (the shared
//!   communicator of `ds-gpu` over NCCL's calls).
//!
//! Everything is loaded at run time through cudarc's dynamic loading, so building needs no CUDA
//! toolkit. cudarc panics when a library is missing; [`probe`] checks each library first and
//! turns absence into [`ds_core::Error::NoDevice`] naming the library and where it was looked
//! for, so a machine without a GPU gets a clear error and never a panic.

mod driver;
mod error;
mod kernels;
mod nccl;
pub mod probe;

pub use driver::CudaDriver;
pub use kernels::compile_check;
pub use nccl::RawComm;

/// A CUDA device: the shared GPU layer over the CUDA driver.
pub type CudaBackend = ds_gpu::GpuBackend<CudaDriver>;

/// One rank of an NCCL communicator over CUDA buffers (`ds_gpu::GpuComm` on NCCL).
pub type NcclComm = ds_gpu::GpuComm<CudaDriver>;

/// An NCCL unique id.
pub type NcclId = ds_gpu::CommId;

/// A buffer in a CUDA device's memory.
pub type CudaBuffer = ds_gpu::GpuBuffer<CudaDriver>;
