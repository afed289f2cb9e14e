//! Element types a buffer can hold.
//!
//! Floating-point storage is f32, f16 or bf16, and every kernel computes in f32 (or wider)
//! whatever it stores, so mixed precision changes memory traffic, not arithmetic.
//! `I32` carries token ids and labels; `U8` is a byte flag type (masks, found-inf flags).

use std::fmt;
use std::str::FromStr;

/// The element type of a device buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16: the top half of an f32.
    BF16,
    /// Signed 32-bit integers: token ids, class labels.
    I32,
    /// Unsigned bytes: flags and masks.
    U8,
}

impl DType {
    /// Every dtype, in display order.
    pub const ALL: [DType; 5] = [DType::F32, DType::F16, DType::BF16, DType::I32, DType::U8];
    /// The floating-point storage types kernels accept.
    pub const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

    /// Bytes per element.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// Whether this is a floating-point storage type.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// Whether this is a 16-bit floating-point type.
    pub const fn is_half(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }

    /// The lower-case name used in configs and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }

    /// Machine epsilon (distance from 1 to the next value) of a float type; 0 for integers.
    pub const fn epsilon(self) -> f64 {
        match self {
            DType::F32 => f32::EPSILON as f64,
            DType::F16 => 0.000_976_562_5,
            DType::BF16 => 0.007_812_5,
            DType::I32 | DType::U8 => 0.0,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s.to_ascii_lowercase())
            .ok_or_else(|| format!("unknown dtype `{s}`; expected one of f32, f16, bf16, i32, u8"))
    }
}

/// A Rust type that is the host-side image of a [`DType`].
///
/// Implemented for `f32`, [`half::f16`], [`half::bf16`], `i32` and `u8`; `Pod` makes the
/// byte views used by upload and download safe.
pub trait Element: bytemuck::Pod + Send + Sync + 'static {
    /// The dtype this Rust type stores.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for half::bf16 {
    const DTYPE: DType = DType::BF16;
}
impl Element for i32 {
    const DTYPE: DType = DType::I32;
}
impl Element for u8 {
    const DTYPE: DType = DType::U8;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sizes_match_rust_types() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>(), Ok(d));
        }
        assert_eq!(DType::F32.size_bytes(), size_of::<f32>());
        assert_eq!(DType::F16.size_bytes(), size_of::<half::f16>());
        assert_eq!(DType::BF16.size_bytes(), size_of::<half::bf16>());
        assert_eq!(DType::I32.size_bytes(), size_of::<i32>());
        assert_eq!(DType::U8.size_bytes(), 1);
        assert!("f64".parse::<DType>().is_err());
    }

    #[test]
    fn epsilons_are_the_formats_unit_roundoff_times_two() {
        assert_eq!(DType::F16.epsilon(), f64::from(half::f16::EPSILON.to_f32()));
        assert_eq!(
            DType::BF16.epsilon(),
            f64::from(half::bf16::EPSILON.to_f32())
        );
    }
}
