//! Finding the CUDA libraries before touching them.
//!
//! cudarc loads the driver, NVRTC, cuBLAS and NCCL lazily and panics when one is missing. Every
//! entry point of this crate calls [`check`] (or [`check_nccl`]) first, which tries each library
//! without loading it for good and turns absence into [`Error::NoDevice`] naming the library,
//! the file names tried and the search path, so the message says exactly what to install.

use ds_core::Error;

/// One library ds needs, and how to get it.
struct Lib {
    what: &'static str,
    files: &'static str,
    remedy: &'static str,
    present: fn() -> bool,
}

fn driver_present() -> bool {
    // SAFETY: the probe only dlopens candidate file names and closes them; running a library's
    // initialisers is the one side effect, the same as loading it for use.
    unsafe { cudarc::driver::sys::is_culib_present() }
}
fn nvrtc_present() -> bool {
    // SAFETY: as for the driver.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}
fn cublas_present() -> bool {
    // SAFETY: as for the driver.
    unsafe { cudarc::cublas::sys::is_culib_present() }
}
fn nccl_present() -> bool {
    // SAFETY: as for the driver.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

const DRIVER: Lib = Lib {
    what: "the NVIDIA driver",
    files: "libcuda.so / libcuda.so.1",
    remedy: "install the NVIDIA driver (this machine has no NVIDIA GPU, or its driver is not visible)",
    present: driver_present,
};
const NVRTC: Lib = Lib {
    what: "NVRTC (CUDA 13)",
    files: "libnvrtc.so / libnvrtc.so.13",
    remedy: "install the CUDA 13 toolkit or `pip install nvidia-cuda-nvrtc`, and put its lib folder on LD_LIBRARY_PATH",
    present: nvrtc_present,
};
const CUBLAS: Lib = Lib {
    what: "cuBLAS (CUDA 13)",
    files: "libcublas.so / libcublas.so.13",
    remedy: "install the CUDA 13 toolkit or `pip install nvidia-cublas`, and put its lib folder on LD_LIBRARY_PATH",
    present: cublas_present,
};
const NCCL: Lib = Lib {
    what: "NCCL",
    files: "libnccl.so (NCCL ships libnccl.so.2: add a libnccl.so link to it)",
    remedy: "install NCCL or `pip install nvidia-nccl-cu13`, link libnccl.so to libnccl.so.2 in a folder on LD_LIBRARY_PATH",
    present: nccl_present,
};

fn search_path() -> String {
    let ld = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    if ld.is_empty() {
        "searched the system library cache; LD_LIBRARY_PATH is empty".to_string()
    } else {
        format!("searched LD_LIBRARY_PATH={ld} and the system library cache")
    }
}

fn missing(lib: &Lib) -> Error {
    Error::NoDevice {
        backend: "cuda",
        reason: format!(
            "{} was not found ({}; {}): {}",
            lib.what,
            lib.files,
            search_path(),
            lib.remedy
        ),
    }
}

/// Checks the driver, NVRTC and cuBLAS are loadable and at least one device is visible.
///
/// # Errors
/// [`Error::NoDevice`] naming the first missing library, or saying no device is visible
/// (respecting `CUDA_VISIBLE_DEVICES`).
pub fn check() -> Result<usize, Error> {
    if !(DRIVER.present)() {
        return Err(missing(&DRIVER));
    }
    let count = cudarc::driver::CudaContext::device_count().map_err(|e| Error::NoDevice {
        backend: "cuda",
        reason: format!("the NVIDIA driver reports no usable device: {e}"),
    })?;
    if count <= 0 {
        let visible =
            std::env::var("CUDA_VISIBLE_DEVICES").map_or("unset".to_string(), |v| format!("`{v}`"));
        return Err(Error::NoDevice {
            backend: "cuda",
            reason: format!("no CUDA device is visible (CUDA_VISIBLE_DEVICES is {visible})"),
        });
    }
    for lib in [&NVRTC, &CUBLAS] {
        if !(lib.present)() {
            return Err(missing(lib));
        }
    }
    Ok(count as usize)
}

/// Checks NCCL is loadable (collectives only).
///
/// # Errors
/// [`Error::NoDevice`] naming NCCL and how to install it.
pub fn check_nccl() -> Result<(), Error> {
    if (NCCL.present)() {
        Ok(())
    } else {
        Err(missing(&NCCL))
    }
}

/// Whether NVRTC alone is loadable: kernels can be compiled (checked) without a GPU.
pub fn nvrtc_available() -> bool {
    (NVRTC.present)()
}
