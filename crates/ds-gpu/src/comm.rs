//! Collectives on device buffers through the NCCL-shaped API (NCCL on CUDA, RCCL on ROCm:
//! the same calls), written once for every driver that has it.
//!
//! One communicator per rank, on the rank's backend stream. The 128-byte unique id is made by
//! rank 0 ([`CommId::new`]) and handed to the other ranks: shared directly between threads of
//! one process, or broadcast as its bytes over MPI ([`CommId::to_bytes`] /
//! [`CommId::from_bytes`]).
//!
//! ds's contract is kept where NCCL's differs: 16-bit sums and averages are computed in f32
//! (the data is widened on the device, reduced, and rounded once), and lengths that do not
//! divide by the world size go through padded scratch buffers (NCCL's reduce-scatter and
//! all-gather need equal parts).

use crate::backend::GpuBackend;
use crate::buffer::GpuBuffer;
use crate::driver::Driver;
use ds_core::collectives::{Collectives, ReduceOp, partition};
use ds_core::kernels::{Validated, View, ViewMut};
use ds_core::{BufferExt, DType, Device, DeviceBuffer, Error, Result};
use std::sync::Mutex;

/// The NCCL-shaped collective calls of a driver. Counts are elements of `dtype` for the
/// reduction and bytes for the data movements; every call is queued on the driver's stream.
pub trait CollectiveDriver: Driver {
    /// A communicator handle.
    type Comm: std::fmt::Debug + Send;

    /// A fresh unique id (`ncclGetUniqueId`).
    ///
    /// # Errors
    /// `Error::NoDevice` when the library is missing; its error otherwise.
    fn unique_id() -> Result<[u8; 128]>;

    /// Joins communicator `id` as `rank` of `world` on this driver's device.
    ///
    /// # Errors
    /// The library's.
    fn comm_init(&self, world: i32, id: &[u8; 128], rank: i32) -> Result<Self::Comm>;

    /// Destroys a communicator (errors cannot be reported from a drop and are ignored).
    fn comm_destroy(&self, comm: &mut Self::Comm);

    /// In-place all-reduce of `count` elements of `dtype` at `ptr`.
    ///
    /// # Safety
    /// `ptr` addresses `count` live elements of this device.
    ///
    /// # Errors
    /// The library's, as `Error::Collective`.
    unsafe fn all_reduce(
        &self,
        comm: &Self::Comm,
        ptr: u64,
        count: usize,
        dtype: DType,
        op: ReduceOp,
    ) -> Result<()>;

    /// All-gather of `bytes` bytes from every rank's `send` into `recv` (world * `bytes`).
    ///
    /// # Safety
    /// Both address live memory of those sizes on this device.
    ///
    /// # Errors
    /// The library's.
    unsafe fn all_gather(
        &self,
        comm: &Self::Comm,
        send: u64,
        recv: u64,
        bytes: usize,
    ) -> Result<()>;

    /// In-place broadcast of `bytes` bytes at `ptr` from rank `root`.
    ///
    /// # Safety
    /// `ptr` addresses `bytes` live bytes on this device.
    ///
    /// # Errors
    /// The library's.
    unsafe fn broadcast(&self, comm: &Self::Comm, ptr: u64, bytes: usize, root: i32) -> Result<()>;
}

/// The id every rank of one communicator starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommId([u8; 128]);

impl CommId {
    /// A fresh id of driver `D`'s library (made once, on rank 0).
    ///
    /// # Errors
    /// As [`CollectiveDriver::unique_id`].
    pub fn new<D: CollectiveDriver>() -> Result<Self> {
        D::unique_id().map(CommId)
    }

    /// The id as bytes, to broadcast to other processes.
    pub fn to_bytes(&self) -> [u8; 128] {
        self.0
    }

    /// An id received as bytes.
    pub fn from_bytes(bytes: [u8; 128]) -> Self {
        CommId(bytes)
    }
}

/// What rank 0 shares when it could not make an id: NCCL's and RCCL's ids carry a random magic
/// and an address, never 128 zero bytes.
const FAILED: [u8; 128] = [0; 128];

/// The communicator of `rank` of `world` processes: rank 0 makes the id, `share` hands it to
/// every rank (over MPI, say), each joins. What a driver with NCCL-shaped calls answers to
/// [`crate::Driver::native_collectives`].
///
/// # Errors
/// The library's (a missing library is `Error::NoDevice`), or `share`'s.
pub fn bootstrap<D: CollectiveDriver>(
    backend: &GpuBackend<D>,
    rank: usize,
    world: usize,
    share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
) -> Result<Box<dyn Collectives<GpuBackend<D>>>> {
    let mine = if rank == 0 {
        match CommId::new::<D>() {
            Ok(id) => Some(id.to_bytes()),
            Err(e) => {
                // Tell the other ranks, which wait in the broadcast, instead of leaving them.
                let _ = share(Some(FAILED));
                return Err(e);
            }
        }
    } else {
        None
    };
    let got = share(mine)?;
    if got == FAILED {
        return Err(Error::Collective {
            op: "init",
            rank,
            reason: "rank 0 could not make the communicator's id (its own error says why)".into(),
        });
    }
    Ok(Box::new(GpuComm::new(
        backend,
        rank,
        world,
        &CommId::from_bytes(got),
    )?))
}

