//! Causal multi-head self-attention with GPT-2's projections.
//!
//! The attention kernel takes q, k and v token-major (`[tokens, heads * head_dim]`, every head
//! of a token in one row), which is what `x W` produces: each projection is one GEMM over all
//! tokens and heads (`qkv.weight: [3, dim, dim]`, q, k and v in turn, each `dim_in x dim_out`
//! with the heads side by side in its columns; `proj.weight: [dim, dim]`). The function computed
//! is GPT-2's: `qkv = x W + b`, split into heads, causal softmax attention, `y = o W_o + b_o`.

use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::kernels::{AttentionArgs, AttentionBackwardArgs, View};
use ds_core::params::{AttentionShape, GemmSpec, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Result};
use ds_model::{GradSink, Params};

/// Causal self-attention over `dim` features in `heads` heads.
#[derive(Debug, Clone, Copy)]
pub struct CausalSelfAttention {
    /// `[3, dim, dim]`: the q, k and v projections (`y = x W`).
    pub qkv_weight: usize,
    /// `[3, dim]`.
    pub qkv_bias: usize,
    /// `[dim, dim]`: the output projection.
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
        CausalSelfAttention {
            qkv_weight: reg.add(
                format!("{name}.qkv.weight"),
                &[3, dim, dim],
                Init::Normal(0.02),
            ),
            qkv_bias: reg.add(format!("{name}.qkv.bias"), &[3, dim], Init::Zeros),
            proj_weight: reg.add(
                format!("{name}.proj.weight"),
                &[dim, dim],
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
            dev.alloc_for_overwrite(dtype, n * c)?,
            dev.alloc_for_overwrite(dtype, n * c)?,
            dev.alloc_for_overwrite(dtype, n * c)?,
        ];
        for (s, out) in qkv.iter_mut().enumerate() {
            // q, k or v = x W[s] + b[s].
            crate::profile::gemm(
                dev,
                &GemmSpec::new(n, c, c),
                x,
                w.sub(s * c * c..(s + 1) * c * c),
                out.all_mut(),
            )?;
            profile::timed(dev, Part::Bias, || {
                dev.bias_add(
                    Shape2::new(n, c),
                    out.all_mut(),
                    bias.sub(s * c..(s + 1) * c),
                )
            })?;
        }
        let [q, k, v] = qkv;
        let shape = AttentionShape::new(t.batch, h, t.seq, hd);
        let mut o = dev.alloc_for_overwrite(dtype, n * c)?;
        let mut lse = dev.alloc_for_overwrite(DType::F32, shape.lse_len())?;
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
        let mut y = dev.alloc_for_overwrite(dtype, n * c)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(n, c, c),
            o.all(),
            params.get(self.proj_weight)?,
            y.all_mut(),
        )?;
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
        profile::timed(dev, Part::Bias, || {
            dev.bias_grad(Shape2::new(n, c), dy, grads.grad(self.proj_bias)?, true)
        })?;
        grads.done(self.proj_bias)?;
        // dW_o += o^T dy.
        crate::profile::gemm(
            dev,
            &GemmSpec::new(c, c, n)
                .transpose(true, false)
                .scaled(1.0, 1.0),
            saved.o.all(),
            dy,
            grads.grad(self.proj_weight)?,
        )?;
        grads.done(self.proj_weight)?;
        // do = dy W_o^T.
        let mut d_o = dev.alloc_for_overwrite(dtype, n * c)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(n, c, c).transpose(false, true),
            dy,
            params.get(self.proj_weight)?,
            d_o.all_mut(),
        )?;
        let shape = AttentionShape::new(t.batch, h, t.seq, hd);
        let mut dqkv = [
            dev.alloc_for_overwrite(dtype, n * c)?,
            dev.alloc_for_overwrite(dtype, n * c)?,
            dev.alloc_for_overwrite(dtype, n * c)?,
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
        for (s, d) in dqkv.iter().enumerate() {
            profile::timed(dev, Part::Bias, || {
                dev.bias_grad(
                    Shape2::new(n, c),
                    d.all(),
                    grads.grad(self.qkv_bias)?.sub(s * c..(s + 1) * c),
                    true,
                )
            })?;
        }
        grads.done(self.qkv_bias)?;
        for (s, d) in dqkv.iter().enumerate() {
            // dW[s] += x^T d.
            crate::profile::gemm(
                dev,
                &GemmSpec::new(c, c, n)
                    .transpose(true, false)
                    .scaled(1.0, 1.0),
                x,
                d.all(),
                grads.grad(self.qkv_weight)?.sub(s * c * c..(s + 1) * c * c),
            )?;
        }
        grads.done(self.qkv_weight)?;
        let w = params.get(self.qkv_weight)?;
        let mut dx = dev.alloc_for_overwrite(dtype, n * c)?;
        for (s, d) in dqkv.iter().enumerate() {
            // dx (+)= d W[s]^T.
            crate::profile::gemm(
                dev,
                &GemmSpec::new(n, c, c)
                    .transpose(false, true)
                    .scaled(1.0, if s == 0 { 0.0 } else { 1.0 }),
                d.all(),
                w.sub(s * c * c..(s + 1) * c * c),
                dx.all_mut(),
            )?;
        }
        Ok(dx)
    }
}
