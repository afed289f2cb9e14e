//! Bias, GELU, ReLU, LayerNorm, softmax cross-entropy and embeddings.
//!
//! Row kernels run one workgroup per row; column sums (bias and LayerNorm parameter
//! gradients) run one invocation per column walking the rows in order, so every sum is
//! deterministic. The embedding gradient groups positions by id on the host (as the CUDA
//! backend does) and sums each id's rows in position order.

use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use crate::shader::Store;
use ds_core::id_groups::IdGroups;
use ds_core::kernels::{
    AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs, NnKernels,
    Validated, View, ViewMut,
};
use ds_core::params::{AttentionShape, Shape2};
use ds_core::{BufferExt, DType, Device, Result};
use std::sync::OnceLock;

const BIAS_ADD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let col = (p_base() + gi) % p_cols();
    st_x(gi, ld_x(gi) + ld_bias(col));
}
";

const BIAS_GRAD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let c = gi;
    if (c >= p_n()) { return; }
    var s = 0.0;
    for (var r = 0u; r < p_rows(); r++) {
        s += ld_dy(r * p_n() + c);
    }
    if (p_acc() != 0u) {
        s = ld_db(c) + s;
    }
    st_db(c, s);
}
";

/// GELU (tanh form) written with the logistic function: 0.5 (1 + tanh(u)) = 1 / (1 + e^-2u),
/// which needs no tanh (imprecise or overflowing in some drivers) and keeps full relative
/// precision where 1 + tanh(u) is tiny.
const GELU_COMMON: &str = "
// (s, 1 - s) for s = 0.5 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
fn gelu_parts(x: f32) -> vec2<f32> {
    let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
    let e = exp(-2.0 * u);
    if (is_nan(e)) {
        return vec2<f32>(e, e);
    }
    if (!is_finite(e)) {
        return vec2<f32>(0.0, 1.0);
    }
    let s = 1.0 / (1.0 + e);
    return vec2<f32>(s, e * s);
}
";

const GELU: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let x = ld_x(gi);
    st_y(gi, x * gelu_parts(x).x);
}
";

const GELU_BACKWARD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let x = ld_x(gi);
    let sp = gelu_parts(x);
    // 1 - tanh(u)^2 = 4 s (1 - s); saturated: the limit, not 0 * inf.
    let sech2 = 4.0 * sp.x * sp.y;
    var slope = 0.0;
    if (sech2 != 0.0) {
        slope = 0.5 * x * sech2 * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
    }
    st_dx(gi, ld_dy(gi) * (sp.x + slope));
}
";

const RELU: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let v = ld_x(gi);
    // NaN kept, -0 to +0.
    if (is_nan(v) || v > 0.0) {
        st_y(gi, v);
    } else {
        st_y(gi, 0.0);
    }
}
";

const RELU_BACKWARD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    if (ld_x(gi) > 0.0) {
        st_dx(gi, ld_dy(gi));
    } else {
        st_dx(gi, 0.0);
    }
}
";

const LAYER_NORM: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let cols = p_cols();
    let base = wg * cols;
    var s = 0.0;
    for (var c = li; c < cols; c += WG) {
        s += ld_x(base + c);
    }
    let mu = wg_sum(s, li) / f32(cols);
    var q = 0.0;
    for (var c = li; c < cols; c += WG) {
        let d = ld_x(base + c) - mu;
        q += d * d;
    }
    let var_ = wg_sum(q, li) / f32(cols);
    let rs = 1.0 / sqrt(var_ + p_eps());
    for (var c = li; c < cols; c += WG) {
        st_y(base + c, (ld_x(base + c) - mu) * rs * ld_gamma(c) + ld_beta(c));
    }
    if (li == 0u) {
        st_mean(wg, mu);
        st_rstd(wg, rs);
    }
}
";

const LAYER_NORM_DX: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let cols = p_cols();
    let base = wg * cols;
    let mu = ld_mean(wg);
    let rs = ld_rstd(wg);
    var a = 0.0;
    var b = 0.0;
    for (var c = li; c < cols; c += WG) {
        let xh = (ld_x(base + c) - mu) * rs;
        let g = ld_dy(base + c) * ld_gamma(c);
        a += g;
        b += g * xh;
    }
    let c1 = wg_sum(a, li) / f32(cols);
    let c2 = wg_sum(b, li) / f32(cols);
    for (var c = li; c < cols; c += WG) {
        let xh = (ld_x(base + c) - mu) * rs;
        let g = ld_dy(base + c) * ld_gamma(c);
        st_dx(base + c, rs * (g - c1 - xh * c2));
    }
}
";

