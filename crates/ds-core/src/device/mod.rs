//! [`Device`]: the checked front door over any backend.
//!
//! Every method validates its arguments (bounds, dtypes, lengths, shapes, hyper-parameters,
//! capabilities) and names the offending argument in its error, then hands a
//! [`crate::Validated`] token to the backend. Validation lives here once, for all backends, so
//! a new backend gets the same guarantees and error messages for free.

mod elementwise;
mod linalg;
mod nn;
mod optim;
mod reduce;

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use crate::info::DeviceInfo;
use crate::kernel::Kernel;
use crate::kernels::{Backend, Validated, View, ViewMut};
use crate::memory::MemoryStats;
use crate::slice::BufferExt;
use crate::validate::Check;

/// A backend behind argument validation. Cheap to clone (backends are handles).
#[derive(Debug, Clone)]
pub struct Device<B: Backend> {
    backend: B,
}

impl<B: Backend> Device<B> {
    /// Wraps a backend.
    pub fn new(backend: B) -> Self {
        Device { backend }
    }

    /// The backend behind this device.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What the device is and what it supports.
    pub fn info(&self) -> &DeviceInfo {
        self.backend.info()
    }

    /// A zero-filled buffer of `len` elements of `dtype`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the byte size overflows; [`Error::OutOfMemory`] when the
    /// device cannot hold it.
    pub fn alloc(&self, dtype: DType, len: usize) -> Result<B::Buffer> {
        Check::named("alloc").product("len", &[len, dtype.size_bytes()])?;
        self.backend.alloc(dtype, len, Validated::new())
    }

    /// A buffer of `len` elements of `dtype` for a kernel's output that the caller overwrites
    /// whole before reading any of it: its contents are unspecified (the CPU backend hands
    /// back a cached mapping without zeroing it; debug builds fill it with all-ones bytes, NaN
    /// in every float dtype, so a read before the write shows in the tests).
    ///
    /// # Errors
    /// As [`Device::alloc`].
    pub fn alloc_for_overwrite(&self, dtype: DType, len: usize) -> Result<B::Buffer> {
        Check::named("alloc_for_overwrite").product("len", &[len, dtype.size_bytes()])?;
        self.backend
            .alloc_for_overwrite(dtype, len, Validated::new())
    }

    /// A buffer holding a copy of `data`.
    ///
    /// # Errors
    /// As [`Device::alloc`] and [`Device::upload`].
    pub fn alloc_from<T: Element>(&self, data: &[T]) -> Result<B::Buffer> {
        let mut buf = self.alloc(T::DTYPE, data.len())?;
        self.upload(data, buf.all_mut())?;
        Ok(buf)
    }

    /// Copies host data into a view of the same dtype and length.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `dst` on a dtype or length mismatch or a view past
    /// the end of its buffer.
    pub fn upload<T: Element>(&self, src: &[T], dst: ViewMut<'_, B>) -> Result<()> {
        let check = Check::named("upload");
        check.typed("dst", &dst, T::DTYPE)?;
        check.len("dst", &dst, src.len(), "the length of the host data")?;
        self.backend
            .upload(bytemuck::cast_slice(src), dst, Validated::new())
    }

    /// Copies a view into host memory of the same dtype and length.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `src` on a dtype or length mismatch or a view past
    /// the end of its buffer.
    pub fn download<T: Element>(&self, src: View<'_, B>, dst: &mut [T]) -> Result<()> {
        let check = Check::named("download");
        check.typed("src", &src, T::DTYPE)?;
        check.len("src", &src, dst.len(), "the length of the host destination")?;
        self.backend
            .download(src, bytemuck::cast_slice_mut(dst), Validated::new())
    }

    /// Copies raw little-endian bytes (exactly `dst.len()` elements of its dtype) into `dst`;
    /// for dtype-generic code such as collectives.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `dst` on a byte-length mismatch or bad bounds.
    pub fn upload_bytes(&self, src: &[u8], dst: ViewMut<'_, B>) -> Result<()> {
        let check = Check::named("upload_bytes");
        check.bounds("dst", &dst)?;
        if src.len() != dst.len() * dst.dtype().size_bytes() {
            return Err(check.err(
                "src",
                format!(
                    "has {} bytes, `dst` holds {} bytes",
                    src.len(),
                    dst.len() * dst.dtype().size_bytes()
                ),
            ));
        }
        self.backend.upload(src, dst, Validated::new())
    }

    /// Copies `src` into raw little-endian bytes (exactly `src.len()` elements of its dtype).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `src` or `dst` on a byte-length mismatch or bad bounds.
    pub fn download_bytes(&self, src: View<'_, B>, dst: &mut [u8]) -> Result<()> {
        let check = Check::named("download_bytes");
        check.bounds("src", &src)?;
        if dst.len() != src.len() * src.dtype().size_bytes() {
            return Err(check.err(
                "dst",
                format!(
                    "has {} bytes, `src` holds {} bytes",
                    dst.len(),
                    src.len() * src.dtype().size_bytes()
                ),
            ));
        }
        self.backend.download(src, dst, Validated::new())
    }

    /// Downloads a view into a new vector.
    ///
    /// # Errors
    /// As [`Device::download`].
    pub fn to_vec<T: Element>(&self, src: View<'_, B>) -> Result<Vec<T>> {
        let mut out = vec![T::zeroed(); src.len()];
        self.download(src, &mut out)?;
        Ok(out)
    }

    /// Device-to-device copy between views of one dtype and length.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `src` or `dst`.
    pub fn copy(&self, src: View<'_, B>, dst: ViewMut<'_, B>) -> Result<()> {
        let check = Check::new(Kernel::Copy);
        check.bounds("src", &src)?;
        check.like("dst", &dst, "src", &src)?;
        check.same_len("dst", &dst, "src", &src)?;
        check.supported(self.info(), Kernel::Copy, src.dtype())?;
        self.backend.copy(src, dst, Validated::new())
    }

    /// Waits for queued work to finish.
    ///
    /// # Errors
    /// Asynchronous device errors ([`Error::Device`]).
    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }

    /// Bytes in use, peak and reserved.
    pub fn memory_stats(&self) -> MemoryStats {
        self.backend.memory_stats()
    }

    /// Restarts the peak from the current use.
    pub fn reset_peak_memory(&self) {
        self.backend.reset_peak_memory()
    }

    /// Downloads a one-element f32 result (a reduction's output or a flag).
    ///
    /// # Errors
    /// As [`Device::download`].
    pub fn read_scalar(&self, src: View<'_, B>) -> Result<f32> {
        let mut out = [0f32];
        self.download(src, &mut out)?;
        Ok(out[0])
    }
}

/// The error for a 16-bit or integer dtype reaching a path only f32 may take; used by backends
/// to avoid panicking on an impossible match arm.
pub fn unexpected_dtype(op: &'static str, arg: &'static str, dtype: DType) -> Error {
    Error::invalid(
        op,
        arg,
        format!("dtype {dtype} reached a kernel that cannot take it"),
    )
}
