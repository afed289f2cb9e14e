//! `ds report`: what this build of ds contains and what it finds on this machine, like
//! DeepSpeed's `ds_report`.

use crate::backends::{BackendKind, DeviceTask, mpi_status, with_backend};
use ds_core::info::Support;
use ds_core::{Backend, DType, Device, KernelFamily, Result};
use std::fmt::Write as _;
use std::process::ExitCode;

struct Describe;

impl DeviceTask for Describe {
    type Output = String;
    fn run<B: Backend>(self, device: Device<B>) -> String {
        describe(device.info())
    }
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// One device's description and capability table.
pub fn describe(info: &ds_core::DeviceInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "[{}] {} ({})", info.backend, info.name, info.vendor);
    let _ = writeln!(
        s,
        "    memory: {:.1} GiB   compute units: {}",
        gib(info.memory_total),
        info.compute_units
    );
    if info.backend == "cpu" {
        let _ = writeln!(s, "    simd: {}", ds_core::cpu::simd_features().join(" "));
        let _ = writeln!(
            s,
            "    kernels: {} (of {}; {} caps it)",
            ds_core::cpu::isa::active().name(),
            ds_core::cpu::isa::Isa::available_all()
                .iter()
                .map(|i| i.name())
                .collect::<Vec<_>>()
                .join(", "),
            ds_core::cpu::isa::ISA_ENV
        );
        let pinned = ds_core::cpu::affinity::pinned_cpus();
        let bind = ds_core::cpu::affinity::BIND_ENV;
        let _ = if pinned.is_empty() {
            writeln!(
                s,
                "    threads: not pinned ({bind}=none, or no cpu of their own left)"
            )
        } else {
            let list: Vec<String> = pinned.iter().map(|c| c.to_string()).collect();
            writeln!(
                s,
                "    threads: pinned to cpus {} ({bind}=none leaves them unpinned)",
                list.join(",")
            )
        };
    }
    if let Some(max) = info.max_buffer_elements {
        let _ = writeln!(s, "    largest kernel argument: {max} elements");
    }
    let _ = writeln!(
        s,
        "    {:<16} {:>6} {:>6} {:>6}",
        "kernel family", "f32", "f16", "bf16"
    );
    let mut reasons = Vec::new();
    for family in KernelFamily::ALL {
        let _ = write!(s, "    {:<16}", family.name());
        for dtype in DType::FLOATS {
            match info.capabilities.support(family, dtype) {
                Support::Yes => {
                    let _ = write!(s, " {:>6}", "yes");
                }
                Support::No(why) => {
                    let _ = write!(s, " {:>6}", "no");
                    reasons.push(format!("{family} {dtype}: {why}"));
                }
            }
        }
        let _ = writeln!(s);
    }
    for r in reasons {
        let _ = writeln!(s, "    {r}");
    }
    s
}

/// The whole report as text.
pub fn render() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ds {} - DeepSpeed's training core in Rust",
        crate::VERSION
    );
    let _ = writeln!(s, "{}", "-".repeat(60));
    let _ = writeln!(s, "{:<8} {:<10} status", "backend", "compiled");
    let mut devices = Vec::new();
    for &kind in BackendKind::ALL {
        let compiled = if kind.compiled() { "yes" } else { "no" };
        match with_backend(kind, Describe) {
            Ok(desc) => {
                let _ = writeln!(s, "{:<8} {compiled:<10} device found", kind.name());
                devices.push(desc);
            }
            Err(e) => {
                let _ = writeln!(s, "{:<8} {compiled:<10} {e}", kind.name());
            }
        }
    }
    let _ = writeln!(
        s,
        "{:<8} {:<10} {}",
        "mpi",
        if cfg!(feature = "mpi") { "yes" } else { "no" },
        mpi_status()
    );
    let _ = writeln!(
        s,
        "{:<8} {:<10} swap I/O: {} (DS_NVME_IO=uring|pread forces one)",
        "nvme",
        "yes",
        ds_zero::offload::swap::probe()
    );
    #[cfg(feature = "rocm")]
    {
        let search = ds_backend_rocm::Search::from_env();
        let _ = writeln!(
            s,
            "rocm libraries (searched {}; {} pins the folder):",
            search.describe(),
            ds_backend_rocm::LIBS_ENV
        );
        s.push_str(&ds_backend_rocm::probe::report(&search));
    }
    #[cfg(feature = "wgpu")]
    {
        let _ = writeln!(
            s,
            "wgpu adapters (DS_WGPU_ADAPTER picks by index or name; DS_WGPU_F16=auto|native|packed):"
        );
        for a in ds_backend_wgpu::WgpuBackend::adapters() {
            let _ = writeln!(s, "    {a}");
        }
    }
    let _ = writeln!(s, "{}", "-".repeat(60));
    let _ = writeln!(s, "devices");
    for d in devices {
        s.push_str(&d);
    }
    s
}

/// Prints the report.
///
/// # Errors
/// None today; the signature matches the other subcommands.
pub fn run() -> Result<ExitCode> {
    print!("{}", render());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_report_names_the_io_path_nvme_offload_will_use() {
        let report = super::render();
        let line = report
            .lines()
            .find(|l| l.starts_with("nvme"))
            .expect("an nvme line");
        assert!(
            line.contains("swap I/O: io_uring") || line.contains("positional reads and writes"),
            "{line}"
        );
    }
}
