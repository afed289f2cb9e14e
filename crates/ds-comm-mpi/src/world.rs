//! Finding the world: DeepSpeed's `init_distributed`, for ds.

use crate::comm::MpiComm;
use crate::guards::Guards;
use crate::launch::Launcher;
use ds_core::collectives::SingleRank;
use ds_core::kernels::{Validated, View, ViewMut};
use ds_core::{Backend, Collectives, Device, Error, ReduceOp, Result};
use mpi::traits::Communicator;
use std::fmt;
use std::sync::Arc;

/// MPI initialized for this process; finalized when the last owner (the communicators made
/// from it) is dropped.
pub struct Session {
    _universe: mpi::environment::Universe,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Session")
    }
}

/// Where this process stands in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldInfo {
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// This process's rank among the ranks on its node.
    pub local_rank: usize,
    /// The number of ranks on this node.
    pub local_size: usize,
    /// How the world was found (the launcher, or none).
    pub launcher: Launcher,
    /// The node's name.
    pub host: String,
    /// The MPI library's version line, when MPI is used.
    pub mpi_library: Option<String>,
}

impl WorldInfo {
    /// The one line each rank logs at start-up.
    pub fn describe(&self) -> String {
        let how = match &self.mpi_library {
            Some(lib) => format!("MPI world from {}, library {lib}", self.launcher),
            None => format!("single rank ({})", self.launcher),
        };
        format!(
            "rank {} of {} (local {} of {}) on {}: {how}",
            self.rank, self.world_size, self.local_rank, self.local_size, self.host
        )
    }
}

/// The collectives of the world that was found.
#[derive(Debug)]
pub enum Comm {
    /// No launcher: one rank, no communication.
    Single(SingleRank),
    /// Started by an MPI launcher.
    Mpi(MpiComm),
}

/// The result of [`init_distributed`].
#[derive(Debug)]
pub struct Distributed {
    /// Rank, world size, local rank and size, and how they were found.
    pub info: WorldInfo,
    /// The collectives to hand to the engine.
    pub comm: Comm,
}

/// Finds the world: started by `mpirun`/`mpiexec` (Open MPI, MPICH or PMIx variables), MPI is
/// initialized and the world is MPI's; otherwise this process is a single rank. Logs one line
/// on standard error saying which, and reads the collective guards from the environment
/// ([`Guards::from_env`]).
///
/// # Errors
/// MPI initialized twice; an MPI that sees a different world than the launcher announced
/// (the `mpirun` of another MPI implementation); ranks started with different guard
/// settings; unreadable guard variables.
pub fn init_distributed() -> Result<Distributed> {
    let guards = Guards::from_env()?;
    let launcher = Launcher::detect();
    let info;
    let comm = if launcher.is_mpi() {
        let (mpi_info, comm) = init_mpi(launcher, guards)?;
        info = mpi_info;
        Comm::Mpi(comm)
    } else {
        info = WorldInfo {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            local_size: 1,
            launcher,
            host: host_name(),
            mpi_library: None,
        };
        Comm::Single(SingleRank)
    };
    crate::say::say(format_args!("[ds] {}", info.describe()));
    Ok(Distributed { info, comm })
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn failed(reason: impl Into<String>) -> Error {
    Error::Device {
        device: "MPI".into(),
        message: reason.into(),
    }
}

fn init_mpi(launcher: Launcher, guards: Guards) -> Result<(WorldInfo, MpiComm)> {
    let universe = mpi::initialize().ok_or_else(|| {
        failed("MPI is already initialized in this process: call init_distributed once")
    })?;
    let world = universe.world();
    let (rank, size) = (
        usize::try_from(world.rank()).unwrap_or(0),
        usize::try_from(world.size()).unwrap_or(1),
    );
    let announced = match launcher {
        Launcher::OpenMpi { size, .. } | Launcher::Mpich { size, .. } => Some(size),
        _ => None,
    };
    if announced.is_some_and(|n| n != size) || launcher.announced_rank().is_some_and(|r| r != rank)
    {
        return Err(failed(format!(
            "{launcher} started this process as rank {:?}, but the MPI library ds was built \
             with sees rank {rank} of {size}: the mpirun on PATH belongs to another MPI \
             implementation; use the one ds was built against",
            launcher.announced_rank()
        )));
    }
    let node = world.split_shared(world.rank());
    let (local_rank, local_size) = (
        usize::try_from(node.rank()).unwrap_or(0),
        usize::try_from(node.size()).unwrap_or(1),
    );
    drop(node);
    let library = mpi::environment::library_version().ok().and_then(|v| {
        let first = v.trim_matches(char::from(0)).lines().next()?.to_string();
        Some(
            first
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
        )
    });
    let host = mpi::environment::processor_name().unwrap_or_else(|_| host_name());
    let session = Arc::new(Session {
        _universe: universe,
    });
    let comm = MpiComm::from_session(session, guards)?;
    comm.check_guards_agree()?;
    Ok((
        WorldInfo {
            rank,
            world_size: size,
            local_rank,
            local_size,
            launcher,
            host,
            mpi_library: library,
        },
        comm,
    ))
}

macro_rules! delegate {
    ($self:ident, $c:ident => $call:expr) => {
        match $self {
            Comm::Single($c) => $call,
            Comm::Mpi($c) => $call,
        }
    };
}

impl<B: Backend> Collectives<B> for Comm {
    fn rank(&self) -> usize {
        delegate!(self, c => Collectives::<B>::rank(c))
    }

    fn world_size(&self) -> usize {
        delegate!(self, c => Collectives::<B>::world_size(c))
    }

    fn exec_all_reduce(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_all_reduce(device, buf, op, v))
    }

    fn exec_reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        op: ReduceOp,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_reduce_scatter(device, input, output, op, v))
    }

    fn exec_all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_all_gather(device, input, output, v))
    }

    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_reduce_scatter_in_place(device, buf, op, v))
    }

    fn exec_all_gather_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_all_gather_in_place(device, buf, v))
    }

    fn exec_broadcast(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        root: usize,
        v: Validated,
    ) -> Result<()> {
        delegate!(self, c => c.exec_broadcast(device, buf, root, v))
    }

    fn barrier(&self) -> Result<()> {
        delegate!(self, c => Collectives::<B>::barrier(c))
    }
}
