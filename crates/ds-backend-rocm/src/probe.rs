//! What ROCm this machine has: the HIP runtime, its devices and the libraries beside it.

use crate::hip::{Hip, HipDevice, version_text};
use crate::loader::Search;
use ds_core::Error;
use std::fmt::Write as _;

/// The libraries the backend uses besides HIP, with their file names newest first (the lists
/// the loaders themselves use, so the report looks where the backend does).
const LIBRARIES: [(&str, &[&str]); 4] = [
    ("comgr", &crate::hiprtc::COMGR_FILES),
    ("rocBLAS", &crate::calls::ROCBLAS_FILES),
    (
        "hipBLAS",
        &[
            "libhipblas.so",
            "libhipblas.so.3",
            "libhipblas.so.2",
            "libhipblas.so.0",
        ],
    ),
    ("RCCL", &crate::rccl::FILES),
];

/// The environment variables that choose which devices HIP shows.
const VISIBILITY: [&str; 3] = [
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
];

/// The HIP runtime found and what it sees.
#[derive(Debug)]
pub struct Runtime {
    /// Where the runtime was loaded from.
    pub path: String,
    /// Its version, `major.minor.patch`.
    pub version: String,
    /// The visible devices (or why they could not be described).
    pub devices: Result<Vec<HipDevice>, String>,
}

fn no_device(reason: String) -> Error {
    Error::NoDevice {
        backend: "rocm",
        reason,
    }
}

/// The device-visibility variables as set here, for messages.
fn visibility() -> String {
    VISIBILITY
        .iter()
        .map(|v| match std::env::var(v) {
            Ok(x) => format!("{v}=`{x}`"),
            Err(_) => format!("{v} unset"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Loads the HIP runtime where `search` points and lists its devices.
///
/// # Errors
/// [`Error::NoDevice`] saying "no HIP runtime" and every path tried.
pub fn runtime(search: &Search) -> Result<Runtime, Error> {
    let hip = Hip::open(search).map_err(|n| {
        no_device(format!(
            "no HIP runtime (libamdhip64): install ROCm, or Debian's libamdhip64-5, or point \
             ROCM_PATH at an install; searched {}:{}",
            search.describe(),
            n.list()
        ))
    })?;
    let version = hip.version().map(version_text).map_err(no_device)?;
    let devices = hip
        .device_count()
        .and_then(|n| (0..n).map(|i| hip.device(i)).collect());
    Ok(Runtime {
        path: hip.lib.path.clone(),
        version,
        devices,
    })
}

/// The device `ordinal`, from the runtime the environment points at ([`Search::from_env`]).
///
/// # Errors
/// [`Error::NoDevice`]: "no HIP runtime" with the paths searched, "no ROCm device" with the
/// visibility variables, or the ordinal past the devices.
pub fn device(ordinal: usize) -> Result<HipDevice, Error> {
    let rt = runtime(&Search::from_env())?;
    let devices = rt.devices.map_err(|e| {
        no_device(format!(
            "HIP runtime {} ({}) could not describe its devices: {e}",
            rt.version, rt.path
        ))
    })?;
    if devices.is_empty() {
        return Err(no_device(format!(
            "no ROCm device: HIP runtime {} ({}) sees none ({})",
            rt.version,
            rt.path,
            visibility()
        )));
    }
    let count = devices.len();
    devices.into_iter().nth(ordinal).ok_or_else(|| {
        no_device(format!(
            "device {ordinal} asked for, but HIP sees {count} ({})",
            visibility()
        ))
    })
}

/// The report's ROCm section: runtime, devices and which libraries were found.
pub fn report(search: &Search) -> String {
    let mut s = String::new();
    match runtime(search) {
        Err(e) => {
            let _ = writeln!(s, "    {e}");
        }
        Ok(rt) => {
            let _ = writeln!(s, "    HIP runtime {} ({})", rt.version, rt.path);
            match rt.devices {
                Ok(d) if d.is_empty() => {
                    let _ = writeln!(s, "    no ROCm device ({})", visibility());
                }
                Ok(d) => {
                    for d in d {
                        let _ = writeln!(
                            s,
                            "    device {}: {} ({}, wave{}), {:.1} GiB, {} compute units",
                            d.ordinal,
                            d.name,
                            d.arch,
                            d.warp_size,
                            d.memory as f64 / (1u64 << 30) as f64,
                            d.compute_units
                        );
                    }
                }
                Err(e) => {
                    let _ = writeln!(s, "    devices: {e}");
                }
            }
        }
    }
    let _ = match crate::hiprtc::library(search) {
        Ok(path) => writeln!(s, "    hiprtc: {path}"),
        Err(_) => writeln!(
            s,
            "    hiprtc: not found (libhiprtc.so.*, nor inside libamdhip64)"
        ),
    };
    for (what, files) in LIBRARIES {
        let _ = match search.open(files) {
            Ok(lib) => writeln!(s, "    {what}: {}", lib.path),
            Err(_) => writeln!(s, "    {what}: not found ({})", files.join(", ")),
        };
    }
    s
}
