//! What a device is and what it can do.
//!
//! Capabilities are stated per kernel family and dtype, because that is how hardware differs
//! (an adapter without `SHADER_F16`, a GEMM library without bf16). The checked front door
//! ([`crate::Device`]) consults them before every kernel, so an unsupported combination is an
//! [`crate::Error::Unsupported`] with the backend's own reason, never a panic or a silent f32
//! fallback.

use crate::dtype::DType;
use std::fmt;

/// A group of kernels that share dtype support on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelFamily {
    /// fill, copy, scale, axpy, add, mul.
    Elementwise,
    /// Conversions among the float types.
    Cast,
    /// sum, sum of squares, non-finite check, fused unscale-and-check.
    Reduction,
    /// Fused Adam/AdamW, SGD and Lamb steps (the dtype is the gradient's and the copy-out's).
    Optimizer,
    /// Matrix multiplication.
    Gemm,
    /// Bias add/gradient, GELU, ReLU.
    Activation,
    /// LayerNorm.
    Normalization,
    /// Softmax cross-entropy.
    Loss,
    /// Embedding lookup and its gradient.
    Embedding,
    /// Causal self-attention.
    Attention,
}

impl KernelFamily {
    /// Every family.
    pub const ALL: [KernelFamily; 10] = [
        KernelFamily::Elementwise,
        KernelFamily::Cast,
        KernelFamily::Reduction,
        KernelFamily::Optimizer,
        KernelFamily::Gemm,
        KernelFamily::Activation,
        KernelFamily::Normalization,
        KernelFamily::Loss,
        KernelFamily::Embedding,
        KernelFamily::Attention,
    ];

    /// Lower-case name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            KernelFamily::Elementwise => "elementwise",
            KernelFamily::Cast => "cast",
            KernelFamily::Reduction => "reduction",
            KernelFamily::Optimizer => "optimizer",
            KernelFamily::Gemm => "gemm",
            KernelFamily::Activation => "activation",
            KernelFamily::Normalization => "normalization",
            KernelFamily::Loss => "loss",
            KernelFamily::Embedding => "embedding",
            KernelFamily::Attention => "attention",
        }
    }
}

impl fmt::Display for KernelFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether one (family, dtype) pair is supported, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// The backend implements it.
    Yes,
    /// The backend does not, for the stated reason.
    No(String),
}

/// Per-family dtype support of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    entries: Vec<(KernelFamily, DType, Support)>,
}

impl Capabilities {
    /// Every family supports f32, f16 and bf16 storage: what a backend that computes in f32
    /// and converts on load/store (the CPU backend) offers.
    pub fn all_floats() -> Self {
        let mut entries = Vec::new();
        for family in KernelFamily::ALL {
            for dtype in DType::FLOATS {
                entries.push((family, dtype, Support::Yes));
            }
        }
        Capabilities { entries }
    }

    /// Marks one pair unsupported with the reason users will read.
    pub fn without(
        mut self,
        family: KernelFamily,
        dtype: DType,
        reason: impl Into<String>,
    ) -> Self {
        let reason = reason.into();
        self.entries
            .retain(|(f, d, _)| !(*f == family && *d == dtype));
        self.entries.push((family, dtype, Support::No(reason)));
        self
    }

    /// Support for one pair. Pairs never mentioned are unsupported.
    pub fn support(&self, family: KernelFamily, dtype: DType) -> Support {
        self.entries
            .iter()
            .find(|(f, d, _)| *f == family && *d == dtype)
            .map(|(_, _, s)| s.clone())
            .unwrap_or_else(|| Support::No(format!("{family} kernels do not take {dtype}")))
    }

    /// The dtypes a family supports, in [`DType::FLOATS`] order.
    pub fn dtypes(&self, family: KernelFamily) -> Vec<DType> {
        DType::FLOATS
            .into_iter()
            .filter(|d| self.support(family, *d) == Support::Yes)
            .collect()
    }
}

/// A description of one device: what `ds report` prints and what the engine plans with.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInfo {
    /// The backend's short name: `cpu`, `cuda`, `rocm`, `wgpu`.
    pub backend: &'static str,
    /// The device's name as its driver reports it.
    pub name: String,
    /// The vendor.
    pub vendor: String,
    /// Total device memory in bytes (for the CPU: physical RAM).
    pub memory_total: u64,
    /// Parallel units: CPU threads the backend uses, GPU multiprocessors or compute units.
    pub compute_units: usize,
    /// The largest element count one kernel argument may span, where the device limits it.
    pub max_buffer_elements: Option<usize>,
    /// Per-family dtype support.
    pub capabilities: Capabilities,
}
