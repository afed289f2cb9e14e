//! Run-time backend selection.
//!
//! Generic code is written once against [`ds_core::Backend`]; [`with_backend`] maps a name to
//! a concrete backend and dispatches into it exactly once. The match over [`BackendKind`] has
//! no wildcard arm, so a backend added to the enum but not wired here fails to compile.

use ds_core::cpu::CpuBackend;
use ds_core::{Backend, Device, Error, Result};
use std::fmt;
use std::str::FromStr;

/// Declares [`BackendKind`] and its table from one list, so a backend added to the enum is in
/// [`BackendKind::ALL`] (the report, the `--backend` errors and help) by construction.
macro_rules! backends {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// The backends ds knows.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum BackendKind {
            $($(#[$doc])* $variant,)+
        }

        impl BackendKind {
            /// Every backend, in report order.
            pub const ALL: &'static [BackendKind] = &[$(BackendKind::$variant,)+];

            /// The name used on the command line and in configs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(BackendKind::$variant => $name,)+
                }
            }
        }
    };
}

backends! {
    /// The CPU backend (always compiled, the default).
    Cpu => "cpu",
    /// NVIDIA GPUs through CUDA.
    Cuda => "cuda",
    /// AMD GPUs through ROCm.
    Rocm => "rocm",
    /// Any Vulkan, Metal or DX12 adapter through wgpu.
    Wgpu => "wgpu",
}

impl BackendKind {
    /// The names, comma-separated (for help and errors).
    pub fn names() -> String {
        BackendKind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Whether this build contains the backend.
    pub const fn compiled(self) -> bool {
        match self {
            BackendKind::Cpu => true,
            BackendKind::Cuda => cfg!(feature = "cuda"),
            BackendKind::Rocm => cfg!(feature = "rocm"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BackendKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::invalid(
                    "backend",
                    "name",
                    format!(
                        "unknown backend `{s}`; expected one of {}",
                        BackendKind::names()
                    ),
                )
            })
    }
}

/// Generic work to run on whichever backend is chosen.
pub trait DeviceTask {
    /// What the work returns.
    type Output;
    /// Runs on an opened device.
    fn run<B: Backend>(self, device: Device<B>) -> Self::Output;
}

/// Why a backend this build does not contain cannot be opened.
#[allow(dead_code, reason = "unused when every backend is compiled in")]
fn unavailable(kind: BackendKind) -> Error {
    Error::NoDevice {
        backend: kind.name(),
        reason: format!(
            "the {kind} backend is not compiled into this build; rebuild with `--features {kind}`"
        ),
    }
}

/// Opens the backend `kind` and runs `task` on it.
///
/// # Errors
/// [`Error::NoDevice`] when the backend is not compiled in or cannot open a device; the
/// backend's own construction errors.
pub fn with_backend<T: DeviceTask>(kind: BackendKind, task: T) -> Result<T::Output> {
    match kind {
        BackendKind::Cpu => Ok(task.run(Device::new(CpuBackend::new()?))),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(task.run(Device::new(match ordinal("DS_CUDA_DEVICE")? {
            Some(n) => ds_backend_cuda::CudaBackend::new(n)?,
            None => ds_backend_cuda::CudaBackend::for_local_rank(local_rank())?,
        }))),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => Err(unavailable(kind)),
        #[cfg(feature = "rocm")]
        BackendKind::Rocm => Ok(task.run(Device::new(match ordinal("DS_ROCM_DEVICE")? {
            Some(n) => ds_backend_rocm::RocmBackend::new(n)?,
            None => ds_backend_rocm::RocmBackend::for_local_rank(local_rank())?,
        }))),
        #[cfg(not(feature = "rocm"))]
        BackendKind::Rocm => Err(unavailable(kind)),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => Ok(task.run(Device::new(ds_backend_wgpu::WgpuBackend::new()?))),
        #[cfg(not(feature = "wgpu"))]
        BackendKind::Wgpu => Err(unavailable(kind)),
    }
}

/// The GPU asked for by `var` (`DS_CUDA_DEVICE`, `DS_ROCM_DEVICE`): an ordinal among the
/// devices the vendor's visibility variable (`CUDA_VISIBLE_DEVICES`, `HIP_VISIBLE_DEVICES`)
/// leaves visible. Unset: the process's rank on its machine picks one (one GPU per rank under
/// `mpirun`; device 0 without a launcher).
#[cfg(any(feature = "cuda", feature = "rocm"))]
fn ordinal(var: &'static str) -> Result<Option<usize>> {
    match std::env::var(var) {
        Ok(v) => {
            v.trim().parse().map(Some).map_err(|_| {
                Error::invalid("backend", var, format!("`{v}` is not a device ordinal"))
            })
        }
        Err(_) => Ok(None),
    }
}

/// This process's rank among the ranks on its machine, as Open MPI, MPICH (Hydra) or Slurm
/// state it; 0 without a launcher.
#[cfg(any(feature = "cuda", feature = "rocm"))]
fn local_rank() -> usize {
    [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "SLURM_LOCALID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.trim().parse().ok())
    .unwrap_or(0)
}

/// Whether MPI support is compiled in, and which launcher (if any) started this process.
pub fn mpi_status() -> String {
    #[cfg(feature = "mpi")]
    {
        format!(
            "compiled in (ds-comm-mpi); this process: {}",
            ds_comm_mpi::Launcher::detect()
        )
    }
    #[cfg(not(feature = "mpi"))]
    {
        "not compiled in (rebuild with `--features mpi`; needs Open MPI or MPICH and libclang)"
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Name;
    impl DeviceTask for Name {
        type Output = &'static str;
        fn run<B: Backend>(self, device: Device<B>) -> &'static str {
            device.info().backend
        }
    }

    #[test]
    fn names_parse_and_cpu_opens() {
        assert_eq!("CPU".parse::<BackendKind>().ok(), Some(BackendKind::Cpu));
        assert!("tpu".parse::<BackendKind>().is_err());
        assert_eq!(with_backend(BackendKind::Cpu, Name).ok(), Some("cpu"));
    }

    #[test]
    fn a_backend_not_compiled_in_says_how_to_get_it() {
        for kind in [BackendKind::Cuda, BackendKind::Rocm, BackendKind::Wgpu]
            .into_iter()
            .filter(|k| !k.compiled())
        {
            let err = with_backend(kind, Name)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(kind.name()), "{err}");
            assert!(err.contains("--features"), "{err}");
        }
    }
}
