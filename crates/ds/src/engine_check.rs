//! One engine-equivalence body for every backend: ds-zero's engine trains ds-nn's MLP on the
//! backend under test, at ZeRO stages 0-3, in fp32, fp16 and bf16, on 1, 2 and 4 ranks
//! (threads, the collectives staging device buffers through host memory), with and without
//! the optimizer state offloaded to the CPU backend, and each run's losses must follow the CPU
//! backend's at stage 0 on one rank, step for step, on the same global batches.
//!
//! A backend gets the whole body with one line in `crates/ds/tests/engine.rs`:
//!
//! ```ignore
//! ds::engine_tests!(my_backend, my_crate::MyBackend::new());
//! ```
//!
//! The tolerances: 1e-5 relative where only the reduction order can differ from the
//! reference (the CPU backend itself), 1e-4 for another backend's f32 arithmetic, and 2e-2
//! (fp16) or 5e-2 (bf16) when the 16-bit rounding of gradients lands differently once the f32
//! arithmetic differs in its last bits (what the CUDA and WGPU checks have always allowed).

use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;
use ds_core::{Backend, Collectives, Device, SingleRank};
use ds_nn::{Blobs, MlpClassifier};
use ds_zero::config::Config;
use ds_zero::{Initialized, initialize_with_host};

/// Opens a device of the backend under test (one per rank).
pub type Open<'a, B> = dyn Fn() -> Result<Device<B>, String> + Sync + 'a;
/// The collectives of a one-rank run on a device (`SingleRank`, or the backend's own).
pub type Single<'a, B> = dyn Fn(&Device<B>) -> Result<Box<dyn Collectives<B>>, String> + Sync + 'a;

/// Optimizer steps per run.
pub const STEPS: usize = 10;
/// Optimizer steps of an offloaded run (and of the reference, whose first [`STEPS`] the
/// other runs are compared with): the offload issue's 20.
pub const OFFLOAD_STEPS: usize = 20;

fn steps_of(case: &Case) -> usize {
    if case.offload == Offload::No {
        STEPS
    } else {
        OFFLOAD_STEPS
    }
}

/// One run to compare with the reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Case {
    /// The precision section of the config.
    pub precision: &'static str,
    /// The ZeRO stage.
    pub stage: u8,
    /// Ranks, as threads.
    pub world: usize,
    /// What is offloaded to the CPU backend as host.
    pub offload: Offload,
}

/// The offload sections of a case's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offload {
    /// Nothing.
    No,
    /// `offload_optimizer: cpu`.
    Optimizer,
    /// `offload_optimizer` and `offload_param` (stage 3).
    OptimizerAndParams,
    /// `offload_optimizer` and `offload_param` on NVMe: swap files in the temp directory.
    Nvme,
}

const FP32: &str = r#""bf16": {"enabled": false}"#;
const FP16: &str = r#""fp16": {"enabled": true, "initial_scale_power": 12}"#;
const BF16: &str = r#""bf16": {"enabled": true}"#;

/// fp32 at every stage on one rank.
pub const FP32_STAGES: [Case; 4] = [
    Case {
        precision: FP32,
        stage: 0,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: FP32,
        stage: 1,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: FP32,
        stage: 2,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 1,
        offload: Offload::No,
    },
];
/// 16-bit training with fp32 master weights.
pub const MIXED: [Case; 4] = [
    Case {
        precision: FP16,
        stage: 1,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: FP16,
        stage: 3,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: BF16,
        stage: 2,
        world: 1,
        offload: Offload::No,
    },
    Case {
        precision: BF16,
        stage: 3,
        world: 1,
        offload: Offload::No,
    },
];
/// Several ranks on threads.
pub const RANKS: [Case; 4] = [
    Case {
        precision: FP32,
        stage: 2,
        world: 2,
        offload: Offload::No,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 2,
        offload: Offload::No,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 4,
        offload: Offload::No,
    },
    Case {
        precision: FP16,
        stage: 3,
        world: 2,
        offload: Offload::No,
    },
];

