//! NCCL's single-rank path on a real GPU: every collective of the trait, every dtype, the
//! conformance suite's expectations (world of one: the same expectations the threaded and MPI
//! implementations meet). Two ranks on one GPU are not supported by NCCL.

use conformance::cases::collectives::communicator_sweep;
use ds_backend_cuda::{CudaBackend, NcclComm};
use ds_core::{DType, Device};

#[test]
#[ignore = "needs an NVIDIA GPU and NCCL: run scripts/gpu-check.sh on a GPU machine"]
fn single_rank_nccl_meets_the_collective_contract() {
    let backend = CudaBackend::new(0).expect("CUDA device");
    let comm = NcclComm::single(&backend).expect("NCCL communicator");
    let dev = Device::new(backend);
    let checked = communicator_sweep(&dev, &comm, &DType::FLOATS).unwrap_or_else(|e| panic!("{e}"));
    println!("NCCL single rank: {checked} values checked");
    assert!(checked > 0);
}
