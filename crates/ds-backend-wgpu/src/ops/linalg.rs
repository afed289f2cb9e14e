//! GEMM: 64 x 64 output tiles per workgroup, each invocation accumulating a 4 x 4 block in
//! registers straight from the operands, with no workgroup barriers (which software drivers
//! such as lavapipe run as coroutine switches: the earlier 16 x 16 shared-memory tiling took
//! 1.6 s for a 512^3 f32 product on lavapipe, this 0.31 s). Transposes are index maps, batches are strided, accumulation is
//! f32 in the order of k.

use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use ds_core::Result;
use ds_core::kernels::{LinalgKernels, Validated, View, ViewMut};
use ds_core::params::GemmSpec;

const GEMM: &str = "
fn a_at(bt: u32, r: u32, kk: u32) -> f32 {
    if (r >= p_rows()) {
        return 0.0;
    }
    if (p_trans_a() != 0u) {
        return ld_a(bt * p_sa() + kk * p_rows() + r);
    }
    return ld_a(bt * p_sa() + r * p_depth() + kk);
}

fn b_at(bt: u32, kk: u32, c: u32) -> f32 {
    if (c >= p_cols()) {
        return 0.0;
    }
    if (p_trans_b() != 0u) {
        return ld_b(bt * p_sb() + c * p_depth() + kk);
    }
    return ld_b(bt * p_sb() + kk * p_cols() + c);
}

fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let m = p_rows();
    let n = p_cols();
    let k = p_depth();
    let tiles_n = (n + 63u) / 64u;
    let per_batch = ((m + 63u) / 64u) * tiles_n;
    let bt = wg / per_batch;
    let t = wg % per_batch;
    // This invocation's rows are r0 + lr + 16 a and columns c0 + lc + 16 b, a, b < 4:
    // neighbouring invocations read neighbouring columns of B.
    let r0 = (t / tiles_n) * 64u + li / 16u;
    let c0 = (t % tiles_n) * 64u + li % 16u;
    var acc: array<f32, 16>;
    for (var q = 0u; q < 16u; q++) {
        acc[q] = 0.0;
    }
    for (var kk = 0u; kk < k; kk++) {
        let a0 = a_at(bt, r0, kk);
        let a1 = a_at(bt, r0 + 16u, kk);
        let a2 = a_at(bt, r0 + 32u, kk);
        let a3 = a_at(bt, r0 + 48u, kk);
        for (var b = 0u; b < 4u; b++) {
            let bv = b_at(bt, kk, c0 + 16u * b);
            acc[b] += a0 * bv;
            acc[4u + b] += a1 * bv;
            acc[8u + b] += a2 * bv;
            acc[12u + b] += a3 * bv;
        }
    }
    for (var a = 0u; a < 4u; a++) {
        for (var b = 0u; b < 4u; b++) {
            let r = r0 + 16u * a;
            let c = c0 + 16u * b;
            if (r < m && c < n) {
                let ci = bt * p_sc() + r * n + c;
                var out = p_alpha() * acc[a * 4u + b];
                if (p_beta() != 0.0) {
                    out += p_beta() * ld_c(ci);
                }
                st_c(ci, out);
            }
        }
    }
}
";

impl LinalgKernels for WgpuBackend {
    fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, Self>,
        b: View<'_, Self>,
        c: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let (m, n) = (spec.m, spec.n);
        if m == 0 || n == 0 || spec.batch == 0 {
            return Ok(());
        }
        let groups = spec.batch * m.div_ceil(64) * n.div_ceil(64);
        let store = self.store(a.dtype());
        let u = |v: usize, what: &'static str| u32_of(v, "gemm", what).map(Param::U);
        self.run(Launch {
            name: "gemm",
            body: GEMM,
            binds: vec![
                Bind::read("a", &a, store),
                Bind::read("b", &b, store),
                Bind::write("c", &c, self.store(c.dtype())),
            ],
            params: vec![
                ("rows", u(m, "spec.m")?),
                ("cols", u(n, "spec.n")?),
                ("depth", u(spec.k, "spec.k")?),
                ("trans_a", Param::U(u32::from(spec.trans_a))),
                ("trans_b", Param::U(u32::from(spec.trans_b))),
                ("sa", u(spec.stride_a, "spec.stride_a")?),
                ("sb", u(spec.stride_b, "spec.stride_b")?),
                ("sc", u(spec.stride_c, "spec.stride_c")?),
                ("alpha", Param::F(spec.alpha)),
                ("beta", Param::F(spec.beta)),
            ],
            grid: Grid::Groups(groups),
        })
    }
}
