//! The model the engine drives.
//!
//! The engine owns the parameters (one flat buffer in the training dtype), the gradients and
//! the optimizer state; the model describes its parameters, computes a loss from them and
//! accumulates gradients into views the engine hands out. Because the model reaches its
//! parameters through [`Params`] and its gradients through a [`GradSink`], the engine decides
//! where they live: whole on every rank (ZeRO 0-2), in buckets that are reduced as soon as they
//! are complete (ZeRO 2), and later gathered layer by layer (ZeRO 3).

use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, Device, Error, Result};

/// One parameter tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSpec {
    /// A unique, stable name (checkpoints and consolidated weights use it).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

impl ParamSpec {
    /// A parameter named `name` of `shape`.
    pub fn new(name: impl Into<String>, shape: &[usize]) -> Self {
        ParamSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }

    /// Its number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where each parameter lives in the flat parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// First element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Slot {
    /// The parameters `specs` back to back from element 0, without the engine's bucket
    /// padding: the layout for tools and tests that drive a model without the engine.
    pub fn packed(specs: &[ParamSpec]) -> Vec<Slot> {
        let mut offset = 0;
        specs
            .iter()
            .map(|s| {
                let slot = Slot {
                    offset,
                    len: s.numel(),
                };
                offset += s.numel();
                slot
            })
            .collect()
    }
}

/// Read access to the model's parameters for one forward or backward.
pub struct Params<'a, B: Backend> {
    pub(crate) buf: &'a B::Buffer,
    pub(crate) slots: &'a [Slot],
}

impl<'a, B: Backend> Params<'a, B> {
    /// Parameters laid out in `buf` at `slots` (the engine makes these; tests and tools that
    /// drive a model without the engine, such as gradient checks, make their own).
    pub fn new(buf: &'a B::Buffer, slots: &'a [Slot]) -> Self {
        Params { buf, slots }
    }

    /// A view of parameter `index` (in the training dtype).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index past the model's parameters.
    pub fn get(&self, index: usize) -> Result<View<'a, B>> {
        let s = self.slots.get(index).ok_or_else(|| {
            Error::invalid(
                "Params::get",
                "index",
                format!("{index} is past the {} parameters", self.slots.len()),
            )
        })?;
        Ok(self.buf.range(s.offset..s.offset + s.len))
    }

    /// The number of parameters.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// Where the model accumulates gradients during backward.
pub trait GradSink<B: Backend> {
    /// The gradient of parameter `index` (training dtype, zeroed at the start of every
    /// accumulation window) to accumulate into: `grad += scale * dloss/dparam`.
    ///
    /// # Errors
    /// Engine errors (allocation, an index past the parameters).
    fn grad(&mut self, index: usize) -> Result<ViewMut<'_, B>>;

    /// Parameter `index`'s gradient for this micro-batch is complete. Called once per
    /// parameter per backward, in any order; the engine may reduce it across ranks at once.
    ///
    /// # Errors
    /// Engine and collective errors.
    fn done(&mut self, index: usize) -> Result<()>;
}

/// A trainable model.
pub trait Model<B: Backend> {
    /// One micro-batch of input.
    type Batch;

    /// The parameters, in a fixed order (their indices in [`Params`] and [`GradSink`]).
    fn parameters(&self) -> Vec<ParamSpec>;

    /// Initial values of parameter `index` (fp32, host), deterministic in `seed`.
    fn init(&self, index: usize, seed: u64, out: &mut [f32]);

    /// Computes the mean loss of the micro-batch, keeping what `backward` needs.
    ///
    /// # Errors
    /// Kernel and allocation errors.
    fn forward(
        &mut self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        batch: &Self::Batch,
    ) -> Result<f32>;

    /// Back-propagates the last forward: accumulates `scale * dloss/dparam` into `grads` and
    /// calls `grads.done(i)` once for every parameter `i`.
    ///
    /// # Errors
    /// Kernel, allocation and engine errors.
    fn backward(
        &mut self,
        dev: &Device<B>,
        params: &Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        scale: f32,
    ) -> Result<()>;
}
