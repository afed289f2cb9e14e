//! Paired timing for a noisy machine: run kernels alternately, round after round (reversing
//! the order every other round), and compare them per round, so load from other tenants lands
//! on both sides of each comparison.

use std::time::Instant;

/// The median of samples.
pub fn median(samples: &[f64]) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// Seconds per call of every closure, per round: `samples[f][round]`. One warm-up call each
/// first; within a round the closures run in order, or in reverse order on odd rounds.
///
/// # Errors
/// The first error a closure returns.
pub fn interleaved<E>(
    rounds: usize,
    fs: &mut [&mut dyn FnMut() -> Result<(), E>],
) -> Result<Vec<Vec<f64>>, E> {
    for f in fs.iter_mut() {
        f()?;
    }
    let mut samples = vec![Vec::with_capacity(rounds); fs.len()];
    let order: Vec<usize> = (0..fs.len()).collect();
    for round in 0..rounds {
        let reversed: Vec<usize> = order.iter().rev().copied().collect();
        for &i in if round % 2 == 0 { &order } else { &reversed } {
            let start = Instant::now();
            fs[i]()?;
            samples[i].push(start.elapsed().as_secs_f64());
        }
    }
    Ok(samples)
}

/// The median over rounds of `reference[r] / subject[r]`: how fast the subject runs relative
/// to the reference measured in the same round (1.0 = as fast).
pub fn paired_speed(reference: &[f64], subject: &[f64]) -> f64 {
    let ratios: Vec<f64> = reference.iter().zip(subject).map(|(r, s)| r / s).collect();
    median(&ratios)
}
