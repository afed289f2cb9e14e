//! The `ds` command: `ds train`, `ds zero-to-fp32`, `ds report`, `ds conformance`,
//! `ds config check`, `ds estimate`.

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
    /// Run the conformance suite on a backend and print the coverage matrix, or (`--comm mpi`,
    /// under mpirun) the collective cases on the MPI world.
    Conformance {
        /// The backend to check (its help lists every backend ds knows).
        #[arg(long, default_value = "cpu", help = format!("Backend to check: {}", ds::backends::BackendKind::names()))]
        backend: String,
        /// Random inputs per kernel and dtype (default: DS_CONFORMANCE_CASES or 24).
        #[arg(long)]
        cases: Option<u32>,
        /// Check collectives instead: `mpi` (start it under mpirun; needs the mpi feature).
        #[arg(long)]
        comm: Option<String>,
        /// With --comm mpi: `collectives`, or a fault the guards must catch (tests).
        #[arg(long, default_value = "collectives", hide = true)]
        mode: String,
        /// Ignored: lets tests find their processes.
        #[arg(long, hide = true)]
        tag: Option<String>,
    },
    /// Train a GPT (or an MLP) with the engine: progress, metrics, loss plot, checkpoints.
    Train(Box<cli::train::TrainArgs>),
    /// Consolidate a checkpoint's ZeRO partitions into one fp32 safetensors file.
    ZeroToFp32 {
        /// The checkpoint directory (holding `latest` and the tag directories).
        checkpoint_dir: std::path::PathBuf,
        /// The safetensors file to write.
        output: std::path::PathBuf,
        /// The tag to read (default: the one `latest` names).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Model-state bytes per rank at ZeRO stages 0-3 for a parameter count, from the layout
    /// the engine allocates with.
    Estimate {
        /// The number of model parameters.
        #[arg(long)]
        params: u64,
        /// The number of data-parallel ranks.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        world_size: u32,
        /// A DeepSpeed config for the precision, optimizer and stage-3 settings (default: fp16
        /// with AdamW).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// DeepSpeed JSON configs.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a config and print every resolved setting as JSON (exit code 1 on an error).
    Check {
        /// The DeepSpeed JSON config.
        file: std::path::PathBuf,
        /// The number of data-parallel ranks to resolve the batch sizes for.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        world_size: u32,
        /// Resolve `"auto"` values as `ds train --steps N` would.
        #[arg(long, default_value_t = 800)]
        steps: u64,
        /// Resolve `"auto"` values as `ds train --dim N` would (the model width).
        #[arg(long, default_value_t = 128)]
        dim: usize,
    },
}

/// `ds conformance --comm NAME`: the collectives' cases on a real transport.
fn conformance_comm(comm: &str, mode: &str) -> ExitCode {
    match comm {
        #[cfg(feature = "mpi")]
        "mpi" => cli::mpi_check::run(mode),
        #[cfg(not(feature = "mpi"))]
        "mpi" => {
            let _ = mode;
            eprintln!("error: this ds was built without MPI: rebuild with `--features mpi`");
            ExitCode::FAILURE
        }
        other => {
            eprintln!("error: unknown --comm `{other}`: the transport to check is `mpi`");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Usage errors exit with 1 like every other error (help and version still exit 0).
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::FAILURE;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    let result = match args.command {
        Command::Train(train) => {
            return match cli::train::run(&train) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::ZeroToFp32 {
            checkpoint_dir,
            output,
            tag,
        } => {
            return match cli::zero_to_fp32::run(&checkpoint_dir, &output, tag.as_deref()) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Estimate {
            params,
            world_size,
            config,
        } => {
            let text = match config.as_ref().map(std::fs::read_to_string).transpose() {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: cannot read the config: {e}");
                    return ExitCode::FAILURE;
                }
            };
            return match cli::estimate::estimate(params, world_size as usize, text.as_deref()) {
                Ok(table) => {
                    print!("{table}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Report => cli::report::run(),
        Command::Conformance {
            comm: Some(comm),
            mode,
            ..
        } => return conformance_comm(&comm, &mode),
        Command::Conformance { backend, cases, .. } => cli::conformance::run(&backend, cases),
        Command::Config {
            command:
                ConfigCommand::Check {
                    file,
                    world_size,
                    steps,
                    dim,
                },
        } => {
            return match cli::config::check(&file, world_size as usize, steps, dim) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
