//! Where every parameter lives in the flat buffers, how the buffers split into buckets, and
//! which part of each bucket this rank owns.
//!
//! Parameters are laid end to end in one flat buffer. Consecutive parameters are grouped into
//! buckets of about `reduce_bucket_size` elements (a parameter larger than that is a bucket of
//! its own); a bucket is the unit of gradient communication. With ZeRO (stage 1 and up) every
//! bucket is padded to a multiple of `world * ALIGN` elements and rank r owns the r-th equal
//! slice of *every* bucket: reducing a bucket is then one reduce-scatter that lands exactly on
//! the owners (ZeRO-2's communication volume, Ψ per step for gradients, Ψ for parameters), and
//! the rank's optimizer state is the concatenation of its slices, Ψ/N elements. Without ZeRO a
//! rank owns every bucket whole. Padding elements have zero weights and zero gradients, so the
//! optimizer leaves them at zero.

use crate::model::{ParamSpec, Slot};
use ds_core::collectives::partition;
use std::ops::Range;

/// Buckets are padded to a multiple of this many elements per rank (32 bytes of 16-bit data),
/// so every owned slice starts aligned.
pub const ALIGN: usize = 16;

/// One bucket of the flat buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Its elements in the flat buffer (padding included).
    pub range: Range<usize>,
    /// The parameters in it, by index.
    pub params: Range<usize>,
    /// The elements this rank owns, in the flat buffer.
    pub owned: Range<usize>,
    /// Where the owned elements start in this rank's partition buffers.
    pub local: usize,
}

/// The flat layout of a model's parameters for one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Each parameter's place in the flat buffer.
    pub slots: Vec<Slot>,
    /// The buckets, in parameter order.
    pub buckets: Vec<Bucket>,
    /// The flat buffer's length, padding included.
    pub len: usize,
    /// Elements this rank owns (the length of its partition buffers).
    pub owned_len: usize,
    /// Whether ownership is split over ranks (ZeRO stage 1 and up).
    pub partitioned: bool,
    /// The number of ranks.
    pub world: usize,
    /// This rank.
    pub rank: usize,
    param_bucket: Vec<usize>,
}

impl Layout {
    /// Lays out `params` in buckets of about `bucket_size` elements for `rank` of `world`,
    /// partitioned over ranks or not.
    pub fn new(
        params: &[ParamSpec],
        bucket_size: usize,
        world: usize,
        rank: usize,
        partitioned: bool,
    ) -> Layout {
        let world = world.max(1);
        let unit = if partitioned { world * ALIGN } else { ALIGN };
        let mut slots = Vec::with_capacity(params.len());
        let mut param_bucket = Vec::with_capacity(params.len());
        // (elements, parameters) of each bucket; a bucket ends padded to `unit`.
        let mut raw: Vec<(Range<usize>, Range<usize>)> = Vec::new();
        let pad = |offset: usize, start: usize| offset.next_multiple_of(unit).max(start + unit);
        let (mut start, mut first, mut offset) = (0usize, 0usize, 0usize);
        for (i, p) in params.iter().enumerate() {
            let n = p.numel();
            if i > first && offset - start + n > bucket_size.max(1) {
                let end = pad(offset, start);
                raw.push((start..end, first..i));
                (start, offset, first) = (end, end, i);
            }
            slots.push(Slot { offset, len: n });
            param_bucket.push(raw.len());
            offset += n;
        }
        let end = pad(offset, start);
        raw.push((start..end, first..params.len()));
        offset = end;
        let mut local = 0;
        let buckets = raw
            .into_iter()
            .map(|(range, params)| {
                let owned = if partitioned {
                    let p = partition(range.len(), world, rank);
                    range.start + p.start..range.start + p.end
                } else {
                    range.clone()
                };
                let b = Bucket {
                    range,
                    params,
                    local,
                    owned,
                };
                local += b.owned.len();
                b
            })
            .collect();
        Layout {
            slots,
            buckets,
            len: offset,
            owned_len: local,
            partitioned,
            world,
            rank,
            param_bucket,
        }
    }

    /// The bucket holding parameter `index`.
    pub fn bucket_of(&self, index: usize) -> Option<usize> {
        self.param_bucket.get(index).copied()
    }

    /// The part of parameter `index` this rank owns: its range in the flat buffer and where
    /// that starts in the rank's partition buffers. `None` when it owns none of it.
    pub fn owned_piece(&self, index: usize) -> Option<(Range<usize>, usize)> {
        let slot = self.slots.get(index)?;
        let b = &self.buckets[self.bucket_of(index)?];
        let start = slot.offset.max(b.owned.start);
        let end = (slot.offset + slot.len).min(b.owned.end);
        (start < end).then(|| (start..end, b.local + (start - b.owned.start)))
    }

    /// The number of parameter elements, padding excluded (Ψ).
    pub fn numel(&self) -> usize {
        self.slots.iter().map(|s| s.len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(sizes: &[usize]) -> Vec<ParamSpec> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| ParamSpec::new(format!("p{i}"), &[n]))
            .collect()
    }

    #[test]
    fn unpartitioned_buckets_group_whole_parameters_and_own_everything() {
        let l = Layout::new(&specs(&[10, 20, 100, 5]), 32, 4, 1, false);
        let ranges: Vec<_> = l.buckets.iter().map(|b| b.params.clone()).collect();
        assert_eq!(ranges, [0..2, 2..3, 3..4]);
        for b in &l.buckets {
            assert_eq!(b.owned, b.range);
            assert_eq!(b.range.len() % ALIGN, 0);
        }
        assert_eq!(l.owned_len, l.len);
        assert_eq!(l.slots[2].offset, l.buckets[1].range.start);
        assert_eq!(l.numel(), 135);
    }

    #[test]
    fn partitioned_buckets_split_into_equal_owned_slices() {
        let world = 4;
        let layouts: Vec<_> = (0..world)
            .map(|r| Layout::new(&specs(&[10, 20, 100, 5]), 32, world, r, true))
            .collect();
        let l0 = &layouts[0];
        for (bi, b) in l0.buckets.iter().enumerate() {
            assert_eq!(b.range.len() % (world * ALIGN), 0);
            // The owned slices of all ranks tile the bucket.
            let mut covered = b.range.start;
            for l in &layouts {
                let o = &l.buckets[bi].owned;
                assert_eq!(o.start, covered);
                assert_eq!(o.len(), b.range.len() / world);
                covered = o.end;
            }
            assert_eq!(covered, b.range.end);
        }
        // Every element of every parameter is owned by exactly one rank.
        for i in 0..4 {
            let total: usize = layouts
                .iter()
                .filter_map(|l| l.owned_piece(i))
                .map(|(r, _)| r.len())
                .sum();
            assert_eq!(total, l0.slots[i].len);
        }
        assert_eq!(layouts.iter().map(|l| l.owned_len).sum::<usize>(), l0.len);
    }

    #[test]
    fn an_empty_model_still_has_one_bucket() {
        let l = Layout::new(&[], 10, 2, 0, true);
        assert_eq!(l.buckets.len(), 1);
        assert_eq!(l.numel(), 0);
    }
}
