//! What the CUDA backend guarantees on any machine, GPU or not.

use ds_backend_cuda::CudaBackend;
use ds_core::Error;

#[test]
fn opening_a_device_works_or_says_why_not() {
    match CudaBackend::new(0) {
        Ok(be) => {
            let info = ds_core::kernels::Memory::info(&be);
            assert_eq!(info.backend, "cuda");
            assert!(info.compute_units > 0);
        }
        Err(Error::NoDevice { backend, reason }) => {
            assert_eq!(backend, "cuda");
            let says_what = [
                "libcuda",
                "no CUDA device",
                "no usable device",
                "NVRTC",
                "cuBLAS",
            ];
            assert!(
                says_what.iter().any(|w| reason.contains(w)),
                "unhelpful reason: {reason}"
            );
            println!("no CUDA device here: {reason}");
        }
        Err(other) => panic!("expected a device or Error::NoDevice, got {other}"),
    }
}

#[test]
fn an_ordinal_past_the_devices_is_refused() {
    match CudaBackend::new(1 << 20) {
        Err(Error::NoDevice { reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected Error::NoDevice, got {other:?}"),
    }
}

#[test]
#[ignore = "needs libnvrtc (no GPU): scripts/test.sh installs it and runs this with --ignored"]
fn kernels_compile_with_nvrtc_for_ampere_and_hopper() {
    for arch in ["sm_80", "sm_90"] {
        match ds_backend_cuda::compile_check(arch) {
            Ok(ptx_bytes) => assert!(ptx_bytes > 10_000, "{arch}: suspiciously small PTX"),
            Err(e) => panic!("{arch}: {e}"),
        }
    }
}
