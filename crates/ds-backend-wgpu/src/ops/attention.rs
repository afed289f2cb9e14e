//! Causal softmax attention on token-major `[b, s, h, d]` tensors (rows numbered in the
//! log-sum-exp's `[b, h, s]` order, `tok` finding each row) in the memory-lean form: the forward saves
//! the per-query log-sum-exp, the backward recomputes probabilities from it. One workgroup per
//! row; scores are handled in tiles of 256 keys held in workgroup memory, so any sequence
//! length works; each invocation accumulates up to four output columns (head_dim <= 1024).

use crate::buffer::WgpuBuffer;
use crate::context::WgpuBackend;
use crate::launch::{Bind, Grid, Launch, Param, u32_of};
use crate::shader::{Store, WG};
use ds_core::kernels::{AttentionArgs, AttentionBackwardArgs};
use ds_core::params::AttentionShape;
use ds_core::{Error, Result};
use std::sync::OnceLock;

/// Rows of an attention launch and its shape parameters.
type Setup = (usize, Vec<(&'static str, Param)>);

/// Columns each invocation accumulates.
const COLS_PER_INVOCATION: usize = 4;

/// Offset of row `row` (numbered `(b * h + head) * s + i`) in the token-major tensors.
const TOK: &str = "
fn tok(row: u32) -> u32 {
    let s = p_seq();
    let h = p_heads();
    let bh = row / s;
    return (((bh / h) * s + row % s) * h + bh % h) * p_dim();
}
";

const DOT_QK: &str = "
var<workgroup> tile: array<f32, WG>;
var<workgroup> tile2: array<f32, WG>;

fn dot_qk(a: u32, b: u32, d: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < d; c++) {
        s += ld_q(a + c) * ld_k(b + c);
    }
    return s;
}
";

const DOT_DV: &str = "
fn dot_dv(a: u32, b: u32, d: u32) -> f32 {
    var s = 0.0;
    for (var c = 0u; c < d; c++) {
        s += ld_dout(a + c) * ld_v(b + c);
    }
    return s;
}
";

const FORWARD: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let s = p_seq();
    let d = p_dim();
    let scale = p_scale();
    let bh = wg / s;
    let i = wg % s;
    let qrow = tok(wg);
    var m = neg_inf();
    for (var j = li; j <= i; j += WG) {
        m = max_nan(m, scale * dot_qk(qrow, tok(bh * s + j), d));
    }
    m = wg_max(m, li);
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var total = 0.0;
    for (var j0 = 0u; j0 <= i; j0 += WG) {
        let j = j0 + li;
        var pj = 0.0;
        if (j <= i) {
            pj = exp(scale * dot_qk(qrow, tok(bh * s + j), d) - m);
        }
        tile[li] = pj;
        total += pj;
        workgroupBarrier();
        let cnt = min(i - j0 + 1u, WG);
        for (var q = 0u; q < 4u; q++) {
            let c = li + q * WG;
            if (c < d) {
                var a = acc[q];
                for (var t = 0u; t < cnt; t++) {
                    a += tile[t] * ld_v(tok(bh * s + j0 + t) + c);
                }
                acc[q] = a;
            }
        }
        workgroupBarrier();
    }
    total = wg_sum(total, li);
    for (var q = 0u; q < 4u; q++) {
        let c = li + q * WG;
        if (c < d) {
            st_out(qrow + c, acc[q] / total);
        }
    }
    if (li == 0u) {
        st_lse(wg, m + log(total));
    }
}
";

/// delta[row] = dout_row . out_row
const DELTA: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let d = p_dim();
    let row = tok(wg);
    var s = 0.0;
    for (var c = li; c < d; c += WG) {
        s += ld_out(row + c) * ld_dout(row + c);
    }
    s = wg_sum(s, li);
    if (li == 0u) {
        st_delta(wg, s);
    }
}
";

/// dq: one workgroup per query row i, tiles over keys j <= i.
const DQ: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let s = p_seq();
    let d = p_dim();
    let scale = p_scale();
    let bh = wg / s;
    let i = wg % s;
    let qrow = tok(wg);
    let lse = ld_lse(wg);
    let delta = ld_delta(wg);
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var j0 = 0u; j0 <= i; j0 += WG) {
        let j = j0 + li;
        var dsj = 0.0;
        if (j <= i) {
            let p = exp(scale * dot_qk(qrow, tok(bh * s + j), d) - lse);
            dsj = p * (dot_dv(qrow, tok(bh * s + j), d) - delta);
        }
        tile[li] = dsj;
        workgroupBarrier();
        let cnt = min(i - j0 + 1u, WG);
        for (var q = 0u; q < 4u; q++) {
            let c = li + q * WG;
            if (c < d) {
                var a = acc[q];
                for (var t = 0u; t < cnt; t++) {
                    a += tile[t] * ld_k(tok(bh * s + j0 + t) + c);
                }
                acc[q] = a;
            }
        }
        workgroupBarrier();
    }
    for (var q = 0u; q < 4u; q++) {
        let c = li + q * WG;
        if (c < d) {
            st_dq(qrow + c, scale * acc[q]);
        }
    }
}
";

