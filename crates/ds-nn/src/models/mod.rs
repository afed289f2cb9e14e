//! Reference models built from the layers.

mod gpt;
mod mlp;

pub use gpt::{Gpt, GptConfig};
pub use mlp::MlpClassifier;
