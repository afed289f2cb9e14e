//! ds-nn: layers and reference models (not built yet).
//!
//! This crate will hold layers written on ds-core's kernels (Linear, Embedding, LayerNorm,
//! GELU, ReLU, causal self-attention, residual blocks, softmax cross-entropy) and two reference
//! models (an MLP classifier and a GPT-2-shaped decoder) implementing the engine's model
//! trait. It is filled by the models issue; until then it exports nothing.
