//! The machine's fused multiply-add peak, measured: every thread runs independent chains of
//! FMAs at the widest vector width the processor has (16 f32 lanes with AVX-512, 8 with
//! AVX2+FMA, 4 otherwise), enough chains to cover the FMA latency, so the result is what the
//! cores can retire, not a number from a data sheet. Measuring 8-wide chains on an AVX-512
//! machine would understate the peak and overstate every "% of peak".

use ds_core::cpu::isa::Isa;
use std::time::Instant;

/// Independent accumulator chains per thread (12 of the 16 AVX2 / 32 AVX-512 registers).
const CHAINS: usize = 12;

#[inline(always)]
fn chains_of<const LANES: usize>(iters: u64, seed: f32) -> f32 {
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

// The x86 chains are written with intrinsics: from the portable form above LLVM built
// gathers across chains for 16 lanes (6 GFLOP/s instead of hundreds).

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
fn chains_avx512(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm512_fmadd_ps(*c, a, b);
        }
    }
    acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn chains_avx2(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(seed); CHAINS];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm256_fmadd_ps(*c, a, b);
        }
    }
    let mut lanes = [0f32; 8];
    acc.iter()
        .map(|&c| {
            // SAFETY: `lanes` holds exactly the 8 f32 one 256-bit store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), c) };
            lanes.iter().sum::<f32>()
        })
        .sum()
}

/// f32 lanes per FMA the peak is measured at.
pub fn peak_lanes() -> usize {
    match Isa::best() {
        Isa::Avx512 | Isa::Avx512Bf16 => 16,
        Isa::Avx2 => 8,
        Isa::Baseline => 4,
    }
}

/// Runs the chains at [`peak_lanes`]; returns their sum (so the work is not optimised away).
fn chains(iters: u64, seed: f32) -> f32 {
    match Isa::best() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::best() is Avx512 only when the processor has AVX-512F, AVX2 and FMA.
        Isa::Avx512 | Isa::Avx512Bf16 => unsafe { chains_avx512(iters, seed) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::best() is Avx2 only when the processor has AVX2 and FMA.
        Isa::Avx2 => unsafe { chains_avx2(iters, seed) },
        _ => chains_of::<4>(iters, seed),
    }
}

/// FLOP per call of [`chains`] with `iters` iterations.
fn flops(iters: u64) -> f64 {
    (iters as usize * CHAINS * peak_lanes() * 2) as f64
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
