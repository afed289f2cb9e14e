//! ds-backend-cuda: the CUDA backend (not built yet).
//!
//! This crate will implement [`ds_core::Backend`] with cudarc (dynamic loading, NVRTC-compiled
//! kernels shared with ROCm, cuBLAS GEMM, NCCL collectives, a caching memory pool). It is
//! filled by the CUDA issue; until then it exports nothing and `ds report` says the backend is
//! not implemented.
