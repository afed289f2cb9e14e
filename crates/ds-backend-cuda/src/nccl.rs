//! NCCL as the CUDA driver's collective calls: the communicator logic (16-bit reductions in
//! f32, padded parts, the id's bootstrap) is `ds_gpu::GpuComm`, shared with RCCL on ROCm.

use crate::driver::CudaDriver;
use crate::{error, probe};
use cudarc::nccl::{result as nc, sys};
use ds_core::collectives::ReduceOp;
use ds_core::{DType, Result};
use ds_gpu::{CollectiveDriver, Driver};

/// A raw communicator; NCCL allows using it from any thread one call at a time, which
/// `GpuComm`'s mutex guarantees.
#[derive(Debug)]
pub struct RawComm(sys::ncclComm_t);
// SAFETY: the communicator is only used under GpuComm's mutex (one call at a time), which is
// all NCCL requires of a communicator used from several threads.
unsafe impl Send for RawComm {}

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

impl CudaDriver {
    fn cu_stream(&self) -> sys::cudaStream_t {
        self.stream.cu_stream() as _
    }
}

impl CollectiveDriver for CudaDriver {
    type Comm = RawComm;

    fn unique_id() -> Result<[u8; 128]> {
        probe::check_nccl()?;
        nc::get_uniqueid()
            .map(|id| id.internal.map(|c| c as u8))
            .map_err(|e| error::nccl("init", 0, e))
    }

    fn comm_init(&self, world: i32, id: &[u8; 128], rank: i32) -> Result<RawComm> {
        probe::check_nccl()?;
        self.ctx
            .bind_to_thread()
            .map_err(|e| error::driver(&self.info().name, "binding the device for NCCL", e))?;
        let id = sys::ncclUniqueId {
            internal: id.map(|b| b as _),
        };
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id came from ncclGetUniqueId; NCCL uses the
        // device bound to this thread just above.
        unsafe { nc::comm_init_rank(&mut comm, world, id, rank) }
            .map_err(|e| error::nccl("init", 0, e))?;
        Ok(RawComm(comm))
    }

    fn comm_destroy(&self, comm: &mut RawComm) {
        // SAFETY: the communicator was created by comm_init_rank and is destroyed once; a
        // failure here cannot be reported and leaves nothing to clean up.
        let _ = unsafe { nc::comm_destroy(comm.0) };
    }

    unsafe fn all_reduce(
        &self,
        comm: &RawComm,
        ptr: u64,
        count: usize,
        dtype: DType,
        op: ReduceOp,
    ) -> Result<()> {
        // SAFETY: the caller guarantees `ptr` addresses `count` elements; in place, which NCCL
        // allows (sendbuff == recvbuff); ordered on the backend stream.
        unsafe {
            nc::all_reduce(
                ptr as *const _,
                ptr as *mut _,
                count,
                nccl_type(dtype),
                nccl_op(op),
                comm.0,
                self.cu_stream(),
            )
        }
        .map(|_| ())
        .map_err(|e| error::nccl("all_reduce", 0, e))
    }

    unsafe fn all_gather(&self, comm: &RawComm, send: u64, recv: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller guarantees the sizes; counts in bytes with ncclUint8.
        unsafe {
            nc::all_gather(
                send as *const _,
                recv as *mut _,
                bytes,
                sys::ncclDataType_t::ncclUint8,
                comm.0,
                self.cu_stream(),
            )
        }
        .map(|_| ())
        .map_err(|e| error::nccl("all_gather", 0, e))
    }

    unsafe fn broadcast(&self, comm: &RawComm, ptr: u64, bytes: usize, root: i32) -> Result<()> {
        // SAFETY: the caller guarantees `ptr` addresses `bytes` bytes, broadcast in place.
        unsafe {
            nc::broadcast(
                ptr as *const _,
                ptr as *mut _,
                bytes,
                sys::ncclDataType_t::ncclUint8,
                root,
                comm.0,
                self.cu_stream(),
            )
        }
        .map(|_| ())
        .map_err(|e| error::nccl("broadcast", 0, e))
    }
}
