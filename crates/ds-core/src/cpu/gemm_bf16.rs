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

use super::isa::{self, Isa};
use super::par::{for_chunks, rows_per_task};
use super::prefetch::prefetch;
use super::scratch::Scratch;
use crate::params::GemmSpec;
use half::bf16;

/// Rows of the register tile.
const MR: usize = 8;
/// Columns of the register tile (two zmm of f32), and of each packed panel of B.
pub(super) const NR: usize = 32;

/// k-pairs of a row of A per cache line, and how far ahead `pack_a` prefetches its rows.
const PAIRS_PER_LINE: usize = 16;
const PAIRS_AHEAD: usize = 4 * PAIRS_PER_LINE;

/// Whether the bf16 dot-product kernel runs (the processor has it and `DS_CPU_ISA` allows it).
pub(super) fn available() -> bool {
    isa::active() >= Isa::Avx512Bf16
}

/// Packs op(B) as `ceil(n / NR)` panels of `padded x NR x 2` bf16 (`padded >= pairs =
/// ceil(k / 2)`; zero beyond k and n), each copy along B's contiguous dimension; in parallel
/// when `parallel`. The AMX kernel reads the same panels as tiles of 16 pairs (padded to
/// them), 16 columns at a time.
pub(super) fn pack_b(
    spec: &GemmSpec,
    b: &[u16],
    (pairs, padded): (usize, usize),
    out: &mut [u16],
    parallel: bool,
) {
    let (n, k) = (spec.n, spec.k);
    let pack = |_: &mut (), panel: usize, dst: &mut [u16]| {
        let j0 = panel * NR;
        let cols = NR.min(n - j0);
        if cols < NR || k % 2 == 1 || padded > pairs {
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
            // Two rows of B interleaved per pair (a loop that vectorizes, where writing every
            // other element row by row did not: 8% of a 1024^3 product).
            let zeros = [0u16; NR];
            for (p, out) in dst.chunks_exact_mut(NR * 2).take(pairs).enumerate() {
                let even = &b[2 * p * n + j0..][..cols];
                let odd = if 2 * p + 1 < k {
                    &b[(2 * p + 1) * n + j0..][..cols]
                } else {
                    &zeros[..cols]
                };
                for ((o, &e), &d) in out.chunks_exact_mut(2).zip(even).zip(odd) {
                    o[0] = e;
                    o[1] = d;
                }
            }
        }
    };
    for_chunks(out, padded * NR * 2, parallel, || (), pack);
}

/// Packs rows `i0 .. i0 + live` of op(A) as `pairs x MR` k-pairs (low half the even k; zero
/// beyond k and the live rows), reading along A's contiguous dimension.
fn pack_a(spec: &GemmSpec, a: &[u16], i0: usize, live: usize, out: &mut [u32]) {
    let (m, k) = (spec.m, spec.k);
    if spec.trans_a {
        out.fill(0);
        for kk in 0..k {
            let src = &a[kk * m + i0..][..live];
            let (p, shift) = (kk / 2, 16 * (kk % 2));
            for (r, &v) in src.iter().enumerate() {
                out[p * MR + r] |= u32::from(v) << shift;
            }
        }
    } else {
        if live < MR || k % 2 == 1 {
            out.fill(0);
        }
        // k-pairs outermost, so the writes run contiguously through `out` (a transpose of the
        // strip's rows, read as pairs).
        let rows: [&[u16]; MR] = std::array::from_fn(|r| {
            if r < live {
                &a[(i0 + r) * k..][..k]
            } else {
                &[]
            }
        });
        let whole = k / 2;
        // Full strips go through the AVX-512 transpose sixteen pairs at a time.
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if live == MR {
            done = whole / 16 * 16;
            // SAFETY: this file runs only where `available()` holds (AVX512-BF16, which
            // includes AVX-512F).
            unsafe { transpose_pairs(&rows, done / 16, out) };
        }
        for (p, col) in out.chunks_exact_mut(MR).take(whole).enumerate().skip(done) {
            if p % PAIRS_PER_LINE == 0 {
                // Eight rows read a line at a time each are eight slow streams for the
                // hardware prefetcher (A comes from L3): ask for their lines ahead.
                for row in &rows[..live] {
                    prefetch(
                        row.as_ptr().wrapping_add(2 * (p + PAIRS_AHEAD)).cast(),
                        false,
                    );
                }
            }
            for (o, row) in col.iter_mut().zip(&rows[..live]) {
                *o = u32::from(row[2 * p]) | u32::from(row[2 * p + 1]) << 16;
            }
        }
        if k % 2 == 1 {
            for (o, row) in out[whole * MR..].iter_mut().zip(&rows[..live]) {
                *o = u32::from(row[k - 1]);
            }
        }
    }
}

