//! The engine on every backend this build compiles, against the CPU backend at stage 0 (the
//! body is `ds::engine_check`): always the CPU backend; WGPU with `--features wgpu` (on
//! lavapipe in CI); CUDA with `--features cuda`, ignored unless asked for (the GPU check runs
//! it with `--ignored` on a machine with an NVIDIA GPU and NCCL); ROCm with `--features rocm`,
//! likewise ignored without an AMD GPU.

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

#[cfg(feature = "rocm")]
ds::engine_tests!(
    #[ignore = "not run: no ROCm device (needs an AMD GPU with ROCm 6, HIP, rocBLAS, RCCL; run with --ignored on one)"]
    rocm,
    ds_backend_rocm::RocmBackend::new(0),
    |dev: &ds::Device<ds_backend_rocm::RocmBackend>| {
        ds_backend_rocm::RcclComm::single(dev.backend())
            .map(|c| Box::new(c) as Box<dyn ds::Collectives<ds_backend_rocm::RocmBackend>>)
            .map_err(|e| e.to_string())
    }
);

/// Offload's capability on the backends whose memory can be capped.
#[test]
fn cpu_a_model_too_large_for_the_device_trains_offloaded_and_for_the_host_on_nvme() {
    let capped = |bytes| {
        ds::core::cpu::CpuBackend::with_capacity(1, bytes)
            .map(ds::Device::new)
            .map_err(|e| e.to_string())
    };
    match ds::engine_check::offload_capacity(&capped) {
        Ok(report) => println!("{report}"),
        Err(e) => panic!("{e}"),
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_a_model_too_large_for_the_device_trains_offloaded_and_for_the_host_on_nvme() {
    let capped = |bytes| {
        ds_backend_wgpu::WgpuBackend::with_capacity(bytes)
            .map(ds::Device::new)
            .map_err(|e| e.to_string())
    };
    match ds::engine_check::offload_capacity(&capped) {
        Ok(report) => println!("{report}"),
        Err(e) => panic!("{e}"),
    }
}
