//! The world of one rank: what a single process without MPI runs.

use super::{Collectives, ReduceOp};
use crate::device::Device;
use crate::error::Result;
use crate::kernels::{Backend, Validated, View, ViewMut};

/// Collectives for a world of one rank: reductions leave data as it is, scatter and gather
/// copy, broadcast from rank 0 does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleRank;

impl<B: Backend> Collectives<B> for SingleRank {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn exec_all_reduce(
        &self,
        _: &Device<B>,
        _: ViewMut<'_, B>,
        _: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        Ok(())
    }

    fn exec_reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        _: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        device.copy(input, output)
    }

    fn exec_all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        device.copy(input, output)
    }

    fn exec_reduce_scatter_in_place(
        &self,
        _: &Device<B>,
        _: ViewMut<'_, B>,
        _: ReduceOp,
        _: Validated,
    ) -> Result<()> {
        Ok(())
    }

    fn exec_all_gather_in_place(
        &self,
        _: &Device<B>,
        _: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()> {
        Ok(())
    }

    fn exec_broadcast(
        &self,
        _: &Device<B>,
        _: ViewMut<'_, B>,
        _: usize,
        _: Validated,
    ) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
