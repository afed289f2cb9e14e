//! Optimizer steps, from DESIGN.md's formulas (Adam/AdamW, SGD as PyTorch, Lamb as DeepSpeed's
//! FusedLamb).

use super::{Expected, round_to};
use ds_core::DType;
use ds_core::params::{AdagradParams, AdamMode, AdamParams, LambParams, LionParams, SgdParams};

/// Updated master weights and state of one step, plus the weight copy in its dtype.
#[derive(Debug, Clone, Default)]
pub struct AdamOut {
    /// fp32 weights.
    pub p: Expected,
    /// First moment (or SGD's momentum buffer).
    pub m: Expected,
    /// Second moment (empty for SGD).
    pub v: Expected,
}

fn bias_corrections(b1: f64, b2: f64, step: u64, on: bool) -> (f64, f64) {
    if on {
        (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32))
    } else {
        (1.0, 1.0)
    }
}

/// The gradient as the step reads it: `grad_scale * grad`.
fn scaled(g: &[f64], grad_scale: f32) -> Vec<f64> {
    g.iter().map(|x| x * f64::from(grad_scale)).collect()
}

/// One Adam/AdamW step.
pub fn adam(hp: &AdamParams, p: &[f64], g: &[f64], m: &[f64], v: &[f64]) -> AdamOut {
    let g = &scaled(g, hp.grad_scale);
    let (b1, b2) = (f64::from(hp.beta1), f64::from(hp.beta2));
    let (lr, eps, wd) = (
        f64::from(hp.lr),
        f64::from(hp.eps),
        f64::from(hp.weight_decay),
    );
    let (bc1, bc2) = bias_corrections(b1, b2, hp.step, hp.bias_correction);
    let mut out = AdamOut::default();
    for i in 0..p.len() {
        let (l2, decoupled) = match hp.mode {
            AdamMode::L2 => (wd, 0.0),
            AdamMode::AdamW => (0.0, wd),
        };
        let gi = g[i] + l2 * p[i];
        let g_mag = g[i].abs() + (l2 * p[i]).abs();
        let mi = b1 * m[i] + (1.0 - b1) * gi;
        let m_mag = (b1 * m[i]).abs() + ((1.0 - b1) * g_mag).abs();
        let vi = b2 * v[i] + (1.0 - b2) * gi * gi;
        let v_mag = (b2 * v[i]).abs() + (1.0 - b2) * g_mag * g_mag;
        let denom = (vi / bc2).sqrt() + eps;
        let update = (mi / bc1) / denom;
        let pi = p[i] - lr * (update + decoupled * p[i]);
        let p_mag = p[i].abs() + lr * (m_mag / bc1 / denom + (decoupled * p[i]).abs());
        out.p.push(DType::F32, pi, p_mag);
        out.m.push(DType::F32, mi, m_mag);
        out.v.push(DType::F32, vi, v_mag);
    }
    out
}

/// One SGD step; `buf` is the momentum buffer (ignored when momentum is 0).
pub fn sgd(hp: &SgdParams, p: &[f64], g: &[f64], buf: &[f64]) -> AdamOut {
    let g = &scaled(g, hp.grad_scale);
    let (lr, mu, damp, wd) = (
        f64::from(hp.lr),
        f64::from(hp.momentum),
        f64::from(hp.dampening),
        f64::from(hp.weight_decay),
    );
    let mut out = AdamOut::default();
    for i in 0..p.len() {
        let d = g[i] + wd * p[i];
        let d_mag = g[i].abs() + (wd * p[i]).abs();
        let (step, step_mag) = if mu > 0.0 {
            let (b, b_mag) = if hp.step == 1 {
                (d, d_mag)
            } else {
                (
                    mu * buf[i] + (1.0 - damp) * d,
                    (mu * buf[i]).abs() + ((1.0 - damp) * d_mag).abs(),
                )
            };
            out.m.push(DType::F32, b, b_mag);
            if hp.nesterov {
                (d + mu * b, d_mag + mu * b_mag)
            } else {
                (b, b_mag)
            }
        } else {
            (d, d_mag)
        };
        out.p
            .push(DType::F32, p[i] - lr * step, p[i].abs() + lr * step_mag);
    }
    out
}

