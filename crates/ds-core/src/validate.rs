//! Argument checks shared by every operation of the checked front door.
//!
//! Each check names the argument it refuses, so users see `adam_step: argument `grad`: has
//! 100 elements, expected 128 (the length of `param`)` rather than a crash or a garbled
//! result. Backends never repeat these checks; they receive a [`crate::Validated`] token.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::info::{DeviceInfo, Support};
use crate::kernel::Kernel;
use crate::slice::{DeviceBuffer, Slice, SliceMut};

/// What validation needs to know about a view, read-only or writable.
pub(crate) trait ViewFacts {
    fn start(&self) -> usize;
    fn stop(&self) -> usize;
    fn buffer_len(&self) -> usize;
    fn elem_dtype(&self) -> DType;
    fn count(&self) -> usize {
        self.stop().saturating_sub(self.start())
    }
}

impl<T: DeviceBuffer + ?Sized> ViewFacts for Slice<'_, T> {
    fn start(&self) -> usize {
        self.offset()
    }
    fn stop(&self) -> usize {
        self.end()
    }
    fn buffer_len(&self) -> usize {
        self.buffer().len()
    }
    fn elem_dtype(&self) -> DType {
        self.dtype()
    }
}

impl<T: DeviceBuffer + ?Sized> ViewFacts for SliceMut<'_, T> {
    fn start(&self) -> usize {
        self.offset()
    }
    fn stop(&self) -> usize {
        self.end()
    }
    fn buffer_len(&self) -> usize {
        self.buffer().len()
    }
    fn elem_dtype(&self) -> DType {
        self.dtype()
    }
}

/// The checks of one operation call; every error carries the operation's name.
pub(crate) struct Check {
    op: &'static str,
}

impl Check {
    pub(crate) fn new(kernel: Kernel) -> Self {
        Check { op: kernel.name() }
    }

    pub(crate) fn named(op: &'static str) -> Self {
        Check { op }
    }

    pub(crate) fn err(&self, arg: &'static str, reason: impl Into<String>) -> Error {
        Error::invalid(self.op, arg, reason)
    }

    /// The view lies inside its buffer.
    pub(crate) fn bounds(&self, arg: &'static str, v: &impl ViewFacts) -> Result<()> {
        if v.start() > v.stop() {
            return Err(self.err(
                arg,
                format!(
                    "range {}..{} is inverted (start after end)",
                    v.start(),
                    v.stop()
                ),
            ));
        }
        if v.stop() > v.buffer_len() {
            return Err(self.err(
                arg,
                format!(
                    "range {}..{} is past the end of its buffer of {} elements",
                    v.start(),
                    v.stop(),
                    v.buffer_len()
                ),
            ));
        }
        Ok(())
    }

    /// In bounds and of exactly `dtype`.
    pub(crate) fn typed(&self, arg: &'static str, v: &impl ViewFacts, dtype: DType) -> Result<()> {
        self.bounds(arg, v)?;
        if v.elem_dtype() != dtype {
            return Err(self.err(
                arg,
                format!("has dtype {}, expected {dtype}", v.elem_dtype()),
            ));
        }
        Ok(())
    }

    /// In bounds and of a float dtype.
    pub(crate) fn float(&self, arg: &'static str, v: &impl ViewFacts) -> Result<()> {
        self.bounds(arg, v)?;
        if !v.elem_dtype().is_float() {
            return Err(self.err(
                arg,
                format!(
                    "has dtype {}; this operation takes f32, f16 or bf16",
                    v.elem_dtype()
                ),
            ));
        }
        Ok(())
    }

    /// In bounds, one of `dtypes`.
    pub(crate) fn one_of(
        &self,
        arg: &'static str,
        v: &impl ViewFacts,
        dtypes: &[DType],
    ) -> Result<()> {
        self.bounds(arg, v)?;
        if !dtypes.contains(&v.elem_dtype()) {
            let names: Vec<&str> = dtypes.iter().map(|d| d.name()).collect();
            return Err(self.err(
                arg,
                format!(
                    "has dtype {}, expected one of {}",
                    v.elem_dtype(),
                    names.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// In bounds and of the same dtype as an already-checked view.
    pub(crate) fn like(
        &self,
        arg: &'static str,
        v: &impl ViewFacts,
        other_arg: &'static str,
        other: &impl ViewFacts,
    ) -> Result<()> {
        self.bounds(arg, v)?;
        if v.elem_dtype() != other.elem_dtype() {
            return Err(self.err(
                arg,
                format!(
                    "has dtype {} but `{other_arg}` has {}; they must match",
                    v.elem_dtype(),
                    other.elem_dtype()
                ),
            ));
        }
        Ok(())
    }

    /// Exactly `expected` elements; `what` says where the number comes from.
    pub(crate) fn len(
        &self,
        arg: &'static str,
        v: &impl ViewFacts,
        expected: usize,
        what: &str,
    ) -> Result<()> {
        if v.count() != expected {
            return Err(self.err(
                arg,
                format!("has {} elements, expected {expected} ({what})", v.count()),
            ));
        }
        Ok(())
    }

    /// At least `needed` elements.
    pub(crate) fn at_least(
        &self,
        arg: &'static str,
        v: &impl ViewFacts,
        needed: usize,
        what: &str,
    ) -> Result<()> {
        if v.count() < needed {
            return Err(self.err(
                arg,
                format!(
                    "has {} elements, needs at least {needed} ({what})",
                    v.count()
                ),
            ));
        }
        Ok(())
    }

    /// The same length as another view.
    pub(crate) fn same_len(
        &self,
        arg: &'static str,
        v: &impl ViewFacts,
        other_arg: &'static str,
        other: &impl ViewFacts,
    ) -> Result<()> {
        self.len(
            arg,
            v,
            other.count(),
            &format!("the length of `{other_arg}`"),
        )
    }

    /// A finite scalar.
    pub(crate) fn finite(&self, arg: &'static str, value: f32) -> Result<()> {
        if !value.is_finite() {
            return Err(self.err(arg, format!("must be finite, got {value}")));
        }
        Ok(())
    }

    /// A finite scalar in `[lo, hi]`.
    pub(crate) fn within(&self, arg: &'static str, value: f32, lo: f32, hi: f32) -> Result<()> {
        if !(value >= lo && value <= hi) {
            return Err(self.err(arg, format!("must be in [{lo}, {hi}], got {value}")));
        }
        Ok(())
    }

    /// A finite scalar in `[lo, hi)`.
    pub(crate) fn within_open(
        &self,
        arg: &'static str,
        value: f32,
        lo: f32,
        hi: f32,
    ) -> Result<()> {
        if !(value >= lo && value < hi) {
            return Err(self.err(arg, format!("must be in [{lo}, {hi}), got {value}")));
        }
        Ok(())
    }

    /// The product of shape factors, refusing overflow.
    pub(crate) fn product(&self, arg: &'static str, factors: &[usize]) -> Result<usize> {
        factors
            .iter()
            .try_fold(1usize, |acc, &f| acc.checked_mul(f))
            .ok_or_else(|| {
                self.err(
                    arg,
                    format!("shape {factors:?} overflows the address space"),
                )
            })
    }

    /// The backend declares this kernel for this dtype.
    pub(crate) fn supported(&self, info: &DeviceInfo, kernel: Kernel, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Ok(());
        }
        match info.capabilities.support(kernel.family(), dtype) {
            Support::Yes => Ok(()),
            Support::No(reason) => Err(Error::Unsupported {
                op: kernel.name(),
                dtype,
                backend: info.backend.to_string(),
                reason,
            }),
        }
    }
}
