//! Attention's small products on AVX2 without packing: `C = alpha A B + beta C` where the
//! rows of B are contiguous (a tile of V, dO, K or Q in place, or the score block) and every
//! operand already sits in L1 or L2. A `6 x 16` register tile (twelve ymm accumulators, two
//! loads of B and six broadcasts of A per twelve FMAs) reads B's rows and A's elements where
//! they lie, at any strides of A, so a transposed A (`P^T dO`, `dS^T Q`) costs nothing extra.
//!
//! Why not `matrixmultiply` here: for the attention's 64 x 64 x d blocks it packs both
//! operands on every call, and its packing took a quarter of the products' time in a profile
//! of the attention bench on a Zen 3. With this tile the GPT step's attention there took
//! 11.2-11.7 ms against 13.5-14.5 (four alternated pairs), and the attention bench 14-17% less.
//! AVX-512 processors keep `matrixmultiply`'s AVX-512 kernels: this tile has not been measured
//! on them (`DS_CPU_ISA=avx2` runs and tests it there).

use crate::cpu::isa::{self, Isa};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the full register tile.
const MR: usize = 6;

/// An operand read element by element: `data[i * rs + p * cs]` is A's row `i`, column `p`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

/// Whether [`product`] takes a product with `n` columns on this processor.
pub(super) fn takes(n: usize) -> bool {
    n.is_multiple_of(8) && isa::active() == Isa::Avx2
}

/// `c = alpha a b + beta c` for `m x n` (`n` a multiple of 8) over `k`: `a` strided, `b`
/// rows of `n` at stride `ldb`, `c` rows at stride `ldc`. Only call when [`takes`] says so.
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Strided<'_>,
    b: &[f32],
    ldb: usize,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(
        takes(n),
        "the AVX2 small GEMM called where it does not run (a bug)"
    );
    if m == 0 || n == 0 {
        return;
    }
    let a_reach = if k == 0 {
        0
    } else {
        (m - 1) * a.rs + (k - 1) * a.cs + 1
    };
    assert!(
        n <= ldb
            && n <= ldc
            && (k == 0 || (k - 1) * ldb + n <= b.len())
            && a_reach <= a.data.len()
            && (m - 1) * ldc + n <= c.len(),
        "attention's small product out of bounds (a bug in attention.rs)"
    );
    let mut i = 0;
    while i < m {
        let rows = MR.min(m - i);
        let mut j = 0;
        while j < n {
            let wide = n - j >= 16;
            // SAFETY: AVX2 and FMA run (`takes`, asserted). Rows i .. i + rows of A reach at
            // most (m - 1) rs + (k - 1) cs, columns j .. j + 16 (or 8) of B's k rows at most
            // (k - 1) ldb + n, and the block of C at most (m - 1) ldc + n: inside the slices
            // (asserted above).
            unsafe {
                let at = a.data.as_ptr().add(i * a.rs);
                let bp = b.as_ptr().add(j);
                let cp = c.as_mut_ptr().add(i * ldc + j);
                let args = (k, at, a.rs, a.cs, bp, ldb, alpha, beta, cp, ldc);
                match (rows, wide) {
                    (6, true) => tile::<6, 2>(args),
                    (6, false) => tile::<6, 1>(args),
                    (5, true) => tile::<5, 2>(args),
                    (5, false) => tile::<5, 1>(args),
                    (4, true) => tile::<4, 2>(args),
                    (4, false) => tile::<4, 1>(args),
                    (3, true) => tile::<3, 2>(args),
                    (3, false) => tile::<3, 1>(args),
                    (2, true) => tile::<2, 2>(args),
                    (2, false) => tile::<2, 1>(args),
                    (_, true) => tile::<1, 2>(args),
                    (_, false) => tile::<1, 1>(args),
                }
            }
            j += if wide { 16 } else { 8 };
        }
        i += rows;
    }
}

/// One tile's arguments: k, A at its first row and strides, B at its first column and row
/// stride, alpha, beta, C at the tile and its row stride.
type TileArgs = (
    usize,
    *const f32,
    usize,
    usize,
    *const f32,
    usize,
    f32,
    f32,
    *mut f32,
    usize,
);

