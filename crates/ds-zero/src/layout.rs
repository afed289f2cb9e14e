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
//!
//! At ZeRO stage 3 the buckets follow the model's groups instead: one bucket per group (the
//! unit gathered before the group runs and whose gradients are reduce-scattered when backward
//! finishes it), plus one bucket of *persistent* parameters first, those smaller than
//! `stage3_param_persistence_threshold` (up to `stage3_model_persistence_threshold` of them in
//! all), which every rank keeps whole. Their gradients and optimizer state are partitioned
//! like every other bucket's.

use crate::model::{ParamSpec, ParamTable, Slot};
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
    /// The parameters in it, by index, in order.
    pub params: Vec<usize>,
    /// The elements this rank owns, in the flat buffer.
    pub owned: Range<usize>,
    /// Where the owned elements start in this rank's partition buffers.
    pub local: usize,
}

/// Which parameters stay whole on every rank at stage 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    /// A parameter with fewer elements than this persists (`stage3_param_persistence_threshold`).
    pub param_threshold: usize,
    /// At most this many elements persist in all, in parameter order
    /// (`stage3_model_persistence_threshold`).
    pub model_threshold: usize,
}

/// The stage-3 facts of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBuckets {
    /// Each model group's bucket, `None` for a group whose parameters all persist.
    pub group_bucket: Vec<Option<usize>>,
    /// The bucket of persistent parameters, when there are any.
    pub persistent: Option<usize>,
    /// Whether each parameter persists.
    pub persists: Vec<bool>,
}

/// The flat layout of a model's parameters for one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Each parameter's place in the flat buffer.
    pub slots: Vec<Slot>,
    /// The buckets, in parameter order (at stage 3: the persistent bucket, then group order).
    pub buckets: Vec<Bucket>,
    /// The flat buffer's length, padding included.
    pub len: usize,
    /// Elements this rank owns (the length of its partition buffers).
    pub owned_len: usize,
    /// Whether ownership is split over ranks (ZeRO stage 1 and up).
    pub partitioned: bool,
    /// The stage-3 grouping, when the buckets follow the model's groups.
    pub groups: Option<GroupBuckets>,
    /// The number of ranks.
    pub world: usize,
    /// This rank.
    pub rank: usize,
    param_bucket: Vec<usize>,
}

impl Layout {
    /// Lays out `params` in buckets of about `bucket_size` elements for `rank` of `world`,
    /// partitioned over ranks or not (ZeRO stages 0-2).
    pub fn new(
        params: &[ParamSpec],
        bucket_size: usize,
        world: usize,
        rank: usize,
        partitioned: bool,
    ) -> Layout {
        let mut plan: Vec<Vec<usize>> = vec![Vec::new()];
        let mut filled = 0usize;
        for (i, p) in params.iter().enumerate() {
            let n = p.numel();
            let last = plan.len() - 1;
            if !plan[last].is_empty() && filled + n > bucket_size.max(1) {
                plan.push(vec![i]);
                filled = n;
            } else {
                plan[last].push(i);
                filled += n;
            }
        }
        Self::from_plan(params, &plan, world, rank, partitioned, None)
    }

    /// The stage-3 layout of `table`: a bucket of persistent parameters, then one bucket per
    /// group of its other parameters, every bucket partitioned over `world` ranks.
    pub fn stage3(
        table: &ParamTable,
        persistence: Persistence,
        world: usize,
        rank: usize,
    ) -> Layout {
        let specs = table.specs();
        let mut persisted = 0usize;
        let persists: Vec<bool> = specs
            .iter()
            .map(|s| {
                let n = s.numel();
                let keep = n < persistence.param_threshold
                    && persisted.saturating_add(n) <= persistence.model_threshold;
                if keep {
                    persisted += n;
                }
                keep
            })
            .collect();
        let mut plan: Vec<Vec<usize>> = Vec::new();
        let persistent: Vec<usize> = (0..specs.len()).filter(|&i| persists[i]).collect();
        let persistent_bucket = (!persistent.is_empty()).then(|| {
            plan.push(persistent);
            0
        });
        let group_bucket = table
            .groups()
            .iter()
            .map(|g| {
                let rest: Vec<usize> = g.params.clone().filter(|&i| !persists[i]).collect();
                (!rest.is_empty()).then(|| {
                    plan.push(rest);
                    plan.len() - 1
                })
            })
            .collect();
        if plan.is_empty() {
            plan.push(Vec::new());
        }
        let groups = GroupBuckets {
            group_bucket,
            persistent: persistent_bucket,
            persists,
        };
        Self::from_plan(specs, &plan, world, rank, true, Some(groups))
    }

