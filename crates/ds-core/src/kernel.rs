//! The names of ds's kernels and the families they belong to.
//!
//! A [`Kernel`] names one operation the way errors, capability tables and the conformance
//! coverage matrix refer to it; the families group kernels that a backend tends to support
//! (or not) together for a dtype.

use crate::info::KernelFamily;
use std::fmt;

/// Every operation of the backend contract, memory copies included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)] // the names are the documentation; semantics live on `Device`'s methods
pub enum Kernel {
    Copy,
    Fill,
    Cast,
    Scale,
    Axpy,
    Add,
    Mul,
    Sum,
    SumSquares,
    NonFinite,
    UnscaleCheck,
    AdamStep,
    SgdStep,
    LambStep,
    AdagradStep,
    LionStep,
    Gemm,
    BiasAdd,
    BiasGrad,
    Gelu,
    GeluBackward,
    Relu,
    ReluBackward,
    LayerNorm,
    LayerNormBackward,
    SoftmaxCrossEntropy,
    SoftmaxCrossEntropyBackward,
    Embedding,
    EmbeddingBackward,
    Attention,
    AttentionBackward,
}

impl Kernel {
    /// Every kernel, in the order of the coverage matrix.
    pub const ALL: [Kernel; 31] = [
        Kernel::Copy,
        Kernel::Fill,
        Kernel::Cast,
        Kernel::Scale,
        Kernel::Axpy,
        Kernel::Add,
        Kernel::Mul,
        Kernel::Sum,
        Kernel::SumSquares,
        Kernel::NonFinite,
        Kernel::UnscaleCheck,
        Kernel::AdamStep,
        Kernel::SgdStep,
        Kernel::LambStep,
        Kernel::AdagradStep,
        Kernel::LionStep,
        Kernel::Gemm,
        Kernel::BiasAdd,
        Kernel::BiasGrad,
        Kernel::Gelu,
        Kernel::GeluBackward,
        Kernel::Relu,
        Kernel::ReluBackward,
        Kernel::LayerNorm,
        Kernel::LayerNormBackward,
        Kernel::SoftmaxCrossEntropy,
        Kernel::SoftmaxCrossEntropyBackward,
        Kernel::Embedding,
        Kernel::EmbeddingBackward,
        Kernel::Attention,
        Kernel::AttentionBackward,
    ];

    /// The snake_case name used in errors and reports (matches the `Device` method).
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Copy => "copy",
            Kernel::Fill => "fill",
            Kernel::Cast => "cast",
            Kernel::Scale => "scale",
            Kernel::Axpy => "axpy",
            Kernel::Add => "add",
            Kernel::Mul => "mul",
            Kernel::Sum => "sum",
            Kernel::SumSquares => "sum_squares",
            Kernel::NonFinite => "non_finite",
            Kernel::UnscaleCheck => "unscale_and_check",
            Kernel::AdamStep => "adam_step",
            Kernel::SgdStep => "sgd_step",
            Kernel::LambStep => "lamb_step",
            Kernel::AdagradStep => "adagrad_step",
            Kernel::LionStep => "lion_step",
            Kernel::Gemm => "gemm",
            Kernel::BiasAdd => "bias_add",
            Kernel::BiasGrad => "bias_grad",
            Kernel::Gelu => "gelu",
            Kernel::GeluBackward => "gelu_backward",
            Kernel::Relu => "relu",
            Kernel::ReluBackward => "relu_backward",
            Kernel::LayerNorm => "layer_norm",
            Kernel::LayerNormBackward => "layer_norm_backward",
            Kernel::SoftmaxCrossEntropy => "softmax_cross_entropy",
            Kernel::SoftmaxCrossEntropyBackward => "softmax_cross_entropy_backward",
            Kernel::Embedding => "embedding",
            Kernel::EmbeddingBackward => "embedding_backward",
            Kernel::Attention => "attention",
            Kernel::AttentionBackward => "attention_backward",
        }
    }

    /// The family whose capability entry decides whether a dtype is supported.
    pub const fn family(self) -> KernelFamily {
        match self {
            Kernel::Copy
            | Kernel::Fill
            | Kernel::Scale
            | Kernel::Axpy
            | Kernel::Add
            | Kernel::Mul => KernelFamily::Elementwise,
            Kernel::Cast => KernelFamily::Cast,
            Kernel::Sum | Kernel::SumSquares | Kernel::NonFinite | Kernel::UnscaleCheck => {
                KernelFamily::Reduction
            }
            Kernel::AdamStep
            | Kernel::SgdStep
            | Kernel::LambStep
            | Kernel::AdagradStep
            | Kernel::LionStep => KernelFamily::Optimizer,
            Kernel::Gemm => KernelFamily::Gemm,
            Kernel::BiasAdd
            | Kernel::BiasGrad
            | Kernel::Gelu
            | Kernel::GeluBackward
            | Kernel::Relu
            | Kernel::ReluBackward => KernelFamily::Activation,
            Kernel::LayerNorm | Kernel::LayerNormBackward => KernelFamily::Normalization,
            Kernel::SoftmaxCrossEntropy | Kernel::SoftmaxCrossEntropyBackward => KernelFamily::Loss,
            Kernel::Embedding | Kernel::EmbeddingBackward => KernelFamily::Embedding,
            Kernel::Attention | Kernel::AttentionBackward => KernelFamily::Attention,
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