/// `out[p * MR + r] = pair p of rows[r]` for the first `blocks * 16` pairs: eight rows of
/// sixteen k-pairs (one zmm each) transposed in registers, 40 shuffles per 128 pairs where
/// the scalar loop took about three instructions per pair (6% of a 1024^3 product).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose_pairs(rows: &[&[u16]; MR], blocks: usize, out: &mut [u32]) {
    use std::arch::x86_64::*;
    assert!(
        out.len() >= blocks * 16 * MR && rows.iter().all(|r| r.len() >= blocks * 32),
        "bf16 GEMM strip shorter than its k (a bug in this file)"
    );
    /// Output register for pairs `4L + q, 4L + q + 1`: `[lo.L, hi.L, lo1.L, hi1.L]`, where
    /// `lo`/`hi` hold rows 0-3 / 4-7 of pair `4L + q` and `lo1`/`hi1` those of the next pair.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn gather<const LANE4: i32>(lo: __m512i, lo1: __m512i, hi: __m512i, hi1: __m512i) -> __m512i {
        let p = _mm512_shuffle_i32x4::<LANE4>(lo, lo1);
        let q = _mm512_shuffle_i32x4::<LANE4>(hi, hi1);
        _mm512_mask_blend_epi64(0b1100_1100, p, q)
    }
    for blk in 0..blocks {
        // SAFETY: each row holds at least blocks * 32 u16 (asserted), so the 64-byte load at
        // pair blk * 16 stays inside it; unaligned loads have no alignment requirement.
        let r: [__m512i; MR] = std::array::from_fn(|i| unsafe {
            _mm512_loadu_si512(rows[i][blk * 32..].as_ptr().cast())
        });
        // Per 128-bit lane L (pairs 4L .. 4L + 3): t_even = rows (2i, 2i+1) at pairs 4L, 4L+1
        // interleaved; t_odd the same at 4L+2, 4L+3.
        let t: [__m512i; MR] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_epi32(a, b)
            } else {
                _mm512_unpackhi_epi32(a, b)
            }
        });
        // u[q] (u[4 + q]): rows 0-3 (4-7) of pair 4L + q, in lane L.
        let u = [
            _mm512_unpacklo_epi64(t[0], t[2]),
            _mm512_unpackhi_epi64(t[0], t[2]),
            _mm512_unpacklo_epi64(t[1], t[3]),
            _mm512_unpackhi_epi64(t[1], t[3]),
            _mm512_unpacklo_epi64(t[4], t[6]),
            _mm512_unpackhi_epi64(t[4], t[6]),
            _mm512_unpacklo_epi64(t[5], t[7]),
            _mm512_unpackhi_epi64(t[5], t[7]),
        ];
        let v = [
            gather::<0x00>(u[0], u[1], u[4], u[5]),
            gather::<0x00>(u[2], u[3], u[6], u[7]),
            gather::<0x55>(u[0], u[1], u[4], u[5]),
            gather::<0x55>(u[2], u[3], u[6], u[7]),
            gather::<0xAA>(u[0], u[1], u[4], u[5]),
            gather::<0xAA>(u[2], u[3], u[6], u[7]),
            gather::<0xFF>(u[0], u[1], u[4], u[5]),
            gather::<0xFF>(u[2], u[3], u[6], u[7]),
        ];
        for (j, v) in v.into_iter().enumerate() {
            // SAFETY: out holds blocks * 16 * MR u32 (asserted); register j covers pairs
            // blk * 16 + 2j and the next, 16 u32 at (blk * 16 + 2j) * MR.
            unsafe { _mm512_storeu_si512(out[(blk * 16 + 2 * j) * MR..].as_mut_ptr().cast(), v) };
        }
    }
}

