//! ZeRO stage 3's parameters: each rank holds only its slice of every group's bucket, and a
//! group is all-gathered when the model opens its scope.
//!
//! - **Gather and release.** Opening a group all-gathers its bucket into a buffer of the
//!   bucket's size; closing it frees that buffer, unless the previous micro-step's trace says
//!   the group is used again within `stage3_max_reuse_distance` gathered elements (then it is
//!   kept, and the next open costs nothing).
//! - **Prefetch.** Every micro-step records the order in which groups are opened (forward and
//!   backward). While the next micro-step follows that trace, each open also gathers the groups
//!   the trace says come next, up to `stage3_prefetch_bucket_size` elements. With synchronous
//!   collectives a prefetch is an earlier gather; on a backend with asynchronous collectives it
//!   overlaps compute. All ranks run the same code, so they trace, prefetch and keep alike and
//!   their collectives stay in step.
//! - **The cap.** Gathered elements (open, kept and prefetched groups) never exceed
//!   `stage3_max_live_parameters`: kept groups are evicted first, prefetch stops at the cap,
//!   and opening a group that cannot fit beside the groups already open is an error naming
//!   them. `initialize` refuses a group larger than the cap. A cap of 0 means DeepSpeed's
//!   "nothing beyond what is in use": no prefetch, no reuse, open groups gathered whatever
//!   their size.
//! - **Persistent parameters** (below `stage3_param_persistence_threshold`) live whole on
//!   every rank in one buffer, refreshed by one all-gather after every step; their groups'
//!   scopes gather nothing for them.
//!
//! Every gather, hit, keep and release is recorded ([`Zero3Event`]), so the order is testable.

use crate::layout::Layout;
use crate::model::ParamSource;
use crate::offload::HostParams;
use ds_core::kernels::View;
use ds_core::{Backend, BufferExt, Collectives, DType, Device, Error, Result};

/// What the stage-3 parameter store did, in order (one micro-step's worth is kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero3Event {
    /// A forward started (the events before the backward's).
    Forward,
    /// A backward started.
    Backward,
    /// The model opened group `group`'s scope.
    Open(usize),
    /// Group `group`'s bucket was all-gathered: on demand, or ahead of use.
    Gather {
        /// The group.
        group: usize,
        /// Whether it was a prefetch (issued before the group was opened).
        prefetch: bool,
    },
    /// An open found the group already gathered (prefetched or kept).
    Hit(usize),
    /// The model closed group `group`'s scope.
    Close(usize),
    /// A closed group's gathered copy was kept for reuse.
    Keep(usize),
    /// A group's gathered copy was freed.
    Release(usize),
}

/// Counters of the gathered parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Zero3Stats {
    /// Gathered elements held now (open, kept and prefetched groups; persistent ones excluded).
    pub live_elements: usize,
    /// The most `live_elements` has been.
    pub peak_live_elements: usize,
    /// All-gathers of a group's bucket issued on demand.
    pub gathers: u64,
    /// All-gathers issued ahead of use.
    pub prefetches: u64,
    /// Opens that found the group gathered already.
    pub hits: u64,
    /// Elements all-gathered for groups (on demand and ahead of use) since initialize.
    pub gathered_elements: u64,
}

/// The limits stage 3 runs under, in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub max_live: usize,
    pub prefetch: usize,
    pub reuse_distance: usize,
    /// Whether anything may be held beyond the open groups (prefetched or kept):
    /// `stage3_max_live_parameters: 0` says no, as it does in DeepSpeed, whose cap applies
    /// to what it holds ahead.
    pub ahead: bool,
}

impl Limits {
    pub(crate) fn from_config(c: &crate::config::Stage3Config) -> Self {
        let elements = crate::config::elements;
        let ahead = c.max_live_parameters > 0;
        Limits {
            max_live: if ahead {
                elements(c.max_live_parameters)
            } else {
                usize::MAX
            },
            prefetch: elements(c.prefetch_bucket_size),
            reuse_distance: elements(c.max_reuse_distance),
            ahead,
        }
    }
}

