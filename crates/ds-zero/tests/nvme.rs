//! ZeRO-Infinity's NVMe offload (`offload_optimizer: {"device": "nvme"}`) on the CPU backend
//! as device and host: the same training as without offload, bit for bit, with the optimizer
//! state in swap files streamed through a few small host buffers; the host holds only those
//! buffers of optimizer state; swap files are removed on a clean exit; bad paths are named
//! errors that leave no file behind.

mod common;
use common::{
    CLASSES, DIM, HIDDEN, engine, engine_on, nvme_offloaded, swap_dir, train, with_params_on_nvme,
};
use ds_core::Device;
use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;

const STEPS: usize = 20;

fn config(stage: u8, precision: &str) -> String {
    format!(
        r#"{{"train_batch_size": 16, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
            {precision},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.01}}}},
            "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 200,
                                   "stage3_param_persistence_threshold": 40}}}}"#
    )
}

fn bits(json: &str, world: usize) -> (Vec<u32>, Vec<u32>) {
    let ranks = train(json, world, STEPS);
    let (losses, params) = &ranks[0];
    (
        losses.iter().map(|l| l.to_bits()).collect(),
        params
            .iter()
            .flat_map(|(_, v)| v)
            .map(|v| v.to_bits())
            .collect(),
    )
}

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nvme_offloaded_training_is_bit_identical_and_leaves_no_swap_file() {
    let dir = swap_dir("equivalence");
    let mut compared = 0;
    for (precision, worlds) in [
        (r#""bf16": {"enabled": false}"#, &[1, 2, 4][..]),
        (r#""fp16": {"enabled": true}"#, &[1, 2]),
        (r#""bf16": {"enabled": true}"#, &[2]),
    ] {
        for stage in 1..=3 {
            for &world in worlds {
                let on_device = config(stage, precision);
                let reference = bits(&on_device, world);
                // 2 buffers of 300 f32: sub-groups of 100 elements, so the MLP's partition
                // (660 elements on 1 rank) streams through many of them.
                let nvme = bits(&nvme_offloaded(&on_device, &dir, 2, 300), world);
                assert_eq!(
                    nvme, reference,
                    "{precision} stage {stage} on {world} ranks"
                );
                compared += 1;
            }
        }
    }
    println!(
        "{compared} NVMe-offloaded runs matched their device runs bit for bit over {STEPS} steps"
    );
    assert_eq!(
        leftovers(&dir),
        Vec::<String>::new(),
        "swap files left behind"
    );
    std::fs::remove_dir_all(&dir).ok();
}

const DIMS: (usize, usize, usize) = (128, 256, 32);

fn psi() -> u64 {
    let (d, h, c) = DIMS;
    (d * h + h + h * c + c) as u64
}

const BIG: &str = r#"{"train_batch_size": 16, "fp16": {"enabled": true, "initial_scale_power": 8},
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "zero_optimization": {"stage": 2, "reduce_bucket_size": 4096}}"#;

#[test]
fn the_host_holds_only_the_swap_buffers_of_optimizer_state() {
    let dir = swap_dir("memory");
    // 4 buffers of 3 x 1024 f32: sub-groups of 1024 elements, 48 KiB of state in host memory
    // against the 12Ψ = 495 KB the state takes in the swap file.
    let (count, size) = (4u64, 3 * 1024u64);
    let json = nvme_offloaded(BIG, &dir, count, size);
    let psi = psi();
    run_threaded(2, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        for _ in 0..3 {
            e.train_batch(&mut loader).expect("step");
        }
        let report = e.optimizer().offload().expect("offloaded");
        let (file, io) = report.swap.clone().expect("a swap file");
        assert!(
            file.starts_with(&dir) && file.exists(),
            "{}",
            file.display()
        );
        let owned = e.layout().owned_len as u64;
        let widest = e
            .layout()
            .buckets
            .iter()
            .map(|b| b.owned.len())
            .max()
            .unwrap_or(0) as u64;
        // Host: the 16-bit gradient partition, the staging buffer, the swap buffers, and one
        // f32 per bucket for the norms.
        let swap_buffers = count * size * 4;
        let formula = 2 * owned + 2 * widest.min(1 << 18) + swap_buffers;
        let ratio = report.host_memory.in_use as f64 / formula as f64;
        println!(
            "rank {}: host {} bytes = {ratio:.4} x (2Ψ/N + staging + {count} x {size} x 4); swap file {} bytes ({io}); \
             the device {} bytes",
            e.rank(),
            report.host_memory.in_use,
            std::fs::metadata(&file).expect("swap file").len(),
            e.memory_stats().in_use
        );
        assert!(
            (ratio - 1.0).abs() <= 0.05,
            "host {} vs {formula}",
            report.host_memory.in_use
        );
        assert_eq!(e.optimizer().state_bytes(), 12 * owned);
        assert!(
            12 * owned > 4 * swap_buffers,
            "the state is much larger than its buffers"
        );
        assert!((e.memory_stats().in_use as f64) < 1.05 * (2 * psi) as f64);
    });
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_host_too_small_for_the_optimizer_state_trains_with_it_on_nvme() {
    let dir = swap_dir("capacity");
    let psi = psi();
    // fp16, one rank: in host memory the offloaded state is 12Ψ + the 2Ψ partition; this host
    // has 6Ψ.
    let host = || Device::new(CpuBackend::with_capacity(1, 6 * psi).expect("host"));
    let dev = || Device::new(CpuBackend::with_threads(1).expect("device"));
    let cpu = common::offloaded(BIG, false);
    let err = engine_on(&cpu, Box::new(ds_core::SingleRank), DIMS, dev(), host())
        .err()
        .expect("the state does not fit the host")
        .to_string();
    assert!(err.contains("bytes of host memory per rank"), "{err}");
    let json = nvme_offloaded(BIG, &dir, 4, 3 * 1024);
    let (mut e, mut loader) = engine_on(&json, Box::new(ds_core::SingleRank), DIMS, dev(), host())
        .expect("the swap buffers fit");
    let losses: Vec<f32> = (0..8)
        .map(|_| e.train_batch(&mut loader).expect("step").loss)
        .collect();
    assert!(losses[7] < losses[0], "trains: {losses:?}");
    println!(
        "host peak {} of {} bytes with {} bytes of optimizer state on NVMe",
        e.optimizer().offload().expect("offloaded").host_memory.peak,
        6 * psi,
        e.optimizer().state_bytes()
    );
    drop(e);
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

fn refusal(json: &str) -> String {
    let dev = Device::new(CpuBackend::with_threads(1).expect("device"));
    let host = Device::new(CpuBackend::with_threads(1).expect("host"));
    match engine_on(
        json,
        Box::new(ds_core::SingleRank),
        (DIM, HIDDEN, CLASSES),
        dev,
        host,
    ) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {json}"),
    }
}

#[test]
fn missing_and_read_only_nvme_paths_are_named_errors_that_leave_no_file() {
    let base = config(2, r#""bf16": {"enabled": false}"#);
    // No nvme_path at all.
    let mut v: serde_json::Value = serde_json::from_str(&base).expect("json");
    v["zero_optimization"]["offload_optimizer"] = serde_json::json!({"device": "nvme"});
    let err = refusal(&v.to_string());
    assert!(err.contains("needs nvme_path"), "{err}");
    // A path that does not exist.
    let missing = std::env::temp_dir().join(format!("ds-no-such-dir-{}", std::process::id()));
    let err = refusal(&nvme_offloaded(&base, &missing, 2, 300));
    assert!(
        err.contains(&missing.display().to_string()) && err.contains("cannot be used"),
        "{err}"
    );
    assert!(!missing.exists(), "nothing was created");
    // A read-only directory (root ignores permission bits, so as root sysfs stands in).
    let dir = swap_dir("read-only");
    let read_only = if unsafe_is_root() {
        std::path::PathBuf::from("/sys")
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        dir.clone()
    };
    let before = leftovers(&read_only);
    let err = refusal(&nvme_offloaded(&base, &read_only, 2, 300));
    assert!(
        err.contains(&read_only.display().to_string()) && err.contains("is not writable"),
        "{err}"
    );
    assert_eq!(leftovers(&read_only), before, "no partial file");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).ok();
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Whether this process runs as root (permission bits do not stop it).
fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

const KILL_ENV: &str = "DS_NVME_KILL_CHILD";

/// The config of the kill test: fp16 at stage 2 on one rank, the state through 2 buffers.
fn kill_config(dir: &std::path::Path) -> String {
    nvme_offloaded(
        &config(2, r#""fp16": {"enabled": true, "initial_scale_power": 10}"#),
        dir,
        2,
        300,
    )
}

/// The child half of the SIGKILL test: trains until killed, saving every 2 steps and printing
/// each step. Run only by `a_run_killed_mid_step_resumes_bit_identically`.
#[test]
#[ignore = "child process of a_run_killed_mid_step_resumes_bit_identically, which runs and kills it"]
fn nvme_kill_child() {
    use std::io::Write;
    let dir = std::path::PathBuf::from(std::env::var(KILL_ENV).expect("run by the kill test"));
    let swap = dir.join("swap");
    let (mut e, mut loader) = engine(
        &kill_config(&swap),
        Box::new(ds_core::SingleRank),
        (DIM, HIDDEN, CLASSES),
    );
    for step in 1..=1_000_000u64 {
        e.train_batch(&mut loader).expect("step");
        if step % 2 == 0 {
            e.save_checkpoint(
                dir.join("ckpt"),
                &format!("global_step{step}"),
                &serde_json::json!({}),
                Some(&loader),
            )
            .expect("save");
        }
        println!("step {step}");
        std::io::stdout().flush().ok();
    }
}

#[test]
fn a_run_killed_mid_step_resumes_bit_identically() {
    use std::io::BufRead;
    let dir = swap_dir("kill");
    let swap = dir.join("swap");
    std::fs::create_dir_all(&swap).expect("swap dir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "nvme_kill_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(KILL_ENV, &dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    for line in std::io::BufReader::new(stdout).lines() {
        if line.expect("line").trim() == "step 7" {
            break;
        }
    }
    // SIGKILL, wherever the child is: in a step, or writing a checkpoint.
    child.kill().expect("kill");
    child.wait().expect("reap");
    let stale = leftovers(&swap);
    assert_eq!(
        stale.len(),
        1,
        "the killed run's swap file stays behind: {stale:?}"
    );
    // Resume from the last complete checkpoint and train 4 more steps.
    let ckpt = dir.join("ckpt");
    let (mut e, mut loader) = engine(
        &kill_config(&swap),
        Box::new(ds_core::SingleRank),
        (DIM, HIDDEN, CLASSES),
    );
    assert!(
        !swap.join(&stale[0]).exists(),
        "the dead run's swap file was removed"
    );
    let loaded = e
        .load_checkpoint(
            &ckpt,
            None,
            Some(&mut loader as &mut dyn ds_zero::data::Resumable),
        )
        .expect("load the last checkpoint");
    let from = e.counters().global_steps;
    assert!(from >= 6 && from % 2 == 0, "{}: step {from}", loaded.tag);
    let resumed: Vec<u32> = (0..4)
        .map(|_| e.train_batch(&mut loader).expect("step").loss.to_bits())
        .collect();
    let resumed_params = e.parameters().expect("params");
    drop(e);
    // The same run uninterrupted.
    let reference = swap_dir("kill-reference");
    let (mut r, mut loader) = engine(
        &kill_config(&reference),
        Box::new(ds_core::SingleRank),
        (DIM, HIDDEN, CLASSES),
    );
    let mut losses = Vec::new();
    for _ in 0..from + 4 {
        losses.push(r.train_batch(&mut loader).expect("step").loss.to_bits());
    }
    println!("killed after step 7, resumed from step {from}");
    assert_eq!(resumed, losses[from as usize..], "losses after resuming");
    assert_eq!(
        resumed_params,
        r.parameters().expect("params"),
        "parameters"
    );
    drop(r);
    assert_eq!(leftovers(&swap), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&reference).ok();
}

#[test]
fn stage_3_with_parameters_on_nvme_too_is_bit_identical_and_keeps_the_device_empty() {
    let dir = swap_dir("params");
    for precision in [
        r#""bf16": {"enabled": false}"#,
        r#""bf16": {"enabled": true}"#,
    ] {
        for world in [1, 2, 4] {
            let on_device = config(3, precision);
            let reference = bits(&on_device, world);
            // A 64-element transfer buffer: every group's slice is read in several pieces.
            let json = with_params_on_nvme(&nvme_offloaded(&on_device, &dir, 2, 300), &dir, 64);
            assert_eq!(
                bits(&json, world),
                reference,
                "{precision} on {world} ranks"
            );
        }
    }
    // The device keeps only what persists (nothing, with the threshold at 0); two swap files
    // per rank while training, none after.
    let json = with_params_on_nvme(
        &nvme_offloaded(
            &BIG.replace(
                r#""stage": 2"#,
                r#""stage": 3, "stage3_param_persistence_threshold": 0"#,
            ),
            &dir,
            4,
            3 * 1024,
        ),
        &dir,
        4096,
    );
    let (mut e, mut loader) = engine(&json, Box::new(ds_core::SingleRank), DIMS);
    for _ in 0..3 {
        e.train_batch(&mut loader).expect("step");
    }
    let files = leftovers(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let host = e
        .optimizer()
        .offload()
        .expect("offloaded")
        .host_memory
        .in_use;
    println!(
        "stage 3, optimizer and parameters on NVMe: device {} bytes in use (peak {}), host {host} bytes, swap files {files:?}",
        e.memory_stats().in_use,
        e.memory_stats().peak
    );
    assert!(e.memory_stats().in_use <= 64, "{}", e.memory_stats().in_use);
    let psi = psi();
    // Host: the 16-bit gradient partition, staging, 4 x 3 x 1024 f32 swap buffers and the
    // 4096-element transfer buffer, against the 16Ψ the states take in memory.
    let widest = e
        .layout()
        .buckets
        .iter()
        .map(|b| b.owned.len())
        .max()
        .unwrap_or(0) as u64;
    let formula = 2 * psi + 2 * widest.min(1 << 18) + 4 * 3 * 1024 * 4 + 2 * 4096;
    let ratio = host as f64 / formula as f64;
    println!(
        "  host = {ratio:.4} x the formula ({formula}); in memory the states would be {}",
        16 * psi
    );
    assert!((ratio - 1.0).abs() <= 0.05, "host {host} vs {formula}");
    drop(e);
    assert_eq!(leftovers(&dir), Vec::<String>::new());
    std::fs::remove_dir_all(&dir).ok();
}

const FULL_ENV: &str = "DS_NVME_FULL_CHILD";

/// The child half of the full-disk test: under a 64 KiB file-size limit (the kernel refuses to
/// reserve more, as a full disk does), initialising with the optimizer state on NVMe must fail
/// with a named error. Run only by `a_disk_that_cannot_hold_the_swap_file_is_a_named_error`.
#[test]
#[ignore = "child process of a_disk_that_cannot_hold_the_swap_file_is_a_named_error"]
fn nvme_full_child() {
    let dir = std::path::PathBuf::from(std::env::var(FULL_ENV).expect("run by the full-disk test"));
    // SAFETY: setting this process's own limits and ignoring SIGXFSZ (so the refused
    // reservation returns EFBIG instead of killing the process) touch no memory of ours.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 64 << 10,
            rlim_max: 64 << 10,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let dev = Device::new(CpuBackend::with_threads(1).expect("device"));
    let host = Device::new(CpuBackend::with_threads(1).expect("host"));
    let json = nvme_offloaded(BIG, &dir, 4, 3 * 1024);
    match engine_on(&json, Box::new(ds_core::SingleRank), DIMS, dev, host) {
        Ok(_) => println!("ACCEPTED"),
        Err(e) => println!("REFUSED {e}"),
    }
}

#[test]
fn a_disk_that_cannot_hold_the_swap_file_is_a_named_error() {
    let dir = swap_dir("full");
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "nvme_full_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(FULL_ENV, &dir)
        .output()
        .expect("spawn the child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("REFUSED") || l.starts_with("ACCEPTED"))
        .unwrap_or_default();
    println!("{line}");
    assert!(
        line.starts_with("REFUSED")
            && line.contains(&dir.display().to_string())
            && line.contains("cannot hold the"),
        "{text}"
    );
    assert_eq!(
        leftovers(&dir),
        Vec::<String>::new(),
        "no partial swap file"
    );
    std::fs::remove_dir_all(&dir).ok();
}
