//! The data movement of the collectives, on host bytes, in rounds of at most `chunk` elements
//! per message so no count overflows MPI's `int`.
//!
//! f32 sums go to `MPI_Allreduce` (MPI's tuned algorithms, in place). Every other reduction
//! (f32 max, and all 16-bit reductions) is a direct reduce-scatter: each rank sends every peer
//! that peer's part of its buffer and reduces the parts it receives itself, widened to f32 in
//! rank order and rounded once, exactly as the threaded collectives do. MPI's own reductions
//! cannot give that: `MPI_MAX` drops NaN (an overflow flag must keep it), and a user-defined
//! 16-bit sum would round to 16 bits at every step of MPI's reduction tree instead of once.
//! All-gathers send each rank's part straight from and into the caller's buffer.

use crate::raw::{RawComm, Requests, Tag};
use ds_core::collectives::{partition, reduce_into};
use ds_core::{DType, ReduceOp, Result};
use std::ops::Range;

/// Element range `round` of a part (relative to the part's start) when parts move in pieces
/// of `chunk` elements.
fn piece(part_len: usize, round: usize, chunk: usize) -> Range<usize> {
    let start = (round * chunk).min(part_len);
    start..(start + chunk).min(part_len)
}

fn bytes(range: Range<usize>, size: usize) -> Range<usize> {
    range.start * size..range.end * size
}

/// How many rounds move the largest part (rank 0's) in pieces of `chunk`.
fn rounds(len: usize, world: usize, chunk: usize) -> usize {
    partition(len, world, 0).len().div_ceil(chunk)
}

/// The buffer split into each rank's part (in rank order), as disjoint mutable slices.
fn parts_mut(buf: &mut [u8], world: usize, size: usize) -> Vec<&mut [u8]> {
    let len = buf.len() / size;
    let mut rest = buf;
    let mut parts = Vec::with_capacity(world);
    for r in 0..world {
        let (head, tail) = rest.split_at_mut(partition(len, world, r).len() * size);
        parts.push(head);
        rest = tail;
    }
    parts
}

/// In-place sum or average of f32 `data` over all ranks with `MPI_Allreduce`.
pub(crate) fn all_reduce_f32_sum(
    comm: &RawComm,
    data: &mut [u8],
    average: bool,
    chunk: usize,
) -> Result<()> {
    comm.all_reduce_sum_f32(data, chunk)?;
    if average {
        let world = comm.size() as f32;
        for v in data.chunks_exact_mut(4) {
            let x = f32::from_le_bytes([v[0], v[1], v[2], v[3]]) / world;
            v.copy_from_slice(&x.to_le_bytes());
        }
    }
    Ok(())
}

/// Receive and result space of the direct reduce-scatter, kept between calls so a training
/// step does not fault in fresh pages every time. Bounded by the chunk size: at most
/// `world * chunk` elements.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    peers: Vec<Vec<u8>>,
    reduced: Vec<u8>,
}

impl Scratch {
    fn fit(&mut self, world: usize, bytes: usize) {
        self.peers.resize_with(world, Vec::new);
        for b in self
            .peers
            .iter_mut()
            .chain(std::iter::once(&mut self.reduced))
        {
            if b.len() < bytes {
                b.resize(bytes, 0);
            }
        }
    }
}

/// Where this rank's part of a reduce-scatter comes from and goes to.
pub(crate) enum Own<'a> {
    /// Read and overwritten in place.
    InPlace(&'a mut [u8]),
    /// Read from the first slice, written to the second.
    Separate(&'a [u8], &'a mut [u8]),
}

/// Reduce-scatter within `buf` (elements of `dtype`): afterwards this rank's part holds the
/// reduction of that part over every rank; the rest of `buf` is unchanged.
pub(crate) fn reduce_scatter_in_place(
    comm: &RawComm,
    buf: &mut [u8],
    dtype: DType,
    op: ReduceOp,
    chunk: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    let (rank, world, size) = (comm.rank(), comm.size(), dtype.size_bytes());
    let mut parts = parts_mut(buf, world, size);
    let own = parts.remove(rank);
    let others: Vec<&[u8]> = parts.into_iter().map(|p| &*p).collect();
    reduce_scatter(comm, &others, Own::InPlace(own), dtype, op, chunk, scratch)
}

