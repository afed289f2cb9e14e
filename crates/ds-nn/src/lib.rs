//! ds-nn: layers with forward and backward written on ds-core's kernels, and two reference
//! models that implement ds-model's [`ds_model::Model`] trait (so any trainer, ds-zero's
//! engine at every ZeRO stage among them, drives them).
//!
//! - [`layers`]: Linear, Embedding (tokens and positions), LayerNorm, causal self-attention;
//!   GELU, ReLU, residual additions and softmax cross-entropy are single kernels the models
//!   call directly.
//! - [`models`]: an MLP classifier and a GPT (GPT-2's pre-norm layout, tied output head).
//!
//! - [`Blobs`]: a labelled toy dataset for the MLP.
//!
//! Models declare their parameters in groups (a block, the embeddings) and read them only inside
//! the group's scope, which is where ZeRO stage 3 gathers them.
//!
//! Every backward is checked against finite differences (`tests/gradients.rs`).

mod blobs;
pub mod data;
pub mod layers;
pub mod loss;
pub mod models;
pub mod profile;
pub mod registry;

pub use blobs::{Blobs, Sample};
pub use models::{Gpt, GptConfig, MlpClassifier};
pub use registry::{Init, Registry};
