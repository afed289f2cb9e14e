//! ds-nn: layers with forward and backward written on ds-core's kernels, and two reference
//! models that implement the engine's [`ds_zero::model::Model`] trait.
//!
//! - [`layers`]: Linear, Embedding (tokens and positions), LayerNorm, causal self-attention;
//!   GELU, ReLU, residual additions and softmax cross-entropy are single kernels the models
//!   call directly.
//! - [`models`]: an MLP classifier and a GPT (GPT-2's pre-norm layout, tied output head).
//!
//! Every backward is checked against finite differences (`tests/gradients.rs`).

pub mod data;
pub mod layers;
pub mod loss;
pub mod models;
pub mod profile;
pub mod registry;

pub use models::{Gpt, GptConfig, MlpClassifier};
pub use registry::{Init, Registry};
