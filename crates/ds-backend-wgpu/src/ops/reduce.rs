//! Reductions: each workgroup folds a fixed segment into one f32 partial (invocations
//! accumulate strided elements, then a tree across the workgroup), then one workgroup adds the
//! partials in a fixed order. No atomics in the sums, so results do not depend on scheduling.

use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use crate::shader::Store;
use ds_core::kernels::{ReductionKernels, Validated, View, ViewMut};
use ds_core::{DType, Result};

/// Elements one workgroup of a reduction covers.
pub(crate) const SEGMENT: usize = (crate::shader::FOLD * crate::shader::WG) as usize;

const SUM_PARTIALS: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let first = segment_first(wg);
    var acc = 0.0;
    for (var k = 0u; k < FOLD; k++) {
        let i = first + k * WG + li;
        if (i < p_n()) {
            let v = ld_x(i);
            if (p_square() != 0u) {
                acc += v * v;
            } else {
                acc += v;
            }
        }
    }
    let total = wg_sum(acc, li);
    if (li == 0u && segment_live(wg)) {
        st_partials(segment_slot(wg), total);
    }
}
";

/// out[k] = the sum of partials[k * count ..][..count], for k < outs.
pub(crate) const SUM_FINAL: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    for (var k = 0u; k < p_outs(); k++) {
        var acc = 0.0;
        for (var i = li; i < p_count(); i += WG) {
            acc += ld_partials(k * p_count() + i);
        }
        let total = wg_sum(acc, li);
        if (li == 0u) {
            st_out(k, total);
        }
    }
}
";

const NON_FINITE: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    if (!is_finite(ld_x(gi))) {
        raise_flag();
    }
}
";

const UNSCALE: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    st_x(gi, ld_x(gi) * p_inv_scale());
    if (!is_finite(ld_x(gi))) {
        raise_flag();
    }
}
";

impl WgpuBackend {
    /// A zeroed f32 scratch buffer.
    pub(crate) fn scratch(&self, len: usize) -> Result<WgpuBuffer> {
        self.alloc_buffer(DType::F32, len.max(1))
    }

    /// Adds the partials `[outs x count]` into `out[0..outs]` (f32).
    pub(crate) fn finish_sums(
        &self,
        partials: &WgpuBuffer,
        count: usize,
        outs: usize,
        out: &ViewMut<'_, Self>,
    ) -> Result<()> {
        self.run(Launch {
            name: "sum_final",
            body: SUM_FINAL,
            binds: vec![
                Bind::scratch("partials", partials).read_only(),
                Bind::write("out", out, Store::F32).whole(),
            ],
            params: vec![
                ("count", Param::U(u32_of(count, "sum", "x")?)),
                ("outs", Param::U(u32_of(outs, "sum", "x")?)),
            ],
            grid: Grid::Groups(1),
        })
    }

    fn reduce_sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, square: bool) -> Result<()> {
        let n = x.len();
        let groups = n.div_ceil(SEGMENT);
        let partials = self.scratch(groups)?;
        self.run(Launch {
            name: "sum_partials",
            body: SUM_PARTIALS,
            binds: vec![
                Bind::read("x", &x, self.store(x.dtype())),
                Bind::scratch("partials", &partials),
            ],
            params: vec![("square", Param::U(u32::from(square)))],
            grid: Grid::Elements {
                n,
                per_group: SEGMENT,
            },
        })?;
        self.finish_sums(&partials, groups.max(1), 1, &out)
    }

    /// The storage of a found-inf flag (f32 1.0 or byte 1).
    fn flag_store(flag: &ViewMut<'_, Self>) -> Store {
        if flag.dtype() == DType::U8 {
            Store::FlagU8
        } else {
            Store::FlagF32
        }
    }
}

impl ReductionKernels for WgpuBackend {
    fn sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.reduce_sum(x, out, false)
    }

    fn sum_squares(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.reduce_sum(x, out, true)
    }

    fn non_finite(&self, x: View<'_, Self>, flag: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.run(Launch {
            name: "non_finite",
            body: NON_FINITE,
            binds: vec![
                Bind::read("x", &x, self.store(x.dtype())),
                Bind::write("flag", &flag, Self::flag_store(&flag)).whole(),
            ],
            params: vec![],
            grid: Grid::Each(x.len()),
        })
    }

    fn unscale_and_check(
        &self,
        x: ViewMut<'_, Self>,
        inv_scale: f32,
        flag: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let n = x.len();
        self.run(Launch {
            name: "unscale_and_check",
            body: UNSCALE,
            binds: vec![
                Bind::write("x", &x, self.store(x.dtype())),
                Bind::write("flag", &flag, Self::flag_store(&flag)).whole(),
            ],
            params: vec![("inv_scale", Param::F(inv_scale))],
            grid: Grid::Each(n),
        })
    }
}
