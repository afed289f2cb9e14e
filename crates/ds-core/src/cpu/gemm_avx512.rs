//! f32 GEMM on AVX-512 with an `8 x 48` register tile (24 zmm accumulators: per k, three loads
//! of B, eight broadcasts of A, twenty-four FMAs), BLIS-style blocking and one packed copy of
//! each block of B shared by every thread. On the Zen 5 the first tile (8 x 32) was written
//! on, `matrixmultiply`'s AVX-512 kernel (16 x 16: sixteen broadcasts per sixteen FMAs,
//! load-bound) ran 1024^3 at 202 GFLOP/s on one thread and 69% of the two threads' FMA peak;
//! the 8 x 32 tile ran 236 GFLOP/s on one thread (90% of that thread's peak). On an Emerald
//! Rapids Xeon the tile ran below 80% of the FMA peak, and fewer loads per FMA helped: in one
//! interleaved single-thread run of tile shapes, 8 x 48 ran 7-16% faster than 8 x 32 (12 x 32
//! and 14 x 32: 2-10%), and in place the GPT's twelve products took 7% less time (median of
//! five alternated runs of `ratios --gpt-gemms`). A panel with only 32 or 16 columns of n left
//! runs a two- or one-zmm form of the same tile, so n = 128 or 512 wastes nothing. AVX2 and
//! baseline processors keep `matrixmultiply` (see [`super::gemm`]).
//!
//! Per block of [`KC`] k's: op(B) is packed (in parallel) as panels of [`NR`] columns, then
//! C's rows are split into blocks of at most [`MC`] rows over the threads; each task packs its
//! rows of op(A) as strips of [`MR`] and multiplies every strip against every panel. Ragged
//! edges land in a small buffer first and are added into C with `alpha` (and `beta` on the
//! first block), so they need no special kernel.
//!
//! `A^T B` with whole tiles (the weight gradients `x^T dy`, whose k is the batch's tokens) skips
//! both packings: its operands already hold each k's strip of A and panel of B contiguously,
//! so the tile reads them where they lie, and each task runs all of k for its rows in one
//! hand-over to the pool. On the Zen 5, against packing (five alternated pairs of the GPT
//! step): the step's GEMMs 26.1-29.4 ms against 27.7-32.7, the four weight gradients 3-30%
//! faster each in `ratios --gpt-gemms`.

use super::isa::{self, Isa};
use super::par::{for_chunks, rows_per_task};
use super::prefetch::prefetch;
use super::scratch::Scratch;
use crate::params::GemmSpec;

/// Rows of the register tile.
const MR: usize = 8;
/// Columns of the register tile (three zmm of f32).
const NR: usize = 48;
/// k's per block: a strip of A (8 x 256 f32, 8 KiB) stays in L1 and a panel of B (256 x 48, 48
/// KiB) in L2 while the tile runs (128 measured no better in place on the Emerald Rapids, with
/// the 8 x 32 tile).
const KC: usize = 256;
/// f32 per cache line, and how far ahead (in f32) `pack_a` prefetches its rows.
const LINE_F32: usize = 16;
const AHEAD_F32: usize = 4 * LINE_F32;
/// How many rows of A ahead the transposed packing prefetches.
const TRANS_AHEAD: usize = 16;
/// Tasks per thread of an in-place product (see [`in_place_entry`]).
const IN_PLACE_TASKS: usize = 1;
/// Most rows of C one task takes per block (its packed A, 96 x 256 f32, fits in L2).
const MC: usize = 96;

/// Whether this kernel runs (the processor has AVX-512 and `DS_CPU_ISA` allows it).
pub(super) fn available() -> bool {
    isa::active() >= Isa::Avx512
}

/// How a tile's product `t` goes into its block of C.
#[derive(Clone, Copy)]
enum Update {
    /// `c = alpha t`.
    Assign,
    /// `c = alpha t + beta c`.
    Blend(f32),
    /// `c += alpha t`.
    Accumulate,
}

