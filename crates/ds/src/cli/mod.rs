//! The `ds` command's subcommands, as library functions so tests can run them.

pub mod config;
pub mod conformance;
pub mod report;
