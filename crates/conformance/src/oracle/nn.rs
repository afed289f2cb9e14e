//! Neural-network forward and backward references.

use super::{Expected, round_to};
use ds_core::DType;

/// sqrt(2/pi) and the cubic coefficient of GELU's tanh form.
const C: f64 = 0.797_884_560_802_865_4;
const A: f64 = 0.044_715;

/// `x[r, c] + bias[c]`.
pub fn bias_add(x: &[f64], bias: &[f64], cols: usize, dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(x.len());
    for (i, &v) in x.iter().enumerate() {
        let b = bias[i % cols];
        e.push(dtype, v + b, v.abs() + b.abs());
    }
    e
}

/// Column sums of `rows x cols` `dy`, plus `old` when accumulating.
pub fn bias_grad(dy: &[f64], cols: usize, old: Option<&[f64]>, dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(cols);
    for c in 0..cols {
        let (mut s, mut m) = (old.map_or(0.0, |o| o[c]), old.map_or(0.0, |o| o[c].abs()));
        for v in dy.iter().skip(c).step_by(cols) {
            s += v;
            m += v.abs();
        }
        e.push(dtype, s, m);
    }
    e
}

/// GELU, tanh form.
pub fn gelu(x: &[f64], dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(x.len());
    for &v in x {
        let t = (C * (v + A * v * v * v)).tanh();
        e.push(dtype, 0.5 * v * (1.0 + t), 0.5 * v.abs() * (1.0 + t.abs()));
    }
    e
}

/// `dy * gelu'(x)`; once tanh saturates the second term is 0 (the limit), not 0 * inf.
pub fn gelu_backward(x: &[f64], dy: &[f64], dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(x.len());
    for (&v, &d) in x.iter().zip(dy) {
        let t = (C * (v + A * v * v * v)).tanh();
        let sech2 = 1.0 - t * t;
        let slope = if sech2 == 0.0 {
            0.0
        } else {
            0.5 * v * sech2 * C * (1.0 + 3.0 * A * v * v)
        };
        let grad = 0.5 * (1.0 + t) + slope;
        e.push(
            dtype,
            d * grad,
            d.abs() * (0.5 * (1.0 + t.abs()) + slope.abs()),
        );
    }
    e
}

/// `max(x, 0)`, NaN kept, -0 to +0.
pub fn relu(x: &[f64], dtype: DType) -> Vec<f64> {
    x.iter()
        .map(|&v| round_to(dtype, if v <= 0.0 { 0.0 } else { v }))
        .collect()
}

/// `x > 0 ? dy : 0`.
pub fn relu_backward(x: &[f64], dy: &[f64], dtype: DType) -> Vec<f64> {
    x.iter()
        .zip(dy)
        .map(|(&v, &d)| round_to(dtype, if v > 0.0 { d } else { 0.0 }))
        .collect()
}

/// LayerNorm outputs: y and the saved per-row statistics (f32).
#[derive(Debug, Clone, Default)]
pub struct LayerNormOut {
    /// Normalised output.
    pub y: Expected,
    /// Per-row mean.
    pub mean: Expected,
    /// Per-row `1/sqrt(var + eps)`.
    pub rstd: Expected,
}

/// LayerNorm over rows of `cols`.
pub fn layer_norm(
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    cols: usize,
    eps: f64,
    dtype: DType,
) -> LayerNormOut {
    let mut out = LayerNormOut::default();
    for row in x.chunks(cols) {
        let mean = row.iter().sum::<f64>() / cols as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, &v) in row.iter().enumerate() {
            out.y.push(
                dtype,
                (v - mean) * rstd * gamma[j] + beta[j],
                (v.abs() + mean.abs()) * rstd * gamma[j].abs() + beta[j].abs(),
            );
        }
        out.mean.push(
            DType::F32,
            mean,
            row.iter().map(|v| v.abs()).sum::<f64>() / cols as f64,
        );
        out.rstd.push(DType::F32, rstd, rstd);
    }
    out
}

/// LayerNorm gradients.
#[derive(Debug, Clone, Default)]
pub struct LayerNormGrads {
    /// Input gradient.
    pub dx: Expected,
    /// Scale gradient.
    pub dgamma: Expected,
    /// Shift gradient.
    pub dbeta: Expected,
}