/// The optimizer state offloaded to the CPU backend, on every stage that offloads and on
/// several ranks; [`check`] compares each with the CPU reference and with the same run on the
/// same backend without offload, and checks both backends' memory statistics.
pub const OFFLOAD: [Case; 10] = [
    Case {
        precision: FP32,
        stage: 1,
        world: 1,
        offload: Offload::Optimizer,
    },
    Case {
        precision: FP32,
        stage: 2,
        world: 2,
        offload: Offload::Optimizer,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 4,
        offload: Offload::Optimizer,
    },
    Case {
        precision: FP16,
        stage: 2,
        world: 1,
        offload: Offload::Optimizer,
    },
    Case {
        precision: BF16,
        stage: 3,
        world: 2,
        offload: Offload::Optimizer,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 2,
        offload: Offload::OptimizerAndParams,
    },
    Case {
        precision: FP16,
        stage: 3,
        world: 1,
        offload: Offload::OptimizerAndParams,
    },
    Case {
        precision: FP32,
        stage: 1,
        world: 4,
        offload: Offload::Nvme,
    },
    Case {
        precision: FP32,
        stage: 2,
        world: 2,
        offload: Offload::Nvme,
    },
    Case {
        precision: FP32,
        stage: 3,
        world: 2,
        offload: Offload::Nvme,
    },
];

fn config(case: &Case) -> String {
    let nvme;
    let offload = match case.offload {
        Offload::No => "",
        Offload::Optimizer => r#", "offload_optimizer": {"device": "cpu"}"#,
        Offload::OptimizerAndParams => {
            r#", "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}"#
        }
        Offload::Nvme => {
            // Small buffers, so the state streams through many sub-groups.
            let dir = serde_json::Value::from(std::env::temp_dir().display().to_string());
            nvme = format!(
                r#", "offload_optimizer": {{"device": "nvme", "nvme_path": {dir}, "buffer_count": 2,
                    "buffer_size": 900, "pipeline_read": true, "pipeline_write": true}},
                   "offload_param": {{"device": "nvme", "nvme_path": {dir}, "buffer_size": 256}}"#
            );
            &nvme
        }
    };
    format!(
        r#"{{"train_batch_size": 32, "gradient_accumulation_steps": 2, {},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.003, "weight_decay": 0.01}}}},
            "scheduler": {{"type": "WarmupLR", "params": {{"warmup_num_steps": 4}}}},
            "zero_optimization": {{"stage": {}, "reduce_bucket_size": 4096,
                                   "stage3_param_persistence_threshold": 100 {offload}}}}}"#,
        case.precision, case.stage
    )
}

