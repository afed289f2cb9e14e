//! Causal softmax self-attention, forward and backward, in blocks (the flash-attention
//! schedule): each sequence is one task; for each head its q, k, v rows are gathered into f32
//! tiles, and each block of [`BLOCK`] queries meets the key blocks up to its own with small
//! GEMMs (on AVX2 [`super::small_gemm`]'s unpacked tile, elsewhere `matrixmultiply`'s
//! kernels, AVX-512 or baseline chosen at run time) and an online
//! softmax, so no score matrix larger than `BLOCK x BLOCK` is ever held. The forward saves only
//! the per-query log-sum-exp; the backward recomputes each block's probabilities from it.
//!
//! Tensors are token-major, `[batch, seq, heads, head_dim]` (a row of a `[tokens, dim]`
//! activation holds every head of one token), which is what the projections produce and read
//! with one GEMM each.
use super::small_gemm;
use crate::cpu::isa::vectorized;
use crate::cpu::scratch::Scratch;

use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::{CpuBackend, CpuBuffer, math};
use crate::error::Result;
use crate::kernels::{AttentionArgs, AttentionBackwardArgs};
use crate::params::AttentionShape;
use rayon::prelude::*;

/// Queries (and keys) per block: the score tile is `BLOCK x BLOCK` f32 (16 KiB), and the
/// tiles of one block's rows stay in L1/L2 while its products run.
const BLOCK: usize = 64;

/// A row-major matrix in a slice: `rows x cols` at row stride `ld`, optionally read
/// transposed.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    ld: usize,
    transposed: bool,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            ld,
            transposed: false,
        }
    }

    /// The transpose (a view: strides swap).
    fn t(self) -> Self {
        Mat {
            transposed: !self.transposed,
            ..self
        }
    }

    /// (rows, cols, row stride, column stride) of the matrix as read.
    fn shape(&self) -> (usize, usize, isize, isize) {
        if self.transposed {
            (self.cols, self.rows, 1, self.ld as isize)
        } else {
            (self.rows, self.cols, self.ld as isize, 1)
        }
    }

    /// Whether the slice holds every element the matrix reaches.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.cols <= self.ld && (self.rows - 1) * self.ld + self.cols <= self.data.len())
    }
}

/// One head's rows of a sequence: row `r` is the `d` values at `r * ld` (`ld = d` in a gathered
/// tile; `heads * d` read in place from a token-major f32 tensor).
#[derive(Clone, Copy)]
struct Rows<'a> {
    data: &'a [f32],
    ld: usize,
}

impl<'a> Rows<'a> {
    /// The head whose values start `offset` into each row of `data` (rows `ld` apart).
    fn head(data: &'a [f32], offset: usize, ld: usize) -> Self {
        Rows {
            data: &data[offset..],
            ld,
        }
    }

    /// Rows `r0 .. r0 + rows` as a `rows x d` matrix.
    fn mat(self, r0: usize, rows: usize, d: usize) -> Mat<'a> {
        Mat::new(&self.data[r0 * self.ld..], rows, d, self.ld)
    }

    /// Row `r`.
    fn row(self, r: usize, d: usize) -> &'a [f32] {
        &self.data[r * self.ld..r * self.ld + d]
    }
}

/// Sets row `r` (`d` wide, row stride `ld`) of `out` to `f(row)`.
fn each_row(
    out: &mut [f32],
    rows: std::ops::Range<usize>,
    d: usize,
    ld: usize,
    f: impl Fn(&mut [f32]),
) {
    for r in rows {
        f(&mut out[r * ld..r * ld + d]);
    }
}

