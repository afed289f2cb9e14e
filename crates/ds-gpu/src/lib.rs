//! ds-gpu: what ds's GPU backends share, so the CUDA and ROCm backends run one code path.
//!
//! Not a backend (backends never import each other; both import this): it holds the kernel
//! sources written in the common CUDA/HIP dialect (compiled at run time by NVRTC or hiprtc),
//! the launch table stating every kernel's typed arguments once, and the launch geometry every
//! kernel assumes.

pub mod launch;
mod sources;

pub use launch::{Arg, ArgKind, check, kernel_names};
pub use sources::{SOURCES, program};

/// Threads per block of every kernel: a power of two, as the shared-memory block reductions
/// need, and a whole number of waves on both NVIDIA (32 lanes) and AMD (32 or 64 lanes).
pub const THREADS: u32 = 256;
