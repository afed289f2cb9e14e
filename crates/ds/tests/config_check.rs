//! `ds config check` as a user runs it: the resolved settings as JSON and exit code 0, or the
//! error and exit code 1, never a panic.

use std::process::Command;

fn ds(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ds"))
        .args(args)
        .output()
        .expect("run ds");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("ds-config-{}-{name}.json", std::process::id()));
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn a_valid_config_prints_every_resolved_setting() {
    let p = write(
        "ok",
        r#"{"train_batch_size": 64, "train_micro_batch_size_per_gpu": 8,
            "optimizer": {"type": "Adam", "params": {"lr": 3e-4, "weight_decay": 0.01}},
            "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 1000, "warmup_num_steps": 100}},
            "fp16": {"enabled": true}, "zero_optimization": {"stage": 2, "reduce_bucket_size": 5e7}}"#,
    );
    let (code, out, err) = ds(&[
        "config",
        "check",
        p.to_str().expect("path"),
        "--world-size",
        "4",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["gradient_accumulation_steps"], 2);
    assert_eq!(v["world_size"], 4);
    assert_eq!(v["optimizer"]["mode"], "adamw (decoupled weight decay)");
    assert_eq!(v["scheduler"]["cos_min_ratio"], 0.0001);
    assert_eq!(v["precision"]["loss_scale"], "dynamic");
    assert_eq!(v["precision"]["hysteresis"], 2);
    assert_eq!(v["zero_optimization"]["stage"], 2);
    assert_eq!(v["zero_optimization"]["reduce_bucket_size"], 50_000_000);
    assert_eq!(v["gradient_clipping"], 1.0);
    std::fs::remove_file(p).ok();
}

#[test]
fn errors_are_printed_with_exit_code_1() {
    let p = write(
        "bad",
        r#"{"train_batch_size": 33, "train_micro_batch_size_per_gpu": 17, "gradient_accumulation_steps": 2}"#,
    );
    let (code, out, err) = ds(&[
        "config",
        "check",
        p.to_str().expect("path"),
        "--world-size",
        "2",
    ]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("world size 2") && err.contains("33 != 17 * 2 * 2"),
        "{err}"
    );
    let typo = write(
        "typo",
        r#"{"train_batch_size": 8, "gradient_clippin": 1.0}"#,
    );
    let (code, _, err) = ds(&["config", "check", typo.to_str().expect("path")]);
    assert_eq!(code, 1);
    assert!(err.contains("did you mean `gradient_clipping`"), "{err}");
    let (code, _, err) = ds(&["config", "check", "/nonexistent/ds.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/ds.json"), "{err}");
    let (code, _, err) = ds(&[
        "config",
        "check",
        p.to_str().expect("path"),
        "--world-size",
        "0",
    ]);
    assert_eq!(code, 1, "a zero world size is refused: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let junk = write("junk", "{not json");
    let (code, _, err) = ds(&["config", "check", junk.to_str().expect("path")]);
    assert_eq!(code, 1);
    assert!(err.contains("line 1, column"), "{err}");
    for f in [p, typo, junk] {
        std::fs::remove_file(f).ok();
    }
}

#[test]
fn offload_settings_print_resolved_with_where_the_engine_keeps_the_state() {
    let p = write(
        "offload",
        r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "aio": {"queue_depth": 16, "single_submit": true},
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"},
                                  "offload_param": {"device": "cpu"}}}"#,
    );
    let (code, out, err) = ds(&["config", "check", p.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    let o = &v["zero_optimization"]["offload_optimizer"];
    // DeepSpeed's defaults, resolved.
    assert_eq!(o["device"], "cpu");
    assert_eq!(o["pin_memory"], true);
    assert_eq!(o["buffer_count"], 4);
    assert_eq!(o["ratio"], 1.0);
    assert_eq!(v["zero_optimization"]["offload_param"]["buffer_count"], 5);
    assert_eq!(v["offload"]["optimizer"]["device"], "cpu");
    // `aio`, resolved with DeepSpeed's defaults.
    assert_eq!(v["aio"]["queue_depth"], 16);
    assert_eq!(v["aio"]["single_submit"], true);
    assert_eq!(v["aio"]["block_size"], 1 << 20);
    assert_eq!(v["aio"]["use_gds"], false);
    assert!(
        v["offload"]["param"]
            .as_str()
            .is_some_and(|s| s.contains("ignored below ZeRO stage 3")),
        "{out}"
    );
    // NVMe: where the state goes and the I/O path that will carry it.
    let p = write(
        "offload-nvme",
        r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/local_nvme"},
                                  "offload_param": {"device": "nvme", "nvme_path": "/local_nvme"}}}"#,
    );
    let (code, out, err) = ds(&["config", "check", p.to_str().expect("path")]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    for side in ["optimizer", "param"] {
        let plan = &v["offload"][side];
        assert_eq!(plan["device"], "nvme", "{out}");
        assert_eq!(plan["nvme_path"], "/local_nvme", "{out}");
        assert!(
            plan["io"]
                .as_str()
                .is_some_and(|io| io.contains("io_uring") || io.contains("pread")),
            "{out}"
        );
    }
    // A setting the engine does not run is named in the plan.
    let p = write(
        "offload-ratio",
        r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.3}}}"#,
    );
    let (code, out, _) = ds(&["config", "check", p.to_str().expect("path")]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert!(
        v["offload"]["refused"]
            .as_str()
            .is_some_and(|s| s.contains("ratio = 0.3")),
        "{out}"
    );
}

#[test]
fn auto_values_resolve_in_config_check_as_ds_train_resolves_them() {
    // A Hugging Face style config (every value the Trainer fills is "auto"), with the
    // comments and trailing commas DeepSpeed's hjson reader accepts.
    let p = write(
        "auto",
        r#"{
            // filled by the trainer
            "train_batch_size": "auto",
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
            "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                          "warmup_num_steps": "auto", "total_num_steps": "auto"}},
            "bf16": {"enabled": "auto"},
            "tensorboard": {"enabled": false},  # off: accepted and ignored
            "zero_optimization": {"stage": 2, "reduce_bucket_size": "auto",},
        }"#,
    );
    let path = p.to_str().expect("path");
    let (code, out, err) = ds(&["config", "check", path, "--steps", "6"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let autos = v["auto"].as_array().expect("auto list");
    assert_eq!(autos.len(), 14, "{out}");
    let line = |a: &serde_json::Value| {
        format!(
            "[ds] config: {} = {} (\"auto\": {})",
            a["key"].as_str().expect("key"),
            a["value"],
            a["source"].as_str().expect("source")
        )
    };
    let find = |key: &str| {
        autos
            .iter()
            .find(|a| a["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {out}"))["value"]
            .clone()
    };
    assert_eq!(find("scheduler.params.total_num_steps"), 6);
    assert_eq!(find("zero_optimization.reduce_bucket_size"), 128 * 128);
    assert_eq!(find("train_batch_size"), 32);
    let dir = std::env::temp_dir().join(format!("ds-config-{}-train", std::process::id()));
    let out_train = Command::new(env!("CARGO_BIN_EXE_ds"))
        .args([
            "train",
            "--config",
            path,
            "--steps",
            "6",
            "--sample-tokens",
            "0",
            "--save-dir",
        ])
        .arg(&dir)
        .output()
        .expect("ds train");
    let stdout = String::from_utf8_lossy(&out_train.stdout);
    assert!(
        out_train.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out_train.stderr)
    );
    for a in autos {
        assert!(stdout.contains(&line(a)), "{} not in:\n{stdout}", line(a));
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_file(&p).ok();
}
