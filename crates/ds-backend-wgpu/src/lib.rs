//! ds-backend-wgpu: the WGPU backend (not built yet).
//!
//! This crate will implement [`ds_core::Backend`] with wgpu and WGSL kernels (f16 natively or
//! packed, bf16 by bit operations), running on any Vulkan, Metal or DX12 adapter, including
//! Mesa's software Vulkan driver in CI. It is filled by the WGPU issue; until then it exports
//! nothing.
