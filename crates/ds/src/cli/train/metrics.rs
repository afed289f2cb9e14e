//! What a run records: one JSON line per optimizer step, and a progress bar on a terminal.

use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// One optimizer step's figures.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// The global step after this step.
    pub step: u64,
    /// Mean loss (nats per token).
    pub loss: f32,
    /// The LR the step used.
    pub lr: f64,
    /// The loss scale (1 without fp16).
    pub loss_scale: f32,
    /// Gradient norm before clipping, when finite.
    pub grad_norm: Option<f32>,
    /// Whether the step was skipped (fp16 overflow).
    pub skipped: bool,
    /// Tokens per second over all ranks, for this step.
    pub tokens_per_s: f64,
    /// The loss on the held-out validation windows, on the steps that measured it.
    pub val_loss: Option<f32>,
}

/// The metrics file (`metrics.jsonl`): one JSON object per optimizer step.
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
}

impl Metrics {
    /// Opens `path` for a run starting after step `from`: lines of later steps (from an
    /// interrupted run being resumed) are dropped, earlier ones kept.
    ///
    /// # Errors
    /// A one-line message naming the file.
    pub fn open(path: &Path, from: u64) -> Result<Self, String> {
        let kept: Vec<String> = if from > 0 {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|l| step_of(l).is_some_and(|s| s <= from))
                .map(str::to_string)
                .collect()
        } else {
            Vec::new()
        };
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(path, text)
            .map_err(|e| format!("cannot write the metrics file {}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open the metrics file {}: {e}", path.display()))?;
        Ok(Metrics {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one step.
    ///
    /// # Errors
    /// A one-line message naming the file.
    pub fn write(&mut self, r: &Record) -> Result<(), String> {
        let line = json!({
            "step": r.step,
            "loss": r.loss,
            "lr": r.lr,
            "loss_scale": r.loss_scale,
            "grad_norm": r.grad_norm,
            "skipped": r.skipped,
            "tokens_per_s": r.tokens_per_s,
            "val_loss": r.val_loss,
        });
        writeln!(self.file, "{line}")
            .map_err(|e| format!("cannot write the metrics file {}: {e}", self.path.display()))
    }
}

fn step_of(line: &str) -> Option<u64> {
    serde_json::from_str::<Value>(line)
        .ok()?
        .get("step")?
        .as_u64()
}

/// (step, loss) of every line of a metrics file.
pub fn read_losses(path: &Path) -> Vec<(u64, f32)> {
    read_series(path, "loss")
}

/// (step, value of `key`) of every line of a metrics file that has it.
pub fn read_series(path: &Path, key: &str) -> Vec<(u64, f32)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            Some((v.get("step")?.as_u64()?, v.get(key)?.as_f64()? as f32))
        })
        .collect()
}

/// A one-line progress bar on standard error (`indicatif`), drawn only when it is a terminal
/// and only on the rank that prints: step, loss, LR, loss scale, tokens/s and the ETA.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// A bar for steps `first + 1 ..= total`.
    pub fn new(first: u64, total: u64, enabled: bool) -> Self {
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(
                Some(total),
                indicatif::ProgressDrawTarget::stderr(),
            );
            let style = indicatif::ProgressStyle::with_template(
                "[{bar:24}] step {pos}/{len} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("# ");
            bar.set_style(style);
            bar.set_position(first);
            bar.reset_eta();
            bar
        });
        Progress { bar }
    }

    /// Runs `f` with the bar cleared (what it prints stays above the bar), then redraws it.
    pub fn around<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Moves the bar to `r`.
    pub fn draw(&self, r: &Record) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {:.4} lr {:.2e} scale {} {:.0} tok/s",
                r.loss, r.lr, r.loss_scale, r.tokens_per_s
            ));
            bar.set_position(r.step);
        }
    }

    /// Erases the bar for good.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_keeps_the_steps_before_the_checkpoint() {
        let dir = std::env::temp_dir().join(format!("ds-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("metrics.jsonl");
        let rec = |step| Record {
            step,
            loss: step as f32,
            lr: 0.1,
            loss_scale: 1.0,
            grad_norm: Some(1.0),
            skipped: false,
            tokens_per_s: 1.0,
            val_loss: (step == 3).then_some(2.5),
        };
        let mut m = Metrics::open(&path, 0).expect("open");
        for s in 1..=5 {
            m.write(&rec(s)).expect("write");
        }
        drop(m);
        let mut m = Metrics::open(&path, 3).expect("reopen");
        m.write(&rec(4)).expect("write");
        let steps: Vec<u64> = read_losses(&path).iter().map(|p| p.0).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
