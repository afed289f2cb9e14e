//! Embedding lookup and its deterministic scatter-add gradient.

use super::bias::widen;
use crate::cpu::CpuBackend;
use crate::cpu::float::Float;
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::error::Result;
use crate::kernels::{View, ViewMut};
use crate::params::Shape2;
use rayon::prelude::*;

fn row_of(id: i32, vocab: usize) -> Option<usize> {
    usize::try_from(id).ok().filter(|&r| r < vocab)
}

pub(super) fn forward(
    be: &CpuBackend,
    shape: Shape2,
    ids: View<'_, CpuBackend>,
    table: View<'_, CpuBackend>,
    out: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    let ids = typed::<i32>(ids)?;
    let dim = shape.cols;
    if dim == 0 {
        return Ok(());
    }
    with_float!(table.dtype(), T => {
        let (table, out) = (typed::<T>(table)?, typed_mut::<T>(out)?);
        let nan = T::from_f32(f32::NAN);
        be.run(|| {
            out.par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(o, &id)| match row_of(id, shape.rows) {
                Some(r) => o.copy_from_slice(&table[r * dim..(r + 1) * dim]),
                None => o.fill(nan),
            })
        });
        Ok(())
    })
}

fn backward_typed<T: Float>(
    be: &CpuBackend,
    shape: Shape2,
    accumulate: bool,
    ids: &[i32],
    dout: &[T],
    dtable: &mut [T],
) {
    let (vocab, dim) = (shape.rows, shape.cols);
    // Positions of each id, in increasing order: the summation order of its gradient row.
    let mut order: Vec<(usize, usize)> = ids
        .iter()
        .enumerate()
        .filter_map(|(i, &id)| row_of(id, vocab).map(|r| (r, i)))
        .collect();
    order.sort_unstable();
    let mut first = vec![usize::MAX; vocab];
    for (k, &(r, _)) in order.iter().enumerate().rev() {
        first[r] = k;
    }
    be.run(|| {
        dtable.par_chunks_mut(dim).enumerate().for_each_init(
            || (vec![0f32; dim], vec![0f32; dim]),
            |(acc, row32), (r, row)| {
                let start = first[r];
                if start == usize::MAX {
                    if !accumulate {
                        row.fill(T::from_f32(0.0));
                    }
                    return;
                }
                acc.fill(0.0);
                for &(_, i) in order[start..].iter().take_while(|(id, _)| *id == r) {
                    T::load(&dout[i * dim..(i + 1) * dim], row32);
                    acc.iter_mut().zip(row32.iter()).for_each(|(a, v)| *a += v);
                }
                if accumulate {
                    let old = widen(row);
                    acc.iter_mut().zip(&old).for_each(|(a, o)| *a += o);
                }
                T::store(acc, row);
            },
        )
    });
}

pub(super) fn backward(
    be: &CpuBackend,
    shape: Shape2,
    accumulate: bool,
    ids: View<'_, CpuBackend>,
    dout: View<'_, CpuBackend>,
    dtable: ViewMut<'_, CpuBackend>,
) -> Result<()> {
    let ids = typed::<i32>(ids)?;
    if shape.cols == 0 {
        return Ok(());
    }
    with_float!(dtable.dtype(), T => {
        let (dout, dtable) = (typed::<T>(dout)?, typed_mut::<T>(dtable)?);
        backward_typed(be, shape, accumulate, ids, dout, dtable);
        Ok(())
    })
}
