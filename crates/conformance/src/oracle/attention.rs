//! Causal softmax attention, materialising every probability (the obvious algorithm), on
//! token-major `[batch, seq, heads, head_dim]` tensors.

use super::Expected;
use ds_core::DType;
use ds_core::params::AttentionShape;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn abs_dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x * y).abs()).sum()
}

/// Output (in `dtype`) and log-sum-exp (f32) of causal attention.
pub fn attention<'a>(
    sh: &AttentionShape,
    q: &'a [f64],
    k: &'a [f64],
    v: &'a [f64],
    dtype: DType,
) -> (Expected, Expected) {
    let (s, d) = (sh.seq, sh.head_dim);
    let scale = f64::from(sh.scale);
    let n = sh.qkv_len();
    let (mut o_val, mut o_mag) = (vec![0.0; n], vec![0.0; n]);
    let mut lse = Expected::default();
    for b in 0..sh.batch {
        for h in 0..sh.heads {
            let row = |x: &'a [f64], i: usize| -> &'a [f64] { &x[sh.row(b, h, i)..][..d] };
            for i in 0..s {
                let qi = row(q, i);
                let scores: Vec<f64> = (0..=i).map(|j| scale * dot(qi, row(k, j))).collect();
                let score_mag = (0..=i)
                    .map(|j| scale.abs() * abs_dot(qi, row(k, j)))
                    .fold(0.0, f64::max);
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let total: f64 = scores.iter().map(|x| (x - m).exp()).sum();
                let at = sh.row(b, h, i);
                for c in 0..d {
                    let (mut o, mut mag) = (0.0, 0.0);
                    for (j, sc) in scores.iter().enumerate() {
                        let p = (sc - m).exp() / total;
                        o += p * row(v, j)[c];
                        mag += p * row(v, j)[c].abs();
                    }
                    o_val[at + c] = o;
                    o_mag[at + c] = mag * (1.0 + score_mag);
                }
                let l = m + total.ln();
                lse.push(DType::F32, l, l.abs() + score_mag);
            }
        }
    }
    let out = wrap(o_val, o_mag, dtype);
    if sh.seq == 0 {
        lse = Expected::default();
    }
    (out, lse)
}

/// Gradients of causal attention.
#[derive(Debug, Clone, Default)]
pub struct AttentionGrads {
    /// d loss / d q.
    pub dq: Expected,
    /// d loss / d k.
    pub dk: Expected,
    /// d loss / d v.
    pub dv: Expected,
}

/// Attention backward from the forward's (stored) output and log-sum-exp.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    sh: &AttentionShape,
    q: &[f64],
    k: &[f64],
    v: &[f64],
    out: &[f64],
    lse: &[f64],
    dout: &[f64],
    dtype: DType,
) -> AttentionGrads {
    let (s, d) = (sh.seq, sh.head_dim);
    let scale = f64::from(sh.scale);
    let n = sh.qkv_len();
    let (mut dq, mut dk, mut dv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut mq, mut mk, mut mv) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for b in 0..sh.batch {
        for h in 0..sh.heads {
            let row = |x: &[f64], i: usize| -> Vec<f64> { x[sh.row(b, h, i)..][..d].to_vec() };
            let lse_at = (b * sh.heads + h) * s;
            for i in 0..s {
                let (qi, doi, oi) = (row(q, i), row(dout, i), row(out, i));
                let delta = dot(&doi, &oi);
                let delta_mag = abs_dot(&doi, &oi);
                let score_mag = (0..=i)
                    .map(|j| scale.abs() * abs_dot(&qi, &row(k, j)))
                    .fold(0.0, f64::max);
                for j in 0..=i {
                    let (kj, vj) = (row(k, j), row(v, j));
                    let p = (scale * dot(&qi, &kj) - lse[lse_at + i]).exp();
                    let dp = dot(&doi, &vj);
                    let ds = p * (dp - delta);
                    let ds_mag = p * (abs_dot(&doi, &vj) + delta_mag) * (1.0 + score_mag);
                    let (ai, aj) = (sh.row(b, h, i), sh.row(b, h, j));
                    for c in 0..d {
                        dv[aj + c] += p * doi[c];
                        mv[aj + c] += p * doi[c].abs() * (1.0 + score_mag);
                        dq[ai + c] += scale * ds * kj[c];
                        mq[ai + c] += scale.abs() * ds_mag * kj[c].abs();
                        dk[aj + c] += scale * ds * qi[c];
                        mk[aj + c] += scale.abs() * ds_mag * qi[c].abs();
                    }
                }
            }
        }
    }
    AttentionGrads {
        dq: wrap(dq, mq, dtype),
        dk: wrap(dk, mk, dtype),
        dv: wrap(dv, mv, dtype),
    }
}

/// Values and magnitudes as expected elements of `dtype`.
fn wrap(v: Vec<f64>, m: Vec<f64>, dtype: DType) -> Expected {
    let mut e = Expected::with_capacity(v.len());
    for (x, mm) in v.into_iter().zip(m) {
        e.push(dtype, x, mm);
    }
    e
}
