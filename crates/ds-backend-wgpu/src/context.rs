//! The backend: one wgpu device and queue, its pool, its pipeline cache and its error slot.

use crate::adapter::{self, AdapterChoice};
use crate::buffer::{CACHE_CAP_BYTES, WgpuMemory, WgpuPool};
use crate::shader::Store;
use ds_core::{Capabilities, DType, DeviceInfo, Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How f16 buffers are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum F16Mode {
    /// Native `f16` storage where the adapter has `SHADER_F16`, packed otherwise.
    #[default]
    Auto,
    /// Native `f16` storage; opening fails on an adapter without `SHADER_F16`.
    Native,
    /// Two halves per `u32` word, on any adapter (what an adapter without `SHADER_F16` gets).
    Packed,
}

impl F16Mode {
    /// Reads `DS_WGPU_F16` (`auto`, `native` or `packed`; unset means `auto`).
    ///
    /// # Errors
    /// Any other value.
    pub fn from_env() -> Result<Self> {
        match std::env::var("DS_WGPU_F16") {
            Err(_) => Ok(F16Mode::Auto),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "auto" => Ok(F16Mode::Auto),
                "native" => Ok(F16Mode::Native),
                "packed" => Ok(F16Mode::Packed),
                _ => Err(Error::invalid(
                    "wgpu",
                    "DS_WGPU_F16",
                    format!("`{v}` is not one of auto, native, packed"),
                )),
            },
        }
    }
}

/// Options for opening a device.
#[derive(Debug, Clone, Default)]
pub struct WgpuOptions {
    /// Which adapter.
    pub adapter: AdapterChoice,
    /// How f16 is stored.
    pub f16: F16Mode,
    /// A memory budget in bytes below the adapter's: `memory_total` reports it and allocations
    /// beyond it are refused as out of memory (what a smaller GPU would do; for fitting and
    /// offload tests). `None`: the adapter's own.
    pub capacity: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: DeviceInfo,
    pub(crate) native_f16: bool,
    /// The largest storage binding, in bytes.
    pub(crate) max_binding: u64,
    /// Binding offsets must be multiples of this.
    pub(crate) offset_align: u64,
    pub(crate) max_groups: u32,
    pub(crate) pool: Arc<WgpuPool>,
    /// The memory budget, when one was set.
    pub(crate) capacity: Option<u64>,
    pub(crate) pipelines: Mutex<HashMap<String, wgpu::ComputePipeline>>,
    /// The first device error since the last check (validation, out of memory, device lost).
    pub(crate) error: Arc<Mutex<Option<String>>>,
}

/// ds's backend on one wgpu adapter (Vulkan, Metal or DX12). Cheap to clone.
#[derive(Debug, Clone)]
pub struct WgpuBackend {
    pub(crate) inner: Arc<Inner>,
}

