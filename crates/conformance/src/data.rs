//! Inputs for the cases: sizes that stress boundaries, and values that include the special
//! cases floating point gets wrong (signed zeros, subnormals, infinities, NaN, extremes).
//!
//! Values are generated as f64, rounded to the storage dtype on the host (round-to-nearest-
//! even, [`crate::oracle::round_to`]), and the oracle sees exactly the stored values.

use crate::oracle::round_to;
use ds_core::DType;
use proptest::prelude::*;

/// A deterministic generator (SplitMix64), seeded per case by proptest.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Which values a case draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Normal(0, 1).
    Normal,
    /// Normal values with signed zeros and subnormals mixed in (finite only).
    Tiny,
    /// Normal values with zeros, subnormals, infinities and NaN mixed in.
    Special,
    /// As `Special`, plus the extremes of the format (single-operation kernels only).
    Extreme,
    /// Small integers, whose sums are exact in f32.
    Integers,
}

/// Draws `n` values of `kind`, rounded to `dtype` storage.
pub fn values(rng: &mut Rng, n: usize, kind: Values, dtype: DType) -> Vec<f64> {
    let sub = match dtype {
        DType::F16 => 2f64.powi(-20),
        _ => 1e-40,
    };
    let max = match dtype {
        DType::F16 => 65504.0,
        DType::BF16 => 3.38e38,
        _ => f64::from(f32::MAX),
    };
    (0..n)
        .map(|_| {
            let normal = rng.normal();
            let special = rng.below(12);
            let v = match kind {
                Values::Normal => normal,
                Values::Integers => (rng.below(17) as f64) - 8.0,
                Values::Tiny => match special {
                    0 => 0.0,
                    1 => -0.0,
                    2 => sub * (1.0 + rng.uniform()),
                    3 => -sub * (1.0 + rng.uniform()),
                    _ => normal,
                },
                Values::Special | Values::Extreme => match special {
                    0 => 0.0,
                    1 => -0.0,
                    2 => sub,
                    3 => f64::INFINITY,
                    4 => f64::NEG_INFINITY,
                    5 => f64::NAN,
                    6 if kind == Values::Extreme => {
                        max * if rng.below(2) == 0 { 1.0 } else { -1.0 }
                    }
                    7 if kind == Values::Extreme => normal * 1e6,
                    _ => normal,
                },
            };
            round_to(dtype, v)
        })
        .collect()
}

/// Sizes that stress boundaries: empty, one, primes, powers of two and their neighbours,
/// lengths past a parallel chunk or GPU workgroup grid, and one large enough for the
/// large-buffer paths (streaming stores).
pub fn sizes() -> impl Strategy<Value = usize> {
    prop_oneof![
        2 => Just(0usize),
        2 => Just(1usize),
        4 => prop::sample::select(vec![2usize, 3, 5, 7, 13, 31, 127, 251, 1021, 4093]),
        4 => (1u32..13).prop_flat_map(|k| prop::sample::select(vec![(1usize << k) - 1, 1 << k, (1 << k) + 1])),
        4 => 2usize..600,
        2 => prop::sample::select(vec![65_535usize, 65_537, 131_073, 300_007]),
        // Past 8 MiB of f16 or f32: the size where backends switch to streaming stores.
        1 => Just(4_194_319usize),
    ]
}

/// Small sizes for shapes whose cost grows with the product of dimensions.
pub fn dims() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(1usize),
        3 => 1usize..9,
        2 => prop::sample::select(vec![15usize, 16, 17, 31, 33, 64, 65]),
    ]
}
