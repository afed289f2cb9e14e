//! The engine on every backend this build compiles, against the CPU backend at stage 0 (the
//! body is `ds::engine_check`): always the CPU backend; WGPU with `--features wgpu` (on
//! lavapipe in CI); CUDA with `--features cuda`, ignored unless asked for (the GPU check runs
//! it with `--ignored` on a machine with an NVIDIA GPU and NCCL).

ds::engine_tests!(cpu, ds::core::cpu::CpuBackend::new());

#[cfg(feature = "wgpu")]
ds::engine_tests!(wgpu, ds_backend_wgpu::WgpuBackend::new());

#[cfg(feature = "cuda")]
ds::engine_tests!(
    #[ignore = "needs an NVIDIA GPU and NCCL: run scripts/gpu-check.sh on a GPU machine"]
    cuda,
    ds_backend_cuda::CudaBackend::new(0),
    |dev: &ds::Device<ds_backend_cuda::CudaBackend>| {
        ds_backend_cuda::NcclComm::single(dev.backend())
            .map(|c| Box::new(c) as Box<dyn ds::Collectives<ds_backend_cuda::CudaBackend>>)
            .map_err(|e| e.to_string())
    }
);