/// The `MR x NR` products `A_strip B_panel` over `pairs` k-pairs, in 16 zmm accumulators.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
fn products(pairs: usize, a: &[u32], b: &[u16]) -> [[std::arch::x86_64::__m512; 2]; MR] {
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
    acc
}

/// `tile = A_strip B_panel` (tile row-major `MR x NR`), for blocks at C's edges.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
fn kernel_to_tile(pairs: usize, a: &[u32], b: &[u16], tile: &mut [f32; MR * NR]) {
    use std::arch::x86_64::*;
    let acc = products(pairs, a, b);
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: tile row r holds NR = 32 f32 at r * NR, exactly the two 64-byte stores.
        unsafe {
            let at = tile.as_mut_ptr().add(r * NR);
            _mm512_storeu_ps(at, row[0]);
            _mm512_storeu_ps(at.add(16), row[1]);
        }
    }
}

/// `C = alpha A_strip B_panel + beta C` for a whole `MR x NR` block of C at row stride `ldc`,
/// rounded to bf16 in registers (`vcvtne2ps2bf16`: to nearest even, like the portable
/// rounding, except that subnormal results flush to zero as in the products).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
fn kernel_to_c(
    pairs: usize,
    a: &[u32],
    b: &[u16],
    alpha: f32,
    beta: f32,
    c: &mut [bf16],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    assert!(
        ldc >= NR && c.len() >= (MR - 1) * ldc + NR,
        "bf16 GEMM tile out of bounds (a bug in this file)"
    );
    // The block of C is needed only after the k loop: fetch it (for ownership) meanwhile.
    for r in 0..MR {
        prefetch(c[r * ldc..].as_ptr().cast(), true);
    }
    let acc = products(pairs, a, b);
    let (alpha, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: row r of the block is NR = 32 bf16 (64 bytes) at r * ldc, inside c
        // (asserted); the transmute reinterprets 32 bf16 lanes as 512 bits.
        unsafe {
            let at = c.as_mut_ptr().add(r * ldc).cast::<__m512i>();
            let (mut lo, mut hi) = (_mm512_mul_ps(alpha, row[0]), _mm512_mul_ps(alpha, row[1]));
            if beta != 0.0 {
                // bf16 -> f32 is the 16 bits moved to the top of each lane.
                let old = _mm512_loadu_si512(at);
                let widen = |h: __m256i| _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
                let old_lo = _mm512_castsi512_ps(widen(_mm512_castsi512_si256(old)));
                let old_hi = _mm512_castsi512_ps(widen(_mm512_extracti64x4_epi64::<1>(old)));
                lo = _mm512_fmadd_ps(beta_v, old_lo, lo);
                hi = _mm512_fmadd_ps(beta_v, old_hi, hi);
            }
            let packed = std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(at, packed);
        }
    }
}

/// The live part of a block of f32 results: `rows x cols` at row stride `stride`.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

