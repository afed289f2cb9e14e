//! Tokens per second of a GPT training step on the CPU backend, with where the step's time
//! goes: every kernel family the model calls (timed inside it, `ds_nn::profile`), the
//! optimizer step (`engine.step()`: clipping and the fused AdamW), and what is left (the
//! engine's parameter scopes and gradient sink, allocation).
//!
//! `cargo bench -p ds-nn --bench gpt_step` measures the model `ds train` trains by default
//! (4 layers, 4 heads, width 128, context 64, global batch 32); after `--`, `--layers`,
//! `--heads`, `--dim`, `--context` and `--batch` change the shape (the flags of PyTorch's twin,
//! `shared/peers/bench_torch_gpt.py`) and `--bf16` trains in bf16 (`"bf16": {"enabled":
//! true}`) and `--checkpoint` recomputes every block's activations in backward (activation
//! checkpointing; the peak device memory is printed either way). `DS_BENCH_STEPS` sets the measured steps (default 10, after 3 warm-up steps). Not criterion: one step is a few
//! hundred milliseconds and the breakdown needs the same steps measured as the total.

use ds_core::cpu::CpuBackend;
use ds_core::{DType, Device, SingleRank};
use ds_nn::data::TokenWindows;
use ds_nn::{Gpt, GptConfig, profile};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The value after `--name` on the command line, or `default`.
fn flag(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a whole number, not {v:?}"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = GptConfig {
        vocab: 256,
        context: flag(&args, "--context", 64),
        layers: flag(&args, "--layers", 4),
        heads: flag(&args, "--heads", 4),
        dim: flag(&args, "--dim", 128),
    };
    let batch = flag(&args, "--batch", 32);
    let bf16 = args.iter().any(|a| a == "--bf16");
    let checkpoint = args.iter().any(|a| a == "--checkpoint");
    let (dtype, precision) = if bf16 {
        (DType::BF16, r#", "bf16": {"enabled": true}"#)
    } else {
        (DType::F32, "")
    };
    let steps: usize = std::env::var("DS_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let text = include_str!("../../../README.md").repeat(8);
    let tokens = Arc::new(text.bytes().map(u16::from).collect::<Vec<_>>());
    let config = Config::parse(
        &format!(
            r#"{{"train_batch_size": {batch},
                "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.1}}}},
                "gradient_clipping": 1.0{precision}}}"#
        ),
        1,
    )
    .expect("config");
    let device = Device::new(CpuBackend::new().expect("cpu backend"));
    let threads = device.info().compute_units;
    let mut gpt = Gpt::new(shape, dtype).expect("gpt");
    if checkpoint {
        gpt.set_checkpointed_blocks(shape.layers);
    }
    let stats = device.clone();
    let data = TokenWindows::new(tokens, shape.context).expect("data");
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, Box::new(SingleRank), gpt, data).expect("initialize");
    stats.reset_peak_memory();
    let mut total = Duration::ZERO;
    let mut optimizer = Duration::ZERO;
    let mut kernels = profile::Breakdown::default();
    for i in 0..steps + 3 {
        let batch_data = data_loader.next_batch().expect("batch");
        let measured = i >= 3;
        if measured {
            profile::start();
        }
        let t0 = Instant::now();
        let loss = engine.forward(&batch_data).expect("forward");
        engine.backward(&loss).expect("backward");
        let k = profile::stop();
        let t1 = Instant::now();
        engine
            .step()
            .expect("step")
            .expect("a boundary every micro-batch");
        let t2 = Instant::now();
        if measured {
            total += t2 - t0;
            optimizer += t2 - t1;
            kernels = kernels.plus(&k);
        }
    }
    let tokens_per_step = (batch * shape.context) as f64;
    let secs = total.as_secs_f64();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    let other = total.saturating_sub(kernels.total() + optimizer);
    println!(
        "\nGPT training step on the CPU backend ({threads} threads): {} parameters ({} layers, {} \
         heads, width {}, context {}, vocab 256), {}, batch {batch} x {} tokens",
        shape.numel(),
        shape.layers,
        shape.heads,
        shape.dim,
        shape.context,
        if bf16 { "bf16" } else { "fp32" },
        shape.context
    );
    println!(
        "{steps} steps: {:.1} ms per step, {:.0} tokens/s",
        1e3 * secs / steps as f64,
        tokens_per_step * steps as f64 / secs
    );
    println!(
        "peak device memory: {:.1} MiB (activation checkpointing {})",
        stats.memory_stats().peak as f64 / (1 << 20) as f64,
        if checkpoint { "on: every block" } else { "off" }
    );
    println!("{:<44} {:>9} {:>7}", "part", "ms/step", "share");
    let rows = profile::Part::ALL
        .iter()
        .map(|&p| (p.label(), kernels.get(p)))
        .chain([
            ("optimizer step (clip + fused AdamW)", optimizer),
            ("the rest (engine scopes and sink, allocation)", other),
        ]);
    for (name, d) in rows {
        println!(
            "{name:<44} {:>9.2} {:>6.1}%",
            1e3 * d.as_secs_f64() / steps as f64,
            pct(d)
        );
    }
}
