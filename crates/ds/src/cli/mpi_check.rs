//! `ds conformance --comm mpi`: checks ds's MPI collectives on the world it is started in.
//! `mpirun -np N ds conformance --comm mpi` runs the conformance suite's collective cases
//! (every operation, dtype and length, with the same expectations as the threaded
//! collectives) and exits non-zero on any failure. It lives here, in the crate that knows
//! both, so ds-comm-mpi's library depends on ds-core alone. The hidden `--mode` values
//! provoke the failures the guards exist for, for the tests (`crates/ds/tests/mpirun.rs`):
//!
//! - `mismatch`: rank 1 calls all_reduce with one element fewer than the others;
//! - `late`: rank 1 never reaches the barrier the others wait at;
//! - `die`: rank 1 kills itself (SIGKILL) while the others wait in an all_reduce.

use conformance::cases::collectives::{CollectiveOp, LENGTHS, collective_body};
use ds_comm_mpi::init_distributed;
use ds_core::cpu::CpuBackend;
use ds_core::{BufferExt, Collectives, DType, Device, ReduceOp};
use std::process::ExitCode;
use std::time::Duration;

/// Runs `mode` (`collectives`, or one of the fault modes) on the MPI world and prints each
/// rank's summary; exit code 0 when it passed.
pub fn run(mode: &str) -> ExitCode {
    let world = match init_distributed() {
        Ok(w) => w,
        Err(e) => {
            ds_comm_mpi::say(format_args!("ds conformance --comm mpi: {e}"));
            return ExitCode::from(2);
        }
    };
    let device = match CpuBackend::new() {
        Ok(b) => Device::new(b),
        Err(e) => {
            ds_comm_mpi::say(format_args!("ds conformance --comm mpi: {e}"));
            return ExitCode::from(2);
        }
    };
    let comm: &dyn Collectives<CpuBackend> = &world.comm;
    let rank = comm.rank();
    let outcome = match mode {
        "collectives" => collectives(&device, comm),
        "mismatch" => mismatch(&device, comm),
        "late" => late(comm),
        "die" => die(&device, comm),
        other => Err(format!(
            "unknown mode {other:?}: use collectives, mismatch, late or die"
        )),
    };
    match outcome {
        Ok(summary) => {
            println!("rank {rank}: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            ds_comm_mpi::say(format_args!("rank {rank}: FAILED: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn collectives(
    device: &Device<CpuBackend>,
    comm: &dyn Collectives<CpuBackend>,
) -> Result<String, String> {
    let world = comm.world_size();
    let (mut checked, mut cases, mut failures) = (0usize, 0usize, Vec::new());
    for op in CollectiveOp::ALL {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (i, &len) in LENGTHS.iter().enumerate() {
                cases += 1;
                match collective_body(device, comm, op, dtype, len, 1000 + i as u64) {
                    Ok(n) => checked += n,
                    Err(e) => failures.push(format!("{op} {dtype} len {len}: {e}")),
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(format!(
            "{cases} collective cases passed on {world} rank(s) ({checked} values checked)"
        ))
    } else {
        Err(format!(
            "{} of {cases} cases failed: {}",
            failures.len(),
            failures.join(" | ")
        ))
    }
}

/// Rank 1 disagrees about the length; every rank must get the mismatch error.
fn mismatch(
    device: &Device<CpuBackend>,
    comm: &dyn Collectives<CpuBackend>,
) -> Result<String, String> {
    let len = if comm.rank() == 1 { 99 } else { 100 };
    let mut buf = device.alloc(DType::F32, len).map_err(|e| e.to_string())?;
    match comm.all_reduce(device, buf.all_mut(), ReduceOp::Sum) {
        Ok(()) => Ok("all_reduce with mismatched lengths was not caught".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Rank 1 never arrives; the others' barrier must time out and end the job.
fn late(comm: &dyn Collectives<CpuBackend>) -> Result<String, String> {
    if comm.rank() == 1 {
        std::thread::sleep(Duration::from_secs(600));
    }
    comm.barrier().map_err(|e| e.to_string())?;
    Ok("the barrier completed although rank 1 never arrived".into())
}

/// Rank 1 dies; the others, waiting in an all_reduce, must be ended by the launcher.
fn die(device: &Device<CpuBackend>, comm: &dyn Collectives<CpuBackend>) -> Result<String, String> {
    comm.barrier().map_err(|e| e.to_string())?;
    if comm.rank() == 1 {
        ds_comm_mpi::say(format_args!("rank 1: killing itself with SIGKILL"));
        // SAFETY: raising a signal has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    let mut buf = device.alloc(DType::F32, 1000).map_err(|e| e.to_string())?;
    comm.all_reduce(device, buf.all_mut(), ReduceOp::Sum)
        .map_err(|e| e.to_string())?;
    Ok("the all_reduce completed although rank 1 died".into())
}
