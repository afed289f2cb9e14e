//! A rank-sharded, deterministic, resumable data loader.
//!
//! Every epoch visits the dataset in an order shuffled from the seed and the epoch number.
//! Each optimizer step consumes `train_batch_size` samples of that order: micro-step `k` of the
//! step takes the next `micro * world` of them, and rank `r` reads the `r`-th run of `micro`.
//! A new epoch starts when fewer than `train_batch_size` samples are left before an optimizer
//! step. So the samples of every optimizer step are the same whatever the world size,
//! micro-batch and accumulation (what makes ZeRO stages, world sizes and accumulation
//! comparable step for step), and the position (epoch, next index) is all a checkpoint needs
//! to resume exactly.

pub use ds_model::data::{Dataset, splitmix};
use serde_json::{Value, json};

/// State a checkpoint saves and restores beside the engine's (the data loader's position).
pub trait Resumable {
    /// The state, as JSON.
    fn state(&self) -> Value;
    /// Whether `state` can be restored here, without changing anything.
    ///
    /// # Errors
    /// A description of what does not fit.
    fn check(&self, state: &Value) -> Result<(), String>;
    /// Restores a saved state.
    ///
    /// # Errors
    /// As [`Resumable::check`]; nothing changes then.
    fn restore(&mut self, state: &Value) -> Result<(), String>;
}

/// Where a loader is in its stream of samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The current epoch.
    pub epoch: u64,
    /// The next index into the epoch's order.
    pub next: usize,
}

/// Yields this rank's micro-batches.
#[derive(Debug, Clone)]
pub struct DataLoader<D: Dataset> {
    data: D,
    micro: usize,
    accumulation: usize,
    rank: usize,
    world: usize,
    seed: u64,
    shuffle: bool,
    order: Vec<usize>,
    pos: Position,
}

impl<D: Dataset> DataLoader<D> {
    /// A loader of `micro`-sample batches for `rank` of `world`, with `accumulation`
    /// micro-batches per optimizer step.
    pub fn new(
        data: D,
        micro: usize,
        accumulation: usize,
        rank: usize,
        world: usize,
        seed: u64,
        shuffle: bool,
    ) -> Self {
        let mut l = DataLoader {
            data,
            micro: micro.max(1),
            accumulation: accumulation.max(1),
            rank,
            world: world.max(1),
            seed,
            shuffle,
            order: Vec::new(),
            pos: Position { epoch: 0, next: 0 },
        };
        l.reorder();
        l
    }

