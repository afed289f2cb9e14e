//! Mapping the CUDA libraries' errors into ds's error type.

use cudarc::cublas::result::CublasError;
use cudarc::driver::DriverError;
use cudarc::nccl::result::NcclError;
use cudarc::nvrtc::CompileError;
use ds_core::Error;

/// A driver error as a ds device error.
pub(crate) fn driver(device: &str, what: &str, e: DriverError) -> Error {
    Error::Device {
        device: device.to_string(),
        message: format!("{what}: {e}"),
    }
}

/// An NVRTC compilation failure, with the compiler's log.
pub(crate) fn compile(device: &str, e: CompileError) -> Error {
    let message = match &e {
        CompileError::CompileError { log, .. } => format!(
            "NVRTC could not compile ds's kernels:\n{}",
            log.to_string_lossy()
        ),
        other => format!("NVRTC failed: {other:?}"),
    };
    Error::Device {
        device: device.to_string(),
        message,
    }
}

/// A cuBLAS status as a ds device error.
pub(crate) fn cublas(device: &str, what: &str, e: CublasError) -> Error {
    Error::Device {
        device: device.to_string(),
        message: format!("cuBLAS {what}: {:?}", e.0),
    }
}

/// An NCCL result as a ds collective error, with NCCL's code and message (NcclError itself
/// has no Display and its Debug omits the code).
pub(crate) fn nccl(op: &'static str, rank: usize, e: NcclError) -> Error {
    // SAFETY: ncclGetErrorString returns a pointer to a static, NUL-terminated string for any
    // result code.
    let text = unsafe { std::ffi::CStr::from_ptr(cudarc::nccl::sys::ncclGetErrorString(e.0)) };
    Error::Collective {
        op,
        rank,
        reason: format!("NCCL error {:?}: {}", e.0, text.to_string_lossy()),
    }
}
