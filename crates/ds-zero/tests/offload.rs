//! ZeRO-Offload (`offload_optimizer: {"device": "cpu"}`) on the CPU backend as both device and
//! host: the same training as without offload, bit for bit (the host runs the same kernels on
//! the same elements in the same order); the memory moves from the device to the host as
//! ZeRO-Offload's formulas say; a model whose states do not fit the device trains once its
//! optimizer state is offloaded; and what offload cannot take is refused by name.

mod common;
use common::{CLASSES, DIM, HIDDEN, engine, engine_on, offloaded, train};
use ds_core::Device;
use ds_core::collectives::run_threaded;
use ds_core::cpu::CpuBackend;

const STEPS: usize = 20;

fn config(stage: u8, precision: &str, extra: &str) -> String {
    format!(
        r#"{{"train_batch_size": 16, "gradient_accumulation_steps": 2, "gradient_clipping": 1.0,
            {precision},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 0.01, "weight_decay": 0.01}}}},
            "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 200,
                                   "stage3_param_persistence_threshold": 40 {extra}}}}}"#
    )
}

const FP32: &str = r#""bf16": {"enabled": false}"#;
const FP16: &str = r#""fp16": {"enabled": true, "initial_scale_power": 12}"#;
const BF16: &str = r#""bf16": {"enabled": true}"#;

/// Rank 0's loss bits and parameter bits, after checking every rank agrees.
fn bits(json: &str, world: usize) -> (Vec<u32>, Vec<u32>) {
    let ranks = train(json, world, STEPS);
    for r in &ranks[1..] {
        assert_eq!(r.0, ranks[0].0, "ranks disagree on the loss");
    }
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

#[test]
fn offloaded_training_is_bit_identical_to_training_on_the_device() {
    let mut compared = 0;
    for (precision, worlds) in [(FP32, &[1, 2, 4][..]), (FP16, &[1, 2]), (BF16, &[1, 2])] {
        for stage in 1..=3 {
            for &world in worlds {
                let on_device = config(stage, precision, "");
                let reference = bits(&on_device, world);
                // At stage 3 also with the parameter slices in host memory (offload_param).
                let params_too: &[bool] = if stage == 3 { &[false, true] } else { &[false] };
                for &params in params_too {
                    let off = bits(&offloaded(&on_device, params), world);
                    let what = format!(
                        "{precision} stage {stage} on {world} ranks, offload_param {params}"
                    );
                    assert_eq!(off.0, reference.0, "losses: {what}");
                    assert_eq!(off.1, reference.1, "parameters: {what}");
                    compared += 1;
                }
            }
        }
    }
    println!("{compared} offloaded runs matched their device runs bit for bit over {STEPS} steps");
}

#[test]
fn offload_keeps_the_gradient_dtypes_of_the_device_bit_for_bit() {
    // fp32 accumulation and communication with bf16 training: the host's gradient partition
    // is fp32 and the reduced buckets reach it in fp32, as on the device.
    let dtypes =
        r#", "data_types": {"grad_accum_dtype": "fp32"}, "communication_data_type": "fp32""#;
    for stage in [1, 2, 3] {
        let on_device = config(stage, &format!("{BF16}{dtypes}"), "");
        let reference = bits(&on_device, 2);
        for params in [false, true] {
            if params && stage < 3 {
                continue;
            }
            let off = bits(&offloaded(&on_device, params), 2);
            assert_eq!(off, reference, "stage {stage}, offload_param {params}");
        }
    }
}

#[test]
fn the_master_weights_live_on_the_host_and_match_the_devices() {
    for precision in [FP32, FP16] {
        let json = config(2, precision, "");
        let masters: Vec<Vec<Vec<u32>>> = [json.clone(), offloaded(&json, false)]
            .iter()
            .map(|j| {
                run_threaded(2, |comm| {
                    let (mut e, mut loader) = engine(j, Box::new(comm), (DIM, HIDDEN, CLASSES));
                    for _ in 0..3 {
                        e.train_batch(&mut loader).expect("step");
                    }
                    let master = e.master_partition().expect("master");
                    master.iter().map(|v| v.to_bits()).collect()
                })
            })
            .collect();
        assert_eq!(masters[0], masters[1], "{precision}");
    }
}

const DIMS: (usize, usize, usize) = (128, 256, 32);

fn psi() -> f64 {
    let (d, h, c) = DIMS;
    (d * h + h + h * c + c) as f64
}

/// Each rank's device bytes in use and peak, host bytes in use after three steps, and the
/// host's staging buffer (the largest bucket's owned slice, at most 2^18 elements, 16-bit).
fn measured(stage: u8, world: usize, params: bool) -> Vec<(u64, u64, u64, f64)> {
    let json = offloaded(
        &format!(
            r#"{{"train_batch_size": 16, "fp16": {{"enabled": true, "initial_scale_power": 8}},
                "optimizer": {{"type": "AdamW", "params": {{"lr": 1e-3}}}},
                "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 4096,
                                       "stage3_param_persistence_threshold": 0}}}}"#
        ),
        params,
    );
    run_threaded(world, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        for _ in 0..3 {
            e.train_batch(&mut loader).expect("step");
        }
        let host = e.optimizer().offload().expect("offloaded");
        assert_eq!(host.settings.device, "cpu");
        let widest = e.layout().buckets.iter().map(|b| b.owned.len()).max();
        (
            e.memory_stats().in_use,
            e.memory_stats().peak,
            host.host_memory.in_use,
            2.0 * widest.unwrap_or(0).min(1 << 18) as f64,
        )
    })
}

