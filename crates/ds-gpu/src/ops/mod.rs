//! The kernel families, written once for every driver: each method turns validated views into
//! device addresses and launches the matching kernel of `kernels/` (or the driver's GEMM).

mod elementwise;
mod linalg;
mod nn;
mod optim;
mod reduce;

use crate::buffer::GpuBuffer;
use crate::driver::Driver;
use crate::launch::Arg;
use ds_core::{DType, Slice, SliceMut};

/// The device address of a read-only view.
pub(crate) fn ptr<D: Driver>(v: &Slice<'_, GpuBuffer<D>>) -> Arg {
    Arg::Ptr(v.buffer().addr(v.offset()))
}

/// The device address of a writable view.
pub(crate) fn ptr_mut<D: Driver>(v: &SliceMut<'_, GpuBuffer<D>>) -> Arg {
    Arg::Ptr(v.buffer().addr(v.offset()))
}

/// A length as a kernel argument.
pub(crate) fn count(n: usize) -> Arg {
    Arg::U64(n as u64)
}

/// The suffix of a float dtype in kernel names.
pub(crate) fn suffix(dtype: DType) -> &'static str {
    dtype.name()
}
