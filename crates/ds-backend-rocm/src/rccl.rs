//! RCCL as the HIP driver's collective calls. RCCL implements NCCL's API under NCCL's names
//! and enum values (`ncclAllReduce`, `ncclFloat32 = 7`, ...), so the communicator logic is
//! `ds_gpu::GpuComm`, the same one NCCL runs under on CUDA; only these bindings differ, loaded
//! at run time from `librccl.so`.

use crate::driver::HipDriver;
use crate::loader::Search;
use ds_core::collectives::ReduceOp;
use ds_core::{DType, Error, Result};
use ds_gpu::CollectiveDriver;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::sync::OnceLock;

/// RCCL's file names, newest first.
pub(crate) const FILES: [&str; 2] = ["librccl.so", "librccl.so.1"];

/// `ncclUniqueId`: 128 opaque bytes, passed by value to `ncclCommInitRank`.
#[repr(C)]
#[derive(Clone, Copy)]
struct UniqueId {
    internal: [c_char; 128],
}

type Handle = *mut c_void;
type Status = c_int;
type GetUniqueId = unsafe extern "C" fn(*mut UniqueId) -> Status;
type CommInitRank = unsafe extern "C" fn(*mut Handle, c_int, UniqueId, c_int) -> Status;
type CommDestroy = unsafe extern "C" fn(Handle) -> Status;
type AllReduce =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Handle, Handle) -> Status;
type AllGather =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, Handle, Handle) -> Status;
type Broadcast =
    unsafe extern "C" fn(*const c_void, *mut c_void, usize, c_int, c_int, Handle, Handle) -> Status;
type ErrorString = unsafe extern "C" fn(Status) -> *const c_char;

/// NCCL's data type and operation numbers (RCCL keeps them).
const UINT8: c_int = 1;
const INT32: c_int = 2;
const FLOAT16: c_int = 6;
const FLOAT32: c_int = 7;
const BFLOAT16: c_int = 9;
const SUM: c_int = 0;
const MAX: c_int = 2;
const AVG: c_int = 4;

#[derive(Debug)]
struct Calls {
    get_unique_id: GetUniqueId,
    comm_init_rank: CommInitRank,
    comm_destroy: CommDestroy,
    all_reduce: AllReduce,
    all_gather: AllGather,
    broadcast: Broadcast,
    error_string: ErrorString,
}

/// RCCL's calls, loaded once per process (or why not, with the paths tried).
fn calls() -> Result<&'static Calls> {
    static CALLS: OnceLock<std::result::Result<Calls, String>> = OnceLock::new();
    let loaded = CALLS.get_or_init(|| {
        let lib = Search::from_env()
            .open(&FILES)
            .map_err(|n| format!("RCCL was not found:{}", n.list()))?;
        // SAFETY: each type is the C signature of the NCCL API function RCCL exports.
        unsafe {
            Ok(Calls {
                get_unique_id: lib.get(b"ncclGetUniqueId\0")?,
                comm_init_rank: lib.get(b"ncclCommInitRank\0")?,
                comm_destroy: lib.get(b"ncclCommDestroy\0")?,
                all_reduce: lib.get(b"ncclAllReduce\0")?,
                all_gather: lib.get(b"ncclAllGather\0")?,
                broadcast: lib.get(b"ncclBroadcast\0")?,
                error_string: lib.get(b"ncclGetErrorString\0")?,
            })
        }
    });
    loaded.as_ref().map_err(|reason| Error::NoDevice {
        backend: "rocm",
        reason: reason.clone(),
    })
}

fn check(c: &Calls, op: &'static str, status: Status) -> Result<()> {
    if status == 0 {
        return Ok(());
    }
    // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any code.
    let text = unsafe { CStr::from_ptr((c.error_string)(status)) };
    Err(Error::Collective {
        op,
        rank: 0,
        reason: format!("RCCL error {status}: {}", text.to_string_lossy()),
    })
}

