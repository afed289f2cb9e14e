//! The backend contract: what a device implements.
//!
//! The contract is a few small traits, one per kernel family, over a [`Memory`] trait that
//! owns the buffer type. [`Backend`] is simply "all of them"; it is implemented automatically.
//!
//! Every method takes a [`Validated`] token that only ds-core can create: the generic front
//! door ([`crate::Device`]) checks lengths, dtypes, offsets, shapes and capabilities once for
//! every backend, then calls these methods. An implementation may therefore rely on:
//!
//! - every view lies inside its buffer, and lengths relate as the method documents;
//! - dtypes are ones its [`crate::DeviceInfo::capabilities`] declare for the kernel's family;
//! - scalar hyper-parameters are finite and in range.
//!
//! Kernel semantics (formulas, rounding, NaN behaviour) are documented on the matching
//! `Device` method, and the conformance suite holds every backend to them.

use crate::dtype::DType;
use crate::error::Result;
use crate::info::DeviceInfo;
use crate::memory::MemoryStats;
use crate::params::{
    AdagradParams, AdamParams, AttentionShape, GemmSpec, LambParams, LionParams, SgdParams, Shape2,
};
use crate::slice::{DeviceBuffer, Slice, SliceMut};

/// Proof that ds-core validated a call's arguments. Only ds-core can create one, so backend
/// kernels cannot be reached without validation.
#[derive(Debug, Clone, Copy)]
pub struct Validated(());

impl Validated {
    pub(crate) fn new() -> Self {
        Validated(())
    }
}

/// Device memory, synchronisation and description.
pub trait Memory: Clone + Send + Sync + 'static {
    /// The backend's buffer type.
    type Buffer: DeviceBuffer + 'static;

    /// The device this backend drives.
    fn info(&self) -> &DeviceInfo;
    /// A zero-filled buffer of `len` elements.
    fn alloc(&self, dtype: DType, len: usize, _: Validated) -> Result<Self::Buffer>;
    /// A buffer of `len` elements the caller overwrites whole before reading any of it (a
    /// kernel's output): a backend may skip the zero fill, leaving stale values of its own
    /// earlier buffers (never uninitialised memory). The default allocates zero-filled.
    fn alloc_for_overwrite(
        &self,
        dtype: DType,
        len: usize,
        checked: Validated,
    ) -> Result<Self::Buffer> {
        self.alloc(dtype, len, checked)
    }
    /// Copies host bytes (exactly `dst.len() * dtype size`) into `dst`.
    fn upload(&self, src: &[u8], dst: SliceMut<'_, Self::Buffer>, _: Validated) -> Result<()>;
    /// Copies `src` into host bytes (exactly `src.len() * dtype size`).
    fn download(&self, src: Slice<'_, Self::Buffer>, dst: &mut [u8], _: Validated) -> Result<()>;
    /// Device-to-device copy of equal-length, same-dtype views (of distinct buffers: the
    /// borrow rules guarantee it).
    fn copy(
        &self,
        src: Slice<'_, Self::Buffer>,
        dst: SliceMut<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// Waits for all queued work; asynchronous device errors surface here.
    fn sync(&self) -> Result<()>;
    /// Current memory accounting.
    fn memory_stats(&self) -> MemoryStats;
    /// Restarts the peak from the current use.
    fn reset_peak_memory(&self);
    /// The bytes of a view when they live in host memory (the CPU backend), so collectives can
    /// hand them to MPI without staging. `None` for device memory or an out-of-range view.
    fn host_bytes<'a>(&self, _view: Slice<'a, Self::Buffer>) -> Option<&'a [u8]> {
        None
    }
    /// Collectives native to this backend's devices (NCCL on CUDA, RCCL on ROCm) for `rank` of
    /// `world` processes, one device each. Rank 0 makes the communicator's 128-byte id and
    /// `share` hands it to every rank (rank 0 passes `Some(id)`, the others `None`; each gets
    /// rank 0's id back), e.g. over MPI. `None`: the backend has no collectives of its own and
    /// the caller's (MPI, threads) serve it.
    fn native_collectives(
        &self,
        _rank: usize,
        _world: usize,
        _share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn crate::Collectives<Self>>>>
    where
        Self: crate::Backend,
    {
        None
    }
    /// Writable form of [`Memory::host_bytes`].
    fn host_bytes_mut<'a>(&self, _view: SliceMut<'a, Self::Buffer>) -> Option<&'a mut [u8]> {
        None
    }
}

