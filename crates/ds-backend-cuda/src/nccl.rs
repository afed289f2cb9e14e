//! Collectives on device buffers with NCCL.
//!
//! One communicator per rank, on the rank's backend stream. The unique id is made by rank 0
//! ([`NcclId::new`]) and handed to the other ranks: shared directly between threads of one
//! process, or broadcast as its 128 bytes over MPI ([`NcclId::to_bytes`] /
//! [`NcclId::from_bytes`]).
//!
//! ds's contract is kept where NCCL's differs: 16-bit sums and averages are computed in f32
//! (the data is widened on the device, reduced, and rounded once), and lengths that do not
//! divide by the world size go through padded scratch buffers (NCCL's reduce-scatter and
//! all-gather need equal parts).

use crate::CudaBackend;
use crate::CudaBuffer;
use crate::{error, probe};
use cudarc::nccl::{result as nc, sys};
use ds_core::collectives::{Collectives, ReduceOp, partition};
use ds_core::kernels::{Validated, View, ViewMut};
use ds_core::{BufferExt, DType, Device, DeviceBuffer, Error, Result};
use std::sync::Mutex;

/// The 128-byte id every rank of one communicator starts from.
#[derive(Debug, Clone, Copy)]
pub struct NcclId(sys::ncclUniqueId);

impl NcclId {
    /// A fresh id (made once, on rank 0).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when NCCL is missing; NCCL's error otherwise.
    pub fn new() -> Result<Self> {
        probe::check_nccl()?;
        nc::get_uniqueid()
            .map(NcclId)
            .map_err(|e| error::nccl("init", 0, e))
    }

    /// The id as bytes, to broadcast to other processes.
    pub fn to_bytes(&self) -> [u8; 128] {
        self.0.internal.map(|c| c as u8)
    }

    /// An id received as bytes.
    pub fn from_bytes(bytes: [u8; 128]) -> Self {
        NcclId(sys::ncclUniqueId {
            internal: bytes.map(|b| b as _),
        })
    }
}

/// A raw communicator; NCCL allows using it from any thread one call at a time, which the
/// mutex in [`NcclComm`] guarantees.
#[derive(Debug)]
struct RawComm(sys::ncclComm_t);
// SAFETY: the communicator is only used under NcclComm's mutex (one call at a time), which is
// all NCCL requires of a communicator used from several threads.
unsafe impl Send for RawComm {}

/// One rank of an NCCL communicator over CUDA buffers.
#[derive(Debug)]
pub struct NcclComm {
    comm: Mutex<RawComm>,
    backend: CudaBackend,
    rank: usize,
    world: usize,
}

impl NcclComm {
    /// Joins communicator `id` as `rank` of `world` on `backend`'s device and stream; every
    /// rank must call this (each from its own thread or process).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when NCCL is missing; [`Error::InvalidArgument`] for a rank out of
    /// range; NCCL's error otherwise.
    pub fn new(backend: &CudaBackend, rank: usize, world: usize, id: &NcclId) -> Result<Self> {
        probe::check_nccl()?;
        if rank >= world {
            return Err(Error::invalid(
                "NcclComm::new",
                "rank",
                format!("{rank} is out of range for a world of {world}"),
            ));
        }
        let (r, w) = (
            i32::try_from(rank)
                .map_err(|_| Error::invalid("NcclComm::new", "rank", "too large"))?,
            i32::try_from(world)
                .map_err(|_| Error::invalid("NcclComm::new", "world", "too large"))?,
        );
        backend
            .driver()
            .ctx
            .bind_to_thread()
            .map_err(|e| error::driver(backend.device(), "binding the device for NCCL", e))?;
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id came from ncclGetUniqueId; NCCL uses the
        // device bound to this thread just above.
        unsafe { nc::comm_init_rank(&mut comm, w, id.0, r) }
            .map_err(|e| error::nccl("init", rank, e))?;
        Ok(NcclComm {
            comm: Mutex::new(RawComm(comm)),
            backend: backend.clone(),
            rank,
            world,
        })
    }

    /// A communicator of one rank (the single-process path).
    ///
    /// # Errors
    /// As [`NcclComm::new`].
    pub fn single(backend: &CudaBackend) -> Result<Self> {
        NcclComm::new(backend, 0, 1, &NcclId::new()?)
    }

    fn stream(&self) -> sys::cudaStream_t {
        self.backend.driver().stream.cu_stream() as _
    }

    /// Runs one NCCL call with the communicator.
    fn with_comm(
        &self,
        op: &'static str,
        f: impl FnOnce(sys::ncclComm_t) -> Result<nc::NcclStatus, nc::NcclError>,
    ) -> Result<()> {
        let guard = self.comm.lock().map_err(|_| Error::Collective {
            op,
            rank: self.rank,
            reason: "the communicator's lock was poisoned by a panic".into(),
        })?;
        f(guard.0)
            .map(|_| ())
            .map_err(|e| error::nccl(op, self.rank, e))
    }

    fn device(&self) -> Device<CudaBackend> {
        Device::new(self.backend.clone())
    }
}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if let Ok(guard) = self.comm.lock() {
            // SAFETY: the communicator was created by comm_init_rank and is destroyed once;
            // a failure here cannot be reported and leaves nothing to clean up.
            let _ = unsafe { nc::comm_destroy(guard.0) };
        }
    }
}