/// Where this rank's slices of the gathered buckets live.
pub(crate) enum Part<B: Backend> {
    /// On the device.
    Device(B::Buffer),
    /// In host memory (`offload_param`).
    Host(Box<dyn HostParams<B>>),
}

/// One rank's stage-3 parameters.
pub(crate) struct Partitioned<B: Backend> {
    /// This rank's slice of every bucket but the persistent one, in the training dtype, in
    /// the layout's `local` order from `part_offset`.
    part: Part<B>,
    dtype: DType,
    /// The whole persistent bucket (bucket 0), when there is one: its owned slice is this
    /// rank's part of it, so it is not held twice.
    persistent: Option<B::Buffer>,
    /// Where `part` starts in `local` order (the persistent bucket's owned length).
    part_offset: usize,
    /// Each bucket's gathered copy, while held.
    gathered: Vec<Option<B::Buffer>>,
    /// Groups whose gathered copy is kept though closed, oldest first.
    kept: Vec<usize>,
    limits: Limits,
    /// The order groups were opened in during the last complete micro-step.
    trace: Vec<usize>,
    /// The order so far in this micro-step.
    recording: Vec<usize>,
    /// Where this micro-step is in `trace`, while it follows it.
    cursor: Option<usize>,
    events: Vec<Zero3Event>,
    stats: Zero3Stats,
}

impl<B: Backend> Partitioned<B> {
    /// The length of the partition `part` holds: every owned element but the persistent
    /// bucket's.
    pub(crate) fn part_len(layout: &Layout) -> usize {
        layout.owned_len - layout.persistent_bucket().map_or(0, |b| b.owned.len())
    }

    /// Allocates the partition (on the device, or `offloaded` to the host's `part_len`
    /// elements) and the persistent buffer, and fills them from `host` (the whole flat
    /// buffer's initial values, the same on every rank).
    pub(crate) fn new(
        dev: &Device<B>,
        layout: &Layout,
        dtype: DType,
        limits: Limits,
        host: &[f32],
        offloaded: Option<Box<dyn HostParams<B>>>,
    ) -> Result<Self> {
        // The persistent bucket is bucket 0: its owned slice is the first `part_offset`
        // elements of the partition order, held inside the persistent buffer.
        let part_offset = layout.persistent_bucket().map_or(0, |b| b.owned.len());
        let mut part = match offloaded {
            Some(h) => Part::Host(h),
            None => Part::Device(dev.alloc(dtype, Self::part_len(layout))?),
        };
        for b in &layout.buckets {
            if b.local < part_offset {
                continue;
            }
            let at = b.local - part_offset;
            let values = &host[b.owned.clone()];
            match &mut part {
                Part::Device(buf) => {
                    crate::host::upload_f32(dev, values, buf.range_mut(at..at + b.owned.len()))?
                }
                Part::Host(h) => h.write_f32(at, values)?,
            }
        }
        let persistent = match layout.persistent_bucket() {
            Some(pb) => {
                let range = pb.range.clone();
                let mut buf = dev.alloc(dtype, range.len())?;
                crate::host::upload_f32(dev, &host[range], buf.all_mut())?;
                Some(buf)
            }
            None => None,
        };
        Ok(Partitioned {
            part,
            dtype,
            persistent,
            part_offset,
            gathered: (0..layout.buckets.len()).map(|_| None).collect(),
            kept: Vec::new(),
            limits,
            trace: Vec::new(),
            recording: Vec::new(),
            cursor: None,
            events: Vec::new(),
            stats: Zero3Stats::default(),
        })
    }

    /// A forward starts a micro-step: the last one's order becomes the trace to follow.
    pub(crate) fn begin_forward(&mut self) {
        if !self.recording.is_empty() {
            self.trace = std::mem::take(&mut self.recording);
        }
        self.cursor = (!self.trace.is_empty()).then_some(0);
        self.events.clear();
        self.events.push(Zero3Event::Forward);
    }