/// Shorthand for a read-only view of backend `B`'s buffers.
pub type View<'a, B> = Slice<'a, <B as Memory>::Buffer>;
/// Shorthand for a writable view of backend `B`'s buffers.
pub type ViewMut<'a, B> = SliceMut<'a, <B as Memory>::Buffer>;

/// fill, cast, scale, axpy, add, mul.
pub trait ElementwiseKernels: Memory {
    /// `dst[i] = value` rounded to dst's dtype. `dst` may be an integer buffer (i32, u8): the
    /// front door has checked that `value` is an integer in its range.
    fn fill(&self, dst: ViewMut<'_, Self>, value: f64, _: Validated) -> Result<()>;
    /// `dst[i] = src[i]` converted with round-to-nearest-even.
    fn cast(&self, src: View<'_, Self>, dst: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `x[i] *= alpha`.
    fn scale(&self, x: ViewMut<'_, Self>, alpha: f32, _: Validated) -> Result<()>;
    /// `y[i] += alpha * x[i]`, computed in f32. `x` and `y` may differ in dtype (16-bit
    /// gradients accumulated into an f32 buffer, or the reverse): read each in its own dtype and
    /// round the sum to `y`'s.
    fn axpy(&self, alpha: f32, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated)
    -> Result<()>;
    /// `out[i] = a[i] + b[i]`.
    fn add(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `out[i] = a[i] * b[i]`.
    fn mul(
        &self,
        a: View<'_, Self>,
        b: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
}

/// Reductions into one-element f32 outputs that stay on the device.
pub trait ReductionKernels: Memory {
    /// `out[0] = sum(x)`.
    fn sum(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `out[0] = sum(x*x)`.
    fn sum_squares(&self, x: View<'_, Self>, out: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `flag[0] = 1` when any element of x is inf or NaN; otherwise flag is left as it was.
    fn non_finite(&self, x: View<'_, Self>, flag: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `x[i] *= inv_scale`, and `flag[0] = 1` when any result is inf or NaN (else untouched).
    fn unscale_and_check(
        &self,
        x: ViewMut<'_, Self>,
        inv_scale: f32,
        flag: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
}

/// The views one Adam step works on.
#[derive(Debug)]
pub struct AdamArgs<'a, T: ?Sized> {
    /// fp32 master weights, updated in place.
    pub param: SliceMut<'a, T>,
    /// The gradient (f32, f16 or bf16).
    pub grad: Slice<'a, T>,
    /// fp32 first moment.
    pub exp_avg: SliceMut<'a, T>,
    /// fp32 second moment.
    pub exp_avg_sq: SliceMut<'a, T>,
    /// Optional copy of the updated weights (f32, f16 or bf16), written in the same pass.
    pub param_copy: Option<SliceMut<'a, T>>,
}

/// The views one SGD step works on.
#[derive(Debug)]
pub struct SgdArgs<'a, T: ?Sized> {
    /// fp32 master weights, updated in place.
    pub param: SliceMut<'a, T>,
    /// The gradient (f32, f16 or bf16).
    pub grad: Slice<'a, T>,
    /// fp32 momentum buffer; required when momentum is non-zero.
    pub momentum: Option<SliceMut<'a, T>>,
    /// Optional copy of the updated weights, written in the same pass.
    pub param_copy: Option<SliceMut<'a, T>>,
}

/// The views of an Adagrad step.
#[derive(Debug)]
pub struct AdagradArgs<'a, T: ?Sized> {
    /// fp32 master weights, updated in place.
    pub param: SliceMut<'a, T>,
    /// The gradient (f32, f16 or bf16).
    pub grad: Slice<'a, T>,
    /// fp32 running sum of squared gradients (DeepSpeed's `exp_avg_sq`).
    pub exp_avg_sq: SliceMut<'a, T>,
    /// Optional copy of the updated weights, written in the same pass.
    pub param_copy: Option<SliceMut<'a, T>>,
}

/// The views of a Lion step.
#[derive(Debug)]
pub struct LionArgs<'a, T: ?Sized> {
    /// fp32 master weights, updated in place.
    pub param: SliceMut<'a, T>,
    /// The gradient (f32, f16 or bf16).
    pub grad: Slice<'a, T>,
    /// fp32 momentum (DeepSpeed's `exp_avg`).
    pub exp_avg: SliceMut<'a, T>,
    /// Optional copy of the updated weights, written in the same pass.
    pub param_copy: Option<SliceMut<'a, T>>,
}

/// The views of Lamb's first pass.
#[derive(Debug)]
pub struct LambMomentArgs<'a, T: ?Sized> {
    /// fp32 master weights (read).
    pub param: Slice<'a, T>,
    /// The gradient (f32, f16 or bf16).
    pub grad: Slice<'a, T>,
    /// fp32 first moment, updated.
    pub exp_avg: SliceMut<'a, T>,
    /// fp32 second moment, updated.
    pub exp_avg_sq: SliceMut<'a, T>,
    /// Two f32: receives `[sum(p*p), sum(u*u)]`.
    pub norms: SliceMut<'a, T>,
}

/// The views of Lamb's second pass.
#[derive(Debug)]
pub struct LambApplyArgs<'a, T: ?Sized> {
    /// fp32 master weights, updated in place.
    pub param: SliceMut<'a, T>,
    /// fp32 first moment (as updated by the first pass).
    pub exp_avg: Slice<'a, T>,
    /// fp32 second moment (as updated by the first pass).
    pub exp_avg_sq: Slice<'a, T>,
    /// Two f32 `[sum(p*p), sum(u*u)]` (summed over ranks when the tensor is partitioned).
    pub norms: Slice<'a, T>,
    /// Optional copy of the updated weights, written in the same pass.
    pub param_copy: Option<SliceMut<'a, T>>,
}

/// Fused optimizer steps on fp32 master weights.
pub trait OptimizerKernels: Memory {
    /// One Adam/AdamW step.
    fn adam_step(
        &self,
        hp: &AdamParams,
        args: AdamArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// One SGD step.
    fn sgd_step(&self, hp: &SgdParams, args: SgdArgs<'_, Self::Buffer>, _: Validated)
    -> Result<()>;
    /// One Adagrad step (DeepSpeedCPUAdagrad's semantics).
    fn adagrad_step(
        &self,
        hp: &AdagradParams,
        args: AdagradArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// One Lion step.
    fn lion_step(
        &self,
        hp: &LionParams,
        args: LionArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// Lamb's first pass: moments and the two squared norms.
    fn lamb_moments(
        &self,
        hp: &LambParams,
        args: LambMomentArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// Lamb's second pass: the trust-ratio-scaled update.
    fn lamb_apply(
        &self,
        hp: &LambParams,
        args: LambApplyArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
}

/// Matrix multiplication.
pub trait LinalgKernels: Memory {
    /// `C = alpha * op(A) op(B) + beta * C`, see [`GemmSpec`].
    fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, Self>,
        b: View<'_, Self>,
        c: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
}

/// The views of a LayerNorm forward.
#[derive(Debug)]
pub struct LayerNormArgs<'a, T: ?Sized> {
    /// Input `rows x cols`.
    pub x: Slice<'a, T>,
    /// Scale, `cols`.
    pub gamma: Slice<'a, T>,
    /// Shift, `cols`.
    pub beta: Slice<'a, T>,
    /// Output `rows x cols`.
    pub y: SliceMut<'a, T>,
    /// Saved per-row mean, f32 `rows`.
    pub mean: SliceMut<'a, T>,
    /// Saved per-row `1/sqrt(var + eps)`, f32 `rows`.
    pub rstd: SliceMut<'a, T>,
}

/// The views of a LayerNorm backward.
#[derive(Debug)]
pub struct LayerNormBackwardArgs<'a, T: ?Sized> {
    /// The forward's input.
    pub x: Slice<'a, T>,
    /// The forward's scale.
    pub gamma: Slice<'a, T>,
    /// The forward's saved mean.
    pub mean: Slice<'a, T>,
    /// The forward's saved rstd.
    pub rstd: Slice<'a, T>,
    /// Gradient of the output.
    pub dy: Slice<'a, T>,
    /// Gradient of the input (overwritten).
    pub dx: SliceMut<'a, T>,
    /// Gradient of gamma.
    pub dgamma: SliceMut<'a, T>,
    /// Gradient of beta.
    pub dbeta: SliceMut<'a, T>,
}

/// The views of causal attention forward.
#[derive(Debug)]
pub struct AttentionArgs<'a, T: ?Sized> {
    /// Queries `[b, s, h, d]` (token-major: see [`AttentionShape::row`]).
    pub q: Slice<'a, T>,
    /// Keys `[b, s, h, d]`.
    pub k: Slice<'a, T>,
    /// Values `[b, s, h, d]`.
    pub v: Slice<'a, T>,
    /// Output `[b, s, h, d]`.
    pub out: SliceMut<'a, T>,
    /// Saved log-sum-exp of the scaled scores per query, f32 `[b, h, s]`.
    pub lse: SliceMut<'a, T>,
}

/// The views of causal attention backward.
#[derive(Debug)]
pub struct AttentionBackwardArgs<'a, T: ?Sized> {
    /// The forward's queries.
    pub q: Slice<'a, T>,
    /// The forward's keys.
    pub k: Slice<'a, T>,
    /// The forward's values.
    pub v: Slice<'a, T>,
    /// The forward's output.
    pub out: Slice<'a, T>,
    /// The forward's saved log-sum-exp.
    pub lse: Slice<'a, T>,
    /// Gradient of the output.
    pub dout: Slice<'a, T>,
    /// Gradient of q (overwritten).
    pub dq: SliceMut<'a, T>,
    /// Gradient of k (overwritten).
    pub dk: SliceMut<'a, T>,
    /// Gradient of v (overwritten).
    pub dv: SliceMut<'a, T>,
}

/// Neural-network forward and backward kernels.
pub trait NnKernels: Memory {
    /// `x[r, c] += bias[c]`.
    fn bias_add(
        &self,
        shape: Shape2,
        x: ViewMut<'_, Self>,
        bias: View<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `db[c] = (accumulate ? db[c] : 0) + sum_r dy[r, c]`.
    fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, Self>,
        db: ViewMut<'_, Self>,
        accumulate: bool,
        _: Validated,
    ) -> Result<()>;
    /// `y = gelu(x)`, tanh form.
    fn gelu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `dx = dy * gelu'(x)`.
    fn gelu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `y = max(x, 0)`.
    fn relu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()>;
    /// `dx = x > 0 ? dy : 0`.
    fn relu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// LayerNorm over the last dimension.
    fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        args: LayerNormArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// LayerNorm's gradients; `accumulate` adds into dgamma and dbeta.
    fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        args: LayerNormBackwardArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// Per-row `loss = logsumexp(logits) - logits[label]`, 0 for `ignore_index` rows.
    fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        losses: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `dlogits = scale * (softmax(logits) - onehot(label))`, 0 for `ignore_index` rows.
    #[allow(clippy::too_many_arguments)] // the Device method's six arguments, self and the token
    fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        dlogits: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `out[i, :] = table[ids[i], :]`.
    fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, Self>,
        table: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// `dtable[ids[i], :] += dout[i, :]` (after zeroing unless `accumulate`).
    fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        dtable: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()>;
    /// Causal softmax attention, token-major `[batch, seq, heads, head_dim]`: for each query
    /// position i, `out[i] = sum_{j<=i} softmax_j(scale * q_i . k_j) v_j`, and
    /// `lse[i] = log sum_{j<=i} exp(scale * q_i . k_j)` in f32 for backward (formulas and
    /// layout on [`crate::Device::attention`] and [`AttentionShape`]).
    fn attention(
        &self,
        shape: &AttentionShape,
        args: AttentionArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
    /// Causal softmax attention's gradients `dq`, `dk`, `dv` from `dout`, recomputing the
    /// probabilities from the saved `lse` (see [`crate::Device::attention_backward`]).
    fn attention_backward(
        &self,
        shape: &AttentionShape,
        args: AttentionBackwardArgs<'_, Self::Buffer>,
        _: Validated,
    ) -> Result<()>;
}

/// A complete ds backend: memory plus every kernel family. Implemented automatically for any
/// type that implements the family traits; this is what generic code names.
pub trait Backend:
    Memory + ElementwiseKernels + ReductionKernels + OptimizerKernels + LinalgKernels + NnKernels
{
}

impl<T> Backend for T where
    T: Memory
        + ElementwiseKernels
        + ReductionKernels
        + OptimizerKernels
        + LinalgKernels
        + NnKernels
{
}
