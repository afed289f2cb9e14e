//! The `ds` command's subcommands, as library functions so tests can run them.

pub mod config;
pub mod conformance;
pub mod estimate;
#[cfg(feature = "mpi")]
pub mod mpi_check;
pub mod report;
pub mod train;
pub mod zero_to_fp32;
