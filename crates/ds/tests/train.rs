//! `ds train` as a user runs it: bad input gets one line saying what to do (never a panic),
//! and a run killed part-way continues under `--resume` with exactly the losses of a run that
//! was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const DS: &str = env!("CARGO_BIN_EXE_ds");

/// A small, fast GPT: the options every run here shares.
const SMALL: [&str; 10] = [
    "--dim",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--context",
    "16",
    "--sample-tokens",
    "0",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ds-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn ds(args: &[&str]) -> Output {
    Command::new(DS).args(args).output().expect("ds starts")
}

fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "{n:?} missing from {:?}", lines[0]);
    }
}

#[test]
fn bad_input_gets_one_line_saying_what_to_do() {
    let dir = scratch("errors");
    let save = dir.join("run");
    let save = save.to_str().expect("utf-8");
    let base = ["train", "--steps", "2", "--save-dir", save];
    let with = |extra: &[&str]| {
        let mut v: Vec<&str> = base.to_vec();
        v.extend_from_slice(&SMALL);
        v.extend_from_slice(extra);
        ds(&v)
    };
    // A wrong path, and a path that cannot be read as a file.
    assert_one_line_error(
        &with(&["--data", "/nonexistent/corpus.txt"]),
        &[
            "cannot read the data file /nonexistent/corpus.txt",
            "--data",
        ],
    );
    let as_dir = dir.to_str().expect("utf-8");
    assert_one_line_error(&with(&["--data", as_dir]), &["cannot read the data file"]);
    // A data file too short for one batch.
    let tiny = dir.join("tiny.txt");
    std::fs::write(&tiny, "too short").expect("write");
    assert_one_line_error(
        &with(&["--data", tiny.to_str().expect("utf-8")]),
        &["fewer than one sequence"],
    );
    // A model too large for this machine's memory.
    let big = ds(&[
        "train",
        "--steps",
        "1",
        "--save-dir",
        save,
        "--dim",
        "65536",
        "--layers",
        "64",
    ]);
    assert_one_line_error(&big, &["GiB available", "--dim"]);
    // A backend this build does not contain.
    #[cfg(not(feature = "cuda"))]
    assert_one_line_error(
        &with(&["--backend", "cuda"]),
        &["not compiled into this build", "--features cuda"],
    );
    assert_one_line_error(&with(&["--backend", "tpu"]), &["unknown backend"]);
    // A config that is missing, and a model shape that cannot be built.
    assert_one_line_error(
        &with(&["--config", "/nonexistent/ds_config.json"]),
        &["cannot read the config"],
    );
    let odd = ds(&[
        "train",
        "--steps",
        "1",
        "--save-dir",
        save,
        "--dim",
        "30",
        "--heads",
        "4",
    ]);
    assert_one_line_error(&odd, &["not divisible by 4 heads", "--dim"]);
    // A held-out share outside [0, 1), and one for the MLP, which trains on synthetic data.
    assert_one_line_error(
        &with(&["--val-fraction", "1.5"]),
        &["--val-fraction 1.5", "below 1"],
    );
    assert_one_line_error(
        &ds(&[
            "train",
            "--steps",
            "1",
            "--model",
            "mlp",
            "--val-fraction",
            "0.1",
            "--save-dir",
            save,
        ]),
        &["--val-fraction is for the GPT"],
    );
    // Resuming where nothing was saved.
    assert_one_line_error(&with(&["--resume"]), &["no checkpoint", "--resume"]);
    // An instruction set that does not exist.
    let mut v: Vec<&str> = base.to_vec();
    v.extend_from_slice(&SMALL);
    let bad_isa = Command::new(DS)
        .args(&v)
        .env("DS_CPU_ISA", "avx9")
        .output()
        .expect("ds starts");
    assert_one_line_error(
        &bad_isa,
        &[
            "DS_CPU_ISA",
            "`avx9` is none of baseline, avx2, avx512, avx512bf16, amx",
        ],
    );
    // A thread-binding policy that does not exist.
    let bad_bind = Command::new(DS)
        .args(&v)
        .env("DS_CPU_BIND", "cores")
        .output()
        .expect("ds starts");
    assert_one_line_error(
        &bad_bind,
        &["DS_CPU_BIND", "`cores` is neither `auto` nor `none`"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn losses(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["step"].as_u64().expect("step"),
                // The loss as written: identical text means identical f32 bits.
                v["loss"].to_string(),
            )
        })
        .collect()
}

