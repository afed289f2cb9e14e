//! Hyper-parameters and shapes the kernels take, with the scalars every backend derives from
//! them computed once here (so all backends agree to the bit on what they are given).

/// How Adam applies weight decay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdamMode {
    /// Classic Adam with L2 regularisation: `g += wd * p` before the moments.
    L2,
    /// Decoupled weight decay (AdamW): the moments see the raw gradient and
    /// `p -= lr * wd * p` is applied beside the Adam update.
    AdamW,
}

/// One fused Adam step. Semantics (t = `step`, bc = bias correction, 1 when disabled):
///
/// - `g = grad_scale * grad` (the engine's loss unscaling and clipping, fused into the step)
/// - L2 mode: `g += wd*p`; then the AdamW-mode formula with `wd = 0`.
/// - `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
/// - `p -= lr * ((m/bc1) / (sqrt(v/bc2) + eps) + wd*p)` (AdamW) with `bc1 = 1-b1^t`,
///   `bc2 = 1-b2^t`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Weight decay, applied per `mode`.
    pub weight_decay: f32,
    /// L2 or decoupled (AdamW) weight decay.
    pub mode: AdamMode,
    /// Whether to divide the moments by `1 - beta^t`.
    pub bias_correction: bool,
    /// The 1-based step number `t` this update makes.
    pub step: u64,
    /// Multiplies the gradient as it is read (1 leaves it as it is).
    pub grad_scale: f32,
}

impl Default for AdamParams {
    /// PyTorch's and DeepSpeed's defaults, AdamW mode, step 1.
    fn default() -> Self {
        AdamParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            mode: AdamMode::AdamW,
            bias_correction: true,
            step: 1,
            grad_scale: 1.0,
        }
    }
}

/// The per-step scalars of an Adam update, derived on the host in f64 and rounded once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamScalars {
    /// `lr / bc1`.
    pub step_size: f32,
    /// `1 / sqrt(bc2)`.
    pub inv_sqrt_bc2: f32,
    /// Multiplier applied to `p` for decoupled decay: `1 - lr*wd` (1 in L2 mode).
    pub decay_factor: f32,
    /// Added to `g` as `l2 * p` in L2 mode (0 in AdamW mode).
    pub l2: f32,
}

/// `(1 - beta1^t, 1 - beta2^t)` for bias correction, or `(1, 1)` when it is off.
pub fn bias_corrections(beta1: f32, beta2: f32, step: u64, enabled: bool) -> (f64, f64) {
    if !enabled {
        return (1.0, 1.0);
    }
    let t = i32::try_from(step).unwrap_or(i32::MAX);
    (
        1.0 - f64::from(beta1).powi(t),
        1.0 - f64::from(beta2).powi(t),
    )
}

impl AdamParams {
    /// The scalars every backend's kernel uses.
    pub fn scalars(&self) -> AdamScalars {
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, self.step, self.bias_correction);
        let lr = f64::from(self.lr);
        let wd = f64::from(self.weight_decay);
        let (decay_factor, l2) = match self.mode {
            AdamMode::AdamW => ((1.0 - lr * wd) as f32, 0.0),
            AdamMode::L2 => (1.0, self.weight_decay),
        };
        AdamScalars {
            step_size: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            decay_factor,
            l2,
        }
    }
}

/// One SGD step, PyTorch's semantics:
///
/// - `g = grad_scale * grad` (the engine's loss unscaling and clipping, fused into the step)
/// - `d = g + wd*p`
/// - with momentum `mu > 0`: `buf = d` on step 1, else `buf = mu*buf + (1-dampening)*d`;
///   then `d = d + mu*buf` (nesterov) or `d = buf`
/// - `p -= lr*d`
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Learning rate.
    pub lr: f32,
    /// Momentum factor `mu` (0 disables the momentum buffer).
    pub momentum: f32,
    /// Dampening of the momentum update.
    pub dampening: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Nesterov momentum (needs `momentum > 0` and `dampening == 0`).
    pub nesterov: bool,
    /// The 1-based step number; step 1 initialises the momentum buffer.
    pub step: u64,
    /// Multiplies the gradient as it is read (1 leaves it as it is).
    pub grad_scale: f32,
}

impl Default for SgdParams {
    fn default() -> Self {
        SgdParams {
            lr: 1e-2,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            step: 1,
            grad_scale: 1.0,
        }
    }
}

