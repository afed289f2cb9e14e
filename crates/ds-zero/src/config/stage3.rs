//! ZeRO stage 3's keys in `zero_optimization`, resolved with DeepSpeed 0.19's defaults. Each
//! key DeepSpeed documents for stage 3 is either implemented here or refused by name; the
//! short spellings (`max_live_parameters` for `stage3_max_live_parameters`, ...) are accepted
//! as DeepSpeed accepts them.

use super::ConfigError;
use super::json::Obj;
use serde_json::{Value, json};

/// Resolved stage-3 settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage3Config {
    /// The most gathered parameter elements held at once, prefetched and kept ones included
    /// (default 1e9). 0 is DeepSpeed's "nothing beyond what is in use": no prefetch, no
    /// reuse, and the groups the model opens are gathered whatever their size.
    pub max_live_parameters: u64,
    /// Keep a released group gathered when the previous step's trace says it is used again
    /// within this many gathered elements (default 1e9).
    pub max_reuse_distance: u64,
    /// Elements of upcoming groups gathered ahead of use (default 5e7; 0 turns prefetch off).
    pub prefetch_bucket_size: u64,
    /// Parameters with fewer elements stay whole on every rank (default 1e5).
    pub param_persistence_threshold: u64,
    /// At most this many elements persist in all (default: no limit).
    pub model_persistence_threshold: u64,
    /// Whether a checkpoint's model file holds the whole 16-bit weights, gathered (default
    /// false: the weights are saved as per-rank pieces only).
    pub gather_16bit_weights_on_model_save: bool,
    /// DeepSpeed's optimizer sub-group size (default 1e9): accepted; ds steps bucket by bucket.
    pub sub_group_size: u64,
}

impl Default for Stage3Config {
    fn default() -> Self {
        Stage3Config {
            max_live_parameters: 1_000_000_000,
            max_reuse_distance: 1_000_000_000,
            prefetch_bucket_size: 50_000_000,
            param_persistence_threshold: 100_000,
            model_persistence_threshold: u64::MAX,
            gather_16bit_weights_on_model_save: false,
            sub_group_size: 1_000_000_000,
        }
    }
}

impl Stage3Config {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "stage3_max_live_parameters": self.max_live_parameters,
            "stage3_max_reuse_distance": self.max_reuse_distance,
            "stage3_prefetch_bucket_size": self.prefetch_bucket_size,
            "stage3_param_persistence_threshold": self.param_persistence_threshold,
            "stage3_model_persistence_threshold": self.model_persistence_threshold,
            "stage3_gather_16bit_weights_on_model_save": self.gather_16bit_weights_on_model_save,
            "sub_group_size": self.sub_group_size,
        })
    }
}

/// The keys this module reads (every spelling).
pub(super) const KEYS: [&str; 21] = [
    "stage3_max_live_parameters",
    "max_live_parameters",
    "stage3_max_reuse_distance",
    "max_reuse_distance",
    "stage3_prefetch_bucket_size",
    "prefetch_bucket_size",
    "stage3_param_persistence_threshold",
    "param_persistence_threshold",
    "stage3_model_persistence_threshold",
    "model_persistence_threshold",
    "stage3_gather_16bit_weights_on_model_save",
    "gather_16bit_weights_on_model_save",
    "stage3_gather_fp16_weights_on_model_save",
    "sub_group_size",
    "stage3_module_granularity_threshold",
    "module_granularity_threshold",
    "stage3_use_all_reduce_for_fetch_params",
    "use_all_reduce_for_fetch_params",
    "zero_hpz_partition_size",
    "stage3_allgather_sequential",
    "allgather_sequential",
];

/// The value of whichever of `names` (spellings of one setting) the object has, read by
/// `read`; two spellings with different values are an error naming the second.
fn spelled<'a, T: PartialEq + Copy>(
    o: &mut Obj<'a>,
    names: &[&'a str],
    read: impl Fn(&mut Obj<'a>, &'a str) -> Result<Option<T>, ConfigError>,
) -> Result<Option<T>, ConfigError> {
    let mut found = None;
    for &n in names {
        if let Some(v) = read(o, n)? {
            if found.is_some_and(|f| f != v) {
                return Err(ConfigError::invalid(
                    o.key(n),
                    format!(
                        "disagrees with `{}`, another spelling of the same setting",
                        names[0]
                    ),
                ));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

fn number<'a>(o: &mut Obj<'a>, names: &[&'a str]) -> Result<Option<u64>, ConfigError> {
    spelled(o, names, |o, n| o.u64(n))
}

fn flag<'a>(o: &mut Obj<'a>, names: &[&'a str]) -> Result<Option<bool>, ConfigError> {
    spelled(o, names, |o, n| o.bool(n))
}

/// Reads the stage-3 keys of `zero_optimization` (they are validated at every stage, as
/// DeepSpeed does, and take effect at stage 3).
pub(super) fn resolve(o: &mut Obj<'_>) -> Result<Stage3Config, ConfigError> {
    let d = Stage3Config::default();
    let c = Stage3Config {
        max_live_parameters: number(o, &["stage3_max_live_parameters", "max_live_parameters"])?
            .unwrap_or(d.max_live_parameters),
        max_reuse_distance: number(o, &["stage3_max_reuse_distance", "max_reuse_distance"])?
            .unwrap_or(d.max_reuse_distance),
        prefetch_bucket_size: number(o, &["stage3_prefetch_bucket_size", "prefetch_bucket_size"])?
            .unwrap_or(d.prefetch_bucket_size),
        param_persistence_threshold: number(
            o,
            &[
                "stage3_param_persistence_threshold",
                "param_persistence_threshold",
            ],
        )?
        .unwrap_or(d.param_persistence_threshold),
        model_persistence_threshold: number(
            o,
            &[
                "stage3_model_persistence_threshold",
                "model_persistence_threshold",
            ],
        )?
        .unwrap_or(d.model_persistence_threshold),
        gather_16bit_weights_on_model_save: flag(
            o,
            &[
                "stage3_gather_16bit_weights_on_model_save",
                "gather_16bit_weights_on_model_save",
                "stage3_gather_fp16_weights_on_model_save",
            ],
        )?
        .unwrap_or(d.gather_16bit_weights_on_model_save),
        sub_group_size: number(o, &["sub_group_size"])?.unwrap_or(d.sub_group_size),
    };
    let refuse = |o: &Obj<'_>, key: &str, feature: &str| ConfigError::Unsupported {
        key: o.key(key),
        feature: feature.into(),
    };
    let names = [
        "stage3_module_granularity_threshold",
        "module_granularity_threshold",
    ];
    if number(o, &names)?.is_some_and(|v| v > 0) {
        return Err(refuse(
            o,
            names[0],
            "gathering small modules whole by a granularity threshold (ds gathers the groups the model declares)",
        ));
    }
    let names = [
        "stage3_use_all_reduce_for_fetch_params",
        "use_all_reduce_for_fetch_params",
    ];
    if flag(o, &names)? == Some(true) {
        return Err(refuse(
            o,
            names[0],
            "fetching ZeRO-3 parameters with all-reduce (ds all-gathers them)",
        ));
    }
    if number(o, &["zero_hpz_partition_size"])?.is_some_and(|v| v > 1) {
        return Err(refuse(
            o,
            "zero_hpz_partition_size",
            "ZeRO++ hierarchical partitioning (hpZ)",
        ));
    }
    // ds gathers one group per collective call, in order: what sequential all-gather asks.
    let _ = flag(o, &["stage3_allgather_sequential", "allgather_sequential"])?;
    Ok(c)
}
