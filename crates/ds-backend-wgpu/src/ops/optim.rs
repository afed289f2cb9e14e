//! Fused Adam/AdamW, SGD, Lamb, Adagrad and Lion steps over fp32 master weights, one pass over memory, with
//! the optional weight copy (any float type) written in the same pass.

use super::reduce::SEGMENT;
use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use crate::shader::Store;
use ds_core::Result;
use ds_core::SliceMut;
use ds_core::kernels::{
    AdagradArgs, AdamArgs, LambApplyArgs, LambMomentArgs, LionArgs, OptimizerKernels, SgdArgs,
    Validated,
};
use ds_core::params::{AdagradParams, AdamParams, LambParams, LionParams, SgdParams};

const ADAM: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let i = gi;
    if (i >= p_n()) { return; }
    let pi = ld_p(i);
    let g = ld_g(i) * p_gs() + p_l2() * pi;
    let m = p_b1() * ld_m(i) + p_c1() * g;
    let v = p_b2() * ld_v(i) + p_c2() * (g * g);
    let denom = sqrt(v) * p_inv_sqrt_bc2() + p_eps();
    let pn = pi * p_decay() - p_step_size() * (m / denom);
    st_p(i, pn);
    st_m(i, m);
    st_v(i, v);
    st_copy(i, pn);
}
";

const SGD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let i = gi;
    if (i >= p_n()) { return; }
    let pi = ld_p(i);
    var d = ld_g(i) * p_gs() + p_wd() * pi;
    if (has_buf) {
        var b = d;
        if (p_first() == 0u) {
            b = p_mu() * ld_buf(i) + p_keep() * d;
        }
        st_buf(i, b);
        if (p_nesterov() != 0u) {
            d = d + p_mu() * b;
        } else {
            d = b;
        }
    }
    let pn = pi - p_lr() * d;
    st_p(i, pn);
    st_copy(i, pn);
}
";

const ADAGRAD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let i = gi;
    if (i >= p_n()) { return; }
    let pi = ld_p(i);
    let g = ld_g(i) * p_gs();
    let decayed = g + p_wd() * pi;
    let v = ld_v(i) + decayed * decayed;
    let pn = pi - p_lr() * (g / (sqrt(v) + p_eps()));
    st_p(i, pn);
    st_v(i, v);
    st_copy(i, pn);
}
";

/// `sign(c)` as ds_core::params::lion_sign writes it: 0 at 0, NaN for a non-finite `c`.
const LION: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let i = gi;
    if (i >= p_n()) { return; }
    let g = ld_g(i) * p_gs();
    let m = ld_m(i);
    let c = p_b1() * m + p_c1() * g;
    let s = select(0.0, 1.0, c > 0.0) - select(0.0, 1.0, c < 0.0) + c * 0.0;
    let pn = ld_p(i) * p_decay() - p_lr() * s;
    st_p(i, pn);
    st_m(i, p_b2() * m + p_c2() * g);
    st_copy(i, pn);
}
";

/// Moments, and per-workgroup partial sums of p^2 (partials[wg]) and u^2
/// (partials[groups + wg]).
const LAMB_MOMENTS: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let first = segment_first(wg);
    var psq = 0.0;
    var usq = 0.0;
    for (var k = 0u; k < FOLD; k++) {
        let i = first + k * WG + li;
        if (i < p_n()) {
            let g = ld_g(i) * p_gs();
            let m = p_b1() * ld_m(i) + (1.0 - p_b1()) * g;
            let v = p_b2() * ld_v(i) + (1.0 - p_b2()) * (g * g);
            st_m(i, m);
            st_v(i, v);
            let pi = ld_p(i);
            let u = m / (sqrt(v) + p_eps()) + p_wd() * pi;
            psq += pi * pi;
            usq += u * u;
        }
    }
    let a = wg_sum(psq, li);
    let b = wg_sum(usq, li);
    if (li == 0u && segment_live(wg)) {
        let slot = segment_slot(wg);
        st_partials(slot, a);
        st_partials(p_groups() + slot, b);
    }
}
";