fn val_losses(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            let val = v.get("val_loss")?;
            (!val.is_null()).then(|| (v["step"].as_u64().expect("step"), val.to_string()))
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_with_the_losses_of_an_uninterrupted_one() {
    const STEPS: &str = "150";
    let dir = scratch("resume");
    let (whole, cut) = (dir.join("whole"), dir.join("cut"));
    let args = |save: &Path| -> Vec<String> {
        let mut v: Vec<String> = [
            "train",
            "--steps",
            STEPS,
            "--save-every",
            "10",
            "--save-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.push(save.display().to_string());
        v.extend(SMALL.iter().map(|s| s.to_string()));
        v
    };
    let out = Command::new(DS).args(args(&whole)).output().expect("ds");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same run, killed (SIGKILL) once its step-20 checkpoint is in place.
    let mut child = Command::new(DS)
        .args(args(&cut))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ds");
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(cut.join("latest")).map_or(true, |t| t.trim() != "global_step20")
    {
        assert!(Instant::now() < deadline, "no step-20 checkpoint");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the run ended too soon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    let before = losses(&cut);
    assert!(
        before.len() < 150,
        "the run was interrupted ({} steps recorded)",
        before.len()
    );
    let mut resume = args(&cut);
    resume.push("--resume".into());
    let out = Command::new(DS).args(&resume).output().expect("ds");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("resumed from step"), "{text}");
    let (a, b) = (losses(&whole), losses(&cut));
    assert_eq!(a.len(), 150);
    assert_eq!(a, b, "resumed losses differ from the uninterrupted run");
    // The held-out validation loss (every 50 steps, the built-in config's steps_per_print) is
    // in the metrics and the same after the resume.
    let (va, vb) = (val_losses(&whole), val_losses(&cut));
    assert_eq!(va.iter().map(|v| v.0).collect::<Vec<_>>(), [50, 100, 150]);
    assert_eq!(va, vb, "resumed validation losses differ");
    std::fs::remove_dir_all(&dir).ok();
}

/// A config like the built-in one (constant LR) at ZeRO stage `stage`, every parameter
/// gathered at stage 3, written to `dir/ds_config.json`.
fn stage_config(dir: &Path, stage: u8) -> PathBuf {
    let path = dir.join(format!("ds_config_{stage}.json"));
    let json = format!(
        r#"{{"train_batch_size": 32,
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "betas": [0.9, 0.95], "weight_decay": 0.1}}}},
            "gradient_clipping": 1.0,
            "zero_optimization": {{"stage": {stage}, "stage3_param_persistence_threshold": 0}}}}"#
    );
    std::fs::write(&path, json).expect("config");
    path
}

#[test]
fn zero_3_on_threaded_ranks_trains_the_gpt_and_the_mlp_like_one_rank_at_stage_0() {
    let dir = scratch("stage3");
    let (zero0, zero3) = (stage_config(&dir, 0), stage_config(&dir, 3));
    for model in ["gpt", "mlp"] {
        let run = |config: &Path, ranks: &str, name: &str| {
            let save = dir.join(format!("{model}-{name}"));
            let mut args: Vec<String> =
                ["train", "--model", model, "--steps", "8", "--ranks", ranks]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            args.extend(["--config".into(), config.display().to_string()]);
            args.extend(["--save-dir".into(), save.display().to_string()]);
            if model == "gpt" {
                args.extend(SMALL.iter().map(|s| s.to_string()));
            }
            let out = Command::new(DS).args(&args).output().expect("ds");
            assert!(
                out.status.success(),
                "{model} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (losses(&save), text)
        };
        let (one, _) = run(&zero0, "1", "stage0");
        let (two, text) = run(&zero3, "2", "stage3");
        assert!(text.contains("2 rank(s)") || model == "mlp", "{text}");
        assert!(
            text.contains("ZeRO-3 collectives per optimizer step"),
            "{text}"
        );
        assert_eq!(one.len(), 8);
        for ((step, a), (_, b)) in one.iter().zip(&two) {
            let (a, b): (f64, f64) = (a.parse().expect("loss"), b.parse().expect("loss"));
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "{model} step {step}: one rank at stage 0 {a}, two threaded ranks at stage 3 {b}"
            );
        }
    }
    // --ranks 0 is refused.
    let out = ds(&["train", "--ranks", "0"]);
    assert_one_line_error(&out, &["--ranks must be at least 1"]);
    std::fs::remove_dir_all(&dir).ok();
}
