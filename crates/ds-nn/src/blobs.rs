//! Gaussian blobs: a small labelled dataset, deterministic in its seed, for the MLP classifier
//! in examples, tests and backend checks.

use ds_model::{Dataset, splitmix};

/// One labelled sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Features.
    pub x: Vec<f32>,
    /// Class.
    pub label: i32,
}

/// A uniform value in [-1, 1) from a hash state.
fn uniform(state: &mut u64) -> f32 {
    (splitmix(state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// `classes` Gaussian-ish blobs in `dim` dimensions, `len` samples, deterministic in `seed`.
#[derive(Debug, Clone)]
pub struct Blobs {
    len: usize,
    dim: usize,
    classes: usize,
    seed: u64,
    centers: Vec<f32>,
}

impl Blobs {
    /// A dataset of `len` samples.
    pub fn new(len: usize, dim: usize, classes: usize, seed: u64) -> Self {
        let mut s = seed ^ 0x5eed;
        let centers = (0..dim * classes.max(1))
            .map(|_| 2.0 * uniform(&mut s))
            .collect();
        Blobs {
            len,
            dim,
            classes: classes.max(1),
            seed,
            centers,
        }
    }
}

impl Dataset for Blobs {
    type Item = Sample;
    fn len(&self) -> usize {
        self.len
    }
    fn get(&self, index: usize) -> Sample {
        let mut s = self.seed.wrapping_mul(31).wrapping_add(index as u64);
        let label = (splitmix(&mut s) % self.classes as u64) as usize;
        let c = &self.centers[label * self.dim..(label + 1) * self.dim];
        let x = c.iter().map(|&m| m + 0.7 * uniform(&mut s)).collect();
        Sample {
            x,
            label: label as i32,
        }
    }
}
