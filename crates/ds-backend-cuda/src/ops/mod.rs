//! The kernel-family traits for the CUDA backend: each method turns validated views into
//! device addresses and launches the matching kernel of `kernels/`.

mod elementwise;
mod linalg;
mod nn;
mod optim;
mod reduce;

use crate::buffer::CudaBuffer;
use crate::kernels::Arg;
use ds_core::{Slice, SliceMut};

/// The device address of a read-only view.
pub(crate) fn ptr(v: &Slice<'_, CudaBuffer>) -> Arg {
    Arg::Ptr(v.buffer().addr(v.offset()))
}

/// The device address of a writable view.
pub(crate) fn ptr_mut(v: &SliceMut<'_, CudaBuffer>) -> Arg {
    Arg::Ptr(v.buffer().addr(v.offset()))
}

/// A length as a kernel argument.
pub(crate) fn count(n: usize) -> Arg {
    Arg::U64(n as u64)
}
