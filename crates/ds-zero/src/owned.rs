//! The elements a rank owns, however they are stored: the optimizer reads gradients and
//! updates parameters through these two traits, so one optimizer serves the device's
//! parameter store and gradients (ZeRO 0-3) and the host's partitions (offload).
//!
//! An owned piece is named twice: by its flat range (where the element sits in the whole
//! model, what a whole flat buffer indexes by) and by `local`, where it starts in this rank's
//! partition order (what a partition buffer indexes by).

use crate::layout::Layout;
use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, DType, Device, Result};
use std::ops::Range;

/// Owned elements a step reads.
pub(crate) trait OwnedElements<B: Backend> {
    /// Owned flat elements `range` (within one bucket), starting at `local` in partition order.
    ///
    /// # Errors
    /// When the elements are not held here (gradients streamed to the host under offload).
    fn piece(&self, layout: &Layout, range: Range<usize>, local: usize) -> Result<View<'_, B>>;

    /// The elements this rank owns in bucket `b`.
    ///
    /// # Errors
    /// As [`OwnedElements::piece`].
    fn owned(&self, layout: &Layout, b: usize) -> Result<View<'_, B>> {
        let bucket = &layout.buckets[b];
        self.piece(layout, bucket.owned.clone(), bucket.local)
    }
}

/// Owned elements a step writes.
pub(crate) trait OwnedElementsMut<B: Backend>: OwnedElements<B> {
    /// Writable form of [`OwnedElements::piece`].
    ///
    /// # Errors
    /// As [`OwnedElements::piece`].
    fn piece_mut(
        &mut self,
        layout: &Layout,
        range: Range<usize>,
        local: usize,
    ) -> Result<ViewMut<'_, B>>;
}

/// One buffer of a rank's owned elements, concatenated in partition order (bucket by bucket,
/// `layout.owned_len` elements): the shape of optimizer state, and of the host's copies of
/// gradients and parameters under offload.
pub(crate) struct Partition<B: Backend>(pub(crate) B::Buffer);

impl<B: Backend> Partition<B> {
    /// A zeroed partition of `layout.owned_len` elements of `dtype`.
    pub(crate) fn zeros(dev: &Device<B>, layout: &Layout, dtype: DType) -> Result<Self> {
        let mut buf = dev.alloc(dtype, layout.owned_len)?;
        dev.fill(buf.all_mut(), 0.0)?;
        Ok(Partition(buf))
    }
}

impl<B: Backend> OwnedElements<B> for Partition<B> {
    fn piece(&self, _: &Layout, range: Range<usize>, local: usize) -> Result<View<'_, B>> {
        Ok(self.0.range(local..local + range.len()))
    }
}

impl<B: Backend> OwnedElementsMut<B> for Partition<B> {
    fn piece_mut(
        &mut self,
        _: &Layout,
        range: Range<usize>,
        local: usize,
    ) -> Result<ViewMut<'_, B>> {
        Ok(self.0.range_mut(local..local + range.len()))
    }
}
