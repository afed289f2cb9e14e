//! Causal multi-head self-attention with GPT-2's projections.
//!
//! The attention kernel wants q, k and v as `[batch, heads, seq, head_dim]`; ds-core has no
//! transpose kernel, so the projection weights are stored per head instead
//! (`qkv.weight: [3, heads, dim, head_dim]`, `proj.weight: [heads, head_dim, dim]`) and
//! strided batched GEMMs write and read that layout directly. The function computed is
//! GPT-2's: `qkv = x W + b`, split into heads, causal softmax attention, `y = o W_o + b_o`.

use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::kernels::{AttentionArgs, AttentionBackwardArgs, View};
use ds_core::params::{AttentionShape, GemmSpec, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Result};
use ds_model::{GradSink, Params};

/// Causal self-attention over `dim` features in `heads` heads.
#[derive(Debug, Clone, Copy)]
pub struct CausalSelfAttention {
    /// `[3, heads, dim, head_dim]`: q, k, v projections per head.
    pub qkv_weight: usize,
    /// `[3, heads, head_dim]`.
    pub qkv_bias: usize,
    /// `[heads, head_dim, dim]`: the output projection per head.
    pub proj_weight: usize,
    /// `[dim]`.
    pub proj_bias: usize,
    /// Model width.
    pub dim: usize,
    /// Number of heads (`dim % heads == 0`).
    pub heads: usize,
}

/// What the forward keeps for the backward.
pub struct AttentionSaved<B: Backend> {
    q: B::Buffer,
    k: B::Buffer,
    v: B::Buffer,
    o: B::Buffer,
    lse: B::Buffer,
}

/// Batch and sequence length of one call.
#[derive(Debug, Clone, Copy)]
pub struct Tokens {
    /// Sequences.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
}

impl CausalSelfAttention {
    /// Registers the projections; `out_std` initializes the output projection (GPT-2 scales
    /// it by `1/sqrt(2 * layers)`).
    pub fn new(reg: &mut Registry, name: &str, dim: usize, heads: usize, out_std: f32) -> Self {
        let hd = dim / heads.max(1);
        CausalSelfAttention {
            qkv_weight: reg.add(
                format!("{name}.qkv.weight"),
                &[3, heads, dim, hd],
                Init::Normal(0.02),
            ),
            qkv_bias: reg.add(format!("{name}.qkv.bias"), &[3, heads, hd], Init::Zeros),
            proj_weight: reg.add(
                format!("{name}.proj.weight"),
                &[heads, hd, dim],
                Init::Normal(out_std),
            ),
            proj_bias: reg.add(format!("{name}.proj.bias"), &[dim], Init::Zeros),
            dim,
            heads,
        }
    }

    fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }

    /// `y = attention(x)` for `t.batch * t.seq` rows of `x`.
    ///
    /// # Errors
    /// Kernel and allocation errors.
    pub fn forward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        x: View<'_, B>,
        t: Tokens,
    ) -> Result<(B::Buffer, AttentionSaved<B>)> {
        let (c, h, hd, n) = (self.dim, self.heads, self.head_dim(), t.batch * t.seq);
        let dtype = x.dtype();
        let w = params.get(self.qkv_weight)?;
        let bias = params.get(self.qkv_bias)?;
        let mut qkv = [
            dev.alloc(dtype, n * c)?,
            dev.alloc(dtype, n * c)?,
            dev.alloc(dtype, n * c)?,
        ];
        let block = t.seq * hd;
        let mut ones = dev.alloc(dtype, t.seq)?;
        profile::timed(dev, Part::Elementwise, || dev.fill(ones.all_mut(), 1.0))?;
        for (s, out) in qkv.iter_mut().enumerate() {
            for head in 0..h {
                let wh = (s * h + head) * c * hd;
                // out[b, head] = x[b] W[s, head] for every sequence b.
                crate::profile::gemm(
                    dev,
                    &GemmSpec::new(t.seq, hd, c).strided(t.batch, t.seq * c, 0, h * block),
                    x,
                    w.sub(wh..wh + c * hd),
                    out.range_mut(head * block..n * c),
                )?;
                // out[b, head] += 1 · bias[s, head] (a k = 1 product broadcasts the bias
                // over the block's rows for every sequence in one call).
                let bh = (s * h + head) * hd;
                crate::profile::gemm(
                    dev,
                    &GemmSpec::new(t.seq, hd, 1)
                        .strided(t.batch, 0, 0, h * block)
                        .scaled(1.0, 1.0),
                    ones.all(),
                    bias.sub(bh..bh + hd),
                    out.range_mut(head * block..n * c),
                )?;
            }
        }
        let [q, k, v] = qkv;
        let shape = AttentionShape::new(t.batch, h, t.seq, hd);
        let mut o = dev.alloc(dtype, n * c)?;
        let mut lse = dev.alloc(DType::F32, shape.lse_len())?;
        crate::profile::attention(
            dev,
            &shape,
            AttentionArgs {
                q: q.all(),
                k: k.all(),
                v: v.all(),
                out: o.all_mut(),
                lse: lse.all_mut(),
            },
        )?;
        let wo = params.get(self.proj_weight)?;
        let mut y = dev.alloc(dtype, n * c)?;
        for head in 0..h {
            // y[b] (+)= o[b, head] W_o[head].
            crate::profile::gemm(
                dev,
                &GemmSpec::new(t.seq, c, hd)
                    .strided(t.batch, h * block, 0, t.seq * c)
                    .scaled(1.0, if head == 0 { 0.0 } else { 1.0 }),
                o.range(head * block..n * c),
                wo.sub(head * hd * c..(head + 1) * hd * c),
                y.all_mut(),
            )?;
        }
        profile::timed(dev, Part::Bias, || {
            dev.bias_add(Shape2::new(n, c), y.all_mut(), params.get(self.proj_bias)?)
        })?;
        Ok((y, AttentionSaved { q, k, v, o, lse }))
    }

    /// Accumulates all four parameter gradients (marking them done) and returns `dx`.
    ///
    /// # Errors
    /// Kernel, allocation and engine errors.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        saved: &AttentionSaved<B>,
        x: View<'_, B>,
        dy: View<'_, B>,
        t: Tokens,
    ) -> Result<B::Buffer> {
        let (c, h, hd, n) = (self.dim, self.heads, self.head_dim(), t.batch * t.seq);
        let dtype = dy.dtype();
        let block = t.seq * hd;
        let acc = |m, nn, k| GemmSpec::new(m, nn, k).scaled(1.0, 1.0);

        profile::timed(dev, Part::Bias, || {
            dev.bias_grad(Shape2::new(n, c), dy, grads.grad(self.proj_bias)?, true)
        })?;
        grads.done(self.proj_bias)?;
        for b in 0..t.batch {
            // dW_o[head] += o[b, head]^T dy[b] for every head in one call: the heads of
            // sequence b are consecutive in o and in dW_o.
            let at = b * h * block;
            crate::profile::gemm(
                dev,
                &acc(hd, c, t.seq)
                    .transpose(true, false)
                    .strided(h, block, 0, hd * c),
                saved.o.range(at..at + h * block),
                dy.sub(b * t.seq * c..(b + 1) * t.seq * c),
                grads.grad(self.proj_weight)?,
            )?;
        }
        grads.done(self.proj_weight)?;
        let wo = params.get(self.proj_weight)?;
        let mut d_o = dev.alloc(dtype, n * c)?;
        for head in 0..h {
            // do[b, head] = dy[b] W_o[head]^T.
            crate::profile::gemm(
                dev,
                &GemmSpec::new(t.seq, hd, c).transpose(false, true).strided(
                    t.batch,
                    t.seq * c,
                    0,
                    h * block,
                ),
                dy,
                wo.sub(head * hd * c..(head + 1) * hd * c),
                d_o.range_mut(head * block..n * c),
            )?;
        }
        let shape = AttentionShape::new(t.batch, h, t.seq, hd);
        let mut dqkv = [
            dev.alloc(dtype, n * c)?,
            dev.alloc(dtype, n * c)?,
            dev.alloc(dtype, n * c)?,
        ];
        {
            let [dq, dk, dv] = &mut dqkv;
            crate::profile::attention_backward(
                dev,
                &shape,
                AttentionBackwardArgs {
                    q: saved.q.all(),
                    k: saved.k.all(),
                    v: saved.v.all(),
                    out: saved.o.all(),
                    lse: saved.lse.all(),
                    dout: d_o.all(),
                    dq: dq.all_mut(),
                    dk: dk.all_mut(),
                    dv: dv.all_mut(),
                },
            )?;
        }
        // dbias[s, head] = sum over sequences and positions of d[b, head]: first over the
        // sequences (rows of d seen as batch x (heads·seq·head_dim)), then over positions.
        let mut per_head = dev.alloc(dtype, h * block)?;
        for (s, d) in dqkv.iter().enumerate() {
            profile::timed(dev, Part::Bias, || {
                dev.bias_grad(
                    Shape2::new(t.batch, h * block),
                    d.all(),
                    per_head.all_mut(),
                    false,
                )
            })?;
            for head in 0..h {
                let bh = (s * h + head) * hd;
                profile::timed(dev, Part::Bias, || {
                    dev.bias_grad(
                        Shape2::new(t.seq, hd),
                        per_head.range(head * block..(head + 1) * block),
                        grads.grad(self.qkv_bias)?.sub(bh..bh + hd),
                        true,
                    )
                })?;
            }
        }
        grads.done(self.qkv_bias)?;
        for (s, d) in dqkv.iter().enumerate() {
            let ws = s * h * c * hd;
            for b in 0..t.batch {
                // dW[s, head] += x[b]^T d[b, head] for every head in one call.
                let at = b * h * block;
                crate::profile::gemm(
                    dev,
                    &acc(c, hd, t.seq)
                        .transpose(true, false)
                        .strided(h, 0, block, c * hd),
                    x.sub(b * t.seq * c..(b + 1) * t.seq * c),
                    d.range(at..at + h * block),
                    grads.grad(self.qkv_weight)?.sub(ws..ws + h * c * hd),
                )?;
            }
        }
        grads.done(self.qkv_weight)?;
        let w = params.get(self.qkv_weight)?;
        let mut dx = dev.alloc(dtype, n * c)?;
        for (s, d) in dqkv.iter().enumerate() {
            for head in 0..h {
                // dx[b] (+)= d[b, head] W[s, head]^T.
                let wh = (s * h + head) * c * hd;
                let first = s == 0 && head == 0;
                crate::profile::gemm(
                    dev,
                    &GemmSpec::new(t.seq, c, hd)
                        .transpose(false, true)
                        .strided(t.batch, h * block, 0, t.seq * c)
                        .scaled(1.0, if first { 0.0 } else { 1.0 }),
                    d.range(head * block..n * c),
                    w.sub(wh..wh + c * hd),
                    dx.all_mut(),
                )?;
            }
        }
        Ok(dx)
    }
}
