//! DeepSpeed's LR schedules (0.19), as pure functions of the step counter.
//!
//! DeepSpeed keeps a counter `last_batch_iteration` that starts at -1 and advances once after
//! every *applied* optimizer step (never on an fp16 overflow). The LR used by an optimizer step
//! is the schedule's value at the counter's current value: the first step uses the value at -1
//! (what DeepSpeed writes into the optimizer when it builds the scheduler), the (k+2)-th applied
//! step uses the value at k. [`LrSchedule::lr_at`] is that function; the engine owns the
//! counter.
//!
//! Formulas (k = counter, W = max(2, warmup_num_steps), T = total_num_steps):
//! - warmup gamma: `ln(k+1)/ln(W)` (log) or `k/W` (linear) while k < W, then 1;
//! - WarmupLR: `min + (max - min) * gamma`, and `min` before the first step;
//! - WarmupDecayLR: after warmup `gamma = max(0, (T-k)/max(1, T-W))`;
//! - WarmupCosineLR: a ratio of the optimizer's LR: warmup `min_ratio + r*(1-min_ratio)`,
//!   then `max(0, cos_min + (1-cos_min)(1+cos(pi p))/2)` with `p = min(1, (k-W+1)/max(1, T-W))`;
//!   0 before the first step;
//! - OneCycle: a triangle from `cycle_min_lr` up to `cycle_max_lr` over `cycle_first_step_size`
//!   steps and back over `cycle_second_step_size` (optionally in stairs), then
//!   `min / (1 + decay_lr_rate * d / decay_step_size)` with `d = k - total + 1`; momentum
//!   (Adam's beta1, beta2 fixed at 0.99) moves inversely when the optimizer has betas;
//! - LRRangeTest: `min * (1 + rate * interval)`, `interval = (k+1)/step_size`, floored with
//!   `staircase`.

use crate::config::{SchedulerConfig, WarmupType};
use std::f64::consts::PI;

/// An LR schedule bound to the optimizer's configured LR.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    config: SchedulerConfig,
    base_lr: f64,
    cycle_momentum: bool,
}

fn warmup_gamma(k: i64, warmup_steps: u64, kind: WarmupType) -> f64 {
    let w = warmup_steps.max(2) as f64;
    let k = k as f64;
    if k >= w {
        return 1.0;
    }
    match kind {
        WarmupType::Log => (k + 1.0).ln() / w.ln(),
        WarmupType::Linear => k / w,
    }
}

