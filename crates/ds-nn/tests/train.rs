//! The GPT learns through the engine: trained on a fixed text with DeepSpeed's AdamW, its loss
//! must fall well below the text's unigram entropy (the loss of a model that knows only byte
//! frequencies). The text lives here, not in a document that changes, so the figures do not
//! drift when the docs are edited.

use ds_core::cpu::CpuBackend;
use ds_core::{DType, Device, SingleRank};
use ds_nn::data::{TokenWindows, unigram_entropy};
use ds_nn::{Gpt, GptConfig};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize};
use std::sync::Arc;

const CORPUS: &str = "ds rebuilds the part of DeepSpeed that trains models: the engine, its \
JSON config, mixed precision, fused optimizers and ZeRO, as a Rust workspace over one backend \
contract. Bring a DeepSpeed config and get the same training, without operators built at import \
time, on more hardware, with one conformance suite that holds every backend to the same oracle. \
The engine drives a model through forward, backward and step. Gradients are reduced across \
ranks in buckets, partitioned by ZeRO, clipped by their global norm and applied by a fused \
optimizer to fp32 master weights. Checkpoints are written atomically and load on another world \
size. Every kernel is checked against an f64 oracle in f32, f16 and bf16, and every collective \
under one to four ranks, on threads and under mpirun.\n";

#[test]
fn a_small_gpt_learns_a_text_well_below_its_unigram_entropy() {
    let text = CORPUS.repeat(4);
    let tokens: Vec<u16> = text.bytes().map(u16::from).collect();
    let entropy = unigram_entropy(&tokens);
    let config = Config::parse(
        r#"{"train_batch_size": 16, "train_micro_batch_size_per_gpu": 16,
            "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.0}},
            "gradient_clipping": 1.0}"#,
        1,
    )
    .expect("config");
    let gpt = Gpt::new(
        GptConfig {
            vocab: 256,
            context: 32,
            layers: 2,
            heads: 2,
            dim: 48,
        },
        DType::F32,
    )
    .expect("gpt");
    let data = TokenWindows::new(Arc::new(tokens), 32).expect("windows");
    let device = Device::new(CpuBackend::new().expect("backend"));
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, Box::new(SingleRank), gpt, data).expect("initialize");
    let losses: Vec<f32> = (0..150)
        .map(|_| engine.train_batch(&mut data_loader).expect("step").loss)
        .collect();
    let last: f32 = losses[140..].iter().sum::<f32>() / 10.0;
    println!(
        "unigram entropy {entropy:.3} nats; loss first {:.3}, mean of last 10 {last:.3}",
        losses[0]
    );
    assert!(
        (losses[0] - 256f32.ln()).abs() < 0.3,
        "starts near ln 256: {}",
        losses[0]
    );
    assert!(
        f64::from(last) < entropy - 0.5,
        "loss {last} must fall well below the unigram entropy {entropy}"
    );
}
