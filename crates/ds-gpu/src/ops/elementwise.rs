//! fill, cast, scale, axpy, add, mul.

use super::suffix;
use super::{count, ptr, ptr_mut};
use crate::backend::GpuBackend;
use crate::driver::Driver;
use crate::launch::Arg;
use ds_core::kernels::{ElementwiseKernels, Validated, View, ViewMut};
use ds_core::{DType, Result};

impl<D: Driver> ElementwiseKernels for GpuBackend<D> {
    fn fill(&self, dst: ViewMut<'_, Self>, value: f64, _: Validated) -> Result<()> {
        let n = dst.len();
        // ds_fill_<T>(T* y, u64 n, float v); ds_fill_i32(int*, u64, int); ds_fill_u8(u8*, u64, u32)
        let (name, v) = match dst.dtype() {
            DType::I32 => ("ds_fill_i32".to_string(), Arg::I32(value as i32)),
            DType::U8 => ("ds_fill_u8".to_string(), Arg::U32(value as u32)),
            d => (format!("ds_fill_{}", suffix(d)), Arg::F32(value as f32)),
        };
        self.launch(&name, self.grid(n), &[ptr_mut(&dst), count(n), v])
    }

    fn cast(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        let n = src.len();
        // ds_cast_<X>_<Y>(const X* x, Y* y, u64 n)
        let name = format!("ds_cast_{}_{}", suffix(src.dtype()), suffix(dst.dtype()));
        self.launch(&name, self.grid(n), &[ptr(&src), ptr_mut(&dst), count(n)])
    }

    fn scale(&self, x: ViewMut<'_, Self>, alpha: f32, _: Validated) -> Result<()> {
        let n = x.len();
        // ds_scale_<T>(T* x, u64 n, float a)
        self.launch(
            &format!("ds_scale_{}", suffix(x.dtype())),
            self.grid(n),
            &[ptr_mut(&x), count(n), Arg::F32(alpha)],
        )
    }

    fn axpy(
        &self,
        alpha: f32,
        x: View<'_, Self>,
        y: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = x.len();
        // ds_axpy_<X>_<Y>(float a, const X* x, Y* y, u64 n)
        let name = format!("ds_axpy_{}_{}", suffix(x.dtype()), suffix(y.dtype()));
        self.launch(
            &name,
            self.grid(n),
            &[Arg::F32(alpha), ptr(&x), ptr_mut(&y), count(n)],
        )
    }

    fn add(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = a.len();
        // ds_add_<T>(const T* a, const T* b, T* y, u64 n)
        self.launch(
            &format!("ds_add_{}", suffix(a.dtype())),
            self.grid(n),
            &[ptr(&a), ptr(&b), ptr_mut(&out), count(n)],
        )
    }

    fn mul(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = a.len();
        // ds_mul_<T>(const T* a, const T* b, T* y, u64 n)
        self.launch(
            &format!("ds_mul_{}", suffix(a.dtype())),
            self.grid(n),
            &[ptr(&a), ptr(&b), ptr_mut(&out), count(n)],
        )
    }
}