impl Update {
    /// The update of the k block starting at `pc`: the first applies `beta` (or assigns when
    /// it is 0, so C need not hold numbers), every later one accumulates.
    fn for_block(pc: usize, beta: f32) -> Update {
        if pc > 0 {
            Update::Accumulate
        } else if beta == 0.0 {
            Update::Assign
        } else {
            Update::Blend(beta)
        }
    }
}

/// `c = update(alpha * A_strip B_panel)` for the first `16 * NV` columns of one `MR x NR`
/// block of C at row stride `ldc` (`a`: kc x MR, `b`: kc x NR packed; `NV` of the panel's
/// three zmm columns, so a panel whose last 32 or 16 columns are all that is left of n runs
/// without the edge copy).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f")]
fn kernel<const NV: usize>(
    kc: usize,
    (a, a_step): (&[f32], usize),
    (b, b_step): (&[f32], usize),
    alpha: f32,
    update: Update,
    c: &mut [f32],
    ldc: usize,
) {
    use std::arch::x86_64::*;
    const { assert!(NV >= 1 && 16 * NV <= NR) };
    let width = 16 * NV;
    assert!(
        kc > 0
            && a_step >= MR
            && b_step >= width
            && a.len() >= (kc - 1) * a_step + MR
            && b.len() >= (kc - 1) * b_step + width
            && ldc >= width
            && c.len() >= (MR - 1) * ldc + width,
        "f32 GEMM tile out of bounds (a bug in this file)"
    );
    // The tile of C is needed only after the k loop: fetch it (for ownership) meanwhile.
    for r in 0..MR {
        let row = c[r * ldc..].as_ptr().cast::<u8>();
        for v in 0..NV {
            prefetch(row.wrapping_add(64 * v), true);
        }
    }
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    for p in 0..kc {
        // SAFETY: b holds (kc - 1) * b_step + 16 NV f32 and a (kc - 1) * a_step + MR
        // (asserted), so the NV 16-lane loads from p * b_step and the MR scalars from
        // p * a_step stay inside them; unaligned loads have no alignment requirement.
        unsafe {
            let bv: [__m512; NV] =
                std::array::from_fn(|v| _mm512_loadu_ps(bp.add(p * b_step + 16 * v)));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*ap.add(p * a_step + r));
                for (acc, &b) in row.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, b, *acc);
                }
            }
        }
    }
    let alpha = _mm512_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: row r of the block is 16 NV f32 at r * ldc, inside c (asserted).
        unsafe {
            let at = c.as_mut_ptr().add(r * ldc);
            for (h, &v) in row.iter().enumerate() {
                let dst = at.add(16 * h);
                let v = _mm512_mul_ps(alpha, v);
                let out = match update {
                    Update::Assign => v,
                    Update::Blend(beta) => {
                        _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_loadu_ps(dst), v)
                    }
                    Update::Accumulate => _mm512_add_ps(_mm512_loadu_ps(dst), v),
                };
                _mm512_storeu_ps(dst, out);
            }
        }
    }
}

/// [`kernel`] for a block of `cols` columns, 48, 32 or 16 (anything else runs as 16): its
/// three-, two- or one-zmm form.
///
/// # Safety
/// The processor must run AVX-512F, AVX2 and FMA (the active instruction set is Avx512 or
/// wider).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile(
    cols: usize,
    kc: usize,
    a: (&[f32], usize),
    b: (&[f32], usize),
    alpha: f32,
    update: Update,
    c: &mut [f32],
    ldc: usize,
) {
    // SAFETY: the caller guarantees the instruction sets `kernel` is compiled for.
    unsafe {
        match cols {
            NR => kernel::<3>(kc, a, b, alpha, update, c, ldc),
            32 => kernel::<2>(kc, a, b, alpha, update, c, ldc),
            _ => kernel::<1>(kc, a, b, alpha, update, c, ldc),
        }
    }
}

