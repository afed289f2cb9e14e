//! GEMM through the driver's BLAS (`gemm_strided_batched_ex` of cuBLAS or rocBLAS) with f32
//! accumulation for every dtype.
//!
//! ds's matrices are row-major and BLAS's column-major: a row-major `C = op(A) op(B)` is the
//! column-major `C^T = op(B)^T op(A)^T`, so B goes first, the transposes keep their sense and
//! the leading dimensions are the stored row lengths.

use crate::backend::GpuBackend;
use crate::driver::{Driver, Gemm};
use crate::launch::Arg;
use ds_core::kernels::{LinalgKernels, Validated, View, ViewMut};
use ds_core::params::GemmSpec;
use ds_core::{Device, Error, Result};

fn int(v: usize, what: &'static str) -> Result<i32> {
    i32::try_from(v).map_err(|_| {
        Error::invalid(
            "gemm",
            what,
            format!("{v} exceeds BLAS's 32-bit dimensions"),
        )
    })
}

fn stride(v: usize, what: &'static str) -> Result<i64> {
    i64::try_from(v)
        .map_err(|_| Error::invalid("gemm", what, format!("{v} exceeds a 64-bit stride")))
}

impl<D: Driver> LinalgKernels for GpuBackend<D> {
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
            let first = c.offset();
            let buf = (c.into_buffer(), first);
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
        // Column-major C^T (n x m) = op(B)^T (n x k) * op(A)^T (k x m).
        let ld_b = if spec.trans_b { k } else { n }; // B's stored row length
        let ld_a = if spec.trans_a { m } else { k }; // A's stored row length
        let (Arg::Ptr(pa), Arg::Ptr(pb), Arg::Ptr(pc)) =
            (super::ptr(&a), super::ptr(&b), super::ptr_mut(&c))
        else {
            return Err(Error::invalid(
                "gemm",
                "c",
                "internal: views without addresses",
            ));
        };
        let call = Gemm {
            trans_a: spec.trans_b,
            trans_b: spec.trans_a,
            m: int(n, "spec.n")?,
            n: int(m, "spec.m")?,
            k: int(k, "spec.k")?,
            alpha: spec.alpha,
            a: pb,
            lda: int(ld_b, "spec.n")?,
            stride_a: stride(spec.stride_b, "spec.stride_b")?,
            b: pa,
            ldb: int(ld_a, "spec.k")?,
            stride_b: stride(spec.stride_a, "spec.stride_a")?,
            beta: spec.beta,
            c: pc,
            ldc: int(n, "spec.n")?,
            stride_c: stride(spec.stride_c, "spec.stride_c")?,
            batch: int(spec.batch, "spec.batch")?,
            dtype: a.dtype(),
        };
        // SAFETY: ds-core validated that a, b and c hold every element the strided batch
        // reaches at these leading dimensions, and that batches of c do not overlap; the
        // driver queues the call on the stream the kernels producing and consuming the
        // operands run on.
        unsafe { self.driver().gemm(&call) }
    }
}