fn nccl_type(dtype: DType) -> sys::ncclDataType_t {
    match dtype {
        DType::F16 => sys::ncclDataType_t::ncclFloat16,
        DType::BF16 => sys::ncclDataType_t::ncclBfloat16,
        DType::F32 => sys::ncclDataType_t::ncclFloat32,
        DType::I32 => sys::ncclDataType_t::ncclInt32,
        DType::U8 => sys::ncclDataType_t::ncclUint8,
    }
}

fn nccl_op(op: ReduceOp) -> sys::ncclRedOp_t {
    match op {
        ReduceOp::Sum => sys::ncclRedOp_t::ncclSum,
        ReduceOp::Avg => sys::ncclRedOp_t::ncclAvg,
        ReduceOp::Max => sys::ncclRedOp_t::ncclMax,
    }
}

fn addr_mut(v: &ViewMut<'_, CudaBackend>) -> u64 {
    v.buffer().addr(v.offset())
}

impl NcclComm {
    /// In-place all-reduce of an f32 (or, for max, any float) view.
    fn all_reduce_native(&self, ptr: u64, len: usize, dtype: DType, op: ReduceOp) -> Result<()> {
        let stream = self.stream();
        // SAFETY: ptr addresses `len` elements of `dtype` in a live buffer of this backend, used
        // in place (NCCL allows sendbuff == recvbuff); the call is ordered on the backend stream.
        self.with_comm("all_reduce", |c| unsafe {
            nc::all_reduce(
                ptr as *const _,
                ptr as *mut _,
                len,
                nccl_type(dtype),
                nccl_op(op),
                c,
                stream,
            )
        })
    }

    /// An f32 copy of a 16-bit view (16-bit sums are computed in f32).
    fn widened(&self, view: View<'_, CudaBackend>) -> Result<CudaBuffer> {
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

impl Collectives<CudaBackend> for NcclComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn exec_all_reduce(
        &self,
        device: &Device<CudaBackend>,
        mut buf: ViewMut<'_, CudaBackend>,
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
        device: &Device<CudaBackend>,
        input: View<'_, CudaBackend>,
        output: ViewMut<'_, CudaBackend>,
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
        device: &Device<CudaBackend>,
        input: View<'_, CudaBackend>,
        mut output: ViewMut<'_, CudaBackend>,
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
        let (sp, rp, stream) = (send.addr(0), slots.addr(0), self.stream());
        // SAFETY: `send` holds `most` elements and `slots` world * `most`, both live buffers of
        // this backend; counts are in bytes with ncclUint8, so any dtype travels unchanged.
        self.with_comm("all_gather", |c| unsafe {
            nc::all_gather(
                sp as *const _,
                rp as *mut _,
                most * size,
                sys::ncclDataType_t::ncclUint8,
                c,
                stream,
            )
        })?;
        for r in 0..self.world {
            let part = partition(len, self.world, r);
            let n = part.len();
            device.copy(slots.range(r * most..r * most + n), output.sub(part))?;
        }
        Ok(())
    }

    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<CudaBackend>,
        buf: ViewMut<'_, CudaBackend>,
        op: ReduceOp,
        v: Validated,
    ) -> Result<()> {
        // An all-reduce leaves the reduction in every element, this rank's part included; the
        // contract leaves the other parts unspecified.
        self.exec_all_reduce(device, buf, op, v)
    }

    fn exec_all_gather_in_place(
        &self,
        device: &Device<CudaBackend>,
        mut buf: ViewMut<'_, CudaBackend>,
        v: Validated,
    ) -> Result<()> {
        let len = buf.len();
        let mine = partition(len, self.world, self.rank);
        if len.is_multiple_of(self.world) && len > 0 {
            // Equal parts: NCCL's in-place all-gather (sendbuff = recvbuff + rank * count).
            let bytes = mine.len() * buf.dtype().size_bytes();
            let base = addr_mut(&buf);
            let (send, stream) = (base + (self.rank * bytes) as u64, self.stream());
            // SAFETY: buf holds world * `bytes` bytes; this rank's part starts at rank * bytes,
            // the in-place layout NCCL defines for all-gather.
            return self.with_comm("all_gather_in_place", |c| unsafe {
                nc::all_gather(
                    send as *const _,
                    base as *mut _,
                    bytes,
                    sys::ncclDataType_t::ncclUint8,
                    c,
                    stream,
                )
            });
        }
        let mut own = device.alloc(buf.dtype(), mine.len())?;
        device.copy(buf.as_ref().sub(mine), own.all_mut())?;
        self.exec_all_gather(device, own.all(), buf.reborrow(), v)
    }

    fn exec_broadcast(
        &self,
        _: &Device<CudaBackend>,
        buf: ViewMut<'_, CudaBackend>,
        root: usize,
        _: Validated,
    ) -> Result<()> {
        let bytes = buf.len() * buf.dtype().size_bytes();
        if bytes == 0 {
            return Ok(());
        }
        let (ptr, stream) = (addr_mut(&buf), self.stream());
        let root =
            i32::try_from(root).map_err(|_| Error::invalid("broadcast", "root", "too large"))?;
        // SAFETY: ptr addresses `bytes` bytes of a live buffer, broadcast in place.
        self.with_comm("broadcast", |c| unsafe {
            nc::broadcast(
                ptr as *const _,
                ptr as *mut _,
                bytes,
                sys::ncclDataType_t::ncclUint8,
                root,
                c,
                stream,
            )
        })
    }

    fn barrier(&self) -> Result<()> {
        let dev = self.device();
        let one = dev.alloc(DType::F32, 1)?;
        self.all_reduce_native(one.addr(0), 1, DType::F32, ReduceOp::Sum)?;
        dev.sync()
    }
}
