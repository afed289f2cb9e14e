//! The memory ceiling of an optimizer step on this machine.
//!
//! [`inplace_4r3w`] reads four f32 arrays and writes three of them back in place (28 bytes
//! per element, exactly the traffic of a fused Adam step on fp32 state) with trivial
//! arithmetic, chunked and scheduled exactly like the optimizer kernels. Benchmarks run it
//! beside the fused steps so an optimizer's speed reads as a fraction of the bandwidth the
//! machine delivers for that access pattern in the same run.
use crate::cpu::isa::vectorized;

use super::host::{typed, typed_mut};
use super::par::CHUNK;
use super::{CpuBackend, CpuBuffer};
use crate::error::{Error, Result};
use crate::slice::{Slice, SliceMut};
use rayon::prelude::*;

vectorized! {
    fn kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += g;
            *v += g;
            *p += g;
        }
    }
}

/// `p += g; m += g; v += g` over equal-length f32 views: 4 streams read, 3 written.
///
/// # Errors
/// [`Error::InvalidArgument`] when a view is not f32, lies outside its buffer, or the lengths
/// differ.
pub fn inplace_4r3w(
    backend: &CpuBackend,
    p: SliceMut<'_, CpuBuffer>,
    g: Slice<'_, CpuBuffer>,
    m: SliceMut<'_, CpuBuffer>,
    v: SliceMut<'_, CpuBuffer>,
) -> Result<()> {
    let n = p.len();
    if g.len() != n || m.len() != n || v.len() != n {
        return Err(Error::invalid(
            "inplace_4r3w",
            "g/m/v",
            "lengths must equal p's",
        ));
    }
    let (p, g, m, v) = (
        typed_mut::<f32>(p)?,
        typed::<f32>(g)?,
        typed_mut::<f32>(m)?,
        typed_mut::<f32>(v)?,
    );
    backend.run(|| {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| kernel(p, g, m, v))
    });
    Ok(())
}
