//! Host-side reduction of ranks' contributions, shared by the threaded and MPI collectives.

use super::ReduceOp;
use crate::dtype::DType;
use crate::error::{Error, Result};
use half::{bf16, f16};

/// Reduces the element range `range` of every rank's contribution (raw little-endian bytes of
/// `dtype`, in rank order) with `op`, writing the result as bytes of `dtype` into `out`.
///
/// Accumulates in f32 in rank order; 16-bit values are widened first and the result is
/// rounded once (to nearest even). `Avg` divides the f32 sum by the number of contributions.
/// `Max` propagates NaN.
///
/// # Errors
/// [`Error::InvalidArgument`] when `dtype` is not a float type or the byte lengths disagree.
pub fn reduce_into(
    dtype: DType,
    op: ReduceOp,
    contributions: &[&[u8]],
    range: std::ops::Range<usize>,
    out: &mut [u8],
) -> Result<()> {
    let size = dtype.size_bytes();
    let n = range.len();
    if !dtype.is_float() {
        return Err(Error::invalid(
            "reduce",
            "dtype",
            format!("{dtype} cannot be reduced"),
        ));
    }
    if out.len() != n * size || contributions.iter().any(|c| c.len() < range.end * size) {
        return Err(Error::invalid(
            "reduce",
            "contributions",
            "byte lengths do not match the range",
        ));
    }
    if dtype == DType::F32 && reduce_f32_aligned(op, contributions, &range, out) {
        return Ok(());
    }
    let mut acc = vec![0f32; n];
    let mut x = vec![0f32; n];
    for (r, bytes) in contributions.iter().enumerate() {
        widen(dtype, &bytes[range.start * size..range.end * size], &mut x);
        if r == 0 {
            acc.copy_from_slice(&x);
            continue;
        }
        match op {
            ReduceOp::Sum | ReduceOp::Avg => acc.iter_mut().zip(&x).for_each(|(a, v)| *a += v),
            ReduceOp::Max => acc.iter_mut().zip(&x).for_each(|(a, v)| {
                *a = if a.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    a.max(*v)
                }
            }),
        }
    }
    if op == ReduceOp::Avg && !contributions.is_empty() {
        let world = contributions.len() as f32;
        acc.iter_mut().for_each(|a| *a /= world);
    }
    narrow(dtype, &acc, out);
    Ok(())
}

/// The f32 reduction straight on the caller's bytes, with no temporary, when every slice is
/// 4-byte aligned (host buffers are); the same operations in the same order as the general
/// path. Returns false (touching nothing) when a slice is not aligned.
fn reduce_f32_aligned(
    op: ReduceOp,
    contributions: &[&[u8]],
    range: &std::ops::Range<usize>,
    out: &mut [u8],
) -> bool {
    if cfg!(target_endian = "big") {
        return false;
    }
    let inputs: Option<Vec<&[f32]>> = contributions
        .iter()
        .map(|c| bytemuck::try_cast_slice::<u8, f32>(&c[range.start * 4..range.end * 4]).ok())
        .collect();
    let (Some(inputs), Ok(acc)) = (inputs, bytemuck::try_cast_slice_mut::<u8, f32>(out)) else {
        return false;
    };
    let Some((first, rest)) = inputs.split_first() else {
        acc.fill(0.0);
        return true;
    };
    acc.copy_from_slice(first);
    for x in rest {
        match op {
            ReduceOp::Sum | ReduceOp::Avg => acc.iter_mut().zip(*x).for_each(|(a, v)| *a += v),
            ReduceOp::Max => acc.iter_mut().zip(*x).for_each(|(a, v)| {
                *a = if a.is_nan() || v.is_nan() {
                    f32::NAN
                } else {
                    a.max(*v)
                }
            }),
        }
    }
    if op == ReduceOp::Avg {
        let world = contributions.len() as f32;
        acc.iter_mut().for_each(|a| *a /= world);
    }
    true
}

/// Little-endian bytes of a float dtype to f32.
fn widen(dtype: DType, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        DType::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        DType::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
            }
        }
    }
}

/// f32 to little-endian bytes of a float dtype, rounding to nearest even.
fn narrow(dtype: DType, values: &[f32], out: &mut [u8]) {
    match dtype {
        DType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
        _ => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&bf16::from_f32(*v).to_bits().to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f32 values as bytes starting `shift` bytes into a fresh buffer (shift 1 misaligns).
    fn bytes_at(values: &[f32], shift: usize) -> Vec<u8> {
        let mut out = vec![0u8; shift];
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        out
    }

    #[test]
    fn the_aligned_f32_path_gives_the_general_paths_bits() {
        let ranks: Vec<Vec<f32>> = vec![
            vec![1.5, -0.0, f32::INFINITY, 3.0, f32::NAN, 1e-40, 2.0],
            vec![0.25, 0.0, 1.0, -7.0, 1.0, 1e-40, f32::NEG_INFINITY],
            vec![1e30, -0.0, 2.0, 0.5, -1.0, -3e-40, 5.0],
        ];
        for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max] {
            let mut results = Vec::new();
            for shift in [0usize, 1] {
                let owned: Vec<Vec<u8>> = ranks.iter().map(|r| bytes_at(r, shift)).collect();
                let parts: Vec<&[u8]> = owned.iter().map(|b| &b[shift..]).collect();
                let mut out = vec![0u8; 5 * 4 + shift];
                reduce_into(DType::F32, op, &parts, 1..6, &mut out[shift..]).expect("reduce");
                results.push(out[shift..].to_vec());
            }
            assert_eq!(results[0], results[1], "{op}");
            let got: Vec<f32> = results[0]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            // Element 1 (index 2 of the inputs): inf + 1 + 2 and max are +inf; element 3
            // carries the NaN through every op.
            assert_eq!(got[1], f32::INFINITY, "{op}");
            assert!(got[3].is_nan(), "{op}");
            // Element 0 is max/sum of -0, +0, -0: IEEE sums give +0; `max` of signed zeros may
            // give either sign (both paths give the same, asserted above).
            match op {
                ReduceOp::Sum | ReduceOp::Avg => assert_eq!(got[0].to_bits(), 0, "{op}"),
                ReduceOp::Max => assert_eq!(got[0], 0.0, "{op}"),
            }
        }
    }
}
