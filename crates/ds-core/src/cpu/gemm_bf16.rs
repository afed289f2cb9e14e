//! bf16 GEMM on AVX512-BF16's dot products (`vdpbf16ps`: per f32 lane, two bf16 products added
//! to the accumulator), f32 accumulation, no widening pass: twice the f32 FMA rate, half the
//! bytes. No crate offers it (`matrixmultiply` and `gemm` multiply f32/f16 only; Debian's
//! OpenBLAS 0.3.21 is built without `sbgemm`), so this file is a small BLIS-style kernel.
//!
//! op(B) is packed once (in parallel, shared by every thread) as panels of [`NR`] columns with
//! each pair of k rows interleaved (the instruction's operand layout, odd k padded with zero);
//! C's rows are split over the threads, and each strip of [`MR`] rows of op(A) is packed as
//! k-pairs and multiplied against every panel by the `MR x NR` register-tile kernel (16 zmm
//! accumulators) over the whole k. The strip's f32 results take `alpha` and `beta` and are
//! rounded to bf16 once.
//!
//! The instruction treats subnormal inputs and results as zero (DAZ/FTZ); the products of two
//! bf16 are exact in f32, so otherwise each pair adds as two f32 additions.

use super::float::Float;
use super::isa::{self, Isa};
use super::par::for_chunks;
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

/// Packs op(B) as `ceil(n / NR)` panels of `pairs x NR x 2` bf16 (zero beyond k and n), each
/// copy along B's contiguous dimension; in parallel when `parallel`.
fn pack_b(spec: &GemmSpec, b: &[u16], pairs: usize, out: &mut [u16], parallel: bool) {
    let (n, k) = (spec.n, spec.k);
    let pack = |_: &mut (), panel: usize, dst: &mut [u16]| {
        let j0 = panel * NR;
        let cols = NR.min(n - j0);
        if cols < NR || k % 2 == 1 {
            dst.fill(0);
        }
        if spec.trans_b {
            for c in 0..cols {
                let src = &b[(j0 + c) * k..][..k];
                for (kk, &v) in src.iter().enumerate() {
                    dst[((kk / 2) * NR + c) * 2 + kk % 2] = v;
                }
            }
        } else {
            for kk in 0..k {
                let src = &b[kk * n + j0..][..cols];
                let (p, h) = (kk / 2, kk % 2);
                for (c, &v) in src.iter().enumerate() {
                    dst[(p * NR + c) * 2 + h] = v;
                }
            }
        }
    };
    for_chunks(out, pairs * NR * 2, parallel, || (), pack);
}

/// Packs rows `i0 .. i0 + live` of op(A) as `pairs x MR` k-pairs (low half the even k; zero
/// beyond k and the live rows), reading along A's contiguous dimension.
fn pack_a(spec: &GemmSpec, a: &[u16], i0: usize, live: usize, out: &mut [u32]) {
    let (m, k) = (spec.m, spec.k);
    out.fill(0);
    if spec.trans_a {
        for kk in 0..k {
            let src = &a[kk * m + i0..][..live];
            let (p, shift) = (kk / 2, 16 * (kk % 2));
            for (r, &v) in src.iter().enumerate() {
                out[p * MR + r] |= u32::from(v) << shift;
            }
        }
    } else {
        // k-pairs outermost, so the writes run contiguously through `out` (a transpose of the
        // strip's rows, read as pairs).
        let rows: Vec<&[u16]> = (0..live).map(|r| &a[(i0 + r) * k..][..k]).collect();
        let whole = k / 2;
        for (p, col) in out.chunks_exact_mut(MR).take(whole).enumerate() {
            for (o, row) in col.iter_mut().zip(&rows) {
                *o = u32::from(row[2 * p]) | u32::from(row[2 * p + 1]) << 16;
            }
        }
        if k % 2 == 1 {
            for (o, row) in out[whole * MR..].iter_mut().zip(&rows) {
                *o = u32::from(row[k - 1]);
            }
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
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for p in 0..pairs {
        // SAFETY: the assertion above gives b at least pairs * NR * 2 u16 and a at least
        // pairs * MR u32, so the two 64-byte loads at b[p * 64 ..] and the MR reads at
        // a[p * MR ..] stay inside them; unaligned loads have no alignment requirement. The
        // transmutes reinterpret 16 lanes of 32 bits (two bf16 each) bit for bit.
        unsafe {
            let at = bp.add(p * NR * 2);
            let b0 = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(at.cast()));
            let b1 =
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(at.add(32).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *ap.add(p * MR + r) as i32,
                ));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
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

/// `C = alpha op(A) op(B) + beta C` for one batch entry (`a`, `b`, `c` start at its matrices
/// and hold them whole; `m, n, k > 0`): op(B) packed once, C's rows split over the current
/// thread pool when `parallel`.
///
/// Only call when [`available`] says the processor runs the instruction.
pub(super) fn gemm_entry(spec: &GemmSpec, a: &[u16], b: &[u16], c: &mut [bf16], parallel: bool) {
    let (m, n) = (spec.m, spec.n);
    let pairs = spec.k.div_ceil(2);
    let mut packed_b = vec![0u16; n.div_ceil(NR) * pairs * NR * 2];
    pack_b(spec, b, pairs, &mut packed_b, parallel);
    let packed_b = &packed_b;
    let tasks = if parallel {
        4 * rayon::current_num_threads()
    } else {
        1
    };
    let rows_per_task = m.div_ceil(tasks).div_ceil(MR) * MR;
    let run = |packed_a: &mut Vec<u32>, blk: usize, c_rows: &mut [bf16]| {
        let i_start = blk * rows_per_task;
        let rows = c_rows.len() / n;
        let strips = rows.div_ceil(MR);
        // The task's rows of op(A), packed once; every panel of B then meets every strip while
        // it is in cache.
        packed_a.resize(strips * pairs * MR, 0);
        for (s, strip) in packed_a.chunks_exact_mut(pairs * MR).enumerate() {
            let live = MR.min(rows - s * MR);
            pack_a(spec, a, i_start + s * MR, live, strip);
        }
        let mut old = [0f32; NR];
        let mut tile = [0f32; MR * NR];
        for (panel, b_panel) in packed_b.chunks_exact(pairs * NR * 2).enumerate() {
            let (j0, cols) = (panel * NR, NR.min(n - panel * NR));
            for (s, a_strip) in packed_a.chunks_exact(pairs * MR).enumerate() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: callers reach this only when `available()` said the processor runs
                // AVX512-BF16 (and AVX-512F/BW/VL, AVX2, FMA, which Isa::Avx512Bf16 includes).
                unsafe {
                    kernel(pairs, a_strip, b_panel, &mut tile)
                };
                for r in 0..MR.min(rows - s * MR) {
                    let at = (s * MR + r) * n + j0;
                    let out = &mut c_rows[at..at + cols];
                    let acc = &mut tile[r * NR..r * NR + cols];
                    if spec.beta != 0.0 {
                        bf16::load(out, &mut old[..cols]);
                        acc.iter_mut()
                            .zip(&old)
                            .for_each(|(v, o)| *v = spec.alpha * *v + spec.beta * o);
                    } else if spec.alpha != 1.0 {
                        acc.iter_mut().for_each(|v| *v *= spec.alpha);
                    }
                    bf16::store(acc, out);
                }
            }
        }
    };
    for_chunks(&mut c[..m * n], rows_per_task * n, parallel, Vec::new, run);
}
