//! Reductions on the CPU: f32 lane accumulators inside a chunk (vectorized), f64 across
//! chunks in chunk order (deterministic).

use super::float::Float;
use super::host::{typed, typed_mut, with_float};
use super::lanes::lane_sum;
use super::{CpuBackend, map, par};
use crate::dtype::DType;
use crate::error::Result;
use crate::kernels::{ReductionKernels, Validated, View, ViewMut};

/// Accumulator lanes of a chunk's sum (one AVX-512 register, two AVX2).
const LANES: usize = 16;

/// 1 when any value's magnitude is not below `limit` (infinity, NaN, or overflow on store).
#[inline(always)]
fn any_at_or_above(x: &[f32], limit: f32) -> u32 {
    x.iter().fold(0u32, |bad, v| {
        bad | u32::from((v.abs() >= limit) | v.is_nan())
    })
}

fn write_sum(
    backend: &CpuBackend,
    x: View<'_, CpuBackend>,
    out: ViewMut<'_, CpuBackend>,
    square: bool,
) -> Result<()> {
    let total = with_float!(x.dtype(), T => {
        let x = typed::<T>(x)?;
        Ok(backend.run(|| par::ordered_sum(map::fold(x, |acc: f64, x| acc + lane_sum::<LANES>(x, |v| if square { v * v } else { v })))))
    })?;
    typed_mut::<f32>(out)?[0] = total as f32;
    Ok(())
}

fn raise_flag(flag: ViewMut<'_, CpuBackend>) -> Result<()> {
    match flag.dtype() {
        DType::U8 => typed_mut::<u8>(flag)?[0] = 1,
        _ => typed_mut::<f32>(flag)?[0] = 1.0,
    }
    Ok(())
}

impl ReductionKernels for CpuBackend {
    fn sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        write_sum(self, x, out, false)
    }

    fn sum_squares(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        write_sum(self, x, out, true)
    }

    fn non_finite(&self, x: View<'_, Self>, flag: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let found = with_float!(x.dtype(), T => {
            let x = typed::<T>(x)?;
            Ok(self.run(|| map::fold(x, |bad: u32, x| bad | any_at_or_above(x, f32::INFINITY))))
        })?;
        if found.into_iter().any(|b| b != 0) {
            raise_flag(flag)?;
        }
        Ok(())
    }

    fn unscale_and_check(
        &self,
        x: ViewMut<'_, Self>,
        inv_scale: f32,
        flag: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let found = with_float!(x.dtype(), T => {
            let x = typed_mut::<T>(x)?;
            Ok(self.run(|| {
                map::fold_mut(x, |bad: u32, x| {
                    let mut b = 0u32;
                    for v in x.iter_mut() {
                        *v *= inv_scale;
                        b |= u32::from((v.abs() >= T::OVERFLOW) | v.is_nan());
                    }
                    bad | b
                })
            }))
        })?;
        if found.into_iter().any(|b| b != 0) {
            raise_flag(flag)?;
        }
        Ok(())
    }
}
