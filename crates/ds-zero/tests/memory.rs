//! ZeRO's memory savings, read from the backend's own statistics: with 16-bit parameters and
//! Adam on N = 4 ranks, each rank holds 4Ψ + 12Ψ/N bytes of model states at stage 1 and
//! 2Ψ + 14Ψ/N at stage 2 (16Ψ at stage 0), within 5%; accumulating in fp32 adds the 4Ψ window
//! sum at stage 0 (bf16's default) and doubles stage 2's gradient partition.

mod common;
use common::engine;
use ds_core::collectives::run_threaded;

const DIMS: (usize, usize, usize) = (128, 256, 32);

fn psi() -> f64 {
    let (d, h, c) = DIMS;
    (d * h + h + h * c + c) as f64
}

/// Each rank's bytes in use after initialize and after three training steps (the peak,
/// activations and gradient buckets included, is printed beside them).
fn measured(stage: u8, world: usize) -> Vec<(u64, u64)> {
    let fp16 = r#""fp16": {"enabled": true, "initial_scale_power": 8}"#;
    measured_with(stage, world, fp16)
}

fn measured_with(stage: u8, world: usize, precision: &str) -> Vec<(u64, u64)> {
    let json = format!(
        r#"{{"train_batch_size": 16, {precision},
            "optimizer": {{"type": "AdamW", "params": {{"lr": 1e-3}}}},
            "zero_optimization": {{"stage": {stage}, "reduce_bucket_size": 4096}}}}"#
    );
    run_threaded(world, |comm| {
        let (mut e, mut loader) = engine(&json, Box::new(comm), DIMS);
        let after_init = e.memory_stats().in_use;
        for _ in 0..3 {
            e.train_batch(&mut loader).expect("step");
        }
        let stats = e.memory_stats();
        println!(
            "stage {stage}, rank {}: peak {} bytes while training",
            e.rank(),
            stats.peak
        );
        (after_init, stats.in_use)
    })
}

fn check(stage: u8, world: usize, formula: f64) {
    check_measured(stage, world, formula, measured(stage, world));
}

fn check_measured(stage: u8, world: usize, formula: f64, measured: Vec<(u64, u64)>) {
    for (rank, (init, trained)) in measured.into_iter().enumerate() {
        for (when, bytes) in [("after initialize", init), ("after 3 steps", trained)] {
            let ratio = bytes as f64 / formula;
            println!(
                "stage {stage}, rank {rank}/{world}, {when}: {bytes} bytes = {ratio:.4} x the formula ({formula:.0})"
            );
            assert!(
                (ratio - 1.0).abs() <= 0.05,
                "stage {stage} rank {rank} {when}: {bytes} vs {formula:.0} bytes"
            );
        }
    }
}

#[test]
fn stage_1_holds_4_psi_plus_12_psi_over_n() {
    let n = 4.0;
    check(1, 4, 4.0 * psi() + 12.0 * psi() / n);
}

#[test]
fn stage_2_holds_2_psi_plus_14_psi_over_n() {
    let n = 4.0;
    check(2, 4, 2.0 * psi() + 14.0 * psi() / n);
}

#[test]
fn stage_0_holds_16_psi() {
    check(0, 2, 16.0 * psi());
}

#[test]
fn fp32_accumulation_holds_its_sum_beside_the_bf16_gradients() {
    let n = 4.0;
    // bf16 at stage 0 accumulates in fp32 by default: 2Ψ weights, 2Ψ gradients, 4Ψ window
    // sum, 12Ψ master and moments.
    let bf16 = r#""bf16": {"enabled": true}"#;
    check_measured(0, 2, 20.0 * psi(), measured_with(0, 2, bf16));
    // Stage 2 with grad_accum_dtype fp32: the partition is 4Ψ/N instead of 2Ψ/N.
    let fp32_sum = r#""bf16": {"enabled": true}, "data_types": {"grad_accum_dtype": "fp32"}"#;
    let formula = 2.0 * psi() + 16.0 * psi() / n;
    check_measured(2, 4, formula, measured_with(2, 4, fp32_sum));
}