impl LrSchedule {
    /// The schedule `config` describes, for an optimizer whose configured LR is `base_lr`.
    /// `has_betas` says whether the optimizer has Adam-style betas (Adam, AdamW, Lamb, Lion): OneCycle
    /// cycles momentum only then, as in DeepSpeed.
    pub fn new(config: SchedulerConfig, base_lr: f64, has_betas: bool) -> Self {
        let cycle_momentum = matches!(
            config,
            SchedulerConfig::OneCycle {
                cycle_momentum: true,
                ..
            }
        ) && has_betas;
        LrSchedule {
            config,
            base_lr,
            cycle_momentum,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Whether this schedule also sets Adam's betas.
    pub fn cycles_momentum(&self) -> bool {
        self.cycle_momentum
    }

    /// The LR at counter value `k` (-1 before the first applied step).
    pub fn lr_at(&self, k: i64) -> f64 {
        match &self.config {
            SchedulerConfig::WarmupLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
            } => {
                if k < 0 {
                    return *warmup_min_lr;
                }
                let max = warmup_max_lr.unwrap_or(self.base_lr);
                warmup_min_lr
                    + (max - warmup_min_lr) * warmup_gamma(k, *warmup_num_steps, *warmup_type)
            }
            SchedulerConfig::WarmupDecayLr {
                warmup_min_lr,
                warmup_max_lr,
                warmup_num_steps,
                warmup_type,
                total_num_steps,
            } => {
                if k < 0 {
                    return *warmup_min_lr;
                }
                let w = (*warmup_num_steps).max(2) as f64;
                let gamma = if (k as f64) < w {
                    warmup_gamma(k, *warmup_num_steps, *warmup_type)
                } else {
                    let t = *total_num_steps as f64;
                    ((t - k as f64) / (t - w).max(1.0)).max(0.0)
                };
                warmup_min_lr + (warmup_max_lr - warmup_min_lr) * gamma
            }
            SchedulerConfig::WarmupCosineLr {
                total_num_steps,
                warmup_min_ratio,
                warmup_num_steps,
                cos_min_ratio,
                warmup_type,
            } => {
                if k < 0 {
                    return 0.0;
                }
                let w = (*warmup_num_steps).max(2) as f64;
                let ratio = if (k as f64) < w {
                    let r = warmup_gamma(k, *warmup_num_steps, *warmup_type);
                    warmup_min_ratio + r * (1.0 - warmup_min_ratio)
                } else {
                    let s = k as f64 - w + 1.0;
                    let range = (*total_num_steps as f64 - w).max(1.0);
                    let p = (s / range).min(1.0);
                    (cos_min_ratio + (1.0 - cos_min_ratio) * (1.0 + (PI * p).cos()) / 2.0).max(0.0)
                };
                self.base_lr * ratio
            }
            SchedulerConfig::OneCycle {
                cycle_min_lr,
                cycle_max_lr,
                decay_lr_rate,
                decay_step_size,
                ..
            } => {
                if k < 0 {
                    return *cycle_min_lr;
                }
                match self.one_cycle_position(k) {
                    CyclePosition::InCycle(sf) => cycle_min_lr + (cycle_max_lr - cycle_min_lr) * sf,
                    CyclePosition::Decay(d) => {
                        if *decay_step_size == 0 || *decay_lr_rate == 0.0 {
                            *cycle_min_lr
                        } else {
                            cycle_min_lr / (1.0 + decay_lr_rate * d / *decay_step_size as f64)
                        }
                    }
                }
            }
            SchedulerConfig::LrRangeTest {
                min_lr,
                step_size,
                step_rate,
                staircase,
            } => {
                if k < 0 {
                    return *min_lr;
                }
                let x = (k as f64 + 1.0) / (*step_size).max(1) as f64;
                let interval = if *staircase { x.floor() } else { x };
                min_lr * (1.0 + step_rate * interval)
            }
        }
    }

    /// Adam's `(beta1, beta2)` at counter value `k` when OneCycle cycles momentum; `None`
    /// otherwise (the optimizer's configured betas apply).
    pub fn betas_at(&self, k: i64) -> Option<(f64, f64)> {
        if !self.cycle_momentum {
            return None;
        }
        let SchedulerConfig::OneCycle {
            decay_step_size,
            cycle_min_mom,
            cycle_max_mom,
            decay_mom_rate,
            ..
        } = &self.config
        else {
            return None;
        };
        if k < 0 {
            return Some((*cycle_min_mom, 0.99));
        }
        let beta1 = match self.one_cycle_position(k) {
            CyclePosition::InCycle(sf) => cycle_max_mom - (cycle_max_mom - cycle_min_mom) * sf,
            CyclePosition::Decay(d) => {
                if *decay_step_size == 0 || *decay_mom_rate == 0.0 {
                    *cycle_max_mom
                } else {
                    cycle_max_mom * (1.0 + decay_mom_rate * d / *decay_step_size as f64)
                }
            }
        };
        Some((beta1, 0.99))
    }

    fn one_cycle_position(&self, k: i64) -> CyclePosition {
        let SchedulerConfig::OneCycle {
            cycle_first_step_size,
            cycle_second_step_size,
            cycle_first_stair_count,
            cycle_second_stair_count,
            ..
        } = &self.config
        else {
            return CyclePosition::InCycle(0.0);
        };
        let first = *cycle_first_step_size as f64;
        let second = *cycle_second_step_size as f64;
        let total = first + second;
        if k as f64 >= total {
            return CyclePosition::Decay(k as f64 - total + 1.0);
        }
        let step_ratio = first / total;
        let b = k as f64 + 1.0;
        let cycle = (1.0 + b / total).floor();
        let x = 1.0 + b / total - cycle;
        let (mut sf, stairs) = if x <= step_ratio {
            (x / step_ratio, *cycle_first_stair_count)
        } else {
            ((x - 1.0) / (step_ratio - 1.0), *cycle_second_stair_count)
        };
        if stairs > 0 {
            let sc = stairs as f64;
            let ci = b % total;
            let pos = if ci <= first {
                ci * sc / first
            } else {
                (total - ci) * sc / second
            };
            sf = pos.floor() / sc;
        }
        CyclePosition::InCycle(sf)
    }
}

enum CyclePosition {
    /// Within the cycle, at this fraction of the way from min to max LR.
    InCycle(f64),
    /// This many steps into the decay phase.
    Decay(f64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} != {b}");
    }