/// LayerNorm backward from the saved statistics; `old` holds (dgamma, dbeta) to add to.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward(
    x: &[f64],
    gamma: &[f64],
    mean: &[f64],
    rstd: &[f64],
    dy: &[f64],
    cols: usize,
    old: Option<(&[f64], &[f64])>,
    dtype: DType,
) -> LayerNormGrads {
    let mut out = LayerNormGrads::default();
    let mut dg: Vec<f64> = old.map_or(vec![0.0; cols], |o| o.0.to_vec());
    let mut db: Vec<f64> = old.map_or(vec![0.0; cols], |o| o.1.to_vec());
    let mut dg_mag: Vec<f64> = dg.iter().map(|v| v.abs()).collect();
    let mut db_mag: Vec<f64> = db.iter().map(|v| v.abs()).collect();
    let n = cols as f64;
    for (r, (xr, dyr)) in x.chunks(cols).zip(dy.chunks(cols)).enumerate() {
        let xhat: Vec<f64> = xr.iter().map(|v| (v - mean[r]) * rstd[r]).collect();
        let g: Vec<f64> = dyr.iter().zip(gamma).map(|(d, gm)| d * gm).collect();
        let c1 = g.iter().sum::<f64>() / n;
        let c2 = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
        let c1m = g.iter().map(|v| v.abs()).sum::<f64>() / n;
        let c2m = g.iter().zip(&xhat).map(|(a, b)| (a * b).abs()).sum::<f64>() / n;
        for j in 0..cols {
            out.dx.push(
                dtype,
                rstd[r] * (g[j] - c1 - xhat[j] * c2),
                rstd[r] * (g[j].abs() + c1m + xhat[j].abs() * c2m),
            );
            dg[j] += dyr[j] * xhat[j];
            dg_mag[j] += (dyr[j] * xhat[j]).abs();
            db[j] += dyr[j];
            db_mag[j] += dyr[j].abs();
        }
    }
    for j in 0..cols {
        out.dgamma.push(dtype, dg[j], dg_mag[j]);
        out.dbeta.push(dtype, db[j], db_mag[j]);
    }
    out
}

fn label_class(label: i32, ignore: i32, classes: usize) -> Option<Option<usize>> {
    if label == ignore {
        return Some(None);
    }
    usize::try_from(label)
        .ok()
        .filter(|&c| c < classes)
        .map(Some)
}

fn log_sum_exp(row: &[f64]) -> f64 {
    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Per-row softmax cross-entropy losses (f32).
pub fn xent(logits: &[f64], labels: &[i32], classes: usize, ignore: i32) -> Expected {
    let mut e = Expected::with_capacity(labels.len());
    for (row, &label) in logits.chunks(classes).zip(labels) {
        match label_class(label, ignore, classes) {
            Some(None) => e.push(DType::F32, 0.0, 0.0),
            None => e.push(DType::F32, f64::NAN, 0.0),
            Some(Some(c)) => {
                let lse = log_sum_exp(row);
                e.push(DType::F32, lse - row[c], lse.abs() + row[c].abs());
            }
        }
    }
    e
}

/// `scale * (softmax - onehot)` per row, zero for ignored rows, NaN for invalid labels.
pub fn xent_backward(
    logits: &[f64],
    labels: &[i32],
    classes: usize,
    ignore: i32,
    scale: f64,
    dtype: DType,
) -> Expected {
    let mut e = Expected::with_capacity(logits.len());
    for (row, &label) in logits.chunks(classes).zip(labels) {
        match label_class(label, ignore, classes) {
            Some(None) => row.iter().for_each(|_| e.push(dtype, 0.0, 0.0)),
            None => row.iter().for_each(|_| e.push(dtype, f64::NAN, 0.0)),
            Some(Some(c)) => {
                let lse = log_sum_exp(row);
                for (j, v) in row.iter().enumerate() {
                    let p = (v - lse).exp();
                    let hot = if j == c { 1.0 } else { 0.0 };
                    e.push(
                        dtype,
                        scale * (p - hot),
                        scale.abs() * (p + hot) * (1.0 + lse.abs() + v.abs()),
                    );
                }
            }
        }
    }
    e
}

/// Rows of `table` (`vocab x dim`) picked by `ids`; NaN rows for ids out of range.
pub fn embedding(ids: &[i32], table: &[f64], vocab: usize, dim: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        match usize::try_from(id).ok().filter(|&r| r < vocab) {
            Some(r) => out.extend_from_slice(&table[r * dim..(r + 1) * dim]),
            None => out.extend(std::iter::repeat_n(f64::NAN, dim)),
        }
    }
    out
}

/// Scatter-add of `dout` rows into a `vocab x dim` table (added to `old` when accumulating).
pub fn embedding_backward(
    ids: &[i32],
    dout: &[f64],
    vocab: usize,
    dim: usize,
    old: Option<&[f64]>,
    dtype: DType,
) -> Expected {
    let mut acc: Vec<f64> = old.map_or(vec![0.0; vocab * dim], |o| o.to_vec());
    let mut mag: Vec<f64> = acc.iter().map(|v| v.abs()).collect();
    for (i, &id) in ids.iter().enumerate() {
        if let Some(r) = usize::try_from(id).ok().filter(|&r| r < vocab) {
            for j in 0..dim {
                acc[r * dim + j] += dout[i * dim + j];
                mag[r * dim + j] += dout[i * dim + j].abs();
            }
        }
    }
    Expected {
        value: acc.iter().map(|&v| round_to(dtype, v)).collect(),
        mag,
    }
}
