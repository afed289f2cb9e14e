//! ZeRO-Infinity's optimizer state on NVMe (`offload_optimizer: {"device": "nvme"}`): the fp32
//! master weights and moments of this rank's partition live in one swap file under
//! `nvme_path`, and the step streams them through `buffer_count` host buffers, sub-group by
//! sub-group.
//!
//! The partition (in `local` order) is cut into sub-groups of `g` elements, `g` the smaller of
//! `sub_group_size` and `buffer_size` divided among the state kinds (Adam: master, exp_avg,
//! exp_avg_sq), so one buffer slot of `buffer_size` f32 holds a sub-group's whole state. In
//! the file, sub-group `s` starts at `s * kinds * g * 4` bytes with its kinds one after the
//! other. Host memory for the state is `buffer_count * buffer_size * 4` bytes, whatever the
//! model's size.
//!
//! The step: an I/O thread serves reads and writes in the order they are queued; while the
//! host steps sub-group `i` in slot `i % count`, the reads of the next sub-groups (up to
//! `count - 1` ahead, `pipeline_read`) and the write of the previous ones (`pipeline_write`)
//! run. A slot's next read is queued after its write, so the order of the queue keeps them
//! apart. Without `pipeline_read` a sub-group is read when it is needed; without
//! `pipeline_write` its write is waited for.

use super::NvmeSettings;
use super::swap::{IoPath, SwapFile, nvme_error};
use crate::host::{bytes_to_f32, upload_f32};
use crate::optimizer::StateKind;
use ds_core::kernels::ViewMut;
use ds_core::{Backend, BufferExt, DType, Device};
use ds_core::{Error, Result};
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;

/// One slot: a sub-group's state, one buffer per kind.
type Slot<H> = Vec<<H as ds_core::kernels::Memory>::Buffer>;

/// How the partition is cut and laid out in the file.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    kinds: usize,
    /// Elements per sub-group (the last may be shorter).
    group: usize,
    owned_len: usize,
}

impl Geometry {
    /// The partition elements of sub-group `s`.
    fn range(&self, s: usize) -> Range<usize> {
        let start = s * self.group;
        start..(start + self.group).min(self.owned_len)
    }

    fn groups(&self) -> usize {
        self.owned_len.div_ceil(self.group)
    }

    /// Where kind `ki` of sub-group `s` starts in the file.
    fn offset(&self, s: usize, ki: usize) -> u64 {
        let range = self.range(s);
        ((range.start * self.kinds + ki * range.len()) * 4) as u64
    }
}

/// The sub-group length and the number of host buffers for `owned_len` elements of `kinds`
/// state: a buffer holds a sub-group's whole state in `buffer_size` f32, no more buffers than
/// sub-groups. What the host holds is `count * kinds * group` f32 (the estimate uses this too).
pub(crate) fn swap_buffers(
    settings: &NvmeSettings,
    kinds: usize,
    owned_len: usize,
) -> (usize, usize) {
    let group = (settings.buffer_size / kinds.max(1))
        .min(settings.sub_group_size)
        .min(owned_len)
        .max(1);
    let count = settings
        .buffer_count
        .clamp(1, owned_len.div_ceil(group).max(1));
    (group, count)
}

/// The optimizer state of one rank in a swap file.
pub struct NvmeState<H: Backend> {
    host: Device<H>,
    file: SwapFile,
    kinds: Vec<StateKind>,
    geometry: Geometry,
    slots: Vec<Slot<H>>,
    pipeline_read: bool,
    pipeline_write: bool,
}

/// A queued I/O: which slot buffer, where in the file, which way.
struct Job {
    read: bool,
    offset: u64,
    /// The slot buffer's bytes: address and length (see [`jobs`]).
    addr: usize,
    len: usize,
}

/// The jobs that move sub-group `s` between slot `slot` and the file.
fn jobs<H: Backend>(
    host: &Device<H>,
    slots: &mut [Slot<H>],
    geometry: Geometry,
    slot: usize,
    s: usize,
    read: bool,
) -> Result<Vec<Job>> {
    let n = geometry.range(s).len();
    let mut out = Vec::with_capacity(geometry.kinds);
    for (ki, buf) in slots[slot].iter_mut().enumerate() {
        let bytes = host
            .backend()
            .host_bytes_mut(buf.range_mut(0..n))
            .ok_or_else(|| nvme_error("a swap buffer is not host memory".into()))?;
        out.push(Job {
            read,
            offset: geometry.offset(s, ki),
            addr: bytes.as_mut_ptr() as usize,
            len: bytes.len(),
        });
    }
    Ok(out)
}

