//! Where the engine keeps the training-dtype parameters: one flat buffer holding every
//! parameter whole (ZeRO stages 0-2), or this rank's partition with groups gathered on demand
//! (stage 3, [`crate::zero3`]). The optimizer, the checkpoint code and the engine reach the
//! parameters only through this, so none of them depends on the stage.

use crate::layout::Layout;
use crate::model::{ParamTable, Params};
use crate::owned::{OwnedElements, OwnedElementsMut};
use crate::zero3::{Gatherer, Partitioned};
use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, BufferExt, Collectives, Device, Result};
use std::ops::Range;

/// The training-dtype parameters of one rank.
pub(crate) enum ParamStore<B: Backend> {
    /// Every parameter whole, at its slot of the flat buffer.
    Flat(B::Buffer),
    /// Stage 3: this rank's slices, groups gathered when the model opens them (boxed: the
    /// store is made once per engine, and the flat case stays one pointer wide).
    Partitioned(Box<Partitioned<B>>),
}

impl<B: Backend> OwnedElements<B> for ParamStore<B> {
    fn piece(&self, layout: &Layout, range: Range<usize>, local: usize) -> Result<View<'_, B>> {
        match self {
            ParamStore::Flat(buf) => Ok(buf.range(range)),
            ParamStore::Partitioned(p) => p.piece(layout, range, local),
        }
    }
}

impl<B: Backend> OwnedElementsMut<B> for ParamStore<B> {
    fn piece_mut(
        &mut self,
        layout: &Layout,
        range: Range<usize>,
        local: usize,
    ) -> Result<ViewMut<'_, B>> {
        match self {
            ParamStore::Flat(buf) => Ok(buf.range_mut(range)),
            ParamStore::Partitioned(p) => p.piece_mut(layout, range, local),
        }
    }
}

impl<B: Backend> ParamStore<B> {
    /// Writes owned flat elements `range` (at `local`), updated on the host in `src`: uploaded
    /// to the device, or, for a partition offloaded to the host (`offload_param`), copied
    /// there.
    pub(crate) fn write_from_host<H: Backend>(
        &mut self,
        dev: &Device<B>,
        layout: &Layout,
        range: Range<usize>,
        local: usize,
        host: &Device<H>,
        src: View<'_, H>,
    ) -> Result<()> {
        if let ParamStore::Partitioned(p) = self
            && let Some((part, at)) = p.host_part(local)
        {
            return crate::offload::with_host_bytes(host, src, |bytes| part.write_bytes(at, bytes));
        }
        crate::offload::to_device(host, src, dev, self.piece_mut(layout, range, local)?)
    }

    /// Owned flat elements `range` (at `local`), widened to f32, wherever they live.
    pub(crate) fn owned_f32(
        &self,
        dev: &Device<B>,
        layout: &Layout,
        range: Range<usize>,
        local: usize,
    ) -> Result<Vec<f32>> {
        if let ParamStore::Partitioned(p) = self
            && let Some((part, at)) = p.host_part_ref(local)
        {
            return part.read_f32(at..at + range.len());
        }
        crate::host::download_f32(dev, self.piece(layout, range, local)?)
    }

    /// Makes every rank's parameters current after its owned elements changed (an optimizer
    /// step or a load): an in-place all-gather of every bucket when they are partitioned
    /// (stages 1-2); at stage 3 the persistent parameters' all-gather, and gathered copies
    /// are dropped. Returns the elements all-gathered.
    pub(crate) fn after_update(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
    ) -> Result<u64> {
        match self {
            ParamStore::Flat(buf) => {
                if !(layout.partitioned && layout.world > 1) {
                    return Ok(0);
                }
                for b in &layout.buckets {
                    comm.all_gather_in_place(dev, buf.range_mut(b.range.clone()))?;
                }
                Ok(layout.len as u64)
            }
            ParamStore::Partitioned(p) => {
                p.release_all(layout);
                p.refresh_persistent(dev, comm, layout)?;
                Ok(match layout.persistent_bucket() {
                    Some(b) if layout.world > 1 => b.range.len() as u64,
                    _ => 0,
                })
            }
        }
    }