    fn reorder(&mut self) {
        self.order = (0..self.data.len()).collect();
        if self.shuffle {
            let mut state = self.seed ^ self.pos.epoch.wrapping_mul(0xd1b5_4a32_d192_ed03);
            for i in (1..self.order.len()).rev() {
                let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
    }

    /// The next micro-batch of this rank; a new epoch starts when fewer than a global batch
    /// of samples is left before an optimizer step. `None` only for a dataset smaller than one
    /// global batch (`micro * accumulation * world`).
    pub fn next_batch(&mut self) -> Option<Vec<D::Item>> {
        let stride = self.micro * self.world;
        let step = stride * self.accumulation;
        if self.order.len() < step {
            return None;
        }
        let at_step_start = (self.pos.next / stride).is_multiple_of(self.accumulation);
        // The second test only fires after a seek to a position this loader would not reach
        // itself; it keeps the read in bounds.
        if (at_step_start && self.pos.next + step > self.order.len())
            || self.pos.next + stride > self.order.len()
        {
            self.pos = Position {
                epoch: self.pos.epoch + 1,
                next: 0,
            };
            self.reorder();
        }
        let start = self.pos.next + self.rank * self.micro;
        let batch = self.order[start..start + self.micro]
            .iter()
            .map(|&i| self.data.get(i))
            .collect();
        self.pos.next += stride;
        Some(batch)
    }

    /// Where the loader is.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Moves the loader to a saved position.
    ///
    /// # Errors
    /// A position past the dataset or not at a micro-batch boundary of this loader (nothing
    /// changes then).
    pub fn seek(&mut self, pos: Position) -> Result<(), String> {
        let stride = self.micro * self.world;
        if pos.next > self.data.len() || !pos.next.is_multiple_of(stride) {
            return Err(format!(
                "position {} is not a micro-batch boundary of this loader ({stride} samples per micro-step, {} samples)",
                pos.next,
                self.data.len()
            ));
        }
        let epoch_changed = pos.epoch != self.pos.epoch;
        self.pos = pos;
        if epoch_changed {
            self.reorder();
        }
        Ok(())
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.data
    }
}

impl<D: Dataset> Resumable for DataLoader<D> {
    fn state(&self) -> Value {
        json!({"epoch": self.pos.epoch, "next": self.pos.next, "seed": self.seed, "len": self.data.len()})
    }

    fn check(&self, state: &Value) -> Result<(), String> {
        self.saved_position(state).map(|_| ())
    }

    fn restore(&mut self, state: &Value) -> Result<(), String> {
        let pos = self.saved_position(state)?;
        self.seek(pos)
    }
}

impl<D: Dataset> DataLoader<D> {
    /// The position in `state`, if it fits this loader: same seed and dataset, and at one of
    /// its optimizer-step boundaries (so the global batch size must not have changed).
    fn saved_position(&self, state: &Value) -> Result<Position, String> {
        let field = |k: &str| {
            state
                .get(k)
                .and_then(Value::as_u64)
                .ok_or_else(|| format!("the data loader state has no number `{k}`"))
        };
        let (epoch, next, seed, len) = (
            field("epoch")?,
            field("next")?,
            field("seed")?,
            field("len")?,
        );
        if seed != self.seed || len != self.data.len() as u64 {
            return Err(format!(
                "the data loader was saved with seed {seed} over {len} samples; this one has seed {} over {}",
                self.seed,
                self.data.len()
            ));
        }
        let step = (self.micro * self.world * self.accumulation) as u64;
        if next > len || next % step != 0 {
            return Err(format!(
                "the saved position {next} is not an optimizer-step boundary of this loader ({step} samples per \
                 step): resume with the same train_batch_size"
            ));
        }
        Ok(Position {
            epoch,
            next: next as usize,
        })
    }
}

impl<D: Dataset> Iterator for DataLoader<D> {
    type Item = Vec<D::Item>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_batch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Range(usize);
    impl Dataset for Range {
        type Item = usize;
        fn len(&self) -> usize {
            self.0
        }
        fn get(&self, i: usize) -> usize {
            i
        }
    }

    #[test]
    fn ranks_split_each_global_batch_and_the_union_is_world_independent() {
        // One rank with micro 4 sees the same samples per step as two ranks with micro 2.
        let mut one = DataLoader::new(Range(20), 4, 1, 0, 1, 7, true);
        let mut two: Vec<_> = (0..2)
            .map(|r| DataLoader::new(Range(20), 2, 1, r, 2, 7, true))
            .collect();
        for _ in 0..12 {
            let a = one.next_batch().expect("batch");
            let mut b = two[0].next_batch().expect("batch");
            b.extend(two[1].next_batch().expect("batch"));
            assert_eq!(a, b);
        }
    }

    #[test]
    fn seek_resumes_exactly() {
        let mut a = DataLoader::new(Range(10), 3, 1, 0, 1, 3, true);
        for _ in 0..5 {
            a.next_batch();
        }
        let pos = a.position();
        let rest: Vec<_> = (0..6).map(|_| a.next_batch()).collect();
        let mut b = DataLoader::new(Range(10), 3, 1, 0, 1, 3, true);
        b.seek(pos).expect("a position this loader reached");
        assert!(
            b.seek(Position { epoch: 0, next: 4 }).is_err(),
            "not a micro-batch boundary"
        );
        assert!(
            b.seek(Position { epoch: 0, next: 12 }).is_err(),
            "past the end"
        );
        let again: Vec<_> = (0..6).map(|_| b.next_batch()).collect();
        assert_eq!(rest, again);
    }

    #[test]
    fn accumulation_sees_the_same_samples_per_step_as_a_bigger_micro_batch() {
        // 20 samples, 8 per optimizer step: epochs restart after two steps either way.
        let mut big = DataLoader::new(Range(20), 8, 1, 0, 1, 5, true);
        let mut acc = DataLoader::new(Range(20), 2, 4, 0, 1, 5, true);
        for _ in 0..7 {
            let a = big.next_batch().expect("batch");
            let b: Vec<usize> = (0..4)
                .flat_map(|_| acc.next_batch().expect("batch"))
                .collect();
            assert_eq!(a, b);
        }
        assert_eq!(big.position(), Position { epoch: 3, next: 8 });
    }

    #[test]
    fn restore_refuses_a_position_off_this_loaders_steps() {
        // Saved at 48 of 50 with 16 per step; resumed with 10 per step.
        let mut a = DataLoader::new(Range(50), 8, 2, 0, 1, 3, true);
        for _ in 0..6 {
            a.next_batch();
        }
        let mut b = DataLoader::new(Range(50), 5, 2, 0, 1, 3, true);
        let err = b.restore(&a.state()).expect_err("refused");
        assert!(err.contains("same train_batch_size"), "{err}");
        assert_eq!(b.position(), Position { epoch: 0, next: 0 });
        for _ in 0..20 {
            b.next_batch().expect("never reads past the end");
        }
    }

    #[test]
    fn restore_refuses_a_different_dataset() {
        let a = DataLoader::new(Range(10), 2, 1, 0, 1, 3, true);
        let mut b = DataLoader::new(Range(12), 2, 1, 0, 1, 3, true);
        assert!(b.restore(&a.state()).expect_err("refused").contains("12"));
    }

    #[test]
    fn too_small_datasets_yield_nothing() {
        let mut l = DataLoader::new(Range(3), 2, 1, 0, 2, 0, false);
        assert!(l.next_batch().is_none());
    }
}