/// The step's queue to the I/O thread, and what it has finished.
struct Pipeline {
    queue: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<()>>,
    queued: u64,
    finished: u64,
}

impl Pipeline {
    /// Queues `jobs`; the number of jobs queued so far once they are done.
    fn submit(&mut self, jobs: Vec<Job>) -> Result<u64> {
        for job in jobs {
            self.queue.send(job).map_err(|_| stopped())?;
            self.queued += 1;
        }
        Ok(self.queued)
    }

    /// Waits until the first `upto` jobs are done.
    fn wait(&mut self, upto: u64) -> Result<()> {
        while self.finished < upto {
            self.done.recv().map_err(|_| stopped())??;
            self.finished += 1;
        }
        Ok(())
    }
}

fn stopped() -> Error {
    nvme_error("the swap I/O thread stopped".into())
}

impl<H: Backend> NvmeState<H> {
    /// Creates rank `rank`'s swap file for `owned_len` elements of `kinds` state and fills it:
    /// the master from `master(range)` (the owned parameters, widened), the moments zero.
    ///
    /// # Errors
    /// The swap file's creation errors (the path named); allocation and I/O errors.
    pub fn new(
        host: Device<H>,
        settings: &NvmeSettings,
        rank: usize,
        kinds: Vec<StateKind>,
        owned_len: usize,
        mut master: impl FnMut(Range<usize>) -> Result<Vec<f32>>,
    ) -> Result<Self> {
        let k = kinds.len().max(1);
        let (group, count) = swap_buffers(settings, k, owned_len);
        let geometry = Geometry {
            kinds: k,
            group,
            owned_len,
        };
        let len = (owned_len * k * 4) as u64;
        let file = SwapFile::create(
            &settings.path,
            &format!("rank{rank}-optimizer.swap"),
            len,
            settings.io,
        )?;
        let mut slots = Vec::with_capacity(count);
        for _ in 0..count {
            let slot = kinds
                .iter()
                .map(|_| host.alloc(DType::F32, group))
                .collect::<ds_core::Result<Vec<_>>>()?;
            slots.push(slot);
        }
        if host.backend().host_bytes(slots[0][0].all()).is_none() {
            return Err(nvme_error(
                "NVMe offload needs a host backend whose buffers are host memory (the CPU backend's are)".into(),
            ));
        }
        for s in 0..geometry.groups() {
            let range = geometry.range(s);
            let values = master(range.clone())?;
            let n = range.len();
            for (kind, buf) in kinds.iter().zip(slots[0].iter_mut()) {
                match kind {
                    StateKind::Master => upload_f32(&host, &values, buf.range_mut(0..n))?,
                    _ => host.fill(buf.range_mut(0..n), 0.0)?,
                }
            }
            for job in jobs(&host, &mut slots, geometry, 0, s, false)? {
                run(&file, &job)?;
            }
        }
        Ok(NvmeState {
            host,
            file,
            kinds,
            geometry,
            slots,
            pipeline_read: settings.pipeline_read,
            pipeline_write: settings.pipeline_write,
        })
    }

