//! Where a model accumulates its gradients.

use ds_core::kernels::ViewMut;
use ds_core::{Backend, Result};

/// Where the model accumulates gradients during backward.
pub trait GradSink<B: Backend> {
    /// The gradient of parameter `index` (training dtype, zeroed at the start of every
    /// accumulation window) to accumulate into: `grad += scale * dloss/dparam`.
    ///
    /// # Errors
    /// Trainer errors (allocation, an index past the parameters).
    fn grad(&mut self, index: usize) -> Result<ViewMut<'_, B>>;

    /// Parameter `index`'s gradient for this micro-batch is complete. Called once per
    /// parameter per backward, in any order; the trainer may reduce it across ranks at once.
    ///
    /// # Errors
    /// Trainer and collective errors.
    fn done(&mut self, index: usize) -> Result<()>;
}