    fn warmup(kind: WarmupType, steps: u64, max: Option<f64>) -> LrSchedule {
        LrSchedule::new(
            SchedulerConfig::WarmupLr {
                warmup_min_lr: 0.0,
                warmup_max_lr: max,
                warmup_num_steps: steps,
                warmup_type: kind,
            },
            0.5,
            true,
        )
    }

    #[test]
    fn warmup_lr_log_and_linear_follow_their_formulas_from_before_the_first_step() {
        // DeepSpeed's worked example: W = 4, min 0, max 1.
        let lin = warmup(WarmupType::Linear, 4, Some(1.0));
        let got: Vec<f64> = (-1..=6).map(|k| lin.lr_at(k)).collect();
        for (g, w) in got.iter().zip([0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]) {
            close(*g, w);
        }
        let log = warmup(WarmupType::Log, 4, Some(1.0));
        for k in 0..4 {
            close(log.lr_at(k), ((k + 1) as f64).ln() / 4f64.ln());
        }
        close(log.lr_at(-1), 0.0);
        close(log.lr_at(3), 1.0);
        close(log.lr_at(100), 1.0);
    }

    #[test]
    fn warmup_lr_without_a_max_uses_the_optimizers_lr_and_one_step_means_two() {
        let s = warmup(WarmupType::Linear, 1, None);
        // W = max(2, 1) = 2.
        close(s.lr_at(0), 0.0);
        close(s.lr_at(1), 0.25);
        close(s.lr_at(2), 0.5);
    }

    #[test]
    fn warmup_decay_lr_decays_linearly_to_zero_at_total_steps() {
        let s = LrSchedule::new(
            SchedulerConfig::WarmupDecayLr {
                warmup_min_lr: 0.1,
                warmup_max_lr: 1.1,
                warmup_num_steps: 4,
                warmup_type: WarmupType::Linear,
                total_num_steps: 10,
            },
            0.5,
            true,
        );
        close(s.lr_at(-1), 0.1);
        close(s.lr_at(2), 0.1 + 1.0 * 0.5);
        for k in 4..=12 {
            let gamma = ((10.0 - k as f64) / 6.0).max(0.0);
            close(s.lr_at(k), 0.1 + gamma);
        }
        close(s.lr_at(10), 0.1);
        close(s.lr_at(50), 0.1);
    }

    #[test]
    fn warmup_cosine_lr_is_a_ratio_of_the_optimizer_lr_and_zero_before_the_first_step() {
        let s = LrSchedule::new(
            SchedulerConfig::WarmupCosineLr {
                total_num_steps: 10,
                warmup_min_ratio: 0.2,
                warmup_num_steps: 4,
                cos_min_ratio: 0.01,
                warmup_type: WarmupType::Linear,
            },
            2.0,
            true,
        );
        close(s.lr_at(-1), 0.0);
        close(s.lr_at(0), 2.0 * 0.2);
        close(s.lr_at(2), 2.0 * (0.2 + 0.5 * 0.8));
        for k in 4..14 {
            let p = ((k as f64 - 3.0) / 6.0).min(1.0);
            let ratio = 0.01 + 0.99 * (1.0 + (PI * p).cos()) / 2.0;
            close(s.lr_at(k), 2.0 * ratio);
        }
        // The floor is reached at k = T - 1 and held.
        close(s.lr_at(9), 2.0 * 0.01);
        close(s.lr_at(30), 2.0 * 0.01);
    }

