//! The HIP driver of the shared GPU layer: HIP's runtime (memory, one stream, modules compiled
//! by hiprtc for the device's ISA) and rocBLAS, everything loaded at run time.
//!
//! Compiled here, never run: this machine has no AMD GPU. What the shared layer does above it
//! is the code the CUDA backend runs, and is tested without a GPU in `ds-gpu`.

use crate::calls::{self, BlasCalls, Handle, HipCalls};
use crate::loader::Search;
use crate::{hiprtc, probe};
use ds_core::Collectives;
use ds_core::pool::RawFailure;
use ds_core::{Capabilities, DType, DeviceInfo, Error, Result};
use ds_gpu::{Arg, Driver, Gemm, GpuBackend, Grid};
use std::collections::HashMap;
use std::ffi::{CString, c_int, c_void};
use std::sync::{Arc, Mutex, OnceLock};

/// A HIP handle shared across threads.
#[derive(Debug, Clone, Copy)]
struct Shared(Handle);

// SAFETY: HIP streams, modules, functions and rocBLAS handles may be used from any thread once
// the thread has selected the device (every call below does); ds orders all work on one stream.
unsafe impl Send for Shared {}
// SAFETY: as above; the handles are only passed by value to the libraries.
unsafe impl Sync for Shared {}

/// The module of ds's kernels per device ordinal, loaded once per process.
static MODULES: OnceLock<Mutex<HashMap<usize, Shared>>> = OnceLock::new();

/// One block of device memory, freed with `hipFree` when dropped.
#[derive(Debug)]
pub struct HipBlock {
    ptr: u64,
    bytes: usize,
    ordinal: c_int,
    hip: Arc<HipCalls>,
}

impl Drop for HipBlock {
    fn drop(&mut self) {
        // SAFETY: the pointer came from hipMalloc on this device and is freed once; a failure
        // here (a lost device) leaves nothing to recover, so its code is ignored.
        unsafe {
            (self.hip.set_device)(self.ordinal);
            (self.hip.free)(self.ptr as *mut c_void);
        }
    }
}

/// One AMD device: its stream, ds's kernels loaded for its ISA, a rocBLAS handle.
#[derive(Debug)]
pub struct HipDriver {
    hip: Arc<HipCalls>,
    blas: BlasCalls,
    /// rocBLAS handles hold a workspace and are not documented safe for concurrent calls.
    blas_handle: Mutex<Shared>,
    stream: Shared,
    module: Shared,
    functions: Mutex<HashMap<String, Shared>>,
    ordinal: c_int,
    compute_units: u32,
    info: DeviceInfo,
}

fn no_device(reason: String) -> Error {
    Error::NoDevice {
        backend: "rocm",
        reason,
    }
}

impl HipDriver {
    fn err(&self, message: String) -> Error {
        Error::Device {
            device: self.info.name.clone(),
            message,
        }
    }

    /// HIP's answer to `code`, as a device error naming `what`.
    fn check(&self, what: &str, code: cubecl_hip_sys::hipError_t) -> Result<()> {
        self.hip.check(what, code).map_err(|m| self.err(m))
    }

    /// The stream all of this driver's work is queued on.
    pub(crate) fn stream_handle(&self) -> Handle {
        self.stream.0
    }

    /// Selects this driver's device on the calling thread (HIP's current device is per thread).
    pub(crate) fn select(&self) -> Result<()> {
        // SAFETY: a plain call with an ordinal HIP reported.
        let code = unsafe { (self.hip.set_device)(self.ordinal) };
        self.check("hipSetDevice", code)
    }

    fn function(&self, name: &str) -> Result<Shared> {
        let mut f = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(func) = f.get(name) {
            return Ok(*func);
        }
        let cname = CString::new(name).map_err(|_| self.err(format!("bad kernel name {name}")))?;
        let mut func: Handle = std::ptr::null_mut();
        // SAFETY: the module is loaded on this device; `func` receives the handle.
        let code =
            unsafe { (self.hip.module_get_function)(&mut func, self.module.0, cname.as_ptr()) };
        self.check(&format!("finding kernel {name}"), code)?;
        f.insert(name.to_string(), Shared(func));
        Ok(Shared(func))
    }

    /// Loads ds's kernels for device `ordinal` of ISA `arch`, once per process.
    fn module(hip: &HipCalls, search: &Search, ordinal: usize, arch: &str) -> Result<Shared> {
        let cache = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = cache.get(&ordinal) {
            return Ok(*m);
        }
        let device = format!("rocm:{ordinal}");
        let code = hiprtc::compile(search, arch).map_err(|e| Error::Device {
            device: device.clone(),
            message: e.to_string(),
        })?;
        let mut module: Handle = std::ptr::null_mut();
        // SAFETY: `code` is the code object hiprtc produced for this device's ISA; HIP copies
        // what it needs before returning.
        let rc = unsafe { (hip.module_load_data)(&mut module, code.as_ptr().cast()) };
        hip.check("loading ds's kernels", rc)
            .map_err(|message| Error::Device { device, message })?;
        cache.insert(ordinal, Shared(module));
        Ok(Shared(module))
    }
}

