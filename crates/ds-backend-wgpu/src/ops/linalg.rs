//! GEMM: 64 x 64 output tiles per workgroup, each invocation accumulating a 4 x 4 block in
//! registers straight from the operands, with no workgroup barriers (which software drivers
//! such as lavapipe run as coroutine switches: the earlier 16 x 16 shared-memory tiling took
//! 1.6 s for a 512^3 f32 product on lavapipe, this 0.25 s). Transposes are index maps, batches are strided, accumulation is
//! f32 in the order of k.

use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use ds_core::Result;
use ds_core::kernels::{LinalgKernels, Validated, View, ViewMut};
use ds_core::params::GemmSpec;

const GEMM: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let m = p_rows();
    let n = p_cols();
    let k = p_depth();
    let tiles_n = (n + 63u) / 64u;
    let per_batch = ((m + 63u) / 64u) * tiles_n;
    let bt = wg / per_batch;
    let t = wg % per_batch;
    // This invocation's rows are r0 + 16 a and columns c0 + 16 b, a, b < 4: neighbouring
    // invocations read neighbouring columns of B.
    let r0 = (t / tiles_n) * 64u + li / 16u;
    let c0 = (t % tiles_n) * 64u + li % 16u;
    // Element strides of A along its rows and k, and of B along k and its columns; rows and
    // columns past the edge read the last one (their results are never stored), so the loop
    // has no branches.
    var a_row = p_depth();
    var a_k = 1u;
    if (p_trans_a() != 0u) {
        a_row = 1u;
        a_k = p_rows();
    }
    var b_k = p_cols();
    var b_col = 1u;
    if (p_trans_b() != 0u) {
        b_k = 1u;
        b_col = p_depth();
    }
    var ai: array<u32, 4>;
    var bi: array<u32, 4>;
    for (var q = 0u; q < 4u; q++) {
        ai[q] = bt * p_sa() + min(r0 + 16u * q, m - 1u) * a_row;
        bi[q] = bt * p_sb() + min(c0 + 16u * q, n - 1u) * b_col;
    }
    var acc: array<f32, 16>;
    for (var q = 0u; q < 16u; q++) {
        acc[q] = 0.0;
    }
    for (var kk = 0u; kk < k; kk++) {
        let ak = kk * a_k;
        let bk = kk * b_k;
        let a0 = ld_a(ai[0] + ak);
        let a1 = ld_a(ai[1] + ak);
        let a2 = ld_a(ai[2] + ak);
        let a3 = ld_a(ai[3] + ak);
        let b0 = ld_b(bi[0] + bk);
        let b1 = ld_b(bi[1] + bk);
        let b2 = ld_b(bi[2] + bk);
        let b3 = ld_b(bi[3] + bk);
        acc[0] += a0 * b0;
        acc[1] += a0 * b1;
        acc[2] += a0 * b2;
        acc[3] += a0 * b3;
        acc[4] += a1 * b0;
        acc[5] += a1 * b1;
        acc[6] += a1 * b2;
        acc[7] += a1 * b3;
        acc[8] += a2 * b0;
        acc[9] += a2 * b1;
        acc[10] += a2 * b2;
        acc[11] += a2 * b3;
        acc[12] += a3 * b0;
        acc[13] += a3 * b1;
        acc[14] += a3 * b2;
        acc[15] += a3 * b3;
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