/// One Lamb step, DeepSpeed's FusedLamb semantics:
///
/// - `g = grad_scale * grad` (the engine's loss unscaling and clipping, fused into the step)
/// - `m = b1*m + (1-b1)*g`, `v = b2*v + (1-b2)*g*g`
/// - `u = m/(sqrt(v)+eps) + wd*p`
/// - `trust = ||p|| / ||u||` clamped to `[min_coeff, max_coeff]`, 1 when either norm is 0
/// - `p -= step_size * trust * u` with `step_size = lr*sqrt(bc2)/bc1` (bias correction folded
///   into the step size) or `lr` without bias correction.
///
/// Norms are per call: one call is one tensor (or one rank's part of it, see
/// [`crate::Device::lamb_moments`]). The squared norms pass between the two passes as f32, so
/// a tensor whose squared norm underflows f32 (every weight below about 1e-22) counts as having
/// norm 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LambParams {
    /// Learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// Weight decay, part of the update `u`.
    pub weight_decay: f32,
    /// Whether bias correction is folded into the step size.
    pub bias_correction: bool,
    /// Lower clamp of the trust ratio.
    pub min_coeff: f32,
    /// Upper clamp of the trust ratio.
    pub max_coeff: f32,
    /// The 1-based step number.
    pub step: u64,
    /// Multiplies the gradient as it is read by the first pass (1 leaves it as it is).
    pub grad_scale: f32,
}

impl Default for LambParams {
    /// DeepSpeed FusedLamb's defaults.
    fn default() -> Self {
        LambParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            bias_correction: true,
            min_coeff: 0.01,
            max_coeff: 10.0,
            step: 1,
            grad_scale: 1.0,
        }
    }
}

impl LambParams {
    /// `lr * sqrt(bc2) / bc1`, or `lr` without bias correction.
    pub fn step_size(&self) -> f32 {
        let (bc1, bc2) = bias_corrections(self.beta1, self.beta2, self.step, self.bias_correction);
        (f64::from(self.lr) * bc2.sqrt() / bc1) as f32
    }

    /// The clamped trust ratio from the squared norms of `p` and `u`; every backend calls
    /// this (or mirrors it exactly on the device).
    pub fn trust_ratio(&self, p_sq: f32, u_sq: f32) -> f32 {
        let (pn, un) = (p_sq.sqrt(), u_sq.sqrt());
        if pn == 0.0 || un == 0.0 || !pn.is_finite() || !un.is_finite() {
            if pn.is_nan() || un.is_nan() {
                return f32::NAN;
            }
            return 1.0;
        }
        (pn / un).clamp(self.min_coeff, self.max_coeff)
    }
}

/// One Adagrad step, DeepSpeedCPUAdagrad's semantics (the kernel DeepSpeed runs for
/// `"type": "Adagrad"` with offload):
///
/// - `g = grad_scale * grad` (the engine's loss unscaling and clipping, fused into the step)
/// - `v += (g + wd*p)^2`: the sum of squares sees the L2-decayed gradient
/// - `p -= lr * g / (sqrt(v) + eps)`: the numerator is the gradient *without* the decay term,
///   as in DeepSpeed's kernel (PyTorch's `torch.optim.Adagrad` puts the decayed gradient in
///   the numerator too; the two agree when `weight_decay` is 0)
///
/// `v` is DeepSpeed's `exp_avg_sq` state. No `lr_decay` and no initial accumulator value
/// (DeepSpeedCPUAdagrad has neither: both are 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdagradParams {
    /// Learning rate.
    pub lr: f32,
    /// Added to the denominator.
    pub eps: f32,
    /// L2 weight decay, seen by the sum of squares only.
    pub weight_decay: f32,
    /// Multiplies the gradient as it is read (1 leaves it as it is).
    pub grad_scale: f32,
}

impl Default for AdagradParams {
    /// DeepSpeedCPUAdagrad's defaults (`lr` 1e-2, `eps` 1e-10, no weight decay).
    fn default() -> Self {
        AdagradParams {
            lr: 1e-2,
            eps: 1e-10,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

/// One Lion step (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), the
/// update of DeepSpeed's DeepSpeedCPULion and FusedLion:
///
/// - `g = grad_scale * grad`
/// - `c = b1*m + (1-b1)*g`
/// - `p = p*(1 - lr*wd) - lr*sign(c)` (decoupled weight decay)
/// - `m = b2*m + (1-b2)*g`
///
/// `sign(0) = 0`, as in the paper: a weight whose momentum and gradient are both exactly 0 (an
/// embedding row no token has used) does not move. DeepSpeed's two kernels disagree there (the
/// CPU one steps by `-lr`, the CUDA one by `+lr`); see docs/engine.md. A non-finite `c` gives a
/// NaN weight, so a bad gradient is visible rather than turned into a unit step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionParams {
    /// Learning rate.
    pub lr: f32,
    /// Interpolation between momentum and gradient for the update's sign.
    pub beta1: f32,
    /// Momentum decay.
    pub beta2: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Multiplies the gradient as it is read (1 leaves it as it is).
    pub grad_scale: f32,
}

impl Default for LionParams {
    /// DeepSpeed's defaults for DeepSpeedCPULion and FusedLion (`lr` 1e-3, betas (0.9, 0.999)).
    fn default() -> Self {
        LionParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 0.0,
            grad_scale: 1.0,
        }
    }
}

impl LionParams {
    /// The weight's multiplier `1 - lr*wd`, computed in f64 and rounded once.
    pub fn decay_factor(&self) -> f32 {
        (1.0 - f64::from(self.lr) * f64::from(self.weight_decay)) as f32
    }
}

/// Lion's `sign(c)` with `sign(0) = 0` and NaN for a non-finite `c`, written the way every
/// backend writes it: two comparisons and `c * 0` (0 for finite `c`, NaN otherwise).
#[inline]
pub fn lion_sign(c: f32) -> f32 {
    f32::from(u8::from(c > 0.0)) - f32::from(u8::from(c < 0.0)) + c * 0.0
}

/// A matrix multiplication `C = alpha * op(A) * op(B) + beta * C`, row-major, possibly
/// batched with element strides between consecutive matrices.
///
/// `op(A)` is `m x k`: A is stored `m x k`, or `k x m` when `trans_a`. `op(B)` is `k x n`:
/// B is stored `k x n`, or `n x k` when `trans_b`. C is `m x n`. With `beta == 0`, C is
/// written without being read (NaN in C does not propagate), as in BLAS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmSpec {
    /// Rows of op(A) and C.
    pub m: usize,
    /// Columns of op(B) and C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// A is stored transposed.
    pub trans_a: bool,
    /// B is stored transposed.
    pub trans_b: bool,
    /// Scale of the product.
    pub alpha: f32,
    /// Scale of the existing C.
    pub beta: f32,
    /// Number of matrices.
    pub batch: usize,
    /// Elements between consecutive A matrices.
    pub stride_a: usize,
    /// Elements between consecutive B matrices.
    pub stride_b: usize,
    /// Elements between consecutive C matrices.
    pub stride_c: usize,
}

