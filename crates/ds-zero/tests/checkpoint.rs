//! Checkpoints: resuming in a fresh process is bitwise exact; a checkpoint loads on another
//! world size and stage; damaged checkpoints are refused naming the file; an interrupted save
//! leaves the previous checkpoint loadable.

mod common;
use common::{CLASSES, DIM, HIDDEN, engine};
use ds_core::collectives::run_threaded;
use ds_zero::Error;
use ds_zero::checkpoint::{LATEST_FILE, MODEL_FILE, STATE_FILE, optim_file};
use ds_zero::data::Resumable;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const DIMS: (usize, usize, usize) = (DIM, HIDDEN, CLASSES);
const SPEC_ENV: &str = "DS_RESUME_CHILD_SPEC";

fn config(precision: &str, stage: u8) -> String {
    config_with(
        precision,
        stage,
        r#""train_batch_size": 16, "gradient_accumulation_steps": 2"#,
    )
}

const ADAMW: &str = r#"{"type": "AdamW", "params": {"lr": 0.01, "weight_decay": 0.01}}"#;

fn config_with(precision: &str, stage: u8, batch: &str) -> String {
    config_for(ADAMW, precision, stage, batch)
}

fn config_for(optimizer: &str, precision: &str, stage: u8, batch: &str) -> String {
    format!(
        r#"{{{batch}, {precision},
            "optimizer": {optimizer},
            "scheduler": {{"type": "WarmupDecayLR", "params": {{"warmup_num_steps": 5, "total_num_steps": 40, "warmup_max_lr": 0.01}}}},
            "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 200,
                                   "stage3_param_persistence_threshold": 40}}}}"#
    )
}

const FP32: &str = r#""fp16": {"enabled": false}"#;
const FP16: &str =
    r#""fp16": {"enabled": true, "initial_scale_power": 10, "loss_scale_window": 3}"#;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ds-ckpt-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// Loss and parameter bits of `steps` steps.
type Trace = (Vec<u32>, Vec<u32>);

fn trace(losses: &[f32], params: Vec<(String, Vec<f32>)>) -> Trace {
    (
        losses.iter().map(|l| l.to_bits()).collect(),
        params
            .into_iter()
            .flat_map(|(_, v)| v)
            .map(f32::to_bits)
            .collect(),
    )
}

/// Trains 10 steps, saves, trains 10 more; returns rank 0's trace of the last 10.
fn train_save_continue(json: &str, world: usize, dir: &Path) -> Trace {
    train_save_continue_with_saved(json, world, dir).1
}

/// [`train_save_continue`], also returning the parameters at the save.
fn train_save_continue_with_saved(
    json: &str,
    world: usize,
    dir: &Path,
) -> (Vec<(String, Vec<f32>)>, Trace) {
    let traces = run_threaded(world, |comm| {
        let (mut e, mut loader) = engine(json, Box::new(comm), DIMS);
        for _ in 0..10 {
            e.train_batch(&mut loader).expect("step");
        }
        let at_save = e.parameters().expect("params");
        e.save_checkpoint(
            dir,
            "global_step10",
            &json!({"epoch_note": "ten"}),
            Some(&loader),
        )
        .expect("save");
        let losses: Vec<f32> = (0..10)
            .map(|_| e.train_batch(&mut loader).expect("step").loss)
            .collect();
        (at_save, trace(&losses, e.parameters().expect("params")))
    });
    assert!(traces.iter().all(|t| t.1 == traces[0].1), "ranks disagree");
    traces[0].clone()
}

/// Loads the newest checkpoint in `dir` and trains 10 steps; returns rank 0's trace.
fn load_and_continue(json: &str, world: usize, dir: &Path) -> Trace {
    let traces = run_threaded(world, |comm| {
        let (mut e, mut loader) = engine(json, Box::new(comm), DIMS);
        let loaded = e
            .load_checkpoint(dir, None, Some(&mut loader as &mut dyn Resumable))
            .expect("load");
        assert_eq!(loaded.tag, "global_step10");
        assert_eq!(loaded.client_state, json!({"epoch_note": "ten"}));
        assert_eq!(e.counters().global_steps, 10);
        assert_eq!(
            e.counters().micro_steps,
            10 * e.config().batch.gradient_accumulation_steps
        );
        let losses: Vec<f32> = (0..10)
            .map(|_| e.train_batch(&mut loader).expect("step").loss)
            .collect();
        trace(&losses, e.parameters().expect("params"))
    });
    traces[0].clone()
}

