//! Positions grouped by id: how GPU backends make embedding gradients deterministic.
//!
//! Summing `dout` rows into `dtable[ids[i]]` with atomics would make the result depend on
//! scheduling. Grouping the positions of each id (in increasing order) lets one worker per
//! distinct id add its rows in position order, which is the CPU backend's order.

/// The positions of every valid id, grouped by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdGroups {
    /// Positions `i` with a valid id, sorted by (id, position).
    pub positions: Vec<u32>,
    /// `starts[k]..starts[k + 1]` are the positions of `ids[k]`; one longer than `ids`.
    pub starts: Vec<u32>,
    /// The distinct valid ids, increasing.
    pub ids: Vec<u32>,
}

impl IdGroups {
    /// Groups the positions of `ids` whose value lies in `0..vocab` (others are skipped: the
    /// lookup gave them NaN rows, and they have no table row to receive a gradient).
    pub fn new(ids: &[i32], vocab: usize) -> Self {
        let mut order: Vec<(u32, u32)> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, &id)| {
                usize::try_from(id)
                    .ok()
                    .filter(|&r| r < vocab)
                    .map(|r| (r as u32, i as u32))
            })
            .collect();
        order.sort_unstable();
        let mut groups = IdGroups::default();
        for (k, &(id, _)) in order.iter().enumerate() {
            if groups.ids.last() != Some(&id) {
                groups.ids.push(id);
                groups.starts.push(k as u32);
            }
        }
        groups.starts.push(order.len() as u32);
        groups.positions = order.iter().map(|&(_, i)| i).collect();
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::IdGroups;

    #[test]
    fn positions_are_grouped_by_id_in_order_and_invalid_ids_skipped() {
        let g = IdGroups::new(&[3, 1, 3, -1, 7, 1, 3], 5);
        assert_eq!(g.ids, [1, 3]);
        assert_eq!(g.starts, [0, 2, 5]);
        assert_eq!(g.positions, [1, 5, 0, 2, 6]);
        let empty = IdGroups::new(&[9, -2], 5);
        assert!(empty.ids.is_empty());
        assert_eq!(empty.starts, [0]);
    }
}