impl GemmSpec {
    /// `C = A * B` for one `m x k` times `k x n` product.
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        GemmSpec {
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 0.0,
            batch: 1,
            stride_a: m.saturating_mul(k),
            stride_b: k.saturating_mul(n),
            stride_c: m.saturating_mul(n),
        }
    }

    /// Sets the transposes.
    pub fn transpose(mut self, trans_a: bool, trans_b: bool) -> Self {
        self.trans_a = trans_a;
        self.trans_b = trans_b;
        self
    }

    /// Sets alpha and beta.
    pub fn scaled(mut self, alpha: f32, beta: f32) -> Self {
        self.alpha = alpha;
        self.beta = beta;
        self
    }

    /// `batch` products with packed matrices back to back.
    pub fn batched(mut self, batch: usize) -> Self {
        self.batch = batch;
        self.stride_a = self.a_len();
        self.stride_b = self.b_len();
        self.stride_c = self.c_len();
        self
    }

    /// `batch` products with explicit strides (a stride of 0 reuses one matrix).
    pub fn strided(
        mut self,
        batch: usize,
        stride_a: usize,
        stride_b: usize,
        stride_c: usize,
    ) -> Self {
        self.batch = batch;
        self.stride_a = stride_a;
        self.stride_b = stride_b;
        self.stride_c = stride_c;
        self
    }

    /// Elements one batch entry of A spans.
    pub fn a_len(&self) -> usize {
        self.m.saturating_mul(self.k)
    }

    /// Elements one batch entry of B spans.
    pub fn b_len(&self) -> usize {
        self.k.saturating_mul(self.n)
    }

    /// Elements one batch entry of C spans.
    pub fn c_len(&self) -> usize {
        self.m.saturating_mul(self.n)
    }
}

/// A row-major `rows x cols` matrix shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape2 {
    /// Rows (tokens, samples).
    pub rows: usize,
    /// Columns (features, classes, embedding width).
    pub cols: usize,
}

impl Shape2 {
    /// A `rows x cols` shape.
    pub fn new(rows: usize, cols: usize) -> Self {
        Shape2 { rows, cols }
    }
}

/// The shape of causal self-attention: q, k, v and the output are token-major, `[batch, seq,
/// heads, head_dim]`, contiguous (see [`AttentionShape::row`]); the saved log-sum-exp is
/// `[batch, heads, seq]` in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// Heads per sequence.
    pub heads: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Score scale, usually `1/sqrt(head_dim)`.
    pub scale: f32,
}

impl AttentionShape {
    /// A shape with the usual scale `1/sqrt(head_dim)`.
    pub fn new(batch: usize, heads: usize, seq: usize, head_dim: usize) -> Self {
        AttentionShape {
            batch,
            heads,
            seq,
            head_dim,
            scale: 1.0 / (head_dim.max(1) as f32).sqrt(),
        }
    }

    /// Where row `i` of head `h` of sequence `b` starts in q, k, v, out and their gradients:
    /// they are token-major, `[batch, seq, heads, head_dim]`, so each token's row of a
    /// `[tokens, heads * head_dim]` activation holds all its heads.
    pub fn row(&self, b: usize, h: usize, i: usize) -> usize {
        ((b * self.seq + i) * self.heads + h) * self.head_dim
    }

    /// Elements of q (and k, v, out).
    pub fn qkv_len(&self) -> usize {
        self.lse_len().saturating_mul(self.head_dim)
    }

    /// Elements of the saved log-sum-exp.
    pub fn lse_len(&self) -> usize {
        self.batch
            .saturating_mul(self.heads)
            .saturating_mul(self.seq)
    }
}
