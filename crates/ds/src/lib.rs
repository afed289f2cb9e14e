//! ds: DeepSpeed's training core, in Rust, on every accelerator.
//!
//! This facade re-exports the public API and picks a backend at run time from its name:
//!
//! - [`core`]: the backend contract ([`core::Backend`], [`core::Device`],
//!   [`core::Collectives`]), dtypes, kernels' parameters and the CPU backend;
//! - [`backends`]: which backends this build contains and [`backends::with_backend`], which
//!   opens one by name and runs generic code on it;
//! - [`engine_check`] / [`engine_tests!`]: the engine-equivalence body every backend runs.
//!
//! Cargo features `cuda`, `rocm`, `wgpu` and `mpi` compile the corresponding crates in.

pub mod backends;
pub mod cli;
pub mod engine_check;
pub mod world;

/// MPI: [`mpi::init_distributed`] finds the world under `mpirun`; [`mpi::MpiComm`] is the
/// collectives over it.
#[cfg(feature = "mpi")]
pub use ds_comm_mpi as mpi;
pub use ds_core as core;
pub use ds_core::{Backend, Collectives, DType, Device, Error, Result};

/// The version of ds.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
