//! Checked elementwise operations and casts.

use super::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::kernels::{Backend, Validated, View, ViewMut};
use crate::validate::Check;

impl<B: Backend> Device<B> {
    /// `dst[i] = value` for every element, rounded to nearest-even for 16-bit floats. Integer
    /// buffers take integral values in their range.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `dst` (bounds) or `value` (not representable
    /// in an integer dtype).
    pub fn fill(&self, dst: ViewMut<'_, B>, value: f64) -> Result<()> {
        let check = Check::new(Kernel::Fill);
        check.bounds("dst", &dst)?;
        let dtype = dst.dtype();
        let integral = value.fract() == 0.0;
        match dtype {
            DType::I32
                if !(integral && value >= f64::from(i32::MIN) && value <= f64::from(i32::MAX)) =>
            {
                return Err(check.err("value", format!("{value} is not an i32")));
            }
            DType::U8 if !(integral && (0.0..=255.0).contains(&value)) => {
                return Err(check.err("value", format!("{value} is not a u8")));
            }
            _ => {}
        }
        check.supported(self.info(), Kernel::Fill, dtype)?;
        self.backend.fill(dst, value, Validated::new())
    }

    /// `dst[i] = src[i]` converted between f32, f16 and bf16 with round-to-nearest-even (NaN
    /// stays NaN, overflow becomes infinity). Equal dtypes copy.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `src` or `dst`.
    pub fn cast(&self, src: View<'_, B>, dst: ViewMut<'_, B>) -> Result<()> {
        let check = Check::new(Kernel::Cast);
        check.float("src", &src)?;
        check.float("dst", &dst)?;
        check.same_len("dst", &dst, "src", &src)?;
        check.supported(self.info(), Kernel::Cast, src.dtype())?;
        check.supported(self.info(), Kernel::Cast, dst.dtype())?;
        self.backend.cast(src, dst, Validated::new())
    }

    /// `x[i] = x[i] * alpha`, computed in f32.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x` or `alpha` (not finite).
    pub fn scale(&self, x: ViewMut<'_, B>, alpha: f32) -> Result<()> {
        let check = Check::new(Kernel::Scale);
        check.float("x", &x)?;
        check.finite("alpha", alpha)?;
        check.supported(self.info(), Kernel::Scale, x.dtype())?;
        self.backend.scale(x, alpha, Validated::new())
    }

    /// `y[i] = y[i] + alpha * x[i]`, computed in f32; x and y may differ in dtype (e.g. 16-bit
    /// gradients accumulated into an f32 buffer).
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `x`, `y` or `alpha`.
    pub fn axpy(&self, alpha: f32, x: View<'_, B>, y: ViewMut<'_, B>) -> Result<()> {
        let check = Check::new(Kernel::Axpy);
        check.finite("alpha", alpha)?;
        check.float("x", &x)?;
        check.float("y", &y)?;
        check.same_len("y", &y, "x", &x)?;
        check.supported(self.info(), Kernel::Axpy, x.dtype())?;
        check.supported(self.info(), Kernel::Axpy, y.dtype())?;
        self.backend.axpy(alpha, x, y, Validated::new())
    }

    /// `out[i] = a[i] + b[i]`, all of one dtype, computed in f32.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `a`, `b` or `out`.
    pub fn add(&self, a: View<'_, B>, b: View<'_, B>, out: ViewMut<'_, B>) -> Result<()> {
        self.check_binary(Kernel::Add, &a, &b, &out)?;
        self.backend.add(a, b, out, Validated::new())
    }

    /// `out[i] = a[i] * b[i]`, all of one dtype, computed in f32.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] naming `a`, `b` or `out`.
    pub fn mul(&self, a: View<'_, B>, b: View<'_, B>, out: ViewMut<'_, B>) -> Result<()> {
        self.check_binary(Kernel::Mul, &a, &b, &out)?;
        self.backend.mul(a, b, out, Validated::new())
    }

    fn check_binary(
        &self,
        kernel: Kernel,
        a: &View<'_, B>,
        b: &View<'_, B>,
        out: &ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::new(kernel);
        check.float("a", a)?;
        check.like("b", b, "a", a)?;
        check.like("out", out, "a", a)?;
        check.same_len("b", b, "a", a)?;
        check.same_len("out", out, "a", a)?;
        check.supported(self.info(), kernel, a.dtype())
    }
}