const LAYER_NORM_DPARAMS: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    let c = gi;
    if (c >= p_n()) { return; }
    let cols = p_n();
    var sg = 0.0;
    var sb = 0.0;
    for (var r = 0u; r < p_rows(); r++) {
        let d = ld_dy(r * cols + c);
        sg += d * ((ld_x(r * cols + c) - ld_mean(r)) * ld_rstd(r));
        sb += d;
    }
    if (p_acc() != 0u) {
        sg = ld_dgamma(c) + sg;
        sb = ld_dbeta(c) + sb;
    }
    st_dgamma(c, sg);
    st_dbeta(c, sb);
}
";

/// The log-sum-exp of row `wg` of the logits, computed by the whole workgroup.
const ROW_LSE: &str = "
fn row_lse(base: u32, classes: u32, li: u32) -> f32 {
    var m = neg_inf();
    for (var c = li; c < classes; c += WG) {
        m = max_nan(m, ld_logits(base + c));
    }
    m = wg_max(m, li);
    var s = 0.0;
    for (var c = li; c < classes; c += WG) {
        s += exp(ld_logits(base + c) - m);
    }
    s = wg_sum(s, li);
    return m + log(s);
}

// The class of a valid label, -1 for an ignored row, -2 for an invalid label.
fn xent_class(label: i32, classes: u32) -> i32 {
    if (label == p_ignore()) {
        return -1;
    }
    if (label < 0 || u32(label) >= classes) {
        return -2;
    }
    return label;
}
";

const XENT: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let classes = p_cols();
    let base = wg * classes;
    let lse = row_lse(base, classes, li);
    if (li == 0u) {
        let cls = xent_class(ldi_labels(wg), classes);
        if (cls == -1) {
            st_losses(wg, 0.0);
        } else if (cls == -2) {
            st_losses(wg, nan());
        } else {
            st_losses(wg, lse - ld_logits(base + u32(cls)));
        }
    }
}
";

const XENT_BACKWARD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let classes = p_cols();
    let base = wg * classes;
    let lse = row_lse(base, classes, li);
    let cls = xent_class(ldi_labels(wg), classes);
    let scale = p_scale();
    for (var c = li; c < classes; c += WG) {
        if (cls == -1) {
            st_dlogits(base + c, 0.0);
        } else if (cls == -2) {
            st_dlogits(base + c, nan());
        } else {
            let p = exp(ld_logits(base + c) - lse) * scale;
            if (i32(c) == cls) {
                st_dlogits(base + c, p - scale);
            } else {
                st_dlogits(base + c, p);
            }
        }
    }
}
";

const EMBEDDING: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let t = gi / p_dim();
    let c = gi % p_dim();
    let id = ldi_ids(t);
    if (id >= 0 && u32(id) < p_vocab()) {
        st_out(gi, ld_table(u32(id) * p_dim() + c));
    } else {
        st_out(gi, nan());
    }
}
";

/// One invocation per (distinct id, column): the id's rows of dout in position order.
const EMBEDDING_BACKWARD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (gi >= p_n()) { return; }
    let k = gi / p_dim();
    let c = gi % p_dim();
    var s = 0.0;
    for (var j = u32(ldi_starts(k)); j < u32(ldi_starts(k + 1u)); j++) {
        s += ld_dout(u32(ldi_order(j)) * p_dim() + c);
    }
    let di = u32(ldi_uids(k)) * p_dim() + c;
    st_dtable(di, ld_dtable(di) + s);
}
";

/// Shared helpers and kernel bodies, concatenated once.
static GELU_SRC: OnceLock<String> = OnceLock::new();
static GELU_BACKWARD_SRC: OnceLock<String> = OnceLock::new();
static XENT_SRC: OnceLock<String> = OnceLock::new();
static XENT_BACKWARD_SRC: OnceLock<String> = OnceLock::new();

impl WgpuBackend {
    /// A kernel over `x -> y` elementwise with one input and one output of the same dtype.
    fn unary(
        &self,
        name: &'static str,
        body: &'static str,
        x: View<'_, Self>,
        y: ViewMut<'_, Self>,
    ) -> Result<()> {
        let s = self.store(x.dtype());
        self.run(Launch {
            name,
            body,
            binds: vec![Bind::read("x", &x, s), Bind::write("y", &y, s)],
            params: vec![],
            grid: Grid::Each(x.len()),
        })
    }