/// dk and dv: one workgroup per key row j, tiles over queries i >= j.
const DKV: &str = "
fn kernel(gi: u32, wg: u32, li: u32) {
    if (wg >= p_n()) { return; }
    let s = p_seq();
    let d = p_dim();
    let scale = p_scale();
    let bh = wg / s;
    let j = wg % s;
    let krow = tok(wg);
    var ak = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var av = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var i0 = j; i0 < s; i0 += WG) {
        let i = i0 + li;
        var p = 0.0;
        var dsv = 0.0;
        if (i < s) {
            let qr = bh * s + i;
            p = exp(scale * dot_qk(tok(qr), krow, d) - ld_lse(qr));
            dsv = p * (dot_dv(tok(qr), krow, d) - ld_delta(qr));
        }
        tile[li] = p;
        tile2[li] = dsv;
        workgroupBarrier();
        let cnt = min(s - i0, WG);
        for (var q = 0u; q < 4u; q++) {
            let c = li + q * WG;
            if (c < d) {
                var a = ak[q];
                var b = av[q];
                for (var t = 0u; t < cnt; t++) {
                    let row = tok(bh * s + i0 + t) + c;
                    a += tile2[t] * ld_q(row);
                    b += tile[t] * ld_dout(row);
                }
                ak[q] = a;
                av[q] = b;
            }
        }
        workgroupBarrier();
    }
    for (var q = 0u; q < 4u; q++) {
        let c = li + q * WG;
        if (c < d) {
            st_dk(krow + c, scale * ak[q]);
            st_dv(krow + c, av[q]);
        }
    }
}
";

static FORWARD_SRC: OnceLock<String> = OnceLock::new();
static DELTA_SRC: OnceLock<String> = OnceLock::new();
static DQ_SRC: OnceLock<String> = OnceLock::new();
static DKV_SRC: OnceLock<String> = OnceLock::new();

impl WgpuBackend {
    /// Rows and the shape parameters, or nothing to do.
    fn attention_setup(&self, sh: &AttentionShape, op: &'static str) -> Result<Option<Setup>> {
        let rows = sh.batch * sh.heads * sh.seq;
        if rows == 0 || sh.head_dim == 0 {
            return Ok(None);
        }
        if sh.head_dim > COLS_PER_INVOCATION * WG as usize {
            return Err(Error::invalid(
                op,
                "shape.head_dim",
                format!(
                    "{} exceeds the WGPU attention kernels' {} columns per head",
                    sh.head_dim,
                    COLS_PER_INVOCATION * WG as usize
                ),
            ));
        }
        Ok(Some((
            rows,
            vec![
                ("seq", Param::U(u32_of(sh.seq, op, "shape.seq")?)),
                ("heads", Param::U(u32_of(sh.heads, op, "shape.heads")?)),
                ("dim", Param::U(u32_of(sh.head_dim, op, "shape.head_dim")?)),
                ("scale", Param::F(sh.scale)),
            ],
        )))
    }

    pub(crate) fn attention_forward(
        &self,
        sh: &AttentionShape,
        a: AttentionArgs<'_, WgpuBuffer>,
    ) -> Result<()> {
        let Some((rows, params)) = self.attention_setup(sh, "attention")? else {
            return Ok(());
        };
        let s = self.store(a.q.dtype());
        self.run(Launch {
            name: "attention",
            body: FORWARD_SRC.get_or_init(|| [TOK, DOT_QK, FORWARD].concat()),
            binds: vec![
                Bind::read("q", &a.q, s),
                Bind::read("k", &a.k, s),
                Bind::read("v", &a.v, s),
                Bind::write("out", &a.out, s),
                Bind::write("lse", &a.lse, Store::F32),
            ],
            params,
            grid: Grid::Groups(rows),
        })
    }

    pub(crate) fn attention_grads(
        &self,
        sh: &AttentionShape,
        a: AttentionBackwardArgs<'_, WgpuBuffer>,
    ) -> Result<()> {
        let Some((rows, params)) = self.attention_setup(sh, "attention_backward")? else {
            return Ok(());
        };
        let s = self.store(a.q.dtype());
        let delta = self.scratch(rows)?;
        self.run(Launch {
            name: "attention_delta",
            body: DELTA_SRC.get_or_init(|| [TOK, DELTA].concat()),
            binds: vec![
                Bind::read("out", &a.out, s),
                Bind::read("dout", &a.dout, s),
                Bind::scratch("delta", &delta),
            ],
            params: params.clone(),
            grid: Grid::Groups(rows),
        })?;
        let delta_r = Bind::scratch("delta", &delta).read_only();
        self.run(Launch {
            name: "attention_dq",
            body: DQ_SRC.get_or_init(|| [TOK, DOT_QK, DOT_DV, DQ].concat()),
            binds: vec![
                Bind::read("q", &a.q, s),
                Bind::read("k", &a.k, s),
                Bind::read("v", &a.v, s),
                Bind::read("lse", &a.lse, Store::F32),
                delta_r,
                Bind::read("dout", &a.dout, s),
                Bind::write("dq", &a.dq, s),
            ],
            params: params.clone(),
            grid: Grid::Groups(rows),
        })?;
        self.run(Launch {
            name: "attention_dkv",
            body: DKV_SRC.get_or_init(|| [TOK, DOT_QK, DOT_DV, DKV].concat()),
            binds: vec![
                Bind::read("q", &a.q, s),
                Bind::read("k", &a.k, s),
                Bind::read("v", &a.v, s),
                Bind::read("lse", &a.lse, Store::F32),
                delta_r,
                Bind::read("dout", &a.dout, s),
                Bind::write("dk", &a.dk, s),
                Bind::write("dv", &a.dv, s),
            ],
            params,
            grid: Grid::Groups(rows),
        })
    }
}
