//! ds-comm-mpi: collectives over MPI (not built yet).
//!
//! This crate will implement [`ds_core::Collectives`] with rsmpi (OpenMPI or MPICH), find the
//! world under `mpirun`, and guard against mismatched calls, timeouts and dead ranks. It is
//! filled by the MPI issue; until then it exports nothing, and the `ds` crate's `mpi`
//! feature only records the request.
