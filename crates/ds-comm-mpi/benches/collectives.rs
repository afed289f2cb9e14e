//! ds-comm-mpi beside plain rsmpi calls on the same buffers, in one run of 2 ranks:
//! f32 all_reduce(sum), and reduce_scatter + all_gather, at 1M and 16M elements.
//!
//! `cargo bench -p ds-comm-mpi --bench collectives` starts itself under `mpirun -np 2`
//! (set `DS_BENCH_RANKS` for another count). The two sides alternate iteration by iteration
//! after a barrier, so machine noise falls on both alike; each iteration's time is the
//! slowest rank's. Prints medians, algorithm bandwidth (bytes of the buffer per second) and
//! the ds/rsmpi time ratio. ds runs with its release defaults: the arrival handshake of the
//! timeout guard is on, validation is off.
//!
//! A third column times the very MPI call ds makes for f32 sums (`MPI_Allreduce` with
//! `MPI_IN_PLACE`) as one unsplit call, which rsmpi's safe API cannot express: the gap
//! between it and ds is ds's own cost (handshake, chunking), the gap between it and rsmpi is
//! in-place versus separate buffers.
//!
//! Not a criterion bench: criterion picks iteration counts per process, and ranks that run
//! different counts of a collective deadlock.

use ds_comm_mpi::init_distributed;
use ds_core::cpu::CpuBackend;
use ds_core::{BufferExt, Collectives, Device, ReduceOp};
use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::CommunicatorCollectives;
use std::os::raw::c_void;
use std::process::{Command, ExitCode};
use std::time::Instant;

unsafe extern "C" {
    /// `MPI_IN_PLACE`, from ds-comm-mpi's C shim.
    fn ds_mpi_in_place() -> *mut c_void;
}

/// One unsplit `MPI_Allreduce(MPI_IN_PLACE, data, MPI_FLOAT, MPI_SUM)`.
fn in_place_sum(data: &mut [f32]) -> Result<(), String> {
    let n = i32::try_from(data.len()).map_err(|_| "too long for one MPI call".to_string())?;
    // SAFETY: `data` is valid for reads and writes of `n` f32 for the whole blocking call;
    // MPI is initialized; the datatype, op and communicator are MPI's own constants.
    let rc = unsafe {
        mpi::ffi::MPI_Allreduce(
            ds_mpi_in_place(),
            data.as_mut_ptr().cast(),
            n,
            mpi::ffi::RSMPI_FLOAT,
            mpi::ffi::RSMPI_SUM,
            mpi::ffi::RSMPI_COMM_WORLD,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("MPI_Allreduce failed with code {rc}"))
    }
}

