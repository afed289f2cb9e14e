//! What `ds train` fills for a config's `"auto"` values (Hugging Face's integration fills the
//! same keys from its trainer's arguments): ds train's own flags and defaults, each with its
//! source. `ds config check` fills them the same way with ds train's default flags, so what it
//! shows is what training would use.

use ds_zero::config::{AutoFill, Resolved};
use serde_json::json;

/// ds train's learning rate, betas and weight decay (its built-in config's).
const LR: f64 = 0.003;
const BETAS: [f64; 2] = [0.9, 0.95];
const WEIGHT_DECAY: f64 = 0.1;
/// ds train's global batch.
pub(crate) const GLOBAL_BATCH: u64 = 32;

/// The fill for a run of `steps` optimizer steps on a model of width `width`.
pub fn fill(steps: u64, width: usize) -> AutoFill {
    let w = width as u64;
    AutoFill::none()
        .with(
            "train_batch_size",
            GLOBAL_BATCH,
            "ds train's default global batch",
        )
        .with(
            "gradient_accumulation_steps",
            1,
            "ds train's default (no accumulation)",
        )
        .with("gradient_clipping", 1.0, "ds train's default clipping norm")
        .with(
            "optimizer.params.lr",
            LR,
            "ds train's default learning rate",
        )
        .with(
            "optimizer.params.betas",
            json!(BETAS),
            "ds train's default betas",
        )
        .with("optimizer.params.eps", 1e-8, "the optimizer's default")
        .with(
            "optimizer.params.weight_decay",
            WEIGHT_DECAY,
            "ds train's default weight decay",
        )
        .with(
            "scheduler.params.warmup_min_lr",
            0.0,
            "Hugging Face's value (0)",
        )
        .with("scheduler.params.warmup_max_lr", LR, "the learning rate")
        .with(
            "scheduler.params.warmup_num_steps",
            (steps / 10).max(1),
            "10% of --steps",
        )
        .with("scheduler.params.total_num_steps", steps.max(1), "--steps")
        .with(
            "fp16.enabled",
            false,
            "fp32 unless the config enables a precision",
        )
        .with(
            "bf16.enabled",
            false,
            "fp32 unless the config enables a precision",
        )
        .with(
            "amp.enabled",
            false,
            "ds has no apex AMP; fp32 unless the config enables a precision",
        )
        .with(
            "amp.opt_level",
            "O1",
            "Hugging Face's default (unused: amp stays off)",
        )
        .with("zero_optimization.stage", 2, "ds train's default stage")
        .with(
            "zero_optimization.reduce_bucket_size",
            w * w,
            "the model width squared, as Hugging Face's integration",
        )
        .with(
            "zero_optimization.stage3_prefetch_bucket_size",
            w * w * 9 / 10,
            "0.9 x the model width squared, as Hugging Face's integration",
        )
        .with(
            "zero_optimization.stage3_param_persistence_threshold",
            10 * w,
            "10 x the model width, as Hugging Face's integration",
        )
        .with(
            "zero_optimization.stage3_gather_16bit_weights_on_model_save",
            false,
            "accelerate's default",
        )
        .with(
            "zero_optimization.offload_optimizer.device",
            "none",
            "accelerate's default (no offload)",
        )
        .with(
            "zero_optimization.offload_param.device",
            "none",
            "accelerate's default (no offload)",
        )
}

/// One line per resolved key, as `ds train` prints them.
pub fn lines(resolved: &[Resolved]) -> Vec<String> {
    resolved
        .iter()
        .map(|r| {
            format!(
                "[ds] config: {} = {} (\"auto\": {})",
                r.key, r.value, r.source
            )
        })
        .collect()
}

/// The resolved keys as JSON, for `ds config check`.
pub fn to_json(resolved: &[Resolved]) -> serde_json::Value {
    resolved
        .iter()
        .map(|r| json!({"key": r.key, "value": r.value, "source": r.source}))
        .collect()
}
