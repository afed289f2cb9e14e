//! A GPT: GPT-2's pre-norm decoder-only transformer.
//!
//! Token and position embeddings, `layers` blocks of `x + attn(ln1(x))` then
//! `x + proj(gelu(fc(ln2(x))))` with a 4x MLP, a final LayerNorm, and an output head tied to
//! the token embedding (logits = h · wteᵀ). Initialization follows GPT-2: normal(0.02), the
//! projections into the residual stream scaled by `1/sqrt(2 * layers)`. With activation
//! checkpointing ([`Gpt::set_checkpointed_blocks`]) the first blocks keep only their input in
//! forward and recompute their activations in backward.

use crate::layers::{
    AttentionSaved, CausalSelfAttention, Embedding, LayerNorm, LayerNormSaved, Linear, Tokens,
};
use crate::loss::{mean_cross_entropy, mean_cross_entropy_backward};
use crate::profile::{self, Part};
use crate::registry::{Init, Registry};
use ds_core::params::{GemmSpec, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Error, Result};
use ds_model::{GradSink, Model, ParamGroup, ParamSpec, Params};

/// The shape of a GPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptConfig {
    /// Vocabulary size (256 for ds's byte tokenizer).
    pub vocab: usize,
    /// Context length (tokens per sequence, at most).
    pub context: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Model width (`dim % heads == 0`).
    pub dim: usize,
}

impl GptConfig {
    /// Checks the shape.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |arg, why: String| Err(Error::invalid("GptConfig", arg, why));
        for (name, v) in [
            ("vocab", self.vocab),
            ("context", self.context),
            ("layers", self.layers),
            ("heads", self.heads),
            ("dim", self.dim),
        ] {
            if v == 0 {
                return bad(name, format!("{name} must be at least 1"));
            }
        }
        if !self.dim.is_multiple_of(self.heads) {
            return bad(
                "heads",
                format!("dim {} is not divisible by {} heads", self.dim, self.heads),
            );
        }
        Ok(())
    }

    /// The number of parameters (elements).
    pub fn numel(&self) -> usize {
        let c = self.dim;
        let block =
            2 * 2 * c + (3 * c * c + 3 * c) + (c * c + c) + (c * 4 * c + 4 * c) + (4 * c * c + c);
        self.vocab * c + self.context * c + self.layers * block + 2 * c
    }
}

struct Block {
    group: usize,
    ln1: LayerNorm,
    attn: CausalSelfAttention,
    ln2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

struct BlockSaved<B: Backend> {
    x: B::Buffer,
    ln1: LayerNormSaved<B>,
    attn: AttentionSaved<B>,
    x1: B::Buffer,
    ln2: LayerNormSaved<B>,
    f: B::Buffer,
    g: B::Buffer,
}

/// What forward keeps of a block for backward: everything, or (activation checkpointing) only
/// its input, from which backward recomputes the rest, on the device or (`cpu_checkpointing`)
/// in host memory.
enum Stored<B: Backend> {
    Full(BlockSaved<B>),
    Input(B::Buffer),
    /// The input's bytes in host memory, and its dtype and length.
    HostInput(Vec<u8>, DType, usize),
}

impl<B: Backend> Stored<B> {
    /// The checkpoint of input `x`: kept on the device, or moved to host memory (the device
    /// buffer is freed as it is dropped here).
    fn input(dev: &Device<B>, x: B::Buffer, on_host: bool) -> Result<Self> {
        if !on_host {
            return Ok(Stored::Input(x));
        }
        let (dtype, len) = (
            ds_core::DeviceBuffer::dtype(&x),
            ds_core::DeviceBuffer::len(&x),
        );
        let mut bytes = vec![0u8; len * dtype.size_bytes()];
        dev.download_bytes(x.all(), &mut bytes)?;
        Ok(Stored::HostInput(bytes, dtype, len))
    }
}

struct Saved<B: Backend> {
    tokens: Tokens,
    ids: B::Buffer,
    pos: B::Buffer,
    targets: B::Buffer,
    /// Targets that count in the mean loss.
    counted: usize,
    blocks: Vec<Stored<B>>,
    x_final: B::Buffer,
    ln_f: LayerNormSaved<B>,
    logits: B::Buffer,
}

/// A GPT computing in one dtype. One batch is a list of token sequences of equal length
/// `T + 1` (at most `context + 1`): inputs are the first `T`, targets the last `T`.
pub struct Gpt<B: Backend> {
    config: GptConfig,
    dtype: DType,
    registry: Registry,
    /// The embeddings' group (used first by the input and again by the tied head).
    embed_group: usize,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f_group: usize,
    ln_f: LayerNorm,
    /// Blocks whose activations are recomputed in backward (activation checkpointing), the
    /// first ones.
    checkpointed: usize,
    /// Whether their inputs wait for backward in host memory (`cpu_checkpointing`).
    checkpoints_on_host: bool,
    /// Curriculum learning's sequence length: training uses the first this many positions of
    /// each sequence (`usize::MAX`: all of them).
    curriculum_seqlen: usize,
    saved: Option<Saved<B>>,
}

impl<B: Backend> Gpt<B> {
    /// A GPT of `config` computing in `dtype`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an invalid shape.
    pub fn new(config: GptConfig, dtype: DType) -> Result<Self> {
        config.validate()?;
        let c = config.dim;
        let mut reg = Registry::new();
        let embed_group = reg.group("embed");
        let wte = Embedding::new(&mut reg, "wte", config.vocab, c);
        let wpe = Embedding::new(&mut reg, "wpe", config.context, c);
        let resid_std = 0.02 / ((2 * config.layers) as f32).sqrt();
        let blocks = (0..config.layers)
            .map(|l| {
                let p = format!("h.{l}");
                Block {
                    group: reg.group(&p),
                    ln1: LayerNorm::new(&mut reg, &format!("{p}.ln_1"), c),
                    attn: CausalSelfAttention::new(
                        &mut reg,
                        &format!("{p}.attn"),
                        c,
                        config.heads,
                        resid_std,
                    ),
                    ln2: LayerNorm::new(&mut reg, &format!("{p}.ln_2"), c),
                    fc: Linear::new(
                        &mut reg,
                        &format!("{p}.mlp.fc"),
                        c,
                        4 * c,
                        Init::Normal(0.02),
                    ),
                    proj: Linear::new(
                        &mut reg,
                        &format!("{p}.mlp.proj"),
                        4 * c,
                        c,
                        Init::Normal(resid_std),
                    ),
                }
            })
            .collect();
        let ln_f_group = reg.group("ln_f");
        let ln_f = LayerNorm::new(&mut reg, "ln_f", c);
        Ok(Gpt {
            config,
            dtype,
            registry: reg,
            embed_group,
            wte,
            wpe,
            blocks,
            ln_f_group,
            ln_f,
            checkpointed: 0,
            checkpoints_on_host: false,
            curriculum_seqlen: usize::MAX,
            saved: None,
        })
    }

