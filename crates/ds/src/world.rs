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

    /// The collectives, for backend `backend`: under `mpirun` with several ranks, the
    /// backend's own (NCCL on CUDA, RCCL on ROCm: one GPU per rank, the communicator's id
    /// broadcast from rank 0 over MPI) when it has them and [`DEVICE_COLLECTIVES_ENV`] is not
    /// `mpi`; otherwise MPI's, threads' or a single rank's.
    ///
    /// # Errors
    /// A one-line message when the backend's collectives cannot start.
    #[cfg_attr(not(feature = "mpi"), allow(unused_variables))]
    pub fn collectives<B: Backend>(self, backend: &B) -> Result<Box<dyn Collectives<B>>, String> {
        match self.inner {
            Inner::Threads(c) => Ok(Box::new(c)),
            #[cfg(not(feature = "mpi"))]
            Inner::Single => Ok(Box::new(SingleRank)),
            #[cfg(feature = "mpi")]
            Inner::Mpi(c) => {
                let native = self.world_size > 1
                    && std::env::var(DEVICE_COLLECTIVES_ENV).map_or(true, |v| v != "mpi");
                if native {
                    let mut share = |id| share_over_mpi(&c, id);
                    match backend.native_collectives(self.rank, self.world_size, &mut share) {
                        Some(Ok(comm)) => return Ok(comm),
                        Some(Err(e)) => {
                            return Err(format!(
                                "the {} backend's collectives did not start: {e} \
                                 ({DEVICE_COLLECTIVES_ENV}=mpi runs them over MPI instead)",
                                backend.info().backend
                            ));
                        }
                        None => {}
                    }
                }
                Ok(Box::new(c))
            }
        }
    }
}

/// `mpi` makes GPU ranks under `mpirun` reduce over MPI (staged through host memory) instead of
/// their own library (NCCL, RCCL).
pub const DEVICE_COLLECTIVES_ENV: &str = "DS_DEVICE_COLLECTIVES";

/// Broadcasts rank 0's 128-byte id to every rank over MPI (as 32 f32 values of host memory:
/// MPI moves them bit for bit).
#[cfg(feature = "mpi")]
fn share_over_mpi(comm: &ds_comm_mpi::Comm, id: Option<[u8; 128]>) -> ds_core::Result<[u8; 128]> {
    use ds_core::{BufferExt, DType, Device};
    let cpu = Device::new(ds_core::cpu::CpuBackend::with_threads(1)?);
    let mut buf = cpu.alloc(DType::F32, 32)?;
    if let Some(bytes) = id {
        cpu.upload_bytes(&bytes, buf.all_mut())?;
    }
    Collectives::<ds_core::cpu::CpuBackend>::broadcast(comm, &cpu, buf.all_mut(), 0)?;
    let mut out = [0u8; 128];
    cpu.download_bytes(buf.all(), &mut out)?;
    Ok(out)
}

/// Whether a launcher (Open MPI's or a PMI one) started this process as one of several ranks.
pub fn launched_by_mpirun() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .filter_map(|v| v.parse::<usize>().ok())
        .any(|n| n > 1)
}
