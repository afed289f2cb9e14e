//! The CPU backend: the default, always compiled, and where ZeRO-Offload runs the optimizer.
//!
//! Kernels run on the backend's own rayon pool over large contiguous chunks, with inner loops
//! written so the compiler vectorizes them; the hot ones are compiled for baseline, AVX2+FMA
//! and AVX-512 and picked at run time ([`isa`]; `DS_CPU_ISA` caps it), so one binary is fast
//! on new processors and still runs on old ones. 16-bit storage is converted a block at a time
//! and all arithmetic is f32. GEMM is an own AVX-512 f32 kernel and AVX512-BF16 bf16 kernel
//! where the processor has them, the `matrixmultiply` crate's f32 kernels otherwise.

pub mod affinity;
mod buffer;
mod elementwise;
pub(crate) mod float;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_amx;
mod gemm_avx512;
mod gemm_bf16;
mod host;
pub mod isa;
mod lanes;
mod map;
mod math;
mod nn;
mod optim;
mod par;
mod prefetch;
mod reduce;
pub mod roofline;
mod scratch;
mod stream;

pub use buffer::{CpuBuffer, available_memory};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::info::{Capabilities, DeviceInfo};
use crate::kernels::{Memory, Validated, View, ViewMut};
use crate::memory::MemoryStats;
use crate::pool::Pool;
use std::sync::Arc;

/// The environment variable that sets the CPU backend's default thread count.
pub const THREADS_ENV: &str = "DS_CPU_THREADS";

#[derive(Debug)]
struct Inner {
    pool: rayon::ThreadPool,
    info: DeviceInfo,
    /// Host memory: mappings cached by the shared pool, small buffers counted by its tracker.
    memory: Arc<Pool<buffer::HostMemory>>,
    /// A memory budget in bytes, when one was set ([`CpuBackend::with_capacity`]).
    capacity: Option<u64>,
    /// The CPUs the pool's workers are pinned to, held while the backend lives.
    _binding: Option<Arc<affinity::Reservation>>,
}

/// The CPU backend. Clones share one thread pool and one memory account.
#[derive(Debug, Clone)]
pub struct CpuBackend {
    inner: Arc<Inner>,
}

impl CpuBackend {
    /// A buffer from the backend's pool: zero-filled when `zeroed`, else a reused mapping
    /// keeps its stale bytes (fresh mappings and heap buffers are zero either way).
    fn alloc_filled(&self, dtype: DType, len: usize, zeroed: bool) -> Result<CpuBuffer> {
        if let Some(capacity) = self.inner.capacity {
            let bytes = (len as u64).saturating_mul(dtype.size_bytes() as u64);
            let in_use = self.inner.memory.stats().in_use;
            if in_use.saturating_add(bytes) > capacity {
                return Err(Error::OutOfMemory {
                    device: "cpu".into(),
                    requested: bytes,
                    available: capacity.saturating_sub(in_use),
                });
            }
        }
        CpuBuffer::new(
            dtype,
            len,
            Arc::clone(&self.inner.memory),
            |bytes, reused| {
                if reused && !zeroed {
                    // Stale values of a dropped buffer: the caller overwrites them (this fill
                    // was 6-8% of the GPT step's perf samples on the AMX Xeon).
                } else if bytes.len() < par::PARALLEL_BYTES {
                    par::prepare_mapping(bytes, reused);
                } else {
                    self.run(|| par::prepare_mapping(bytes, reused));
                }
            },
        )
    }

    /// A backend using `DS_CPU_THREADS` threads, or every available core.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `DS_CPU_THREADS` is not a positive integer;
    /// [`Error::Device`] when the thread pool cannot be created.
    pub fn new() -> Result<Self> {
        let threads = match std::env::var(THREADS_ENV) {
            Ok(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    Error::invalid(
                        "CpuBackend::new",
                        THREADS_ENV,
                        format!("`{v}` is not a positive integer"),
                    )
                })?,
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Self::with_threads(threads)
    }

