//! ds-comm-mpi: ds's collectives over MPI, and finding the world under `mpirun`.
//!
//! [`init_distributed`] is DeepSpeed's `init_distributed` for ds: started by `mpirun` or
//! `mpiexec` (Open MPI, MPICH, PMIx), it initializes MPI and returns an [`MpiComm`] for the
//! world; started alone, a single rank. Either way it reports rank, world size, local rank
//! and local size, and logs one line saying how it found them.
//!
//! [`MpiComm`] implements ds-core's [`ds_core::Collectives`] (all-reduce sum/avg/max,
//! reduce-scatter, all-gather, broadcast, barrier) for f32, f16 and bf16 on any backend's
//! buffers, with the same results as the threaded collectives: 16-bit data travels as u16 and
//! is reduced in f32, rounded once. Transfers are split so no MPI count overflows 32 bits.
//!
//! Every collective runs under [`Guards`]: a validation mode that catches ranks making
//! different calls (failing on every rank with the ranks and their calls named), a timeout
//! that aborts the job naming the ranks that never arrived, and a watchdog on the transfer
//! itself. A rank that dies ends the job through the launcher (Open MPI's `mpirun` stops the
//! other ranks when one exits without finalizing MPI).
//!
//! MPI initializes once per process: a process calls [`init_distributed`] once and keeps the
//! communicator for its lifetime; MPI is finalized when the last communicator is dropped.

mod comm;
mod exchange;
mod guards;
mod handshake;
mod launch;
mod raw;
mod say;
mod watchdog;
mod world;

pub use comm::MpiComm;
pub use guards::{
    CHUNK_ENV, DEFAULT_CHUNK_ELEMENTS, DEFAULT_TIMEOUT, Guards, TIMEOUT_ENV, VALIDATE_ENV,
};
pub use launch::Launcher;
pub use say::say;
pub use world::{Comm, Distributed, Session, WorldInfo, init_distributed};

/// The exit code of a job ended by a collective timeout (as the `timeout` command's).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
