//! Sums over independent f32 lanes. A single running sum is a serial chain that LLVM must keep
//! in order, so such a loop compiles to scalar code; `L` partial sums let it use whole vectors
//! and run at the vector units' throughput rather than one add's latency. Callers pick `L` to
//! fill their registers (16: one AVX-512 register or two AVX2; 32: two or four) and call from
//! inside a `vectorized!` function, so the lanes compile at that function's width. (The
//! attention's row maximum, exponential sum and dot product fold their lanes the same way
//! with other operations; see `nn::attention`.)

/// Sum of `f(x)` over `L` f32 lanes, widened to f64 at the end (the tail past the last whole
/// group of `L` is added in f64 too).
#[inline(always)]
pub(crate) fn lane_sum<const L: usize>(x: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0f32; L];
    let chunks = x.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    let mut total: f64 = lanes.iter().map(|&l| f64::from(l)).sum();
    for &v in rest {
        total += f64::from(f(v));
    }
    total
}

#[cfg(test)]
mod tests {
    use super::lane_sum;

    #[test]
    fn lanes_and_tail_both_count() {
        // 37 values: two groups of 16 and a tail of 5; squares 1..=37 sum to 37*38*75/6.
        let x: Vec<f32> = (1..=37).map(|v| v as f32).collect();
        assert_eq!(lane_sum::<16>(&x, |v| v), 703.0);
        assert_eq!(lane_sum::<16>(&x, |v| v * v), 17575.0);
        assert_eq!(lane_sum::<32>(&x[..3], |v| v), 6.0);
        assert_eq!(lane_sum::<32>(&[], |v| v), 0.0);
    }
}