    fn one_cycle(stairs: u64, decay: f64, momentum: bool) -> LrSchedule {
        LrSchedule::new(
            SchedulerConfig::OneCycle {
                cycle_min_lr: 0.0,
                cycle_max_lr: 1.0,
                decay_lr_rate: decay,
                cycle_first_step_size: 2,
                cycle_second_step_size: 2,
                cycle_first_stair_count: stairs,
                cycle_second_stair_count: stairs,
                decay_step_size: 2,
                cycle_momentum: true,
                cycle_min_mom: 0.8,
                cycle_max_mom: 0.9,
                decay_mom_rate: decay,
            },
            0.5,
            momentum,
        )
    }

    #[test]
    fn one_cycle_rises_falls_then_decays_with_momentum_inverse() {
        // DeepSpeed's worked example: first = second = 2, min 0, max 1.
        let s = one_cycle(0, 0.0, true);
        let lrs: Vec<f64> = (-1..6).map(|k| s.lr_at(k)).collect();
        for (g, w) in lrs.iter().zip([0.0, 0.5, 1.0, 0.5, 0.0, 0.0, 0.0]) {
            close(*g, w);
        }
        assert_eq!(s.betas_at(-1), Some((0.8, 0.99)));
        let b = s.betas_at(1).expect("cycling");
        close(b.0, 0.8);
        let b = s.betas_at(0).expect("cycling");
        close(b.0, 0.85);
        let b = s.betas_at(9).expect("cycling");
        close(b.0, 0.9);
        // With a decay rate: lr = min / (1 + rate * d / decay_step_size), momentum grows.
        let d = LrSchedule::new(
            SchedulerConfig::OneCycle {
                cycle_min_lr: 0.1,
                cycle_max_lr: 1.0,
                decay_lr_rate: 0.5,
                cycle_first_step_size: 2,
                cycle_second_step_size: 2,
                cycle_first_stair_count: 0,
                cycle_second_stair_count: 0,
                decay_step_size: 2,
                cycle_momentum: true,
                cycle_min_mom: 0.8,
                cycle_max_mom: 0.9,
                decay_mom_rate: 0.1,
            },
            0.5,
            true,
        );
        for k in 4..8 {
            let dd = (k - 4 + 1) as f64;
            close(d.lr_at(k), 0.1 / (1.0 + 0.5 * dd / 2.0));
            close(
                d.betas_at(k).expect("cycling").0,
                0.9 * (1.0 + 0.1 * dd / 2.0),
            );
        }
    }

    #[test]
    fn one_cycle_stairs_and_no_momentum_without_betas() {
        let s = one_cycle(2, 0.0, false);
        assert_eq!(s.betas_at(0), None);
        // b = k + 1; position = floor(ci * 2 / 2) / 2 rising, floor((4 - ci) * 2 / 2) / 2 falling.
        for (k, want) in [(0, 0.5), (1, 1.0), (2, 0.5), (3, 0.0)] {
            close(s.lr_at(k), want);
        }
    }

    #[test]
    fn lr_range_test_grows_continuously_or_in_stairs() {
        let cont = LrSchedule::new(
            SchedulerConfig::LrRangeTest {
                min_lr: 0.01,
                step_size: 4,
                step_rate: 2.0,
                staircase: false,
            },
            0.5,
            true,
        );
        close(cont.lr_at(-1), 0.01);
        for k in 0..10 {
            close(cont.lr_at(k), 0.01 * (1.0 + 2.0 * (k + 1) as f64 / 4.0));
        }
        let stairs = LrSchedule::new(
            SchedulerConfig::LrRangeTest {
                min_lr: 0.01,
                step_size: 4,
                step_rate: 2.0,
                staircase: true,
            },
            0.5,
            true,
        );
        for k in 0..10 {
            close(stairs.lr_at(k), 0.01 * (1.0 + 2.0 * ((k + 1) / 4) as f64));
        }
    }
}
