//! `ds train --backend wgpu` (the GPT, fp32, the built-in config; and at ZeRO-3 on two
//! threaded ranks) gives the CPU backend's losses at every step within 1e-4 relative. Built with `--features wgpu` (`scripts/test.sh` runs it on Mesa's lavapipe).
#![cfg(feature = "wgpu")]

mod common;

use common::losses;
use std::path::Path;
use std::process::Command;

const DS: &str = env!("CARGO_BIN_EXE_ds");
const STEPS: usize = 12;

fn train(backend: &str, dir: &Path) -> String {
    train_with(backend, dir, &[])
}

fn train_with(backend: &str, dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(DS)
        .args([
            "train",
            "--backend",
            backend,
            "--steps",
            &STEPS.to_string(),
            "--dim",
            "32",
            "--layers",
            "2",
            "--heads",
            "2",
            "--context",
            "16",
            "--sample-tokens",
            "8",
            "--save-dir",
        ])
        .arg(dir)
        .args(extra)
        .output()
        .expect("ds");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn ds_train_on_wgpu_matches_the_cpu_backend() {
    let dir = std::env::temp_dir().join(format!("ds-train-wgpu-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    train("cpu", &dir.join("cpu"));
    let out = train("wgpu", &dir.join("wgpu"));
    assert!(out.contains("wgpu"), "{out}");
    let (a, b) = (losses(&dir.join("cpu")), losses(&dir.join("wgpu")));
    assert_eq!(a.len(), STEPS);
    assert_eq!(b.len(), STEPS);
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        println!("step {:2}  cpu {x:.7}  wgpu {y:.7}", step + 1);
        assert!(
            (x - y).abs() <= 1e-4 * x.abs(),
            "step {}: cpu {x}, wgpu {y}",
            step + 1
        );
    }
    assert!(b[STEPS - 1] < b[0], "the model trains on wgpu: {b:?}");
    println!(
        "largest relative difference: {:.2e}",
        a.iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) / x).abs())
            .fold(0.0, f64::max)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ds_train_on_wgpu_at_zero_3_on_two_threaded_ranks_matches_one_cpu_rank() {
    let dir = std::env::temp_dir().join(format!("ds-train-wgpu3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch");
    let config = |stage: u8| {
        let path = dir.join(format!("stage{stage}.json"));
        let json = format!(
            r#"{{"train_batch_size": 32,
                "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.1}}}},
                "gradient_clipping": 1.0,
                "zero_optimization": {{"stage": {stage}, "stage3_param_persistence_threshold": 0}}}}"#
        );
        std::fs::write(&path, json).expect("config");
        path.display().to_string()
    };
    let (zero0, zero3) = (config(0), config(3));
    train_with("cpu", &dir.join("cpu"), &["--config", &zero0]);
    let out = train_with(
        "wgpu",
        &dir.join("wgpu"),
        &["--config", &zero3, "--ranks", "2"],
    );
    assert!(
        out.contains("ZeRO-3 collectives per optimizer step"),
        "{out}"
    );
    let (a, b) = (losses(&dir.join("cpu")), losses(&dir.join("wgpu")));
    assert_eq!((a.len(), b.len()), (STEPS, STEPS));
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-4 * x.abs(),
            "step {}: one cpu rank at stage 0 {x}, two wgpu ranks at stage 3 {y}",
            step + 1
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
