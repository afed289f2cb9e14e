//! Reads criterion's results (`target/criterion`) and states every kernel as a fraction of the
//! limits measured in the same run: memory-bound kernels against the copy bandwidth (and the
//! optimizer steps against the in-place 4-read/3-write kernel of their shape), GEMM against the
//! measured FMA peak.
//!
//! Run after `cargo bench -p benches --bench kernels`:
//! `cargo run -p benches --bin bench-report [CRITERION_DIR]`.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One benchmark's median time and declared throughput.
struct Result {
    id: String,
    seconds: f64,
    bytes: Option<f64>,
    elements: Option<f64>,
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn collect(dir: &Path, out: &mut Vec<Result>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "new") {
            let (Some(bench), Some(est)) = (
                read_json(&path.join("benchmark.json")),
                read_json(&path.join("estimates.json")),
            ) else {
                continue;
            };
            let Some(ns) = est["median"]["point_estimate"].as_f64() else {
                continue;
            };
            out.push(Result {
                id: bench["full_id"].as_str().unwrap_or("?").to_string(),
                seconds: ns * 1e-9,
                bytes: bench["throughput"]["Bytes"].as_f64(),
                elements: bench["throughput"]["Elements"].as_f64(),
            });
        } else if path.is_dir() && path.file_name().is_some_and(|n| n != "report") {
            collect(&path, out);
        }
    }
}

/// `2 m n k` for ids like `gemm/f32/1024x1024x1024` (times the batch for `..._batchedB/...`).
fn gemm_flops(id: &str) -> Option<f64> {
    let mut parts = id.split('/');
    if parts.next()? != "gemm" {
        return None;
    }
    let kind = parts.next()?;
    let dims: Vec<f64> = parts
        .next()?
        .split('x')
        .map(|d| d.parse().ok())
        .collect::<Option<_>>()?;
    let batch = kind
        .split("batched")
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or(1.0);
    (dims.len() == 3).then(|| 2.0 * dims[0] * dims[1] * dims[2] * batch)
}

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/criterion"));
    let mut results = Vec::new();
    collect(&dir, &mut results);
    if results.is_empty() {
        eprintln!(
            "no criterion results under {}; run `cargo bench -p benches --bench kernels` first",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    results.sort_by(|a, b| a.id.cmp(&b.id));
    let rate = |id: &str| {
        results
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.bytes.map(|b| b / r.seconds))
    };
    let copy = rate("memory/copy_f32/64M");
    let roof = rate("memory/inplace_4r3w/64M");
    let peak = results
        .iter()
        .find(|r| r.id == "gemm/fma_peak/flop")
        .and_then(|r| r.elements.map(|e| e / r.seconds));
    println!(
        "{:<52} {:>10} {:>9} {:>9} {:>9}",
        "benchmark", "median", "GB/s", "% copy", "% 4r3w"
    );
    for r in &results {
        let gbs = r.bytes.map(|b| b / r.seconds / 1e9);
        let pct = |base: Option<f64>| match (r.bytes, base) {
            (Some(b), Some(base)) => format!("{:.0}%", 100.0 * b / r.seconds / base),
            _ => "-".into(),
        };
        let of_roof = if r.id.starts_with("optimizer/") {
            pct(roof)
        } else {
            "-".into()
        };
        print!(
            "{:<52} {:>8.2}ms {:>9} {:>9} {:>9}",
            r.id,
            r.seconds * 1e3,
            gbs.map_or("-".into(), |g| format!("{g:.1}")),
            pct(copy),
            of_roof
        );
        if let (Some(f), Some(p)) = (gemm_flops(&r.id), peak) {
            print!(
                "   {:.1} GFLOP/s = {:.0}% of FMA peak",
                f / r.seconds / 1e9,
                100.0 * f / r.seconds / p
            );
        }
        if r.id == "gemm/fma_peak/flop" {
            print!(
                "   peak {:.1} GFLOP/s",
                r.elements.unwrap_or(0.0) / r.seconds / 1e9
            );
        }
        println!();
    }
    ExitCode::SUCCESS
}
