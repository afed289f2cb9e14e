//! `mpirun -np 2 ds train` (ZeRO-2, the built-in config; and ZeRO-3 from a config file) gives
//! one rank's losses on the same global batch, within the engine's tolerance (1e-5 relative);
//! only rank 0 writes metrics.
//! Built with `--features mpi` (`scripts/test.sh` runs it).
#![cfg(feature = "mpi")]

mod common;

use common::losses;
use std::path::Path;
use std::process::Command;

const DS: &str = env!("CARGO_BIN_EXE_ds");

#[test]
fn two_mpi_ranks_with_zero_2_and_zero_3_match_one_rank() {
    let dir = std::env::temp_dir().join(format!("ds-train-mpi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = |save: &Path| -> Vec<String> {
        [
            "train",
            "--steps",
            "12",
            "--dim",
            "32",
            "--layers",
            "2",
            "--heads",
            "2",
            "--context",
            "16",
            "--sample-tokens",
            "0",
            "--save-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([save.display().to_string()])
        .collect()
    };
    // The built-in config with stage 3, every parameter gathered group by group.
    std::fs::create_dir_all(&dir).expect("scratch");
    let stage3 = dir.join("stage3.json");
    std::fs::write(
        &stage3,
        r#"{"train_batch_size": 32, "steps_per_print": 50,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "betas": [0.9, 0.95], "weight_decay": 0.1}},
            "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 12, "warmup_num_steps": 1,
                                                               "cos_min_ratio": 0.1}},
            "gradient_clipping": 1.0,
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}"#,
    )
    .expect("config");
    let one = Command::new(DS)
        .args(args(&dir.join("one")))
        .output()
        .expect("ds");
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let two = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", DS])
        .args(args(&dir.join("two")))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun starts (install Open MPI: scripts/test.sh does)");
    let out = String::from_utf8_lossy(&two.stdout);
    assert!(
        two.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&two.stderr)
    );
    assert!(out.contains("2 rank(s)"), "{out}");
    // Rank 0 alone prints the summary.
    assert_eq!(out.matches("[ds] trained steps").count(), 1, "{out}");
    let (a, b) = (losses(&dir.join("one")), losses(&dir.join("two")));
    assert_eq!(a.len(), 12);
    assert_eq!(b.len(), 12);
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs(),
            "step {}: one rank {x}, two MPI ranks {y}",
            step + 1
        );
    }
    println!(
        "largest relative difference: {:.2e}",
        a.iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) / x).abs())
            .fold(0.0, f64::max)
    );
    let three = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", DS])
        .args(args(&dir.join("three")))
        .args(["--config".into(), stage3.display().to_string()])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun");
    assert!(
        three.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&three.stdout),
        String::from_utf8_lossy(&three.stderr)
    );
    let c = losses(&dir.join("three"));
    assert_eq!(c.len(), 12);
    for (step, (x, z)) in a.iter().zip(&c).enumerate() {
        assert!(
            (x - z).abs() <= 1e-5 * x.abs(),
            "step {}: one rank at ZeRO-2 {x}, two MPI ranks at ZeRO-3 {z}",
            step + 1
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `mpirun -np 2 ds train --backend wgpu` at ZeRO-3 with the optimizer state and parameters
/// offloaded, to host memory and to NVMe swap files, follows the same run without offload
/// within 1e-5 (WGPU devices on lavapipe, the CPU backend as host).
#[cfg(feature = "wgpu")]
#[test]
fn two_mpi_ranks_on_wgpu_offloaded_to_the_host_and_to_nvme_match_the_run_without() {
    let dir = std::env::temp_dir().join(format!("ds-train-mpi-offload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("swap")).expect("scratch");
    let swap = serde_json::Value::from(dir.join("swap").display().to_string());
    let run = |name: &str, offload: &str| -> Vec<f64> {
        let config = dir.join(format!("{name}.json"));
        std::fs::write(
            &config,
            format!(
                r#"{{"train_batch_size": 16, "steps_per_print": 50,
                    "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.1}}}},
                    "gradient_clipping": 1.0,
                    "zero_optimization": {{"stage": 3, "stage3_param_persistence_threshold": 0 {offload}}}}}"#
            ),
        )
        .expect("config");
        let save = dir.join(name);
        let out = Command::new("mpirun")
            .args([
                "-np",
                "2",
                "--oversubscribe",
                DS,
                "train",
                "--backend",
                "wgpu",
            ])
            .args([
                "--steps", "10", "--dim", "32", "--layers", "2", "--heads", "2",
            ])
            .args([
                "--context",
                "16",
                "--sample-tokens",
                "0",
                "--save-every",
                "100",
            ])
            .arg("--save-dir")
            .arg(&save)
            .arg("--config")
            .arg(&config)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .expect("mpirun");
        assert!(
            out.status.success(),
            "{name}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let said = ["", "offloaded to cpu", "in the NVMe swap file"][["device", "host", "nvme"]
            .iter()
            .position(|n| *n == name)
            .unwrap_or(0)];
        assert!(text.contains(said), "{name}: {text}");
        losses(&save)
    };
    let reference = run("device", "");
    let host = run(
        "host",
        r#", "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}"#,
    );
    let nvme = run(
        "nvme",
        &format!(
            r#", "offload_optimizer": {{"device": "nvme", "nvme_path": {swap}, "buffer_count": 2, "buffer_size": 30000,
                 "pipeline_read": true, "pipeline_write": true}},
               "offload_param": {{"device": "nvme", "nvme_path": {swap}, "buffer_size": 4096}}"#
        ),
    );
    for (what, got) in [("host", &host), ("nvme", &nvme)] {
        assert_eq!(got.len(), reference.len(), "{what}");
        let worst = reference
            .iter()
            .zip(got)
            .map(|(x, y)| ((x - y) / x).abs())
            .fold(0.0, f64::max);
        println!(
            "offloaded to {what} on 2 MPI ranks of WGPU: largest relative difference {worst:.2e}"
        );
        assert!(worst <= 1e-5, "{what}: {worst:e}");
    }
    assert_eq!(
        std::fs::read_dir(dir.join("swap"))
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "swap files left behind"
    );
    std::fs::remove_dir_all(&dir).ok();
}
