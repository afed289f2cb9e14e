//! GEMM on the CPU through the `gemm` crate's f32 kernels (BLIS-style packing, microkernels
//! chosen at run time for AVX2/FMA, AVX-512 or NEON). 16-bit storage is widened to f32 before
//! the product and rounded once after it, so every dtype accumulates in f32.

use super::float::Float;
use super::host::{typed, typed_mut, with_float};
use super::{CpuBackend, par::CHUNK};
use crate::error::{Error, Result};
use crate::kernels::{LinalgKernels, Validated, View, ViewMut};
use crate::params::GemmSpec;
use gemm_common::Parallelism;
use rayon::prelude::*;

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_WORK: usize = 96 * 96 * 96;

/// Elements one batch entry spans at its stride, the last entry counting only its matrix.
fn reach(batch: usize, stride: usize, one: usize) -> usize {
    if batch == 0 || one == 0 {
        0
    } else {
        (batch - 1) * stride + one
    }
}

/// One `C = alpha op(A) op(B) + beta C` on f32 slices that start at the matrices.
fn gemm_one(
    spec: &GemmSpec,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    parallelism: Parallelism,
) -> Result<()> {
    let (m, n, k) = (spec.m, spec.n, spec.k);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let c = c
        .get_mut(..m * n)
        .ok_or_else(|| Error::invalid("gemm", "c", "shorter than m*n"))?;
    if k == 0 {
        if spec.beta == 0.0 {
            c.fill(0.0);
        } else {
            c.iter_mut().for_each(|v| *v *= spec.beta);
        }
        return Ok(());
    }
    if a.len() < m * k || b.len() < k * n {
        return Err(Error::invalid(
            "gemm",
            "a/b",
            "shorter than the product needs",
        ));
    }
    // Row-major storage as (row stride, column stride) of op(A) (m x k) and op(B) (k x n).
    let (a_rs, a_cs) = if spec.trans_a { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if spec.trans_b { (1, k) } else { (n, 1) };
    let gemm = gemm_f32::gemm::f32::get_gemm_fn();
    // SAFETY: c holds m*n elements written at row stride n; a holds m*k elements and b holds
    // k*n elements, read at the strides above, which stay inside them for both transposes.
    // The three slices do not overlap (c is a unique borrow). The library computes
    // dst = alpha*dst + beta*lhs*rhs, reading dst only when read_dst is true, hence the swap of
    // alpha and beta and `read_dst = beta != 0` (BLAS's rule that beta = 0 ignores C).
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            spec.beta != 0.0,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            spec.beta,
            spec.alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// Every batch entry, in parallel across entries when there are several.
fn gemm_f32(spec: &GemmSpec, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) -> Result<()> {
    let work = spec.m.saturating_mul(spec.n).saturating_mul(spec.k);
    let inner = if work >= PARALLEL_WORK && (spec.batch < threads || threads == 1) {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    let entry = |i: usize, c: &mut [f32]| -> Result<()> {
        let a = a.get(i * spec.stride_a..).unwrap_or(&[]);
        let b = b.get(i * spec.stride_b..).unwrap_or(&[]);
        gemm_one(spec, a, b, c, inner)
    };
    if spec.batch <= 1 {
        return if spec.batch == 1 { entry(0, c) } else { Ok(()) };
    }
    c.par_chunks_mut(spec.stride_c.max(1))
        .take(spec.batch)
        .enumerate()
        .try_for_each(|(i, c)| entry(i, c))
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