/// `dst = src` (equal lengths): a whole tile row or strip column as one fixed-size copy the
/// compiler inlines instead of a `memmove` call per 32 or 128 bytes (measured on the AMX Xeon,
/// three alternated pairs: the GPT step's GEMM time 46.9-47.6 ms with it, 48.0-48.9 without).
#[inline]
pub(super) fn copy_run<T: Copy>(dst: &mut [T], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [T], src: &[T]) -> bool {
        match (<&mut [T; N]>::try_from(dst), <&[T; N]>::try_from(src)) {
            (Ok(d), Ok(s)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match src.len() {
        8 => fixed::<T, 8>(dst, src),
        32 => fixed::<T, 32>(dst, src),
        // As two runs: LLVM turns a fixed copy of 192 bytes back into a `memcpy` call (9% of
        // the weight-gradient product's time when it did).
        48 if dst.len() == 48 => {
            let ((d0, d1), (s0, s1)) = (dst.split_at_mut(32), src.split_at(32));
            fixed::<T, 32>(d0, s0) && fixed::<T, 16>(d1, s1)
        }
        _ => false,
    };
    if !done {
        dst.copy_from_slice(src);
    }
}

/// Packs op(B)[pc .. pc + kc, ..] as `ceil(n / NR)` panels of `kc x NR` (zero past n). Each
/// copy runs along B's contiguous dimension (rows of B, or of B^T when transposed).
fn pack_b(spec: &GemmSpec, b: &[f32], pc: usize, kc: usize, out: &mut [f32], parallel: bool) {
    let (n, k) = (spec.n, spec.k);
    let pack = |_: &mut (), panel: usize, dst: &mut [f32]| {
        let j0 = panel * NR;
        let cols = NR.min(n - j0);
        if cols < NR {
            dst.fill(0.0);
        }
        if spec.trans_b {
            for c in 0..cols {
                let src = &b[(j0 + c) * k + pc..][..kc];
                for (kk, &v) in src.iter().enumerate() {
                    dst[kk * NR + c] = v;
                }
            }
        } else {
            for (kk, row) in dst.chunks_exact_mut(NR).enumerate() {
                copy_run(&mut row[..cols], &b[(pc + kk) * n + j0..][..cols]);
            }
        }
    };
    for_chunks(out, kc * NR, parallel, || (), pack);
}

/// Packs op(A)[i0 .. i0 + rows, pc .. pc + kc] as strips of `kc x MR` (zero past the rows),
/// copying along A's contiguous dimension.
fn pack_a(
    spec: &GemmSpec,
    a: &[f32],
    i0: usize,
    rows: usize,
    pc: usize,
    kc: usize,
    out: &mut [f32],
) {
    let (m, k) = (spec.m, spec.k);
    for (s, strip) in out.chunks_exact_mut(kc * MR).enumerate() {
        let first = i0 + s * MR;
        let live = MR.min(rows - s * MR);
        if live < MR {
            strip.fill(0.0);
        }
        if spec.trans_a {
            for (kk, col) in strip.chunks_exact_mut(MR).enumerate() {
                // One run of MR per row of A, rows m apart: a stride the hardware prefetcher
                // follows late (this load was a third of the packing's time).
                prefetch(
                    a.as_ptr()
                        .wrapping_add((pc + kk + TRANS_AHEAD) * m + first)
                        .cast(),
                    false,
                );
                copy_run(&mut col[..live], &a[(pc + kk) * m + first..][..live]);
            }
        } else {
            // k outermost, so the writes run contiguously through the strip.
            let rows: [&[f32]; MR] = std::array::from_fn(|r| {
                if r < live {
                    &a[(first + r) * k + pc..][..kc]
                } else {
                    &[]
                }
            });
            // Whole strips go through the in-register transpose eight k's at a time.
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if live == MR {
                done = kc / 8 * 8;
                // SAFETY: this file runs only where `available()` holds (AVX-512, which
                // includes AVX2).
                unsafe { transpose_rows(&rows, done / 8, strip) };
            }
            for (kk, col) in strip.chunks_exact_mut(MR).enumerate().skip(done) {
                if kk % LINE_F32 == 0 {
                    // Eight rows read a line at a time each are eight slow streams for the
                    // hardware prefetcher (A comes from L3): ask for their lines ahead.
                    for row in &rows[..live] {
                        prefetch(row.as_ptr().wrapping_add(kk + AHEAD_F32).cast(), false);
                    }
                }
                for (v, row) in col[..live].iter_mut().zip(&rows) {
                    *v = row[kk];
                }
            }
        }
    }
}

/// `out[kk * MR + r] = rows[r][kk]` for the first `blocks * 8` k's: each 8 x 8 block
/// transposed in registers (24 shuffles per 64 values, where the scalar gather took about
/// three instructions per value: half the packing's time in the GPT step).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn transpose_rows(rows: &[&[f32]; MR], blocks: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    const { assert!(MR == 8, "the transpose is 8 x 8") };
    assert!(
        out.len() >= blocks * 8 * MR && rows.iter().all(|r| r.len() >= blocks * 8),
        "f32 GEMM strip shorter than its k (a bug in this file)"
    );
    for blk in 0..blocks {
        if blk % 2 == 0 {
            // Eight rows read a line at a time each are eight slow streams for the hardware
            // prefetcher (A comes from L3): ask for their lines ahead.
            for row in rows {
                prefetch(row.as_ptr().wrapping_add(blk * 8 + AHEAD_F32).cast(), false);
            }
        }
        // SAFETY: each row holds at least blocks * 8 f32 (asserted), so the 8-lane load at
        // blk * 8 stays inside it; unaligned loads have no alignment requirement.
        let r: [__m256; MR] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_ps(rows[i][blk * 8..].as_ptr()) });
        // t: rows (2i, 2i+1) interleaved, k 0-1 / 4-5 (lo) and 2-3 / 6-7 (hi) per 128-bit half.
        let t: [__m256; MR] = std::array::from_fn(|i| {
            let (x, y) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm256_unpacklo_ps(x, y)
            } else {
                _mm256_unpackhi_ps(x, y)
            }
        });
        // u[q] (u[4 + q]): rows 0-3 (4-7) at k q and q + 4, one per 128-bit half.
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for q in 0..4 {
            let low = _mm256_permute2f128_ps::<0x20>(u[q], u[4 + q]);
            let high = _mm256_permute2f128_ps::<0x31>(u[q], u[4 + q]);
            // SAFETY: out holds blocks * 8 * MR f32 (asserted); k blk * 8 + q and
            // blk * 8 + q + 4 are MR f32 each at those offsets times MR, inside it.
            unsafe {
                _mm256_storeu_ps(out[(blk * 8 + q) * MR..].as_mut_ptr(), low);
                _mm256_storeu_ps(out[(blk * 8 + q + 4) * MR..].as_mut_ptr(), high);
            }
        }
    }
}

