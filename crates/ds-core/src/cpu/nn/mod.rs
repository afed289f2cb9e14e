//! Neural-network kernels on the CPU. Rows (tokens) are the unit of parallel work; anything
//! summed over rows (bias and LayerNorm parameter gradients) is summed per fixed block of rows
//! and the blocks combined in order, so results do not depend on thread timing.

mod activation;
mod attention;
mod bias;
mod embedding;
mod layernorm;
mod small_gemm;
mod xent;
#[cfg(target_arch = "x86_64")]
mod xent_avx512;

use super::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::{
    AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs, NnKernels,
    Validated, View, ViewMut,
};
use crate::params::{AttentionShape, Shape2};

/// Rows per block when summing over rows.
pub(crate) const ROW_BLOCK: usize = 32;

impl NnKernels for CpuBackend {
    fn bias_add(
        &self,
        shape: Shape2,
        x: ViewMut<'_, Self>,
        bias: View<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        bias::add(self, shape, x, bias)
    }

    fn bias_grad(
        &self,
        shape: Shape2,
        dy: View<'_, Self>,
        db: ViewMut<'_, Self>,
        accumulate: bool,
        _: Validated,
    ) -> Result<()> {
        bias::grad(self, shape, dy, db, accumulate)
    }

    fn gelu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        activation::gelu(self, x, y)
    }

    fn gelu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        activation::gelu_backward(self, x, dy, dx)
    }

    fn relu(&self, x: View<'_, Self>, y: ViewMut<'_, Self>, _: Validated) -> Result<()> {
        activation::relu(self, x, y)
    }

    fn relu_backward(
        &self,
        x: View<'_, Self>,
        dy: View<'_, Self>,
        dx: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        activation::relu_backward(self, x, dy, dx)
    }

    fn layer_norm(
        &self,
        shape: Shape2,
        eps: f32,
        args: LayerNormArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        layernorm::forward(self, shape, eps, args)
    }

    fn layer_norm_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        args: LayerNormBackwardArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        layernorm::backward(self, shape, accumulate, args)
    }

    fn softmax_cross_entropy(
        &self,
        shape: Shape2,
        ignore_index: i32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        losses: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        xent::forward(self, shape, ignore_index, logits, labels, losses)
    }

    fn softmax_cross_entropy_backward(
        &self,
        shape: Shape2,
        ignore_index: i32,
        scale: f32,
        logits: View<'_, Self>,
        labels: View<'_, Self>,
        dlogits: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        xent::backward(self, shape, ignore_index, scale, logits, labels, dlogits)
    }

    fn embedding(
        &self,
        shape: Shape2,
        ids: View<'_, Self>,
        table: View<'_, Self>,
        out: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        embedding::forward(self, shape, ids, table, out)
    }

    fn embedding_backward(
        &self,
        shape: Shape2,
        accumulate: bool,
        ids: View<'_, Self>,
        dout: View<'_, Self>,
        dtable: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        embedding::backward(self, shape, accumulate, ids, dout, dtable)
    }

    fn attention(
        &self,
        shape: &AttentionShape,
        args: AttentionArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        attention::forward(self, shape, args)
    }

    fn attention_backward(
        &self,
        shape: &AttentionShape,
        args: AttentionBackwardArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        attention::backward(self, shape, args)
    }
}