/// `c = alpha a b + beta c` for an `m x n` block of `c` at row stride `ldc`, single-threaded.
fn product(alpha: f32, a: Mat<'_>, b: Mat<'_>, beta: f32, c: &mut [f32], ldc: usize) {
    let (m, k, a_rs, a_cs) = a.shape();
    let (kb, n, b_rs, b_cs) = b.shape();
    let c_fits = m == 0 || n == 0 || (n <= ldc && (m - 1) * ldc + n <= c.len());
    assert!(
        k == kb && a.fits() && b.fits() && c_fits,
        "attention tile product out of bounds (a bug in this file)"
    );
    if small_gemm::takes(n) {
        let a = small_gemm::Strided {
            data: a.data,
            rs: a_rs as usize,
            cs: a_cs as usize,
        };
        if b_cs == 1 && b_rs as usize >= n {
            return small_gemm::product((m, n, k), alpha, a, b.data, b_rs as usize, beta, c, ldc);
        }
        // B read transposed (K^T, V^T), or rows that overlap (one-wide heads): its k x n copy
        // by rows first.
        let mut scratch = Scratch::new();
        let bt = scratch.slice::<f32>(k * n);
        for (p, row) in bt.chunks_exact_mut(n).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = b.data[p * b_rs as usize + j * b_cs as usize];
            }
        }
        return small_gemm::product((m, n, k), alpha, a, bt, n, beta, c, ldc);
    }
    // SAFETY: the assertion above proves every element matrixmultiply reads (a: m x k, b:
    // k x n at their strides) and writes (c: m x n at row stride ldc) lies inside the slices;
    // `c` is borrowed mutably, so nothing else touches it meanwhile.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            a_rs,
            a_cs,
            b.data.as_ptr(),
            b_rs,
            b_cs,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}

/// Copies one head's rows out of a token-major sequence into a `[seq, d]` f32 tile.
fn gather<T: Float>(seq_rows: &[T], head: usize, d: usize, stride: usize, tile: &mut [f32]) {
    for (r, row) in tile.chunks_exact_mut(d).enumerate() {
        let at = r * stride + head * d;
        T::load(&seq_rows[at..at + d], row);
    }
}

/// Writes a `[seq, d]` f32 tile into one head's rows of a token-major sequence.
fn scatter<T: Float>(tile: &[f32], head: usize, d: usize, stride: usize, seq_rows: &mut [T]) {
    for (r, row) in tile.chunks_exact(d).enumerate() {
        let at = r * stride + head * d;
        T::store(row, &mut seq_rows[at..at + d]);
    }
}

/// Independent lanes of the row reductions (one AVX-512 register, two AVX2). A single running
/// maximum or sum is a serial chain that LLVM must keep in order, so such a loop compiles to
/// scalar code; per-lane partials let it use whole vectors.
const LANES: usize = 16;

/// `m` raised to `v` where `v` is larger, or NaN where `v` is NaN (the scores' NaN must reach
/// the output).
#[inline(always)]
fn max_keep_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() { v } else { m }
}

vectorized! {
    /// Largest of `start` and `x` (NaN if any element is NaN).
    fn row_max(x: &[f32], start: f32) -> f32 {
        let mut lanes = [start; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                *l = max_keep_nan(*l, v);
            }
        }
        let tail = chunks.remainder().iter().fold(start, |m, &v| max_keep_nan(m, v));
        lanes.iter().fold(tail, |m, &v| max_keep_nan(m, v))
    }
}

vectorized! {
    /// `p[j] = exp(p[j] - m)` for the first `valid` entries, 0 after; returns the sum. `m` is
    /// at least every live entry (the running maximum), so the argument is never positive and
    /// softmax's cheaper exponential applies (results below e^-87.3 flush to zero, nothing next
    /// to the maximum's 1).
    fn exp_row(p: &mut [f32], valid: usize, m: f32) -> f32 {
        let (live, masked) = p.split_at_mut(valid.min(p.len()));
        let mut lanes = [0f32; LANES];
        let mut chunks = live.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (l, x) in lanes.iter_mut().zip(c.iter_mut()) {
                *x = math::exp_nonpositive(*x - m);
                *l += *x;
            }
        }
        let mut sum = 0f32;
        for x in chunks.into_remainder() {
            *x = math::exp_nonpositive(*x - m);
            sum += *x;
        }
        masked.fill(0.0);
        lanes.iter().sum::<f32>() + sum
    }
}

vectorized! {
    /// `p[j] = exp(s[j] - lse)` masked after `valid`, then `ds[j] = p[j] (dp[j] - delta) scale`.
    fn grad_row(p: &mut [f32], dp: &mut [f32], valid: usize, lse: f32, delta: f32, scale: f32) {
        let valid = valid.min(p.len());
        // s - lse <= 0 up to rounding (lse is at least the row's largest score), well inside
        // the cheaper exponential's range (valid up to 88).
        for (p, dp) in p[..valid].iter_mut().zip(&mut dp[..valid]) {
            *p = math::exp_nonpositive(*p - lse);
            *dp = *p * (*dp - delta) * scale;
        }
        p[valid..].fill(0.0);
        dp[valid..].fill(0.0);
    }
}

/// Per-task scratch of the forward: the gathered tiles (used only when the tensors are not
/// f32, which the products read in place) and the block's scores and running statistics.
struct ForwardTiles {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    work: BlockWork,
}