fn data_type(dtype: DType) -> c_int {
    match dtype {
        DType::F16 => FLOAT16,
        DType::BF16 => BFLOAT16,
        DType::F32 => FLOAT32,
        DType::I32 => INT32,
        DType::U8 => UINT8,
    }
}

fn red_op(op: ReduceOp) -> c_int {
    match op {
        ReduceOp::Sum => SUM,
        ReduceOp::Avg => AVG,
        ReduceOp::Max => MAX,
    }
}

/// An RCCL communicator; used one call at a time under `GpuComm`'s mutex.
#[derive(Debug)]
pub struct RcclComm(Handle);
// SAFETY: RCCL, like NCCL, allows a communicator to be used from any thread one call at a time,
// which GpuComm's mutex guarantees.
unsafe impl Send for RcclComm {}

impl CollectiveDriver for HipDriver {
    type Comm = RcclComm;

    fn unique_id() -> Result<[u8; 128]> {
        let c = calls()?;
        let mut id = UniqueId { internal: [0; 128] };
        // SAFETY: `id` is the 128-byte struct the call fills.
        check(c, "init", unsafe { (c.get_unique_id)(&mut id) })?;
        Ok(id.internal.map(|b| b as u8))
    }

    fn comm_init(&self, world: i32, id: &[u8; 128], rank: i32) -> Result<RcclComm> {
        let c = calls()?;
        self.select()?;
        let id = UniqueId {
            internal: id.map(|b| b as c_char),
        };
        let mut comm: Handle = std::ptr::null_mut();
        // SAFETY: `comm` receives the communicator; the id came from ncclGetUniqueId; RCCL uses
        // the device selected on this thread just above.
        check(c, "init", unsafe {
            (c.comm_init_rank)(&mut comm, world, id, rank)
        })?;
        Ok(RcclComm(comm))
    }

    fn comm_destroy(&self, comm: &mut RcclComm) {
        if let Ok(c) = calls() {
            // SAFETY: created by ncclCommInitRank, destroyed once; a failure cannot be reported.
            let _ = unsafe { (c.comm_destroy)(comm.0) };
        }
    }

    unsafe fn all_reduce(
        &self,
        comm: &RcclComm,
        ptr: u64,
        count: usize,
        dtype: DType,
        op: ReduceOp,
    ) -> Result<()> {
        let c = calls()?;
        // SAFETY: the caller guarantees `ptr` addresses `count` elements; in place; ordered on
        // the driver's stream.
        check(c, "all_reduce", unsafe {
            (c.all_reduce)(
                ptr as *const c_void,
                ptr as *mut c_void,
                count,
                data_type(dtype),
                red_op(op),
                comm.0,
                self.stream_handle(),
            )
        })
    }

    unsafe fn all_gather(&self, comm: &RcclComm, send: u64, recv: u64, bytes: usize) -> Result<()> {
        let c = calls()?;
        // SAFETY: the caller guarantees the sizes; counts in bytes with ncclUint8.
        check(c, "all_gather", unsafe {
            (c.all_gather)(
                send as *const c_void,
                recv as *mut c_void,
                bytes,
                UINT8,
                comm.0,
                self.stream_handle(),
            )
        })
    }

    unsafe fn broadcast(&self, comm: &RcclComm, ptr: u64, bytes: usize, root: i32) -> Result<()> {
        let c = calls()?;
        // SAFETY: the caller guarantees `ptr` addresses `bytes` bytes, broadcast in place.
        check(c, "broadcast", unsafe {
            (c.broadcast)(
                ptr as *const c_void,
                ptr as *mut c_void,
                bytes,
                UINT8,
                root,
                comm.0,
                self.stream_handle(),
            )
        })
    }
}

/// Whether RCCL can be loaded (for the report and the collectives' tests).
pub fn available() -> bool {
    calls().is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_rccl_the_id_is_a_named_error_not_a_panic() {
        if super::available() {
            println!("not run: RCCL is installed here");
            return;
        }
        let err = <crate::HipDriver as ds_gpu::CollectiveDriver>::unique_id()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("RCCL was not found"), "{err}");
        assert!(err.contains("librccl.so"), "{err}");
    }
}
