//! Helpers shared by the `ds train` comparison tests.

use std::path::Path;

/// The per-step losses a `ds train` run wrote to `DIR/metrics.jsonl`.
pub fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            v["loss"].as_f64().expect("loss")
        })
        .collect()
}