/// A `len`-element f32 tile when the tensors are gathered, else nothing (f32 is read in place).
fn gather_tile(len: usize, gathered: bool) -> Vec<f32> {
    if gathered {
        vec![0f32; len]
    } else {
        Vec::new()
    }
}

/// One query block's scores, running maxima and sums.
struct BlockWork {
    scores: Vec<f32>,
    max: Vec<f32>,
    sum: Vec<f32>,
}

impl ForwardTiles {
    fn new(s: usize, d: usize, gathered: bool) -> Self {
        let tile = || gather_tile(s * d, gathered);
        ForwardTiles {
            q: tile(),
            k: tile(),
            v: tile(),
            out: tile(),
            work: BlockWork {
                scores: vec![0.0; BLOCK * BLOCK],
                max: vec![0.0; BLOCK],
                sum: vec![0.0; BLOCK],
            },
        }
    }
}

/// One head of one sequence: `out` (row stride `ldo`) and `lse` from `q`, `k`, `v`.
#[allow(clippy::too_many_arguments)]
fn forward_head(
    (q, k, v): (Rows<'_>, Rows<'_>, Rows<'_>),
    out: &mut [f32],
    ldo: usize,
    w: &mut BlockWork,
    s: usize,
    d: usize,
    scale: f32,
    lse: &mut [f32],
) {
    for r0 in (0..s).step_by(BLOCK) {
        let rows = BLOCK.min(s - r0);
        let q = q.mat(r0, rows, d);
        let out = &mut out[r0 * ldo..];
        each_row(out, 0..rows, d, ldo, |o| o.fill(0.0));
        w.max[..rows].fill(f32::NEG_INFINITY);
        w.sum[..rows].fill(0.0);
        // Key blocks up to and including the diagonal one (blocks are aligned, so every query
        // row sees at least its block's first key).
        for j0 in (0..r0 + rows).step_by(BLOCK) {
            let keys = BLOCK.min(s - j0);
            product(scale, q, k.mat(j0, keys, d).t(), 0.0, &mut w.scores, BLOCK);
            for r in 0..rows {
                let valid = (r0 + r + 1).saturating_sub(j0).min(keys);
                let p = &mut w.scores[r * BLOCK..r * BLOCK + keys];
                let old = w.max[r];
                let m = row_max(&p[..valid], old);
                let kept = if old == f32::NEG_INFINITY {
                    0.0
                } else {
                    math::exp(old - m)
                };
                let block_sum = exp_row(p, valid, m);
                w.sum[r] = w.sum[r] * kept + block_sum;
                w.max[r] = m;
                if kept != 1.0 {
                    out[r * ldo..r * ldo + d]
                        .iter_mut()
                        .for_each(|o| *o *= kept);
                }
            }
            let p = Mat::new(&w.scores, rows, keys, BLOCK);
            product(1.0, p, v.mat(j0, keys, d), 1.0, out, ldo);
        }
        for r in 0..rows {
            let inv = 1.0 / w.sum[r];
            out[r * ldo..r * ldo + d].iter_mut().for_each(|o| *o *= inv);
            lse[r0 + r] = w.max[r] + w.sum[r].ln();
        }
    }
}

fn forward_typed<T: Float>(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionArgs<'_, CpuBuffer>,
) -> Result<()> {
    let (h, s, d) = (sh.heads, sh.seq, sh.head_dim);
    let (q, k, v) = (
        typed::<T>(args.q)?,
        typed::<T>(args.k)?,
        typed::<T>(args.v)?,
    );
    let out = typed_mut::<T>(args.out)?;
    let lse = typed_mut::<f32>(args.lse)?;
    let (seq_len, stride) = (s * h * d, h * d);
    if seq_len == 0 {
        lse.fill(f32::NEG_INFINITY);
        return Ok(());
    }
    // f32 tensors are read and written in place (the products take any row stride); other
    // types go through f32 tiles.
    let in_place = T::as_f32(q).is_some();
    be.run(|| {
        out.par_chunks_mut(seq_len)
            .zip(lse.par_chunks_mut(h * s))
            .enumerate()
            .for_each_init(
                || ForwardTiles::new(s, d, !in_place),
                |t, (b, (out_b, lse_b))| {
                    let rows = b * seq_len..(b + 1) * seq_len;
                    let (q, k, v) = (&q[rows.clone()], &k[rows.clone()], &v[rows]);
                    for head in 0..h {
                        let lse_h = &mut lse_b[head * s..(head + 1) * s];
                        if let (Some(q), Some(k), Some(v)) =
                            (T::as_f32(q), T::as_f32(k), T::as_f32(v))
                            && let Some(out_b) = T::as_f32_mut(&mut *out_b)
                        {
                            let at = |x| Rows::head(x, head * d, stride);
                            let qkv = (at(q), at(k), at(v));
                            forward_head(
                                qkv,
                                &mut out_b[head * d..],
                                stride,
                                &mut t.work,
                                s,
                                d,
                                sh.scale,
                                lse_h,
                            );
                            continue;
                        }
                        gather(q, head, d, stride, &mut t.q);
                        gather(k, head, d, stride, &mut t.k);
                        gather(v, head, d, stride, &mut t.v);
                        let tile = |x| Rows::head(x, 0, d);
                        let qkv = (tile(&t.q), tile(&t.k), tile(&t.v));
                        forward_head(qkv, &mut t.out, d, &mut t.work, s, d, sh.scale, lse_h);
                        scatter(&t.out, head, d, stride, out_b);
                    }
                },
            )
    });
    Ok(())
}

vectorized! {
    /// `sum(a[j] b[j])` over per-lane partials (see [`LANES`]).
    fn row_dot(a: &[f32], b: &[f32]) -> f32 {
        let mut lanes = [0f32; LANES];
        let (mut ac, mut bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        for (x, y) in (&mut ac).zip(&mut bc) {
            for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
                *l += x * y;
            }
        }
        let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
        lanes.iter().sum::<f32>() + tail
    }
}

/// Per-task scratch of the backward: the gathered tiles (only for tensors that are not f32)
/// and one block's probabilities and their gradients.
struct BackwardTiles {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    out: Vec<f32>,
    dout: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    work: GradWork,
}

/// Per-query `delta = out . dout`, and one block's probabilities and their gradients.
struct GradWork {
    delta: Vec<f32>,
    p: Vec<f32>,
    dp: Vec<f32>,
}

impl BackwardTiles {
    fn new(s: usize, d: usize, gathered: bool) -> Self {
        let tile = || gather_tile(s * d, gathered);
        BackwardTiles {
            q: tile(),
            k: tile(),
            v: tile(),
            out: tile(),
            dout: tile(),
            dq: tile(),
            dk: tile(),
            dv: tile(),
            work: GradWork {
                delta: vec![0.0; s],
                p: vec![0.0; BLOCK * BLOCK],
                dp: vec![0.0; BLOCK * BLOCK],
            },
        }
    }
}

/// One head's forward tensors, as the backward reads them.
#[derive(Clone, Copy)]
struct HeadInputs<'a> {
    q: Rows<'a>,
    k: Rows<'a>,
    v: Rows<'a>,
    out: Rows<'a>,
    dout: Rows<'a>,
}

