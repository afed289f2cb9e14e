//! What the CUDA backend guarantees on any machine, GPU or not.

use ds_backend_cuda::{CudaBackend, kernel_names, kernel_source};
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
fn every_launched_kernel_exists_in_the_sources() {
    let src = kernel_source();
    for name in kernel_names() {
        // Kernels are defined through macros: `ds_<op>_##N` expands per type; check the stem
        // and the instantiation list instead of the final token.
        let stem = name.trim_start_matches("ds_");
        let direct = src.contains(&format!("void {name}("));
        let templated = name_is_instantiated(&src, stem);
        assert!(
            direct || templated,
            "kernel {name} is launched but not defined in kernels/"
        );
    }
}

/// Whether `ds_<op>_<suffixes>` is produced by a `ds_<op>_##...` macro definition.
fn name_is_instantiated(src: &str, stem: &str) -> bool {
    let dtypes = ["f32", "f16", "bf16"];
    let parts: Vec<&str> = stem.split('_').collect();
    let n_types = parts
        .iter()
        .rev()
        .take_while(|p| dtypes.contains(p))
        .count();
    if n_types == 0 {
        return false;
    }
    let op = parts[..parts.len() - n_types].join("_");
    // `void ds_<op>_##N(` (or `##GN(`, `##CN(`) for one type, `##XN##_##YN(` for two.
    let Some(at) = src.find(&format!("void ds_{op}_##")) else {
        return false;
    };
    let rest = &src[at..];
    let params = rest[..rest.find('(').unwrap_or(0)].matches("##").count();
    params == 1 + 2 * (n_types - 1)
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
