//! ZeRO stage 3 on ds-nn's GPT: the memory it holds (read from the backend's statistics), the
//! order it gathers, prefetches and releases in (from the engine's trace), prefetch changing
//! no bit, and a model whose 16Ψ does not fit one device training on four.

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::{Collectives, Device};
use ds_nn::data::TokenWindows;
use ds_nn::{Gpt, GptConfig};
use ds_zero::config::Config;
use ds_zero::data::DataLoader;
use ds_zero::zero3::Zero3Event;
use ds_zero::{Engine, Initialized, initialize};
use std::sync::Arc;

const SHAPE: GptConfig = GptConfig {
    vocab: 64,
    context: 16,
    layers: 3,
    heads: 2,
    dim: 64,
};

type GptEngine = Engine<CpuBackend, Gpt<CpuBackend>>;

fn tokens() -> Arc<Vec<u16>> {
    Arc::new(
        (0..4096u32)
            .map(|i| ((i * 7 + i / 13) % 64) as u16)
            .collect(),
    )
}

fn gpt_engine(
    json: &str,
    comm: Box<dyn Collectives<CpuBackend>>,
    device: CpuBackend,
) -> ds_zero::Result<(GptEngine, DataLoader<TokenWindows>)> {
    let config = Config::parse(json, comm.world_size())?;
    let gpt = Gpt::new(SHAPE, config.precision.dtype())?;
    let data = TokenWindows::new(tokens(), SHAPE.context).expect("windows");
    let Initialized {
        engine,
        data_loader,
        ..
    } = initialize(&config, Device::new(device), comm, gpt, data)?;
    Ok((engine, data_loader))
}

fn config(precision: &str, zero: &str) -> String {
    format!(
        r#"{{"train_batch_size": 8, {precision},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 1e-3}}}},
            "zero_optimization": {{"stage": 3 {zero}}}}}"#
    )
}

const FP16: &str = r#""fp16": {"enabled": true, "initial_scale_power": 8}"#;
const FP32: &str = r#""fp16": {"enabled": false}"#;

/// Elements of one transformer block (what one block's group holds).
fn block_numel() -> usize {
    let c = SHAPE.dim;
    2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
}

#[test]
fn stage_3_holds_16_psi_over_n_plus_the_persistent_parameters_and_caps_what_is_gathered() {
    let world = 4;
    let psi = SHAPE.numel() as f64;
    // Only the block weights and embeddings are gathered; biases and LayerNorm parameters
    // (under 1,000 elements) persist. A cap of two blocks' worth of gathered elements.
    let cap = 2 * block_numel() + 1024;
    let json = config(
        FP16,
        &format!(
            r#", "stage3_param_persistence_threshold": 1000, "stage3_max_live_parameters": {cap},
               "stage3_prefetch_bucket_size": {cap}"#
        ),
    );
    let results = run_threaded(world, |comm| {
        let device = CpuBackend::with_threads(1).expect("backend");
        let (mut e, mut loader) = gpt_engine(&json, Box::new(comm), device).expect("engine");
        let after_init = e.memory_stats().in_use;
        let persistent: usize = e
            .layout()
            .groups
            .as_ref()
            .and_then(|g| g.persistent)
            .map_or(0, |b| e.layout().buckets[b].range.len());
        for _ in 0..4 {
            e.train_batch(&mut loader).expect("step");
        }
        let stats = e.zero3_stats().expect("stage 3");
        (after_init, e.memory_stats().in_use, persistent, stats)
    });
    for (rank, (init, trained, persistent, stats)) in results.into_iter().enumerate() {
        let formula = 16.0 * psi / world as f64 + 2.0 * persistent as f64;
        for (when, bytes) in [("after initialize", init), ("after 4 steps", trained)] {
            let ratio = bytes as f64 / formula;
            println!(
                "rank {rank}/{world} {when}: {bytes} bytes = {ratio:.4} x (16Ψ/N + 2P = {formula:.0}; Ψ = {psi}, P = {persistent})"
            );
            assert!((ratio - 1.0).abs() <= 0.05, "rank {rank} {when}: {ratio}");
        }
        println!("rank {rank}: {stats:?}");
        assert!(
            stats.peak_live_elements <= cap,
            "peak gathered {} > cap {cap}",
            stats.peak_live_elements
        );
        assert!(stats.prefetches > 0 && stats.hits > 0, "{stats:?}");
        assert_eq!(
            stats.live_elements, 0,
            "nothing stays gathered between steps"
        );
    }
}