/// One head of one sequence: `dq`, `dk`, `dv` (row stride `ldg`, overwritten) from the
/// forward's tensors and `lse`.
#[allow(clippy::too_many_arguments)]
fn backward_head(
    x: HeadInputs<'_>,
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    ldg: usize,
    w: &mut GradWork,
    s: usize,
    d: usize,
    scale: f32,
    lse: &[f32],
) {
    for (r, delta) in w.delta.iter_mut().enumerate() {
        *delta = row_dot(x.out.row(r, d), x.dout.row(r, d));
    }
    for g in [&mut *dq, &mut *dk, &mut *dv] {
        each_row(g, 0..s, d, ldg, |row| row.fill(0.0));
    }
    for r0 in (0..s).step_by(BLOCK) {
        let rows = BLOCK.min(s - r0);
        let q = x.q.mat(r0, rows, d);
        let dout = x.dout.mat(r0, rows, d);
        for j0 in (0..r0 + rows).step_by(BLOCK) {
            let keys = BLOCK.min(s - j0);
            let k = x.k.mat(j0, keys, d);
            let v = x.v.mat(j0, keys, d);
            product(scale, q, k.t(), 0.0, &mut w.p, BLOCK);
            product(1.0, dout, v.t(), 0.0, &mut w.dp, BLOCK);
            for r in 0..rows {
                let i = r0 + r;
                let valid = (i + 1).saturating_sub(j0).min(keys);
                let at = r * BLOCK..r * BLOCK + keys;
                grad_row(
                    &mut w.p[at.clone()],
                    &mut w.dp[at],
                    valid,
                    lse[i],
                    w.delta[i],
                    scale,
                );
            }
            let p = Mat::new(&w.p, rows, keys, BLOCK);
            let ds = Mat::new(&w.dp, rows, keys, BLOCK);
            // dv[j] += p^T dout; dk[j] += ds^T q; dq[i] += ds k.
            product(1.0, p.t(), dout, 1.0, &mut dv[j0 * ldg..], ldg);
            product(1.0, ds.t(), q, 1.0, &mut dk[j0 * ldg..], ldg);
            product(1.0, ds, k, 1.0, &mut dq[r0 * ldg..], ldg);
        }
    }
}

