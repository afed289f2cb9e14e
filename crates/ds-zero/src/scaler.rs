//! fp16 loss scaling: DeepSpeed's dynamic loss scaler (0.19), and a static scale.
//!
//! Dynamic rule, per optimizer step (overflow or not), as DeepSpeed 0.19's
//! `DynamicLossScaler.update_scale`:
//! - overflow: when the hysteresis is exhausted (`delayed_shift == 1` or the current hysteresis
//!   is 1) the scale halves, down to the floor, and an overflow with the scale already *at* the
//!   floor is an error (training cannot make progress); otherwise the hysteresis counts down and
//!   the scale stays. Either way the step is skipped and the overflow iteration remembered.
//! - no overflow: with consecutive hysteresis the hysteresis is refilled; then, with
//!   `stable = iter - last_overflow_iter - 1` (the clean steps before this one since the last
//!   overflow), the scale doubles when `stable > 0` and `stable % window == 0` (and without
//!   consecutive hysteresis the hysteresis is refilled then).
//!
//! The iteration counter starts at 0 and the last overflow at -1: without overflows the scale
//! doubles on steps `window`, `2 window`, ... (0-based), i.e. after every `window` clean steps
//! that precede it. (DeepSpeed up to 0.16 doubled one step earlier; 0.19 is followed.)

use crate::config::Fp16Config;
use serde_json::{Value, json};

/// Reaching the floor scale.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "the fp16 loss scale is already at its minimum ({scale}) and the gradients still overflow: training cannot \
     continue; lower the learning rate, enable gradient_clipping, check the data for NaN/inf, or train in bf16"
)]
pub struct ScaleFloorError {
    /// The floor scale.
    pub scale: f32,
}

/// The loss scaler of a training run.
#[derive(Debug, Clone, PartialEq)]
pub enum LossScaler {
    /// No scaling (fp32, bf16).
    None,
    /// A fixed scale.
    Static(f32),
    /// DeepSpeed's dynamic scaler.
    Dynamic(DynamicScaler),
}

/// State of the dynamic scaler.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicScaler {
    /// The current scale.
    pub scale: f32,
    /// Optimizer steps seen.
    pub iter: i64,
    /// The iteration of the last overflow (-1 before any).
    pub last_overflow_iter: i64,
    /// Overflows still tolerated before the scale halves.
    pub hysteresis: u64,
    /// The configured hysteresis (`delayed_shift`).
    pub delayed_shift: u64,
    /// Clean steps per doubling.
    pub window: u64,
    /// The floor.
    pub min_scale: f32,
    /// Refill the hysteresis on every clean step.
    pub consecutive_hysteresis: bool,
}

impl LossScaler {
    /// The scaler a precision setting asks for.
    pub fn from_config(fp16: Option<&Fp16Config>) -> Self {
        match fp16 {
            None => LossScaler::None,
            Some(c) => match c.static_scale {
                Some(s) => LossScaler::Static(s),
                None => LossScaler::Dynamic(DynamicScaler {
                    scale: 2f32.powi(c.initial_scale_power as i32),
                    iter: 0,
                    last_overflow_iter: -1,
                    hysteresis: c.hysteresis,
                    delayed_shift: c.hysteresis,
                    window: c.loss_scale_window,
                    min_scale: c.min_loss_scale,
                    consecutive_hysteresis: c.consecutive_hysteresis,
                }),
            },
        }
    }

    /// The scale the loss is multiplied by now.
    pub fn scale(&self) -> f32 {
        match self {
            LossScaler::None => 1.0,
            LossScaler::Static(s) => *s,
            LossScaler::Dynamic(d) => d.scale,
        }
    }

    /// Updates after an optimizer step that did (`overflow`) or did not overflow.
    ///
    /// # Errors
    /// [`ScaleFloorError`] when a dynamic scale at its floor overflows again.
    pub fn update(&mut self, overflow: bool) -> Result<(), ScaleFloorError> {
        let LossScaler::Dynamic(d) = self else {
            return Ok(());
        };
        if overflow {
            if d.delayed_shift == 1 || d.hysteresis == 1 {
                if d.scale == d.min_scale {
                    return Err(ScaleFloorError { scale: d.scale });
                }
                d.scale = (d.scale / 2.0).max(d.min_scale);
            } else {
                d.hysteresis -= 1;
            }
            d.last_overflow_iter = d.iter;
        } else {
            if d.consecutive_hysteresis {
                d.hysteresis = d.delayed_shift;
            }
            let stable = d.iter - d.last_overflow_iter - 1;
            if stable > 0 && stable % d.window as i64 == 0 {
                if !d.consecutive_hysteresis {
                    d.hysteresis = d.delayed_shift;
                }
                d.scale *= 2.0;
            }
        }
        d.iter += 1;
        Ok(())
    }

    pub(crate) fn to_json(&self) -> Value {
        match self {
            LossScaler::None => json!({"kind": "none"}),
            LossScaler::Static(s) => json!({"kind": "static", "scale": s}),
            LossScaler::Dynamic(d) => json!({
                "kind": "dynamic", "scale": d.scale, "iter": d.iter, "last_overflow_iter": d.last_overflow_iter,
                "hysteresis": d.hysteresis,
            }),
        }
    }