const LAMB_APPLY: &str = "
// The trust ratio exactly as the host's LambParams::trust_ratio computes it.
fn trust(p_sq: f32, u_sq: f32) -> f32 {
    let pn = sqrt(p_sq);
    let un = sqrt(u_sq);
    if (is_nan(pn) || is_nan(un)) {
        return nan();
    }
    if (pn == 0.0 || un == 0.0 || !is_finite(pn) || !is_finite(un)) {
        return 1.0;
    }
    return min(max(pn / un, p_min_coeff()), p_max_coeff());
}

fn kernel(gi: u32, wg: u32, li: u32) {
    let i = gi;
    if (i >= p_n()) { return; }
    let scale = p_step_size() * trust(ld_norms(0u), ld_norms(1u));
    let pi = ld_p(i);
    let u = ld_m(i) / (sqrt(ld_v(i)) + p_eps()) + p_wd() * pi;
    let pn = pi - scale * u;
    st_p(i, pn);
    st_copy(i, pn);
}
";

impl WgpuBackend {
    /// The optional weight copy's binding.
    fn copy_bind<'a>(&self, copy: &'a Option<SliceMut<'_, WgpuBuffer>>) -> Bind<'a> {
        match copy {
            Some(c) => Bind::write("copy", c, self.store(c.dtype())),
            None => Bind::absent("copy"),
        }
    }
}

impl OptimizerKernels for WgpuBackend {
    fn adam_step(&self, hp: &AdamParams, a: AdamArgs<'_, WgpuBuffer>, _: Validated) -> Result<()> {
        let s = hp.scalars();
        self.run(Launch {
            name: "adam_step",
            body: ADAM,
            binds: vec![
                Bind::write("p", &a.param, Store::F32),
                Bind::read("g", &a.grad, self.store(a.grad.dtype())),
                Bind::write("m", &a.exp_avg, Store::F32),
                Bind::write("v", &a.exp_avg_sq, Store::F32),
                self.copy_bind(&a.param_copy),
            ],
            params: vec![
                ("b1", Param::F(hp.beta1)),
                ("c1", Param::F(1.0 - hp.beta1)),
                ("b2", Param::F(hp.beta2)),
                ("c2", Param::F(1.0 - hp.beta2)),
                ("eps", Param::F(hp.eps)),
                ("step_size", Param::F(s.step_size)),
                ("inv_sqrt_bc2", Param::F(s.inv_sqrt_bc2)),
                ("decay", Param::F(s.decay_factor)),
                ("l2", Param::F(s.l2)),
                ("gs", Param::F(hp.grad_scale)),
            ],
            grid: Grid::Each(a.param.len()),
        })
    }

    fn sgd_step(&self, hp: &SgdParams, a: SgdArgs<'_, WgpuBuffer>, _: Validated) -> Result<()> {
        let buf = match (&a.momentum, hp.momentum > 0.0) {
            (Some(b), true) => Bind::write("buf", b, Store::F32),
            _ => Bind::absent("buf"),
        };
        self.run(Launch {
            name: "sgd_step",
            body: SGD,
            binds: vec![
                Bind::write("p", &a.param, Store::F32),
                Bind::read("g", &a.grad, self.store(a.grad.dtype())),
                buf,
                self.copy_bind(&a.param_copy),
            ],
            params: vec![
                ("lr", Param::F(hp.lr)),
                ("mu", Param::F(hp.momentum)),
                ("keep", Param::F(1.0 - hp.dampening)),
                ("wd", Param::F(hp.weight_decay)),
                ("nesterov", Param::U(u32::from(hp.nesterov))),
                ("first", Param::U(u32::from(hp.step == 1))),
                ("gs", Param::F(hp.grad_scale)),
            ],
            grid: Grid::Each(a.param.len()),
        })
    }

