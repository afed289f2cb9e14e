//! The whole conformance suite on the ROCm backend. It needs an AMD GPU, so the tests are marked
//! ignored (reported as ignored, never as passed); on a machine with one, run them with
//! `cargo test -p ds-backend-rocm --test conformance -- --ignored`.

conformance::backend_tests!(
    #[ignore = "not run: no ROCm device (needs an AMD GPU with ROCm 6, HIP and rocBLAS; run with --ignored on one)"]
    rocm,
    ds_backend_rocm::RocmBackend::new(0)
);
