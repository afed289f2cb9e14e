//! Views of CPU buffers as host slices.
//!
//! Views reaching the backend were validated, so these conversions cannot fail in practice;
//! they still return errors rather than panic, as every path that touches memory must.

use super::CpuBuffer;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::slice::{Slice, SliceMut};

fn out_of_range(what: &str) -> Error {
    Error::invalid("cpu", "view", format!("{what} lies outside its buffer"))
}

/// The bytes of a view.
pub(crate) fn bytes<'a>(view: Slice<'a, CpuBuffer>) -> Result<&'a [u8]> {
    let size = view.dtype().size_bytes();
    view.buffer()
        .bytes()
        .get(view.offset() * size..view.end() * size)
        .ok_or_else(|| out_of_range("view"))
}

/// The bytes of a writable view.
pub(crate) fn bytes_mut<'a>(view: SliceMut<'a, CpuBuffer>) -> Result<&'a mut [u8]> {
    let size = view.dtype().size_bytes();
    let (start, end) = (view.offset() * size, view.end() * size);
    into_buffer(view)
        .bytes_mut()
        .get_mut(start..end)
        .ok_or_else(|| out_of_range("view"))
}

/// The elements of a view as `T` (its dtype must be `T`'s).
pub(crate) fn typed<'a, T: Element>(view: Slice<'a, CpuBuffer>) -> Result<&'a [T]> {
    view.buffer()
        .typed::<T>()
        .ok_or_else(|| crate::device::unexpected_dtype("cpu", "view", view.dtype()))?
        .get(view.offset()..view.end())
        .ok_or_else(|| out_of_range("view"))
}

/// The elements of a writable view as `T`.
pub(crate) fn typed_mut<'a, T: Element>(view: SliceMut<'a, CpuBuffer>) -> Result<&'a mut [T]> {
    let (start, end, dtype) = (view.offset(), view.end(), view.dtype());
    into_buffer(view)
        .typed_mut::<T>()
        .ok_or_else(|| crate::device::unexpected_dtype("cpu", "view", dtype))?
        .get_mut(start..end)
        .ok_or_else(|| out_of_range("view"))
}

/// Consumes a writable view, keeping its full lifetime on the buffer borrow.
fn into_buffer(view: SliceMut<'_, CpuBuffer>) -> &mut CpuBuffer {
    view.into_buffer()
}

/// Runs `$body` with `$T` bound to the Rust type of a float dtype.
macro_rules! with_float {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::dtype::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::dtype::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::dtype::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err($crate::device::unexpected_dtype("cpu", "dtype", other)),
        }
    };
}
pub(crate) use with_float;