    /// Activation checkpointing: forward keeps only the input of the first `blocks` blocks
    /// (all of them when it exceeds the count) and backward recomputes their activations from
    /// it, trading one more forward of those blocks for their activations' memory. The
    /// results are the same bits: the recomputation runs the same kernels on the same inputs.
    pub fn set_checkpointed_blocks(&mut self, blocks: usize) {
        self.checkpointed = blocks.min(self.blocks.len());
    }

    /// How many blocks are checkpointed.
    pub fn checkpointed_blocks(&self) -> usize {
        self.checkpointed
    }

    /// DeepSpeed's `cpu_checkpointing`: the checkpointed blocks' inputs are copied to host
    /// memory in forward (freeing their device buffers) and back in backward, so the device
    /// holds no checkpoint between the two; the same bits, for two transfers per block.
    pub fn set_checkpoints_on_host(&mut self, on_host: bool) {
        self.checkpoints_on_host = on_host;
    }

    /// Whether checkpoints are kept in host memory.
    pub fn checkpoints_on_host(&self) -> bool {
        self.checkpoints_on_host
    }

    /// The curriculum sequence length training uses (`usize::MAX`: whole sequences), set by
    /// the engine through `Model::set_curriculum_seqlen`.
    pub fn curriculum_seqlen(&self) -> usize {
        self.curriculum_seqlen
    }

    /// One block's forward from `x`: what its backward needs (taking `x`) and its output.
    fn block_forward(
        &self,
        blk: &Block,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        x: B::Buffer,
        t: Tokens,
    ) -> Result<(BlockSaved<B>, B::Buffer)> {
        let (c, n) = (self.config.dim, t.batch * t.seq);
        let ln1 = blk.ln1.forward(dev, params, x.all(), n)?;
        let (att, attn) = blk.attn.forward(dev, params, ln1.y.all(), t)?;
        let mut x1 = dev.alloc_for_overwrite(self.dtype, n * c)?;
        profile::timed(dev, Part::Elementwise, || {
            dev.add(x.all(), att.all(), x1.all_mut())
        })?;
        drop(att);
        let ln2 = blk.ln2.forward(dev, params, x1.all(), n)?;
        let f = blk.fc.forward(dev, params, ln2.y.all(), n)?;
        let mut g = dev.alloc_for_overwrite(self.dtype, n * 4 * c)?;
        profile::timed(dev, Part::Activation, || dev.gelu(f.all(), g.all_mut()))?;
        let p = blk.proj.forward(dev, params, g.all(), n)?;
        let mut x2 = dev.alloc_for_overwrite(self.dtype, n * c)?;
        profile::timed(dev, Part::Elementwise, || {
            dev.add(x1.all(), p.all(), x2.all_mut())
        })?;
        Ok((
            BlockSaved {
                x,
                ln1,
                attn,
                x1,
                ln2,
                f,
                g,
            },
            x2,
        ))
    }