/// The engine's trace of rank 0's last micro-step of `steps`.
fn events(json: &str, world: usize, steps: usize) -> Vec<Zero3Event> {
    run_threaded(world, |comm| {
        let device = CpuBackend::with_threads(1).expect("backend");
        let (mut e, mut loader) = gpt_engine(json, Box::new(comm), device).expect("engine");
        for _ in 0..steps {
            e.train_batch(&mut loader).expect("step");
        }
        e.zero3_events().to_vec()
    })
    .remove(0)
}

#[test]
fn every_group_is_gathered_before_its_forward_and_backward_and_prefetch_follows_the_trace() {
    // No persistence: every group (embeddings, 3 blocks, ln_f) is gathered.
    let json = config(
        FP32,
        r#", "stage3_param_persistence_threshold": 0, "stage3_max_reuse_distance": 0"#,
    );
    let ev = events(&json, 2, 2);
    println!("{ev:?}");
    let (embed, ln_f) = (0, SHAPE.layers + 1);
    let opens: Vec<usize> = ev
        .iter()
        .filter_map(|e| match e {
            Zero3Event::Open(g) => Some(*g),
            _ => None,
        })
        .collect();
    // Forward: embeddings, blocks, ln_f, the tied head; backward: head, ln_f, blocks reversed
    // (the embeddings' own backward reads no parameter).
    let want = vec![embed, 1, 2, 3, ln_f, embed, embed, ln_f, 3, 2, 1];
    assert_eq!(opens, want);
    // Each open finds its group gathered: by a gather right before, or by a prefetch
    // earlier. Each close is followed by its release (reuse distance 0 keeps nothing).
    let mut gathered = std::collections::HashSet::new();
    let mut prefetched = Vec::new();
    for (i, e) in ev.iter().enumerate() {
        match *e {
            Zero3Event::Gather { group, prefetch } => {
                assert!(gathered.insert(group), "{group} gathered twice at {i}");
                if prefetch {
                    prefetched.push(group);
                }
            }
            Zero3Event::Open(g) => {
                let next = ev[i + 1];
                let ok = gathered.contains(&g)
                    || next
                        == Zero3Event::Gather {
                            group: g,
                            prefetch: false,
                        };
                assert!(
                    ok,
                    "group {g} opened at {i} without being gathered: {next:?}"
                );
            }
            Zero3Event::Close(g) => {
                // Reuse distance 0 keeps a group only when the trace uses it next: the
                // embeddings between the head's forward and its backward.
                match ev[i + 1] {
                    Zero3Event::Release(r) if r == g => {
                        gathered.remove(&g);
                    }
                    Zero3Event::Keep(k) if k == g => {
                        assert_eq!((g, ev[i + 2]), (embed, Zero3Event::Backward), "kept at {i}");
                    }
                    other => panic!("close of {g} at {i} followed by {other:?}"),
                }
            }
            _ => {}
        }
    }
    // Prefetches are issued in the trace's order: within each burst of prefetches, the
    // groups' next opens come in the order they were prefetched; and every prefetched group
    // is opened later in the micro-step.
    let next_open = |i: usize, g: usize| {
        ev[i..]
            .iter()
            .position(|e| *e == Zero3Event::Open(g))
            .map(|p| p + i)
            .unwrap_or_else(|| panic!("group {g} prefetched at {i} and never opened"))
    };
    let mut last: Option<usize> = None;
    for (i, e) in ev.iter().enumerate() {
        match *e {
            Zero3Event::Gather {
                group,
                prefetch: true,
            } => {
                let at = next_open(i, group);
                assert!(
                    last.is_none_or(|l| at > l),
                    "prefetch of {group} at {i} out of trace order"
                );
                last = Some(at);
            }
            _ => last = None,
        }
    }
    assert!(!prefetched.is_empty());
    // The first micro-step has no trace: nothing is prefetched.
    assert!(
        !events(&json, 2, 1)
            .iter()
            .any(|e| matches!(e, Zero3Event::Gather { prefetch: true, .. }))
    );
}

