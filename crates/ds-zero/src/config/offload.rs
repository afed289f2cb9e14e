//! `zero_optimization.offload_optimizer` and `offload_param`, resolved with DeepSpeed's
//! defaults (`deepspeed/runtime/zero/offload_config.py`): every key is read and validated
//! here; which of them the engine runs is [`crate::offload`]'s decision.

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// Which of the two offload sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadKind {
    /// `offload_optimizer`.
    Optimizer,
    /// `offload_param`.
    Param,
}

/// One offload section, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct OffloadConfig {
    /// `cpu` or `nvme` (a section with `none` resolves to no offload).
    pub device: String,
    /// Pin host memory (default true).
    pub pin_memory: bool,
    /// NVMe directory for swap files.
    pub nvme_path: Option<String>,
    /// Host buffers for NVMe swapping (default 4 for the optimizer, 5 for parameters).
    pub buffer_count: u64,
    /// Elements per NVMe swap buffer (default 1e8).
    pub buffer_size: u64,
    /// Parameter elements kept in host memory when swapping to NVMe (default 1e9).
    pub max_in_cpu: u64,
    /// Overlap NVMe reads with the step (default false).
    pub pipeline_read: bool,
    /// Overlap NVMe writes with the step (default false).
    pub pipeline_write: bool,
    /// Skip writing initial optimizer state to NVMe (default false).
    pub fast_init: bool,
    /// Share of the optimizer state offloaded (default 1, all of it).
    pub ratio: f64,
    /// DeepSpeed's SuperOffload (default false).
    pub super_offload: bool,
    /// Share of the host cores CPU Adam uses under SuperOffload (default 0.8).
    pub cpuadam_cores_perc: f64,
}

impl OffloadConfig {
    /// DeepSpeed's defaults for `kind` on `device`.
    pub fn defaults(kind: OffloadKind, device: &str) -> Self {
        OffloadConfig {
            device: device.to_string(),
            pin_memory: true,
            nvme_path: None,
            buffer_count: match kind {
                OffloadKind::Optimizer => 4,
                OffloadKind::Param => 5,
            },
            buffer_size: 100_000_000,
            max_in_cpu: 1_000_000_000,
            pipeline_read: false,
            pipeline_write: false,
            fast_init: false,
            ratio: 1.0,
            super_offload: false,
            cpuadam_cores_perc: 0.8,
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        json!({
            "device": self.device,
            "pin_memory": self.pin_memory,
            "nvme_path": self.nvme_path,
            "buffer_count": self.buffer_count,
            "buffer_size": self.buffer_size,
            "max_in_cpu": self.max_in_cpu,
            "pipeline_read": self.pipeline_read,
            "pipeline_write": self.pipeline_write,
            "fast_init": self.fast_init,
            "ratio": self.ratio,
            "super_offload": self.super_offload,
            "cpuadam_cores_perc": self.cpuadam_cores_perc,
        })
    }
}

const KEYS: [&str; 12] = [
    "device",
    "pin_memory",
    "buffer_count",
    "buffer_size",
    "max_in_cpu",
    "fast_init",
    "ratio",
    "nvme_path",
    "pipeline_read",
    "pipeline_write",
    "super_offload",
    "cpuadam_cores_perc",
];

/// Reads one offload section; `None` without one or with `device: none`.
pub(super) fn resolve(
    o: Option<Obj<'_>>,
    kind: OffloadKind,
) -> Result<Option<OffloadConfig>, ConfigError> {
    let Some(mut o) = o else { return Ok(None) };
    let device = o.str("device")?.unwrap_or("none").to_string();
    if !["none", "cpu", "nvme"].contains(&device.as_str()) {
        return Err(ConfigError::invalid(
            o.key("device"),
            format!("`{device}` is not none, cpu or nvme"),
        ));
    }
    let mut c = OffloadConfig::defaults(kind, &device);
    c.pin_memory = o.bool("pin_memory")?.unwrap_or(c.pin_memory);
    c.nvme_path = o.str("nvme_path")?.map(str::to_string);
    c.buffer_count = o.u64("buffer_count")?.unwrap_or(c.buffer_count);
    c.buffer_size = o.u64("buffer_size")?.unwrap_or(c.buffer_size);
    c.max_in_cpu = o.u64("max_in_cpu")?.unwrap_or(c.max_in_cpu);
    c.pipeline_read = o.bool("pipeline_read")?.unwrap_or(c.pipeline_read);
    c.pipeline_write = o.bool("pipeline_write")?.unwrap_or(c.pipeline_write);
    c.fast_init = o.bool("fast_init")?.unwrap_or(c.fast_init);
    c.super_offload = o.bool("super_offload")?.unwrap_or(c.super_offload);
    for (key, slot) in [
        ("ratio", &mut c.ratio),
        ("cpuadam_cores_perc", &mut c.cpuadam_cores_perc),
    ] {
        if let Some(v) = o.f64(key)? {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::invalid(
                    o.key(key),
                    format!("{v} is not between 0 and 1"),
                ));
            }
            *slot = v;
        }
    }
    o.finish(&KEYS, &[])?;
    Ok((device != "none").then_some(c))
}
