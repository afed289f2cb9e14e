//! `scheduler`: {type, params} for WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle and
//! LRRangeTest, with DeepSpeed's parameter names and defaults. The formulas are in
//! [`crate::schedule`].

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// How warmup ramps the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmupType {
    /// Logarithmic in the step (DeepSpeed's default).
    Log,
    /// Linear in the step.
    Linear,
}

/// A resolved LR schedule configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum SchedulerConfig {
    /// Warm up, then hold `warmup_max_lr`.
    WarmupLr {
        /// Starting LR.
        warmup_min_lr: f64,
        /// LR after warmup; `None` (the default since DeepSpeed 0.19.4) uses the optimizer's LR.
        warmup_max_lr: Option<f64>,
        /// Warmup length in steps.
        warmup_num_steps: u64,
        /// Warmup shape.
        warmup_type: WarmupType,
    },
    /// Warm up, then decay linearly to 0 at `total_num_steps`.
    WarmupDecayLr {
        /// Starting LR.
        warmup_min_lr: f64,
        /// LR after warmup.
        warmup_max_lr: f64,
        /// Warmup length in steps.
        warmup_num_steps: u64,
        /// Warmup shape.
        warmup_type: WarmupType,
        /// Step at which the LR reaches 0.
        total_num_steps: u64,
    },
    /// Warm up as a ratio of the optimizer's LR, then cosine-decay to `cos_min_ratio`.
    WarmupCosineLr {
        /// Step at which the cosine ends.
        total_num_steps: u64,
        /// Starting ratio of the base LR.
        warmup_min_ratio: f64,
        /// Warmup length in steps.
        warmup_num_steps: u64,
        /// Final ratio of the base LR.
        cos_min_ratio: f64,
        /// Warmup shape.
        warmup_type: WarmupType,
    },
    /// The 1cycle policy, with optional momentum cycling.
    OneCycle {
        /// Lowest LR of the cycle.
        cycle_min_lr: f64,
        /// Highest LR of the cycle.
        cycle_max_lr: f64,
        /// LR decay rate after the cycle.
        decay_lr_rate: f64,
        /// Steps of the rising half.
        cycle_first_step_size: u64,
        /// Steps of the falling half (defaults to the first).
        cycle_second_step_size: u64,
        /// Stairs in the rising half (0 = continuous).
        cycle_first_stair_count: u64,
        /// Stairs in the falling half (defaults to the first's count).
        cycle_second_stair_count: u64,
        /// Steps per decay interval after the cycle.
        decay_step_size: u64,
        /// Whether momentum cycles inversely to the LR.
        cycle_momentum: bool,
        /// Lowest momentum.
        cycle_min_mom: f64,
        /// Highest momentum.
        cycle_max_mom: f64,
        /// Momentum decay rate after the cycle.
        decay_mom_rate: f64,
    },
    /// The LR range test: the LR grows from `lr_range_test_min_lr`.
    LrRangeTest {
        /// Starting LR.
        min_lr: f64,
        /// Steps per increase interval.
        step_size: u64,
        /// Growth per interval.
        step_rate: f64,
        /// Grow in stairs rather than continuously.
        staircase: bool,
    },
}

