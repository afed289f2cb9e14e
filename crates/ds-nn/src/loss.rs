//! The models' loss: mean softmax cross-entropy over rows, labels of -100 ignored.

use crate::profile::{self, Part};
use ds_core::kernels::View;
use ds_core::params::Shape2;
use ds_core::{Backend, BufferExt, DType, Device, Result};

/// Labels equal to this contribute no loss and no gradient (PyTorch's default).
pub const IGNORE_INDEX: i32 = -100;

/// The mean over `shape.rows` rows of the cross-entropy of `logits` (`rows x classes`)
/// against i32 `labels`, summed in f64 on the host.
///
/// # Errors
/// Kernel and allocation errors.
pub fn mean_cross_entropy<B: Backend>(
    dev: &Device<B>,
    shape: Shape2,
    logits: View<'_, B>,
    labels: View<'_, B>,
) -> Result<f32> {
    let mut losses = dev.alloc(DType::F32, shape.rows)?;
    profile::timed(dev, Part::Loss, || {
        dev.softmax_cross_entropy(shape, IGNORE_INDEX, logits, labels, losses.all_mut())
    })?;
    let host: Vec<f32> = dev.to_vec(losses.all())?;
    let sum: f64 = host.iter().map(|&l| f64::from(l)).sum();
    Ok((sum / shape.rows.max(1) as f64) as f32)
}

/// The gradient of `scale` times [`mean_cross_entropy`] with respect to the logits.
///
/// # Errors
/// Kernel and allocation errors.
pub fn mean_cross_entropy_backward<B: Backend>(
    dev: &Device<B>,
    shape: Shape2,
    scale: f32,
    logits: View<'_, B>,
    labels: View<'_, B>,
) -> Result<B::Buffer> {
    let mut dlogits = dev.alloc(logits.dtype(), shape.rows * shape.cols)?;
    profile::timed(dev, Part::Loss, || {
        dev.softmax_cross_entropy_backward(
            shape,
            IGNORE_INDEX,
            scale / shape.rows.max(1) as f32,
            logits,
            labels,
            dlogits.all_mut(),
        )
    })?;
    Ok(dlogits)
}