fn backward_typed<T: Float>(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    let (h, s, d) = (sh.heads, sh.seq, sh.head_dim);
    let q = typed::<T>(args.q)?;
    let k = typed::<T>(args.k)?;
    let v = typed::<T>(args.v)?;
    let out = typed::<T>(args.out)?;
    let dout = typed::<T>(args.dout)?;
    let lse = typed::<f32>(args.lse)?;
    let dq = typed_mut::<T>(args.dq)?;
    let dk = typed_mut::<T>(args.dk)?;
    let dv = typed_mut::<T>(args.dv)?;
    let (seq_len, stride) = (s * h * d, h * d);
    if seq_len == 0 {
        return Ok(());
    }
    // As in the forward: f32 in place, other types through f32 tiles.
    let in_place = T::as_f32(q).is_some();
    be.run(|| {
        dq.par_chunks_mut(seq_len)
            .zip(dk.par_chunks_mut(seq_len).zip(dv.par_chunks_mut(seq_len)))
            .enumerate()
            .for_each_init(
                || BackwardTiles::new(s, d, !in_place),
                |t, (b, (dq_b, (dk_b, dv_b)))| {
                    let rows = b * seq_len..(b + 1) * seq_len;
                    let (q, k, v) = (&q[rows.clone()], &k[rows.clone()], &v[rows.clone()]);
                    let (out, dout) = (&out[rows.clone()], &dout[rows]);
                    for head in 0..h {
                        let lse_h = &lse[(b * h + head) * s..(b * h + head + 1) * s];
                        if let (Some(q), Some(k), Some(v), Some(out), Some(dout)) = (
                            T::as_f32(q),
                            T::as_f32(k),
                            T::as_f32(v),
                            T::as_f32(out),
                            T::as_f32(dout),
                        ) && let (Some(dq_b), Some(dk_b), Some(dv_b)) = (
                            T::as_f32_mut(&mut *dq_b),
                            T::as_f32_mut(&mut *dk_b),
                            T::as_f32_mut(&mut *dv_b),
                        ) {
                            let at = |x| Rows::head(x, head * d, stride);
                            let x = HeadInputs {
                                q: at(q),
                                k: at(k),
                                v: at(v),
                                out: at(out),
                                dout: at(dout),
                            };
                            let g = (
                                &mut dq_b[head * d..],
                                &mut dk_b[head * d..],
                                &mut dv_b[head * d..],
                            );
                            backward_head(x, g, stride, &mut t.work, s, d, sh.scale, lse_h);
                            continue;
                        }
                        gather(q, head, d, stride, &mut t.q);
                        gather(k, head, d, stride, &mut t.k);
                        gather(v, head, d, stride, &mut t.v);
                        gather(out, head, d, stride, &mut t.out);
                        gather(dout, head, d, stride, &mut t.dout);
                        let tile = |x| Rows::head(x, 0, d);
                        let x = HeadInputs {
                            q: tile(&t.q),
                            k: tile(&t.k),
                            v: tile(&t.v),
                            out: tile(&t.out),
                            dout: tile(&t.dout),
                        };
                        let g = (&mut t.dq[..], &mut t.dk[..], &mut t.dv[..]);
                        backward_head(x, g, d, &mut t.work, s, d, sh.scale, lse_h);
                        scatter(&t.dq, head, d, stride, dq_b);
                        scatter(&t.dk, head, d, stride, dk_b);
                        scatter(&t.dv, head, d, stride, dv_b);
                    }
                },
            )
    });
    Ok(())
}

pub(super) fn forward(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.q.dtype(), T => forward_typed::<T>(be, sh, args))
}

pub(super) fn backward(
    be: &CpuBackend,
    sh: &AttentionShape,
    args: AttentionBackwardArgs<'_, CpuBuffer>,
) -> Result<()> {
    with_float!(args.q.dtype(), T => backward_typed::<T>(be, sh, args))
}
