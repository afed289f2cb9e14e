//! Checked matrix multiplication.

use super::Device;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::kernels::{Backend, Validated, View, ViewMut};
use crate::params::GemmSpec;
use crate::validate::Check;

impl<B: Backend> Device<B> {
    /// `C = alpha * op(A) op(B) + beta * C` for each of `spec.batch` matrices (see
    /// [`GemmSpec`] for layouts), A, B and C of one float dtype, accumulated in f32. Views must
    /// hold at least the elements the batch strides reach; batches of C must not overlap.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `a`, `b`, `c` or the `spec` field at fault.
    pub fn gemm(
        &self,
        spec: &GemmSpec,
        a: View<'_, B>,
        b: View<'_, B>,
        c: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::Gemm);
        check.finite("alpha", spec.alpha)?;
        check.finite("beta", spec.beta)?;
        check.float("a", &a)?;
        check.like("b", &b, "a", &a)?;
        check.like("c", &c, "a", &a)?;
        let a_len = check.product("spec.m/k", &[spec.m, spec.k])?;
        let b_len = check.product("spec.k/n", &[spec.k, spec.n])?;
        let c_len = check.product("spec.m/n", &[spec.m, spec.n])?;
        if spec.batch > 1 && spec.stride_c < c_len {
            return Err(check.err(
                "spec.stride_c",
                format!(
                    "{} is smaller than one C matrix ({c_len} elements): batches would overlap",
                    spec.stride_c
                ),
            ));
        }
        let reach = |stride: usize, one: usize, arg: &'static str| -> Result<usize> {
            if spec.batch == 0 || one == 0 {
                return Ok(0);
            }
            let last = check.product(arg, &[spec.batch - 1, stride])?;
            last.checked_add(one)
                .ok_or_else(|| check.err(arg, "batch reach overflows the address space"))
        };
        check.at_least(
            "a",
            &a,
            reach(spec.stride_a, a_len, "spec.stride_a")?,
            "m*k per batch at stride_a",
        )?;
        check.at_least(
            "b",
            &b,
            reach(spec.stride_b, b_len, "spec.stride_b")?,
            "k*n per batch at stride_b",
        )?;
        check.at_least(
            "c",
            &c,
            reach(spec.stride_c, c_len, "spec.stride_c")?,
            "m*n per batch at stride_c",
        )?;
        check.supported(self.info(), Kernel::Gemm, a.dtype())?;
        self.backend.gemm(spec, a, b, c, Validated::new())
    }
}
