//! RCCL's single-rank path on an AMD GPU: every collective of the trait, every dtype, the
//! conformance suite's expectations (world of one: the same expectations the threaded and MPI
//! implementations meet). Two ranks on one GPU are not supported by RCCL.

use conformance::cases::collectives::communicator_sweep;
use ds_backend_rocm::{RcclComm, RocmBackend};
use ds_core::{DType, Device};

#[test]
#[ignore = "not run: no ROCm device (needs an AMD GPU with ROCm 6 and RCCL; run with --ignored on one)"]
fn single_rank_rccl_meets_the_collective_contract() {
    let backend = RocmBackend::new(0).expect("ROCm device");
    let comm = RcclComm::single(&backend).expect("RCCL communicator");
    let dev = Device::new(backend);
    let checked = communicator_sweep(&dev, &comm, &DType::FLOATS).unwrap_or_else(|e| panic!("{e}"));
    println!("RCCL single rank: {checked} values checked");
    assert!(checked > 0);
}
