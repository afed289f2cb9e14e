//! Activation checkpointing on the GPT: at a shape where activations dominate (a small width,
//! a long context and a large batch), recomputing each block's activations in backward gives
//! the same losses and parameters, bit for bit in fp32, with a lower peak of device memory
//! (the backend's own statistics); with the checkpoints in host memory (`cpu_checkpointing`)
//! the device holds none of them between forward and backward.

use ds_core::cpu::CpuBackend;
use ds_core::{DType, Device, SingleRank};
use ds_nn::data::TokenWindows;
use ds_nn::{Gpt, GptConfig};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};
use std::sync::Arc;

/// Named parameter values.
type NamedParams = Vec<(String, Vec<f32>)>;

/// Trains 3 steps with `checkpointed` blocks recomputed: the losses, final parameters and the
/// peak bytes of the training steps (parameters, gradients and optimizer state included).
fn run(checkpointed: usize) -> (Vec<f32>, NamedParams, u64) {
    run_with(checkpointed, false)
}

fn run_with(checkpointed: usize, on_host: bool) -> (Vec<f32>, NamedParams, u64) {
    let config = Config::parse(
        r#"{"train_batch_size": 16, "optimizer": {"type": "AdamW", "params": {"lr": 0.003}}}"#,
        1,
    )
    .expect("config");
    let mut gpt = Gpt::new(
        GptConfig {
            vocab: 64,
            context: 128,
            layers: 4,
            heads: 2,
            dim: 32,
        },
        DType::F32,
    )
    .expect("gpt");
    gpt.set_checkpointed_blocks(checkpointed);
    gpt.set_checkpoints_on_host(on_host);
    let tokens: Vec<u16> = (0..20_000u32)
        .map(|i| ((i * 7 + i / 13) % 64) as u16)
        .collect();
    let data = TokenWindows::new(Arc::new(tokens), 128).expect("windows");
    let device = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device.clone(), Box::new(SingleRank), gpt, data).expect("initialize");
    device.reset_peak_memory();
    let losses = (0..3)
        .map(|_| engine.train_batch(&mut data_loader).expect("step").loss)
        .collect();
    let peak = device.memory_stats().peak;
    (losses, engine.parameters().expect("params"), peak)
}

#[test]
fn checkpointed_blocks_give_the_same_bits_with_less_memory() {
    let (plain_losses, plain_params, plain_peak) = run(0);
    let (ck_losses, ck_params, ck_peak) = run(4);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain_losses), bits(&ck_losses), "losses");
    for ((name, a), (_, b)) in plain_params.iter().zip(&ck_params) {
        assert_eq!(bits(a), bits(b), "parameter {name}");
    }
    println!(
        "peak device memory: {plain_peak} bytes without checkpointing, {ck_peak} with ({:.2}x)",
        plain_peak as f64 / ck_peak as f64
    );
    assert!(
        (ck_peak as f64) < 0.6 * plain_peak as f64,
        "checkpointing all 4 blocks must cut the peak well down: {ck_peak} vs {plain_peak}"
    );
}

#[test]
fn checkpoints_in_host_memory_give_the_same_bits_with_less_device_memory() {
    let (ck_losses, ck_params, ck_peak) = run(4);
    let (host_losses, host_params, host_peak) = run_with(4, true);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&ck_losses), bits(&host_losses), "losses");
    for ((name, a), (_, b)) in ck_params.iter().zip(&host_params) {
        assert_eq!(bits(a), bits(b), "parameter {name}");
    }
    // Three of the four inputs (16 x 128 x 32 f32, 256 KiB each) are off the device when the
    // last block's backward runs: the peak drops by most of them.
    let input = 16 * 128 * 32 * 4;
    println!(
        "peak device memory with every block checkpointed: {ck_peak} bytes on the device, {host_peak} with \
         cpu_checkpointing ({} KiB less)",
        (ck_peak - host_peak) / 1024
    );
    assert!(
        host_peak + 2 * input <= ck_peak,
        "cpu_checkpointing must take the inputs off the device: {host_peak} vs {ck_peak}"
    );
}
