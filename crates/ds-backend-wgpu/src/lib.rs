//! ds-backend-wgpu: ds's backend for any GPU with Vulkan, Metal or DX12, through wgpu.
//!
//! - [`WgpuBackend`] implements [`ds_core::Backend`]: every kernel written in WGSL (`ops/`),
//!   compiled once per storage layout and cached; buffers from a caching pool with statistics;
//!   device errors surfaced as [`ds_core::Error`]s.
//! - f16 uses native `f16` storage where the adapter has `SHADER_F16` and two halves per `u32`
//!   word where it does not (`DS_WGPU_F16=packed` forces that path); bf16 is always stored two
//!   per word and converted with bit operations. Every kernel computes in f32.
//! - Buffers larger than one storage binding (128 MiB on Mesa's lavapipe) work: kernels whose
//!   operands share one element index run in pieces.
//! - Collectives: ds-core's threaded collectives and ds-comm-mpi stage wgpu buffers through
//!   host memory through the generic `Device` front door.
//!
//! `DS_WGPU_ADAPTER` picks the adapter (an index or part of its name). Mesa's software Vulkan
//! driver (lavapipe) runs everything on the CPU, so every test machine executes the WGSL for
//! real.

mod adapter;
mod buffer;
mod context;
mod launch;
mod memory;
mod ops;
mod shader;

pub use adapter::AdapterChoice;
pub use buffer::WgpuBuffer;
pub use context::{F16Mode, WgpuBackend, WgpuOptions};