/// Rank 0's losses of `case` on devices from `open`, one-rank runs on `single`'s collectives.
fn losses<B: Backend>(
    case: &Case,
    steps: usize,
    open: &Open<'_, B>,
    single: &Single<'_, B>,
) -> Result<Vec<f32>, String> {
    let json = config(case);
    let run = |device: Device<B>, comm: Box<dyn Collectives<B>>| -> Result<Vec<f32>, String> {
        let config = Config::parse(&json, case.world).map_err(|e| e.to_string())?;
        let model = MlpClassifier::new(32, &[64], 8, config.precision.dtype());
        let host = CpuBackend::new()
            .map(Device::new)
            .map_err(|e| e.to_string())?;
        let data = Blobs::new(256, 32, 8, 3);
        let Initialized {
            mut engine,
            mut data_loader,
            ..
        } = initialize_with_host(&config, device, host, comm, model, data)
            .map_err(|e| e.to_string())?;
        let losses = (0..steps)
            .map(|_| {
                engine
                    .train_batch(&mut data_loader)
                    .map(|r| r.loss)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<f32>, String>>()?;
        if case.offload != Offload::No {
            check_offloaded_memory(&engine, &config)?;
        }
        Ok(losses)
    };
    if case.world == 1 {
        let device = open()?;
        let comm = single(&device)?;
        return run(device, comm);
    }
    let mut ranks = run_threaded(case.world, |comm| run(open()?, Box::new(comm)));
    ranks.swap_remove(0)
}

/// Both backends' statistics after an offloaded run: the device holds what
/// `estimate::model_states` leaves on it (parameters, and stage 1's whole gradient) and the
/// host the optimizer state and gradient partition (and with `offload_param` the parameter
/// slices) plus its staging buffer, each within 5% (or 64 bytes).
fn check_offloaded_memory<B: Backend>(
    engine: &ds_zero::Engine<B, MlpClassifier<B>>,
    config: &Config,
) -> Result<(), String> {
    let states = ds_zero::estimate::model_states(
        config,
        engine.param_table(),
        engine.world_size(),
        config.zero.stage,
    );
    let host = engine
        .optimizer()
        .offload()
        .ok_or("the offloaded run kept its optimizer state on the device")?;
    let widest = engine.layout().buckets.iter().map(|b| b.owned.len()).max();
    let staging = (widest.unwrap_or(0).min(1 << 18) * engine.dtype().size_bytes()) as f64;
    for (side, bytes, formula) in [
        (
            "device",
            engine.memory_stats().in_use,
            states.total() as f64,
        ),
        (
            "host",
            host.host_memory.in_use,
            states.host_total() as f64 + staging,
        ),
    ] {
        let ratio = bytes as f64 / formula;
        if engine.rank() == 0 {
            println!(
                "{} offloaded ZeRO-{} rank 0/{}: {side} {bytes} bytes = {ratio:.4} x the formula",
                engine.device().info().backend,
                config.zero.stage,
                engine.world_size()
            );
        }
        // 5%, or 64 bytes: the engine's few scalars (norm parts, the loss reduction) are all
        // the device keeps when the parameters are offloaded too.
        if (ratio - 1.0).abs() > 0.05 && (bytes as f64 - formula).abs() > 64.0 {
            return Err(format!(
                "offloaded ZeRO-{} rank {}: the {side} holds {bytes} bytes, {ratio:.3} x the {formula:.0} of the formula",
                config.zero.stage,
                engine.rank()
            ));
        }
    }
    Ok(())
}

/// A run by precision, stage and world size.
type RunKey = (&'static str, u8, usize);

/// The CPU backend's losses at stage 0 on one rank with `case`'s precision, over `steps`: the
/// reference.
pub fn reference(case: &Case, steps: usize) -> Result<Vec<f32>, String> {
    let base = Case {
        stage: 0,
        world: 1,
        offload: Offload::No,
        ..*case
    };
    let open = || {
        CpuBackend::new()
            .map(Device::new)
            .map_err(|e| e.to_string())
    };
    losses::<CpuBackend>(&base, steps, &open, &|_| Ok(Box::new(SingleRank)))
}

/// Runs `cases` on the backend `open` gives and compares each with [`reference`]; `Err`
/// lists every step out of tolerance. `cpu` says the backend is the CPU one (the tighter
/// f32 tolerance).
///
/// # Errors
/// A report naming each failing case and step, or why a run could not start.
pub fn check<B: Backend>(
    cases: &[Case],
    open: &Open<'_, B>,
    single: &Single<'_, B>,
) -> Result<String, String> {
    let backend = open()?.info().backend;
    let mut report = Vec::new();
    let mut failures = Vec::new();
    // The reference depends only on the precision: run it once per precision, as long as the
    // longest case.
    let steps = cases.iter().map(steps_of).max().unwrap_or(STEPS);
    let mut references: Vec<(&str, Vec<f32>)> = Vec::new();
    // Runs without offload, by (precision, stage, world), for the offloaded cases beside them.
    let mut without: Vec<(RunKey, Vec<f32>)> = Vec::new();
    for case in cases {
        if !references.iter().any(|(p, _)| *p == case.precision) {
            references.push((case.precision, reference(case, steps)?));
        }
        let want = references
            .iter()
            .find(|(p, _)| *p == case.precision)
            .map(|(_, w)| w.clone())
            .unwrap_or_default();
        let got = losses(case, steps_of(case), open, single).map_err(|e| {
            format!(
                "{} ZeRO-{} on {} rank(s): {e}",
                case.precision, case.stage, case.world
            )
        })?;
        let tolerance = match case.precision {
            FP16 => 2e-2,
            BF16 => 5e-2,
            _ if backend == "cpu" => 1e-5,
            _ => 1e-4,
        };
        if case.offload != Offload::No {
            // The same run with the optimizer state on the device: bit for bit on the CPU (the
            // same kernels), 1e-5 relative in fp32 elsewhere (the host's Adam against the
            // device's), the 16-bit tolerances otherwise.
            let key = (case.precision, case.stage, case.world);
            if !without.iter().any(|(k, _)| *k == key) {
                let plain = Case {
                    offload: Offload::No,
                    ..*case
                };
                without.push((key, losses(&plain, OFFLOAD_STEPS, open, single)?));
            }
            let on_device = without
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, l)| l.clone())
                .unwrap_or_default();
            let bound = match case.precision {
                FP16 => 2e-2,
                BF16 => 5e-2,
                _ if backend == "cpu" => 0.0,
                _ => 1e-5,
            };
            let mut worst = 0f32;
            for (step, (d, g)) in on_device.iter().zip(&got).enumerate() {
                let rel = (d - g).abs() / d.abs().max(1e-30);
                worst = worst.max(rel);
                if rel.is_nan() || rel > bound {
                    failures.push(format!(
                        "{} ZeRO-{} offloaded on {} rank(s), step {}: {g} vs {d} without offload (relative {rel:.2e} > {bound:e})",
                        case.precision,
                        case.stage,
                        case.world,
                        step + 1
                    ));
                }
            }
            report.push(format!(
                "{backend} {} ZeRO-{} offloaded ({:?}) on {} rank(s): largest relative difference from the same run without offload over {OFFLOAD_STEPS} steps {worst:.2e} (bound {bound:e})",
                case.precision, case.stage, case.offload, case.world
            ));
        }
        let mut worst = 0f32;
        for (step, (w, g)) in want.iter().zip(&got).enumerate() {
            let rel = (w - g).abs() / w.abs().max(1e-30);
            worst = worst.max(rel);
            // NaN is out of tolerance too.
            if rel.is_nan() || rel > tolerance {
                failures.push(format!(
                    "{} ZeRO-{} on {} rank(s), step {}: {backend} {g} vs cpu {w} (relative {rel:.2e} > {tolerance:e})",
                    case.precision,
                    case.stage,
                    case.world,
                    step + 1
                ));
            }
        }
        if want[STEPS - 1] >= 0.9 * want[0] {
            failures.push(format!("the reference does not train: {want:?}"));
        }
        report.push(format!(
            "{backend} {} ZeRO-{} on {} rank(s): largest relative difference from the CPU at stage 0 {worst:.2e} (tolerance {tolerance:e})",
            case.precision, case.stage, case.world
        ));
    }
    if failures.is_empty() {
        Ok(report.join("\n"))
    } else {
        Err(failures.join("\n"))
    }
}

/// Panics with [`check`]'s report on failure (the stamped tests' body); a backend with no
/// device here fails with "NOT RUN", never passes.
#[doc(hidden)]
pub fn assert_cases<B: Backend>(cases: &[Case], open: &Open<'_, B>, single: &Single<'_, B>) {
    if let Err(e) = open() {
        panic!("NOT RUN: the backend has no device here: {e}");
    }
    match check(cases, open, single) {
        Ok(report) => println!("{report}"),
        Err(e) => panic!("{e}"),
    }
}

/// Stamps the engine-equivalence tests for a backend: `engine_tests!(name, constructor)`,
/// where the constructor returns `Result<B, impl Display>`; one-rank runs use [`SingleRank`]
/// unless a third argument, `|device| -> Result<Box<dyn Collectives<B>>, String>`, gives the
/// backend's own (NCCL for CUDA). Attributes before the name (`#[ignore = "..."]`) apply to
/// every test.
#[macro_export]
macro_rules! engine_tests {
    ($(#[$meta:meta])* $name:ident, $make:expr) => {
        $crate::engine_tests!($(#[$meta])* $name, $make, |_| Ok(Box::new($crate::core::SingleRank)));
    };
    ($(#[$meta:meta])* $name:ident, $make:expr, $single:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            use $crate::engine_check::{FP32_STAGES, MIXED, OFFLOAD, RANKS, assert_cases};
            $(#[$meta])*
            #[test]
            fn fp32_at_stages_0_to_3_matches_the_cpu() {
                assert_cases(&FP32_STAGES, &|| ($make).map($crate::core::Device::new).map_err(|e| e.to_string()), &$single);
            }
            $(#[$meta])*
            #[test]
            fn fp16_and_bf16_match_the_cpu() {
                assert_cases(&MIXED, &|| ($make).map($crate::core::Device::new).map_err(|e| e.to_string()), &$single);
            }
            $(#[$meta])*
            #[test]
            fn threaded_ranks_at_stages_2_and_3_match_the_cpu() {
                assert_cases(&RANKS, &|| ($make).map($crate::core::Device::new).map_err(|e| e.to_string()), &$single);
            }
            $(#[$meta])*
            #[test]
            fn offloaded_optimizer_matches_the_cpu_and_the_run_without_offload() {
                assert_cases(&OFFLOAD, &|| ($make).map($crate::core::Device::new).map_err(|e| e.to_string()), &$single);
            }
        }
    };
}

/// A device budget of `capacity` bytes for a backend that can cap its memory.
pub type Capped<'a, B> = dyn Fn(u64) -> Result<Device<B>, String> + 'a;

/// The capability offload exists for, on a backend whose memory can be capped: the MLP's
/// fp16 states at ZeRO-2 on one rank (16 bytes a parameter) are refused on a device of 12
/// bytes a parameter and train once the optimizer state is offloaded to the CPU (2 bytes a
/// parameter left on the device); with a host of 6 bytes a parameter, too small for the
/// offloaded 14 in memory, they train with the state on NVMe (swap files in the temp
/// directory). Returns what it measured.
///
/// # Errors
/// A report of what did not hold.
pub fn offload_capacity<B: Backend>(capped: &Capped<'_, B>) -> Result<String, String> {
    let (dims, hidden, classes) = (128, 256, 32);
    let psi = (dims * hidden + hidden + hidden * classes + classes) as u64;
    let base = r#"{"train_batch_size": 16, "fp16": {"enabled": true, "initial_scale_power": 8},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {"stage": 2, "reduce_bucket_size": 4096"#;
    let dir = serde_json::Value::from(std::env::temp_dir().display().to_string());
    let run = |offload: &str, device: u64, host: u64| -> Result<Vec<f32>, String> {
        let config =
            Config::parse(&format!("{base}{offload}}}}}"), 1).map_err(|e| e.to_string())?;
        let model = MlpClassifier::new(dims, &[hidden], classes, config.precision.dtype());
        let host = CpuBackend::with_capacity(1, host)
            .map(Device::new)
            .map_err(|e| e.to_string())?;
        let Initialized {
            mut engine,
            mut data_loader,
            ..
        } = initialize_with_host(
            &config,
            capped(device)?,
            host,
            Box::new(SingleRank),
            model,
            Blobs::new(256, dims, classes, 3),
        )
        .map_err(|e| e.to_string())?;
        (0..6)
            .map(|_| {
                engine
                    .train_batch(&mut data_loader)
                    .map(|r| r.loss)
                    .map_err(|e| e.to_string())
            })
            .collect()
    };
    let roomy = 64 * psi;
    let mut report = Vec::new();
    match run("", 12 * psi, roomy) {
        Err(e) if e.contains("offload the optimizer state") => {
            report.push(format!("12Ψ device, no offload: refused ({e})"));
        }
        other => return Err(format!("a 12Ψ device took 16Ψ of states: {other:?}")),
    }
    let trains = |what: &str, losses: Vec<f32>| -> Result<String, String> {
        if losses[5] < losses[0] {
            Ok(format!(
                "{what}: trains, loss {} -> {}",
                losses[0], losses[5]
            ))
        } else {
            Err(format!("{what}: does not train: {losses:?}"))
        }
    };
    let cpu = r#", "offload_optimizer": {"device": "cpu"}"#;
    report.push(trains(
        "12Ψ device, offload_optimizer cpu",
        run(cpu, 12 * psi, roomy)?,
    )?);
    match run(cpu, 12 * psi, 6 * psi) {
        Err(e) if e.contains("bytes of host memory per rank") => {
            report.push("6Ψ host, offload_optimizer cpu: refused".into());
        }
        other => return Err(format!("a 6Ψ host took the offloaded state: {other:?}")),
    }
    let nvme = format!(
        r#", "offload_optimizer": {{"device": "nvme", "nvme_path": {dir}, "buffer_count": 4, "buffer_size": 3072,
             "pipeline_read": true, "pipeline_write": true}}"#
    );
    report.push(trains(
        "12Ψ device, 6Ψ host, offload_optimizer nvme",
        run(&nvme, 12 * psi, 6 * psi)?,
    )?);
    Ok(report.join("\n"))
}