    /// A backend using exactly `threads` threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for zero threads, a `DS_CPU_ISA` this processor cannot run or
    /// a `DS_CPU_BIND` other than `auto` or `none`;
    /// [`Error::Device`] when the pool cannot be created.
    pub fn with_threads(threads: usize) -> Result<Self> {
        if threads == 0 {
            return Err(Error::invalid(
                "CpuBackend::with_threads",
                "threads",
                "must be at least 1",
            ));
        }
        isa::init_from_env()?;
        let binding = affinity::reserve(threads)?.map(Arc::new);
        let pin = binding.clone();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ds-cpu-{i}"))
            .start_handler(move |i| {
                if let Some(cpu) = pin.as_ref().and_then(|b| b.cpu(i)) {
                    affinity::pin_current(cpu);
                }
            })
            .build()
            .map_err(|e| Error::Device {
                device: "cpu".into(),
                message: format!("cannot start {threads} threads: {e}"),
            })?;
        let info = DeviceInfo {
            backend: "cpu",
            name: cpu_model_name(),
            vendor: cpu_vendor(),
            memory_total: buffer::total_memory(),
            compute_units: threads,
            max_buffer_elements: None,
            capabilities: Capabilities::all_floats(),
        };
        Ok(CpuBackend {
            inner: Arc::new(Inner {
                pool,
                info,
                memory: Arc::new(Pool::new(buffer::HostMemory, buffer::CACHE_LIMIT)),
                capacity: None,
                _binding: binding,
            }),
        })
    }

    /// A backend with `threads` threads that behaves like a device of `bytes` bytes: its
    /// `memory_total` is `bytes` and an allocation that would take live buffers past it fails
    /// with [`Error::OutOfMemory`]. What lets tests (and users sizing a run) train a model
    /// "larger than the device" on one machine.
    ///
    /// # Errors
    /// As [`CpuBackend::with_threads`].
    pub fn with_capacity(threads: usize, bytes: u64) -> Result<Self> {
        let base = Self::with_threads(threads)?;
        let inner = Arc::try_unwrap(base.inner).map_err(|_| Error::Device {
            device: "cpu".into(),
            message: "internal: a new backend is shared".into(),
        })?;
        let mut info = inner.info;
        info.memory_total = bytes;
        Ok(CpuBackend {
            inner: Arc::new(Inner {
                info,
                capacity: Some(bytes),
                ..inner
            }),
        })
    }

    /// Threads this backend runs kernels on.
    pub fn threads(&self) -> usize {
        self.inner.pool.current_num_threads()
    }

    /// Runs `f` on the backend's thread pool.
    pub(crate) fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.inner.pool.install(f)
    }
}

impl Memory for CpuBackend {
    type Buffer = CpuBuffer;

    fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    fn alloc(&self, dtype: DType, len: usize, _: Validated) -> Result<CpuBuffer> {
        self.alloc_filled(dtype, len, true)
    }

    fn alloc_for_overwrite(&self, dtype: DType, len: usize, _: Validated) -> Result<CpuBuffer> {
        let mut buffer = self.alloc_filled(dtype, len, false)?;
        if cfg!(debug_assertions) {
            // All-ones bytes: NaN in f32, bf16 and f16, so a kernel that reads its output
            // before writing it fails the tests instead of reading stale values in release.
            buffer.bytes_mut().fill(0xFF);
        }
        Ok(buffer)
    }

    fn upload(&self, src: &[u8], dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let out = host::bytes_mut(dst)?;
        self.run(|| par::copy_bytes(src, out));
        Ok(())
    }

    fn download(&self, src: View<'_, Self>, dst: &mut [u8], _: Validated) -> Result<()> {
        let data = host::bytes(src)?;
        self.run(|| par::copy_bytes(data, dst));
        Ok(())
    }

    fn copy(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let data = host::bytes(src)?;
        let out = host::bytes_mut(dst)?;
        self.run(|| par::copy_bytes(data, out));
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn memory_stats(&self) -> MemoryStats {
        self.inner.memory.stats()
    }

    fn reset_peak_memory(&self) {
        self.inner.memory.reset_peak();
    }

    fn host_bytes<'a>(&self, view: View<'a, Self>) -> Option<&'a [u8]> {
        host::bytes(view).ok()
    }

    fn host_bytes_mut<'a>(&self, view: ViewMut<'a, Self>) -> Option<&'a mut [u8]> {
        host::bytes_mut(view).ok()
    }
}

fn cpu_model_name() -> String {
    cpuinfo_field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn cpu_vendor() -> String {
    cpuinfo_field("vendor_id").unwrap_or_else(|| "unknown".to_string())
}

fn cpuinfo_field(name: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Instruction-set features the CPU kernels can use on this machine, for `ds report`.
pub fn simd_features() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            found.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            found.push("fma");
        }
        if std::arch::is_x86_feature_detected!("f16c") {
            found.push("f16c");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            found.push("avx512f");
        }
    }
    #[cfg(target_arch = "aarch64")]
    found.push("neon");
    found
}