fn check_memory(stage: u8, world: usize, device: f64, host: f64) {
    for (rank, (dev_bytes, dev_peak, host_bytes, staging)) in
        measured(stage, world, false).into_iter().enumerate()
    {
        let host = host + staging;
        for (side, bytes, formula) in [("device", dev_bytes, device), ("host", host_bytes, host)] {
            let ratio = bytes as f64 / formula;
            println!(
                "stage {stage} + offload_optimizer, rank {rank}/{world}, {side}: {bytes} bytes = {ratio:.4} x the \
                 formula ({formula:.0}); device peak {dev_peak}"
            );
            assert!(
                (ratio - 1.0).abs() <= 0.05,
                "stage {stage} rank {rank} {side}: {bytes} vs {formula:.0} bytes"
            );
        }
    }
}

#[test]
fn offload_moves_the_optimizer_state_and_gradient_partition_to_the_host() {
    let (p, n) = (psi(), 4.0);
    // Stage 1: the device keeps the 16-bit parameters and the whole 16-bit gradient it
    // reduces at the boundary; the host the fp32 master and moments and the owned gradients
    // (12Ψ/N + 2Ψ/N), plus its staging buffer of one bucket's owned slice.
    check_memory(1, 4, 4.0 * p, 14.0 * p / n);
    // Stage 2: the device keeps only the 16-bit parameters (buckets are freed after backward).
    check_memory(2, 4, 2.0 * p, 14.0 * p / n);
    // Stage 3: the device keeps only its slice of the parameters.
    check_memory(3, 4, 2.0 * p / n, 14.0 * p / n);
}

#[test]
fn with_offload_param_the_device_holds_only_the_groups_in_use() {
    let (p, n) = (psi(), 4.0);
    let weights = DIMS.0 * DIMS.1;
    let without = measured(3, 4, false);
    for (rank, (dev_bytes, dev_peak, host_bytes, staging)) in
        measured(3, 4, true).into_iter().enumerate()
    {
        // Between steps nothing but a few scalars (norm parts, the loss reduction): no
        // parameter, gradient or optimizer state.
        println!(
            "stage 3 + both offloads, rank {rank}/4: device {dev_bytes} bytes in use, peak {dev_peak} \
             (without offload_param: {} in use, peak {}); host {host_bytes}",
            without[rank].0, without[rank].1
        );
        assert!(
            dev_bytes <= 64,
            "rank {rank}: {dev_bytes} bytes left on the device"
        );
        // While training: at most the live gathered groups (the largest, the first weight,
        // gathered whole in fp16) and the activations and gradient buckets; the 2Ψ/N slices
        // are gone from it.
        assert!(
            dev_peak + (2.0 * p / n) as u64 <= without[rank].1 + 64,
            "rank {rank}: peak {dev_peak} vs {} without offload_param",
            without[rank].1
        );
        assert!(
            dev_peak >= 2 * weights as u64,
            "the first weight was gathered whole"
        );
        // The host: optimizer state, gradient partition and parameter slices.
        let formula = 16.0 * p / n + staging;
        let ratio = host_bytes as f64 / formula;
        println!("  host = {ratio:.4} x 12Ψ/N + 2Ψ/N + 2Ψ/N + staging ({formula:.0})");
        assert!(
            (ratio - 1.0).abs() <= 0.05,
            "rank {rank}: host {host_bytes}"
        );
    }
}

