//! The gradients the engine owns, and how they are reduced over ranks.
//!
//! - Stages 0 and 1 keep one full flat gradient buffer in the training dtype. The model
//!   accumulates into it over the micro-steps of an accumulation window; at the boundary each
//!   bucket is all-reduced (stage 0) or reduce-scattered in place onto its owners (stage 1).
//! - Stage 2 keeps only this rank's partition of the gradients. During backward a bucket's
//!   gradients live in a scratch buffer of the bucket's size; as soon as the model has finished
//!   every parameter of the bucket, the bucket is reduce-scattered in place and the owner adds
//!   its slice, times the post-reduction factor, into its partition. The scratch buffer then
//!   serves the next bucket. Peak gradient memory is the partition plus the buckets in flight.
//! - With `offload_optimizer` the partition lives in host memory instead ([`crate::offload`]):
//!   stage 2-3 buckets are handed to the host as soon as they are reduced, and stage 1's
//!   owned slices after the boundary's reduce-scatter. The device then keeps no partition.
//! - The model always writes the training dtype. The window's sum is kept in the accumulation
//!   dtype ([`GradDtypes`]): stage 2-3's partition is allocated in it; at stages 0-1, when it
//!   differs, a second full buffer holds the sum and each micro-step's gradients are added into
//!   it after backward (DeepSpeed's `grad_accum` / BF16_Optimizer's fp32 gradients).
//!   Reductions run in the communication dtype ([`Wire`]).

use crate::config::GradDtypes;
use crate::layout::Layout;
use crate::model::{GradSink, ParamSpec};
use crate::offload::Offload;
use crate::owned::OwnedElements;
use crate::wire::Wire;
use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, Error, Result};

enum Storage<B: Backend> {
    /// The whole flat gradient (stages 0 and 1).
    Full(B::Buffer),
    /// This rank's partition (`None` when it lives on the host), plus the scratch buffers of
    /// buckets being filled (stages 2-3).
    Partitioned {
        part: Option<B::Buffer>,
        live: Vec<Option<B::Buffer>>,
        spare: Vec<B::Buffer>,
        scratch_len: usize,
    },
}

/// The gradients of one rank.
pub(crate) struct Grads<B: Backend> {
    storage: Storage<B>,
    /// The training dtype, in which the model writes them.
    dtype: DType,
    /// Stages 0-1 with an accumulation dtype other than the training dtype: the window's sum.
    window: Option<B::Buffer>,
    /// Reduces in the communication dtype.
    wire: Wire<B>,
    /// Which parameters the model has finished in the current backward.
    done: Vec<bool>,
    /// Parameters of each bucket not finished yet in the current backward.
    pending: Vec<usize>,
    /// Elements reduced over ranks so far (all-reduce or reduce-scatter inputs).
    pub(crate) reduced_elements: u64,
}

impl<B: Backend> Grads<B> {
    /// Zeroed gradients for `layout`: whole (`partitioned == false`) or this rank's partition,
    /// which with `on_host` the device does not hold at all.
    pub(crate) fn new(
        dev: &Device<B>,
        layout: &Layout,
        dtypes: GradDtypes,
        partitioned: bool,
        on_host: bool,
    ) -> Result<Self> {
        let zeros = |dtype: DType, len: usize| -> Result<B::Buffer> {
            let mut b = dev.alloc(dtype, len)?;
            dev.fill(b.all_mut(), 0.0)?;
            Ok(b)
        };
        let mut window = None;
        let storage = if partitioned {
            let part = if on_host {
                None
            } else {
                let mut part = dev.alloc(dtypes.accumulate, layout.owned_len)?;
                dev.fill(part.all_mut(), 0.0)?;
                Some(part)
            };
            Storage::Partitioned {
                part,
                live: (0..layout.buckets.len()).map(|_| None).collect(),
                spare: Vec::new(),
                scratch_len: layout
                    .buckets
                    .iter()
                    .map(|b| b.range.len())
                    .max()
                    .unwrap_or(0),
            }
        } else {
            if dtypes.separate_accumulation() {
                window = Some(zeros(dtypes.accumulate, layout.len)?);
            }
            Storage::Full(zeros(dtypes.model, layout.len)?)
        };
        Ok(Grads {
            storage,
            dtype: dtypes.model,
            window,
            wire: Wire::new(dtypes.communicate),
            done: vec![false; layout.slots.len()],
            pending: Vec::new(),
            reduced_elements: 0,
        })
    }

