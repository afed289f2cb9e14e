//! `steps_per_print` progress lines on rank 0: loss, LR, loss scale, throughput, skipped
//! steps, and with `wall_clock_breakdown` the time spent in forward, backward and step.

use super::{Engine, StepReport, Timers};
use crate::model::Model;
use ds_core::Backend;
use std::time::Instant;

/// Where the last progress line left off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogState {
    since: Instant,
    samples: u64,
}

impl LogState {
    pub(super) fn new() -> Self {
        LogState {
            since: Instant::now(),
            samples: 0,
        }
    }
}

/// One progress line.
pub(super) fn format_line(
    report: &StepReport,
    samples_per_s: f64,
    skipped: u64,
    breakdown: Option<&Timers>,
) -> String {
    let mut line = format!(
        "[ds] step {}: loss {:.6}, lr {:.4e}, loss scale {}, {:.1} samples/s, skipped steps {}",
        report.global_step, report.loss, report.lr, report.loss_scale, samples_per_s, skipped
    );
    if report.skipped {
        line.push_str(" (this step overflowed and was skipped)");
    }
    if let Some(t) = breakdown {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        line.push_str(&format!(
            ", forward {:.1} ms, backward {:.1} ms, step {:.1} ms",
            ms(t.forward),
            ms(t.backward),
            ms(t.step)
        ));
    }
    line
}

impl<B: Backend, M: Model<B>> Engine<B, M> {
    pub(super) fn log_step(&mut self, report: &StepReport) {
        let Some(every) = self.config.steps_per_print else {
            return;
        };
        if !self.counters.global_steps.is_multiple_of(every) {
            return;
        }
        let elapsed = self.log.since.elapsed().as_secs_f64();
        let samples = self.counters.global_samples - self.log.samples;
        let rate = if elapsed > 0.0 {
            samples as f64 / elapsed
        } else {
            0.0
        };
        if self.layout.rank == 0 {
            let breakdown = self.config.wall_clock_breakdown.then_some(&self.timers);
            println!(
                "{}",
                format_line(report, rate, self.counters.skipped_steps, breakdown)
            );
        }
        self.log = LogState {
            since: Instant::now(),
            samples: self.counters.global_samples,
        };
        self.timers = Timers::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_every_quantity() {
        let r = StepReport {
            global_step: 10,
            loss: 0.5,
            lr: 1e-3,
            loss_scale: 256.0,
            grad_norm: Some(1.0),
            skipped: true,
        };
        let t = Timers::default();
        let line = format_line(&r, 123.4, 2, Some(&t));
        for part in [
            "step 10",
            "loss 0.500000",
            "lr 1.0000e-3",
            "loss scale 256",
            "123.4 samples/s",
            "skipped steps 2",
            "skipped)",
            "forward",
        ] {
            assert!(line.contains(part), "{line} lacks {part}");
        }
    }
}