    /// A backward continues the micro-step's order.
    pub(crate) fn begin_backward(&mut self) {
        self.events.push(Zero3Event::Backward);
    }

    /// Frees every gathered copy (after a backward, and before the parameters change).
    pub(crate) fn release_all(&mut self, layout: &Layout) {
        for (b, slot) in self.gathered.iter_mut().enumerate() {
            if slot.take().is_some() {
                self.stats.live_elements -= layout.buckets[b].range.len();
                if let Some(g) = group_of_bucket(layout, b) {
                    self.events.push(Zero3Event::Release(g));
                }
            }
        }
        self.kept.clear();
    }

    /// Refreshes the persistent copy from the partitions (after a step or a load).
    pub(crate) fn refresh_persistent(
        &mut self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
    ) -> Result<()> {
        if let Some(buf) = self.persistent.as_mut()
            && layout.world > 1
        {
            // Each rank updated its slice in place; the rest comes from the other ranks.
            comm.all_gather_in_place(dev, buf.all_mut())?;
        }
        Ok(())
    }

    /// This rank's owned flat elements `range` of parameters, starting at `local` in its
    /// partition order (within one bucket), on the device.
    ///
    /// # Errors
    /// When they live on the host (`offload_param`): see [`Partitioned::host_part`].
    pub(crate) fn piece(
        &self,
        layout: &Layout,
        range: std::ops::Range<usize>,
        local: usize,
    ) -> Result<View<'_, B>> {
        match (&self.persistent, local < self.part_offset, &self.part) {
            (Some(p), true, _) => {
                let start = persistent_start(layout);
                Ok(p.range(range.start - start..range.end - start))
            }
            (_, _, Part::Device(part)) => {
                let at = local - self.part_offset;
                Ok(part.range(at..at + range.len()))
            }
            (_, _, Part::Host(_)) => Err(on_host()),
        }
    }

    /// Writable form of [`Partitioned::piece`].
    ///
    /// # Errors
    /// As [`Partitioned::piece`].
    pub(crate) fn piece_mut(
        &mut self,
        layout: &Layout,
        range: std::ops::Range<usize>,
        local: usize,
    ) -> Result<ds_core::kernels::ViewMut<'_, B>> {
        match (
            &mut self.persistent,
            local < self.part_offset,
            &mut self.part,
        ) {
            (Some(p), true, _) => {
                let start = persistent_start(layout);
                Ok(p.range_mut(range.start - start..range.end - start))
            }
            (_, _, Part::Device(part)) => {
                let at = local - self.part_offset;
                Ok(part.range_mut(at..at + range.len()))
            }
            (_, _, Part::Host(_)) => Err(on_host()),
        }
    }

    /// Read-only form of [`Partitioned::host_part`].
    pub(crate) fn host_part_ref(&self, local: usize) -> Option<(&dyn HostParams<B>, usize)> {
        match &self.part {
            Part::Host(h) if local >= self.part_offset => {
                Some((h.as_ref(), local - self.part_offset))
            }
            _ => None,
        }
    }

    /// The host-resident partition and where partition element `local` sits in it, when
    /// `local` is one of its elements (not the persistent bucket's) and it is offloaded.
    pub(crate) fn host_part(
        &mut self,
        local: usize,
    ) -> Option<(&mut (dyn HostParams<B> + 'static), usize)> {
        match &mut self.part {
            Part::Host(h) if local >= self.part_offset => {
                Some((h.as_mut(), local - self.part_offset))
            }
            _ => None,
        }
    }

    /// The events of the current (or last) micro-step.
    pub(crate) fn events(&self) -> &[Zero3Event] {
        &self.events
    }

    /// The counters.
    pub(crate) fn stats(&self) -> Zero3Stats {
        self.stats
    }

    /// Bucket `b` gathered into a fresh buffer (a collective for every bucket but the
    /// persistent one, which is copied: every rank calls it).
    pub(crate) fn gather_copy(
        &self,
        dev: &Device<B>,
        comm: &dyn Collectives<B>,
        layout: &Layout,
        b: usize,
    ) -> Result<B::Buffer> {
        let bucket = &layout.buckets[b];
        let mut buf = dev.alloc(self.dtype, bucket.range.len())?;
        match (
            &self.persistent,
            bucket.local < self.part_offset,
            &self.part,
        ) {
            (Some(p), true, _) => dev.copy(p.all(), buf.all_mut())?,
            (_, _, Part::Host(h)) => {
                // This rank's slice comes up from the host into its place; the others' arrive
                // in the in-place all-gather.
                let mine = bucket.owned.start - bucket.range.start;
                h.upload(
                    dev,
                    bucket.local - self.part_offset,
                    buf.range_mut(mine..mine + bucket.owned.len()),
                )?;
                comm.all_gather_in_place(dev, buf.all_mut())?;
            }
            (_, _, Part::Device(_)) => comm.all_gather(
                dev,
                self.piece(layout, bucket.owned.clone(), bucket.local)?,
                buf.all_mut(),
            )?,
        }
        Ok(buf)
    }
}

