//! ds-backend-rocm: the ROCm backend (not built yet).
//!
//! This crate will implement [`ds_core::Backend`] with HIP and hiprtc loaded at run time,
//! hipBLAS/rocBLAS GEMM and RCCL collectives, sharing kernel source with the CUDA backend. It
//! is filled by a later issue; until then it exports nothing.
