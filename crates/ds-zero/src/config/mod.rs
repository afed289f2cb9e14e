//! DeepSpeed's JSON configuration, read as DeepSpeed reads it, with one strict schema.
//!
//! [`Config::parse`] reads the text (as DeepSpeed does, HJSON: comments and trailing commas
//! allowed, a duplicate key refused) for a given world size and resolves every default in one
//! place (the `resolve` functions of the submodules, each default documented beside it). An
//! unknown key is an error with a "did you mean"; keys starting with `_` are comments; a key of
//! a DeepSpeed feature ds does not implement is refused by name unless its value leaves the
//! feature off (a disabled block is accepted and ignored, as DeepSpeed ignores it); `"auto"` (a
//! Hugging Face integration placeholder) is filled by [`Config::parse_with`] from the caller's
//! [`AutoFill`] and refused, naming the key, where nothing fills it. [`Config::to_json`] prints the resolved settings, which
//! is what `ds config check` shows.
//!
//! DeepSpeed 0.19 resolves a bare `"fp16": {"enabled": true}` to initial scale 2^16, window
//! 1000, hysteresis 2 and floor 1 on every path (older releases started ZeRO at 2^32 without
//! hysteresis); ds follows 0.19.

mod aio;
mod auto;
mod batch;
mod checkpointing;
mod curriculum;
mod data_types;
mod inert;
mod json;
mod offload;
mod optimizer;
mod precision;
mod scheduler;
mod stage3;
mod text;
mod zero;

pub use aio::AioConfig;
pub use auto::{AutoFill, FILLABLE, Resolved};
pub use batch::Batch;
pub use checkpointing::ActivationCheckpointing;
pub use curriculum::{Curriculum, CurriculumConfig, CurriculumSchedule};
pub use data_types::{DataTypes, GradDtypes};
pub use offload::{OffloadConfig, OffloadKind};
pub use optimizer::{OptimizerConfig, OptimizerKind};
pub use precision::{Fp16Config, Precision};
pub use scheduler::{SchedulerConfig, WarmupType};
pub use stage3::Stage3Config;
pub use zero::ZeroConfig;