/// The child half of the fresh-process test: loads and trains as the spec in the environment
/// says, and writes its trace. Run only by `resume_in_a_fresh_process_is_bitwise_identical`.
#[test]
#[ignore = "child process of resume_in_a_fresh_process_is_bitwise_identical, which runs it"]
fn resume_child() {
    let spec = std::env::var(SPEC_ENV)
        .expect("run by resume_in_a_fresh_process_is_bitwise_identical only");
    let spec: Value = serde_json::from_str(&spec).expect("spec");
    let json = spec["config"].as_str().expect("config");
    let world = spec["world"].as_u64().expect("world") as usize;
    let dir = PathBuf::from(spec["dir"].as_str().expect("dir"));
    let (losses, params) = load_and_continue(json, world, &dir);
    let out = json!({"losses": losses, "params": params});
    std::fs::write(spec["out"].as_str().expect("out"), out.to_string()).expect("write");
}

#[test]
fn resume_in_a_fresh_process_is_bitwise_identical() {
    for (name, precision, stage, world) in [
        ("fp32-s0", FP32, 0, 1),
        ("fp32-s2", FP32, 2, 2),
        ("fp16-s0", FP16, 0, 2),
        ("fp16-s2", FP16, 2, 2),
    ] {
        let dir = scratch(name);
        let json = config(precision, stage);
        let continued = train_save_continue(&json, world, &dir);
        let out = dir.join("child.json");
        let spec = json!({"config": json, "world": world, "dir": dir, "out": out});
        let run = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["resume_child", "--exact", "--ignored", "--quiet"])
            .env(SPEC_ENV, spec.to_string())
            .output()
            .expect("spawn the child process");
        assert!(
            run.status.success(),
            "{name}: the child process failed:\n{}\n{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let child: Value =
            serde_json::from_str(&std::fs::read_to_string(&out).expect("child output"))
                .expect("json");
        let bits = |k: &str| -> Vec<u32> {
            child[k]
                .as_array()
                .expect("array")
                .iter()
                .map(|v| v.as_u64().expect("bits") as u32)
                .collect()
        };
        assert_eq!(bits("losses"), continued.0, "{name}: losses after resuming");
        assert_eq!(
            bits("params"),
            continued.1,
            "{name}: parameters after resuming"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}

#[test]
fn a_run_switches_offload_on_or_off_across_a_resume_bit_for_bit() {
    // Offloaded checkpoints use the ordinary format: saved with the optimizer state on the
    // host (or in NVMe swap files) and resumed on the device, or the reverse, the run
    // continues as if uninterrupted.
    let swap = common::swap_dir("checkpoint");
    for (precision, stage, params, nvme) in [
        (FP16, 2, false, false),
        (FP32, 3, false, false),
        (FP16, 1, false, false),
        (FP16, 3, true, false),
        (FP16, 2, false, true),
        (FP32, 3, false, true),
        (FP16, 3, true, true),
    ] {
        let on_device = config(precision, stage);
        let on_host = match (nvme, params) {
            (true, false) => common::nvme_offloaded(&on_device, &swap, 2, 300),
            (true, true) => common::with_params_on_nvme(
                &common::nvme_offloaded(&on_device, &swap, 2, 300),
                &swap,
                64,
            ),
            (false, _) => common::offloaded(&on_device, params),
        };
        // Between host memory and NVMe too, without the device in between.
        let in_memory = common::offloaded(&on_device, params);
        let mut pairs = vec![
            (&on_host, &on_device, "offloaded, resumed on the device"),
            (&on_device, &on_host, "on the device, resumed offloaded"),
        ];
        if nvme {
            pairs.push((&in_memory, &on_host, "in host memory, resumed on NVMe"));
            pairs.push((&on_host, &in_memory, "on NVMe, resumed in host memory"));
        }
        for (save, load, what) in pairs {
            let dir = scratch(&format!("offload-{stage}"));
            let uninterrupted = train_save_continue(save, 2, &dir);
            let resumed = load_and_continue(load, 2, &dir);
            assert_eq!(
                resumed, uninterrupted,
                "stage {stage}: saved {what} (nvme: {nvme})"
            );
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    std::fs::remove_dir_all(&swap).ok();
}

#[test]
fn adagrad_and_lion_resume_bit_for_bit_on_the_device_offloaded_and_on_nvme() {
    // Their one state each (Adagrad's exp_avg_sq, Lion's exp_avg) goes through every place a
    // checkpoint can take it from or put it: the device, host memory and an NVMe swap file.
    let swap = common::swap_dir("checkpoint-one-state");
    let batch = r#""train_batch_size": 16, "gradient_accumulation_steps": 2"#;
    for optimizer in [
        r#"{"type": "Adagrad", "params": {"lr": 0.05, "weight_decay": 0.01}}"#,
        r#"{"type": "Lion", "params": {"lr": 0.002, "weight_decay": 0.1}}"#,
    ] {
        let on_device = config_for(optimizer, FP16, 2, batch);
        let on_host = common::offloaded(&on_device, false);
        let on_nvme = common::nvme_offloaded(&on_device, &swap, 2, 300);
        for (save, load, what) in [
            (&on_device, &on_device, "on the device"),
            (
                &on_host,
                &on_device,
                "saved offloaded, resumed on the device",
            ),
            (&on_device, &on_nvme, "saved on the device, resumed on NVMe"),
        ] {
            let dir = scratch("one-state");
            let uninterrupted = train_save_continue(save, 2, &dir);
            let resumed = load_and_continue(load, 2, &dir);
            assert_eq!(resumed, uninterrupted, "{optimizer}: {what}");
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    std::fs::remove_dir_all(&swap).ok();
}

#[test]
fn a_checkpoint_loads_on_another_world_size_and_stage() {
    let dir = scratch("reshape");
    let saved = config(FP16, 2);
    let continued = train_save_continue(&saved, 2, &dir);
    // The same global batch of 16 with micro-batches of 4: accumulation 4 on one rank, 1 on
    // four, where the run that saved accumulated 2 on two.
    let batch = r#""train_batch_size": 16, "train_micro_batch_size_per_gpu": 4"#;
    for (stage, world) in [(1, 4), (0, 1), (2, 4), (3, 4), (3, 1)] {
        let (losses, params) = load_and_continue(&config_with(FP16, stage, batch), world, &dir);
        let floats = |bits: &[u32]| {
            bits.iter()
                .map(|&b| f32::from_bits(b))
                .collect::<Vec<f32>>()
        };
        let what = format!("saved on 2 ranks at stage 2, loaded on {world} at stage {stage}");
        common::assert_close(&what, &floats(&losses), &floats(&continued.0), 1e-3);
        for (a, b) in floats(&params).iter().zip(floats(&continued.1)) {
            assert!(
                (a - b).abs() <= 2e-3 * b.abs().max(1.0),
                "{what}: parameter {a} vs {b}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Saves one checkpoint on two ranks (so there are two optimizer files) and returns its dir.
fn saved_checkpoint(name: &str) -> PathBuf {
    let dir = scratch(name);
    let json = config(FP32, 2);
    run_threaded(2, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        e.train_batch(&mut loader).expect("step");
        e.save_checkpoint(&dir, "global_step10", &Value::Null, Some(&loader))
            .expect("save");
    });
    dir
}

/// Loading `dir` fails on both ranks naming `file`, with `words`, and leaves the engine as it was.
fn refused(dir: &Path, file: &str, words: &str) {
    let json = config(FP32, 2);
    let errors = run_threaded(2, |comm| {
        let (mut e, _) = engine(&json, Box::new(comm), DIMS);
        let before = snapshot(&e);
        let err = e.load_checkpoint(dir, None, None).expect_err("refused");
        assert!(snapshot(&e) == before, "a refused load changed the engine");
        err
    });
    for err in errors {
        let text = err.to_string();
        assert!(matches!(err, Error::Checkpoint { .. }), "{text}");
        assert!(
            text.contains(file) && text.contains(words),
            "`{text}` should name `{file}` and say `{words}`"
        );
    }
}

/// Everything a load would change: parameters, master weights, counters, scaler, schedule.
type Snapshot = (common::NamedParams, Vec<f32>, ds_zero::Counters, f32, i64);

fn snapshot(e: &common::TestEngine) -> Snapshot {
    (
        e.parameters().expect("params"),
        e.master_partition().expect("master"),
        e.counters(),
        e.loss_scale(),
        e.lr_schedule_iteration(),
    )
}

#[test]
fn a_loader_that_does_not_fit_refuses_the_load_on_every_rank_and_changes_nothing() {
    let dir = saved_checkpoint("loader");
    let json = config(FP32, 2);
    let outcome = run_threaded(2, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        // Rank 1's loader reads another dataset; rank 0's fits.
        let mut other = ds_zero::data::DataLoader::new(
            ds_nn::Blobs::new(common::SAMPLES + 1, DIM, CLASSES, 7),
            4,
            2,
            1,
            2,
            1234,
            true,
        );
        let before = snapshot(&e);
        let target: &mut dyn Resumable = if e.rank() == 1 {
            &mut other
        } else {
            &mut loader
        };
        let err = e
            .load_checkpoint(&dir, None, Some(target))
            .expect_err("refused");
        (err.to_string(), snapshot(&e) == before, loader.position())
    });
    assert!(outcome[1].0.contains("samples"), "{}", outcome[1].0);
    assert!(outcome[0].0.contains("another rank"), "{}", outcome[0].0);
    for (_, unchanged, position) in &outcome {
        assert!(unchanged, "a refused load changed the engine");
        assert_eq!(position.next, 0, "a refused load moved the loader");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_checkpoints_are_refused_naming_the_file() {
    let dir = saved_checkpoint("damage");
    let tag = dir.join("global_step10");
    let keep = |p: &Path| std::fs::read(p).expect("read");
    // A truncated optimizer file.
    let optim = tag.join(optim_file(1));
    let original = keep(&optim);
    std::fs::write(&optim, &original[..original.len() / 2]).expect("truncate");
    refused(&dir, &optim_file(1), "truncated");
    std::fs::write(&optim, &original).expect("restore");
    // A corrupted byte in the model file.
    let model = tag.join(MODEL_FILE);
    let original = keep(&model);
    let mut bad = original.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    std::fs::write(&model, &bad).expect("corrupt");
    refused(&dir, MODEL_FILE, "corrupt");
    // A missing model file.
    std::fs::remove_file(&model).expect("remove");
    refused(&dir, MODEL_FILE, "missing");
    std::fs::write(&model, &original).expect("restore");
    // A truncated state file.
    let state = tag.join(STATE_FILE);
    let original = keep(&state);
    std::fs::write(&state, &original[..original.len() - 10]).expect("truncate");
    refused(&dir, STATE_FILE, "not valid JSON");
    std::fs::write(&state, &original).expect("restore");
    // A tag caught mid-replacement (moved aside, the new copy not yet in place) loads from
    // its previous copy.
    let aside = dir.join(".global_step10.old");
    std::fs::rename(&tag, &aside).expect("move aside");
    let json = config(FP32, 2);
    run_threaded(2, |comm| {
        let (mut e, _) = engine(&json, Box::new(comm), DIMS);
        e.load_checkpoint(&dir, None, None)
            .expect("loads the copy moved aside");
        assert_eq!(e.counters().global_steps, 1);
    });
    std::fs::rename(&aside, &tag).expect("move back");
    // No `latest` and no tag.
    std::fs::remove_file(dir.join(LATEST_FILE)).expect("remove latest");
    refused(&dir, LATEST_FILE, "name the tag");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_interrupted_save_leaves_the_previous_checkpoint_loadable() {
    let dir = scratch("interrupt");
    let json = config(FP16, 2);
    let outcome = run_threaded(2, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        e.train_batch(&mut loader).expect("step");
        e.save_checkpoint(&dir, "first", &json!("first"), Some(&loader))
            .expect("save");
        let saved = e.parameters().expect("params");
        e.train_batch(&mut loader).expect("step");
        // Rank 1 dies before writing anything of the new tag, then rank 0 after its model file
        // while overwriting the first tag.
        if e.rank() == 1 {
            e.inject_save_fault(0);
        }
        let a = e.save_checkpoint(&dir, "second", &json!("second"), Some(&loader));
        if e.rank() == 0 {
            e.inject_save_fault(1);
        }
        let b = e.save_checkpoint(&dir, "first", &json!("overwritten"), Some(&loader));
        let loaded = e
            .load_checkpoint(&dir, None, Some(&mut loader))
            .expect("the previous checkpoint loads");
        (
            a.is_err(),
            b.is_err(),
            loaded,
            saved == e.parameters().expect("params"),
        )
    });
    for (second_failed, overwrite_failed, loaded, same_params) in outcome {
        assert!(
            second_failed && overwrite_failed,
            "both interrupted saves report an error on every rank"
        );
        assert_eq!(loaded.tag, "first");
        assert_eq!(loaded.client_state, json!("first"));
        assert!(same_params, "the loaded parameters are the first save's");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join(LATEST_FILE)).expect("latest"),
        "first"
    );
    assert!(
        !dir.join("second").exists(),
        "no half-written tag is visible"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_stage_3_checkpoint_loads_at_stages_0_and_2_and_consolidates_to_the_trained_weights() {
    let json = |stage: u8, gather: bool| {
        let stage3 = if stage == 3 {
            format!(
                r#", "stage3_param_persistence_threshold": 40,
                   "stage3_gather_16bit_weights_on_model_save": {gather}"#
            )
        } else {
            String::new()
        };
        format!(
            r#"{{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 4, {FP32},
                "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.01}}}},
                "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 200 {stage3}}}}}"#
        )
    };
    for gather in [false, true] {
        let dir = scratch(&format!("stage3-{gather}"));
        let saved = json(3, gather);
        // 10 steps on 4 ranks, the weights at the save, then 10 more.
        let (at_save, continued) = train_save_continue_with_saved(&saved, 4, &dir);
        // The model file holds the whole weights only when asked to gather them.
        let model = std::fs::read(dir.join("global_step10").join(MODEL_FILE)).expect("model file");
        let tensors = safetensors::SafeTensors::deserialize(&model)
            .expect("safetensors")
            .len();
        assert_eq!(tensors > 0, gather, "gather {gather}: {tensors} tensors");
        // zero-to-fp32 gives the trained parameters exactly (fp32 training).
        let consolidated = ds_zero::checkpoint::consolidate_fp32(&dir, None).expect("consolidate");
        let got: Vec<(String, Vec<f32>)> = consolidated
            .tensors
            .into_iter()
            .map(|(name, _, values)| (name, values))
            .collect();
        assert_eq!(got, at_save, "gather {gather}: consolidated weights");
        for (stage, world) in [(0, 1), (2, 2), (3, 2)] {
            let (losses, params) = load_and_continue(&json(stage, gather), world, &dir);
            let floats = |bits: &[u32]| {
                bits.iter()
                    .map(|&b| f32::from_bits(b))
                    .collect::<Vec<f32>>()
            };
            let what = format!("saved at stage 3 on 4 ranks, loaded at stage {stage} on {world}");
            common::assert_close(&what, &floats(&losses), &floats(&continued.0), 1e-6);
            // The parameters as one vector: ||a - b|| / ||b||.
            let (a, b) = (floats(&params), floats(&continued.1));
            let diff: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| f64::from(x - y).powi(2))
                .sum();
            let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
            let rel = (diff / norm).sqrt();
            println!("{what}: parameters differ by {rel:.2e} (relative norm)");
            assert!(rel <= 1e-6, "{what}: parameters differ by {rel:e}");
            if stage == 0 {
                // One rank accumulating 4 micro-batches adds the gradients in the order the 4
                // ranks' reduction did: the same bits.
                assert_eq!(params, continued.1, "{what}: bits");
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
