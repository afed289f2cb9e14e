//! The models' loss: mean softmax cross-entropy over rows, labels of -100 ignored.
//!
//! The mean is PyTorch's `reduction='mean'` (what DeepSpeed users' models compute): the sum
//! over the rows that count, divided by how many count, so a batch with padding or prompt
//! tokens masked out is not scaled down by them. A batch whose every row is ignored has a NaN
//! loss, as in PyTorch, and a zero gradient.

use crate::profile::{self, Part};
use ds_core::kernels::View;
use ds_core::params::Shape2;
use ds_core::{Backend, BufferExt, DType, Device, Result};

/// Labels equal to this contribute no loss and no gradient (PyTorch's default).
pub const IGNORE_INDEX: i32 = -100;

/// The rows of `labels` that count (are not [`IGNORE_INDEX`]): what the mean divides by. The
/// models count their labels on the host, where they have them before uploading.
pub fn counted_rows(labels: &[i32]) -> usize {
    labels.iter().filter(|&&l| l != IGNORE_INDEX).count()
}

/// The mean over the `counted` rows ([`counted_rows`]) of the cross-entropy of `logits` (`rows
/// x classes`) against i32 `labels`, summed in f64 on the host.
///
/// # Errors
/// Kernel and allocation errors.
pub fn mean_cross_entropy<B: Backend>(
    dev: &Device<B>,
    shape: Shape2,
    logits: View<'_, B>,
    labels: View<'_, B>,
    counted: usize,
) -> Result<f32> {
    let mut losses = dev.alloc_for_overwrite(DType::F32, shape.rows)?;
    profile::timed(dev, Part::Loss, || {
        dev.softmax_cross_entropy(shape, IGNORE_INDEX, logits, labels, losses.all_mut())
    })?;
    let host: Vec<f32> = dev.to_vec(losses.all())?;
    let sum: f64 = host.iter().map(|&l| f64::from(l)).sum();
    Ok((sum / counted as f64) as f32)
}

/// The gradient of `scale` times [`mean_cross_entropy`] with respect to the logits (`counted`
/// as there).
///
/// # Errors
/// Kernel and allocation errors.
pub fn mean_cross_entropy_backward<B: Backend>(
    dev: &Device<B>,
    shape: Shape2,
    scale: f32,
    logits: View<'_, B>,
    labels: View<'_, B>,
    counted: usize,
) -> Result<B::Buffer> {
    let mut dlogits = dev.alloc_for_overwrite(logits.dtype(), shape.rows * shape.cols)?;
    // Ignored rows get a zero gradient whatever the scale; with none counted there is nothing
    // to divide.
    let rows = counted.max(1);
    profile::timed(dev, Part::Loss, || {
        dev.softmax_cross_entropy_backward(
            shape,
            IGNORE_INDEX,
            scale / rows as f32,
            logits,
            labels,
            dlogits.all_mut(),
        )
    })?;
    Ok(dlogits)
}
