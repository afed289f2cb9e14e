//! DeepSpeed's `zero_to_fp32`, for ds: one fp32 tensor per parameter, assembled from every
//! rank's pieces of the fp32 master weights (or, for a run without separate master weights,
//! from the model file), with the model's names and shapes.

use super::files::write_atomic;
use super::pieces::{Files, MASTER, ds_dtype, read_files, serialize};
use super::{read_state, resolve_tag};
use crate::host::bytes_to_f32;
use crate::{Error, Result};
use ds_core::DType;
use safetensors::tensor::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// A checkpoint's parameters in fp32.
#[derive(Debug, Clone, PartialEq)]
pub struct Consolidated {
    /// The tag read.
    pub tag: String,
    /// Name, shape and values of every parameter, in the model file's order.
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
    let Files { model, optim } = read_files(&tag_dir, &state_path, &state)?;
    let (model_path, model_bytes) = model;
    let st = safetensors::SafeTensors::deserialize(&model_bytes)
        .map_err(|e| Error::checkpoint(&model_path, format!("is not valid safetensors: {e}")))?;
    // The order the tensors were written in (their offsets), which is the model's order.
    let mut named: Vec<_> = st.tensors();
    named.sort_by_key(|(_, t)| t.data().as_ptr() as usize);
    let mut tensors = Vec::with_capacity(named.len());
    let mut index = HashMap::new();
    for (name, t) in &named {
        let dtype = ds_dtype(t.dtype()).ok_or_else(|| {
            Error::checkpoint(&model_path, format!("`{name}` has an unsupported dtype"))
        })?;
        index.insert(name.clone(), tensors.len());
        tensors.push((
            name.clone(),
            t.shape().to_vec(),
            bytes_to_f32(dtype, t.data())?,
        ));
    }
    let mut covered: Vec<usize> = vec![0; tensors.len()];
    let mut any_master = false;
    for (path, bytes) in &optim {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| Error::checkpoint(path, format!("is not valid safetensors: {e}")))?;
        for (key, t) in st.tensors() {
            let mut parts = key.splitn(3, ':');
            let (Some(kind), Some(start), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(Error::checkpoint(
                    path,
                    format!("has an unexpected tensor `{key}`"),
                ));
            };
            if kind != MASTER {
                continue;
            }
            any_master = true;
            let (Some(&i), Ok(start)) = (index.get(name), start.parse::<usize>()) else {
                return Err(Error::checkpoint(
                    path,
                    format!("has master weights for `{name}`, which the model file lacks"),
                ));
            };
            let target = &mut tensors[i].2;
            let end = start.saturating_add(t.data().len() / 4);
            if t.dtype() != Dtype::F32 || end > target.len() {
                return Err(Error::checkpoint(
                    path,
                    format!("has a master piece of `{name}` that does not fit the parameter"),
                ));
            }
            target[start..end].copy_from_slice(&bytes_to_f32(DType::F32, t.data())?);
            covered[i] += end - start;
        }
    }
    if any_master {
        for ((name, _, values), &n) in tensors.iter().zip(&covered) {
            if n != values.len() {
                return Err(Error::checkpoint(
                    &tag_dir,
                    format!(
                        "the ranks' master weights cover {n} of the {} elements of `{name}`: a \
                         rank's optimizer file is missing",
                        values.len()
                    ),
                ));
            }
        }
    }
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