#[test]
fn a_model_whose_states_do_not_fit_the_device_trains_with_its_optimizer_offloaded() {
    // fp32, stage 2, one rank: 16 bytes a parameter of model states on the device without
    // offload; 4 with it (the parameters), 16 on the host (master, moments, gradients). The
    // device's 12Ψ leave room for the working memory (activations, gradient buckets).
    let psi = psi() as u64;
    let json = config_one_rank();
    let capacity = 12 * psi;
    let device = || Device::new(CpuBackend::with_capacity(1, capacity).expect("device"));
    let roomy_host = || Device::new(CpuBackend::with_threads(1).expect("host"));
    let err = engine_on(
        &json,
        Box::new(ds_core::SingleRank),
        DIMS,
        device(),
        roomy_host(),
    )
    .err()
    .expect("without offload the states do not fit")
    .to_string();
    println!("{err}");
    assert!(
        err.contains(&format!("ZeRO stage 2 needs {} bytes", 16 * psi))
            && err.contains("offload the optimizer state")
            && err.contains(&format!(
                "stage 3 would then need {} bytes on the device",
                4 * psi
            )),
        "{err}"
    );
    let json = offloaded(&json, false);
    let (mut e, mut loader) = engine_on(
        &json,
        Box::new(ds_core::SingleRank),
        DIMS,
        device(),
        roomy_host(),
    )
    .expect("offloaded states fit");
    let losses: Vec<f32> = (0..8)
        .map(|_| e.train_batch(&mut loader).expect("step").loss)
        .collect();
    assert!(losses[7] < losses[0], "trains: {losses:?}");
    println!(
        "device peak {} of {} bytes; host {} bytes",
        e.memory_stats().peak,
        capacity,
        e.optimizer()
            .offload()
            .expect("offloaded")
            .host_memory
            .in_use
    );
    // A host that cannot hold the offloaded state is refused before anything is allocated.
    let small_host = Device::new(CpuBackend::with_capacity(1, 10 * psi).expect("host"));
    let err = engine_on(
        &json,
        Box::new(ds_core::SingleRank),
        DIMS,
        device(),
        small_host,
    )
    .err()
    .expect("the host is too small")
    .to_string();
    assert!(
        err.contains(&format!(
            "offload_optimizer needs {} bytes of host memory per rank",
            16 * psi
        )),
        "{err}"
    );
}

fn config_one_rank() -> String {
    r#"{"train_batch_size": 16, "bf16": {"enabled": false},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {"stage": 2, "reduce_bucket_size": 4096}}"#
        .to_string()
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
fn what_offload_does_not_run_is_refused_by_name() {
    let base = |stage: u8, optimizer: &str, offload: &str| {
        format!(
            r#"{{"train_batch_size": 16, "optimizer": {optimizer},
                "zero_optimization": {{"stage": {stage}, "offload_optimizer": {offload}}}}}"#
        )
    };
    let adam = r#"{"type": "AdamW", "params": {"lr": 1e-3}}"#;
    let cpu = r#"{"device": "cpu"}"#;
    for (json, expected) in [
        (
            base(0, adam, cpu),
            "offload_optimizer needs ZeRO stage 1, 2 or 3",
        ),
        (
            base(2, r#"{"type": "Lamb", "params": {"lr": 1e-3}}"#, cpu),
            "Lamb with zero_optimization.offload_optimizer",
        ),
        (
            base(2, adam, r#"{"device": "cpu", "ratio": 0.5}"#),
            "offload_optimizer.ratio = 0.5",
        ),
        (
            base(2, adam, r#"{"device": "cpu", "super_offload": true}"#),
            "super_offload",
        ),
        (
            base(2, adam, r#"{"device": "nvme"}"#),
            "offload_optimizer.device = nvme needs nvme_path",
        ),
        (
            base(2, adam, r#"{"device": "nvme", "nvme_path": "/tmp"}"#).replacen(
                '{',
                r#"{"aio": {"use_gds": true}, "#,
                1,
            ),
            "aio.use_gds (GPUDirect Storage",
        ),
        (
            format!(
                r#"{{"train_batch_size": 16, "optimizer": {adam},
                    "zero_optimization": {{"stage": 3, "offload_param": {{"device": "cpu"}}}}}}"#
            ),
            "offload_param needs offload_optimizer too",
        ),
    ] {
        let err = refusal(&json);
        assert!(err.contains(expected), "{json}: {err}");
    }
    // Without a host backend the engine cannot offload, and says what to call.
    let config = ds_zero::config::Config::parse(&base(2, adam, cpu), 1).expect("config");
    let dev = Device::new(CpuBackend::with_threads(1).expect("device"));
    let model = ds_nn::MlpClassifier::new(DIM, &[HIDDEN], CLASSES, config.precision.dtype());
    let err = ds_zero::initialize(
        &config,
        dev,
        Box::new(ds_core::SingleRank),
        model,
        ds_nn::Blobs::new(16, DIM, CLASSES, 7),
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(err.contains("initialize_with_host"), "{err}");
    // Below stage 3, offload_param is ignored, as DeepSpeed ignores it.
    let json = offloaded(&config_one_rank(), true);
    let dev = Device::new(CpuBackend::with_threads(1).expect("device"));
    let host = Device::new(CpuBackend::with_threads(1).expect("host"));
    engine_on(&json, Box::new(ds_core::SingleRank), DIMS, dev, host).expect("accepted");
}