/// `C = alpha results + beta C` for a block of results, C at row stride `ldc`, each element
/// rounded to bf16 once (as [`kernel_to_c`]; partial rows through masked loads and stores).
pub(super) fn store_block(
    results: &[f32],
    block: Block,
    spec: &GemmSpec,
    c: &mut [bf16],
    ldc: usize,
) {
    assert!(
        block.rows == 0
            || (block.cols <= block.stride
                && results.len() >= (block.rows - 1) * block.stride + block.cols
                && ldc >= block.cols
                && c.len() >= (block.rows - 1) * ldc + block.cols),
        "bf16 GEMM block out of bounds (a bug in the bf16 kernels)"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the bf16 kernels run only where `available()` holds (AVX512-BF16 with
    // AVX-512F/BW/VL); the bounds the stores need are asserted above.
    unsafe {
        store_block_avx512(results, block, spec.alpha, spec.beta, c, ldc)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (results, spec, c, ldc);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512bf16")]
fn store_block_avx512(
    results: &[f32],
    block: Block,
    alpha: f32,
    beta: f32,
    c: &mut [bf16],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    let (alpha, beta_v) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
    for r in 0..block.rows {
        for j in (0..block.cols).step_by(16) {
            let mask: __mmask16 = (u32::MAX >> (32 - 16.min(block.cols - j))) as u16;
            // SAFETY: lanes beyond `mask` are neither read nor written, and the masked lanes
            // are columns j .. cols of row r, inside `results` and `c` (the caller asserted
            // their extents); the transmute reinterprets 16 bf16 lanes as 256 bits.
            unsafe {
                let at = c.as_mut_ptr().add(r * ldc + j).cast::<i16>();
                let v = _mm512_maskz_loadu_ps(mask, results.as_ptr().add(r * block.stride + j));
                let mut v = _mm512_mul_ps(alpha, v);
                if beta != 0.0 {
                    let old = _mm256_maskz_loadu_epi16(mask, at);
                    let old = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(old));
                    v = _mm512_fmadd_ps(beta_v, _mm512_castsi512_ps(old), v);
                }
                let packed = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(at, mask, packed);
            }
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
    // Every element of the packed operands is written by the packing, so reused scratch needs
    // no clearing.
    let mut b_scratch = Scratch::new();
    let packed_b = b_scratch.slice::<u16>(n.div_ceil(NR) * pairs * NR * 2);
    pack_b(spec, b, (pairs, pairs), packed_b, parallel);
    let packed_b = &*packed_b;
    // Whole strips per task, four tasks per thread (each packs its rows of A for all of k).
    let task_rows = rows_per_task(m, MR, 4, parallel);
    let run = |a_scratch: &mut Scratch, blk: usize, c_rows: &mut [bf16]| {
        let i_start = blk * task_rows;
        let rows = c_rows.len() / n;
        let strips = rows.div_ceil(MR);
        // The task's rows of op(A), packed once; every panel of B then meets every strip while
        // it is in cache.
        let packed_a = a_scratch.slice::<u32>(strips * pairs * MR);
        for (s, strip) in packed_a.chunks_exact_mut(pairs * MR).enumerate() {
            let live = MR.min(rows - s * MR);
            pack_a(spec, a, i_start + s * MR, live, strip);
        }
        let mut tile = [0f32; MR * NR];
        for (panel, b_panel) in packed_b.chunks_exact(pairs * NR * 2).enumerate() {
            let (j0, cols) = (panel * NR, NR.min(n - panel * NR));
            for (s, a_strip) in packed_a.chunks_exact(pairs * MR).enumerate() {
                let live = MR.min(rows - s * MR);
                if live == MR && cols == NR {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: callers reach this only when `available()` said the processor
                    // runs AVX512-BF16 (and AVX-512F/BW/VL, AVX2, FMA, which Isa::Avx512Bf16
                    // includes).
                    unsafe {
                        kernel_to_c(
                            pairs,
                            a_strip,
                            b_panel,
                            spec.alpha,
                            spec.beta,
                            &mut c_rows[s * MR * n + j0..],
                            n,
                        )
                    };
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                unsafe {
                    kernel_to_tile(pairs, a_strip, b_panel, &mut tile)
                };
                let block = Block {
                    rows: live,
                    cols,
                    stride: NR,
                };
                store_block(&tile, block, spec, &mut c_rows[s * MR * n + j0..], n);
            }
        }
    };
    for_chunks(&mut c[..m * n], task_rows * n, parallel, Scratch::new, run);
}
