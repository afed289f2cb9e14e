//! Reductions: per-block f64 partials in a scratch buffer, then one ordered final pass.

use super::suffix;
use super::{count, ptr, ptr_mut};
use crate::backend::GpuBackend;
use crate::buffer::GpuBuffer;
use crate::driver::Driver;
use crate::launch::Arg;
use ds_core::kernels::{ReductionKernels, Validated, View, ViewMut};
use ds_core::{DType, Device, Result};

impl<D: Driver> GpuBackend<D> {
    /// A scratch buffer of `len` f64-sized slots (as raw 8-byte elements).
    pub(crate) fn scratch(&self, len: usize) -> Result<GpuBuffer<D>> {
        // Two f32 per f64 slot; the kernels only see the address.
        Device::new(self.clone()).alloc(DType::F32, 2 * len.max(1))
    }

    /// Sums `x` (or its squares) into out (one f32 element).
    fn reduce_sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, square: bool) -> Result<()> {
        let n = x.len();
        let cfg = self.grid(n);
        let blocks = cfg.blocks.max(1);
        let partials = self.scratch(blocks as usize)?;
        let pp = Arg::Ptr(partials.addr(0));
        // ds_sum_partials_<T>(const T* x, u64 n, double* partials, int square)
        let name = format!("ds_sum_partials_{}", suffix(x.dtype()));
        self.launch(
            &name,
            cfg,
            &[ptr(&x), count(n), pp, Arg::I32(i32::from(square))],
        )?;
        // ds_sum_finalize(const double* partials, u32 count, float* out, u32 outs)
        self.launch(
            "ds_sum_finalize",
            self.rows(1, 0)?,
            &[pp, Arg::U32(blocks), ptr_mut(&out), Arg::U32(1)],
        )
    }

    /// Launches a flag-setting kernel (`flag` is f32 or u8).
    fn flag_args(flag: &ViewMut<'_, Self>) -> [Arg; 2] {
        [
            ptr_mut(flag),
            Arg::I32(i32::from(flag.dtype() == DType::U8)),
        ]
    }
}

impl<D: Driver> ReductionKernels for GpuBackend<D> {
    fn sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.reduce_sum(x, out, false)
    }

    fn sum_squares(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.reduce_sum(x, out, true)
    }

    fn non_finite(&self, x: View<'_, Self>, flag: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let n = x.len();
        let [f, is_u8] = Self::flag_args(&flag);
        // ds_non_finite_<T>(const T* x, u64 n, void* flag, int flag_u8)
        self.launch(
            &format!("ds_non_finite_{}", suffix(x.dtype())),
            self.grid(n),
            &[ptr(&x), count(n), f, is_u8],
        )
    }

    fn unscale_and_check(
        &self,
        x: ViewMut<'_, Self>,
        inv_scale: f32,
        flag: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = x.len();
        let [f, is_u8] = Self::flag_args(&flag);
        // ds_unscale_<T>(T* x, u64 n, float inv_scale, void* flag, int flag_u8)
        self.launch(
            &format!("ds_unscale_{}", suffix(x.dtype())),
            self.grid(n),
            &[ptr_mut(&x), count(n), Arg::F32(inv_scale), f, is_u8],
        )
    }
}