    /// Restores the state saved by `to_json` (the configuration comes from the config).
    pub(crate) fn restore(&mut self, v: &Value) -> Option<()> {
        match self {
            LossScaler::Dynamic(d) => {
                let scale = v.get("scale")?.as_f64()? as f32;
                let iter = v.get("iter")?.as_i64()?;
                let last_overflow_iter = v.get("last_overflow_iter")?.as_i64()?;
                let hysteresis = v.get("hysteresis")?.as_u64()?;
                // A damaged state must not reach the step: a zero or non-finite scale would
                // divide the gradients by zero, a hysteresis out of range would underflow.
                let valid = scale.is_finite()
                    && scale > 0.0
                    && (0..1 << 53).contains(&iter)
                    && (-1..iter).contains(&last_overflow_iter)
                    && (1..=d.delayed_shift).contains(&hysteresis);
                if !valid {
                    return None;
                }
                (d.scale, d.iter, d.last_overflow_iter, d.hysteresis) =
                    (scale, iter, last_overflow_iter, hysteresis);
                Some(())
            }
            LossScaler::Static(_) => (v.get("kind")?.as_str()? == "static").then_some(()),
            LossScaler::None => Some(()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Expected sequences are derived by hand from DeepSpeed 0.19's `update_scale` (see the
    //! module docs); the mixed pattern extends the worked trace of DeepSpeed's rule.
    use super::*;

    fn scaler(hysteresis: u64, consecutive: bool) -> LossScaler {
        LossScaler::from_config(Some(&Fp16Config {
            initial_scale_power: 8,
            loss_scale_window: 2,
            hysteresis,
            consecutive_hysteresis: consecutive,
            ..Fp16Config::default()
        }))
    }

    /// The scale after each update for a pattern of overflows (`true`).
    fn run(s: &mut LossScaler, pattern: &[bool]) -> Vec<f32> {
        pattern
            .iter()
            .map(|&o| {
                s.update(o).expect("not at the floor");
                s.scale()
            })
            .collect()
    }

    #[test]
    fn without_overflow_the_scale_doubles_every_window() {
        for (h, c) in [(1, false), (2, false), (2, true)] {
            let mut s = scaler(h, c);
            assert_eq!(s.scale(), 256.0);
            let got = run(&mut s, &[false; 7]);
            assert_eq!(got, [256.0, 256.0, 512.0, 512.0, 1024.0, 1024.0, 2048.0]);
        }
    }

    #[test]
    fn overflowing_every_step_halves_to_the_floor_then_fails() {
        // Hysteresis off: every overflow halves.
        let mut s = scaler(1, false);
        let got = run(&mut s, &[true; 8]);
        assert_eq!(got, [128.0, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]);
        let err = s.update(true).expect_err("at the floor");
        assert_eq!(err.scale, 1.0);
        assert!(err.to_string().contains("minimum"), "{err}");
        // Hysteresis 2: the first overflow only uses up the hysteresis.
        let mut s = scaler(2, false);
        let got = run(&mut s, &[true; 9]);
        assert_eq!(got, [256.0, 128.0, 64.0, 32.0, 16.0, 8.0, 4.0, 2.0, 1.0]);
        assert!(s.update(true).is_err());
    }

    const MIXED: [bool; 11] = [
        false, false, false, true, true, false, false, false, true, false, true,
    ];

    #[test]
    fn a_mixed_pattern_with_hysteresis_refilled_only_on_doubling() {
        let mut s = scaler(2, false);
        let got = run(&mut s, &MIXED);
        assert_eq!(
            got,
            [
                256.0, 256.0, 512.0, 512.0, 256.0, 256.0, 256.0, 512.0, 512.0, 512.0, 256.0
            ]
        );
    }

    #[test]
    fn a_mixed_pattern_with_consecutive_hysteresis() {
        let mut s = scaler(2, true);
        let got = run(&mut s, &MIXED);
        // The clean step 9 refills the hysteresis, so the overflow at 10 does not halve.
        assert_eq!(
            got,
            [
                256.0, 256.0, 512.0, 512.0, 256.0, 256.0, 256.0, 512.0, 512.0, 512.0, 512.0
            ]
        );
    }

    #[test]
    fn a_mixed_pattern_without_hysteresis() {
        let mut s = scaler(1, false);
        let got = run(&mut s, &MIXED);
        assert_eq!(
            got,
            [
                256.0, 256.0, 512.0, 256.0, 128.0, 128.0, 128.0, 256.0, 128.0, 128.0, 64.0
            ]
        );
    }

    #[test]
    fn a_static_scale_never_changes_and_state_round_trips() {
        let mut s = LossScaler::from_config(Some(&Fp16Config {
            static_scale: Some(128.0),
            ..Fp16Config::default()
        }));
        for o in [true, false, true] {
            s.update(o).expect("static never fails");
            assert_eq!(s.scale(), 128.0);
        }
        let mut d = scaler(2, false);
        run(&mut d, &MIXED[..6]);
        let mut fresh = scaler(2, false);
        fresh.restore(&d.to_json()).expect("restores");
        assert_eq!(fresh, d);
    }
}
