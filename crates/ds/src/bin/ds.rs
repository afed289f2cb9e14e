//! The `ds` command: `ds report`, `ds conformance`.

use clap::{Parser, Subcommand};
use ds::cli;
use std::process::ExitCode;

/// DeepSpeed's training core in Rust.
#[derive(Debug, Parser)]
#[command(name = "ds", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Version, backends compiled in, devices found with memory and dtype capabilities.
    Report,
    /// Run the conformance suite on a backend and print the coverage matrix.
    Conformance {
        /// Backend to check: cpu, cuda, rocm or wgpu.
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Random inputs per kernel and dtype (default: DS_CONFORMANCE_CASES or 24).
        #[arg(long)]
        cases: Option<u32>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Report => cli::report::run(),
        Command::Conformance { backend, cases } => cli::conformance::run(&backend, cases),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