    /// The shape.
    pub fn config(&self) -> GptConfig {
        self.config
    }

    fn tokens(&self, batch: &[Vec<i32>]) -> Result<(Tokens, Vec<i32>, Vec<i32>)> {
        let bad = |why: String| Err(Error::invalid("Gpt::forward", "batch", why));
        let Some(first) = batch.first() else {
            return bad("the batch is empty".into());
        };
        let whole = first.len().saturating_sub(1);
        if whole == 0 || whole > self.config.context {
            return bad(format!(
                "sequences of {} tokens: need 2 to context + 1 = {}",
                first.len(),
                self.config.context + 1
            ));
        }
        // Curriculum learning trains on each sequence's first positions (Megatron truncates
        // tokens and labels alike).
        let seq = whole.min(self.curriculum_seqlen);
        let mut inputs = Vec::with_capacity(batch.len() * seq);
        let mut targets = Vec::with_capacity(batch.len() * seq);
        for s in batch {
            if s.len() != whole + 1 {
                return bad(format!(
                    "sequences differ in length ({} and {})",
                    first.len(),
                    s.len()
                ));
            }
            if let Some(t) = s
                .iter()
                .find(|&&t| t < 0 || t as usize >= self.config.vocab)
            {
                return bad(format!(
                    "token {t} is outside the vocabulary of {}",
                    self.config.vocab
                ));
            }
            inputs.extend_from_slice(&s[..seq]);
            targets.extend_from_slice(&s[1..=seq]);
        }
        Ok((
            Tokens {
                batch: batch.len(),
                seq,
            },
            inputs,
            targets,
        ))
    }

    /// Logits (`rows x vocab`, f32 on the host) for `batch` without keeping anything for a
    /// backward: what generation calls.
    ///
    /// # Errors
    /// Kernel and allocation errors, an invalid batch.
    pub fn logits(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        batch: &[Vec<i32>],
    ) -> Result<Vec<f32>> {
        // Generation reads whole prompts whatever a training curriculum has reached.
        let seqlen = std::mem::replace(&mut self.curriculum_seqlen, usize::MAX);
        let forward = self.forward(dev, params, &batch.to_vec());
        self.curriculum_seqlen = seqlen;
        forward?;
        let saved = self
            .saved
            .take()
            .ok_or_else(|| Error::invalid("Gpt::logits", "forward", "the forward kept nothing"))?;
        ds_model::host::download_f32(dev, saved.logits.all())
    }
}

impl<B: Backend> Model<B> for Gpt<B> {
    type Batch = Vec<Vec<i32>>;

    fn parameters(&self) -> Vec<ParamSpec> {
        self.registry.specs()
    }

    fn groups(&self) -> Vec<ParamGroup> {
        self.registry.groups()
    }

    fn init(&self, index: usize, seed: u64, out: &mut [f32]) {
        self.registry.init(index, seed, out);
    }

