//! The trainable-model trait.

use crate::{GradSink, ParamGroup, ParamSpec, Params};
use ds_core::{Backend, Device, Error, Result};

/// A trainable model.
pub trait Model<B: Backend> {
    /// One micro-batch of input.
    type Batch;

    /// The parameters, in a fixed order (their indices in [`Params`] and [`GradSink`]).
    fn parameters(&self) -> Vec<ParamSpec>;

    /// The parameters' groups: consecutive index ranges covering every parameter once, in the
    /// order forward first uses them (a layer, a block). A group is the unit a scope opens
    /// and ZeRO stage 3 gathers.
    fn groups(&self) -> Vec<ParamGroup>;

    /// Initial values of parameter `index` (fp32, host), deterministic in `seed`.
    fn init(&self, index: usize, seed: u64, out: &mut [f32]);

    /// Computes the mean loss of the micro-batch, keeping what `backward` needs. Opens each
    /// group's scope before reading its parameters and closes it after.
    ///
    /// # Errors
    /// Kernel and allocation errors; a parameter read outside its group's scope.
    fn forward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        batch: &Self::Batch,
    ) -> Result<f32>;

    /// Back-propagates the last forward: accumulates `scale * dloss/dparam` into `grads` and
    /// calls `grads.done(i)` once for every parameter `i`, opening scopes as forward does.
    ///
    /// # Errors
    /// Kernel, allocation and trainer errors; a parameter read outside its group's scope.
    fn backward(
        &mut self,
        dev: &Device<B>,
        params: &mut Params<'_, B>,
        grads: &mut dyn GradSink<B>,
        scale: f32,
    ) -> Result<()>;

    /// DeepSpeed's legacy curriculum learning (`curriculum_type: "seqlen"`): the engine calls
    /// this before each forward with the schedule's current sequence length, and the model
    /// trains on the first `seqlen` positions of each sequence (Megatron's `curriculum_seqlen`).
    /// A model that cannot keeps this default, which refuses, so `initialize` names it.
    ///
    /// # Errors
    /// The model does not take a curriculum sequence length.
    fn set_curriculum_seqlen(&mut self, seqlen: usize) -> Result<()> {
        let _ = seqlen;
        Err(Error::invalid(
            "Model::set_curriculum_seqlen",
            "curriculum_learning",
            "this model does not take a curriculum sequence length (curriculum_type \"seqlen\"); \
             remove curriculum_learning or implement Model::set_curriculum_seqlen",
        ))
    }
}
