//! `curriculum_learning` (DeepSpeed's legacy curriculum, `curriculum_type: "seqlen"`): train on
//! short sequences first and lengthen them on a schedule, Megatron-DeepSpeed's recipe.
//!
//! The engine asks the schedule for the difficulty before each forward (at
//! `global_steps + 1`, as DeepSpeed's engine does) and hands it to the model
//! (`Model::set_curriculum_seqlen`), which trains on the first that many positions of each
//! sequence. Formulas (DeepSpeed's `CurriculumScheduler`), with `s` the step:
//!
//! - `fixed_linear` / `fixed_root`: `d = floor((s / total_curriculum_step)^(1/root_degree) *
//!   (max - min) + min)`, less `d % difficulty_step`, at most `max` (linear: degree 1);
//! - `fixed_discrete`: `difficulty[i]` for the first `max_step[i] >= s`, the last difficulty
//!   after the last `max_step`.
//!
//! The difficulty only changes while it is below `max_difficulty`, as in DeepSpeed.

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// How the difficulty grows with the step.
#[derive(Debug, Clone, PartialEq)]
pub enum CurriculumSchedule {
    /// `(s / total)^(1 / degree)` of the way from min to max, in multiples of `step`.
    Root {
        /// Steps from `min_difficulty` to `max_difficulty`.
        total_steps: u64,
        /// The difficulty is a multiple of this.
        difficulty_step: u64,
        /// 1 for `fixed_linear`.
        degree: f64,
    },
    /// `difficulty[i]` up to step `max_step[i]`.
    Discrete {
        /// One more than `max_step`.
        difficulty: Vec<u64>,
        /// The last step of each difficulty but the last.
        max_step: Vec<u64>,
    },
}

/// The resolved block (present only when enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct CurriculumConfig {
    /// The first difficulty (sequence length).
    pub min_difficulty: u64,
    /// The last.
    pub max_difficulty: u64,
    /// How it grows.
    pub schedule: CurriculumSchedule,
}

impl CurriculumConfig {
    /// The schedule's difficulty at step `s` (before the hold at `max_difficulty`).
    pub fn difficulty_at(&self, s: u64) -> u64 {
        let (min, max) = (self.min_difficulty, self.max_difficulty);
        match &self.schedule {
            CurriculumSchedule::Root {
                total_steps,
                difficulty_step,
                degree,
            } => {
                let frac = (s as f64 / *total_steps as f64).powf(1.0 / degree);
                let d = (frac * (max - min) as f64 + min as f64).floor() as u64;
                (d - d % difficulty_step).min(max)
            }
            CurriculumSchedule::Discrete {
                difficulty,
                max_step,
            } => max_step
                .iter()
                .position(|&m| s <= m)
                .map_or(difficulty[difficulty.len() - 1], |i| difficulty[i]),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let schedule = match &self.schedule {
            CurriculumSchedule::Root {
                total_steps,
                difficulty_step,
                degree,
            } => json!({"type": if *degree == 1.0 { "fixed_linear" } else { "fixed_root" },
                "total_curriculum_step": total_steps, "difficulty_step": difficulty_step,
                "root_degree": degree}),
            CurriculumSchedule::Discrete {
                difficulty,
                max_step,
            } => json!({"type": "fixed_discrete", "difficulty": difficulty, "max_step": max_step}),
        };
        json!({"curriculum_type": "seqlen", "min_difficulty": self.min_difficulty,
            "max_difficulty": self.max_difficulty, "schedule": schedule})
    }
}

/// The difficulty a run has reached: DeepSpeed's scheduler state.
#[derive(Debug, Clone, PartialEq)]
pub struct Curriculum {
    config: CurriculumConfig,
    current: u64,
}

impl Curriculum {
    /// At `min_difficulty`, before the first step.
    pub fn new(config: CurriculumConfig) -> Self {
        let current = config.min_difficulty;
        Curriculum { config, current }
    }

    /// The state after `steps` optimizer steps (what a resumed run continues from): the
    /// updates of steps 1 to `steps` replayed.
    pub fn after(config: CurriculumConfig, steps: u64) -> Self {
        let mut c = Curriculum::new(config);
        for s in 1..=steps {
            c.update(s);
        }
        c
    }

    /// Moves to step `s`'s difficulty unless the maximum is reached; returns the difficulty.
    pub fn update(&mut self, s: u64) -> u64 {
        if self.current < self.config.max_difficulty {
            self.current = self.config.difficulty_at(s);
        }
        self.current
    }