#[test]
fn prefetch_and_reuse_change_no_bit() {
    let run = |zero: &str| {
        run_threaded(2, |comm| {
            let device = CpuBackend::with_threads(1).expect("backend");
            // Every parameter partitioned, so every group is gathered.
            let zero = format!(r#", "stage3_param_persistence_threshold": 0 {zero}"#);
            let json = config(FP16, &zero);
            let (mut e, mut loader) = gpt_engine(&json, Box::new(comm), device).expect("engine");
            let losses: Vec<u32> = (0..5)
                .map(|_| e.train_batch(&mut loader).expect("step").loss.to_bits())
                .collect();
            let stats = e.zero3_stats().expect("stage 3");
            ((losses, e.parameters().expect("parameters")), stats)
        })
        .remove(0)
    };
    let (off, _) = run(r#", "stage3_prefetch_bucket_size": 0, "stage3_max_reuse_distance": 0"#);
    let (on, stats) = run("");
    assert!(stats.prefetches > 0 || stats.hits > 0, "{stats:?}");
    assert_eq!(off, on);
    // DeepSpeed's `stage3_max_live_parameters: 0` (axolotl's ZeRO-3 configs): nothing held
    // beyond the open groups, the same bits.
    let (none, stats) = run(r#", "stage3_max_live_parameters": 0"#);
    assert_eq!((stats.prefetches, stats.hits), (0, 0), "{stats:?}");
    assert_eq!(none, on);
}

#[test]
fn a_model_too_large_for_one_device_is_refused_at_stage_0_and_trains_at_stage_3_on_four() {
    // fp32 with Adam: 16 bytes a parameter of model states at stage 0, 4 at stage 3 on 4 ranks;
    // the rest of the device is the working memory (activations, gathered groups, buckets).
    let psi = SHAPE.numel() as u64;
    // 14Ψ: less than stage 0's 16Ψ of model states alone.
    let capacity = 14 * psi;
    let device = || CpuBackend::with_capacity(1, capacity).expect("backend");
    let stage0 =
        r#"{"train_batch_size": 8, "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}}"#;
    let err = match gpt_engine(stage0, Box::new(ds_core::SingleRank), device()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("stage 0 must not fit"),
    };
    println!("{err}");
    assert!(
        err.contains(&format!("ZeRO stage 0 needs {} bytes", 16 * psi))
            && err.contains("no ZeRO stage fits on 1 ranks"),
        "{err}"
    );
    // What a user short of device memory sets: at most two blocks gathered, one prefetched.
    let json = config(
        FP32,
        &format!(
            r#", "stage3_param_persistence_threshold": 0, "stage3_max_live_parameters": {},
               "stage3_prefetch_bucket_size": {}"#,
            2 * block_numel() + 1024,
            block_numel() + 512
        ),
    );
    let losses = run_threaded(4, |comm| {
        let (mut e, mut loader) =
            gpt_engine(&json, Box::new(comm), device()).expect("stage 3 fits");
        let losses: Vec<f32> = (0..6)
            .map(|_| e.train_batch(&mut loader).expect("step").loss)
            .collect();
        println!(
            "rank {}: peak {} of {capacity} bytes",
            e.rank(),
            e.memory_stats().peak
        );
        losses
    })
    .remove(0);
    assert!(losses[5] < losses[0], "stage 3 trains: {losses:?}");
    // On 4 ranks stage 0 is refused with the stage that would fit.
    let on4 = run_threaded(4, |comm| {
        gpt_engine(stage0, Box::new(comm), device())
            .err()
            .map(|e| e.to_string())
    });
    let err = on4[0].clone().expect("stage 0 refused on 4 ranks");
    // Stage 1 already fits the model states here (fp32: 8Ψ + 8Ψ/N = 10Ψ): named with its
    // bytes.
    let stage1 = 8 * psi + 8 * psi / 4;
    assert!(
        err.contains(&format!(
            "ZeRO stage 1 would need {stage1} bytes per rank and fit"
        )),
        "{err}"
    );
}
