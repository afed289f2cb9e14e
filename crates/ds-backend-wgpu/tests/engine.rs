//! A short training run of ds-zero's engine on WGPU against the same run on the CPU backend:
//! the losses agree step for step (fp32 within 1e-4 relative; fp16 and bf16, whose 16-bit
//! rounding of gradients lands differently when the f32 arithmetic differs in its last bits,
//! within 2e-2 and 5e-2 as on CUDA). ZeRO-2 also runs on two ranks in threads, so the
//! collectives move wgpu buffers (staged through host memory).

use ds_backend_wgpu::WgpuBackend;
use ds_core::collectives::ThreadedComm;
use ds_core::cpu::CpuBackend;
use ds_core::{Backend, Collectives, Device, SingleRank};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};

const STEPS: usize = 10;

fn losses<B: Backend>(
    json: &str,
    world: usize,
    device: Device<B>,
    comm: Box<dyn Collectives<B>>,
) -> Vec<f32> {
    let config = Config::parse(json, world).expect("config");
    let model = MlpClassifier::new(32, &[64], 8, config.precision.dtype());
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, comm, model, Blobs::new(256, 32, 8, 3)).expect("initialize");
    (0..STEPS)
        .map(|_| engine.train_batch(&mut data_loader).expect("step").loss)
        .collect()
}

fn config(precision: &str, stage: u32) -> String {
    format!(
        r#"{{"train_batch_size": 32, "gradient_accumulation_steps": 2, {precision},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.01}}}},
            "scheduler": {{"type": "WarmupLR", "params": {{"warmup_num_steps": 4}}}},
            "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 4096}}}}"#
    )
}

fn compare(what: &str, cpu: &[f32], gpu: &[f32], tolerance: f32) {
    println!("{what}:");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        println!(
            "  step {:2}  cpu {c:.7}  wgpu {g:.7}  rel {:.2e}",
            i + 1,
            (c - g).abs() / c.abs()
        );
    }
    assert!(cpu[STEPS - 1] < 0.9 * cpu[0], "the model trains: {cpu:?}");
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        assert!(
            (c - g).abs() / c.abs() <= tolerance,
            "{what} step {}: cpu {c} vs wgpu {g}",
            i + 1
        );
    }
}

fn cpu() -> Device<CpuBackend> {
    Device::new(CpuBackend::new().expect("cpu"))
}

fn wgpu() -> Device<WgpuBackend> {
    Device::new(WgpuBackend::new().unwrap_or_else(|e| panic!("NOT RUN: {e}")))
}

#[test]
fn a_short_engine_run_on_wgpu_matches_the_cpu() {
    let cases = [
        (r#""bf16": {"enabled": false}"#, 0, 1e-4),
        (r#""bf16": {"enabled": false}"#, 2, 1e-4),
        (
            r#""fp16": {"enabled": true, "initial_scale_power": 12}"#,
            1,
            2e-2,
        ),
        (r#""bf16": {"enabled": true}"#, 2, 5e-2),
    ];
    for (precision, stage, tolerance) in cases {
        let json = config(precision, stage);
        let c = losses(&json, 1, cpu(), Box::new(SingleRank));
        let g = losses(&json, 1, wgpu(), Box::new(SingleRank));
        compare(
            &format!("{precision}, ZeRO stage {stage}"),
            &c,
            &g,
            tolerance,
        );
    }
}

#[test]
fn zero_2_on_two_threaded_ranks_matches_the_cpu() {
    let json = config(r#""bf16": {"enabled": false}"#, 2);
    let run = |use_wgpu: bool| -> Vec<f32> {
        let comms = ThreadedComm::group(2);
        let handles: Vec<_> = comms
            .into_iter()
            .map(|comm| {
                let json = json.clone();
                std::thread::spawn(move || {
                    if use_wgpu {
                        losses(&json, 2, wgpu(), Box::new(comm))
                    } else {
                        losses(&json, 2, cpu(), Box::new(comm))
                    }
                })
            })
            .collect();
        let mut all: Vec<Vec<f32>> = handles
            .into_iter()
            .map(|h| h.join().expect("rank"))
            .collect();
        all.swap_remove(0)
    };
    compare(
        "fp32 ZeRO-2 on 2 threaded ranks",
        &run(false),
        &run(true),
        1e-4,
    );
}
