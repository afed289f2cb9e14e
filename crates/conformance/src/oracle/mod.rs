//! The reference: plain scalar loops in f64, obviously correct and slow on purpose.
//!
//! Each function takes the exact stored input values (as f64) and returns the exact result
//! rounded to the output's storage type, with `mag`: the size of the terms behind each value,
//! which the tolerance policy ([`crate::tolerance`]) uses to judge cancellation fairly. The
//! formulas are DESIGN.md's kernel semantics, written independently of any backend.

mod attention;
mod elementwise;
mod linalg;
mod nn;
mod optim;
mod round;

pub use attention::{AttentionGrads, attention, attention_backward};
pub use elementwise::{axpy, binary, cast, fill, scale, sum, sum_squares, unscale};
pub use linalg::gemm;
pub use nn::{
    LayerNormGrads, LayerNormOut, bias_add, bias_grad, embedding, embedding_backward, gelu,
    gelu_backward, layer_norm, layer_norm_backward, relu, relu_backward, xent, xent_backward,
};
pub use optim::{AdamOut, adagrad, adam, lamb, lion, sgd};
pub use round::round_to;

/// Values with the magnitudes of the terms that produced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Expected {
    /// The exact result, rounded to the output dtype.
    pub value: Vec<f64>,
    /// Per element, the size of the terms behind it.
    pub mag: Vec<f64>,
}

impl Expected {
    /// An empty result with room for `n` values.
    pub fn with_capacity(n: usize) -> Self {
        Expected {
            value: Vec::with_capacity(n),
            mag: Vec::with_capacity(n),
        }
    }

    /// Appends one value (rounded to `dtype`) with its magnitude.
    pub fn push(&mut self, dtype: ds_core::DType, value: f64, mag: f64) {
        self.value.push(round_to(dtype, value));
        self.mag.push(mag);
    }
}
