//! DeepSpeed's `zero_to_fp32`, for ds: one fp32 tensor per parameter, assembled from every
//! rank's pieces of the fp32 master weights (or, for a run without separate master weights,
//! from the model file, or at stage 3 from the ranks' parameter pieces), with the model's
//! names and shapes.

use super::files::write_atomic;
use super::pieces::{MASTER, PARAM, assemble_pieces, ds_dtype, read_files, serialize};
use super::{read_state, resolve_tag};
use crate::host::bytes_to_f32;
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
            .map(|(name, _)| {
                let t = st.tensor(name).map_err(|_| {
                    Error::checkpoint(model_path, format!("has no tensor `{name}`"))
                })?;
                let dtype = ds_dtype(t.dtype()).ok_or_else(|| {
                    Error::checkpoint(model_path, format!("`{name}` has an unsupported dtype"))
                })?;
                Ok(bytes_to_f32(dtype, t.data())?)
            })
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

/// The parameter names and shapes `engine_state.json` lists.
fn saved_parameters(
    state_path: &Path,
    state: &serde_json::Value,
) -> Result<Vec<(String, Vec<usize>)>> {
    let bad = || {
        Error::checkpoint(
            state_path,
            "has no valid parameter list: the file is damaged",
        )
    };
    let list = state
        .get("parameters")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(bad)?;
    list.iter()
        .map(|p| {
            let name = p
                .get("name")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(bad)?;
            let shape = p
                .get("shape")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(bad)?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize).ok_or_else(bad))
                .collect::<Result<Vec<_>>>()?;
            Ok((name.to_string(), shape))
        })
        .collect()
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
