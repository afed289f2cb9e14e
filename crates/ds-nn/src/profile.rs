//! Where a model's time goes: when profiling is on (on this thread), GEMMs and attention
//! kernels are timed, with the device synchronized around each so asynchronous backends are
//! timed too. Off by default, when it costs one thread-local read per call.

use ds_core::kernels::{AttentionArgs, AttentionBackwardArgs, View, ViewMut};
use ds_core::params::{AttentionShape, GemmSpec};
use ds_core::{Backend, Device, Result};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Time spent in each kind of kernel since [`start`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Breakdown {
    /// Matrix multiplications (projections, MLP, output head and their gradients).
    pub gemm: Duration,
    /// Causal attention forward and backward.
    pub attention: Duration,
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

fn timed<B: Backend>(
    dev: &Device<B>,
    add: impl FnOnce(&mut Breakdown, Duration),
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
        add(&mut b, spent);
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
    timed(dev, |s, d| s.gemm += d, || dev.gemm(spec, a, b, c))
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
    timed(dev, |s, d| s.attention += d, || dev.attention(shape, args))
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
    timed(
        dev,
        |s, d| s.attention += d,
        || dev.attention_backward(shape, args),
    )
}
