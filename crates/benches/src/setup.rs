//! Devices and buffers for the benchmarks.

use ds_core::cpu::{CpuBackend, CpuBuffer};
use ds_core::{BufferExt, DType, Device, Result};

/// Threads the benchmarks use: `DS_CPU_THREADS`, or 2 (the reference machine's cores and the
/// thread count the project's targets are stated for).
pub fn threads() -> usize {
    std::env::var(ds_core::cpu::THREADS_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(2)
}

/// Interleaved rounds a paired benchmark runs: `ROUNDS`, or `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The CPU device the benchmarks run on.
///
/// # Errors
/// When the thread pool cannot be created.
pub fn cpu() -> Result<Device<CpuBackend>> {
    Ok(Device::new(CpuBackend::with_threads(threads())?))
}

/// A buffer of `len` elements filled with `value` (allocated once; benchmarks never allocate
/// inside the timed loop).
///
/// # Errors
/// Allocation failures.
pub fn filled(dev: &Device<CpuBackend>, dtype: DType, len: usize, value: f64) -> Result<CpuBuffer> {
    let mut b = dev.alloc(dtype, len)?;
    dev.fill(b.all_mut(), value)?;
    Ok(b)
}

/// A buffer of `len` varied values in [-1, 1) (so nothing is trivially constant).
///
/// # Errors
/// Allocation failures.
pub fn varied(dev: &Device<CpuBackend>, dtype: DType, len: usize) -> Result<CpuBuffer> {
    let host: Vec<f32> = (0..len)
        .map(|i| ((i.wrapping_mul(2_654_435_761) % 2000) as f32 / 1000.0) - 1.0)
        .collect();
    let mut f = dev.alloc_from(&host)?;
    if dtype == DType::F32 {
        return Ok(f);
    }
    let mut out = dev.alloc(dtype, len)?;
    dev.cast(f.all(), out.all_mut())?;
    dev.fill(f.all_mut(), 0.0)?;
    Ok(out)
}