    /// Starts a backward: every parameter's gradient is expected once.
    pub(crate) fn begin_backward(&mut self, layout: &Layout) {
        self.done.iter_mut().for_each(|d| *d = false);
        self.pending = layout.buckets.iter().map(|b| b.params.len()).collect();
    }

    /// Ends a backward, refusing one that left a parameter unfinished (its gradient would be
    /// silently dropped by stage 2, so no stage accepts it); with a separate window sum, adds
    /// this micro-step's gradients into it and clears them for the next.
    pub(crate) fn end_backward(&mut self, dev: &Device<B>, specs: &[ParamSpec]) -> Result<()> {
        if let Some(i) = self.done.iter().position(|d| !d) {
            return Err(Error::invalid(
                "Model::backward",
                "grads",
                format!(
                    "backward never called done({i}) for parameter `{}`: every parameter must be \
                     finished once per backward, even one without a gradient",
                    specs[i].name
                ),
            ));
        }
        if let (Storage::Full(full), Some(window)) = (&mut self.storage, &mut self.window) {
            dev.axpy(1.0, full.all(), window.all_mut())?;
            dev.fill(full.all_mut(), 0.0)?;
        }
        // Bucket buffers are reused within a backward and freed after it, so between steps a
        // rank holds exactly its model states.
        if let Storage::Partitioned { spare, live, .. } = &mut self.storage {
            live.iter_mut().for_each(|b| *b = None);
            spare.clear();
        }
        self.wire.release();
        Ok(())
    }

    /// Zeroes the gradients for a new accumulation window.
    pub(crate) fn zero(&mut self, dev: &Device<B>) -> Result<()> {
        if let Some(w) = &mut self.window {
            // The model's buffer was cleared when its last micro-step was added in.
            return dev.fill(w.all_mut(), 0.0);
        }
        match &mut self.storage {
            Storage::Full(b) | Storage::Partitioned { part: Some(b), .. } => {
                dev.fill(b.all_mut(), 0.0)
            }
            Storage::Partitioned { part: None, .. } => Ok(()),
        }
    }

    /// Reduces the accumulated gradients at a boundary: all-reduce (stage 0) or in-place
    /// reduce-scatter onto the owners (stage 1), bucket by bucket. Stage 2 reduced them during
    /// backward already.
    pub(crate) fn reduce_at_boundary(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
    ) -> Result<()> {
        let Storage::Full(full) = &mut self.storage else {
            return Ok(());
        };
        let summed = self.window.as_mut().unwrap_or(full);
        for b in &layout.buckets {
            self.reduced_elements += b.range.len() as u64;
            let view = summed.range_mut(b.range.clone());
            let owned = layout.partitioned.then(|| {
                let mine = b.owned.start - b.range.start;
                mine..mine + b.owned.len()
            });
            self.wire.reduce_in_place(dev, comm, view, owned)?;
        }
        self.wire.release();
        Ok(())
    }
}

impl<B: Backend> OwnedElements<B> for Grads<B> {
    /// The reduced gradient of flat elements `range`, owned by this rank and starting at
    /// `local` in its partition.
    fn piece(
        &self,
        _: &Layout,
        range: std::ops::Range<usize>,
        local: usize,
    ) -> Result<View<'_, B>> {
        match &self.storage {
            Storage::Full(full) => Ok(self.window.as_ref().unwrap_or(full).range(range)),
            Storage::Partitioned {
                part: Some(part), ..
            } => Ok(part.range(local..local + range.len())),
            Storage::Partitioned { part: None, .. } => Err(Error::invalid(
                "Grads::piece",
                "storage",
                "internal: the gradient partition lives on the host (offload_optimizer)",
            )),
        }
    }
}

/// The [`GradSink`] the model writes into during one backward.
pub(crate) struct Sink<'a, B: Backend> {
    pub(crate) grads: &'a mut Grads<B>,
    pub(crate) layout: &'a Layout,
    pub(crate) dev: &'a Device<B>,
    pub(crate) comm: &'a dyn Collectives<B>,
    /// Multiplies a reduced stage-2 bucket as it is added to the partition.
    pub(crate) post_scale: f32,
    /// The host's gradient partition under `offload_optimizer`.
    pub(crate) host: Option<&'a mut (dyn Offload<B> + 'static)>,
}

