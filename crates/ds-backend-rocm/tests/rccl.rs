//! RCCL's single-rank path on an AMD GPU: every collective of the trait, every dtype, the
//! conformance suite's expectations (world of one: the same expectations the threaded and MPI
//! implementations meet). Two ranks on one GPU are not supported by RCCL.

use conformance::cases::collectives::{CollectiveOp, LENGTHS, collective_body};
use ds_backend_rocm::{RcclComm, RocmBackend};
use ds_core::{DType, Device};

#[test]
#[ignore = "not run: no ROCm device (needs an AMD GPU with ROCm 6 and RCCL; run with --ignored on one)"]
fn single_rank_rccl_meets_the_collective_contract() {
    let backend = RocmBackend::new(0).expect("ROCm device");
    let comm = RcclComm::single(&backend).expect("RCCL communicator");
    let dev = Device::new(backend);
    let mut checked = 0;
    for op in CollectiveOp::ALL {
        for dtype in DType::FLOATS {
            for (i, &len) in LENGTHS.iter().enumerate() {
                match collective_body(&dev, &comm, op, dtype, len, 100 + i as u64) {
                    Ok(n) => checked += n,
                    Err(e) => panic!("{op} {dtype} len {len}: {e}"),
                }
            }
        }
    }
    println!("RCCL single rank: {checked} values checked");
    assert!(checked > 0);
}
