//! Gradient reductions in the communication dtype (`communication_data_type`).
//!
//! A buffer already in that dtype is reduced in place. Any other is cast into a scratch buffer
//! of the wire dtype, reduced there, and (at a boundary) cast back, as DeepSpeed converts a
//! bucket to `communication_data_type` and copies the result back. The scratch is one bucket
//! long, reused within a backward or a boundary and freed after it, so the conversion costs
//! working memory, not model-state memory.

use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, ReduceOp, Result};
use std::ops::Range;

/// The communication dtype and its reusable scratch.
pub(crate) struct Wire<B: Backend> {
    dtype: DType,
    scratch: Option<B::Buffer>,
}

impl<B: Backend> Wire<B> {
    pub(crate) fn new(dtype: DType) -> Self {
        Wire {
            dtype,
            scratch: None,
        }
    }

    /// Frees the scratch: between steps a rank holds only its model states.
    pub(crate) fn release(&mut self) {
        self.scratch = None;
    }

    /// The scratch, at least `len` elements long.
    fn scratch(&mut self, dev: &Device<B>, len: usize) -> Result<&mut B::Buffer> {
        let short = self
            .scratch
            .as_ref()
            .is_none_or(|s| ds_core::DeviceBuffer::len(s) < len);
        if short {
            // Free the short one before allocating its replacement.
            self.scratch = None;
            self.scratch = Some(dev.alloc(self.dtype, len)?);
        }
        self.scratch
            .as_mut()
            .ok_or_else(|| ds_core::Error::invalid("Wire", "scratch", "internal: no scratch"))
    }

    /// Reduces `view` over ranks in the wire dtype and leaves the result in `view`: the whole
    /// of it (all-reduce), or only `owned`, this rank's part, relative to `view`
    /// (reduce-scatter; the rest is unspecified, as after an in-place reduce-scatter).
    pub(crate) fn reduce_in_place(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        mut view: ViewMut<'_, B>,
        owned: Option<Range<usize>>,
    ) -> Result<()> {
        let reduce = |dev: &Device<B>, v: ViewMut<'_, B>| match &owned {
            Some(_) => comm.reduce_scatter_in_place(dev, v, ReduceOp::Sum),
            None => comm.all_reduce(dev, v, ReduceOp::Sum),
        };
        if view.dtype() == self.dtype {
            return reduce(dev, view);
        }
        let len = view.len();
        let s = self.scratch(dev, len)?;
        dev.cast(view.as_ref(), s.range_mut(0..len))?;
        reduce(dev, s.range_mut(0..len))?;
        let back = owned.unwrap_or(0..len);
        dev.cast(s.range(back.clone()), view.sub(back))
    }

    /// Reduce-scatters `bucket` (its first `len` elements) in the wire dtype and returns this
    /// rank's part, `mine` relative to the bucket: inside `bucket` when it is in the wire dtype,
    /// else inside the scratch.
    pub(crate) fn reduce_scatter<'a>(
        &'a mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        bucket: &'a mut B::Buffer,
        len: usize,
        mine: Range<usize>,
    ) -> Result<View<'a, B>> {
        if ds_core::DeviceBuffer::dtype(bucket) == self.dtype {
            comm.reduce_scatter_in_place(dev, bucket.range_mut(0..len), ReduceOp::Sum)?;
            return Ok(bucket.range(mine));
        }
        let s = self.scratch(dev, len)?;
        dev.cast(bucket.range(0..len), s.range_mut(0..len))?;
        comm.reduce_scatter_in_place(dev, s.range_mut(0..len), ReduceOp::Sum)?;
        Ok(s.range(mine))
    }
}