    /// Runs `f` with the model's view of the parameters: whole, or gathered group by group.
    /// Afterwards every scope must be closed.
    pub(crate) fn with_params<T>(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        table: &ParamTable,
        op: &'static str,
        f: impl FnOnce(&mut Params<'_, B>) -> Result<T>,
    ) -> Result<T> {
        let mut source;
        let mut params = match self {
            ParamStore::Flat(buf) => Params::flat(buf, &layout.slots, table),
            ParamStore::Partitioned(store) => {
                source = Gatherer {
                    dev,
                    comm,
                    layout,
                    names: table.groups(),
                    store,
                };
                Params::from_source(&mut source, table)
            }
        };
        let out = f(&mut params)?;
        params.check_all_closed(op)?;
        Ok(out)
    }

    /// A forward starts a micro-step (stage 3 takes the last one's order as its trace).
    pub(crate) fn begin_forward(&mut self) {
        if let ParamStore::Partitioned(p) = self {
            p.begin_forward();
        }
    }

    /// A backward continues the micro-step.
    pub(crate) fn begin_backward(&mut self) {
        if let ParamStore::Partitioned(p) = self {
            p.begin_backward();
        }
    }

    /// Frees every gathered copy (after a backward, or a forward that failed).
    pub(crate) fn release_gathered(&mut self, layout: &Layout) {
        if let ParamStore::Partitioned(p) = self {
            p.release_all(layout);
        }
    }

    /// Makes the parameters current after a load wrote every rank's own elements: at stage 3
    /// the gathered copies are dropped and the persistent ones refreshed (at stages 0-2 every
    /// rank loaded them whole).
    pub(crate) fn after_load(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
    ) -> Result<()> {
        match self {
            ParamStore::Flat(_) => Ok(()),
            ParamStore::Partitioned(p) => {
                p.release_all(layout);
                p.refresh_persistent(dev, comm, layout)
            }
        }
    }

    /// Every parameter whole, as training-dtype bytes in model order. At stage 3 each bucket
    /// is gathered into a temporary buffer (a collective: every rank must call this).
    pub(crate) fn whole_bytes(
        &self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
    ) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = vec![Vec::new(); layout.slots.len()];
        let mut read = |buf: &B::Buffer, start: usize, params: &[usize]| -> Result<()> {
            for &i in params {
                let s = layout.slots[i];
                let view = buf.range(s.offset - start..s.offset - start + s.len);
                let mut bytes = vec![0u8; s.len * view.dtype().size_bytes()];
                dev.download_bytes(view, &mut bytes)?;
                out[i] = bytes;
            }
            Ok(())
        };
        match self {
            ParamStore::Flat(buf) => {
                let all: Vec<usize> = (0..layout.slots.len()).collect();
                read(buf, 0, &all)?;
            }
            ParamStore::Partitioned(p) => {
                for (bi, b) in layout.buckets.iter().enumerate() {
                    let gathered = p.gather_copy(dev, comm, layout, bi)?;
                    read(&gathered, b.range.start, &b.params)?;
                }
            }
        }
        Ok(out)
    }

    /// Writes parameter `index`'s whole values (f32) into the elements of it this rank holds.
    /// Call [`ParamStore::after_update`] once every parameter is written.
    pub(crate) fn load_param(
        &mut self,
        dev: &Device<B>,
        layout: &Layout,
        index: usize,
        values: &[f32],
    ) -> Result<()> {
        let slot = layout.slots[index];
        match self {
            ParamStore::Flat(buf) => crate::host::upload_f32(
                dev,
                values,
                buf.range_mut(slot.offset..slot.offset + slot.len),
            ),
            ParamStore::Partitioned(p) => {
                let Some((range, local)) = layout.owned_piece(index) else {
                    return Ok(());
                };
                let start = range.start - slot.offset;
                let values = &values[start..start + range.len()];
                if let Some((part, at)) = p.host_part(local) {
                    return part.write_f32(at, values);
                }
                crate::host::upload_f32(dev, values, p.piece_mut(layout, range, local)?)
            }
        }
    }
}
