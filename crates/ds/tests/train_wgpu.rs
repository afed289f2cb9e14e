//! `ds train --backend wgpu` (the GPT, fp32, the built-in config) gives the CPU backend's
//! losses at every step within 1e-4 relative. Built with `--features wgpu` (`scripts/test.sh` runs it on Mesa's lavapipe).
#![cfg(feature = "wgpu")]

mod common;

use common::losses;
use std::path::Path;
use std::process::Command;

const DS: &str = env!("CARGO_BIN_EXE_ds");
const STEPS: usize = 12;

fn train(backend: &str, dir: &Path) -> String {
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