/// `C[R x 8 NV] = alpha A[R x k] B[k x 8 NV] + beta C` (beta 0: C is not read).
///
/// # Safety
/// AVX2 and FMA must run; A must be readable at `i * rs + p * cs` for `i < R`, `p < k`, B at
/// `p * ldb + 0 .. 8 NV`, C readable and writable at `i * ldc + 0 .. 8 NV`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, const NV: usize>(args: TileArgs) {
    let (k, a, rs, cs, b, ldb, alpha, beta, c, ldc) = args;
    let mut acc = [[_mm256_setzero_ps(); NV]; R];
    for p in 0..k {
        // SAFETY: inside the extents the caller guarantees.
        unsafe {
            let bv: [__m256; NV] = std::array::from_fn(|v| _mm256_loadu_ps(b.add(p * ldb + 8 * v)));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_set1_ps(*a.add(r * rs + p * cs));
                for (acc, &b) in row.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(av, b, *acc);
                }
            }
        }
    }
    let alpha = _mm256_set1_ps(alpha);
    for (r, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: inside the extents the caller guarantees.
            unsafe {
                let dst = c.add(r * ldc + 8 * v);
                let x = _mm256_mul_ps(alpha, x);
                let out = if beta == 0.0 {
                    x
                } else {
                    _mm256_fmadd_ps(_mm256_set1_ps(beta), _mm256_loadu_ps(dst), x)
                };
                _mm256_storeu_ps(dst, out);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn tile<const R: usize, const NV: usize>(_: TileArgs) {
    unreachable!("`takes` is false off x86-64")
}

#[cfg(test)]
mod tests {
    use super::{Strided, product, takes};

    /// `alpha a b + beta c` in f64, `a` read at (rs, cs).
    #[allow(clippy::too_many_arguments)]
    fn naive(
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: Strided<'_>,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &[f32],
        ldc: usize,
    ) -> Vec<f64> {
        let mut out = Vec::new();
        for i in 0..m {
            for j in 0..n {
                let dot: f64 = (0..k)
                    .map(|p| f64::from(a.data[i * a.rs + p * a.cs]) * f64::from(b[p * ldb + j]))
                    .sum();
                let old = if beta == 0.0 {
                    0.0
                } else {
                    f64::from(beta) * f64::from(c[i * ldc + j])
                };
                out.push(f64::from(alpha) * dot + old);
            }
        }
        out
    }

    #[test]
    fn every_tile_shape_matches_f64_with_a_plain_or_transposed() {
        if !takes(8) {
            println!("SKIPPED every_tile_shape_matches_f64...: the active ISA is not AVX2");
            return;
        }
        let value = |i: usize| ((i * 7919) % 23) as f32 / 8.0 - 1.4;
        for (m, n, k) in [
            (1, 8, 1),
            (5, 16, 3),
            (6, 24, 32),
            (13, 64, 7),
            (64, 40, 64),
            (3, 8, 0),
        ] {
            for transposed in [false, true] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0)] {
                    // A is m x k; stored transposed it is k rows of m (padding 3).
                    let (rs, cs) = if transposed { (1, m + 3) } else { (k + 3, 1) };
                    let a: Vec<f32> = (0..m * (k + 3) + k * (m + 3) + 1).map(value).collect();
                    let (ldb, ldc) = (n + 5, n + 2);
                    let b: Vec<f32> = (0..k.max(1) * ldb).map(|i| value(i + 11)).collect();
                    let mut c: Vec<f32> = (0..m * ldc).map(|i| value(i + 5)).collect();
                    let a = Strided { data: &a, rs, cs };
                    let want = naive((m, n, k), alpha, a, &b, ldb, beta, &c, ldc);
                    product((m, n, k), alpha, a, &b, ldb, beta, &mut c, ldc);
                    for i in 0..m {
                        for j in 0..n {
                            let (got, want) = (f64::from(c[i * ldc + j]), want[i * n + j]);
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64 + 1.0),
                                "{m}x{n}x{k} transposed {transposed} beta {beta} at ({i}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
