//! The machine's fused multiply-add peak, measured: every thread runs independent chains of
//! 8-wide FMAs (enough chains to cover the FMA latency on current x86 and Arm cores), so the
//! result is what the cores can retire, not a number from a data sheet.

use multiversion::multiversion;
use std::time::Instant;

/// Independent accumulator chains per thread (12 of the 16 vector registers).
const CHAINS: usize = 12;
/// Lanes per chain: one 256-bit vector of f32.
const LANES: usize = 8;

#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn chains(iters: u64, seed: f32) -> f32 {
    let mut acc = [[seed; LANES]; CHAINS];
    let a = [0.999_999f32; LANES];
    let b = [1e-7f32; LANES];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            for l in 0..LANES {
                c[l] = c[l].mul_add(a[l], b[l]);
            }
        }
    }
    acc.iter().flatten().sum()
}

/// FLOP per call of [`chains`] with `iters` iterations.
fn flops(iters: u64) -> f64 {
    (iters as usize * CHAINS * LANES * 2) as f64
}

/// Measured FMA peak of `threads` threads running at once, in FLOP/s (best of `rounds`).
pub fn fma_peak(threads: usize, rounds: usize) -> f64 {
    const ITERS: u64 = 20_000_000;
    let mut best: f64 = 0.0;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || chains(ITERS, t as f32 + 1.0)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(flops(ITERS) * threads as f64 / secs);
    }
    best
}
