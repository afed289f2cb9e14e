//! The whole conformance suite on the WGPU backend, twice: with f16 stored natively where the
//! adapter has `SHADER_F16` (`auto`), and with f16 packed two per word (the path adapters
//! without `SHADER_F16` take). bf16 is packed on both. In CI this runs on Mesa's lavapipe,
//! which `scripts/test.sh` installs when it is missing.

use ds_backend_wgpu::{F16Mode, WgpuBackend, WgpuOptions};

fn open(f16: F16Mode) -> ds_core::Result<WgpuBackend> {
    WgpuBackend::with_options(WgpuOptions {
        f16,
        ..WgpuOptions::default()
    })
}

conformance::backend_tests!(wgpu_native_f16, crate::open(ds_backend_wgpu::F16Mode::Auto));
conformance::backend_tests!(
    wgpu_packed_f16,
    crate::open(ds_backend_wgpu::F16Mode::Packed)
);

#[test]
fn the_auto_path_is_native_where_the_adapter_has_shader_f16() {
    let b = open(F16Mode::Auto).unwrap_or_else(|e| panic!("NOT RUN: {e}"));
    let packed = open(F16Mode::Packed).unwrap_or_else(|e| panic!("NOT RUN: {e}"));
    assert!(!packed.native_f16());
    println!(
        "adapter: {} (native f16: {})",
        ds_core::kernels::Memory::info(&b).name,
        b.native_f16()
    );
}
