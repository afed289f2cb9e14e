//! The CUDA driver of the shared GPU layer: cudarc's driver API, NVRTC-compiled kernels and
//! cuBLAS, on one context and one stream.

use crate::kernels::Kernels;
use crate::{error, probe};
use cudarc::cublas::CudaBlas;
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::sys::{CUdevice_attribute, CUresult};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DriverError, LaunchConfig, PushKernelArg,
};
use ds_core::Collectives;
use ds_core::pool::RawFailure;
use ds_core::{Capabilities, DType, DeviceInfo, Error, Result};
use ds_gpu::{Arg, Driver, Gemm, GpuBackend, Grid};
use std::sync::{Arc, Mutex};

/// Whether the driver's error is "out of memory", by its code.
pub(crate) fn is_out_of_memory(e: &DriverError) -> bool {
    e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
}

/// One CUDA device: its context, the one stream all work goes to, the kernels compiled for it
/// and a cuBLAS handle on that stream.
#[derive(Debug)]
pub struct CudaDriver {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    kernels: Arc<Kernels>,
    blas: Mutex<CudaBlas>,
    info: DeviceInfo,
    sm_count: u32,
}

impl CudaDriver {
    /// Compute capability (major, minor).
    ///
    /// # Errors
    /// Driver errors.
    pub fn compute_capability(&self) -> Result<(i32, i32)> {
        self.ctx
            .compute_capability()
            .map_err(|e| error::driver(&self.info.name, "reading the compute capability", e))
    }

    fn fail<'a>(&'a self, what: &'a str) -> impl Fn(DriverError) -> Error + 'a {
        move |e| error::driver(&self.info.name, what, e)
    }
}

fn blas_type(dtype: DType) -> blas_sys::cudaDataType {
    match dtype {
        DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => blas_sys::cudaDataType::CUDA_R_16BF,
        _ => blas_sys::cudaDataType::CUDA_R_32F,
    }
}

fn blas_op(transpose: bool) -> blas_sys::cublasOperation_t {
    if transpose {
        blas_sys::cublasOperation_t::CUBLAS_OP_T
    } else {
        blas_sys::cublasOperation_t::CUBLAS_OP_N
    }
}

impl Driver for CudaDriver {
    type Block = CudaSlice<u8>;
    const BACKEND: &'static str = "cuda";

