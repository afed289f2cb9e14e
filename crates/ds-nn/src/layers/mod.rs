//! Layers on ds-core's kernels. Each keeps the indices of its parameters; its forward returns
//! what its backward needs, and its backward accumulates `scale * dloss/dparam` into the
//! engine's gradients (marking each parameter done) and returns the input's gradient.

mod attention;
mod embedding;
mod layer_norm;
mod linear;

pub use attention::{AttentionSaved, CausalSelfAttention, Tokens};
pub use embedding::Embedding;
pub use layer_norm::{LayerNorm, LayerNormSaved};
pub use linear::Linear;
