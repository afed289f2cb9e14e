//! Activation checkpointing on the GPT: at a shape where activations dominate (a small width,
//! a long context and a large batch), recomputing each block's activations in backward gives
//! the same losses and parameters, bit for bit in fp32, with a lower peak of device memory
//! (the backend's own statistics).

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
