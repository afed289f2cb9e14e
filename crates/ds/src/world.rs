//! The ranks a `ds` command runs on: every rank of `mpirun` when MPI is compiled in, otherwise
//! one; or N threads of this process as N ranks (`ds train --ranks N`).

#[cfg(not(feature = "mpi"))]
use ds_core::SingleRank;
use ds_core::collectives::ThreadedComm;
use ds_core::{Backend, Collectives};

/// This process's place among the ranks, and its collectives.
pub struct World {
    /// This process's rank.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    inner: Inner,
}

enum Inner {
    #[cfg(not(feature = "mpi"))]
    Single,
    Threads(ThreadedComm),
    #[cfg(feature = "mpi")]
    Mpi(ds_comm_mpi::Comm),
}

impl World {
    /// Finds the world: with the `mpi` feature, [`ds_comm_mpi::init_distributed`] (MPI under
    /// a launcher, one rank otherwise); without it, one rank, refusing to run as one of many
    /// copies under `mpirun`.
    ///
    /// # Errors
    /// A one-line message saying what to do.
    pub fn init() -> Result<World, String> {
        #[cfg(feature = "mpi")]
        {
            let d = ds_comm_mpi::init_distributed().map_err(|e| e.to_string())?;
            Ok(World {
                rank: d.info.rank,
                world_size: d.info.world_size,
                inner: Inner::Mpi(d.comm),
            })
        }
        #[cfg(not(feature = "mpi"))]
        {
            if launched_by_mpirun() {
                return Err(
                    "started by mpirun, but this ds was built without MPI: rebuild with \
                            `cargo build --release -p ds --features mpi`"
                        .into(),
                );
            }
            Ok(World {
                rank: 0,
                world_size: 1,
                inner: Inner::Single,
            })
        }
    }

    /// `ranks` threads of this process as ranks: one world per thread, in rank order.
    pub fn threads(ranks: usize) -> Vec<World> {
        ThreadedComm::group(ranks)
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| World {
                rank,
                world_size: ranks,
                inner: Inner::Threads(comm),
            })
            .collect()
    }

    /// The collectives, for backend `B`.
    pub fn collectives<B: Backend>(self) -> Box<dyn Collectives<B>> {
        match self.inner {
            Inner::Threads(c) => Box::new(c),
            #[cfg(not(feature = "mpi"))]
            Inner::Single => Box::new(SingleRank),
            #[cfg(feature = "mpi")]
            Inner::Mpi(c) => Box::new(c),
        }
    }
}

/// Whether a launcher (Open MPI's or a PMI one) started this process as one of several ranks.
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter_map(|v| v.parse::<usize>().ok())
        .any(|n| n > 1)
}
