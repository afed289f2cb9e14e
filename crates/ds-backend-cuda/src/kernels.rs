//! The CUDA C kernels: the shared sources of `ds-gpu`, compiled with NVRTC
//! for the device's architecture on first use, and cached per process and device.

use crate::error;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use ds_core::{Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// NVRTC options for an architecture such as `sm_90`.
fn options(arch: &str) -> CompileOptions {
    CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        ..CompileOptions::default()
    }
}

/// Compiles the kernels for `arch` without loading them (no GPU needed, only NVRTC).
///
/// # Errors
/// NVRTC's log when compilation fails.
pub fn compile_check(arch: &str) -> Result<usize> {
    let ptx = compile_ptx_with_opts(ds_gpu::program(), options(arch))
        .map_err(|e| error::compile(arch, e))?;
    Ok(ptx.to_src().len())
}

/// The compiled module of one device, with the functions looked up so far.
#[derive(Debug)]
pub(crate) struct Kernels {
    module: Arc<CudaModule>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    device: String,
}

static COMPILED: OnceLock<Mutex<HashMap<usize, Arc<Kernels>>>> = OnceLock::new();

impl Kernels {
    /// The kernels for this context's device, compiled on the first call in this process.
    pub(crate) fn for_context(ctx: &Arc<CudaContext>, device: &str) -> Result<Arc<Kernels>> {
        let cache = COMPILED.get_or_init(|| Mutex::new(HashMap::new()));
        let mut cache = cache.lock().map_err(|_| Error::Device {
            device: device.into(),
            message: "the kernel cache's lock was poisoned by a panic".into(),
        })?;
        if let Some(k) = cache.get(&ctx.ordinal()) {
            return Ok(k.clone());
        }
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| error::driver(device, "reading the compute capability", e))?;
        let ptx = compile_ptx_with_opts(ds_gpu::program(), options(&format!("sm_{major}{minor}")))
            .map_err(|e| error::compile(device, e))?;
        let module = ctx
            .load_module(ptx)
            .map_err(|e| error::driver(device, "loading ds's kernels", e))?;
        let k = Arc::new(Kernels {
            module,
            functions: Mutex::new(HashMap::new()),
            device: device.into(),
        });
        cache.insert(ctx.ordinal(), k.clone());
        Ok(k)
    }

    pub(crate) fn get(&self, name: &str) -> Result<CudaFunction> {
        let mut f = self.functions.lock().map_err(|_| Error::Device {
            device: self.device.clone(),
            message: "the kernel table's lock was poisoned by a panic".into(),
        })?;
        if let Some(func) = f.get(name) {
            return Ok(func.clone());
        }
        let func = self
            .module
            .load_function(name)
            .map_err(|e| error::driver(&self.device, &format!("finding kernel {name}"), e))?;
        f.insert(name.to_string(), func.clone());
        Ok(func)
    }
}
