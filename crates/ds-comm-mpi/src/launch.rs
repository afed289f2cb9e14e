//! How this process was started: by an MPI launcher (whose variables name the world) or alone.

use std::fmt;

/// The MPI launcher that started this process, read from the variables it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launcher {
    /// Open MPI's `mpirun`/`mpiexec` (`OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`, ...).
    OpenMpi {
        /// The world size the launcher announced.
        size: usize,
        /// This process's rank as the launcher announced it.
        rank: usize,
    },
    /// MPICH's Hydra `mpiexec`/`mpirun` (`PMI_SIZE`, `PMI_RANK`), also Intel MPI.
    Mpich {
        /// The world size the launcher announced.
        size: usize,
        /// This process's rank as the launcher announced it.
        rank: usize,
    },
    /// A PMIx launcher (`srun --mpi=pmix`, `prterun`): `PMIX_RANK` without Open MPI's variables.
    Pmix {
        /// This process's rank as the launcher announced it.
        rank: usize,
    },
    /// No launcher: a single rank.
    None,
}

impl Launcher {
    /// Reads the current process's environment.
    pub fn detect() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (testable).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let num = |name: &str| lookup(name).and_then(|v| v.trim().parse::<usize>().ok());
        if let (Some(size), Some(rank)) = (num("OMPI_COMM_WORLD_SIZE"), num("OMPI_COMM_WORLD_RANK"))
        {
            return Launcher::OpenMpi { size, rank };
        }
        if let (Some(size), Some(rank)) = (num("PMI_SIZE"), num("PMI_RANK")) {
            return Launcher::Mpich { size, rank };
        }
        if let Some(rank) = num("PMIX_RANK") {
            return Launcher::Pmix { rank };
        }
        Launcher::None
    }

    /// Whether a launcher started this process (so MPI should be initialized).
    pub fn is_mpi(&self) -> bool {
        !matches!(self, Launcher::None)
    }

    /// The rank the launcher announced, if it did.
    pub fn announced_rank(&self) -> Option<usize> {
        match self {
            Launcher::OpenMpi { rank, .. }
            | Launcher::Mpich { rank, .. }
            | Launcher::Pmix { rank } => Some(*rank),
            Launcher::None => None,
        }
    }
}

impl fmt::Display for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Launcher::OpenMpi { size, .. } => {
                write!(f, "Open MPI's mpirun (OMPI_COMM_WORLD_SIZE={size})")
            }
            Launcher::Mpich { size, .. } => write!(f, "MPICH's mpiexec (PMI_SIZE={size})"),
            Launcher::Pmix { .. } => f.write_str("a PMIx launcher (PMIX_RANK)"),
            Launcher::None => f.write_str("no MPI launcher in the environment"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn open_mpi_and_mpich_variables_are_recognised() {
        let l = Launcher::from_lookup(env(&[
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "3"),
        ]));
        assert_eq!(l, Launcher::OpenMpi { size: 4, rank: 3 });
        assert_eq!(l.announced_rank(), Some(3));
        let l = Launcher::from_lookup(env(&[("PMI_SIZE", "2"), ("PMI_RANK", "1")]));
        assert_eq!(l, Launcher::Mpich { size: 2, rank: 1 });
        let l = Launcher::from_lookup(env(&[("PMIX_RANK", "0")]));
        assert_eq!(l, Launcher::Pmix { rank: 0 });
        assert!(l.is_mpi());
    }

    #[test]
    fn no_or_unreadable_variables_mean_a_single_rank() {
        assert_eq!(Launcher::from_lookup(env(&[])), Launcher::None);
        let l = Launcher::from_lookup(env(&[
            ("OMPI_COMM_WORLD_SIZE", "four"),
            ("OMPI_COMM_WORLD_RANK", "0"),
        ]));
        assert_eq!(l, Launcher::None);
        assert!(!l.is_mpi());
    }
}
