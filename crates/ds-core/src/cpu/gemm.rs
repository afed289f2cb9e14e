//! GEMM on the CPU: f32 on AVX-512 processors through this crate's own kernel
//! ([`super::gemm_avx512`], which measured faster than the crates'), elsewhere through the
//! `matrixmultiply` crate's f32 kernels (BLIS-style packing, microkernels chosen at run time
//! for AVX2/FMA or NEON), called single-threaded on blocks of C that the backend's own thread
//! pool spreads over its threads. bf16 runs on AMX tiles where the processor and the OS allow
//! them (`super::gemm_amx`, x86-64 only), else on AVX512-BF16's dot products where the
//! processor has them ([`super::gemm_bf16`]); other
//! 16-bit storage is widened to f32 before the product and rounded once after it, so every
//! dtype accumulates in f32.
//!
//! Why not the crate's own threading: it sizes its pool from an environment variable read
//! once per process, so it cannot follow the backend's thread count; splitting C into row or
//! column blocks on our pool measured the same speed (about 125 GFLOP/s at 1024^3 on two Zen 3
//! cores) and keeps one pool per backend.

use super::float::Float;
use super::host::{typed, typed_mut, with_float};
use super::{CpuBackend, par::CHUNK};
use super::{gemm_avx512, gemm_bf16};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels::{LinalgKernels, Validated, View, ViewMut};
use crate::params::GemmSpec;
use half::bf16;
use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_WORK: usize = 64 * 64 * 64;
/// Block edges are multiples of this (a multiple of every microkernel's tile).
const TILE: usize = 16;

/// Elements one batch entry spans at its stride, the last entry counting only its matrix.
fn reach(batch: usize, stride: usize, one: usize) -> usize {
    if batch == 0 || one == 0 {
        0
    } else {
        (batch - 1) * stride + one
    }
}

/// A pointer that may cross threads because every task writes a disjoint block through it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks given a SharedOut write disjoint element ranges of one live allocation (see
// `gemm_one`), so sending the pointer to another thread cannot create a data race.
unsafe impl Send for SharedOut {}
// SAFETY: as for Send.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer (a method, so closures capture the whole Send wrapper, not its field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `C[rows, cols] = alpha op(A) op(B) + beta C` for one block of C; strides in elements.
///
/// # Safety
/// `c` must be valid for writes (and reads when beta != 0) of the block at row stride `n`;
/// `a` and `b` valid for reads of op(A) rows `rows` and op(B) columns `cols` at the given
/// strides; no other thread may touch this block of C meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    spec: &GemmSpec,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    let (a_rs, a_cs) = if spec.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if spec.trans_b { (1, k) } else { (n, 1) };
    // SAFETY: the caller guarantees the pointers cover op(A)[rows, ..], op(B)[.., cols] and
    // C[rows, cols] at these strides; offsets stay inside those ranges. matrixmultiply writes C
    // without reading it when beta == 0 (BLAS's rule), which the contract requires.
    unsafe {
        matrixmultiply::sgemm(
            rows.len(),
            k,
            cols.len(),
            spec.alpha,
            a.add(rows.start * a_rs),
            a_rs as isize,
            a_cs as isize,
            b.add(cols.start * b_cs),
            b_rs as isize,
            b_cs as isize,
            spec.beta,
            c.add(rows.start * n + cols.start),
            n as isize,
            1,
        );
    }
}

/// The first `m * n` elements of `c` (one entry's C), or an error naming `c`.
fn entry_c<'a, T>(spec: &GemmSpec, c: &'a mut [T]) -> Result<&'a mut [T]> {
    c.get_mut(..spec.m * spec.n)
        .ok_or_else(|| Error::invalid("gemm", "c", "shorter than m*n"))
}

/// Checks that one entry's `a` and `b` (slices starting at its matrices) hold them whole.
fn check_operands<T>(spec: &GemmSpec, a: &[T], b: &[T]) -> Result<()> {
    if a.len() < spec.m * spec.k || b.len() < spec.k * spec.n {
        return Err(Error::invalid(
            "gemm",
            "a/b",
            "shorter than the product needs",
        ));
    }
    Ok(())
}

/// One `C = alpha op(A) op(B) + beta C` on slices that start at the matrices, split into
/// blocks over `threads` when it is large enough.
fn gemm_one(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) -> Result<()> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let c = entry_c(spec, c)?;
    if k == 0 {
        if spec.beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|v| *v *= spec.beta);
        }
        return Ok(());
    }
    check_operands(spec, a, b)?;
    let parallel = split(spec, threads);
    if gemm_avx512::available() {
        gemm_avx512::gemm_entry(spec, a, b, c, parallel);
        return Ok(());
    }
    let out = SharedOut(c.as_mut_ptr());
    let split_rows = m >= n;
    let edge = if split_rows { m } else { n };
    let parts = if parallel {
        (2 * threads).min(edge.div_ceil(TILE))
    } else {
        1
    };
    let size = edge.div_ceil(parts).div_ceil(TILE) * TILE;
    (0..parts).into_par_iter().for_each(|p| {
        let range = (p * size).min(edge)..((p + 1) * size).min(edge);
        if range.is_empty() {
            return;
        }
        let (rows, cols) = if split_rows {
            (range, 0..n)
        } else {
            (0..m, range)
        };
        // SAFETY: a and b hold m*k and k*n elements (checked above) and c holds m*n; each task
        // gets a distinct row (or column) range of C, so no element is written twice, and the
        // borrow of `c` outlives the parallel loop.
        unsafe { block(spec, a.as_ptr(), b.as_ptr(), out.ptr(), rows, cols) };
    });
    Ok(())
}

