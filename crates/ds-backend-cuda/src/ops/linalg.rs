//! GEMM through cuBLAS (`cublasGemmStridedBatchedEx`) with f32 accumulation for every dtype.
//!
//! ds's matrices are row-major and cuBLAS's column-major: a row-major `C = op(A) op(B)` is the
//! column-major `C^T = op(B)^T op(A)^T`, so B goes first, the transposes keep their sense and
//! the leading dimensions are the stored row lengths.

use crate::context::CudaBackend;
use crate::error;
use crate::kernels::Arg;
use cudarc::cublas::{result as blas, sys};
use ds_core::kernels::{LinalgKernels, Validated, View, ViewMut};
use ds_core::params::GemmSpec;
use ds_core::{DType, Device, Error, Result};

fn data_type(dtype: DType) -> sys::cudaDataType {
    match dtype {
        DType::F16 => sys::cudaDataType::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType::CUDA_R_16BF,
        _ => sys::cudaDataType::CUDA_R_32F,
    }
}

fn int(v: usize, what: &'static str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(
            "gemm",
            what,
            format!("{v} exceeds cuBLAS's 32-bit dimensions"),
        )
    })
}

fn stride(v: usize, what: &'static str) -> Result<i64> {
    i64::try_from(v)
        .map_err(|_| Error::invalid("gemm", what, format!("{v} exceeds a 64-bit stride")))
}

impl LinalgKernels for CudaBackend {
    fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, Self>,
        b: View<'_, Self>,
        c: ViewMut<'_, Self>,
        _: Validated,
    ) -> Result<()> {
        let (m, n, k) = (spec.m, spec.n, spec.k);
        if m == 0 || n == 0 || spec.batch == 0 {
            return Ok(());
        }
        if k == 0 {
            // C = beta C (or 0) for every batch entry: no product to compute.
            let dev = Device::new(self.clone());
            let buf = c.into_buffer_view();
            for i in 0..spec.batch {
                let start = buf.1 + i * spec.stride_c;
                let mut view = ds_core::SliceMut::new(&mut *buf.0, start..start + m * n);
                if spec.beta == 0.0 {
                    dev.fill(view.reborrow(), 0.0)?;
                } else {
                    dev.scale(view.reborrow(), spec.beta)?;
                }
            }
            return Ok(());
        }
        let dt = data_type(a.dtype());
        let op = |t: bool| {
            if t {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        // Column-major C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
        let lda = if spec.trans_b { k } else { n }; // B's stored row length
        let ldb = if spec.trans_a { m } else { k }; // A's stored row length
        let (Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(pc)) =
            (super::ptr(&a), super::ptr(&b), super::ptr_mut(&c))
        else {
            return Err(Error::invalid(
                "gemm",
                "c",
                "internal: views without addresses",
            ));
        };
        let (alpha, beta) = (spec.alpha, spec.beta);
        let blas_handle = self.inner.blas.lock().map_err(|_| Error::Device {
            device: self.device().to_string(),
            message: "the cuBLAS handle's lock was poisoned by a panic".into(),
        })?;
        // SAFETY: ds-core validated that a, b and c hold every element the strided batch
        // reaches at these leading dimensions, and that batches of c do not overlap; the
        // handle's stream is this backend's stream, so the call is ordered with the kernels
        // that produce and consume the operands; alpha and beta are f32 as CUBLAS_COMPUTE_32F
        // requires and live across the call.
        unsafe {
            blas::gemm_strided_batched_ex(
                *blas_handle.handle(),
                op(spec.trans_b),
                op(spec.trans_a),
                int(n, "spec.n")?,
                int(m, "spec.m")?,
                int(k, "spec.k")?,
                (&alpha as *const f32).cast(),
                pb as *const _,
                dt,
                int(lda, "spec.n")?,
                stride(spec.stride_b, "spec.stride_b")?,
                pa as *const _,
                dt,
                int(ldb, "spec.k")?,
                stride(spec.stride_a, "spec.stride_a")?,
                (&beta as *const f32).cast(),
                pc as *mut _,
                dt,
                int(n, "spec.n")?,
                stride(spec.stride_c, "spec.stride_c")?,
                int(spec.batch, "spec.batch")?,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| error::cublas(self.device(), "gemm", e))
    }
}

/// A writable view split into its buffer and start, so sub-views can be made from it.
trait IntoBufferView<'a> {
    fn into_buffer_view(self) -> (&'a mut crate::CudaBuffer, usize);
}

impl<'a> IntoBufferView<'a> for ViewMut<'a, CudaBackend> {
    fn into_buffer_view(self) -> (&'a mut crate::CudaBuffer, usize) {
        let start = self.offset();
        (self.into_buffer(), start)
    }
}
