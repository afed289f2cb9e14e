//! Where a model's time goes: when profiling is on (on this thread), every kernel the layers
//! and models call is timed by [`Part`], with the device synchronized around each so
//! asynchronous backends are timed too. Off by default, when it costs one thread-local read
//! per call. What a step spends outside these parts is the engine's and the allocator's.

use ds_core::kernels::{AttentionArgs, AttentionBackwardArgs, View, ViewMut};
use ds_core::params::{AttentionShape, GemmSpec};
use ds_core::{Backend, Device, Result};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The kinds of kernel a step is itemised by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Matrix multiplications (projections, MLP, output head and their gradients).
    Gemm,
    /// Causal attention forward and backward.
    Attention,
    /// LayerNorm forward and backward (and its bias gradient).
    LayerNorm,
    /// GELU / ReLU forward and backward.
    Activation,
    /// Bias adds and bias gradients.
    Bias,
    /// Embedding lookups and their gradients.
    Embedding,
    /// Softmax cross-entropy forward and backward.
    Loss,
    /// Residual adds, gradient sums and fills.
    Elementwise,
}

impl Part {
    /// Every part, in report order.
    pub const ALL: [Part; 8] = [
        Part::Gemm,
        Part::Attention,
        Part::LayerNorm,
        Part::Activation,
        Part::Bias,
        Part::Embedding,
        Part::Loss,
        Part::Elementwise,
    ];

    /// What the part covers, for reports.
    pub fn label(self) -> &'static str {
        match self {
            Part::Gemm => "GEMM (projections, MLP, head; fwd + bwd)",
            Part::Attention => "attention kernels (fwd + bwd)",
            Part::LayerNorm => "LayerNorm (fwd + bwd)",
            Part::Activation => "GELU / ReLU (fwd + bwd)",
            Part::Bias => "bias add and bias gradients",
            Part::Embedding => "embeddings (fwd + bwd)",
            Part::Loss => "softmax cross-entropy (fwd + bwd)",
            Part::Elementwise => "residual adds, gradient sums, fills",
        }
    }
}

/// Time spent in each [`Part`] since [`start`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Breakdown {
    spent: [Duration; 8],
}

impl Breakdown {
    /// The time spent in `part`.
    pub fn get(&self, part: Part) -> Duration {
        self.spent[part as usize]
    }

    /// Every part's time added together.
    pub fn total(&self) -> Duration {
        self.spent.iter().sum()
    }

    /// This breakdown plus `other`.
    pub fn plus(mut self, other: &Breakdown) -> Breakdown {
        for (a, b) in self.spent.iter_mut().zip(other.spent) {
            *a += b;
        }
        self
    }
}

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static SPENT: Cell<Breakdown> = Cell::new(Breakdown::default());
}

/// Starts timing on this thread from zero.
pub fn start() {
    SPENT.with(|s| s.set(Breakdown::default()));
    ON.with(|o| o.set(true));
}

/// Stops timing and returns what was spent.
pub fn stop() -> Breakdown {
    ON.with(|o| o.set(false));
    SPENT.with(Cell::get)
}

/// Runs `f`, timing it as `part` when profiling.
///
/// # Errors
/// `f`'s errors; device synchronisation errors when profiling.
pub fn timed<B: Backend>(
    dev: &Device<B>,
    part: Part,
    f: impl FnOnce() -> Result<()>,
) -> Result<()> {
    if !ON.with(Cell::get) {
        return f();
    }
    dev.sync()?;
    let t = Instant::now();
    f()?;
    dev.sync()?;
    let spent = t.elapsed();
    SPENT.with(|s| {
        let mut b = s.get();
        b.spent[part as usize] += spent;
        s.set(b);
    });
    Ok(())
}

/// [`Device::gemm`], timed when profiling.
///
/// # Errors
/// As the kernel.
pub fn gemm<B: Backend>(
    dev: &Device<B>,
    spec: &GemmSpec,
    a: View<'_, B>,
    b: View<'_, B>,
    c: ViewMut<'_, B>,
) -> Result<()> {
    timed(dev, Part::Gemm, || dev.gemm(spec, a, b, c))
}

/// [`Device::attention`], timed when profiling.
///
/// # Errors
/// As the kernel.
pub fn attention<B: Backend>(
    dev: &Device<B>,
    shape: &AttentionShape,
    args: AttentionArgs<'_, B::Buffer>,
) -> Result<()> {
    timed(dev, Part::Attention, || dev.attention(shape, args))
}

/// [`Device::attention_backward`], timed when profiling.
///
/// # Errors
/// As the kernel.
pub fn attention_backward<B: Backend>(
    dev: &Device<B>,
    shape: &AttentionShape,
    args: AttentionBackwardArgs<'_, B::Buffer>,
) -> Result<()> {
    timed(dev, Part::Attention, || dev.attention_backward(shape, args))
}
