//! `ds zero-to-fp32 CKPT_DIR OUT.safetensors`: DeepSpeed's `zero_to_fp32.py`, for ds.

use std::path::Path;

/// Consolidates the checkpoint (`tag`, or `latest`) in `dir` into one fp32 safetensors file.
///
/// # Errors
/// A one-line message naming the file at fault.
pub fn run(dir: &Path, out: &Path, tag: Option<&str>) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!(
            "{} is not a directory: pass the checkpoint directory (the one holding `latest`)",
            dir.display()
        ));
    }
    let c = ds_zero::checkpoint::consolidate_fp32(dir, tag).map_err(|e| e.to_string())?;
    c.write_safetensors(out).map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote {} parameters ({} tensors, fp32) of {} to {}",
        c.numel(),
        c.tensors.len(),
        dir.join(&c.tag).display(),
        out.display()
    ))
}
