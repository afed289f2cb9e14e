//! `ds config check FILE [--world-size N] [--steps N] [--dim N]`: validates a DeepSpeed JSON config the way the
//! engine reads it and prints every resolved setting (batch triple, optimizer and its mode, LR
//! schedule, precision and loss scaler, ZeRO stage and buckets) as JSON, with where the
//! engine will keep the optimizer state and parameters (`offload`), and every `"auto"` value
//! resolved as `ds train` with those flags (default: its defaults) resolves it (`auto`: key,
//! value, source).

use super::train::auto;
use ds_zero::config::Config;
use std::path::Path;

/// The resolved settings of the config at `path` for `world_size` ranks, pretty-printed JSON,
/// or the error to print (naming the file and the key at fault); `"auto"` values are filled
/// as `ds train --steps steps --dim dim` fills them.
///
/// # Errors
/// A message when the file cannot be read or the config is invalid.
pub fn check(path: &Path, world_size: usize, steps: u64, dim: usize) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let fill = auto::fill(steps, dim);
    let (config, resolved) = Config::parse_with(&text, world_size, &fill)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = config.to_json();
    if !resolved.is_empty() {
        out["auto"] = auto::to_json(&resolved);
    }
    out["offload"] = ds_zero::offload::plan(&config);
    serde_json::to_string_pretty(&out).map_err(|e| format!("cannot print the settings: {e}"))
}
