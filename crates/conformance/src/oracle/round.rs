//! Rounding an exact (f64) value to a storage format, written from the format's definition so
//! it shares nothing with the conversions under test: find the value's binade, scale to an
//! integer number of quanta, round half to even, scale back, overflow to infinity.

use ds_core::DType;

/// `x` rounded to nearest-even in `dtype` (and returned as f64). Integers pass through.
pub fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::F32 => f64::from(x as f32),
        // binary16: 11 significant bits, smallest normal exponent -14, largest finite 65504.
        DType::F16 => round_format(x, 11, -14, 65504.0),
        // bfloat16: 8 significant bits, f32's exponent range, largest finite (2 - 2^-7) 2^127.
        DType::BF16 => round_format(x, 8, -126, (2.0 - 2f64.powi(-7)) * 2f64.powi(127)),
        DType::I32 | DType::U8 => x,
    }
}

fn round_format(x: f64, precision: i32, min_exp: i32, max_finite: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    // floor(log2(a)) exactly, from the bits (a is a normal f64 in every test range).
    let exp = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let quantum = 2f64.powi(exp.max(min_exp) - (precision - 1));
    let scaled = a / quantum;
    let floor = scaled.floor();
    let rest = scaled - floor;
    let rounded = if rest > 0.5 || (rest == 0.5 && floor % 2.0 != 0.0) {
        floor + 1.0
    } else {
        floor
    };
    let y = rounded * quantum;
    let y = if y > max_finite { f64::INFINITY } else { y };
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn agrees_with_known_values() {
        assert_eq!(round_to(DType::F16, 65504.0), 65504.0);
        assert_eq!(round_to(DType::F16, 65519.99), 65504.0);
        assert_eq!(round_to(DType::F16, 65520.0), f64::INFINITY);
        assert_eq!(round_to(DType::F16, 2f64.powi(-24)), 2f64.powi(-24));
        assert_eq!(round_to(DType::F16, 2f64.powi(-26)), 0.0);
        assert!(round_to(DType::F16, -2f64.powi(-26)).is_sign_negative());
        assert_eq!(round_to(DType::BF16, 1.0 + 2f64.powi(-8)), 1.0);
        assert_eq!(
            round_to(DType::BF16, 1.0 + 3.0 * 2f64.powi(-8)),
            1.0 + 2f64.powi(-6)
        );
        // Cross-check against the half crate on a sweep of f32 bit patterns.
        for bits in (0u32..0x7f80_0000).step_by(0x1357) {
            let x = f32::from_bits(bits);
            assert_eq!(
                round_to(DType::F16, f64::from(x)),
                f64::from(f16::from_f32(x).to_f32()),
                "{x:e}"
            );
            assert_eq!(
                round_to(DType::BF16, f64::from(x)),
                f64::from(bf16::from_f32(x).to_f32()),
                "{x:e}"
            );
        }
    }
}
