//! The whole conformance suite on the CUDA backend. It needs an NVIDIA GPU, so the tests are
//! marked ignored (reported as ignored, never as passed); `scripts/gpu-check.sh` runs them with
//! `--ignored` on a GPU machine.

conformance::backend_tests!(
    #[ignore = "needs an NVIDIA GPU: run scripts/gpu-check.sh on a GPU machine"]
    cuda,
    ds_backend_cuda::CudaBackend::new(0)
);