/// Runs `one(a, b, c, threads)` on every batch entry, the slices starting at the entry's
/// matrices: in parallel across entries (each on one thread) when there are at least as many
/// as threads, else one after another with all the threads for each.
fn each_entry<A: Sync, C: Send>(
    spec: &GemmSpec,
    a: &[A],
    b: &[A],
    c: &mut [C],
    threads: usize,
    one: impl Fn(&[A], &[A], &mut [C], usize) -> Result<()> + Sync,
) -> Result<()> {
    let entry = |i: usize, c: &mut [C], threads: usize| -> Result<()> {
        let a = a.get(i * spec.stride_a..).unwrap_or(&[]);
        let b = b.get(i * spec.stride_b..).unwrap_or(&[]);
        one(a, b, c, threads)
    };
    match spec.batch {
        0 => Ok(()),
        1 => entry(0, c, threads),
        batch if batch >= threads => c
            .par_chunks_mut(spec.stride_c.max(1))
            .take(batch)
            .enumerate()
            .try_for_each(|(i, c)| entry(i, c, 1)),
        batch => c
            .chunks_mut(spec.stride_c.max(1))
            .take(batch)
            .enumerate()
            .try_for_each(|(i, c)| entry(i, c, threads)),
    }
}

/// Every batch entry of an f32 product.
fn gemm_f32(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) -> Result<()> {
    each_entry(spec, a, b, c, threads, |a, b, c, threads| {
        gemm_one(spec, a, b, c, threads)
    })
}

/// Every batch entry of a bf16 product (`k > 0`) on the tile or the dot-product kernel.
fn gemm_bf16(
    spec: &GemmSpec,
    a: &[bf16],
    b: &[bf16],
    c: &mut [bf16],
    threads: usize,
) -> Result<()> {
    if spec.m == 0 || spec.n == 0 {
        return Ok(());
    }
    let (a, b): (&[u16], &[u16]) = (bytemuck::cast_slice(a), bytemuck::cast_slice(b));
    each_entry(spec, a, b, c, threads, |a, b, c, threads| {
        let c = entry_c(spec, c)?;
        check_operands(spec, a, b)?;
        #[cfg(target_arch = "x86_64")]
        if super::gemm_amx::available() {
            super::gemm_amx::gemm_entry(spec, a, b, c, split(spec, threads));
            return Ok(());
        }
        gemm_bf16::gemm_entry(spec, a, b, c, split(spec, threads));
        Ok(())
    })
}

/// Whether one product is large enough to split over `threads`.
fn split(spec: &GemmSpec, threads: usize) -> bool {
    spec.m * spec.n * spec.k >= PARALLEL_WORK && threads > 1
}

impl LinalgKernels for CpuBackend {
    fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, Self>,
        b: View<'_, Self>,
        c: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let threads = self.threads();
        if a.dtype() == DType::BF16 && spec.k > 0 && gemm_bf16::available() {
            let (a, b, c) = (typed::<bf16>(a)?, typed::<bf16>(b)?, typed_mut::<bf16>(c)?);
            return self.run(|| gemm_bf16(spec, a, b, c, threads));
        }
        with_float!(a.dtype(), T => {
            let (a, b, c) = (typed::<T>(a)?, typed::<T>(b)?, typed_mut::<T>(c)?);
            self.run(|| {
                if let (Some(a), Some(b)) = (T::as_f32(a), T::as_f32(b))
                    && let Some(c) = T::as_f32_mut(&mut *c)
                {
                    return gemm_f32(spec, a, b, c, threads);
                }
                let widen = |x: &[T], len: usize| -> Vec<f32> {
                    let x = &x[..len.min(x.len())];
                    let mut out = vec![0f32; x.len()];
                    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| T::load(x, o));
                    out
                };
                let a32 = widen(a, reach(spec.batch, spec.stride_a, spec.a_len()));
                let b32 = widen(b, reach(spec.batch, spec.stride_b, spec.b_len()));
                let c_reach = reach(spec.batch, spec.stride_c, spec.c_len());
                let mut c32 = if spec.beta != 0.0 { widen(c, c_reach) } else { vec![0f32; c_reach.min(c.len())] };
                gemm_f32(spec, &a32, &b32, &mut c32, threads)?;
                // Store only the matrices: elements between batch entries stay untouched.
                for i in 0..spec.batch {
                    let start = i * spec.stride_c;
                    let range = start..(start + spec.c_len()).min(c32.len());
                    if let (Some(src), Some(dst)) = (c32.get(range.clone()), c.get_mut(range)) {
                        T::store(src, dst);
                    }
                }
                Ok(())
            })
        })
    }
}
