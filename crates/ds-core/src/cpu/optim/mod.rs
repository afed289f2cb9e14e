//! Fused optimizer steps on the CPU: one pass over memory per step, f32 master weights, the
//! 16-bit gradient converted and the 16-bit weight copy written a block at a time while the
//! data is in L1. These are memory-bound: the arithmetic (one sqrt and one divide per element
//! for Adam) hides under the 28 bytes per parameter the step must move.

mod adagrad;
mod adam;
mod driver;
mod lamb;
mod lion;
mod sgd;

use super::{CpuBackend, CpuBuffer};
use crate::error::Result;
use crate::kernels::{
    AdagradArgs, AdamArgs, LambApplyArgs, LambMomentArgs, LionArgs, OptimizerKernels, SgdArgs,
    Validated,
};
use crate::params::{AdagradParams, AdamParams, LambParams, LionParams, SgdParams};

impl OptimizerKernels for CpuBackend {
    fn adam_step(
        &self,
        hp: &AdamParams,
        args: AdamArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        adam::adam_step(self, hp, args)
    }

    fn sgd_step(&self, hp: &SgdParams, args: SgdArgs<'_, CpuBuffer>, _: Validated) -> Result<()> {
        sgd::sgd_step(self, hp, args)
    }

    fn adagrad_step(
        &self,
        hp: &AdagradParams,
        args: AdagradArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        adagrad::adagrad_step(self, hp, args)
    }

    fn lion_step(
        &self,
        hp: &LionParams,
        args: LionArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        lion::lion_step(self, hp, args)
    }

    fn lamb_moments(
        &self,
        hp: &LambParams,
        args: LambMomentArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        lamb::moments(self, hp, args)
    }

    fn lamb_apply(
        &self,
        hp: &LambParams,
        args: LambApplyArgs<'_, CpuBuffer>,
        _: Validated,
    ) -> Result<()> {
        lamb::apply(self, hp, args)
    }
}