fn blas_type(dtype: DType) -> c_int {
    match dtype {
        DType::F16 => calls::F16_R,
        DType::BF16 => calls::BF16_R,
        _ => calls::F32_R,
    }
}

fn blas_op(transpose: bool) -> c_int {
    if transpose {
        calls::OP_TRANSPOSE
    } else {
        calls::OP_NONE
    }
}

impl Driver for HipDriver {
    type Block = HipBlock;
    const BACKEND: &'static str = "rocm";

    fn open(ordinal: usize) -> Result<Self> {
        let dev = probe::device(ordinal)?;
        let search = Search::from_env();
        let hip = Arc::new(HipCalls::open(&search).map_err(no_device)?);
        let blas = BlasCalls::open(&search).map_err(no_device)?;
        let id =
            c_int::try_from(ordinal).map_err(|_| no_device(format!("bad ordinal {ordinal}")))?;
        let name = format!("rocm:{ordinal} ({}, {})", dev.name, dev.arch);
        let fail = |message: String| Error::Device {
            device: name.clone(),
            message,
        };
        // SAFETY: an ordinal HIP reported (probe::device checked it).
        hip.check("hipSetDevice", unsafe { (hip.set_device)(id) })
            .map_err(fail)?;
        let mut stream: Handle = std::ptr::null_mut();
        // SAFETY: `stream` receives the new stream's handle.
        hip.check("hipStreamCreate", unsafe {
            (hip.stream_create)(&mut stream)
        })
        .map_err(fail)?;
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: `handle` receives a rocBLAS handle, bound to the stream just made.
        let rc = unsafe { (blas.create_handle)(&mut handle) };
        let rc2 = if rc == 0 {
            // SAFETY: both handles were just created on this device.
            unsafe { (blas.set_stream)(handle, stream) }
        } else {
            rc
        };
        if rc2 != 0 {
            return Err(fail(format!(
                "rocBLAS could not make a handle (status {rc2})"
            )));
        }
        let module = Self::module(&hip, &search, ordinal, &dev.arch)?;
        Ok(HipDriver {
            hip,
            blas,
            blas_handle: Mutex::new(Shared(handle)),
            stream: Shared(stream),
            module,
            functions: Mutex::new(HashMap::new()),
            ordinal: id,
            compute_units: dev.compute_units.max(1),
            info: DeviceInfo {
                backend: "rocm",
                name,
                vendor: "AMD".into(),
                memory_total: dev.memory,
                compute_units: dev.compute_units as usize,
                max_buffer_elements: None,
                capabilities: Capabilities::all_floats(),
            },
        })
    }