impl<B: Backend> Sink<'_, B> {
    fn check(&self, op: &'static str, index: usize) -> Result<usize> {
        let count = self.layout.slots.len();
        if index >= count {
            return Err(Error::invalid(
                op,
                "index",
                format!("{index} is past the {count} parameters"),
            ));
        }
        if self.grads.done[index] {
            return Err(Error::invalid(
                op,
                "index",
                format!("parameter {index} was already finished (done) in this backward"),
            ));
        }
        Ok(index)
    }

    /// Reduce-scatters bucket `b`'s scratch and adds this rank's slice into the partition.
    fn reduce_bucket(&mut self, b: usize) -> Result<()> {
        let bucket = &self.layout.buckets[b];
        let Grads { storage, wire, .. } = &mut *self.grads;
        let Storage::Partitioned {
            part, live, spare, ..
        } = storage
        else {
            return Ok(());
        };
        let Some(mut scratch) = live[b].take() else {
            return Err(Error::invalid(
                "GradSink::done",
                "index",
                "internal: a bucket finished without a scratch buffer",
            ));
        };
        let len = bucket.range.len();
        let mine = bucket.owned.start - bucket.range.start;
        let owned_len = bucket.owned.len();
        let reduced = wire.reduce_scatter(
            self.dev,
            self.comm,
            &mut scratch,
            len,
            mine..mine + owned_len,
        )?;
        match (part, self.host.as_deref_mut()) {
            (Some(part), _) => self.dev.axpy(
                self.post_scale,
                reduced,
                part.range_mut(bucket.local..bucket.local + owned_len),
            )?,
            (None, Some(host)) => {
                host.accumulate(self.dev, reduced, bucket.local, self.post_scale)?;
            }
            (None, None) => {
                return Err(Error::invalid(
                    "GradSink::done",
                    "storage",
                    "internal: an offloaded gradient partition without its host",
                ));
            }
        }
        spare.push(scratch);
        self.grads.reduced_elements += len as u64;
        Ok(())
    }

    /// Makes sure bucket `b` has a zeroed scratch buffer.
    fn scratch_for(&mut self, b: usize) -> Result<()> {
        let Storage::Partitioned {
            live,
            spare,
            scratch_len,
            ..
        } = &mut self.grads.storage
        else {
            return Ok(());
        };
        if live[b].is_none() {
            let mut s = match spare.pop() {
                Some(s) => s,
                None => self.dev.alloc(self.grads.dtype, *scratch_len)?,
            };
            self.dev
                .fill(s.range_mut(0..self.layout.buckets[b].range.len()), 0.0)?;
            live[b] = Some(s);
        }
        Ok(())
    }
}

impl<B: Backend> GradSink<B> for Sink<'_, B> {
    fn grad(&mut self, index: usize) -> Result<ViewMut<'_, B>> {
        let i = self.check("GradSink::grad", index)?;
        let slot = self.layout.slots[i];
        let b = self.layout.bucket_of(i).unwrap_or(0);
        self.scratch_for(b)?;
        let start = self.layout.buckets[b].range.start;
        match &mut self.grads.storage {
            Storage::Full(full) => Ok(full.range_mut(slot.offset..slot.offset + slot.len)),
            Storage::Partitioned { live, .. } => {
                let s = live[b].as_mut().ok_or_else(|| {
                    Error::invalid(
                        "GradSink::grad",
                        "index",
                        "internal: bucket scratch missing",
                    )
                })?;
                let off = slot.offset - start;
                Ok(s.range_mut(off..off + slot.len))
            }
        }
    }

    fn done(&mut self, index: usize) -> Result<()> {
        let i = self.check("GradSink::done", index)?;
        self.grads.done[i] = true;
        let b = self.layout.bucket_of(i).unwrap_or(0);
        self.grads.pending[b] -= 1;
        if self.grads.pending[b] == 0 && matches!(self.grads.storage, Storage::Partitioned { .. }) {
            // Every rank reduces every bucket, in the order the model finishes them (the same
            // on every rank); a bucket none of whose parameters asked for a gradient
            // contributes zeros.
            self.scratch_for(b)?;
            self.reduce_bucket(b)?;
        }
        Ok(())
    }
}
