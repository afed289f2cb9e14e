//! The CUDA C kernels: the shared sources of `ds-gpu`, compiled with NVRTC
//! for the device's architecture on first use, and cached per process and device.

use crate::context::CudaBackend;
use crate::error;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts};
use ds_core::{DType, Error, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The whole program NVRTC compiles.
pub(crate) fn source() -> String {
    ds_gpu::program()
}

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
    let ptx =
        compile_ptx_with_opts(source(), options(arch)).map_err(|e| error::compile(arch, e))?;
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
        let ptx = compile_ptx_with_opts(source(), options(&format!("sm_{major}{minor}")))
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

    fn get(&self, name: &str) -> Result<CudaFunction> {
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

/// A kernel argument, typed as the launch table states it.
pub(crate) use ds_gpu::Arg;

/// The suffix of a float dtype in kernel names.
pub(crate) fn suffix(dtype: DType) -> &'static str {
    dtype.name()
}

/// Threads per block of every kernel.
pub(crate) use ds_gpu::THREADS;

impl CudaBackend {
    /// A one-dimensional launch over `n` items: enough blocks to fill the device a few times
    /// over, grid-stride loops doing the rest.
    pub(crate) fn grid(&self, n: usize) -> LaunchConfig {
        let want = n.div_ceil(THREADS as usize).max(1);
        let cap = (self.inner.sm_count * 16) as usize;
        LaunchConfig {
            grid_dim: (want.min(cap) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// One block per row.
    pub(crate) fn rows(&self, rows: usize, shared_mem_bytes: u32) -> Result<LaunchConfig> {
        let blocks = u32::try_from(rows).map_err(|_| {
            Error::invalid("cuda", "rows", format!("{rows} rows exceed one launch"))
        })?;
        Ok(LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes,
        })
    }

    /// Launches kernel `name` with `args`, checked against its entry in `ds-gpu`'s launch
    /// table (a mismatch is an error, never a launch); pointers must address memory valid for
    /// what the kernel touches.
    pub(crate) fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        ds_gpu::check(name, args).map_err(|message| Error::Device {
            device: self.device().to_string(),
            message,
        })?;
        if cfg.grid_dim.0 == 0 {
            return Ok(());
        }
        let func = self.inner.kernels.get(name)?;
        let mut b = self.inner.stream.launch_builder(&func);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        // SAFETY: the arguments match the kernel's parameters in number and type (checked above
        // against the launch table, which a test holds to the sources), and the device
        // addresses are of views ds-core validated against their buffers, or scratch buffers
        // sized for the kernel.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(|e| error::driver(self.device(), &format!("launching {name}"), e))
    }
}