/// An element count from the config as a `usize` (saturating: a count past the address space
/// is no limit).
pub(crate) fn elements(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

use json::Obj;
use serde_json::{Value, json};

/// What is wrong with a configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON (nor the HJSON DeepSpeed also reads), or gives a key twice.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong there.
        message: String,
    },
    /// A key nobody knows.
    #[error("unknown config key `{key}`{}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// The full key path.
        key: String,
        /// The closest known key.
        suggestion: Option<String>,
    },
    /// A DeepSpeed feature ds does not implement.
    #[error("`{key}` configures {feature}, which ds does not implement; remove it from the config")]
    Unsupported {
        /// The full key path.
        key: String,
        /// The feature, by name.
        feature: String,
    },
    /// `"auto"` that nothing fills ([`AutoFill`]).
    #[error("`{key}` is \"auto\": {reason}")]
    Auto {
        /// The full key path.
        key: String,
        /// Why it stays unfilled, and what to do.
        reason: String,
    },
    /// A value of the wrong type.
    #[error("`{key}` must be {expected}, found {found}")]
    Type {
        /// The full key path.
        key: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A value out of its allowed range or inconsistent with another.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// The full key path.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Top-level keys ds reads.
const TOP_KEYS: [&str; 29] = [
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "optimizer",
    "scheduler",
    "fp16",
    "bf16",
    "bfloat16",
    "gradient_clipping",
    "prescale_gradients",
    "gradient_predivide_factor",
    "steps_per_print",
    "wall_clock_breakdown",
    "zero_optimization",
    "zero_allow_untested_optimizer",
    "seed",
    "gradient_allreduce_op",
    "managed_gradient_accumulation",
    "dataloader_drop_last",
    "log_level",
    "disable_python_gc",
    "vocabulary_size",
    "sequence_parallel_size",
    "aio",
    "zero_force_ds_cpu_optimizer",
    "activation_checkpointing",
    "data_types",
    "communication_data_type",
    "curriculum_learning",
];

/// Top-level keys of DeepSpeed features ds does not implement, with what they configure.
const UNSUPPORTED_TOP: [(&str, &str); 37] = [
    ("amp", "NVIDIA Apex AMP"),
    ("autotuning", "DeepSpeed's autotuner"),
    (
        "compression_training",
        "compression training (quantization, pruning)",
    ),
    ("flops_profiler", "the FLOPs profiler"),
    ("sparse_attention", "sparse attention"),
    ("pipeline", "pipeline parallelism"),
    (
        "data_efficiency",
        "data efficiency (curriculum learning, data routing)",
    ),
    ("elasticity", "elastic training"),
    ("tensorboard", "TensorBoard monitoring"),
    ("wandb", "Weights & Biases monitoring"),
    ("csv_monitor", "CSV monitoring"),
    ("comet", "Comet monitoring"),
    ("comms_logger", "the communication logger"),
    ("nebula", "Nebula checkpointing"),
    ("checkpoint", "DeepSpeed's checkpoint engine options"),
    ("quantize_training", "quantized training"),
    ("progressive_layer_drop", "progressive layer drop"),
    ("eigenvalue", "eigenvalue computation"),
    ("sparse_gradients", "sparse gradients"),
    (
        "seq_parallel_communication_data_type",
        "sequence-parallel communication",
    ),
    (
        "gradient_accumulation_dtype",
        "a separate gradient accumulation dtype",
    ),
    ("memory_breakdown", "the memory breakdown logger"),
    ("dump_state", "state dumping"),
    ("disable_allgather", "disabling the ZeRO all-gather"),
    ("hybrid_engine", "the RLHF hybrid engine"),
    ("graph_harvesting", "CUDA graph harvesting"),
    ("torch_autocast", "PyTorch autocast"),
    ("tensor_parallel", "tensor parallelism"),
    ("expert_parallel", "expert parallelism"),
    ("weight_quantization", "weight quantization"),
    ("compile", "torch.compile"),
    ("datastates_ckpt", "DataStates checkpointing"),
    ("timers", "DeepSpeed's throughput timers"),
    (
        "use_data_before_expert_parallelism",
        "expert-parallel data ordering",
    ),
    ("data_parallel_size", "an explicit data-parallel mesh"),
    ("allgather_size", "the legacy boolean `zero_optimization`"),
    ("msamp", "MS-AMP FP8 training"),
];

/// A resolved DeepSpeed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The batch triple and the world size it was resolved for.
    pub batch: Batch,
    /// The optimizer, when the config names one.
    pub optimizer: Option<OptimizerConfig>,
    /// The LR schedule, when the config names one.
    pub scheduler: Option<SchedulerConfig>,
    /// fp32, fp16 with its loss scaler, or bf16.
    pub precision: Precision,
    /// Global gradient-norm clipping threshold; 0 disables clipping (default 1.0, as in
    /// DeepSpeed 0.19.4 and later).
    pub gradient_clipping: f32,
    /// Average gradients over ranks (`gradient_allreduce_op: "mean"`, the default) or sum them.
    pub gradient_average: bool,
    /// Divide gradients by the world size before reducing them (default false).
    pub prescale_gradients: bool,
    /// Divide gradients by this before reducing and by `world / factor` after (default 1).
    pub gradient_predivide_factor: f32,
    /// Log every this many optimizer steps; `None` (the default) does not log.
    pub steps_per_print: Option<u64>,
    /// Time forward, backward and step separately in the logs (default false).
    pub wall_clock_breakdown: bool,
    /// ZeRO settings.
    pub zero: ZeroConfig,
    /// How NVMe offload issues its I/O (`aio`).
    pub aio: AioConfig,
    /// Seed for parameter initialisation and data order (not a DeepSpeed key; default 1234).
    pub seed: u64,
    /// Activation checkpointing, when the config has the block (the model applies it).
    pub activation_checkpointing: Option<ActivationCheckpointing>,
    /// `data_types.grad_accum_dtype` and `communication_data_type` as asked; resolved for the
    /// stage by [`Config::grad_dtypes`].
    pub data_types: DataTypes,
    /// `curriculum_learning` when enabled (the model applies the sequence length).
    pub curriculum: Option<CurriculumConfig>,
}

impl Config {
    /// Parses and resolves `text` for `world_size` ranks. The text is read as DeepSpeed reads
    /// it (`hjson.load`: JSON plus comments and trailing commas), a duplicate key refused.
    ///
    /// # Errors
    /// The first problem found, as a [`ConfigError`] naming the key.
    pub fn parse(text: &str, world_size: usize) -> Result<Config, ConfigError> {
        Config::parse_with(text, world_size, &AutoFill::none()).map(|(c, _)| c)
    }

    /// As [`Config::parse`], with every `"auto"` a trainer fills taken from `fill`: the config
    /// and each key resolved that way, with its value and source (what `ds train` prints).
    ///
    /// # Errors
    /// As [`Config::parse`]; an `"auto"` on a key no integration fills ([`FILLABLE`]) or that
    /// `fill` has no value for is [`ConfigError::Auto`].
    pub fn parse_with(
        text: &str,
        world_size: usize,
        fill: &AutoFill,
    ) -> Result<(Config, Vec<Resolved>), ConfigError> {
        let mut value = text::parse(text)?;
        let (mut resolved, derived) = auto::apply(&mut value, fill)?;
        let config = Config::from_value(&value, world_size)?;
        for d in derived {
            let b = &config.batch;
            let v = match d.key {
                "train_batch_size" => b.train_batch_size,
                "train_micro_batch_size_per_gpu" => b.micro_batch_per_gpu,
                _ => b.gradient_accumulation_steps,
            };
            resolved.push(Resolved {
                key: d.key.to_string(),
                value: v.into(),
                source: d.source,
            });
        }
        resolved.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((config, resolved))
    }