/// One Adagrad step (DeepSpeedCPUAdagrad's update); the sum of squares comes back in `v`.
pub fn adagrad(hp: &AdagradParams, p: &[f64], g: &[f64], v: &[f64]) -> AdamOut {
    let g = &scaled(g, hp.grad_scale);
    let (lr, eps, wd) = (
        f64::from(hp.lr),
        f64::from(hp.eps),
        f64::from(hp.weight_decay),
    );
    let mut out = AdamOut::default();
    for i in 0..p.len() {
        let decayed = g[i] + wd * p[i];
        let d_mag = g[i].abs() + (wd * p[i]).abs();
        let vi = v[i] + decayed * decayed;
        let v_mag = v[i].abs() + d_mag * d_mag;
        let denom = vi.sqrt() + eps;
        let update = lr * g[i] / denom;
        // The f32 sum of squares is only as exact as its terms are large: where the decayed
        // gradient cancels and the sum is small, its relative error (and the update's) grows
        // by v_mag / v.
        let amplify = if vi > 0.0 { (v_mag / vi).max(1.0) } else { 1.0 };
        out.p.push(
            DType::F32,
            p[i] - update,
            p[i].abs() + update.abs() * amplify,
        );
        out.v.push(DType::F32, vi, v_mag);
    }
    out
}

/// One Lion step; the momentum comes back in `m`.
///
/// Where f32 arithmetic cannot tell the sign of `c` (|c| within a few roundings of the terms
/// that make it), any of -1, 0 and +1 is a correct result: the oracle then expects the
/// sign-0 weight with a magnitude of `lr / eps(f32)`, so the tolerance spans a step of `lr`
/// either way.
pub fn lion(hp: &LionParams, p: &[f64], g: &[f64], m: &[f64]) -> AdamOut {
    let g = &scaled(g, hp.grad_scale);
    let (lr, b1, b2, wd) = (
        f64::from(hp.lr),
        f64::from(hp.beta1),
        f64::from(hp.beta2),
        f64::from(hp.weight_decay),
    );
    let decay = 1.0 - lr * wd;
    let eps = f64::from(f32::EPSILON);
    let mut out = AdamOut::default();
    for i in 0..p.len() {
        let c = b1 * m[i] + (1.0 - b1) * g[i];
        let c_mag = (b1 * m[i]).abs() + ((1.0 - b1) * g[i]).abs();
        let kept = p[i] * decay;
        if c != 0.0 && c.abs() <= 4.0 * eps * c_mag {
            out.p.push(DType::F32, kept, lr / eps);
        } else {
            let sign = if c > 0.0 {
                1.0
            } else if c < 0.0 {
                -1.0
            } else {
                0.0
            };
            out.p.push(DType::F32, kept - lr * sign, kept.abs() + lr);
        }
        out.m.push(
            DType::F32,
            b2 * m[i] + (1.0 - b2) * g[i],
            (b2 * m[i]).abs() + ((1.0 - b2) * g[i]).abs(),
        );
    }
    out
}

/// One Lamb step over the whole tensor.
pub fn lamb(hp: &LambParams, p: &[f64], g: &[f64], m: &[f64], v: &[f64]) -> AdamOut {
    let g = &scaled(g, hp.grad_scale);
    let (b1, b2) = (f64::from(hp.beta1), f64::from(hp.beta2));
    let (lr, eps, wd) = (
        f64::from(hp.lr),
        f64::from(hp.eps),
        f64::from(hp.weight_decay),
    );
    let (bc1, bc2) = bias_corrections(b1, b2, hp.step, hp.bias_correction);
    let step_size = lr * bc2.sqrt() / bc1;
    let n = p.len();
    let (mut mv, mut vv, mut u, mut u_mag) =
        (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut out = AdamOut::default();
    for i in 0..n {
        mv[i] = b1 * m[i] + (1.0 - b1) * g[i];
        vv[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        let m_mag = (b1 * m[i]).abs() + ((1.0 - b1) * g[i]).abs();
        let denom = vv[i].sqrt() + eps;
        u[i] = mv[i] / denom + wd * p[i];
        u_mag[i] = m_mag / denom + (wd * p[i]).abs();
        out.m.push(DType::F32, mv[i], m_mag);
        out.v.push(
            DType::F32,
            vv[i],
            (b2 * v[i]).abs() + (1.0 - b2) * g[i] * g[i],
        );
    }
    // The squared norms travel between the two passes as f32 (they may be all-reduced across
    // ranks in between), so a norm whose square underflows f32 counts as zero, as documented.
    let p_norm = round_to(DType::F32, p.iter().map(|x| x * x).sum::<f64>()).sqrt();
    let u_norm = round_to(DType::F32, u.iter().map(|x| x * x).sum::<f64>()).sqrt();
    let trust = if p_norm == 0.0 || u_norm == 0.0 {
        1.0
    } else {
        (p_norm / u_norm).clamp(f64::from(hp.min_coeff), f64::from(hp.max_coeff))
    };
    for i in 0..n {
        out.p.push(
            DType::F32,
            p[i] - step_size * trust * u[i],
            p[i].abs() + step_size * trust * u_mag[i],
        );
    }
    out
}