    /// The current difficulty.
    pub fn current(&self) -> u64 {
        self.current
    }
}

const KEYS: [&str; 6] = [
    "enabled",
    "curriculum_type",
    "min_difficulty",
    "max_difficulty",
    "schedule_type",
    "schedule_config",
];

fn required(o: &mut Obj<'_>, key: &'static str) -> Result<u64, ConfigError> {
    o.u64(key)?.ok_or_else(|| {
        ConfigError::invalid(
            o.key(key),
            "required by curriculum learning (DeepSpeed asserts it too)",
        )
    })
}

fn u64_list(o: &mut Obj<'_>, key: &'static str) -> Result<Vec<u64>, ConfigError> {
    let path = o.key(key);
    match o.raw(key)? {
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    ConfigError::invalid(path.clone(), "must list non-negative integers")
                })
            })
            .collect(),
        _ => Err(ConfigError::invalid(
            path,
            "required: a non-empty list of integers",
        )),
    }
}

/// Reads the block; `None` when absent or disabled.
pub(super) fn resolve(top: &mut Obj<'_>) -> Result<Option<CurriculumConfig>, ConfigError> {
    let Some(mut o) = top.obj("curriculum_learning")? else {
        return Ok(None);
    };
    if !o.bool("enabled")?.unwrap_or(false) {
        return Ok(None);
    }
    match o.str("curriculum_type")? {
        Some("seqlen") => {}
        Some(other) => {
            return Err(ConfigError::Unsupported {
                key: o.key("curriculum_type"),
                feature: format!("curriculum learning by `{other}` (ds's models take `seqlen`)"),
            });
        }
        None => {
            return Err(ConfigError::invalid(
                o.key("curriculum_type"),
                "required: ds's models take \"seqlen\"",
            ));
        }
    }
    let min_difficulty = required(&mut o, "min_difficulty")?;
    let max_difficulty = required(&mut o, "max_difficulty")?;
    if min_difficulty == 0 || max_difficulty < min_difficulty {
        return Err(ConfigError::invalid(
            o.key("max_difficulty"),
            "needs 1 <= min_difficulty <= max_difficulty",
        ));
    }
    let kind = o.str("schedule_type")?.unwrap_or("").to_string();
    let sched_key = o.key("schedule_config");
    let mut sc = o.obj("schedule_config")?.ok_or_else(|| {
        ConfigError::invalid(sched_key.clone(), "required by curriculum learning")
    })?;
    let schedule = match kind.as_str() {
        "fixed_linear" | "fixed_root" => {
            let total_steps = required(&mut sc, "total_curriculum_step")?;
            let difficulty_step = required(&mut sc, "difficulty_step")?;
            let degree = if kind == "fixed_root" {
                sc.f64("root_degree")?.ok_or_else(|| {
                    ConfigError::invalid(
                        sc.key("root_degree"),
                        "required by the fixed_root schedule",
                    )
                })?
            } else {
                1.0
            };
            if total_steps == 0 || difficulty_step == 0 || !(degree > 0.0 && degree.is_finite()) {
                return Err(ConfigError::invalid(
                    sched_key,
                    "total_curriculum_step, difficulty_step and root_degree must be positive",
                ));
            }
            let keys: &[&str] = if kind == "fixed_root" {
                &["total_curriculum_step", "difficulty_step", "root_degree"]
            } else {
                &["total_curriculum_step", "difficulty_step"]
            };
            sc.finish(keys, &[])?;
            CurriculumSchedule::Root {
                total_steps,
                difficulty_step,
                degree,
            }
        }
        "fixed_discrete" => {
            let difficulty = u64_list(&mut sc, "difficulty")?;
            let max_step = u64_list(&mut sc, "max_step")?;
            if difficulty.len() != max_step.len() + 1 {
                return Err(ConfigError::invalid(
                    sched_key,
                    "`difficulty` needs exactly one more entry than `max_step`",
                ));
            }
            sc.finish(&["difficulty", "max_step"], &[])?;
            CurriculumSchedule::Discrete {
                difficulty,
                max_step,
            }
        }
        "custom" => {
            return Err(ConfigError::Unsupported {
                key: o.key("schedule_type"),
                feature: "a custom curriculum schedule (a Python function in DeepSpeed)".into(),
            });
        }
        other => {
            return Err(ConfigError::invalid(
                o.key("schedule_type"),
                format!("`{other}` is not fixed_linear, fixed_root or fixed_discrete"),
            ));
        }
    };
    o.finish(&KEYS, &[])?;
    Ok(Some(CurriculumConfig {
        min_difficulty,
        max_difficulty,
        schedule,
    }))
}
