//! The shared loop of the fused optimizer steps: split every stream into the same chunks,
//! run chunks in parallel, and inside a chunk feed the update f32 blocks (converting a 16-bit
//! gradient in, writing the weight copy out).

use crate::cpu::float::{BLOCK, Float};
use crate::cpu::host::{typed, typed_mut, with_float};
use crate::cpu::par::CHUNK;
use crate::cpu::stream::{STREAM_MIN_BYTES, fence};
use crate::cpu::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::slice::{Slice, SliceMut};
use rayon::prelude::*;

/// One chunk's slices of every stream of an update.
pub(crate) struct Part<'a, G, C> {
    pub p: &'a mut [f32],
    pub g: &'a [G],
    pub s1: Option<&'a mut [f32]>,
    pub s2: Option<&'a mut [f32]>,
    pub copy: Option<&'a mut [C]>,
}

fn split_mut<T>(s: Option<&mut [T]>, parts: usize) -> Vec<Option<&mut [T]>> {
    match s {
        Some(s) => s.chunks_mut(CHUNK).map(Some).collect(),
        None => (0..parts).map(|_| None).collect(),
    }
}

/// Runs `update(p, g, s1, s2)` over matching f32 blocks of all streams in parallel, then
/// writes each updated block of `p` to `copy` when present (with streaming stores when the copy
/// is large: it is only written here, so reading it into the cache first would waste
/// bandwidth).
pub(crate) fn for_each_block<G: Float, C: Float>(
    p: &mut [f32],
    g: &[G],
    s1: Option<&mut [f32]>,
    s2: Option<&mut [f32]>,
    copy: Option<&mut [C]>,
    update: impl Fn(&mut [f32], &[f32], Option<&mut [f32]>, Option<&mut [f32]>) + Sync,
) {
    let n = p.len().div_ceil(CHUNK);
    let parts: Vec<Part<'_, G, C>> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .zip(split_mut(s1, n))
        .zip(split_mut(s2, n))
        .zip(split_mut(copy, n))
        .map(|((((p, g), s1), s2), copy)| Part { p, g, s1, s2, copy })
        .collect();
    let copy_bytes: usize = parts
        .iter()
        .map(|p| p.copy.as_ref().map_or(0, |c| std::mem::size_of_val(&**c)))
        .sum();
    let streaming = copy_bytes >= STREAM_MIN_BYTES;
    parts
        .into_par_iter()
        .for_each(|part| run_part(part, &update, streaming));
}

fn run_part<G: Float, C: Float>(
    part: Part<'_, G, C>,
    update: &(impl Fn(&mut [f32], &[f32], Option<&mut [f32]>, Option<&mut [f32]>) + Sync),
    streaming: bool,
) {
    let Part {
        p,
        g,
        mut s1,
        mut s2,
        mut copy,
    } = part;
    if copy.is_none()
        && let Some(g) = G::as_f32(g)
    {
        return update(p, g, s1, s2);
    }
    let mut gbuf = [0f32; BLOCK];
    for (i, (p, g)) in p.chunks_mut(BLOCK).zip(g.chunks(BLOCK)).enumerate() {
        let range = i * BLOCK..i * BLOCK + p.len();
        let g = match G::as_f32(g) {
            Some(g) => g,
            None => {
                G::load(g, &mut gbuf[..g.len()]);
                &gbuf[..g.len()]
            }
        };
        let b1 = s1.as_deref_mut().and_then(|s| s.get_mut(range.clone()));
        let b2 = s2.as_deref_mut().and_then(|s| s.get_mut(range.clone()));
        update(p, g, b1, b2);
        if let Some(c) = copy.as_deref_mut().and_then(|c| c.get_mut(range)) {
            if streaming {
                C::store_stream(p, c)
            } else {
                C::store(p, c)
            }
        }
    }
    if streaming {
        fence();
    }
}

/// The whole of a step that keeps one fp32 state beside the weights (Adagrad, Lion):
/// resolves the gradient's and the copy's types, then runs `update(p, g, state)` over every
/// block on the backend's pool.
pub(crate) fn step_with_state(
    backend: &CpuBackend,
    param: SliceMut<'_, CpuBuffer>,
    grad: Slice<'_, CpuBuffer>,
    state: SliceMut<'_, CpuBuffer>,
    copy: Option<SliceMut<'_, CpuBuffer>>,
    update: impl Fn(&mut [f32], &[f32], &mut [f32]) + Sync,
) -> Result<()> {
    let p = typed_mut::<f32>(param)?;
    let s = typed_mut::<f32>(state)?;
    let each = |p: &mut [f32], g: &[f32], s: Option<&mut [f32]>, _: Option<&mut [f32]>| {
        if let Some(s) = s {
            update(p, g, s);
        }
    };
    with_float!(grad.dtype(), G => {
        let g = typed::<G>(grad)?;
        match copy {
            None => {
                backend.run(|| for_each_block::<G, f32>(p, g, Some(s), None, None, each));
                Ok(())
            }
            Some(c) => with_float!(c.dtype(), C => {
                let c = typed_mut::<C>(c)?;
                backend.run(|| for_each_block(p, g, Some(s), None, Some(c), each));
                Ok(())
            }),
        }
    })
}