    /// Steps every sub-group: `update(range, views)` gets the partition elements of the
    /// sub-group and its state (one view per kind, in `kinds` order), read from the file,
    /// and the state goes back when it returns.
    ///
    /// # Errors
    /// `update`'s errors; I/O errors naming the swap file.
    pub fn step(
        &mut self,
        mut update: impl FnMut(Range<usize>, Vec<ViewMut<'_, H>>) -> Result<()>,
    ) -> Result<()> {
        let geometry = self.geometry;
        let groups = geometry.groups();
        let count = self.slots.len();
        let (pipeline_read, pipeline_write) = (self.pipeline_read, self.pipeline_write);
        let (host, file, slots) = (&self.host, &self.file, &mut self.slots);
        let (queue, incoming) = mpsc::channel::<Job>();
        let (report, done) = mpsc::channel::<Result<()>>();
        std::thread::scope(|scope| -> Result<()> {
            scope.spawn(move || {
                for job in incoming {
                    if report.send(run(file, &job)).is_err() {
                        break;
                    }
                }
            });
            let mut pipe = Pipeline {
                queue,
                done,
                queued: 0,
                finished: 0,
            };
            let mut reads = vec![0u64; groups];
            if pipeline_read {
                for (s, upto) in reads.iter_mut().enumerate().take(count) {
                    *upto = pipe.submit(jobs(host, slots, geometry, s % count, s, true)?)?;
                }
            }
            for s in 0..groups {
                let slot = s % count;
                if !pipeline_read {
                    reads[s] = pipe.submit(jobs(host, slots, geometry, slot, s, true)?)?;
                }
                pipe.wait(reads[s])?;
                let range = geometry.range(s);
                let n = range.len();
                let views = slots[slot].iter_mut().map(|b| b.range_mut(0..n)).collect();
                update(range, views)?;
                let written = pipe.submit(jobs(host, slots, geometry, slot, s, false)?)?;
                if !pipeline_write {
                    pipe.wait(written)?;
                }
                if pipeline_read && s + count < groups {
                    reads[s + count] =
                        pipe.submit(jobs(host, slots, geometry, slot, s + count, true)?)?;
                }
            }
            let all = pipe.queued;
            pipe.wait(all)
        })
    }

    /// Whether `kind` is kept.
    pub(crate) fn keeps(&self, kind: StateKind) -> bool {
        self.kinds.contains(&kind)
    }

    /// The `kind` state of partition elements `local`, read from the file.
    pub(crate) fn read_piece(
        &self,
        kind: StateKind,
        local: Range<usize>,
    ) -> Result<Option<Vec<f32>>> {
        let Some(ki) = self.kinds.iter().position(|k| *k == kind) else {
            return Ok(None);
        };
        let g = self.geometry;
        let mut out = Vec::with_capacity(local.len());
        let mut at = local.start;
        while at < local.end {
            let s = at / g.group;
            let range = g.range(s);
            let end = range.end.min(local.end);
            let mut bytes = vec![0u8; (end - at) * 4];
            let offset = g.offset(s, ki) + ((at - range.start) * 4) as u64;
            self.file.read_at(offset, &mut bytes)?;
            out.extend(bytes_to_f32(DType::F32, &bytes)?);
            at = end;
        }
        Ok(Some(out))
    }

    /// Writes `values` into the `kind` state from partition element `local` (nothing when
    /// the kind is not kept).
    pub(crate) fn write_piece(
        &mut self,
        kind: StateKind,
        local: usize,
        values: &[f32],
    ) -> Result<()> {
        let Some(ki) = self.kinds.iter().position(|k| *k == kind) else {
            return Ok(());
        };
        let g = self.geometry;
        let end_all = local + values.len();
        let mut at = local;
        while at < end_all {
            let s = at / g.group;
            let range = g.range(s);
            let end = range.end.min(end_all);
            let bytes: Vec<u8> = values[at - local..end - local]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let offset = g.offset(s, ki) + ((at - range.start) * 4) as u64;
            self.file.write_at(offset, &bytes)?;
            at = end;
        }
        Ok(())
    }

    /// Bytes of state in the file.
    pub fn state_bytes(&self) -> u64 {
        self.file.len()
    }

    /// The swap file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// The I/O path the swap file uses.
    pub fn io_path(&self) -> &IoPath {
        self.file.io_path()
    }
}

/// Runs one job.
fn run(file: &SwapFile, job: &Job) -> Result<()> {
    // SAFETY: `addr..addr + len` is a slot buffer's memory (host memory of the host backend,
    // alive for the whole step). The step touches a slot only after waiting for every job
    // queued on it, and queues a slot's jobs only while it does not touch it, so this is the
    // only access to those bytes while the job runs.
    let bytes = unsafe { std::slice::from_raw_parts_mut(job.addr as *mut u8, job.len) };
    if job.read {
        file.read_at(job.offset, bytes)
    } else {
        file.write_at(job.offset, bytes)
    }
}
