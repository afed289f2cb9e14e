//! `zero_optimization`: a bool (legacy: `true` is stage 1) or an object. Every key DeepSpeed
//! documents is accepted and validated; stage 3's are resolved in [`super::stage3`]; offload
//! settings are resolved in [`super::offload`].

use super::ConfigError;
use super::json::Obj;
use super::offload::{self, OffloadConfig, OffloadKind};
use super::stage3::{self, Stage3Config};
use serde_json::{Value, json};

/// Resolved ZeRO settings (DeepSpeed's defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct ZeroConfig {
    /// 0 (plain data parallel), 1, 2 or 3.
    pub stage: u8,
    /// Copy gradients into a contiguous buffer as they are produced (default true).
    pub contiguous_gradients: bool,
    /// Overlap gradient reduction with backward (default: true at stage 3, false otherwise).
    pub overlap_comm: bool,
    /// Reduce with reduce-scatter rather than all-reduce (default true).
    pub reduce_scatter: bool,
    /// Elements per gradient reduction bucket (default 5e8).
    pub reduce_bucket_size: u64,
    /// All-gather updated partitions (default true).
    pub allgather_partitions: bool,
    /// Elements per all-gather bucket (default 5e8).
    pub allgather_bucket_size: u64,
    /// Optimizer offload, when configured.
    pub offload_optimizer: Option<OffloadConfig>,
    /// Parameter offload, when configured.
    pub offload_param: Option<OffloadConfig>,
    /// Stage 3 settings (validated at every stage, used at stage 3).
    pub stage3: Stage3Config,
    /// Other flags DeepSpeed documents that do not change what ds computes, as written.
    pub flags: serde_json::Map<String, Value>,
}

impl Default for ZeroConfig {
    fn default() -> Self {
        ZeroConfig {
            stage: 0,
            contiguous_gradients: true,
            overlap_comm: false,
            reduce_scatter: true,
            reduce_bucket_size: 500_000_000,
            allgather_partitions: true,
            allgather_bucket_size: 500_000_000,
            offload_optimizer: None,
            offload_param: None,
            stage3: Stage3Config::default(),
            flags: serde_json::Map::new(),
        }
    }
}

impl ZeroConfig {
    pub(crate) fn to_json(&self) -> Value {
        let off =
            |o: &Option<OffloadConfig>| o.as_ref().map_or(Value::Null, OffloadConfig::to_json);
        json!({
            "stage": self.stage,
            "contiguous_gradients": self.contiguous_gradients,
            "overlap_comm": self.overlap_comm,
            "reduce_scatter": self.reduce_scatter,
            "reduce_bucket_size": self.reduce_bucket_size,
            "allgather_partitions": self.allgather_partitions,
            "allgather_bucket_size": self.allgather_bucket_size,
            "offload_optimizer": off(&self.offload_optimizer),
            "offload_param": off(&self.offload_param),
            "stage3": self.stage3.to_json(),
            "flags": Value::Object(self.flags.clone()),
        })
    }
}

/// Numbers DeepSpeed documents whose effect ds does not need (validated, kept as written).
const OTHER_NUMBERS: [&str; 2] = ["allgather_size", "overlap_events"];
const OTHER_BOOLS: [&str; 14] = [
    "round_robin_gradients",
    "elastic_checkpoint",
    "ignore_unused_parameters",
    "load_from_fp32_weights",
    "use_multi_rank_bucket_allreduce",
    "compute_grad_norm",
    "parameter_alignment",
    "memory_efficient_linear",
    "pipeline_loading_checkpoint",
    "override_module_apply",
    "log_trace_cache_warnings",
    "enable_sanity_checks",
    "save_muon_momentum_buffer_in_memory",
    "cpu_offload_use_pin_memory",
];

