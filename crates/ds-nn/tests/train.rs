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

#[test]
fn a_curriculum_sequence_length_trains_on_the_first_positions_only() {
    // The engine sets the GPT's curriculum length before each forward: with 8 the loss of
    // 17-token sequences is the loss of their first 9 tokens (8 inputs, 8 targets).
    use ds_model::{Model, ParamTable, Params, Slot};
    let dev = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let shape = GptConfig {
        vocab: 32,
        context: 16,
        layers: 1,
        heads: 2,
        dim: 16,
    };
    let mut gpt = Gpt::<CpuBackend>::new(shape, DType::F32).expect("gpt");
    let table = ParamTable::of::<CpuBackend, _>(&gpt).expect("table");
    let slots = Slot::packed(table.specs());
    let mut host = vec![0f32; slots.iter().map(|s| s.len).sum()];
    for (i, s) in slots.iter().enumerate() {
        gpt.init(i, 3, &mut host[s.offset..s.offset + s.len]);
    }
    let buf = dev.alloc_from(&host).expect("params");
    let long: Vec<Vec<i32>> = (0..4)
        .map(|b| (0..17).map(|i| (i * 5 + b * 3) % 32).collect())
        .collect();
    let short: Vec<Vec<i32>> = long.iter().map(|s| s[..9].to_vec()).collect();
    let loss = |gpt: &mut Gpt<CpuBackend>, batch: &Vec<Vec<i32>>| {
        let mut params = Params::flat(&buf, &slots, &table);
        gpt.forward(&dev, &mut params, batch).expect("forward")
    };
    let whole = loss(&mut gpt, &long);
    let first_nine = loss(&mut gpt, &short);
    gpt.set_curriculum_seqlen(8).expect("seqlen");
    assert_eq!(loss(&mut gpt, &long).to_bits(), first_nine.to_bits());
    assert_ne!(whole, first_nine);
    // Longer than the sequences: all of them; zero is refused by name.
    gpt.set_curriculum_seqlen(usize::MAX).expect("seqlen");
    assert_eq!(loss(&mut gpt, &long).to_bits(), whole.to_bits());
    let err = gpt.set_curriculum_seqlen(0).expect_err("zero");
    assert_eq!(err.argument(), Some("seqlen"));
}

#[test]
fn the_engine_sets_the_curriculum_length_each_step_and_evaluation_sees_whole_sequences() {
    // fixed_discrete: 4 tokens up to step 1, 8 up to step 2, then 16 (the context).
    let config = Config::parse(
        r#"{"train_batch_size": 4, "optimizer": {"type": "AdamW"},
            "curriculum_learning": {"enabled": true, "curriculum_type": "seqlen",
              "min_difficulty": 4, "max_difficulty": 16, "schedule_type": "fixed_discrete",
              "schedule_config": {"difficulty": [4, 8, 16], "max_step": [1, 2]}}}"#,
        1,
    )
    .expect("config");
    let shape = GptConfig {
        vocab: 32,
        context: 16,
        layers: 1,
        heads: 2,
        dim: 16,
    };
    let gpt = Gpt::new(shape, DType::F32).expect("gpt");
    let tokens: Vec<u16> = (0..2_000u32)
        .map(|i| ((i * 7 + i / 5) % 32) as u16)
        .collect();
    let data = TokenWindows::new(Arc::new(tokens), 16).expect("windows");
    let device = Device::new(CpuBackend::with_threads(1).expect("backend"));
    let Initialized {
        mut engine,
        mut data_loader,
        ..
    } = initialize(&config, device, Box::new(SingleRank), gpt, data).expect("initialize");
    let mut seen = Vec::new();
    for _ in 0..4 {
        engine.train_batch(&mut data_loader).expect("step");
        seen.push(engine.model().curriculum_seqlen());
    }
    assert_eq!(seen, [4, 8, 16, 16]);
    let batch: Vec<Vec<i32>> = (0..2)
        .map(|b| (0..17).map(|i| (i + b) % 32).collect())
        .collect();
    engine.evaluate(&batch).expect("evaluate");
    assert_eq!(
        engine.model().curriculum_seqlen(),
        usize::MAX,
        "evaluation: whole sequences"
    );
}
