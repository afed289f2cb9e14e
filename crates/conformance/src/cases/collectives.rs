//! Collective cases: one per-rank body, generic over the backend and the collectives, so the
//! same expectations hold for threads, MPI processes and NCCL/RCCL communicators. Every rank
//! rebuilds all ranks' inputs from the seed, so it can compute the expected result alone.

use super::placed;
use crate::data::{Rng, Values, values};
use crate::oracle::round_to;
use crate::tolerance::{Tolerance, compare};
use ds_core::collectives::{partition, run_threaded};
use ds_core::{Backend, BufferExt, Collectives, DType, Device, ReduceOp};
use std::fmt;

/// One collective operation to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectiveOp {
    /// In-place all-reduce.
    AllReduce(ReduceOp),
    /// Reduce-scatter into each rank's partition.
    ReduceScatter(ReduceOp),
    /// All-gather of each rank's partition.
    AllGather,
    /// Reduce-scatter within one buffer (this rank's partition receives the reduction).
    ReduceScatterInPlace(ReduceOp),
    /// All-gather within one buffer (each rank's partition is its contribution).
    AllGatherInPlace,
    /// Broadcast from the last rank (root `world - 1`).
    Broadcast,
    /// A barrier.
    Barrier,
}

impl CollectiveOp {
    /// Every operation the suite checks, in report order.
    pub const ALL: [CollectiveOp; 12] = [
        CollectiveOp::AllReduce(ReduceOp::Sum),
        CollectiveOp::AllReduce(ReduceOp::Avg),
        CollectiveOp::AllReduce(ReduceOp::Max),
        CollectiveOp::ReduceScatter(ReduceOp::Sum),
        CollectiveOp::ReduceScatter(ReduceOp::Avg),
        CollectiveOp::ReduceScatter(ReduceOp::Max),
        CollectiveOp::AllGather,
        CollectiveOp::ReduceScatterInPlace(ReduceOp::Sum),
        CollectiveOp::ReduceScatterInPlace(ReduceOp::Max),
        CollectiveOp::AllGatherInPlace,
        CollectiveOp::Broadcast,
        CollectiveOp::Barrier,
    ];
}

impl fmt::Display for CollectiveOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectiveOp::AllReduce(op) => write!(f, "all_reduce({op})"),
            CollectiveOp::ReduceScatter(op) => write!(f, "reduce_scatter({op})"),
            CollectiveOp::AllGather => f.write_str("all_gather"),
            CollectiveOp::ReduceScatterInPlace(op) => write!(f, "reduce_scatter_in_place({op})"),
            CollectiveOp::AllGatherInPlace => f.write_str("all_gather_in_place"),
            CollectiveOp::Broadcast => f.write_str("broadcast"),
            CollectiveOp::Barrier => f.write_str("barrier"),
        }
    }
}

/// Lengths checked for every world size: empty, shorter than the world, and lengths that do
/// not divide evenly.
pub const LENGTHS: [usize; 8] = [0, 1, 2, 3, 5, 17, 1000, 65_537];

/// Rank `rank`'s input for a case.
fn input(seed: u64, rank: usize, len: usize, dtype: DType) -> Vec<f64> {
    values(
        &mut Rng::new(seed.wrapping_add(rank as u64 * 7919)),
        len,
        Values::Special,
        dtype,
    )
}

/// The reduction of every rank's inputs, exact, with magnitudes.
fn reduced(inputs: &[Vec<f64>], op: ReduceOp, dtype: DType) -> (Vec<f64>, Vec<f64>) {
    let len = inputs.first().map_or(0, Vec::len);
    let world = inputs.len() as f64;
    (0..len)
        .map(|i| {
            let column = inputs.iter().map(|x| x[i]);
            let mag: f64 = inputs.iter().map(|x| x[i].abs()).sum();
            let v = match op {
                ReduceOp::Sum => column.sum(),
                ReduceOp::Avg => column.sum::<f64>() / world,
                ReduceOp::Max => column.fold(f64::NEG_INFINITY, |a, b| {
                    if a.is_nan() || b.is_nan() {
                        f64::NAN
                    } else {
                        a.max(b)
                    }
                }),
            };
            (
                round_to(dtype, v),
                if op == ReduceOp::Max { 0.0 } else { mag },
            )
        })
        .unzip()
}