/// One rank of a communicator over a GPU backend's buffers.
#[derive(Debug)]
pub struct GpuComm<D: CollectiveDriver> {
    comm: Mutex<D::Comm>,
    backend: GpuBackend<D>,
    rank: usize,
    world: usize,
}

impl<D: CollectiveDriver> GpuComm<D> {
    /// Joins communicator `id` as `rank` of `world` on `backend`'s device and stream; every
    /// rank must call this (each from its own thread or process).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rank out of range; the library's error otherwise.
    pub fn new(backend: &GpuBackend<D>, rank: usize, world: usize, id: &CommId) -> Result<Self> {
        if rank >= world {
            return Err(Error::invalid(
                "GpuComm::new",
                "rank",
                format!("{rank} is out of range for a world of {world}"),
            ));
        }
        let (r, w) = (
            i32::try_from(rank).map_err(|_| Error::invalid("GpuComm::new", "rank", "too large"))?,
            i32::try_from(world)
                .map_err(|_| Error::invalid("GpuComm::new", "world", "too large"))?,
        );
        let comm = backend
            .driver()
            .comm_init(w, &id.0, r)
            .map_err(|e| at_rank(e, rank))?;
        Ok(GpuComm {
            comm: Mutex::new(comm),
            backend: backend.clone(),
            rank,
            world,
        })
    }

    /// A communicator of one rank (the single-process path).
    ///
    /// # Errors
    /// As [`GpuComm::new`].
    pub fn single(backend: &GpuBackend<D>) -> Result<Self> {
        GpuComm::new(backend, 0, 1, &CommId::new::<D>()?)
    }

    /// Runs one library call with the communicator (one call at a time, as NCCL requires of a
    /// communicator shared between threads).
    fn with_comm(&self, f: impl FnOnce(&D, &D::Comm) -> Result<()>) -> Result<()> {
        let guard = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        f(self.backend.driver(), &guard).map_err(|e| at_rank(e, self.rank))
    }

    fn device(&self) -> Device<GpuBackend<D>> {
        Device::new(self.backend.clone())
    }

    /// In-place all-reduce of an f32 (or, for max, any float) view.
    fn all_reduce_native(&self, ptr: u64, len: usize, dtype: DType, op: ReduceOp) -> Result<()> {
        // SAFETY: ptr addresses `len` elements of `dtype` in a live buffer of this backend.
        self.with_comm(|d, c| unsafe { d.all_reduce(c, ptr, len, dtype, op) })
    }

    /// An f32 copy of a 16-bit view (16-bit sums are computed in f32).
    fn widened(&self, view: View<'_, GpuBackend<D>>) -> Result<GpuBuffer<D>> {
        let dev = self.device();
        let mut wide = dev.alloc(DType::F32, view.len())?;
        dev.cast(view, wide.all_mut())?;
        Ok(wide)
    }

    /// Whether a reduction of `dtype` with `op` must be widened to f32 first.
    fn needs_widening(dtype: DType, op: ReduceOp) -> bool {
        dtype.is_half() && op != ReduceOp::Max
    }
}

impl<D: CollectiveDriver> Drop for GpuComm<D> {
    fn drop(&mut self) {
        let mut guard = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        self.backend.driver().comm_destroy(&mut guard);
    }
}

/// A driver's collective error with this rank's number (the drivers do not know it).
fn at_rank(e: Error, rank: usize) -> Error {
    match e {
        Error::Collective { op, reason, .. } => Error::Collective { op, rank, reason },
        other => other,
    }
}

fn addr_mut<D: Driver>(v: &ViewMut<'_, GpuBackend<D>>) -> u64 {
    v.buffer().addr(v.offset())
}

impl<D: CollectiveDriver> Collectives<GpuBackend<D>> for GpuComm<D> {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn exec_all_reduce(
        &self,
        device: &Device<GpuBackend<D>>,
        mut buf: ViewMut<'_, GpuBackend<D>>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        let (len, dtype) = (buf.len(), buf.dtype());
        if len == 0 {
            return Ok(());
        }
        if Self::needs_widening(dtype, op) {
            let wide = self.widened(buf.as_ref())?;
            self.all_reduce_native(wide.addr(0), len, DType::F32, op)?;
            return device.cast(wide.all(), buf.reborrow());
        }
        self.all_reduce_native(addr_mut(&buf), len, dtype, op)
    }