    fn forward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        batch: &Vec<Vec<i32>>,
    ) -> Result<f32> {
        let (t, inputs, targets) = self.tokens(batch)?;
        let (c, v, n) = (self.config.dim, self.config.vocab, t.batch * t.seq);
        let ids = dev.alloc_from(&inputs)?;
        let positions: Vec<i32> = (0..n).map(|i| (i % t.seq) as i32).collect();
        let pos = dev.alloc_from(&positions)?;
        let counted = crate::loss::counted_rows(&targets);
        let targets = dev.alloc_from(&targets)?;
        params.open(self.embed_group)?;
        let tok = self.wte.forward(dev, params, ids.all())?;
        let posd = self.wpe.forward(dev, params, pos.all())?;
        params.close(self.embed_group)?;
        let mut x = dev.alloc_for_overwrite(self.dtype, n * c)?;
        profile::timed(dev, Part::Elementwise, || {
            dev.add(tok.all(), posd.all(), x.all_mut())
        })?;
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, blk) in self.blocks.iter().enumerate() {
            params.open(blk.group)?;
            if i < self.checkpointed {
                // Keep the input only; the block's activations are dropped here.
                let (saved, x2) = self.block_forward(blk, dev, params, x, t)?;
                let input = saved.x;
                drop((saved.ln1, saved.attn, saved.x1, saved.ln2, saved.f, saved.g));
                blocks.push(Stored::input(dev, input, self.checkpoints_on_host)?);
                x = x2;
            } else {
                let (saved, x2) = self.block_forward(blk, dev, params, x, t)?;
                blocks.push(Stored::Full(saved));
                x = x2;
            }
            params.close(blk.group)?;
        }
        let ln_f = params.scoped(self.ln_f_group, |p| self.ln_f.forward(dev, p, x.all(), n))?;
        let mut logits = dev.alloc_for_overwrite(self.dtype, n * v)?;
        params.scoped(self.embed_group, |p| {
            crate::profile::gemm(
                dev,
                &GemmSpec::new(n, v, c).transpose(false, true),
                ln_f.y.all(),
                p.get(self.wte.table)?,
                logits.all_mut(),
            )
        })?;
        let loss =
            mean_cross_entropy(dev, Shape2::new(n, v), logits.all(), targets.all(), counted)?;
        self.saved = Some(Saved {
            tokens: t,
            ids,
            pos,
            targets,
            counted,
            blocks,
            x_final: x,
            ln_f,
            logits,
        });
        Ok(loss)
    }

    fn set_curriculum_seqlen(&mut self, seqlen: usize) -> Result<()> {
        if seqlen == 0 {
            return Err(Error::invalid(
                "Gpt::set_curriculum_seqlen",
                "seqlen",
                "a curriculum sequence length must be at least 1",
            ));
        }
        self.curriculum_seqlen = seqlen;
        Ok(())
    }

    fn backward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        scale: f32,
    ) -> Result<()> {
        let s = self.saved.take().ok_or_else(|| {
            Error::invalid("Gpt::backward", "forward", "backward needs a forward first")
        })?;
        let (c, v) = (self.config.dim, self.config.vocab);
        let t = s.tokens;
        let n = t.batch * t.seq;
        let dlogits = mean_cross_entropy_backward(
            dev,
            Shape2::new(n, v),
            scale,
            s.logits.all(),
            s.targets.all(),
            s.counted,
        )?;
        // Tied head: d wte += dlogitsᵀ h (the embedding adds its part and marks it done).
        params.open(self.embed_group)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(v, c, n)
                .transpose(true, false)
                .scaled(1.0, 1.0),
            dlogits.all(),
            s.ln_f.y.all(),
            grads.grad(self.wte.table)?,
        )?;
        let mut dh = dev.alloc_for_overwrite(self.dtype, n * c)?;
        crate::profile::gemm(
            dev,
            &GemmSpec::new(n, c, v),
            dlogits.all(),
            params.get(self.wte.table)?,
            dh.all_mut(),
        )?;
        params.close(self.embed_group)?;
        drop(dlogits);
        params.open(self.ln_f_group)?;
        let mut dx =
            self.ln_f
                .backward(dev, params, grads, &s.ln_f, s.x_final.all(), dh.all(), n)?;
        params.close(self.ln_f_group)?;
        for (blk, stored) in self.blocks.iter().zip(s.blocks).rev() {
            params.open(blk.group)?;
            let bs = match stored {
                Stored::Full(saved) => saved,
                // Recompute the block's activations from its input (its output is not needed).
                Stored::Input(x) => self.block_forward(blk, dev, params, x, t)?.0,
                Stored::HostInput(bytes, dtype, len) => {
                    let mut x = dev.alloc(dtype, len)?;
                    dev.upload_bytes(&bytes, x.all_mut())?;
                    drop(bytes);
                    self.block_forward(blk, dev, params, x, t)?.0
                }
            };
            // x2 = x1 + proj(gelu(fc(ln2(x1)))).
            let dg = blk
                .proj
                .backward(dev, params, grads, bs.g.all(), dx.all(), n)?;
            let mut df = dev.alloc_for_overwrite(self.dtype, n * 4 * c)?;
            profile::timed(dev, Part::Activation, || {
                dev.gelu_backward(bs.f.all(), dg.all(), df.all_mut())
            })?;
            let dm = blk
                .fc
                .backward(dev, params, grads, bs.ln2.y.all(), df.all(), n)?;
            let dx1_mlp =
                blk.ln2
                    .backward(dev, params, grads, &bs.ln2, bs.x1.all(), dm.all(), n)?;
            profile::timed(dev, Part::Elementwise, || {
                dev.axpy(1.0, dx1_mlp.all(), dx.all_mut())
            })?;
            // x1 = x + attn(ln1(x)).
            let da =
                blk.attn
                    .backward(dev, params, grads, &bs.attn, bs.ln1.y.all(), dx.all(), t)?;
            let dx_attn = blk
                .ln1
                .backward(dev, params, grads, &bs.ln1, bs.x.all(), da.all(), n)?;
            profile::timed(dev, Part::Elementwise, || {
                dev.axpy(1.0, dx_attn.all(), dx.all_mut())
            })?;
            params.close(blk.group)?;
        }
        // The embeddings' backward reads no parameter: no scope.
        self.wpe
            .backward(dev, grads, s.pos.all(), dx.all(), false)?;
        self.wte
            .backward(dev, grads, s.ids.all(), dx.all(), false)?;
        Ok(())
    }
}
