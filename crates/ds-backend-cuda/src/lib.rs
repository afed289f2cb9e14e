//! ds-backend-cuda: ds's backend for NVIDIA GPUs.
//!
//! - [`CudaBackend`] implements [`ds_core::Backend`]: a context and one stream per backend, a
//!   caching memory pool with statistics, kernels written in CUDA C (`ds-gpu`'s sources,
//!   shared with the ROCm backend) compiled with NVRTC on first use for the
//!   device's architecture and cached per process, and GEMM through cuBLAS with f32
//!   accumulation for every dtype.
//! - [`NcclComm`] implements [`ds_core::Collectives`] on device buffers with NCCL.
//!
//! Everything is loaded at run time through cudarc's dynamic loading, so building needs no CUDA
//! toolkit. cudarc panics when a library is missing; [`probe`] checks each library first and
//! turns absence into [`ds_core::Error::NoDevice`] naming the library and where it was looked
//! for, so a machine without a GPU gets a clear error and never a panic.

mod buffer;
mod context;
mod error;
mod kernels;
mod nccl;
mod ops;
mod pool;
pub mod probe;

pub use buffer::CudaBuffer;
pub use context::CudaBackend;
pub use kernels::compile_check;
pub use nccl::{NcclComm, NcclId};
