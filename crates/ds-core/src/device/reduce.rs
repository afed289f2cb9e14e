//! Checked reductions.

use super::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::kernels::{Backend, Validated, View, ViewMut};
use crate::validate::Check;

const FLAG_DTYPES: [DType; 2] = [DType::F32, DType::U8];

impl<B: Backend> Device<B> {
    /// `out[0] = sum(x)`, accumulated in f32 or wider; `out` is a one-element f32 view so the
    /// result can stay on the device. An empty `x` sums to 0.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `out`.
    pub fn sum(&self, x: View<'_, B>, out: ViewMut<'_, B>) -> Result<()> {
        self.check_reduce(Kernel::Sum, &x, &out)?;
        self.backend.sum(x, out, Validated::new())
    }

    /// `out[0] = sum(x*x)`, accumulated in f32 or wider (the squared L2 norm).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `out`.
    pub fn sum_squares(&self, x: View<'_, B>, out: ViewMut<'_, B>) -> Result<()> {
        self.check_reduce(Kernel::SumSquares, &x, &out)?;
        self.backend.sum_squares(x, out, Validated::new())
    }

    /// Sets `flag[0] = 1` when any element of `x` is infinite or NaN and leaves it unchanged
    /// otherwise, so one zeroed flag can collect the checks of many buffers. `flag` is a
    /// one-element f32 or u8 view.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `flag`.
    pub fn non_finite(&self, x: View<'_, B>, flag: ViewMut<'_, B>) -> Result<()> {
        let check = Check::new(Kernel::NonFinite);
        check.float("x", &x)?;
        check.one_of("flag", &flag, &FLAG_DTYPES)?;
        check.len("flag", &flag, 1, "a flag is one element")?;
        check.supported(self.info(), Kernel::NonFinite, x.dtype())?;
        self.backend.non_finite(x, flag, Validated::new())
    }

    /// The fused unscale-and-check of mixed-precision training: `x[i] *= inv_scale` (rounded
    /// back to x's dtype) and `flag[0] = 1` when any result is infinite or NaN (unchanged
    /// otherwise), in one pass over memory.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x`, `inv_scale` or `flag`.
    pub fn unscale_and_check(
        &self,
        x: ViewMut<'_, B>,
        inv_scale: f32,
        flag: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(Kernel::UnscaleCheck);
        check.float("x", &x)?;
        check.finite("inv_scale", inv_scale)?;
        check.one_of("flag", &flag, &FLAG_DTYPES)?;
        check.len("flag", &flag, 1, "a flag is one element")?;
        check.supported(self.info(), Kernel::UnscaleCheck, x.dtype())?;
        self.backend
            .unscale_and_check(x, inv_scale, flag, Validated::new())
    }

    fn check_reduce(&self, kernel: Kernel, x: &View<'_, B>, out: &ViewMut<'_, B>) -> Result<()> {
        let check = Check::new(kernel);
        check.float("x", x)?;
        check.typed("out", out, DType::F32)?;
        check.len("out", out, 1, "a reduction writes one element")?;
        check.supported(self.info(), kernel, x.dtype())
    }
}
