//! The machine's fused multiply-add peak, measured: every thread runs independent chains of
//! FMAs at the widest vector width the processor has (16 f32 lanes with AVX-512, 8 with
//! AVX2+FMA, 4 otherwise), enough chains to cover the FMA latency, so the result is what the
//! cores can retire, not a number from a data sheet. Measuring 8-wide chains on an AVX-512
//! machine would understate the peak and overstate every "% of peak". Where the bf16 GEMM runs
//! on AMX tiles, [`amx_peak`] measures the tile multiply's rate the same way; where it runs on
//! AVX512-BF16's `vdpbf16ps`, [`dpbf16_peak`] does. That instruction is not twice the f32 FMA
//! everywhere: on an Emerald Rapids Xeon its chains ran at 0.47-0.52x the f32 FMA peak.

use ds_core::cpu::isa::Isa;
use std::time::Instant;

/// Independent accumulator chains per thread (12 of the 16 AVX2 / 32 AVX-512 registers).
pub const CHAINS: usize = 12;

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
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => 16,
        Isa::Avx2 => 8,
        Isa::Baseline => 4,
    }
}

/// Runs the chains at [`peak_lanes`]; returns their sum (so the work is not optimised away).
fn chains(iters: u64, seed: f32) -> f32 {
    match Isa::best() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Isa::best() is Avx512 only when the processor has AVX-512F, AVX2 and FMA.
        Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { chains_avx512(iters, seed) },
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
    best_of(threads, rounds, flops(ITERS), |t| {
        chains(ITERS, t as f32 + 1.0)
    })
}

/// FLOP/s of `threads` threads each running `work(thread)` (`flop` each) at once, best of
/// `rounds`.
fn best_of(threads: usize, rounds: usize, flop: f64, work: impl Fn(usize) -> f32 + Sync) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        let sink: f32 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let work = &work;
                    s.spawn(move || work(t))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        let secs = start.elapsed().as_secs_f64();
        std::hint::black_box(sink);
        best = best.max(flop * threads as f64 / secs);
    }
    best
}

/// Measured `vdpbf16ps` peak of `threads` threads, in FLOP/s (best of `rounds`): [`CHAINS`]
/// independent chains per thread, each instruction 32 bf16 products added in pairs into 16 f32
/// lanes (64 FLOP). `None` unless the CPU kernels run AVX512-BF16 or wider.
pub fn dpbf16_peak(threads: usize, rounds: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if ds_core::cpu::isa::active() >= Isa::Avx512Bf16 {
        const ITERS: u64 = 10_000_000;
        let flop = (ITERS as usize * CHAINS * 64) as f64;
        // SAFETY: the active instruction set is Avx512Bf16 or wider, so the processor has
        // AVX-512F and AVX512-BF16.
        return Some(best_of(threads, rounds, flop, |t| unsafe {
            dpbf16_chains(ITERS, t as f32 + 1.0)
        }));
    }
    let _ = (threads, rounds);
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
fn dpbf16_chains(iters: u64, seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    // bf16 pairs of 2^-7 (0x3c00), so the sums stay finite.
    let x: __m512bh = _mm512_cvtne2ps_pbh(_mm512_set1_ps(0.0078125), _mm512_set1_ps(0.0078125));
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm512_dpbf16_ps(*c, x, x);
        }
    }
    acc.iter().map(|&c| _mm512_reduce_add_ps(c)).sum()
}

/// Measured AMX bf16 peak of `threads` threads, in FLOP/s (best of `rounds`): every thread
/// runs four independent `tdpbf16ps` (16 x 16 f32 += 16 x 32 bf16 times 32 x 16) on tiles
/// already loaded. `None` unless the CPU kernels run AMX ([`Isa::Amx`] active, which also
/// means the OS granted the tile state).
pub fn amx_peak(threads: usize, rounds: usize) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if ds_core::cpu::isa::active() >= Isa::Amx {
        const ITERS: u64 = 1_000_000;
        let flop = (ITERS * 4 * 16 * 16 * 32 * 2) as f64;
        // SAFETY: AMX is active, so the processor has it and Linux granted this process the
        // tile state.
        return Some(best_of(threads, rounds, flop, |_| unsafe {
            amx_chains(ITERS)
        }));
    }
    let _ = (threads, rounds);
    None
}

/// Four chains of `tdpbf16ps` for `iters` rounds on this thread; returns one result element.
///
/// # Safety
/// The processor must have AMX-BF16 and the OS must have granted the tile state.
#[cfg(target_arch = "x86_64")]
unsafe fn amx_chains(iters: u64) -> f32 {
    use std::arch::asm;
    // Palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);
    let mut cfg = Config([0; 64]);
    cfg.0[0] = 1;
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    // 1 KiB of small bf16 values (0x3c00 is 2^-7) for the operand tiles, and one result tile.
    let operands = vec![0x3c00u16; 512];
    let mut out = vec![0f32; 256];
    // SAFETY: the configuration is 64 readable bytes; each tile load reads 16 rows of 64 bytes
    // at stride 64 from `operands` (1 KiB); the store writes 16 rows of 64 bytes to `out`
    // (1 KiB); the tile registers are ours (the compiler never allocates them) until
    // `tilerelease`. AMX is usable: the caller's contract.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "tileloadd tmm4, [{x} + {s}*1]",
            "tileloadd tmm5, [{x} + {s}*1]",
            "tileloadd tmm6, [{x} + {s}*1]",
            "tileloadd tmm7, [{x} + {s}*1]",
            x = in(reg) operands.as_ptr(),
            s = in(reg) 64usize,
            options(nostack, readonly)
        );
        for _ in 0..iters {
            asm!(
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                options(nostack, nomem)
            );
        }
        asm!(
            "tilestored [{x} + {s}*1], tmm0",
            "tilerelease",
            x = in(reg) out.as_mut_ptr(),
            s = in(reg) 64usize,
            options(nostack)
        );
    }
    out[0]
}