impl SchedulerConfig {
    pub(crate) fn to_json(&self) -> Value {
        let wt = |w: &WarmupType| match w {
            WarmupType::Log => "log",
            WarmupType::Linear => "linear",
        };
        match self {
            SchedulerConfig::WarmupLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => json!({
                "type": "WarmupLR", "warmup_min_lr": warmup_min_lr,
                "warmup_max_lr": warmup_max_lr.map_or(json!("the optimizer's lr"), |v| json!(v)),
                "warmup_num_steps": warmup_num_steps, "warmup_type": wt(warmup_type),
            }),
            SchedulerConfig::WarmupDecayLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
                total_num_steps,
            } => json!({
                "type": "WarmupDecayLR", "warmup_min_lr": warmup_min_lr, "warmup_max_lr": warmup_max_lr,
                "warmup_num_steps": warmup_num_steps, "warmup_type": wt(warmup_type), "total_num_steps": total_num_steps,
            }),
            SchedulerConfig::WarmupCosineLr {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                warmup_type,
            } => json!({
                "type": "WarmupCosineLR", "total_num_steps": total_num_steps, "warmup_min_ratio": warmup_min_ratio,
                "warmup_num_steps": warmup_num_steps, "cos_min_ratio": cos_min_ratio, "warmup_type": wt(warmup_type),
            }),
            SchedulerConfig::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                cycle_first_step_size,
                cycle_second_step_size,
                cycle_first_stair_count,
                cycle_second_stair_count,
                decay_step_size,
                cycle_momentum,
                cycle_min_mom,
                cycle_max_mom,
                decay_mom_rate,
            } => json!({
                "type": "OneCycle", "cycle_min_lr": cycle_min_lr, "cycle_max_lr": cycle_max_lr,
                "decay_lr_rate": decay_lr_rate, "cycle_first_step_size": cycle_first_step_size,
                "cycle_second_step_size": cycle_second_step_size, "cycle_first_stair_count": cycle_first_stair_count,
                "cycle_second_stair_count": cycle_second_stair_count, "decay_step_size": decay_step_size,
                "cycle_momentum": cycle_momentum, "cycle_min_mom": cycle_min_mom, "cycle_max_mom": cycle_max_mom,
                "decay_mom_rate": decay_mom_rate,
            }),
            SchedulerConfig::LrRangeTest {
                min_lr,
                step_size,
                step_rate,
                staircase,
            } => json!({
                "type": "LRRangeTest", "lr_range_test_min_lr": min_lr, "lr_range_test_step_size": step_size,
                "lr_range_test_step_rate": step_rate, "lr_range_test_staircase": staircase,
            }),
        }
    }
}

fn warmup_type(p: &mut Obj<'_>) -> Result<WarmupType, ConfigError> {
    match p.str("warmup_type")? {
        None | Some("log") => Ok(WarmupType::Log),
        Some("linear") => Ok(WarmupType::Linear),
        Some(other) => Err(ConfigError::invalid(
            p.key("warmup_type"),
            format!("`{other}` is not `log` or `linear`"),
        )),
    }
}

fn required(p: &mut Obj<'_>, key: &'static str) -> Result<u64, ConfigError> {
    p.u64(key)?
        .ok_or_else(|| ConfigError::invalid(p.key(key), "is required for this scheduler"))
}

fn required_f(p: &mut Obj<'_>, key: &'static str) -> Result<f64, ConfigError> {
    p.f64(key)?
        .ok_or_else(|| ConfigError::invalid(p.key(key), "is required for this scheduler"))
}

