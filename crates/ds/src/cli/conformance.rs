//! `ds conformance --backend NAME`: the coverage matrix of one backend.

use crate::backends::{BackendKind, DeviceTask, with_backend};
use conformance::{Config, Report, run_suite};
use ds_core::{Backend, Device, Result};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

struct Suite {
    cfg: Config,
}

impl DeviceTask for Suite {
    type Output = Report;
    fn run<B: Backend>(self, device: Device<B>) -> Report {
        let live = std::io::stderr().is_terminal();
        run_suite(&device, &self.cfg, |row| {
            if live {
                eprint!("\r\x1b[2Kchecking {row}");
                let _ = std::io::stderr().flush();
            }
        })
    }
}

/// Runs the suite and prints the matrix; exit code 1 on any failure.
///
/// # Errors
/// An unknown backend name, or a backend that cannot open a device.
pub fn run(backend: &str, cases: Option<u32>) -> Result<ExitCode> {
    let kind: BackendKind = backend.parse()?;
    let mut cfg = Config::from_env();
    if let Some(n) = cases {
        cfg.cases = n;
    }
    let report = with_backend(kind, Suite { cfg })?;
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    print!("{}", report.render());
    Ok(if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
