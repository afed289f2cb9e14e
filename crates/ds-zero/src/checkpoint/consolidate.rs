//! DeepSpeed's `zero_to_fp32`, for ds: one fp32 tensor per parameter, assembled from every
//! rank's pieces of the fp32 master weights (or, for a run without separate master weights,
//! from the model file, or at stage 3 from the ranks' parameter pieces), with the model's
//! names and shapes.

use super::files::write_atomic;
use super::pieces::{
    MASTER, PARAM, assemble_pieces, read_files, saved_parameters, serialize, tensor_f32,
};
use super::{read_state, resolve_tag};
use crate::{Error, Result};
use safetensors::tensor::Dtype;
use std::path::Path;

/// A checkpoint's parameters in fp32.
#[derive(Debug, Clone, PartialEq)]
pub struct Consolidated {
    /// The tag read.
    pub tag: String,
    /// Name, shape and values of every parameter, in the model's order.
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Reads checkpoint `tag` (or `latest`) of `dir`, verifying every file as a load does, and
/// assembles each parameter's fp32 values from all ranks' master pieces.
///
/// # Errors
/// [`Error::Checkpoint`] naming the file that is missing, corrupt, or does not cover a
/// parameter.
pub fn consolidate_fp32(dir: &Path, tag: Option<&str>) -> Result<Consolidated> {
    let (tag, tag_dir) = resolve_tag(dir, tag)?;
    let (state_path, state) = read_state(&tag_dir)?;
    let files = read_files(&tag_dir, &state_path, &state)?;
    let (model_path, model_bytes) = &files.model;
    let st = safetensors::SafeTensors::deserialize(model_bytes)
        .map_err(|e| Error::checkpoint(model_path, format!("is not valid safetensors: {e}")))?;
    // Names, shapes and the model's order from the state file.
    let list = saved_parameters(&state_path, &state)?;
    let params: Vec<(&str, usize)> = list
        .iter()
        .map(|(name, shape)| (name.as_str(), shape.iter().product()))
        .collect();
    // The fp32 master pieces when the run kept them; else the model file's tensors; else
    // (stage 3 without gathering) the ranks' parameter pieces.
    let values = match assemble_pieces(&params, &files, MASTER, &state_path)? {
        Some(masters) => masters,
        None if !st.is_empty() => params
            .iter()
            .map(|(name, _)| tensor_f32(&st, model_path, name).map(|(_, v)| v))
            .collect::<Result<Vec<_>>>()?,
        None => assemble_pieces(&params, &files, PARAM, &state_path)?.ok_or_else(|| {
            Error::checkpoint(
                model_path,
                "has no tensors and the optimizer files no weights: nothing to consolidate",
            )
        })?,
    };
    let tensors = list
        .into_iter()
        .zip(values)
        .map(|((name, shape), v)| (name, shape, v))
        .collect();
    Ok(Consolidated { tag, tensors })
}

impl Consolidated {
    /// Writes the tensors as one fp32 safetensors file, atomically.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] naming `out` when it cannot be written.
    pub fn write_safetensors(&self, out: &Path) -> Result<()> {
        let tensors = self
            .tensors
            .iter()
            .map(|(name, shape, values)| {
                (
                    name.clone(),
                    Dtype::F32,
                    shape.clone(),
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let bytes = serialize(tensors, &out.display().to_string())?;
        write_atomic(out, &bytes)
    }

    /// The number of parameters (elements).
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|(_, _, v)| v.len()).sum()
    }
}
