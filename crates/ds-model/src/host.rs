//! Moving f32 host data to and from device buffers of any float dtype.

use ds_core::kernels::{View, ViewMut};
use ds_core::{Backend, DType, Device, Error, Result, bf16, f16};

/// `values` as little-endian bytes of `dtype` (rounded to nearest-even for 16-bit types).
///
/// # Errors
/// [`Error::InvalidArgument`] for a dtype that is not f32, f16 or bf16.
pub fn f32_to_bytes(dtype: DType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => return Err(not_float(other)),
    })
}

/// Little-endian bytes of `dtype` widened to f32.
///
/// # Errors
/// [`Error::InvalidArgument`] for a dtype that is not f32, f16 or bf16.
pub fn bytes_to_f32(dtype: DType, bytes: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => return Err(not_float(other)),
    })
}

fn not_float(dtype: DType) -> Error {
    Error::invalid(
        "host conversion",
        "dtype",
        format!("{dtype:?} is not a float type"),
    )
}

/// Uploads f32 host values into a float view of any dtype.
///
/// # Errors
/// Upload errors (length, bounds), a non-float view.
pub fn upload_f32<B: Backend>(dev: &Device<B>, src: &[f32], dst: ViewMut<'_, B>) -> Result<()> {
    let bytes = f32_to_bytes(dst.dtype(), src)?;
    dev.upload_bytes(&bytes, dst)
}

/// Downloads a float view of any dtype as f32.
///
/// # Errors
/// Download errors, a non-float view.
pub fn download_f32<B: Backend>(dev: &Device<B>, src: View<'_, B>) -> Result<Vec<f32>> {
    let mut bytes = vec![0u8; src.len() * src.dtype().size_bytes()];
    let dtype = src.dtype();
    dev.download_bytes(src, &mut bytes)?;
    bytes_to_f32(dtype, &bytes)
}