    /// Resolves an already-parsed JSON value.
    ///
    /// # Errors
    /// As [`Config::parse`].
    pub fn from_value(value: &Value, world_size: usize) -> Result<Config, ConfigError> {
        let mut top = Obj::new("", value)?;
        let batch = batch::resolve(&mut top, world_size)?;
        let optimizer = match top.obj("optimizer")? {
            Some(o) => Some(optimizer::resolve(o)?),
            None => None,
        };
        let scheduler = match top.obj("scheduler")? {
            Some(s) => Some(scheduler::resolve(s)?),
            None => None,
        };
        let precision = precision::resolve(&mut top)?;
        let gradient_clipping = top.f32("gradient_clipping")?.unwrap_or(1.0);
        if !(gradient_clipping >= 0.0 && gradient_clipping.is_finite()) {
            return Err(ConfigError::invalid(
                "gradient_clipping",
                "must be 0 (off) or a positive norm",
            ));
        }
        let prescale_gradients = top.bool("prescale_gradients")?.unwrap_or(false);
        let gradient_predivide_factor = top.f32("gradient_predivide_factor")?.unwrap_or(1.0);
        if !(gradient_predivide_factor > 0.0 && gradient_predivide_factor.is_finite()) {
            return Err(ConfigError::invalid(
                "gradient_predivide_factor",
                "must be a positive number",
            ));
        }
        let steps_per_print = top.u64("steps_per_print")?;
        if steps_per_print == Some(0) {
            return Err(ConfigError::invalid(
                "steps_per_print",
                "must be at least 1 (omit it to disable logging)",
            ));
        }
        let gradient_average = match top
            .str("gradient_allreduce_op")?
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("mean") => true,
            Some("sum") => false,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "gradient_allreduce_op",
                    format!("`{other}` is not `mean` or `sum`"),
                ));
            }
        };
        // Accepted for compatibility; they change nothing in ds.
        let _ = top.bool("managed_gradient_accumulation")?;
        let _ = top.bool("dataloader_drop_last")?;
        let _ = top.raw("log_level")?;
        let _ = top.bool("disable_python_gc")?;
        let _ = top.u64("vocabulary_size")?;
        if let Some(sp) = top.u64("sequence_parallel_size")?
            && sp != 1
        {
            return Err(ConfigError::Unsupported {
                key: "sequence_parallel_size".into(),
                feature: "sequence parallelism".into(),
            });
        }
        let wall_clock_breakdown = top.bool("wall_clock_breakdown")?.unwrap_or(false);
        let zero = zero::resolve(&mut top)?;
        let aio = aio::resolve(&mut top)?;
        let _ = top.bool("zero_allow_untested_optimizer")?;
        // DeepSpeed's default, true, runs its CPU optimizer for offloaded states; ds always
        // runs its own fused CPU optimizer there, and has no other for `false` to allow.
        let _ = top.bool("zero_force_ds_cpu_optimizer")?;
        let seed = top.u64("seed")?.unwrap_or(1234);
        let activation_checkpointing = checkpointing::resolve(&mut top)?;
        let data_types = data_types::resolve(&mut top, precision.dtype())?;
        let curriculum = curriculum::resolve(&mut top)?;
        top.finish(&TOP_KEYS, &UNSUPPORTED_TOP)?;
        Ok(Config {
            batch,
            optimizer,
            scheduler,
            precision,
            gradient_clipping,
            gradient_average,
            prescale_gradients,
            gradient_predivide_factor,
            steps_per_print,
            wall_clock_breakdown,
            zero,
            aio,
            seed,
            activation_checkpointing,
            data_types,
            curriculum,
        })
    }

    /// The gradients' model, accumulation and communication dtypes at this config's stage.
    pub fn grad_dtypes(&self) -> GradDtypes {
        GradDtypes::resolve(self.data_types, self.precision.dtype(), self.zero.stage)
    }

    /// The resolved settings as JSON (what `ds config check` prints).
    pub fn to_json(&self) -> Value {
        json!({
            "world_size": self.batch.world_size,
            "train_batch_size": self.batch.train_batch_size,
            "train_micro_batch_size_per_gpu": self.batch.micro_batch_per_gpu,
            "gradient_accumulation_steps": self.batch.gradient_accumulation_steps,
            "optimizer": self.optimizer.as_ref().map_or(Value::Null, OptimizerConfig::to_json),
            "scheduler": self.scheduler.as_ref().map_or(Value::Null, SchedulerConfig::to_json),
            "precision": self.precision.to_json(),
            "gradient_clipping": self.gradient_clipping,
            "gradient_allreduce_op": if self.gradient_average { "mean" } else { "sum" },
            "prescale_gradients": self.prescale_gradients,
            "gradient_predivide_factor": self.gradient_predivide_factor,
            "steps_per_print": self.steps_per_print,
            "wall_clock_breakdown": self.wall_clock_breakdown,
            "zero_optimization": self.zero.to_json(),
            "aio": self.aio.to_json(),
            "seed": self.seed,
            "activation_checkpointing": self.activation_checkpointing.map_or(Value::Null, ActivationCheckpointing::to_json),
            "data_types": self.data_types.to_json(self.grad_dtypes()),
            "curriculum_learning": self.curriculum.as_ref().map_or(Value::Null, CurriculumConfig::to_json),
        })
    }
}