    fn exec_reduce_scatter(
        &self,
        device: &Device<GpuBackend<D>>,
        input: View<'_, GpuBackend<D>>,
        output: ViewMut<'_, GpuBackend<D>>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        // Reduce everything into a scratch copy, then keep this rank's part: exact for any
        // length, and one all-reduce moves no more than a ring reduce-scatter plus gather.
        let len = input.len();
        let wide = Self::needs_widening(input.dtype(), op);
        let scratch = if wide {
            self.widened(input)?
        } else {
            let mut s = device.alloc(input.dtype(), len)?;
            device.copy(input, s.all_mut())?;
            s
        };
        if len > 0 {
            self.all_reduce_native(scratch.addr(0), len, scratch.dtype(), op)?;
        }
        let part = partition(len, self.world, self.rank);
        if wide {
            device.cast(scratch.range(part), output)
        } else {
            device.copy(scratch.range(part), output)
        }
    }

    fn exec_all_gather(
        &self,
        device: &Device<GpuBackend<D>>,
        input: View<'_, GpuBackend<D>>,
        mut output: ViewMut<'_, GpuBackend<D>>,
        _: Validated,
    ) -> Result<()> {
        let len = output.len();
        let dtype = output.dtype();
        let size = dtype.size_bytes();
        let most = partition(len, self.world, 0).len();
        if most == 0 {
            return Ok(());
        }
        // Equal slots of `most` elements: every rank sends its part padded to a slot.
        let mut send = device.alloc(dtype, most)?;
        device.copy(
            input,
            send.range_mut(0..partition(len, self.world, self.rank).len()),
        )?;
        let slots = device.alloc(dtype, most * self.world)?;
        let (sp, rp) = (send.addr(0), slots.addr(0));
        // SAFETY: `send` holds `most` elements and `slots` world * `most`, both live buffers of
        // this backend; the count is in bytes, so any dtype travels unchanged.
        self.with_comm(|d, c| unsafe { d.all_gather(c, sp, rp, most * size) })?;
        for r in 0..self.world {
            let part = partition(len, self.world, r);
            let n = part.len();
            device.copy(slots.range(r * most..r * most + n), output.sub(part))?;
        }
        Ok(())
    }

    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<GpuBackend<D>>,
        buf: ViewMut<'_, GpuBackend<D>>,
        op: ReduceOp,
        v: Validated,
    ) -> Result<()> {
        // An all-reduce leaves the reduction in every element, this rank's part included; the
        // contract leaves the other parts unspecified.
        self.exec_all_reduce(device, buf, op, v)
    }

    fn exec_all_gather_in_place(
        &self,
        device: &Device<GpuBackend<D>>,
        mut buf: ViewMut<'_, GpuBackend<D>>,
        v: Validated,
    ) -> Result<()> {
        let len = buf.len();
        let mine = partition(len, self.world, self.rank);
        if len.is_multiple_of(self.world) && len > 0 {
            // Equal parts: NCCL's in-place all-gather (sendbuff = recvbuff + rank * count).
            let bytes = mine.len() * buf.dtype().size_bytes();
            let base = addr_mut(&buf);
            let send = base + (self.rank * bytes) as u64;
            // SAFETY: buf holds world * `bytes` bytes; this rank's part starts at rank * bytes,
            // the in-place layout NCCL and RCCL define for all-gather.
            return self.with_comm(|d, c| unsafe { d.all_gather(c, send, base, bytes) });
        }
        let mut own = device.alloc(buf.dtype(), mine.len())?;
        device.copy(buf.as_ref().sub(mine), own.all_mut())?;
        self.exec_all_gather(device, own.all(), buf.reborrow(), v)
    }

    fn exec_broadcast(
        &self,
        _: &Device<GpuBackend<D>>,
        buf: ViewMut<'_, GpuBackend<D>>,
        root: usize,
        _: Validated,
    ) -> Result<()> {
        let bytes = buf.len() * buf.dtype().size_bytes();
        if bytes == 0 {
            return Ok(());
        }
        let ptr = addr_mut(&buf);
        let root =
            i32::try_from(root).map_err(|_| Error::invalid("broadcast", "root", "too large"))?;
        // SAFETY: ptr addresses `bytes` bytes of a live buffer, broadcast in place.
        self.with_comm(|d, c| unsafe { d.broadcast(c, ptr, bytes, root) })
    }

    fn barrier(&self) -> Result<()> {
        let dev = self.device();
        let one = dev.alloc(DType::F32, 1)?;
        self.all_reduce_native(one.addr(0), 1, DType::F32, ReduceOp::Sum)?;
        dev.sync()
    }
}