    fn open(ordinal: usize) -> Result<Self> {
        let count = probe::check()?;
        if ordinal >= count {
            return Err(Error::NoDevice {
                backend: "cuda",
                reason: format!(
                    "device {ordinal} asked for, but only {count} CUDA device(s) are visible"
                ),
            });
        }
        let ctx = CudaContext::new(ordinal)
            .map_err(|e| error::driver("cuda", "opening the device", e))?;
        // One stream orders everything this backend does, so cudarc's per-buffer event tracking
        // would only add work.
        // SAFETY: no buffers exist yet on this context's streams made by us, and all work of this
        // backend goes to the single stream created below.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx
            .name()
            .map_err(|e| error::driver("cuda", "reading the device name", e))?;
        let device = format!("cuda:{ordinal} ({name})");
        let stream = ctx
            .new_stream()
            .map_err(|e| error::driver(&device, "creating a stream", e))?;
        let sm_count = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| error::driver(&device, "reading the multiprocessor count", e))?;
        let memory_total = ctx
            .total_mem()
            .map_err(|e| error::driver(&device, "reading the memory size", e))?
            as u64;
        let kernels = Kernels::for_context(&ctx, &device)?;
        let blas = CudaBlas::new(stream.clone())
            .map_err(|e| error::cublas(&device, "creating a handle", e))?;
        let info = DeviceInfo {
            backend: "cuda",
            name: device,
            vendor: "NVIDIA".into(),
            memory_total,
            compute_units: sm_count.max(0) as usize,
            max_buffer_elements: None,
            capabilities: Capabilities::all_floats(),
        };
        Ok(CudaDriver {
            ctx,
            stream,
            kernels,
            blas: Mutex::new(blas),
            info,
            sm_count: sm_count.max(1) as u32,
        })
    }

    fn device_count() -> Result<usize> {
        probe::check()
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn compute_units(&self) -> u32 {
        self.sm_count
    }

    fn alloc(&self, bytes: usize) -> std::result::Result<CudaSlice<u8>, RawFailure> {
        // SAFETY: the memory is uninitialised; the shared layer zero-fills every block, fresh
        // or reused, before any view of it is handed out.
        unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| {
            if is_out_of_memory(&e) {
                RawFailure::OutOfMemory
            } else {
                RawFailure::Other(error::driver(&self.info.name, "cuMemAlloc", e))
            }
        })
    }

    fn available(&self) -> u64 {
        self.ctx.mem_get_info().map_or(0, |(free, _)| free as u64)
    }

    fn addr(&self, block: &CudaSlice<u8>) -> u64 {
        let (ptr, _guard) = block.device_ptr(&self.stream);
        ptr
    }

    fn zero(&self, block: &mut CudaSlice<u8>) -> Result<()> {
        self.stream
            .memset_zeros(block)
            .map_err(self.fail("zero-filling a new buffer"))
    }

    fn upload(&self, src: &[u8], dst: &mut CudaSlice<u8>, offset: usize) -> Result<()> {
        let mut view = dst.slice_mut(offset..offset + src.len());
        self.stream
            .memcpy_htod(src, &mut view)
            .map_err(self.fail("copying to the device"))
    }

    fn download(&self, src: &CudaSlice<u8>, offset: usize, dst: &mut [u8]) -> Result<()> {
        let view = src.slice(offset..offset + dst.len());
        self.stream
            .memcpy_dtoh(&view, dst)
            .map_err(self.fail("copying from the device"))?;
        self.stream
            .synchronize()
            .map_err(self.fail("synchronizing"))
    }

    fn copy(
        &self,
        src: &CudaSlice<u8>,
        src_offset: usize,
        dst: &mut CudaSlice<u8>,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let sview = src.slice(src_offset..src_offset + bytes);
        let mut dview = dst.slice_mut(dst_offset..dst_offset + bytes);
        self.stream
            .memcpy_dtod(&sview, &mut dview)
            .map_err(self.fail("device-to-device copy"))
    }

    fn sync(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(self.fail("synchronizing"))?;
        self.ctx
            .check_err()
            .map_err(self.fail("an earlier asynchronous operation"))
    }

    unsafe fn launch(&self, name: &str, grid: Grid, args: &[Arg]) -> Result<()> {
        let func = self.kernels.get(name)?;
        let mut b = self.stream.launch_builder(&func);
        for a in args {
            match a {
                Arg::Ptr(v) | Arg::U64(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::F32(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (grid.blocks, 1, 1),
            block_dim: (grid.threads, 1, 1),
            shared_mem_bytes: grid.shared_bytes,
        };
        // SAFETY: the caller guarantees the arguments match the kernel's parameters and the
        // addresses are valid for what it touches.
        unsafe { b.launch(cfg) }
            .map(|_| ())
            .map_err(self.fail(&format!("launching {name}")))
    }

    fn native_collectives(
        backend: &GpuBackend<Self>,
        rank: usize,
        world: usize,
        share: &mut dyn FnMut(Option<[u8; 128]>) -> Result<[u8; 128]>,
    ) -> Option<Result<Box<dyn Collectives<GpuBackend<Self>>>>> {
        // NCCL: one communicator per process, its id shared by the caller.
        Some(ds_gpu::comm::bootstrap(backend, rank, world, share))
    }

    unsafe fn gemm(&self, g: &Gemm) -> Result<()> {
        let handle = self.blas.lock().map_err(|_| Error::Device {
            device: self.info.name.clone(),
            message: "the cuBLAS handle's lock was poisoned by a panic".into(),
        })?;
        let dt = blas_type(g.dtype);
        // SAFETY: the caller guarantees the operands hold what the batch reaches; the handle's
        // stream is this driver's stream, so the call is ordered with the kernels; alpha and
        // beta are f32 as CUBLAS_COMPUTE_32F requires and live across the call.
        unsafe {
            blas::gemm_strided_batched_ex(
                *handle.handle(),
                blas_op(g.trans_a),
                blas_op(g.trans_b),
                g.m,
                g.n,
                g.k,
                (&g.alpha as *const f32).cast(),
                g.a as *const _,
                dt,
                g.lda,
                g.stride_a,
                g.b as *const _,
                dt,
                g.ldb,
                g.stride_b,
                (&g.beta as *const f32).cast(),
                g.c as *mut _,
                dt,
                g.ldc,
                g.stride_c,
                g.batch,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| error::cublas(&self.info.name, "gemm", e))
    }
}

#[cfg(test)]
mod tests {
    use super::{CUresult, DriverError, is_out_of_memory};

    #[test]
    fn out_of_memory_is_known_by_its_code() {
        assert!(is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_OUT_OF_MEMORY
        )));
        assert!(!is_out_of_memory(&DriverError(
            CUresult::CUDA_ERROR_INVALID_VALUE
        )));
    }
}