/// Direct reduce-scatter: `others` holds every other rank's part of this rank's input, in rank
/// order; `own` is this rank's part, which receives the reduction over all ranks.
pub(crate) fn reduce_scatter(
    comm: &RawComm,
    others: &[&[u8]],
    mut own: Own<'_>,
    dtype: DType,
    op: ReduceOp,
    chunk: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    let (rank, world, size) = (comm.rank(), comm.size(), dtype.size_bytes());
    let own_len = match &own {
        Own::InPlace(b) => b.len() / size,
        Own::Separate(i, _) => i.len() / size,
    };
    let len = others.iter().map(|p| p.len() / size).sum::<usize>() + own_len;
    let rounds = rounds(len, world, chunk);
    scratch.fit(world, own_len.min(chunk) * size);
    let Scratch { peers, reduced } = scratch;
    for round in 0..rounds {
        let my_piece = bytes(piece(own_len, round, chunk), size);
        let n = my_piece.len() / size;
        {
            let mut requests = Requests::new(comm);
            for (peer, slot) in peers.iter_mut().enumerate() {
                if peer != rank {
                    requests.receive(peer, &mut slot[..n * size], dtype, Tag::Data);
                }
            }
            let peers = (0..world).filter(|&p| p != rank);
            for (peer, part) in peers.zip(others) {
                let theirs = piece(part.len() / size, round, chunk);
                requests.send(peer, &part[bytes(theirs, size)], dtype, Tag::Data);
            }
            requests.wait_all()?;
        }
        {
            let own_in: &[u8] = match &own {
                Own::InPlace(b) => b,
                Own::Separate(i, _) => i,
            };
            let contributions: Vec<&[u8]> = (0..world)
                .map(|r| {
                    if r == rank {
                        &own_in[my_piece.clone()]
                    } else {
                        &peers[r][..n * size]
                    }
                })
                .collect();
            reduce_into(dtype, op, &contributions, 0..n, &mut reduced[..n * size])?;
        }
        let out = match &mut own {
            Own::InPlace(b) => &mut b[my_piece],
            Own::Separate(_, o) => &mut o[my_piece],
        };
        out.copy_from_slice(&reduced[..n * size]);
    }
    Ok(())
}

/// All-gather within `buf`: each rank's part is its contribution; afterwards every rank's
/// `buf` holds all parts. Parts travel straight between the ranks' buffers.
pub(crate) fn all_gather_in_place(
    comm: &RawComm,
    buf: &mut [u8],
    dtype: DType,
    chunk: usize,
) -> Result<()> {
    let (rank, world, size) = (comm.rank(), comm.size(), dtype.size_bytes());
    let len = buf.len() / size;
    let rounds = rounds(len, world, chunk);
    let mut parts = parts_mut(buf, world, size);
    for round in 0..rounds {
        let mut requests = Requests::new(comm);
        let mut own: &[u8] = &[];
        for (peer, part) in parts.iter_mut().enumerate() {
            let range = bytes(piece(part.len() / size, round, chunk), size);
            if peer == rank {
                own = &part[range];
            } else {
                requests.receive(peer, &mut part[range], dtype, Tag::Data);
            }
        }
        for peer in (0..world).filter(|&p| p != rank) {
            requests.send(peer, own, dtype, Tag::Data);
        }
        requests.wait_all()?;
    }
    Ok(())
}

/// Reduce (with `op`) every rank's `data` and leave the result on every rank.
pub(crate) fn all_reduce(
    comm: &RawComm,
    data: &mut [u8],
    dtype: DType,
    op: ReduceOp,
    chunk: usize,
    scratch: &mut Scratch,
) -> Result<()> {
    match (dtype, op) {
        (DType::F32, ReduceOp::Sum) => all_reduce_f32_sum(comm, data, false, chunk),
        (DType::F32, ReduceOp::Avg) => all_reduce_f32_sum(comm, data, true, chunk),
        _ => {
            reduce_scatter_in_place(comm, data, dtype, op, chunk, scratch)?;
            all_gather_in_place(comm, data, dtype, chunk)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_each_part_in_chunk_sized_rounds() {
        for (len, world, chunk) in [(10usize, 3usize, 2usize), (65_537, 4, 1000), (5, 4, 7)] {
            let n = rounds(len, world, chunk);
            for r in 0..world {
                let part = partition(len, world, r).len();
                let mut next = 0;
                for round in 0..n {
                    let p = piece(part, round, chunk);
                    assert_eq!(p.start, next);
                    assert!(p.len() <= chunk);
                    next = p.end;
                }
                assert_eq!(next, part, "len {len} world {world} rank {r}");
            }
        }
        assert_eq!(rounds(0, 3, 5), 0);
    }

    #[test]
    fn parts_split_the_buffer_like_partition() {
        let mut buf: Vec<u8> = (0..14).collect();
        let parts = parts_mut(&mut buf, 3, 2);
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        assert_eq!(lens, vec![6, 4, 4]);
        assert_eq!(parts[1][0], 6);
    }
}
