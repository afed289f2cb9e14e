//! The coverage matrix: every kernel x dtype, every collective x dtype, and the bad-input
//! checks, run on one device and rendered as the table `ds conformance` prints.

use crate::cases::collective_errors;
use crate::cases::collectives::{CollectiveOp, threaded_sweep};
use crate::cases::{Config, Outcome, errors, run_case};
use ds_core::{Backend, DType, Device, Kernel};
use std::fmt::Write as _;

/// One row of the matrix.
#[derive(Debug, Clone)]
pub struct Row {
    /// The kernel or collective.
    pub name: String,
    /// Outcome per dtype, in [`DType::FLOATS`] order.
    pub cells: Vec<(DType, Outcome)>,
}

/// Everything one run of the suite found.
#[derive(Debug, Clone)]
pub struct Report {
    /// Backend and device, as the device describes itself.
    pub device: String,
    /// Kernel rows.
    pub kernels: Vec<Row>,
    /// Collective rows (threaded, worlds 1-4).
    pub collectives: Vec<Row>,
    /// Bad-input checks: name and outcome (`Pass(n)` = n refusals verified).
    pub validation: Vec<(String, Outcome)>,
}

fn outcome(r: Result<usize, String>) -> Outcome {
    match r {
        Ok(n) => Outcome::Pass(n),
        Err(e) => Outcome::Fail(e),
    }
}

/// Runs the whole suite on `dev`; `progress` is told each row's name before it runs.
pub fn run_suite<B: Backend>(
    dev: &Device<B>,
    cfg: &Config,
    mut progress: impl FnMut(&str),
) -> Report {
    let mut kernels = Vec::new();
    for kernel in Kernel::ALL {
        progress(kernel.name());
        let cells = DType::FLOATS
            .into_iter()
            .map(|d| (d, run_case(dev, kernel, d, cfg)))
            .collect();
        kernels.push(Row {
            name: kernel.name().to_string(),
            cells,
        });
    }
    let mut collectives = Vec::new();
    for op in CollectiveOp::ALL {
        let name = op.to_string();
        progress(&name);
        let cells = DType::FLOATS
            .into_iter()
            .map(|d| (d, outcome(threaded_sweep(dev, op, d))))
            .collect();
        collectives.push(Row { name, cells });
    }
    progress("bad input");
    let mut validation: Vec<(String, Outcome)> = Kernel::ALL
        .into_iter()
        .map(|k| (k.name().to_string(), outcome(errors::bad_input(dev, k))))
        .collect();
    validation.push((
        "collective arguments".into(),
        outcome(collective_errors::bad_arguments(dev)),
    ));
    validation.push((
        "collective mismatch".into(),
        outcome(collective_errors::mismatch_fails_every_rank(dev)),
    ));
    validation.push((
        "collective dead rank".into(),
        outcome(collective_errors::dead_rank_fails_fast(dev)),
    ));
    validation.push((
        "collective timeout".into(),
        outcome(collective_errors::timeout_names_missing_ranks(dev)),
    ));
    let info = dev.info();
    Report {
        device: format!("{} ({})", info.backend, info.name),
        kernels,
        collectives,
        validation,
    }
}

fn cell(o: &Outcome) -> String {
    match o {
        Outcome::Pass(_) => "pass".into(),
        Outcome::Fail(_) => "FAIL".into(),
        Outcome::Unsupported(_) => "unsupported".into(),
    }
}

impl Report {
    /// Failed cells and checks.
    pub fn failures(&self) -> usize {
        let rows = self.kernels.iter().chain(&self.collectives);
        rows.flat_map(|r| &r.cells)
            .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
            .count()
            + self
                .validation
                .iter()
                .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
                .count()
    }

    /// The matrix as text, failures and unsupported reasons listed under it.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "conformance on {}", self.device);
        for (title, rows) in [
            ("kernel", &self.kernels),
            ("collective (threads, 1-4 ranks)", &self.collectives),
        ] {
            let _ = writeln!(
                s,
                "\n{title:<34} {:>12} {:>12} {:>12} {:>10}",
                "f32", "f16", "bf16", "checks"
            );
            for row in rows.iter() {
                let checks: usize = row
                    .cells
                    .iter()
                    .map(|(_, o)| if let Outcome::Pass(n) = o { *n } else { 0 })
                    .sum();
                let _ = write!(s, "{:<34}", row.name);
                for (_, o) in &row.cells {
                    let _ = write!(s, " {:>12}", cell(o));
                }
                let _ = writeln!(s, " {checks:>10}");
            }
        }
        let refusals: usize = self
            .validation
            .iter()
            .map(|(_, o)| if let Outcome::Pass(n) = o { *n } else { 0 })
            .sum();
        let failed_validation = self
            .validation
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
            .count();
        let _ = writeln!(
            s,
            "\nbad input: {} checks, {refusals} refusals naming the argument verified, {failed_validation} failed",
            self.validation.len()
        );
        let mut notes = Vec::new();
        for row in self.kernels.iter().chain(&self.collectives) {
            for (d, o) in &row.cells {
                match o {
                    Outcome::Fail(m) => notes.push(format!("FAIL {} {d}: {m}", row.name)),
                    Outcome::Unsupported(m) => {
                        notes.push(format!("unsupported {} {d}: {m}", row.name))
                    }
                    Outcome::Pass(_) => {}
                }
            }
        }
        for (name, o) in &self.validation {
            if let Outcome::Fail(m) = o {
                notes.push(format!("FAIL bad input {name}: {m}"));
            }
        }
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
        let _ = writeln!(s, "\n{} failure(s)", self.failures());
        s
    }
}
