//! bf16 GEMM on AVX512-BF16's dot products (`vdpbf16ps`: per f32 lane, two bf16 products added
//! to the accumulator), f32 accumulation, no widening pass: twice the f32 FMA rate, half the
//! bytes. No crate offers it (`matrixmultiply` and `gemm` multiply f32/f16 only; Debian's
//! OpenBLAS 0.3.21 is built without `sbgemm`), so this file is a small BLIS-style kernel.
//!
//! Per task (a block of C's rows): op(B) is packed once as panels of [`NR`] columns with each
//! pair of k rows interleaved (the instruction's operand layout, odd k padded with zero), then
//! each strip of [`MR`] rows of op(A) is packed as k-pairs and multiplied against every panel
//! by the `MR x NR` register-tile kernel (16 zmm accumulators). The strip's f32 results take
//! `alpha` and `beta` and are rounded to bf16 once.
//!
//! The instruction treats subnormal inputs and results as zero (DAZ/FTZ); the products of two
//! bf16 are exact in f32, so otherwise each pair adds as two f32 additions.

use super::float::Float;
use super::isa::{self, Isa};
use crate::params::GemmSpec;
use half::bf16;

/// Rows of the register tile.
const MR: usize = 8;
/// Columns of the register tile (two zmm of f32).
const NR: usize = 32;

/// Whether the bf16 dot-product kernel runs (the processor has it and `DS_CPU_ISA` allows it).
pub(super) fn available() -> bool {
    isa::active() >= Isa::Avx512Bf16
}

/// op(A)(i, kk) of one batch entry.
#[inline(always)]
fn at_a(spec: &GemmSpec, a: &[u16], i: usize, kk: usize) -> u16 {
    if spec.trans_a {
        a[kk * spec.m + i]
    } else {
        a[i * spec.k + kk]
    }
}

/// op(B)(kk, j) of one batch entry.
#[inline(always)]
fn at_b(spec: &GemmSpec, b: &[u16], kk: usize, j: usize) -> u16 {
    if spec.trans_b {
        b[j * spec.k + kk]
    } else {
        b[kk * spec.n + j]
    }
}

/// Packs op(B) as `ceil(n / NR)` panels of `pairs x NR x 2` bf16 (zero beyond k and n).
fn pack_b(spec: &GemmSpec, b: &[u16], pairs: usize, out: &mut Vec<u16>) {
    let (n, k) = (spec.n, spec.k);
    let panels = n.div_ceil(NR);
    out.clear();
    out.resize(panels * pairs * NR * 2, 0);
    for (panel, dst) in out.chunks_exact_mut(pairs * NR * 2).enumerate() {
        let j0 = panel * NR;
        let cols = NR.min(n - j0);
        for p in 0..pairs {
            let row = &mut dst[p * NR * 2..(p + 1) * NR * 2];
            for c in 0..cols {
                let kk = 2 * p;
                row[2 * c] = at_b(spec, b, kk, j0 + c);
                if kk + 1 < k {
                    row[2 * c + 1] = at_b(spec, b, kk + 1, j0 + c);
                }
            }
        }
    }
}

/// Packs rows `i0 .. i0 + MR` of op(A) as `pairs x MR` k-pairs (low half the even k; zero
/// beyond k and m).
fn pack_a(spec: &GemmSpec, a: &[u16], i0: usize, pairs: usize, out: &mut [u32]) {
    let rows = MR.min(spec.m - i0);
    out.fill(0);
    for p in 0..pairs {
        let kk = 2 * p;
        for r in 0..rows {
            let lo = u32::from(at_a(spec, a, i0 + r, kk));
            let hi = if kk + 1 < spec.k {
                u32::from(at_a(spec, a, i0 + r, kk + 1))
            } else {
                0
            };
            out[p * MR + r] = lo | hi << 16;
        }
    }
}

/// `tile = A_panel B_panel` over `pairs` k-pairs (tile row-major `MR x NR`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
fn kernel(pairs: usize, a: &[u32], b: &[u16], tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    assert!(
        a.len() >= pairs * MR && b.len() >= pairs * NR * 2,
        "bf16 GEMM panel shorter than its k (a bug in this file)"
    );
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for p in 0..pairs {
        // SAFETY: the assertion above gives b at least (p + 1) * NR * 2 u16 = p * 64 + 64, the
        // two 64-byte loads read b[p * 64 .. p * 64 + 64]; unaligned loads have no alignment
        // requirement.
        let (b0, b1): (__m512bh, __m512bh) = unsafe {
            let at = b.as_ptr().add(p * NR * 2);
            (
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(at.cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(at.add(32).cast())),
            )
        };
        let pair = &a[p * MR..(p + 1) * MR];
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: a bit-for-bit reinterpretation of 16 lanes of 32 bits (two bf16 each).
            let av = unsafe {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair[r] as i32))
            };
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: tile row r holds NR = 32 f32 at r * NR, exactly the two 64-byte stores.
        unsafe {
            let at = tile.as_mut_ptr().add(r * NR);
            _mm512_storeu_ps(at, row[0]);
            _mm512_storeu_ps(at.add(16), row[1]);
        }
    }
}

/// Scratch one task reuses across the strips it computes.
#[derive(Default)]
pub(super) struct Scratch {
    b: Vec<u16>,
    a: Vec<u32>,
    strip: Vec<f32>,
    old: Vec<f32>,
}

/// `C = alpha op(A) op(B) + beta C` for C's rows `rows` of one batch entry (`c` holds exactly
/// those rows), single-threaded. `a`, `b` start at the entry's matrices and hold them whole.
pub(super) fn rows_block(
    spec: &GemmSpec,
    a: &[u16],
    b: &[u16],
    c: &mut [bf16],
    rows: std::ops::Range<usize>,
    s: &mut Scratch,
) {
    let n = spec.n;
    let pairs = spec.k.div_ceil(2);
    pack_b(spec, b, pairs, &mut s.b);
    s.a.resize(pairs * MR, 0);
    s.strip.resize(MR * n, 0.0);
    s.old.resize(n, 0.0);
    let mut tile = [0f32; MR * NR];
    for i0 in rows.clone().step_by(MR) {
        let strip_rows = MR.min(rows.end - i0);
        pack_a(spec, a, i0, pairs, &mut s.a);
        for (panel, b_panel) in s.b.chunks_exact(pairs * NR * 2).enumerate() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: callers reach this only when `available()` said the processor runs
            // AVX512-BF16 (and AVX-512F/BW/VL, AVX2, FMA, which Isa::Avx512Bf16 includes).
            unsafe {
                kernel(pairs, &s.a, b_panel, &mut tile)
            };
            let j0 = panel * NR;
            let cols = NR.min(n - j0);
            for r in 0..strip_rows {
                s.strip[r * n + j0..r * n + j0 + cols]
                    .copy_from_slice(&tile[r * NR..r * NR + cols]);
            }
        }
        for r in 0..strip_rows {
            let out = &mut c[(i0 - rows.start + r) * n..(i0 - rows.start + r + 1) * n];
            let acc = &mut s.strip[r * n..(r + 1) * n];
            if spec.beta != 0.0 {
                bf16::load(out, &mut s.old);
                acc.iter_mut()
                    .zip(&s.old)
                    .for_each(|(v, o)| *v = spec.alpha * *v + spec.beta * o);
            } else if spec.alpha != 1.0 {
                acc.iter_mut().for_each(|v| *v *= spec.alpha);
            }
            bf16::store(acc, out);
        }
    }
}
