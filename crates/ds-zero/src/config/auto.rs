//! `"auto"`: the placeholder Hugging Face's DeepSpeed integration fills from its trainer's
//! arguments before DeepSpeed reads the config (transformers' `HfTrainerDeepSpeedConfig`,
//! accelerate's `DeepSpeedPlugin`). 32 of 49 published configs sampled use it. ds's trainer
//! (`ds train`) fills the same keys from its own flags and defaults through an [`AutoFill`];
//! [`Config::parse_with`](super::Config::parse_with) applies it and reports every key it
//! resolved with the value and where it came from.
//!
//! An `"auto"` on a key no integration fills stays an error naming it, as does a fillable one
//! the caller has no value for (plain [`Config::parse`](super::Config::parse) fills nothing).
//!
//! The batch triple follows the integration's intent with DeepSpeed's own derivation: an
//! `"auto"` batch key is derived from the others when they determine it, and otherwise takes
//! the caller's default (the global batch, accumulation 1).

use super::ConfigError;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The key paths integrations fill when they are `"auto"`.
pub const FILLABLE: [&str; 23] = [
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer.params.lr",
    "optimizer.params.betas",
    "optimizer.params.eps",
    "optimizer.params.weight_decay",
    "scheduler.params.warmup_min_lr",
    "scheduler.params.warmup_max_lr",
    "scheduler.params.warmup_num_steps",
    "scheduler.params.total_num_steps",
    "fp16.enabled",
    "bf16.enabled",
    "amp.enabled",
    "amp.opt_level",
    "zero_optimization.stage",
    "zero_optimization.reduce_bucket_size",
    "zero_optimization.stage3_prefetch_bucket_size",
    "zero_optimization.stage3_param_persistence_threshold",
    "zero_optimization.stage3_gather_16bit_weights_on_model_save",
    "zero_optimization.offload_optimizer.device",
    "zero_optimization.offload_param.device",
];

/// The batch keys, which are derived from each other when they can be.
const TRAIN: &str = "train_batch_size";
const MICRO: &str = "train_micro_batch_size_per_gpu";
const ACCUMULATION: &str = "gradient_accumulation_steps";

/// The values a trainer fills for `"auto"`, each with where it came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AutoFill {
    values: BTreeMap<String, (Value, String)>,
}

impl AutoFill {
    /// Fills nothing: every `"auto"` is an error.
    pub fn none() -> AutoFill {
        AutoFill::default()
    }

    /// Fills `key` (one of [`FILLABLE`]) with `value`, citing `source` (e.g. "ds train's
    /// --steps"). For the batch keys the value is the default used when the others do not
    /// determine it.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>, source: impl Into<String>) -> Self {
        self.values
            .insert(key.to_string(), (value.into(), source.into()));
        self
    }
}

/// One `"auto"` that was resolved: its key, final value and source.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The key path, e.g. `optimizer.params.lr`.
    pub key: String,
    /// The value it took.
    pub value: Value,
    /// Where the value came from.
    pub source: String,
}

/// A batch key whose value is known only after the triple is resolved.
pub(crate) struct Derived {
    pub(crate) key: &'static str,
    pub(crate) source: String,
}

/// Replaces every `"auto"` in `config` from `fill`: the resolved keys, and the batch keys to
/// read back after the triple is resolved.
pub(crate) fn apply(
    config: &mut Value,
    fill: &AutoFill,
) -> Result<(Vec<Resolved>, Vec<Derived>), ConfigError> {
    let mut autos = Vec::new();
    find(config, "", &mut autos);
    let mut resolved = Vec::new();
    let mut batch_autos = Vec::new();
    for path in autos {
        if !FILLABLE.contains(&path.as_str()) {
            return Err(ConfigError::Auto {
                key: path,
                reason: "no integration fills this key (DeepSpeed does not take \"auto\" here); \
                         write the value you want"
                    .into(),
            });
        }
        if [TRAIN, MICRO, ACCUMULATION].contains(&path.as_str()) {
            batch_autos.push(path);
            continue;
        }
        let Some((value, source)) = fill.values.get(&path) else {
            return Err(ConfigError::Auto {
                key: path,
                reason: "nothing fills it here (`ds train` and `ds config check` do); write the \
                         value you want"
                    .into(),
            });
        };
        set(config, &path, Some(value.clone()));
        resolved.push(Resolved {
            key: path,
            value: value.clone(),
            source: source.clone(),
        });
    }
    let derived = batch(config, &batch_autos, fill)?;
    Ok((resolved, derived))
}

/// The batch keys that were `"auto"`: removed so DeepSpeed's rules derive them, with the
/// caller's defaults put back where the remaining keys cannot determine them.
fn batch(
    config: &mut Value,
    autos: &[String],
    fill: &AutoFill,
) -> Result<Vec<Derived>, ConfigError> {
    if autos.is_empty() {
        return Ok(Vec::new());
    }
    for key in autos {
        set(config, key, None);
    }
    let given = |c: &Value, k: &str| c.get(k).is_some_and(|v| !v.is_null());
    let mut defaulted = Vec::new();
    // No batch size left: the caller's global batch (also when the config leaves
    // `train_batch_size` out and makes only the micro-batch "auto").
    if !given(config, TRAIN) && !given(config, MICRO) {
        defaulted.push(TRAIN);
    }
    if autos.iter().any(|k| k == ACCUMULATION) && !(given(config, TRAIN) && given(config, MICRO)) {
        defaulted.push(ACCUMULATION);
    }
    let mut derived = Vec::new();
    for key in [TRAIN, MICRO, ACCUMULATION] {
        let default = defaulted.contains(&key);
        if !default && !autos.iter().any(|k| k == key) {
            continue;
        }
        let source = if default {
            let Some((value, source)) = fill.values.get(key) else {
                return Err(ConfigError::Auto {
                    key: autos[0].clone(),
                    reason: format!(
                        "the other batch keys do not determine it and nothing gives `{key}` \
                         here; write the value you want"
                    ),
                });
            };
            set(config, key, Some(value.clone()));
            source.clone()
        } else {
            "derived: train_batch_size = train_micro_batch_size_per_gpu x \
             gradient_accumulation_steps x world size"
                .to_string()
        };
        derived.push(Derived { key, source });
    }
    Ok(derived)
}

/// Collects the paths of every `"auto"` string under `v`.
fn find(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s == "auto" => out.push(path.to_string()),
        Value::Object(m) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                find(child, &p, out);
            }
        }
        _ => {}
    }
}

/// Sets (or with `None` removes) the value at a dotted `path` whose parents exist.
fn set(v: &mut Value, path: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut at = v;
    for p in parts {
        match at.get_mut(p) {
            Some(next) => at = next,
            None => return,
        }
    }
    if let Value::Object(m) = at {
        let m: &mut Map<String, Value> = m;
        match value {
            Some(value) => {
                m.insert(last.to_string(), value);
            }
            None => {
                m.remove(last);
            }
        }
    }
}
