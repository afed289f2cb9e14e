//! A short training run of ds-zero's engine on CUDA (cuBLAS, the NVRTC kernels, NCCL's
//! single-rank collectives under ZeRO) against the same run on the CPU backend: the losses
//! agree step for step.

use ds_backend_cuda::{CudaBackend, NcclComm};
use ds_core::cpu::CpuBackend;
use ds_core::{Backend, Collectives, Device, SingleRank};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};

const STEPS: usize = 12;

fn losses<B: Backend>(json: &str, device: Device<B>, comm: Box<dyn Collectives<B>>) -> Vec<f32> {
    let config = Config::parse(json, 1).expect("config");
    let model = MlpClassifier::new(64, &[128], 8, config.precision.dtype());
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, comm, model, Blobs::new(512, 64, 8, 3)).expect("initialize");
    (0..STEPS)
        .map(|_| engine.train_batch(&mut data_loader).expect("step").loss)
        .collect()
}

#[test]
#[ignore = "needs an NVIDIA GPU and NCCL: run scripts/gpu-check.sh on a GPU machine"]
fn a_short_engine_run_on_cuda_matches_the_cpu() {
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
        let json = format!(
            r#"{{"train_batch_size": 32, "gradient_accumulation_steps": 2, {precision},
                "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.01}}}},
                "scheduler": {{"type": "WarmupLR", "params": {{"warmup_num_steps": 4}}}},
                "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 4096}}}}"#
        );
        let cpu = losses(
            &json,
            Device::new(CpuBackend::new().expect("cpu")),
            Box::new(SingleRank),
        );
        assert!(cpu[STEPS - 1] < 0.9 * cpu[0], "the model trains: {cpu:?}");
        let backend = CudaBackend::new(0).expect("CUDA device");
        let comm = NcclComm::single(&backend).expect("NCCL communicator");
        let cuda = losses(&json, Device::new(backend), Box::new(comm));
        println!("{precision}, ZeRO stage {stage}:");
        for (i, (c, g)) in cpu.iter().zip(&cuda).enumerate() {
            println!(
                "  step {:2}  cpu {c:.7}  cuda {g:.7}  rel {:.2e}",
                i + 1,
                (c - g).abs() / c.abs()
            );
        }
        for (i, (c, g)) in cpu.iter().zip(&cuda).enumerate() {
            let rel = (c - g).abs() / c.abs();
            assert!(
                rel <= tolerance,
                "{precision} stage {stage} step {}: cpu {c} vs cuda {g}",
                i + 1
            );
        }
    }
}
