//! Parallel, vectorized maps over float storage.
//!
//! Each map splits its arrays into [`CHUNK`]-sized tasks; inside a task, f32 storage goes to
//! the arithmetic closure directly and 16-bit storage is converted a [`BLOCK`] at a time into
//! stack buffers. The closures run inside functions compiled for each instruction set
//! ([`crate::cpu::isa`], chosen at run time), so their simple loops become vector code.
//! Arithmetic fuses multiply-adds only through `f32::mul_add`, which is correctly rounded on every
//! processor (a library call where the hardware has none), so results are the same bits on
//! every processor.
//! Write-only outputs above [`super::stream::STREAM_MIN_BYTES`] are computed a block at a time
//! into a stack buffer and streamed out ([`super::stream::streams`]).

use super::float::{BLOCK, Float};
use super::isa::vectorized;
use super::par::CHUNK;
use super::stream::{fence, streams};
use rayon::prelude::*;

vectorized! {
    fn run1<F: Fn(&mut [f32])>(f: &F, x: &mut [f32]) {
        f(x)
    }
}

vectorized! {
    fn run2<F: Fn(&[f32], &mut [f32])>(f: &F, x: &[f32], y: &mut [f32]) {
        f(x, y)
    }
}

vectorized! {
    fn run3<F: Fn(&[f32], &[f32], &mut [f32])>(f: &F, a: &[f32], b: &[f32], y: &mut [f32]) {
        f(a, b, y)
    }
}

vectorized! {
    fn run_fold<A, F: Fn(A, &[f32]) -> A>(f: &F, acc: A, x: &[f32]) -> A {
        f(acc, x)
    }
}

vectorized! {
    fn run_fold_mut<A, F: Fn(A, &mut [f32]) -> A>(f: &F, acc: A, x: &mut [f32]) -> A {
        f(acc, x)
    }
}

/// `f` over `x` in place.
pub(crate) fn inplace<T: Float>(x: &mut [T], f: impl Fn(&mut [f32]) + Sync) {
    x.par_chunks_mut(CHUNK).for_each(|x| {
        if let Some(x) = T::as_f32_mut(x) {
            return run1(&f, x);
        }
        let mut buf = [0f32; BLOCK];
        for x in x.chunks_mut(BLOCK) {
            let b = &mut buf[..x.len()];
            T::load(x, b);
            run1(&f, b);
            T::store(b, x);
        }
    });
}

/// `f(x, y)` where `y` is read and written and `x` is read; the dtypes may differ.
pub(crate) fn zip<X: Float, Y: Float>(x: &[X], y: &mut [Y], f: impl Fn(&[f32], &mut [f32]) + Sync) {
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            if let (Some(x), Some(y)) = (X::as_f32(x), Y::as_f32_mut(&mut *y)) {
                return run2(&f, x, y);
            }
            let (mut bx, mut by) = ([0f32; BLOCK], [0f32; BLOCK]);
            for (y, x) in y.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
                let (bx, by) = (&mut bx[..x.len()], &mut by[..y.len()]);
                X::load(x, bx);
                Y::load(y, by);
                run2(&f, bx, by);
                Y::store(by, y);
            }
        });
}

/// `f(x, y)` where `y` is only written (its old contents are not loaded).
pub(crate) fn unary<X: Float, Y: Float>(
    x: &[X],
    y: &mut [Y],
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let streaming = streams(y);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            if !streaming && let (Some(x), Some(y)) = (X::as_f32(x), Y::as_f32_mut(&mut *y)) {
                return run2(&f, x, y);
            }
            let (mut bx, mut by) = ([0f32; BLOCK], [0f32; BLOCK]);
            for (y, x) in y.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
                let by = &mut by[..y.len()];
                match X::as_f32(x) {
                    Some(x) => run2(&f, x, by),
                    None => {
                        let bx = &mut bx[..x.len()];
                        X::load(x, bx);
                        run2(&f, bx, by);
                    }
                }
                Y::store_or_stream(by, y, streaming);
            }
            if streaming {
                fence();
            }
        });
}

/// `f(a, b, y)` where `y` is only written; all of one dtype.
pub(crate) fn binary<T: Float>(
    a: &[T],
    b: &[T],
    y: &mut [T],
    f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync,
) {
    let streaming = streams(y);
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| {
            if !streaming
                && let (Some(a), Some(b)) = (T::as_f32(a), T::as_f32(b))
                && let Some(y) = T::as_f32_mut(&mut *y)
            {
                return run3(&f, a, b, y);
            }
            let (mut ba, mut bb, mut by) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
            for ((y, a), b) in y
                .chunks_mut(BLOCK)
                .zip(a.chunks(BLOCK))
                .zip(b.chunks(BLOCK))
            {
                let n = y.len();
                match (T::as_f32(a), T::as_f32(b)) {
                    (Some(a), Some(b)) => run3(&f, a, b, &mut by[..n]),
                    _ => {
                        T::load(a, &mut ba[..n]);
                        T::load(b, &mut bb[..n]);
                        run3(&f, &ba[..n], &bb[..n], &mut by[..n]);
                    }
                }
                T::store_or_stream(&by[..n], y, streaming);
            }
            if streaming {
                fence();
            }
        });
}

/// A parallel fold of `f` over `x` in [`CHUNK`]s: each chunk's f32 slices (converted a block
/// at a time) are folded with `f(acc, slice)`; chunk results come back in order.
pub(crate) fn fold<T: Float, A: Send + Copy + Default>(
    x: &[T],
    f: impl Fn(A, &[f32]) -> A + Sync,
) -> Vec<A> {
    x.par_chunks(CHUNK)
        .map(|x| {
            if let Some(x) = T::as_f32(x) {
                return run_fold(&f, A::default(), x);
            }
            let mut buf = [0f32; BLOCK];
            let mut acc = A::default();
            for x in x.chunks(BLOCK) {
                let b = &mut buf[..x.len()];
                T::load(x, b);
                acc = run_fold(&f, acc, b);
            }
            acc
        })
        .collect()
}

/// Like [`fold`], but `f` may also rewrite the slice (converted back after).
pub(crate) fn fold_mut<T: Float, A: Send + Copy + Default>(
    x: &mut [T],
    f: impl Fn(A, &mut [f32]) -> A + Sync,
) -> Vec<A> {
    x.par_chunks_mut(CHUNK)
        .map(|x| {
            if let Some(x) = T::as_f32_mut(x) {
                return run_fold_mut(&f, A::default(), x);
            }
            let mut buf = [0f32; BLOCK];
            let mut acc = A::default();
            for x in x.chunks_mut(BLOCK) {
                let b = &mut buf[..x.len()];
                T::load(x, b);
                acc = run_fold_mut(&f, acc, b);
                T::store(b, x);
            }
            acc
        })
        .collect()
}
