//! ds-comm-mpi's collectives on wgpu buffers (staged through host memory): every operation,
//! dtype and length of the conformance suite's collective cases, on two MPI ranks, each with
//! its own wgpu device. The test starts itself again under `mpirun -np 2` (Open MPI, which
//! `scripts/test.sh` installs). Here, in the crate that knows both, so neither the WGPU backend
//! nor MPI depends on the other; built with `--features wgpu,mpi`.
#![cfg(all(feature = "wgpu", feature = "mpi"))]

use conformance::cases::collectives::{CollectiveOp, LENGTHS, collective_body};
use ds_backend_wgpu::WgpuBackend;
use ds_comm_mpi::init_distributed;
use ds_core::{Collectives, DType, Device};
use std::process::Command;

const NAME: &str = "mpi_collectives_move_wgpu_buffers";

fn under_mpirun() -> bool {
    std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some()
}

fn run_cases() {
    let world = init_distributed().expect("MPI world");
    let backend = WgpuBackend::new().unwrap_or_else(|e| panic!("NOT RUN: {e}"));
    let device = Device::new(backend);
    let comm: &dyn Collectives<WgpuBackend> = &world.comm;
    let (mut cases, mut checked) = (0, 0);
    for op in CollectiveOp::ALL {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (i, &len) in LENGTHS.iter().enumerate() {
                cases += 1;
                checked += collective_body(&device, comm, op, dtype, len, 2000 + i as u64)
                    .unwrap_or_else(|e| panic!("{op} {dtype} len {len}: {e}"));
            }
        }
    }
    println!(
        "rank {}: {cases} collective cases passed on {} MPI ranks with wgpu buffers ({checked} values)",
        comm.rank(),
        comm.world_size()
    );
}

#[test]
fn mpi_collectives_move_wgpu_buffers() {
    if under_mpirun() {
        run_cases();
        return;
    }
    let exe = std::env::current_exe().expect("test executable");
    let out = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe"])
        .arg(exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads", "1"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun starts (install Open MPI: scripts/test.sh does)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.matches("collective cases passed on 2 MPI ranks")
            .count(),
        2,
        "{text}"
    );
    print!("{text}");
}