    fn adagrad_step(
        &self,
        hp: &AdagradParams,
        a: AdagradArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        self.run(Launch {
            name: "adagrad_step",
            body: ADAGRAD,
            binds: vec![
                Bind::write("p", &a.param, Store::F32),
                Bind::read("g", &a.grad, self.store(a.grad.dtype())),
                Bind::write("v", &a.exp_avg_sq, Store::F32),
                self.copy_bind(&a.param_copy),
            ],
            params: vec![
                ("lr", Param::F(hp.lr)),
                ("eps", Param::F(hp.eps)),
                ("wd", Param::F(hp.weight_decay)),
                ("gs", Param::F(hp.grad_scale)),
            ],
            grid: Grid::Each(a.param.len()),
        })
    }

    fn lion_step(&self, hp: &LionParams, a: LionArgs<'_, WgpuBuffer>, _: Validated) -> Result<()> {
        self.run(Launch {
            name: "lion_step",
            body: LION,
            binds: vec![
                Bind::write("p", &a.param, Store::F32),
                Bind::read("g", &a.grad, self.store(a.grad.dtype())),
                Bind::write("m", &a.exp_avg, Store::F32),
                self.copy_bind(&a.param_copy),
            ],
            params: vec![
                ("lr", Param::F(hp.lr)),
                ("b1", Param::F(hp.beta1)),
                ("c1", Param::F(1.0 - hp.beta1)),
                ("b2", Param::F(hp.beta2)),
                ("c2", Param::F(1.0 - hp.beta2)),
                ("decay", Param::F(hp.decay_factor())),
                ("gs", Param::F(hp.grad_scale)),
            ],
            grid: Grid::Each(a.param.len()),
        })
    }

    fn lamb_moments(
        &self,
        hp: &LambParams,
        a: LambMomentArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        let n = a.param.len();
        let groups = n.div_ceil(SEGMENT).max(1);
        let partials = self.scratch(2 * groups)?;
        self.run(Launch {
            name: "lamb_moments",
            body: LAMB_MOMENTS,
            binds: vec![
                Bind::read("p", &a.param, Store::F32),
                Bind::read("g", &a.grad, self.store(a.grad.dtype())),
                Bind::write("m", &a.exp_avg, Store::F32),
                Bind::write("v", &a.exp_avg_sq, Store::F32),
                Bind::scratch("partials", &partials),
            ],
            params: vec![
                ("b1", Param::F(hp.beta1)),
                ("b2", Param::F(hp.beta2)),
                ("eps", Param::F(hp.eps)),
                ("wd", Param::F(hp.weight_decay)),
                ("gs", Param::F(hp.grad_scale)),
                ("groups", Param::U(u32_of(groups, "lamb_step", "param")?)),
            ],
            grid: Grid::Elements {
                n,
                per_group: SEGMENT,
            },
        })?;
        self.finish_sums(&partials, groups, 2, &a.norms)
    }

    fn lamb_apply(
        &self,
        hp: &LambParams,
        a: LambApplyArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        self.run(Launch {
            name: "lamb_apply",
            body: LAMB_APPLY,
            binds: vec![
                Bind::write("p", &a.param, Store::F32),
                Bind::read("m", &a.exp_avg, Store::F32),
                Bind::read("v", &a.exp_avg_sq, Store::F32),
                Bind::read("norms", &a.norms, Store::F32).whole(),
                self.copy_bind(&a.param_copy),
            ],
            params: vec![
                ("eps", Param::F(hp.eps)),
                ("wd", Param::F(hp.weight_decay)),
                ("step_size", Param::F(hp.step_size())),
                ("min_coeff", Param::F(hp.min_coeff)),
                ("max_coeff", Param::F(hp.max_coeff)),
            ],
            grid: Grid::Each(a.param.len()),
        })
    }
}