fn main() -> ExitCode {
    if std::env::var_os("OMPI_COMM_WORLD_SIZE").is_none() && std::env::var_os("PMI_SIZE").is_none()
    {
        return relaunch();
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("collectives bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts this executable again under `mpirun`.
fn relaunch() -> ExitCode {
    let ranks = std::env::var("DS_BENCH_RANKS").unwrap_or_else(|_| "2".into());
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("collectives bench: cannot find this executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new("mpirun")
        .args(["-np", &ranks, "--oversubscribe"])
        .arg(exe)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("collectives bench: mpirun exited with {s}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "collectives bench: cannot start mpirun ({e}); install Open MPI (apt-get install \
                 openmpi-bin libopenmpi-dev)"
            );
            ExitCode::FAILURE
        }
    }
}

/// Times `f` after a barrier; returns the slowest rank's seconds.
fn timed(
    world: &SimpleCommunicator,
    f: &mut dyn FnMut() -> Result<(), String>,
) -> Result<f64, String> {
    world.barrier();
    let start = Instant::now();
    f()?;
    let mine = start.elapsed().as_secs_f64();
    let mut slowest = 0.0f64;
    world.all_reduce_into(&mine, &mut slowest, SystemOperation::max());
    Ok(slowest)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Pair {
    name: String,
    bytes: usize,
    ds: Vec<f64>,
    plain: Vec<f64>,
    in_place: Vec<f64>,
}

fn run() -> Result<(), String> {
    let dist = init_distributed().map_err(|e| e.to_string())?;
    let device = Device::new(CpuBackend::new().map_err(|e| e.to_string())?);
    let comm: &dyn Collectives<CpuBackend> = &dist.comm;
    let world = SimpleCommunicator::world();
    let ranks = comm.world_size();
    let mut pairs = Vec::new();
    for (len, iters) in [(1usize << 20, 60usize), (16 << 20, 20)] {
        let label = if len >= 1 << 24 { "16M" } else { "1M" };
        let mut buf = device
            .alloc_from(&vec![1.0f32; len])
            .map_err(|e| e.to_string())?;
        let mut send = vec![1.0f32; len];
        let mut recv = vec![0.0f32; len];
        let part = len / ranks;
        let mut block = vec![0.0f32; part];
        let mut ar = Pair {
            name: format!("all_reduce(sum) f32 {label}"),
            bytes: len * 4,
            ds: vec![],
            plain: vec![],
            in_place: vec![],
        };
        let mut rsag = Pair {
            name: format!("reduce_scatter + all_gather f32 {label}"),
            bytes: len * 4,
            ds: vec![],
            plain: vec![],
            in_place: vec![],
        };
        for i in 0..iters + 3 {
            let t_ds = timed(&world, &mut || {
                comm.all_reduce(&device, buf.all_mut(), ReduceOp::Sum)
                    .map_err(|e| e.to_string())
            })?;
            let t_plain = timed(&world, &mut || {
                world.all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
                Ok(())
            })?;
            let t_raw = timed(&world, &mut || in_place_sum(&mut send))?;
            let t_ds2 = timed(&world, &mut || {
                comm.reduce_scatter_in_place(&device, buf.all_mut(), ReduceOp::Sum)
                    .and_then(|()| comm.all_gather_in_place(&device, buf.all_mut()))
                    .map_err(|e| e.to_string())
            })?;
            let t_plain2 = timed(&world, &mut || {
                world.reduce_scatter_block_into(&send[..], &mut block[..], SystemOperation::sum());
                world.all_gather_into(&block[..], &mut send[..]);
                Ok(())
            })?;
            // Keep values bounded (sums double them every call).
            device
                .upload(&vec![1.0f32; len], buf.all_mut())
                .map_err(|e| e.to_string())?;
            send.iter_mut().for_each(|v| *v = 1.0);
            if i >= 3 {
                ar.ds.push(t_ds);
                ar.plain.push(t_plain);
                ar.in_place.push(t_raw);
                rsag.ds.push(t_ds2);
                rsag.plain.push(t_plain2);
            }
        }
        pairs.push(ar);
        pairs.push(rsag);
    }
    if comm.rank() == 0 {
        println!(
            "\nMPI collectives, {ranks} ranks, {} (medians; slowest rank per iteration)",
            dist.info.mpi_library.as_deref().unwrap_or("MPI")
        );
        println!(
            "{:<40} {:>8} {:>8} {:>9} {:>10} {:>9} {:>15} {:>11}",
            "case",
            "ds ms",
            "ds GB/s",
            "rsmpi ms",
            "rsmpi GB/s",
            "ds/rsmpi",
            "MPI in-place ms",
            "ds/in-place"
        );
        for p in &pairs {
            let (d, r) = (median(p.ds.clone()), median(p.plain.clone()));
            let gb = |t: f64| p.bytes as f64 / t / 1e9;
            let (raw, ratio) = if p.in_place.is_empty() {
                ("-".to_string(), "-".to_string())
            } else {
                let m = median(p.in_place.clone());
                (format!("{:.3}", m * 1e3), format!("{:.3}", d / m))
            };
            println!(
                "{:<40} {:>8.3} {:>8.2} {:>9.3} {:>10.2} {:>9.3} {:>15} {:>11}",
                p.name,
                d * 1e3,
                gb(d),
                r * 1e3,
                gb(r),
                d / r,
                raw,
                ratio
            );
        }
    }
    Ok(())
}
