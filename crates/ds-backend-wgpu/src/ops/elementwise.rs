//! fill, cast, scale, axpy, add, mul: one invocation per element.

use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param};
use ds_core::kernels::{ElementwiseKernels, Validated, View, ViewMut};
use ds_core::{DType, Result, bf16, f16};

const CAST: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_y(gi, ld_x(gi));
}
";

const SCALE: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_x(gi, ld_x(gi) * p_alpha());
}
";

const AXPY: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_y(gi, ld_y(gi) + p_alpha() * ld_x(gi));
}
";

const ADD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_out(gi, ld_a(gi) + ld_b(gi));
}
";

const MUL: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_out(gi, ld_a(gi) * ld_b(gi));
}
";

/// The raw bits `value` has in `dtype`, rounded as the CPU backend rounds (through f32).
fn fill_bits(dtype: DType, value: f64) -> u32 {
    match dtype {
        DType::F32 => (value as f32).to_bits(),
        DType::F16 => u32::from(f16::from_f32(value as f32).to_bits()),
        DType::BF16 => u32::from(bf16::from_f32(value as f32).to_bits()),
        DType::I32 => (value as i32) as u32,
        DType::U8 => u32::from(value as u8),
    }
}

impl ElementwiseKernels for WgpuBackend {
    fn fill(&self, dst: ViewMut<'_, Self>, value: f64, _: Validated) -> Result<()> {
        self.fill_bits(&dst, fill_bits(dst.dtype(), value))
    }

    fn cast(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.run(Launch {
            name: "cast",
            body: CAST,
            binds: vec![
                Bind::read("x", &src, self.store(src.dtype())),
                Bind::write("y", &dst, self.store(dst.dtype())),
            ],
            params: vec![],
            grid: Grid::Each(src.len()),
        })
    }

    fn scale(&self, x: ViewMut<'_, Self>, alpha: f32, _: Validated) -> Result<()> {
        self.run(Launch {
            name: "scale",
            body: SCALE,
            binds: vec![Bind::write("x", &x, self.store(x.dtype()))],
            params: vec![("alpha", Param::F(alpha))],
            grid: Grid::Each(x.len()),
        })
    }

    fn axpy(
        &self,
        alpha: f32,
        x: View<'_, Self>,
        y: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.run(Launch {
            name: "axpy",
            body: AXPY,
            binds: vec![
                Bind::read("x", &x, self.store(x.dtype())),
                Bind::write("y", &y, self.store(y.dtype())),
            ],
            params: vec![("alpha", Param::F(alpha))],
            grid: Grid::Each(x.len()),
        })
    }

    fn add(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.binary("add", ADD, a, b, out)
    }

    fn mul(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.binary("mul", MUL, a, b, out)
    }
}

impl WgpuBackend {
    fn binary(
        &self,
        name: &'static str,
        body: &'static str,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
    ) -> Result<()> {
        let store = self.store(a.dtype());
        self.run(Launch {
            name,
            body,
            binds: vec![
                Bind::read("a", &a, store),
                Bind::read("b", &b, store),
                Bind::write("out", &out, store),
            ],
            params: vec![],
            grid: Grid::Each(a.len()),
        })
    }
}