/// `C = alpha op(A) op(B) + beta C` for one batch entry (`a`, `b`, `c` start at its matrices,
/// which they hold whole; `m, n, k > 0`), over the current thread pool when `parallel`.
///
/// Only call when [`available`] says the processor runs AVX-512.
pub(super) fn gemm_entry(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    if reads_in_place(spec) {
        in_place_entry(spec, a, b, c, parallel);
        return;
    }
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let panels = n.div_ceil(NR);
    // Each task takes an equal run of MR-row strips (two tasks per thread, so a thread that
    // falls behind can hand one to the other) and walks it in blocks of at most MC rows.
    let task_rows = rows_per_task(m, MR, 2, parallel);
    let mut b_scratch = Scratch::new();
    let b_all = b_scratch.slice::<f32>(panels * KC.min(k) * NR);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        let packed_b = &mut b_all[..panels * kc * NR];
        pack_b(spec, b, pc, kc, packed_b, parallel);
        let packed_b = &*packed_b;
        let update = Update::for_block(pc, spec.beta);
        let run = |a_scratch: &mut Scratch, task: usize, c_task: &mut [f32]| {
            for (blk, c_rows) in c_task.chunks_mut(MC * n).enumerate() {
                let (i0, rows) = (task * task_rows + blk * MC, c_rows.len() / n);
                // Every element is written by pack_a, so a reused scratch needs no clearing.
                let packed_a = a_scratch.slice::<f32>(rows.div_ceil(MR) * kc * MR);
                pack_a(spec, a, i0, rows, pc, kc, packed_a);
                let mut tile = [0f32; MR * NR];
                for (panel, b_panel) in packed_b.chunks_exact(kc * NR).enumerate() {
                    let (j0, cols) = (panel * NR, NR.min(n - panel * NR));
                    for (s, a_strip) in packed_a.chunks_exact(kc * MR).enumerate() {
                        let live = MR.min(rows - s * MR);
                        let at = s * MR * n + j0;
                        if live == MR && cols % 16 == 0 {
                            let c_block = &mut c_rows[at..];
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: callers only reach this when the processor runs AVX-512F,
                            // AVX2 and FMA (the active instruction set is Avx512 or wider).
                            unsafe {
                                run_tile(
                                    cols,
                                    kc,
                                    (a_strip, MR),
                                    (b_panel, NR),
                                    spec.alpha,
                                    update,
                                    c_block,
                                    n,
                                )
                            };
                            continue;
                        }
                        // An edge block: the product into the tile, then the live part into C.
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: as above.
                        unsafe {
                            kernel::<3>(
                                kc,
                                (a_strip, MR),
                                (b_panel, NR),
                                1.0,
                                Update::Assign,
                                &mut tile,
                                NR,
                            )
                        };
                        for r in 0..live {
                            let out = &mut c_rows[at + r * n..at + r * n + cols];
                            let t = &tile[r * NR..r * NR + cols];
                            for (o, &t) in out.iter_mut().zip(t) {
                                *o = match update {
                                    Update::Assign => spec.alpha * t,
                                    Update::Blend(beta) => spec.alpha * t + beta * *o,
                                    Update::Accumulate => *o + spec.alpha * t,
                                };
                            }
                        }
                    }
                }
            }
        };
        for_chunks(&mut c[..m * n], task_rows * n, parallel, Scratch::new, run);
    }
}

