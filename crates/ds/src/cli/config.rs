//! `ds config check FILE [--world-size N]`: validates a DeepSpeed JSON config the way the
//! engine reads it and prints every resolved setting (batch triple, optimizer and its mode, LR
//! schedule, precision and loss scaler, ZeRO stage and buckets) as JSON, with where the
//! engine will keep the optimizer state and parameters (`offload`).

use ds_zero::config::Config;
use std::path::Path;

/// The resolved settings of the config at `path` for `world_size` ranks, pretty-printed JSON,
/// or the error to print (naming the file and the key at fault).
///
/// # Errors
/// A message when the file cannot be read or the config is invalid.
pub fn check(path: &Path, world_size: usize) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config =
        Config::parse(&text, world_size).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = config.to_json();
    out["offload"] = ds_zero::offload::plan(&config);
    serde_json::to_string_pretty(&out).map_err(|e| format!("cannot print the settings: {e}"))
}
