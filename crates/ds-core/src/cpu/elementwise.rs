//! Elementwise kernels and casts on the CPU.

use super::float::{BLOCK, Float};
use super::host::{typed, typed_mut, with_float};
use super::par::CHUNK;
use super::stream::{fence, stream_bytes, streams};
use super::{CpuBackend, map};
use crate::dtype::DType;
use crate::error::Result;
use crate::kernels::{ElementwiseKernels, Validated, View, ViewMut};
use rayon::prelude::*;

impl ElementwiseKernels for CpuBackend {
    fn fill(&self, dst: ViewMut<'_, Self>, value: f64, _: Validated) -> Result<()> {
        match dst.dtype() {
            DType::I32 => {
                let out = typed_mut::<i32>(dst)?;
                self.run(|| fill_slice(out, value as i32));
                Ok(())
            }
            DType::U8 => {
                let out = typed_mut::<u8>(dst)?;
                self.run(|| fill_slice(out, value as u8));
                Ok(())
            }
            dtype => with_float!(dtype, T => {
                let out = typed_mut::<T>(dst)?;
                self.run(|| fill_slice(out, T::from_f32(value as f32)));
                Ok(())
            }),
        }
    }

    fn cast(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        with_float!(src.dtype(), X => with_float!(dst.dtype(), Y => {
            let x = typed::<X>(src)?;
            let y = typed_mut::<Y>(dst)?;
            self.run(|| cast_slices(x, y));
            Ok(())
        }))
    }

    fn scale(&self, x: ViewMut<'_, Self>, alpha: f32, _: Validated) -> Result<()> {
        with_float!(x.dtype(), T => {
            let x = typed_mut::<T>(x)?;
            self.run(|| map::inplace(x, |x| x.iter_mut().for_each(|v| *v *= alpha)));
            Ok(())
        })
    }

    fn axpy(
        &self,
        alpha: f32,
        x: View<'_, Self>,
        y: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        with_float!(x.dtype(), X => with_float!(y.dtype(), Y => {
            let x = typed::<X>(x)?;
            let y = typed_mut::<Y>(y)?;
            self.run(|| {
                map::zip(x, y, |x, y| y.iter_mut().zip(x).for_each(|(y, x)| *y += alpha * x))
            });
            Ok(())
        }))
    }

    fn add(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        with_float!(a.dtype(), T => {
            let (a, b, out) = (typed::<T>(a)?, typed::<T>(b)?, typed_mut::<T>(out)?);
            self.run(|| {
                map::binary(a, b, out, |a, b, y| {
                    y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = a + b)
                })
            });
            Ok(())
        })
    }

    fn mul(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        with_float!(a.dtype(), T => {
            let (a, b, out) = (typed::<T>(a)?, typed::<T>(b)?, typed_mut::<T>(out)?);
            self.run(|| {
                map::binary(a, b, out, |a, b, y| {
                    y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = a * b)
                })
            });
            Ok(())
        })
    }
}

/// Converts `x` into `y` directly when either side is f32, else through f32 blocks; large
/// outputs are written with streaming stores (they are not read back soon).
fn cast_slices<X: Float, Y: Float>(x: &[X], y: &mut [Y]) {
    let streaming = streams(y);
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| {
            match X::as_f32(x) {
                Some(x) => Y::store_or_stream(x, y, streaming),
                None => {
                    if !streaming && let Some(y) = Y::as_f32_mut(&mut *y) {
                        return X::load(x, y);
                    }
                    let mut buf = [0f32; BLOCK];
                    for (y, x) in y.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
                        let b = &mut buf[..x.len()];
                        X::load(x, b);
                        Y::store_or_stream(b, y, streaming);
                    }
                }
            }
            if streaming {
                fence();
            }
        });
}

/// Sets every element of `out` to `v`, with streaming stores for large outputs.
fn fill_slice<T: bytemuck::Pod + Send + Sync>(out: &mut [T], v: T) {
    if !streams(out) {
        out.par_iter_mut().for_each(|o| *o = v);
        return;
    }
    let pattern = [v; BLOCK];
    out.par_chunks_mut(CHUNK).for_each(|chunk| {
        for c in chunk.chunks_mut(BLOCK) {
            stream_bytes(
                bytemuck::cast_slice(&pattern[..c.len()]),
                bytemuck::cast_slice_mut(c),
            );
        }
        fence();
    });
}
