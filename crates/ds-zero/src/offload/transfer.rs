//! Copies between the device and the host backend.
//!
//! When the host backend's buffers are host memory (the CPU backend's are), a copy is one
//! download straight into the host buffer or one upload straight from it; otherwise the bytes
//! go through a temporary vector.

use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, Device, Error, Result};

fn check(
    op: &'static str,
    src: (ds_core::DType, usize),
    dst: (ds_core::DType, usize),
) -> Result<()> {
    if src != dst {
        return Err(Error::invalid(
            op,
            "dst",
            format!(
                "holds {} elements of {}, the source {} of {}",
                dst.1, dst.0, src.1, src.0
            ),
        ));
    }
    Ok(())
}

/// Copies device view `src` into host view `dst` (same dtype and length).
///
/// # Errors
/// A dtype or length mismatch; download and upload errors.
pub(crate) fn to_host<B: Backend, H: Backend>(
    dev: &Device<B>,
    src: View<'_, B>,
    host: &Device<H>,
    mut dst: ViewMut<'_, H>,
) -> Result<()> {
    check(
        "offload::to_host",
        (src.dtype(), src.len()),
        (dst.dtype(), dst.len()),
    )?;
    if host.backend().host_bytes(dst.as_ref()).is_some()
        && let Some(bytes) = host.backend().host_bytes_mut(dst.reborrow())
    {
        return dev.download_bytes(src, bytes);
    }
    let mut bytes = vec![0u8; src.len() * src.dtype().size_bytes()];
    dev.download_bytes(src, &mut bytes)?;
    host.upload_bytes(&bytes, dst)
}

/// Copies host view `src` into device view `dst` (same dtype and length).
///
/// # Errors
/// A dtype or length mismatch; download and upload errors.
pub(crate) fn to_device<B: Backend, H: Backend>(
    host: &Device<H>,
    src: View<'_, H>,
    dev: &Device<B>,
    dst: ViewMut<'_, B>,
) -> Result<()> {
    check(
        "offload::to_device",
        (src.dtype(), src.len()),
        (dst.dtype(), dst.len()),
    )?;
    with_host_bytes(host, src, |bytes| dev.upload_bytes(bytes, dst))
}

/// Runs `f` on the bytes of host view `src`: the host backend's memory itself when its buffers
/// are host memory, a downloaded copy otherwise.
///
/// # Errors
/// The download's errors; `f`'s.
pub(crate) fn with_host_bytes<H: Backend, R>(
    host: &Device<H>,
    src: View<'_, H>,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    if let Some(bytes) = host.backend().host_bytes(src) {
        return f(bytes);
    }
    let mut bytes = vec![0u8; src.len() * src.dtype().size_bytes()];
    host.download_bytes(src, &mut bytes)?;
    f(&bytes)
}
