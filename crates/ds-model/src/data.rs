//! What a data loader reads from, and the generator datasets and shuffles use.

/// Samples a loader can read by index.
pub trait Dataset {
    /// One sample.
    type Item: Clone;
    /// The number of samples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Sample `index` (`index < len()`).
    fn get(&self, index: usize) -> Self::Item;
}

/// SplitMix64: a small, fast, well-mixed generator for shuffles and synthetic data.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
