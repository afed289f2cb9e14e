//! ds-gpu: what ds's GPU backends share, so the CUDA and ROCm backends run one code path.
//!
//! Not a backend of its own (backends never import each other; both import this): it holds
//! [`GpuBackend`], ds's GPU backend written once over a small [`Driver`] interface (memory,
//! one stream, kernel launch, strided-batched GEMM), with ds-core's shared pool, every kernel
//! family and the launch geometry; the kernel sources in the common CUDA/HIP dialect (compiled
//! at run time by NVRTC or hiprtc); and the launch table stating every kernel's typed
//! arguments once. A vendor's crate implements [`Driver`] and names `GpuBackend<ItsDriver>`.

mod backend;
mod buffer;
pub mod comm;
pub mod driver;
pub mod launch;
mod ops;
mod sources;

pub use backend::{DriverMemory, DriverPool, GpuBackend};
pub use buffer::GpuBuffer;
pub use comm::{CollectiveDriver, CommId, GpuComm};
pub use driver::{Driver, Gemm, Grid};
pub use launch::{Arg, ArgKind, check, kernel_names};
pub use sources::{SOURCES, program};

/// Threads per block of every kernel: a power of two, as the shared-memory block reductions
/// need, and a whole number of waves on both NVIDIA (32 lanes) and AMD (32 or 64 lanes).
pub const THREADS: u32 = 256;
