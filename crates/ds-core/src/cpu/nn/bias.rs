//! Bias add and its gradient.

use super::ROW_BLOCK;
use crate::cpu::CpuBackend;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::isa::vectorized;
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

/// Widens a 16-bit (or copies an f32) row into a new f32 vector.
pub(crate) fn widen<T: Float>(x: &[T]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    T::load(x, &mut out);
    out
}

vectorized! {
    /// `row += bias` (equal lengths, or the shorter one's).
    fn add_row(row: &mut [f32], bias: &[f32]) {
        let len = row.len().min(bias.len());
        let (row, bias) = (&mut row[..len], &bias[..len]);
        for i in 0..len {
            row[i] += bias[i];
        }
    }
}

pub(super) fn add(
    be: &CpuBackend,
    shape: Shape2,
    x: ViewMut<'_, CpuBackend>,
    bias: View<'_, CpuBackend>,
) -> Result<()> {
    if shape.cols == 0 {
        return Ok(());
    }
    with_float!(x.dtype(), T => {
        let (x, bias) = (typed_mut::<T>(x)?, typed::<T>(bias)?);
        let b = widen(bias);
        be.run(|| {
            x.par_chunks_mut(shape.cols).for_each_init(
                Vec::new,
                |row32: &mut Vec<f32>, row| {
                    // f32 rows take the bias in place; 16-bit ones through an f32 copy (made
                    // once per task, on first use).
                    if let Some(row) = T::as_f32_mut(row) {
                        return add_row(row, &b);
                    }
                    row32.resize(shape.cols, 0.0);
                    T::load(row, row32);
                    add_row(row32, &b);
                    T::store(row32, row);
                },
            )
        });
        Ok(())
    })
}

/// Column sums of a `rows x cols` matrix given as f32 rows, per block of rows, in block order.
pub(crate) fn column_sums<T: Float>(
    m: &[T],
    cols: usize,
    term: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let partials: Vec<Vec<f32>> = m
        .par_chunks(cols * ROW_BLOCK)
        .enumerate()
        .map(|(block, rows)| {
            let mut acc = vec![0f32; cols];
            let mut row32 = Vec::new();
            for (r, row) in rows.chunks(cols).enumerate() {
                // f32 rows are read in place; 16-bit ones through an f32 copy.
                let row = match T::as_f32(row) {
                    Some(row) => row,
                    None => {
                        row32.resize(cols, 0.0);
                        T::load(row, &mut row32);
                        &row32
                    }
                };
                term(block * ROW_BLOCK + r, row, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![0f32; cols];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, p)| *t += p);
    }
    total
}

/// Writes `sums` into `dst`, adding to its contents when `accumulate`.
pub(crate) fn store_sums<T: Float>(sums: &[f32], dst: &mut [T], accumulate: bool) {
    if accumulate {
        let mut old = widen(dst);
        old.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        T::store(&old, dst);
    } else {
        T::store(sums, dst);
    }
}

pub(super) fn grad(
    be: &CpuBackend,
    shape: Shape2,
    dy: View<'_, CpuBackend>,
    db: ViewMut<'_, CpuBackend>,
    accumulate: bool,
) -> Result<()> {
    with_float!(dy.dtype(), T => {
        let (dy, db) = (typed::<T>(dy)?, typed_mut::<T>(db)?);
        if shape.cols == 0 {
            return Ok(());
        }
        let sums = be.run(|| column_sums(dy, shape.cols, |_, row, acc| acc.iter_mut().zip(row).for_each(|(a, v)| *a += v)));
        store_sums(&sums, db, accumulate);
        Ok(())
    })
}