/// Reads `zero_optimization`.
pub(super) fn resolve(top: &mut Obj<'_>) -> Result<ZeroConfig, ConfigError> {
    let mut z = ZeroConfig::default();
    let Some(value) = top.raw("zero_optimization")? else {
        return Ok(z);
    };
    if let Value::Bool(b) = value {
        z.stage = if *b { 1 } else { 0 };
        return Ok(z);
    }
    let mut o = Obj::new("zero_optimization", value)?;
    let stage = o.u64("stage")?.unwrap_or(0);
    if stage > 3 {
        return Err(ConfigError::invalid(
            o.key("stage"),
            format!("{stage} is not a ZeRO stage (0, 1, 2 or 3)"),
        ));
    }
    z.stage = stage as u8;
    z.contiguous_gradients = o
        .bool("contiguous_gradients")?
        .unwrap_or(z.contiguous_gradients);
    z.overlap_comm = o.bool("overlap_comm")?.unwrap_or(stage == 3);
    z.reduce_scatter = o.bool("reduce_scatter")?.unwrap_or(z.reduce_scatter);
    z.reduce_bucket_size = o.u64("reduce_bucket_size")?.unwrap_or(z.reduce_bucket_size);
    z.allgather_partitions = o
        .bool("allgather_partitions")?
        .unwrap_or(z.allgather_partitions);
    z.allgather_bucket_size = o
        .u64("allgather_bucket_size")?
        .unwrap_or(z.allgather_bucket_size);
    if z.reduce_bucket_size == 0 || z.allgather_bucket_size == 0 {
        return Err(ConfigError::invalid(
            o.key("reduce_bucket_size"),
            "bucket sizes must be at least 1 element",
        ));
    }
    z.offload_optimizer = offload::resolve(o.obj("offload_optimizer")?, OffloadKind::Optimizer)?;
    z.offload_param = offload::resolve(o.obj("offload_param")?, OffloadKind::Param)?;
    if o.bool("legacy_stage1")?.unwrap_or(false) {
        return Err(ConfigError::Unsupported {
            key: o.key("legacy_stage1"),
            feature: "the deprecated ZeRO stage 1 (removed from DeepSpeed in 0.5.9)".into(),
        });
    }
    if o.bool("cpu_offload_param")?.unwrap_or(false) {
        z.offload_param = Some(OffloadConfig::defaults(OffloadKind::Param, "cpu"));
    }
    if o.bool("cpu_offload")?.unwrap_or(false) {
        // Legacy spelling of offload_optimizer.device = cpu.
        z.offload_optimizer = Some(OffloadConfig::defaults(OffloadKind::Optimizer, "cpu"));
    }
    z.stage3 = stage3::resolve(&mut o)?;
    for k in OTHER_NUMBERS {
        if let Some(v) = o.u64(k)? {
            z.flags.insert(k.to_string(), json!(v));
        }
    }
    for k in OTHER_BOOLS {
        if let Some(v) = o.bool(k)? {
            z.flags.insert(k.to_string(), json!(v));
        }
    }
    let mut known: Vec<&str> = vec![
        "stage",
        "contiguous_gradients",
        "overlap_comm",
        "reduce_scatter",
        "reduce_bucket_size",
        "allgather_partitions",
        "allgather_bucket_size",
        "offload_optimizer",
        "offload_param",
        "cpu_offload",
        "cpu_offload_param",
        "legacy_stage1",
    ];
    known.extend(stage3::KEYS);
    known.extend(OTHER_NUMBERS);
    known.extend(OTHER_BOOLS);
    let unsupported = [
        ("zero_quantized_weights", "ZeRO++ quantized weights"),
        (
            "zero_quantized_nontrainable_weights",
            "ZeRO++ quantized weights",
        ),
        ("zero_quantized_gradients", "ZeRO++ quantized gradients"),
        ("mics_shard_size", "MiCS sharding"),
        ("mics_hierarchical_params_gather", "MiCS sharding"),
        ("zeropp_loco_param", "ZeRO++ LoCo"),
        ("zenflow", "ZenFlow"),
        ("leaf_module", "ZeRO-3 leaf modules"),
    ];
    o.finish(&known, &unsupported)?;
    Ok(z)
}