/// Whether both operands already lie as the tile reads them, so the product skips packing:
/// `A^T B` (the weight gradient `x^T dy`) stores A's k-th row of op(A)'s columns and B's k-th
/// row contiguously, so a strip's MR values and a panel's columns are one run per k. Ragged
/// edges still go through packing (their strips or panels would read past the matrices).
fn reads_in_place(spec: &GemmSpec) -> bool {
    spec.trans_a && !spec.trans_b && spec.m.is_multiple_of(MR) && spec.n.is_multiple_of(16)
}

/// [`gemm_entry`] for [`reads_in_place`] products: the tile reads A and B where they lie, at
/// row strides m and n, and each task walks all of k for its rows, so a product is one hand-over
/// to the pool however long k is.
fn in_place_entry(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32], parallel: bool) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let task_rows = rows_per_task(m, MR, IN_PLACE_TASKS, parallel);
    let run = |_: &mut (), task: usize, c_task: &mut [f32]| {
        let i0 = task * task_rows;
        let strips = c_task.len() / n / MR;
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let update = Update::for_block(pc, spec.beta);
            for j0 in (0..n).step_by(NR) {
                let b_panel = (&b[pc * n + j0..], n);
                for s in 0..strips {
                    let a_strip = (&a[pc * m + i0 + s * MR..], m);
                    let c_block = &mut c_task[s * MR * n + j0..];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: callers only reach this when the processor runs AVX-512F, AVX2
                    // and FMA (the active instruction set is Avx512 or wider).
                    unsafe {
                        let cols = NR.min(n - j0);
                        run_tile(cols, kc, a_strip, b_panel, spec.alpha, update, c_block, n);
                    }
                }
            }
        }
    };
    for_chunks(&mut c[..m * n], task_rows * n, parallel, || (), run);
}
