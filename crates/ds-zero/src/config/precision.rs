//! fp16 (with its loss scaler) and bf16.

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// The fp16 loss scaler's settings (DeepSpeed 0.19's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fp16Config {
    /// A fixed loss scale; `None` (config `loss_scale: 0`, the default) scales dynamically.
    pub static_scale: Option<f32>,
    /// The dynamic scale starts at `2^initial_scale_power` (default 16).
    pub initial_scale_power: u32,
    /// Clean steps before the scale doubles (default 1000).
    pub loss_scale_window: u64,
    /// Overflows tolerated before the scale halves (default 2).
    pub hysteresis: u64,
    /// Refill the hysteresis on every clean step instead of never (default false).
    pub consecutive_hysteresis: bool,
    /// The floor; an overflow at the floor is an error (default 1).
    pub min_loss_scale: f32,
}

impl Default for Fp16Config {
    fn default() -> Self {
        Fp16Config {
            static_scale: None,
            initial_scale_power: 16,
            loss_scale_window: 1000,
            hysteresis: 2,
            consecutive_hysteresis: false,
            min_loss_scale: 1.0,
        }
    }
}

/// Training precision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Precision {
    /// fp32 parameters, gradients and optimizer state.
    Fp32,
    /// fp16 parameters and gradients with a loss scaler; fp32 master weights.
    Fp16(Fp16Config),
    /// bf16 parameters and gradients; fp32 master weights; no loss scaling.
    Bf16,
}

impl Precision {
    /// The storage dtype of parameters and gradients.
    pub fn dtype(&self) -> ds_core::DType {
        match self {
            Precision::Fp32 => ds_core::DType::F32,
            Precision::Fp16(_) => ds_core::DType::F16,
            Precision::Bf16 => ds_core::DType::BF16,
        }
    }

    pub(crate) fn to_json(self) -> Value {
        match self {
            Precision::Fp32 => json!({"dtype": "fp32"}),
            Precision::Bf16 => json!({"dtype": "bf16"}),
            Precision::Fp16(c) => json!({
                "dtype": "fp16",
                "loss_scale": c.static_scale.map_or(json!("dynamic"), |s| json!(s)),
                "initial_scale_power": c.initial_scale_power,
                "initial_scale": 2f64.powi(c.initial_scale_power as i32),
                "loss_scale_window": c.loss_scale_window,
                "hysteresis": c.hysteresis,
                "consecutive_hysteresis": c.consecutive_hysteresis,
                "min_loss_scale": c.min_loss_scale,
            }),
        }
    }
}

const FP16_KEYS: [&str; 8] = [
    "enabled",
    "loss_scale",
    "initial_scale_power",
    "loss_scale_window",
    "hysteresis",
    "consecutive_hysteresis",
    "min_loss_scale",
    "auto_cast",
];
const FP16_UNSUPPORTED: [(&str, &str); 1] = [(
    "fp16_master_weights_and_grads",
    "fp16 master weights (ds keeps fp32 masters)",
)];
const BF16_KEYS: [&str; 3] = ["enabled", "immediate_grad_update", "check_grad_overflow"];
const BF16_UNSUPPORTED: [(&str, &str); 2] = [
    (
        "bf16_master_weights_and_grads",
        "bf16 master weights and gradients (ds keeps fp32 masters)",
    ),
    (
        "bf16_optimizer_states",
        "bf16 optimizer states (ds keeps them in fp32)",
    ),
];

fn fp16(mut o: Obj<'_>) -> Result<Option<Fp16Config>, ConfigError> {
    let enabled = o.bool("enabled")?.unwrap_or(false);
    let d = Fp16Config::default();
    let loss_scale = o.f32("loss_scale")?.unwrap_or(0.0);
    if !(loss_scale >= 0.0 && loss_scale.is_finite()) {
        return Err(ConfigError::invalid(
            o.key("loss_scale"),
            "must be 0 (dynamic) or a positive scale",
        ));
    }
    let power = o
        .u64("initial_scale_power")?
        .unwrap_or(u64::from(d.initial_scale_power));
    if power > 100 {
        return Err(ConfigError::invalid(
            o.key("initial_scale_power"),
            "must be at most 100",
        ));
    }
    let window = o.u64("loss_scale_window")?.unwrap_or(d.loss_scale_window);
    if window == 0 {
        return Err(ConfigError::invalid(
            o.key("loss_scale_window"),
            "must be at least 1",
        ));
    }
    let hysteresis = o.u64("hysteresis")?.unwrap_or(d.hysteresis);
    if hysteresis == 0 {
        return Err(ConfigError::invalid(
            o.key("hysteresis"),
            "must be at least 1",
        ));
    }
    let consecutive = o
        .bool("consecutive_hysteresis")?
        .unwrap_or(d.consecutive_hysteresis);
    let min = o.f32("min_loss_scale")?.unwrap_or(d.min_loss_scale);
    if !(min > 0.0 && min.is_finite()) {
        return Err(ConfigError::invalid(
            o.key("min_loss_scale"),
            "must be a positive scale",
        ));
    }
    // DeepSpeed's auto_cast casts the model's floating-point inputs to fp16 before forward.
    // ds-nn's models always upload their float inputs in the training dtype (and take token
    // ids as integers), which is what it asks for; a `Model` of one's own gets its batch on
    // the host and casts it as it uploads it.
    let _ = o.bool("auto_cast")?;
    o.finish(&FP16_KEYS, &FP16_UNSUPPORTED)?;
    Ok(enabled.then_some(Fp16Config {
        static_scale: (loss_scale > 0.0).then_some(loss_scale),
        initial_scale_power: power as u32,
        loss_scale_window: window,
        hysteresis,
        consecutive_hysteresis: consecutive,
        min_loss_scale: min,
    }))
}

fn bf16(mut o: Obj<'_>) -> Result<bool, ConfigError> {
    let enabled = o.bool("enabled")?.unwrap_or(false);
    let _ = o.bool("immediate_grad_update")?;
    let _ = o.bool("check_grad_overflow")?;
    o.finish(&BF16_KEYS, &BF16_UNSUPPORTED)?;
    Ok(enabled)
}

/// Reads `fp16`, `bf16` and the legacy `bfloat16`.
pub(super) fn resolve(top: &mut Obj<'_>) -> Result<Precision, ConfigError> {
    let f16 = match top.obj("fp16")? {
        Some(o) => fp16(o)?,
        None => None,
    };
    if top.has("bf16") && top.has("bfloat16") {
        return Err(ConfigError::invalid(
            "bfloat16",
            "give either `bf16` or the legacy `bfloat16`, not both",
        ));
    }
    let b16 = match (top.obj("bf16")?, top.obj("bfloat16")?) {
        (Some(o), _) | (None, Some(o)) => bf16(o)?,
        (None, None) => false,
    };
    match (f16, b16) {
        (Some(_), true) => Err(ConfigError::invalid(
            "bf16",
            "fp16 and bf16 are both enabled; enable one of them",
        )),
        (Some(c), false) => Ok(Precision::Fp16(c)),
        (None, true) => Ok(Precision::Bf16),
        (None, false) => Ok(Precision::Fp32),
    }
}