    /// Lays out the buckets of `plan` (parameter indices per bucket) end to end, each padded.
    fn from_plan(
        params: &[ParamSpec],
        plan: &[Vec<usize>],
        world: usize,
        rank: usize,
        partitioned: bool,
        groups: Option<GroupBuckets>,
    ) -> Layout {
        let world = world.max(1);
        let unit = if partitioned { world * ALIGN } else { ALIGN };
        let mut slots = vec![Slot { offset: 0, len: 0 }; params.len()];
        let mut param_bucket = vec![0; params.len()];
        let (mut offset, mut local) = (0usize, 0usize);
        let mut buckets = Vec::with_capacity(plan.len());
        for (bi, members) in plan.iter().enumerate() {
            let start = offset;
            for &i in members {
                let n = params[i].numel();
                slots[i] = Slot { offset, len: n };
                param_bucket[i] = bi;
                offset += n;
            }
            // Every bucket is a whole number of units, and at least one.
            let end = offset.next_multiple_of(unit).max(start + unit);
            offset = end;
            let range = start..end;
            let owned = if partitioned {
                let p = partition(range.len(), world, rank);
                range.start + p.start..range.start + p.end
            } else {
                range.clone()
            };
            let b = Bucket {
                range,
                params: members.clone(),
                owned,
                local,
            };
            local += b.owned.len();
            buckets.push(b);
        }
        Layout {
            slots,
            buckets,
            len: offset,
            owned_len: local,
            partitioned,
            groups,
            world,
            rank,
            param_bucket,
        }
    }

    /// Stage 3's bucket of persistent parameters, when there is one.
    pub fn persistent_bucket(&self) -> Option<&Bucket> {
        let b = self.groups.as_ref()?.persistent?;
        self.buckets.get(b)
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
        let members: Vec<_> = l.buckets.iter().map(|b| b.params.clone()).collect();
        assert_eq!(members, [vec![0, 1], vec![2], vec![3]]);
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
    fn stage3_buckets_follow_groups_after_the_persistent_parameters() {
        use crate::model::ParamGroup;
        let table = ParamTable::new(
            specs(&[100, 5, 200, 3, 50]),
            vec![
                ParamGroup::new("a", 0..2),
                ParamGroup::new("b", 2..4),
                ParamGroup::new("c", 4..5),
            ],
        )
        .expect("table");
        let persistence = Persistence {
            param_threshold: 60,
            model_threshold: usize::MAX,
        };
        let l = Layout::stage3(&table, persistence, 2, 1);
        let g = l.groups.as_ref().expect("stage 3");
        assert_eq!(g.persists, [false, true, false, true, true]);
        assert_eq!(g.persistent, Some(0));
        assert_eq!(g.group_bucket, [Some(1), Some(2), None]);
        let members: Vec<_> = l.buckets.iter().map(|b| b.params.clone()).collect();
        assert_eq!(members, [vec![1, 3, 4], vec![0], vec![2]]);
        assert_eq!(l.bucket_of(4), Some(0));
        for b in &l.buckets {
            assert_eq!(b.range.len() % (2 * ALIGN), 0);
            assert_eq!(b.owned.len(), b.range.len() / 2);
        }
        // The model threshold caps how much persists, in parameter order.
        let capped = Persistence {
            param_threshold: 60,
            model_threshold: 8,
        };
        let l = Layout::stage3(&table, capped, 2, 0);
        let g = l.groups.as_ref().expect("stage 3");
        assert_eq!(g.persists, [false, true, false, true, false]);
        assert_eq!(g.group_bucket, [Some(1), Some(2), Some(3)]);
    }

    #[test]
    fn an_empty_model_still_has_one_bucket() {
        let l = Layout::new(&[], 10, 2, 0, true);
        assert_eq!(l.buckets.len(), 1);
        assert_eq!(l.numel(), 0);
    }
}