impl WgpuBackend {
    /// Opens the adapter `DS_WGPU_ADAPTER` names (index or name; the first when unset) with
    /// the f16 storage `DS_WGPU_F16` asks for (`auto` when unset).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when there is no adapter or none matches (listing those found);
    /// an invalid `DS_WGPU_F16`; the driver refusing the device.
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions {
            adapter: AdapterChoice::from_env(),
            f16: F16Mode::from_env()?,
            capacity: None,
        })
    }

    /// [`WgpuBackend::new`] with a memory budget of `bytes` (see [`WgpuOptions::capacity`]).
    ///
    /// # Errors
    /// As [`WgpuBackend::new`].
    pub fn with_capacity(bytes: u64) -> Result<Self> {
        Self::with_options(WgpuOptions {
            adapter: AdapterChoice::from_env(),
            f16: F16Mode::from_env()?,
            capacity: Some(bytes),
        })
    }

    /// Opens a device with explicit options.
    ///
    /// # Errors
    /// As [`WgpuBackend::new`].
    pub fn with_options(options: WgpuOptions) -> Result<Self> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = adapter::pick(adapter::list(&instance), &options.adapter)?;
        let ainfo = adapter.get_info();
        let has_f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let native_f16 = match options.f16 {
            F16Mode::Packed => false,
            F16Mode::Auto => has_f16,
            F16Mode::Native if has_f16 => true,
            F16Mode::Native => {
                return Err(Error::NoDevice {
                    backend: "wgpu",
                    reason: format!(
                        "DS_WGPU_F16=native, but adapter {} has no SHADER_F16; use auto or packed",
                        ainfo.name
                    ),
                });
            }
        };
        let limits = adapter.limits();
        let features = if native_f16 {
            wgpu::Features::SHADER_F16
        } else {
            wgpu::Features::empty()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ds"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| Error::NoDevice {
            backend: "wgpu",
            reason: format!("adapter {} refused a device: {e}", ainfo.name),
        })?;
        let error = Arc::new(Mutex::new(None::<String>));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(e.to_string());
            }
        }));
        let cpu = ainfo.device_type == wgpu::DeviceType::Cpu;
        let info = DeviceInfo {
            backend: "wgpu",
            name: format!(
                "{} ({:?}{})",
                ainfo.name,
                ainfo.backend,
                if native_f16 {
                    ", native f16"
                } else {
                    ", packed f16"
                }
            ),
            vendor: if ainfo.driver.is_empty() {
                format!("{:#06x}", ainfo.vendor)
            } else {
                format!("{} {}", ainfo.driver, ainfo.driver_info)
            },
            memory_total: match options.capacity {
                Some(bytes) => bytes,
                None if cpu => ds_core::cpu::available_memory(),
                None => limits.max_buffer_size,
            },
            compute_units: if cpu {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                1
            },
            max_buffer_elements: None,
            capabilities: Capabilities::all_floats(),
        };
        let pool = Arc::new(WgpuPool::new(
            WgpuMemory {
                device: device.clone(),
                name: info.name.clone(),
                max_buffer: limits.max_buffer_size,
                error: error.clone(),
            },
            CACHE_CAP_BYTES,
        ));
        Ok(WgpuBackend {
            inner: Arc::new(Inner {
                device,
                queue,
                info,
                native_f16,
                max_binding: limits.max_storage_buffer_binding_size,
                offset_align: u64::from(limits.min_storage_buffer_offset_alignment),
                max_groups: limits.max_compute_workgroups_per_dimension,
                pool,
                capacity: options.capacity,
                pipelines: Mutex::new(HashMap::new()),
                error,
            }),
        })
    }

    /// The adapters this machine has, one line each (what `ds report` lists).
    pub fn adapters() -> Vec<String> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        adapter::describe(&adapter::list(&instance))
    }

    /// Whether f16 buffers use the adapter's native `f16` storage (else two per word).
    pub fn native_f16(&self) -> bool {
        self.inner.native_f16
    }

    /// The largest storage binding of this adapter, in bytes; larger buffers are processed
    /// in pieces.
    pub fn max_binding_bytes(&self) -> u64 {
        self.inner.max_binding
    }

    /// The storage a float or integer dtype has in kernels on this device.
    pub(crate) fn store(&self, dtype: DType) -> Store {
        match dtype {
            DType::F32 => Store::F32,
            DType::F16 if self.inner.native_f16 => Store::F16Native,
            DType::F16 => Store::F16Packed,
            DType::BF16 => Store::Bf16,
            DType::I32 => Store::I32,
            DType::U8 => Store::Raw8,
        }
    }

    /// The raw-bits storage of a dtype (copies, fills).
    pub(crate) fn raw_store(dtype: DType) -> Store {
        match dtype.size_bytes() {
            4 => Store::Raw32,
            2 => Store::Raw16,
            _ => Store::Raw8,
        }
    }

    /// A device error reported since the last check, as a ds error.
    pub(crate) fn check(&self) -> Result<()> {
        let taken = self
            .inner
            .error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match taken {
            None => Ok(()),
            Some(message) => Err(Error::Device {
                device: self.inner.info.name.clone(),
                message,
            }),
        }
    }

    /// An error naming this device.
    pub(crate) fn device_error(&self, message: impl Into<String>) -> Error {
        Error::Device {
            device: self.inner.info.name.clone(),
            message: message.into(),
        }
    }
}