fn on_host() -> Error {
    Error::invalid(
        "ZeRO stage 3",
        "offload_param",
        "internal: the parameter partition lives on the host",
    )
}

/// Where the persistent bucket starts in the flat layout.
fn persistent_start(layout: &Layout) -> usize {
    layout.persistent_bucket().map_or(0, |b| b.range.start)
}

fn group_of_bucket(layout: &Layout, b: usize) -> Option<usize> {
    layout
        .groups
        .as_ref()?
        .group_bucket
        .iter()
        .position(|&gb| gb == Some(b))
}

/// The stage-3 store seen by the model during one forward or backward.
pub(crate) struct Gatherer<'a, B: Backend> {
    pub(crate) dev: &'a Device<B>,
    pub(crate) comm: &'a dyn Collectives<B>,
    pub(crate) layout: &'a Layout,
    pub(crate) names: &'a [ds_model::ParamGroup],
    pub(crate) store: &'a mut Partitioned<B>,
}

impl<B: Backend> Gatherer<'_, B> {
    fn bucket(&self, group: usize) -> Option<usize> {
        self.layout
            .groups
            .as_ref()?
            .group_bucket
            .get(group)
            .copied()
            .flatten()
    }

    fn size(&self, group: usize) -> usize {
        self.bucket(group)
            .map_or(0, |b| self.layout.buckets[b].range.len())
    }

    fn gather_bucket(&mut self, group: usize, b: usize, prefetch: bool) -> Result<()> {
        let buf = self
            .store
            .gather_copy(self.dev, self.comm, self.layout, b)?;
        let st = &mut *self.store;
        st.gathered[b] = Some(buf);
        st.stats.live_elements += self.layout.buckets[b].range.len();
        st.stats.gathered_elements += self.layout.buckets[b].range.len() as u64;
        st.stats.peak_live_elements = st.stats.peak_live_elements.max(st.stats.live_elements);
        if prefetch {
            st.stats.prefetches += 1;
        } else {
            st.stats.gathers += 1;
        }
        st.events.push(Zero3Event::Gather { group, prefetch });
        Ok(())
    }

    fn free(&mut self, group: usize) {
        if let Some(b) = self.bucket(group)
            && self.store.gathered[b].take().is_some()
        {
            self.store.stats.live_elements -= self.layout.buckets[b].range.len();
            self.store.kept.retain(|&g| g != group);
            self.store.events.push(Zero3Event::Release(group));
        }
    }

    /// Makes room for `need` more gathered elements by evicting kept groups, oldest first.
    fn make_room(&mut self, group: usize, need: usize) -> Result<()> {
        while self.store.stats.live_elements + need > self.limits().max_live {
            match self.store.kept.first().copied() {
                Some(old) => self.free(old),
                None => {
                    let open: Vec<String> = self
                        .open_groups()
                        .into_iter()
                        .map(|g| format!("`{}`", self.names[g].name))
                        .collect();
                    return Err(Error::invalid(
                        "ZeRO stage 3",
                        "stage3_max_live_parameters",
                        format!(
                            "gathering group `{}` ({need} elements) beside the open groups {} ({} elements) would \
                             exceed stage3_max_live_parameters = {}: close a scope before opening the next, or raise \
                             the limit",
                            self.names[group].name,
                            open.join(", "),
                            self.store.stats.live_elements,
                            self.limits().max_live
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn limits(&self) -> Limits {
        self.store.limits
    }

    /// Groups gathered, not kept: the ones whose scope is open (prefetched ones included,
    /// which are about to be).
    fn open_groups(&self) -> Vec<usize> {
        (0..self.names.len())
            .filter(|&g| {
                self.bucket(g)
                    .is_some_and(|b| self.store.gathered[b].is_some())
                    && !self.store.kept.contains(&g)
            })
            .collect()
    }

    /// Gathers the groups the trace says come next, up to the prefetch budget and the cap.
    fn prefetch(&mut self) -> Result<()> {
        let Some(cursor) = self.store.cursor.filter(|_| self.limits().ahead) else {
            return Ok(());
        };
        let mut budget = self.limits().prefetch;
        let upcoming: Vec<usize> = self.store.trace[cursor..].to_vec();
        for g in upcoming {
            let Some(b) = self.bucket(g) else { continue };
            if self.store.gathered[b].is_some() {
                continue;
            }
            let size = self.size(g);
            if size > budget || self.store.stats.live_elements + size > self.limits().max_live {
                break;
            }
            budget -= size;
            self.gather_bucket(g, b, true)?;
        }
        Ok(())
    }

    /// Gathered elements opened between now and the next use of `group` in the trace, or
    /// `None` when the trace does not use it again.
    fn reuse_distance(&self, group: usize) -> Option<usize> {
        let cursor = self.store.cursor?;
        let rest = &self.store.trace[cursor..];
        let next = rest.iter().position(|&g| g == group)?;
        Some(rest[..next].iter().map(|&g| self.size(g)).sum())
    }
}

impl<B: Backend> ParamSource<B> for Gatherer<'_, B> {
    fn gather(&mut self, group: usize) -> Result<()> {
        self.store.events.push(Zero3Event::Open(group));
        self.store.recording.push(group);
        self.store.cursor = match self.store.cursor {
            Some(c) if self.store.trace.get(c) == Some(&group) => Some(c + 1),
            _ => None,
        };
        if let Some(b) = self.bucket(group) {
            if self.store.gathered[b].is_some() {
                self.store.kept.retain(|&g| g != group);
                self.store.stats.hits += 1;
                self.store.events.push(Zero3Event::Hit(group));
            } else {
                self.make_room(group, self.size(group))?;
                self.gather_bucket(group, b, false)?;
            }
        }
        self.prefetch()
    }

    fn release(&mut self, group: usize) -> Result<()> {
        self.store.events.push(Zero3Event::Close(group));
        if self.bucket(group).is_none() {
            return Ok(());
        }
        let keep = self.limits().ahead
            && self
                .reuse_distance(group)
                .is_some_and(|d| d <= self.limits().reuse_distance);
        if keep {
            self.store.kept.push(group);
            self.store.events.push(Zero3Event::Keep(group));
        } else {
            self.free(group);
        }
        Ok(())
    }

    fn view(&self, index: usize) -> Result<View<'_, B>> {
        let missing = || {
            Error::invalid(
                "Params::get",
                "index",
                format!("internal: parameter {index} is not gathered"),
            )
        };
        let groups = self.layout.groups.as_ref().ok_or_else(missing)?;
        let slot = *self.layout.slots.get(index).ok_or_else(missing)?;
        let b = self.layout.bucket_of(index).ok_or_else(missing)?;
        let start = self.layout.buckets[b].range.start;
        let buf = if groups.persists[index] {
            self.store.persistent.as_ref()
        } else {
            self.store.gathered[b].as_ref()
        }
        .ok_or_else(missing)?;
        let off = slot.offset - start;
        Ok(buf.range(off..off + slot.len))
    }
}