/// Reads the `scheduler` object.
pub(super) fn resolve(mut o: Obj<'_>) -> Result<SchedulerConfig, ConfigError> {
    let name = o
        .str("type")?
        .ok_or_else(|| ConfigError::invalid(o.key("type"), "missing: name the schedule"))?
        .to_string();
    let empty = Value::Object(serde_json::Map::new());
    let params_value = o.raw("params")?.unwrap_or(&empty);
    let mut p = Obj::new(o.key("params"), params_value)?;
    let cfg = match name.as_str() {
        "WarmupLR" | "WarmupDecayLR" => {
            let warmup_min_lr = p.f64("warmup_min_lr")?.unwrap_or(0.0);
            let max_lr = p.f64("warmup_max_lr")?;
            let warmup_num_steps = p.u64("warmup_num_steps")?.unwrap_or(1000);
            if warmup_num_steps == 0 {
                return Err(ConfigError::invalid(
                    p.key("warmup_num_steps"),
                    "must be a positive integer",
                ));
            }
            let wt = warmup_type(&mut p)?;
            if name == "WarmupLR" {
                p.finish(
                    &[
                        "warmup_min_lr",
                        "warmup_max_lr",
                        "warmup_num_steps",
                        "warmup_type",
                    ],
                    &[],
                )?;
                SchedulerConfig::WarmupLr {
                    warmup_min_lr,
                    warmup_max_lr: max_lr,
                    warmup_num_steps,
                    warmup_type: wt,
                }
            } else {
                let total_num_steps = required(&mut p, "total_num_steps")?;
                p.finish(
                    &[
                        "warmup_min_lr",
                        "warmup_max_lr",
                        "warmup_num_steps",
                        "warmup_type",
                        "total_num_steps",
                    ],
                    &[],
                )?;
                SchedulerConfig::WarmupDecayLr {
                    warmup_min_lr,
                    warmup_max_lr: max_lr.unwrap_or(0.001),
                    warmup_num_steps,
                    warmup_type: wt,
                    total_num_steps,
                }
            }
        }
        "WarmupCosineLR" => {
            let total_num_steps = required(&mut p, "total_num_steps")?;
            let warmup_min_ratio = p.f64("warmup_min_ratio")?.unwrap_or(0.0);
            let warmup_num_steps = p.u64("warmup_num_steps")?.unwrap_or(1000);
            let cos_min_ratio = p.f64("cos_min_ratio")?.unwrap_or(0.0001);
            let wt = warmup_type(&mut p)?;
            if warmup_num_steps == 0 {
                return Err(ConfigError::invalid(
                    p.key("warmup_num_steps"),
                    "must be a positive integer",
                ));
            }
            p.finish(
                &[
                    "total_num_steps",
                    "warmup_min_ratio",
                    "warmup_num_steps",
                    "cos_min_ratio",
                    "warmup_type",
                ],
                &[],
            )?;
            SchedulerConfig::WarmupCosineLr {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                warmup_type: wt,
            }
        }
        "OneCycle" => {
            let cycle_min_lr = required_f(&mut p, "cycle_min_lr")?;
            let cycle_max_lr = required_f(&mut p, "cycle_max_lr")?;
            let decay_lr_rate = p.f64("decay_lr_rate")?.unwrap_or(0.0);
            let cycle_first_step_size = p.u64("cycle_first_step_size")?.unwrap_or(2000);
            let cycle_second_step_size = p
                .u64("cycle_second_step_size")?
                .unwrap_or(cycle_first_step_size);
            let cycle_first_stair_count = p.u64("cycle_first_stair_count")?.unwrap_or(0);
            let cycle_second_stair_count = p
                .u64("cycle_second_stair_count")?
                .unwrap_or(cycle_first_stair_count);
            let decay_step_size = p.u64("decay_step_size")?.unwrap_or(0);
            let cycle_momentum = p.bool("cycle_momentum")?.unwrap_or(true);
            let cycle_min_mom = p.f64("cycle_min_mom")?.unwrap_or(0.8);
            let cycle_max_mom = p.f64("cycle_max_mom")?.unwrap_or(0.9);
            let decay_mom_rate = p.f64("decay_mom_rate")?.unwrap_or(0.0);
            if cycle_first_step_size == 0 {
                return Err(ConfigError::invalid(
                    p.key("cycle_first_step_size"),
                    "must be at least 1",
                ));
            }
            p.finish(
                &[
                    "cycle_min_lr",
                    "cycle_max_lr",
                    "decay_lr_rate",
                    "cycle_first_step_size",
                    "cycle_second_step_size",
                    "cycle_first_stair_count",
                    "cycle_second_stair_count",
                    "decay_step_size",
                    "cycle_momentum",
                    "cycle_min_mom",
                    "cycle_max_mom",
                    "decay_mom_rate",
                ],
                &[],
            )?;
            SchedulerConfig::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                cycle_first_step_size,
                cycle_second_step_size,
                cycle_first_stair_count,
                cycle_second_stair_count,
                decay_step_size,
                cycle_momentum,
                cycle_min_mom,
                cycle_max_mom,
                decay_mom_rate,
            }
        }
        "LRRangeTest" => {
            let min_lr = p.f64("lr_range_test_min_lr")?.unwrap_or(0.001);
            let step_size = p.u64("lr_range_test_step_size")?.unwrap_or(2000);
            let step_rate = p.f64("lr_range_test_step_rate")?.unwrap_or(1.0);
            let staircase = p.bool("lr_range_test_staircase")?.unwrap_or(false);
            if step_size == 0 {
                return Err(ConfigError::invalid(
                    p.key("lr_range_test_step_size"),
                    "must be at least 1",
                ));
            }
            p.finish(
                &[
                    "lr_range_test_min_lr",
                    "lr_range_test_step_size",
                    "lr_range_test_step_rate",
                    "lr_range_test_staircase",
                ],
                &[],
            )?;
            SchedulerConfig::LrRangeTest {
                min_lr,
                step_size,
                step_rate,
                staircase,
            }
        }
        other => {
            return Err(ConfigError::invalid(
                o.key("type"),
                format!(
                    "unknown scheduler `{other}`; ds offers WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle and LRRangeTest"
                ),
            ));
        }
    };
    o.finish(&["type", "params"], &[])?;
    Ok(cfg)
}
