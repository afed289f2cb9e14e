//! The HIP runtime and rocBLAS functions the device driver calls, loaded from the libraries the
//! probe found. Every pointer is typed with the C signature of `hip_runtime_api.h` and
//! `rocblas.h`; the libraries stay loaded for the process, so the pointers never dangle.

use crate::loader::{Opened, Search};
use cubecl_hip_sys::{hipError_t, hipMemcpyKind};
use std::ffi::{c_char, c_int, c_uint, c_void};

/// An opaque HIP or rocBLAS handle (stream, module, function, BLAS handle).
pub(crate) type Handle = *mut c_void;

type SetDevice = unsafe extern "C" fn(c_int) -> hipError_t;
type Malloc = unsafe extern "C" fn(*mut *mut c_void, usize) -> hipError_t;
type Free = unsafe extern "C" fn(*mut c_void) -> hipError_t;
type MemsetAsync = unsafe extern "C" fn(*mut c_void, c_int, usize, Handle) -> hipError_t;
type MemcpyAsync =
    unsafe extern "C" fn(*mut c_void, *const c_void, usize, hipMemcpyKind, Handle) -> hipError_t;
type StreamCreate = unsafe extern "C" fn(*mut Handle) -> hipError_t;
type StreamSync = unsafe extern "C" fn(Handle) -> hipError_t;
type MemGetInfo = unsafe extern "C" fn(*mut usize, *mut usize) -> hipError_t;
type ModuleLoadData = unsafe extern "C" fn(*mut Handle, *const c_void) -> hipError_t;
type ModuleGetFunction = unsafe extern "C" fn(*mut Handle, Handle, *const c_char) -> hipError_t;
#[allow(clippy::type_complexity)]
type LaunchKernel = unsafe extern "C" fn(
    Handle,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    c_uint,
    Handle,
    *mut *mut c_void,
    *mut *mut c_void,
) -> hipError_t;

/// HIP's device-side calls.
#[derive(Debug)]
pub(crate) struct HipCalls {
    pub(crate) set_device: SetDevice,
    pub(crate) malloc: Malloc,
    pub(crate) free: Free,
    pub(crate) memset_async: MemsetAsync,
    pub(crate) memcpy_async: MemcpyAsync,
    pub(crate) stream_create: StreamCreate,
    pub(crate) stream_sync: StreamSync,
    pub(crate) mem_get_info: MemGetInfo,
    pub(crate) module_load_data: ModuleLoadData,
    pub(crate) module_get_function: ModuleGetFunction,
    pub(crate) launch_kernel: LaunchKernel,
    error_string: crate::hip::ErrorString,
}

impl HipCalls {
    /// The calls, from the runtime `search` finds.
    pub(crate) fn open(search: &Search) -> Result<HipCalls, String> {
        let lib = search
            .open(&crate::hip::FILES)
            .map_err(|n| format!("no HIP runtime:{}", n.list()))?;
        Self::from(&lib)
    }

    fn from(lib: &Opened) -> Result<HipCalls, String> {
        // SAFETY: each type is the C signature of the named function in hip_runtime_api.h.
        unsafe {
            Ok(HipCalls {
                set_device: lib.get(b"hipSetDevice\0")?,
                malloc: lib.get(b"hipMalloc\0")?,
                free: lib.get(b"hipFree\0")?,
                memset_async: lib.get(b"hipMemsetAsync\0")?,
                memcpy_async: lib.get(b"hipMemcpyAsync\0")?,
                stream_create: lib.get(b"hipStreamCreate\0")?,
                stream_sync: lib.get(b"hipStreamSynchronize\0")?,
                mem_get_info: lib.get(b"hipMemGetInfo\0")?,
                module_load_data: lib.get(b"hipModuleLoadData\0")?,
                module_get_function: lib.get(b"hipModuleGetFunction\0")?,
                launch_kernel: lib.get(b"hipModuleLaunchKernel\0")?,
                error_string: lib.get(b"hipGetErrorString\0")?,
            })
        }
    }

    /// `code` as a message, or `Ok` for success.
    pub(crate) fn check(&self, what: &str, code: hipError_t) -> Result<(), String> {
        crate::hip::check(self.error_string, what, code)
    }
}

/// rocBLAS's status code.
pub(crate) type BlasStatus = c_int;
/// `rocblas_operation_none` / `_transpose`.
pub(crate) const OP_NONE: c_int = 111;
pub(crate) const OP_TRANSPOSE: c_int = 112;
/// `rocblas_datatype_f16_r`, `_f32_r`, `_bf16_r`.
pub(crate) const F16_R: c_int = 150;
pub(crate) const F32_R: c_int = 151;
pub(crate) const BF16_R: c_int = 168;
/// `rocblas_gemm_algo_standard`.
pub(crate) const ALGO_STANDARD: c_int = 0;

type CreateHandle = unsafe extern "C" fn(*mut Handle) -> BlasStatus;
type SetStream = unsafe extern "C" fn(Handle, Handle) -> BlasStatus;
#[allow(clippy::type_complexity)]
type GemmStridedBatchedEx = unsafe extern "C" fn(
    Handle,
    c_int,
    c_int,
    c_int,
    c_int,
    c_int,
    *const c_void,
    *const c_void,
    c_int,
    c_int,
    i64,
    *const c_void,
    c_int,
    c_int,
    i64,
    *const c_void,
    *const c_void,
    c_int,
    c_int,
    i64,
    *mut c_void,
    c_int,
    c_int,
    i64,
    c_int,
    c_int,
    c_int,
    i32,
    u32,
) -> BlasStatus;

/// rocBLAS's calls.
#[derive(Debug)]
pub(crate) struct BlasCalls {
    pub(crate) create_handle: CreateHandle,
    pub(crate) set_stream: SetStream,
    pub(crate) gemm_strided_batched_ex: GemmStridedBatchedEx,
}

/// rocBLAS's file names, newest first.
pub(crate) const ROCBLAS_FILES: [&str; 4] = [
    "librocblas.so",
    "librocblas.so.5",
    "librocblas.so.4",
    "librocblas.so.0",
];

impl BlasCalls {
    /// The calls, from the rocBLAS `search` finds.
    pub(crate) fn open(search: &Search) -> Result<BlasCalls, String> {
        let lib = search
            .open(&ROCBLAS_FILES)
            .map_err(|n| format!("rocBLAS was not found:{}", n.list()))?;
        // SAFETY: each type is the C signature of the named function in rocblas.h
        // (rocblas_int is int32, rocblas_stride int64, the enums int).
        unsafe {
            Ok(BlasCalls {
                create_handle: lib.get(b"rocblas_create_handle\0")?,
                set_stream: lib.get(b"rocblas_set_stream\0")?,
                gemm_strided_batched_ex: lib.get(b"rocblas_gemm_strided_batched_ex\0")?,
            })
        }
    }
}