    fn device_count() -> Result<usize> {
        let rt = probe::runtime(&Search::from_env())?;
        rt.devices.map(|d| d.len()).map_err(no_device)
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn compute_units(&self) -> u32 {
        self.compute_units
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<HipBlock, RawFailure> {
        self.select().map_err(RawFailure::Other)?;
        let mut ptr: *mut c_void = std::ptr::null_mut();
        // SAFETY: `ptr` receives the allocation; the shared layer zero-fills it before use.
        let code = unsafe { (self.hip.malloc)(&mut ptr, bytes) };
        if code == cubecl_hip_sys::hipError_t_hipErrorOutOfMemory {
            return Err(RawFailure::OutOfMemory);
        }
        self.check("hipMalloc", code).map_err(RawFailure::Other)?;
        Ok(HipBlock {
            ptr: ptr as u64,
            bytes,
            ordinal: self.ordinal,
            hip: Arc::clone(&self.hip),
        })
    }

    fn available(&self) -> u64 {
        let (mut free, mut total) = (0usize, 0usize);
        if self.select().is_err() {
            return 0;
        }
        // SAFETY: two size_t are written.
        let code = unsafe { (self.hip.mem_get_info)(&mut free, &mut total) };
        if code == cubecl_hip_sys::hipError_t_hipSuccess {
            free as u64
        } else {
            0
        }
    }

    fn addr(&self, block: &HipBlock) -> u64 {
        block.ptr
    }

    fn zero(&self, block: &mut HipBlock) -> Result<()> {
        self.select()?;
        // SAFETY: the block holds `bytes` bytes of this device's memory.
        let code = unsafe {
            (self.hip.memset_async)(block.ptr as *mut c_void, 0, block.bytes, self.stream.0)
        };
        self.check("hipMemsetAsync", code)
    }

    fn upload(&self, src: &[u8], dst: &mut HipBlock, offset: usize) -> Result<()> {
        self.select()?;
        // SAFETY: the shared layer validated `offset + src.len()` against the block.
        let code = unsafe {
            (self.hip.memcpy_async)(
                (dst.ptr + offset as u64) as *mut c_void,
                src.as_ptr().cast(),
                src.len(),
                cubecl_hip_sys::hipMemcpyKind_hipMemcpyHostToDevice,
                self.stream.0,
            )
        };
        self.check("copying to the device", code)?;
        // `src` is borrowed only for this call: wait until HIP has read it.
        self.sync()
    }

    fn download(&self, src: &HipBlock, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.select()?;
        // SAFETY: as for upload, in the other direction.
        let code = unsafe {
            (self.hip.memcpy_async)(
                dst.as_mut_ptr().cast(),
                (src.ptr + offset as u64) as *const c_void,
                dst.len(),
                cubecl_hip_sys::hipMemcpyKind_hipMemcpyDeviceToHost,
                self.stream.0,
            )
        };
        self.check("copying from the device", code)?;
        self.sync()
    }

    fn copy(
        &self,
        src: &HipBlock,
        src_offset: usize,
        dst: &mut HipBlock,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.select()?;
        // SAFETY: both ranges were validated against their blocks by the shared layer.
        let code = unsafe {
            (self.hip.memcpy_async)(
                (dst.ptr + dst_offset as u64) as *mut c_void,
                (src.ptr + src_offset as u64) as *const c_void,
                bytes,
                cubecl_hip_sys::hipMemcpyKind_hipMemcpyDeviceToDevice,
                self.stream.0,
            )
        };
        self.check("device-to-device copy", code)
    }

    fn sync(&self) -> Result<()> {
        self.select()?;
        // SAFETY: the stream belongs to this device.
        // hipStreamSynchronize reports the errors of the work queued on the stream. Not
        // hipGetLastError: it also returns errors of calls already answered (an out-of-memory
        // the pool recovered from), which would fail the next sync.
        let code = unsafe { (self.hip.stream_sync)(self.stream.0) };
        self.check("synchronizing (and the work queued before)", code)
    }

    unsafe fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        self.select()?;
        let func = self.function(name)?;
        // Each argument in an 8-byte slot; 4-byte ones in its low bytes (little-endian hosts),
        // which is where a pointer to the slot reads them.
        let mut slots: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(v) | Arg::U64(v) => v,
                Arg::U32(v) => u64::from(v),
                Arg::I32(v) => u64::from(v as u32),
                Arg::F32(v) => u64::from(v.to_bits()),
            })
            .collect();
        let mut params: Vec<*mut c_void> = slots
            .iter_mut()
            .map(|s| (s as *mut u64).cast::<c_void>())
            .collect();
        // SAFETY: the caller guarantees the arguments match the kernel's parameters and the
        // addresses are valid; `params` points at `slots`, alive across the call (HIP copies
        // the arguments at launch).
        let code = unsafe {
            (self.hip.launch_kernel)(
                func.0,
                grid.blocks,
                1,
                1,
                grid.threads,
                1,
                1,
                grid.shared_bytes,
                self.stream.0,
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        self.check(&format!("launching {name}"), code)
    }

    fn native_collectives(
        backend: &GpuBackend<Self>,
        rank: usize,
        world: usize,
        share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn Collectives<GpuBackend<Self>>>>> {
        // RCCL: one communicator per process, its id shared by the caller.
        Some(ds_gpu::comm::bootstrap(backend, rank, world, share))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        self.select()?;
        let handle = self.blas_handle.lock().unwrap_or_else(|p| p.into_inner());
        let dt = blas_type(g.dtype);
        // SAFETY: the caller guarantees the operands hold what the batch reaches; the handle is
        // bound to this driver's stream; alpha and beta are f32 as the f32 compute type needs
        // and live across the call; D is C (in place), as cuBLAS's form has it.
        let status = unsafe {
            (self.blas.gemm_strided_batched_ex)(
                handle.0,
                blas_op(g.trans_a),
                blas_op(g.trans_b),
                g.m,
                g.n,
                g.k,
                (&g.alpha as *const f32).cast(),
                g.a as *const c_void,
                dt,
                g.lda,
                g.stride_a,
                g.b as *const c_void,
                dt,
                g.ldb,
                g.stride_b,
                (&g.beta as *const f32).cast(),
                g.c as *const c_void,
                dt,
                g.ldc,
                g.stride_c,
                g.c as *mut c_void,
                dt,
                g.ldc,
                g.stride_c,
                g.batch,
                calls::F32_R,
                calls::ALGO_STANDARD,
                0,
                0,
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(self.err(format!(
                "rocblas_gemm_strided_batched_ex failed (status {status})"
            )))
        }
    }
}
