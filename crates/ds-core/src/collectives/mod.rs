//! Data-parallel communication over backend buffers.
//!
//! [`Collectives`] is the contract; [`SingleRank`] (one process, no peers) and
//! [`ThreadedComm`] (N threads of one process are N ranks) implement it here, MPI and
//! NCCL/RCCL in their crates. The trait's public methods validate arguments the same way for
//! every implementation and then call the `exec_*` methods an implementation provides.
//!
//! Lengths need not divide evenly by the world size: [`partition`] gives every rank its part
//! (the first `len % world` ranks get one extra element), and reduce-scatter and all-gather
//! use it.
//!
//! Reductions accumulate in f32 in rank order (rank 0 first), so every rank gets the same
//! bits; 16-bit data is widened to f32, reduced, and rounded once. `Max` propagates NaN, which
//! is what an overflow flag needs.

mod host_reduce;
mod single;
mod threaded;

pub use host_reduce::reduce_into;
pub use single::SingleRank;
pub use threaded::{ThreadedComm, run_threaded};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::kernels::{Backend, Validated, View, ViewMut};
use crate::validate::Check;
use std::fmt;
use std::ops::Range;

/// How all-reduce and reduce-scatter combine the ranks' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// Sum over ranks.
    Sum,
    /// Sum over ranks divided by the world size.
    Avg,
    /// Maximum over ranks (NaN wins).
    Max,
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Avg => "avg",
            ReduceOp::Max => "max",
        })
    }
}

/// The part of `len` elements that `rank` of `world` owns: `len / world` elements, plus one
/// for the first `len % world` ranks, in rank order.
pub fn partition(len: usize, world: usize, rank: usize) -> Range<usize> {
    if world == 0 {
        return 0..0;
    }
    let base = len / world;
    let extra = len % world;
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..start + size
}

/// Collective communication among `world_size()` ranks over buffers of backend `B`.
///
/// Implementors provide `rank`, `world_size` and the `exec_*` methods; callers use the
/// validated methods (`all_reduce`, ...), which implementations must not override.
pub trait Collectives<B: Backend>: Send {
    /// This process's (or thread's) rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// In-place all-reduce after validation.
    fn exec_all_reduce(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()>;
    /// Reduce-scatter after validation: `output` is this rank's [`partition`] of the reduced
    /// `input`.
    fn exec_reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()>;
    /// All-gather after validation: `input` is this rank's [`partition`] of `output`.
    fn exec_all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()>;
    /// In-place reduce-scatter after validation: this rank's [`partition`] of `buf` receives the
    /// reduction of every rank's `buf` over that partition; the rest of `buf` is unspecified.
    fn exec_reduce_scatter_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
        _: Validated,
    ) -> Result<()>;
    /// In-place all-gather after validation: this rank's [`partition`] of `buf` is its input;
    /// afterwards `buf` holds every rank's part.
    fn exec_all_gather_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        _: Validated,
    ) -> Result<()>;
    /// Broadcast from `root` after validation.
    fn exec_broadcast(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        root: usize,
        _: Validated,
    ) -> Result<()>;
    /// Blocks until every rank has called `barrier`.
    fn barrier(&self) -> Result<()>;

    /// Combines `buf` across ranks with `op`; every rank gets the result.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `buf` (bounds, a non-float dtype); transport errors.
    fn all_reduce(&self, device: &Device<B>, buf: ViewMut<'_, B>, op: ReduceOp) -> Result<()> {
        let check = Check::named("all_reduce");
        check.float("buf", &buf)?;
        self.exec_all_reduce(device, buf, op, Validated::new())
    }

    /// Reduces `input` (the same length on every rank) with `op` and leaves this rank's
    /// [`partition`] of the result in `output`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `input` or `output`; transport errors.
    fn reduce_scatter(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
        op: ReduceOp,
    ) -> Result<()> {
        let check = Check::named("reduce_scatter");
        check.float("input", &input)?;
        check.like("output", &output, "input", &input)?;
        let part = partition(input.len(), self.world_size(), self.rank());
        check.len(
            "output",
            &output,
            part.len(),
            &format!(
                "rank {}'s part of {} elements over {} ranks",
                self.rank(),
                input.len(),
                self.world_size()
            ),
        )?;
        self.exec_reduce_scatter(device, input, output, op, Validated::new())
    }

    /// Gathers every rank's part into `output`: rank r's `input` lands at `partition(len,
    /// world, r)` of `output`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `input` or `output`; transport errors.
    fn all_gather(
        &self,
        device: &Device<B>,
        input: View<'_, B>,
        output: ViewMut<'_, B>,
    ) -> Result<()> {
        let check = Check::named("all_gather");
        check.float("output", &output)?;
        check.like("input", &input, "output", &output)?;
        let part = partition(output.len(), self.world_size(), self.rank());
        check.len(
            "input",
            &input,
            part.len(),
            &format!(
                "rank {}'s part of {} elements over {} ranks",
                self.rank(),
                output.len(),
                self.world_size()
            ),
        )?;
        self.exec_all_gather(device, input, output, Validated::new())
    }

    /// Reduce-scatter within one buffer: afterwards this rank's [`partition`] of `buf` holds the
    /// reduction (with `op`) of that partition of every rank's `buf`; the other elements of
    /// `buf` are unspecified. This is how ZeRO reduces a flat gradient buffer without a second
    /// buffer.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `buf`; transport errors.
    fn reduce_scatter_in_place(
        &self,
        device: &Device<B>,
        buf: ViewMut<'_, B>,
        op: ReduceOp,
    ) -> Result<()> {
        Check::named("reduce_scatter_in_place").float("buf", &buf)?;
        self.exec_reduce_scatter_in_place(device, buf, op, Validated::new())
    }

    /// All-gather within one buffer: each rank's [`partition`] of `buf` is its contribution,
    /// and afterwards every rank's `buf` holds all of them (how ZeRO shares updated parameters
    /// without a second buffer).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `buf`; transport errors.
    fn all_gather_in_place(&self, device: &Device<B>, buf: ViewMut<'_, B>) -> Result<()> {
        Check::named("all_gather_in_place").float("buf", &buf)?;
        self.exec_all_gather_in_place(device, buf, Validated::new())
    }

    /// Copies `root`'s `buf` into every other rank's `buf`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `buf` or `root` (out of range); transport errors.
    fn broadcast(&self, device: &Device<B>, buf: ViewMut<'_, B>, root: usize) -> Result<()> {
        let check = Check::named("broadcast");
        check.float("buf", &buf)?;
        if root >= self.world_size() {
            return Err(check.err(
                "root",
                format!(
                    "rank {root} is out of range for a world of {} ranks",
                    self.world_size()
                ),
            ));
        }
        self.exec_broadcast(device, buf, root, Validated::new())
    }
}

/// The error every implementation returns when ranks disagree about a call.
pub fn mismatch(op: &'static str, rank: usize, details: impl Into<String>) -> Error {
    Error::Collective {
        op,
        rank,
        reason: format!("ranks disagree about the call: {}", details.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::partition;

    #[test]
    fn partitions_cover_the_length_in_order_without_gaps() {
        for len in [0usize, 1, 2, 3, 7, 10, 64, 1001] {
            for world in 1..=5 {
                let mut next = 0;
                for rank in 0..world {
                    let p = partition(len, world, rank);
                    assert_eq!(p.start, next, "len {len} world {world} rank {rank}");
                    let expected = len / world + usize::from(rank < len % world);
                    assert_eq!(p.len(), expected);
                    next = p.end;
                }
                assert_eq!(next, len);
            }
        }
    }
}