/// One rank's part of a collective case; every rank of the group calls it with the same
/// arguments. Returns the values checked.
///
/// # Errors
/// A description of the failed call or mismatch.
pub fn collective_body<B: Backend, C: Collectives<B> + ?Sized>(
    dev: &Device<B>,
    comm: &C,
    op: CollectiveOp,
    dtype: DType,
    len: usize,
    seed: u64,
) -> Result<usize, String> {
    let (rank, world) = (comm.rank(), comm.world_size());
    let inputs: Vec<Vec<f64>> = (0..world).map(|r| input(seed, r, len, dtype)).collect();
    let pad = super::Pad { pre: 2, post: 3 };
    let err = |e: ds_core::Error| e.to_string();
    let fail = |e: super::CaseError| format!("{e:?}");
    let tol = Tolerance::new(dtype, world as f64 + 2.0);
    match op {
        CollectiveOp::AllReduce(rop) => {
            let (mut buf, range) = placed(dev, dtype, &inputs[rank], pad).map_err(fail)?;
            comm.all_reduce(dev, buf.range_mut(range.clone()), rop)
                .map_err(err)?;
            let (want, mag) = reduced(&inputs, rop, dtype);
            let got = super::unpad(dev, &buf, range, "buf").map_err(fail)?;
            compare(&format!("rank {rank}"), &got, &want, &mag, tol)
        }
        CollectiveOp::ReduceScatter(rop) => {
            let part = partition(len, world, rank);
            let (src, range) = placed(dev, dtype, &inputs[rank], pad).map_err(fail)?;
            let (mut out, out_range) =
                placed(dev, dtype, &vec![0.0; part.len()], pad).map_err(fail)?;
            comm.reduce_scatter(dev, src.range(range), out.range_mut(out_range.clone()), rop)
                .map_err(err)?;
            let (want, mag) = reduced(&inputs, rop, dtype);
            let got = super::unpad(dev, &out, out_range, "output").map_err(fail)?;
            compare(
                &format!("rank {rank}"),
                &got,
                &want[part.clone()],
                &mag[part],
                tol,
            )
        }
        CollectiveOp::AllGather => {
            let mine = &inputs[rank][partition(len, world, rank)];
            let (src, range) = placed(dev, dtype, mine, pad).map_err(fail)?;
            let (mut out, out_range) = placed(dev, dtype, &vec![0.0; len], pad).map_err(fail)?;
            comm.all_gather(dev, src.range(range), out.range_mut(out_range.clone()))
                .map_err(err)?;
            let want: Vec<f64> = (0..world)
                .flat_map(|r| inputs[r][partition(len, world, r)].to_vec())
                .collect();
            let got = super::unpad(dev, &out, out_range, "output").map_err(fail)?;
            compare(&format!("rank {rank}"), &got, &want, &[], Tolerance::EXACT)
        }
        CollectiveOp::ReduceScatterInPlace(rop) => {
            let part = partition(len, world, rank);
            let (mut buf, range) = placed(dev, dtype, &inputs[rank], pad).map_err(fail)?;
            comm.reduce_scatter_in_place(dev, buf.range_mut(range.clone()), rop)
                .map_err(err)?;
            let (want, mag) = reduced(&inputs, rop, dtype);
            let got = super::unpad(dev, &buf, range, "buf").map_err(fail)?;
            compare(
                &format!("rank {rank}"),
                &got[part.clone()],
                &want[part.clone()],
                &mag[part],
                tol,
            )
        }
        CollectiveOp::AllGatherInPlace => {
            // This rank's own values in its part, its other values elsewhere (to be replaced).
            let (mut buf, range) = placed(dev, dtype, &inputs[rank], pad).map_err(fail)?;
            comm.all_gather_in_place(dev, buf.range_mut(range.clone()))
                .map_err(err)?;
            let want: Vec<f64> = (0..world)
                .flat_map(|r| inputs[r][partition(len, world, r)].to_vec())
                .collect();
            let got = super::unpad(dev, &buf, range, "buf").map_err(fail)?;
            compare(&format!("rank {rank}"), &got, &want, &[], Tolerance::EXACT)
        }
        CollectiveOp::Broadcast => {
            let root = world - 1;
            let (mut buf, range) = placed(dev, dtype, &inputs[rank], pad).map_err(fail)?;
            comm.broadcast(dev, buf.range_mut(range.clone()), root)
                .map_err(err)?;
            let got = super::unpad(dev, &buf, range, "buf").map_err(fail)?;
            compare(
                &format!("rank {rank}"),
                &got,
                &inputs[root],
                &[],
                Tolerance::EXACT,
            )
        }
        CollectiveOp::Barrier => {
            comm.barrier().map_err(err)?;
            Ok(1)
        }
    }
}

/// Runs a collective case on `world` threads of this process.
///
/// # Errors
/// Every failing rank's message.
pub fn threaded_case<B: Backend>(
    dev: &Device<B>,
    op: CollectiveOp,
    dtype: DType,
    world: usize,
    len: usize,
    seed: u64,
) -> Result<usize, String> {
    let results = run_threaded(world, |comm| {
        collective_body(dev, &comm, op, dtype, len, seed)
    });
    let mut checked = 0;
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(n) => checked += n,
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() {
        Ok(checked)
    } else {
        Err(format!(
            "{op} {dtype} world {world} len {len}: {}",
            failures.join(" | ")
        ))
    }
}

/// The whole sweep of one operation and dtype on threads: worlds 1-4, every length in
/// [`LENGTHS`].
///
/// # Errors
/// The first failing world and length.
pub fn threaded_sweep<B: Backend>(
    dev: &Device<B>,
    op: CollectiveOp,
    dtype: DType,
) -> Result<usize, String> {
    let mut checked = 0;
    for world in 1..=4 {
        for (i, &len) in LENGTHS.iter().enumerate() {
            checked += threaded_case(dev, op, dtype, world, len, 1000 + i as u64)?;
        }
    }
    Ok(checked)
}

/// One communicator's whole sweep: every operation, every dtype in `dtypes`, every length in
/// [`LENGTHS`] (a GPU library's single-rank path, for instance). The number of values checked.
///
/// # Errors
/// The first failing operation, dtype and length.
pub fn communicator_sweep<B: Backend, C: Collectives<B> + ?Sized>(
    dev: &Device<B>,
    comm: &C,
    dtypes: &[DType],
) -> Result<usize, String> {
    let mut checked = 0;
    for op in CollectiveOp::ALL {
        for &dtype in dtypes {
            for (i, &len) in LENGTHS.iter().enumerate() {
                checked += collective_body(dev, comm, op, dtype, len, 100 + i as u64)
                    .map_err(|e| format!("{op} {dtype} len {len}: {e}"))?;
            }
        }
    }
    Ok(checked)
}
