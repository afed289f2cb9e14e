//! GEMM: 16 x 16 output tiles per workgroup, the shared dimension in steps of 16 staged in
//! workgroup memory; transposes are index maps, batches are strided, accumulation is f32.

use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use ds_core::Result;
use ds_core::kernels::{LinalgKernels, Validated, View, ViewMut};
use ds_core::params::GemmSpec;

const GEMM: &str = "
var<workgroup> ta: array<f32, 256>;
var<workgroup> tb: array<f32, 256>;

fn a_at(bt: u32, r: u32, kk: u32) -> f32 {
    if (p_trans_a() != 0u) {
        return ld_a(bt * p_sa() + kk * p_rows() + r);
    }
    return ld_a(bt * p_sa() + r * p_depth() + kk);
}

fn b_at(bt: u32, kk: u32, c: u32) -> f32 {
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
    let tiles_n = (n + 15u) / 16u;
    let per_batch = ((m + 15u) / 16u) * tiles_n;
    let bt = wg / per_batch;
    let t = wg % per_batch;
    let r0 = (t / tiles_n) * 16u;
    let c0 = (t % tiles_n) * 16u;
    let lr = li / 16u;
    let lc = li % 16u;
    var acc = 0.0;
    for (var k0 = 0u; k0 < k; k0 += 16u) {
        var av = 0.0;
        if (r0 + lr < m && k0 + lc < k) {
            av = a_at(bt, r0 + lr, k0 + lc);
        }
        ta[li] = av;
        var bv = 0.0;
        if (k0 + lr < k && c0 + lc < n) {
            bv = b_at(bt, k0 + lr, c0 + lc);
        }
        tb[li] = bv;
        workgroupBarrier();
        for (var q = 0u; q < 16u; q++) {
            acc += ta[lr * 16u + q] * tb[q * 16u + lc];
        }
        workgroupBarrier();
    }
    let r = r0 + lr;
    let c = c0 + lc;
    if (r < m && c < n) {
        let ci = bt * p_sc() + r * n + c;
        var out = p_alpha() * acc;
        if (p_beta() != 0.0) {
            out += p_beta() * ld_c(ci);
        }
        st_c(ci, out);
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
        let groups = spec.batch * m.div_ceil(16) * n.div_ceil(16);
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
