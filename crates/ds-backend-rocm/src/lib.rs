//! ds-backend-rocm: ds's backend for AMD GPUs, everything loaded at run time.
//!
//! Built so far: finding ROCm ([`Search`]: `$DS_ROCM_LIBS`, `$ROCM_PATH`, `/opt/rocm`, the
//! system's search), the HIP runtime and its devices ([`probe`]: name, ISA, wave size, memory,
//! honouring `HIP_VISIBLE_DEVICES` / `ROCR_VISIBLE_DEVICES`), and compiling every kernel of
//! `ds-gpu` with hiprtc for an ISA, checked against comgr's ISA list ([`hiprtc`]). Building
//! needs no ROCm; a machine without it gets [`ds_core::Error::NoDevice`] naming every path
//! tried, never a panic.
//!
//! Not built yet: the [`ds_core::Backend`] implementation (memory, launches, rocBLAS GEMM,
//! RCCL collectives), which runs the shared GPU layer the CUDA backend is being split into.

mod hip;
pub mod hiprtc;
mod loader;
pub mod probe;

pub use hip::HipDevice;
pub use loader::{LIBS_ENV, Search};