    /// A gradient kernel `(x, dy) -> dx`.
    fn unary_backward(
        &self,
        name: &'static str,
        body: &'static str,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
    ) -> Result<()> {
        let s = self.store(x.dtype());
        self.run(Launch {
            name,
            body,
            binds: vec![
                Bind::read("x", &x, s),
                Bind::read("dy", &dy, s),
                Bind::write("dx", &dx, s),
            ],
            params: vec![],
            grid: Grid::Each(x.len()),
        })
    }

    /// Uploads u32 indices as an i32 buffer (values below 2^31: positions and ids).
    fn index_buffer(&self, dev: &Device<Self>, v: &[u32]) -> Result<WgpuBuffer> {
        let mut b = dev.alloc(DType::I32, v.len())?;
        let ints: Vec<i32> = v.iter().map(|&x| x as i32).collect();
        dev.upload(&ints, b.all_mut())?;
        Ok(b)
    }
}

impl NnKernels for WgpuBackend {
    fn bias_add(
        &self,
        shape: Shape2,
        x: ViewMut<'_, Self>,
        bias: View<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        if shape.cols == 0 {
            return Ok(());
        }
        let s = self.store(x.dtype());
        self.run(Launch {
            name: "bias_add",
            body: BIAS_ADD,
            binds: vec![
                Bind::write("x", &x, s),
                Bind::read("bias", &bias, s).whole(),
            ],
            params: vec![("cols", Param::U(u32_of(shape.cols, "bias_add", "shape")?))],
            grid: Grid::Each(x.len()),
        })
    }

    fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, Self>,
        db: ViewMut<'_, Self>,
        accumulate: bool,
        _: Validated,
    ) -> Result<()> {
        let s = self.store(dy.dtype());
        self.run(Launch {
            name: "bias_grad",
            body: BIAS_GRAD,
            binds: vec![
                Bind::read("dy", &dy, s).whole(),
                Bind::write("db", &db, s).whole(),
            ],
            params: vec![
                ("rows", Param::U(u32_of(shape.rows, "bias_grad", "shape")?)),
                ("acc", Param::U(u32::from(accumulate))),
            ],
            grid: Grid::Each(shape.cols),
        })
    }

    fn gelu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.unary(
            "gelu",
            GELU_SRC.get_or_init(|| [GELU_COMMON, GELU].concat()),
            x,
            y,
        )
    }

    fn gelu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let body = GELU_BACKWARD_SRC.get_or_init(|| [GELU_COMMON, GELU_BACKWARD].concat());
        self.unary_backward("gelu_backward", body, x, dy, dx)
    }

    fn relu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        self.unary("relu", RELU, x, y)
    }

    fn relu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.unary_backward("relu_backward", RELU_BACKWARD, x, dy, dx)
    }

    fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        a: LayerNormArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        let s = self.store(a.x.dtype());
        self.run(Launch {
            name: "layer_norm",
            body: LAYER_NORM,
            binds: vec![
                Bind::read("x", &a.x, s),
                Bind::read("gamma", &a.gamma, s),
                Bind::read("beta", &a.beta, s),
                Bind::write("y", &a.y, s),
                Bind::write("mean", &a.mean, Store::F32),
                Bind::write("rstd", &a.rstd, Store::F32),
            ],
            params: vec![
                ("cols", Param::U(u32_of(shape.cols, "layer_norm", "shape")?)),
                ("eps", Param::F(eps)),
            ],
            grid: Grid::Groups(shape.rows),
        })
    }

    fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        a: LayerNormBackwardArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        let s = self.store(a.x.dtype());
        self.run(Launch {
            name: "layer_norm_dx",
            body: LAYER_NORM_DX,
            binds: vec![
                Bind::read("x", &a.x, s),
                Bind::read("gamma", &a.gamma, s),
                Bind::read("mean", &a.mean, Store::F32),
                Bind::read("rstd", &a.rstd, Store::F32),
                Bind::read("dy", &a.dy, s),
                Bind::write("dx", &a.dx, s),
            ],
            params: vec![(
                "cols",
                Param::U(u32_of(shape.cols, "layer_norm_backward", "shape")?),
            )],
            grid: Grid::Groups(shape.rows),
        })?;
        self.run(Launch {
            name: "layer_norm_dparams",
            body: LAYER_NORM_DPARAMS,
            binds: vec![
                Bind::read("x", &a.x, s).whole(),
                Bind::read("mean", &a.mean, Store::F32).whole(),
                Bind::read("rstd", &a.rstd, Store::F32).whole(),
                Bind::read("dy", &a.dy, s).whole(),
                Bind::write("dgamma", &a.dgamma, s).whole(),
                Bind::write("dbeta", &a.dbeta, s).whole(),
            ],
            params: vec![
                (
                    "rows",
                    Param::U(u32_of(shape.rows, "layer_norm_backward", "shape")?),
                ),
                ("acc", Param::U(u32::from(accumulate))),
            ],
            grid: Grid::Each(shape.cols),
        })
    }

    fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        losses: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        self.run(Launch {
            name: "softmax_cross_entropy",
            body: XENT_SRC.get_or_init(|| [ROW_LSE, XENT].concat()),
            binds: vec![
                Bind::read("logits", &logits, self.store(logits.dtype())),
                Bind::read("labels", &labels, Store::I32),
                Bind::write("losses", &losses, self.store(losses.dtype())),
            ],
            params: vec![
                (
                    "cols",
                    Param::U(u32_of(shape.cols, "softmax_cross_entropy", "shape")?),
                ),
                ("ignore", Param::I(ignore_index)),
            ],
            grid: Grid::Groups(shape.rows),
        })
    }

    fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        dlogits: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let s = self.store(logits.dtype());
        self.run(Launch {
            name: "softmax_cross_entropy_backward",
            body: XENT_BACKWARD_SRC.get_or_init(|| [ROW_LSE, XENT_BACKWARD].concat()),
            binds: vec![
                Bind::read("logits", &logits, s),
                Bind::read("labels", &labels, Store::I32),
                Bind::write("dlogits", &dlogits, s),
            ],
            params: vec![
                (
                    "cols",
                    Param::U(u32_of(
                        shape.cols,
                        "softmax_cross_entropy_backward",
                        "shape",
                    )?),
                ),
                ("ignore", Param::I(ignore_index)),
                ("scale", Param::F(scale)),
            ],
            grid: Grid::Groups(shape.rows),
        })
    }

    fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, Self>,
        table: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        if shape.cols == 0 {
            return Ok(());
        }
        let s = self.store(table.dtype());
        self.run(Launch {
            name: "embedding",
            body: EMBEDDING,
            binds: vec![
                Bind::read("ids", &ids, Store::I32).whole(),
                Bind::read("table", &table, s).whole(),
                Bind::write("out", &out, s).whole(),
            ],
            params: vec![
                ("dim", Param::U(u32_of(shape.cols, "embedding", "shape")?)),
                ("vocab", Param::U(u32_of(shape.rows, "embedding", "shape")?)),
            ],
            grid: Grid::Each(out.len()),
        })
    }

    fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        mut dtable: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let dev = Device::new(self.clone());
        let host_ids: Vec<i32> = dev.to_vec(ids)?;
        let groups = IdGroups::new(&host_ids, shape.rows);
        if !accumulate {
            dev.fill(dtable.reborrow(), 0.0)?;
        }
        if groups.ids.is_empty() || shape.cols == 0 {
            return Ok(());
        }
        let (pos_b, start_b, uid_b) = (
            self.index_buffer(&dev, &groups.positions)?,
            self.index_buffer(&dev, &groups.starts)?,
            self.index_buffer(&dev, &groups.ids)?,
        );
        let s = self.store(dout.dtype());
        self.run(Launch {
            name: "embedding_backward",
            body: EMBEDDING_BACKWARD,
            binds: vec![
                Bind::read("order", &pos_b.all(), Store::I32).whole(),
                Bind::read("starts", &start_b.all(), Store::I32).whole(),
                Bind::read("uids", &uid_b.all(), Store::I32).whole(),
                Bind::read("dout", &dout, s).whole(),
                Bind::write("dtable", &dtable, s).whole(),
            ],
            params: vec![(
                "dim",
                Param::U(u32_of(shape.cols, "embedding_backward", "shape")?),
            )],
            grid: Grid::Each(groups.ids.len() * shape.cols),
        })
    }

    fn attention(
        &self,
        sh: &AttentionShape,
        args: AttentionArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        self.attention_forward(sh, args)
    }

    fn attention_backward(
        &self,
        sh: &AttentionShape,
        args: AttentionBackwardArgs<'_, WgpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        self.attention_grads(sh, args)
    }
}
