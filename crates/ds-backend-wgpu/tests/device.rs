//! The WGPU backend's memory and device handling: accounting and the pool, transfers at
//! offsets that are not word-aligned, adapter selection errors, and device errors surfaced as
//! ds errors instead of panics.

use ds_backend_wgpu::{AdapterChoice, F16Mode, WgpuBackend, WgpuOptions};
use ds_core::{BufferExt, DType, Device, Error, bf16, f16};

fn dev() -> Device<WgpuBackend> {
    Device::new(WgpuBackend::new().unwrap_or_else(|e| panic!("NOT RUN: {e}")))
}

#[test]
fn memory_accounting_tracks_use_and_peak_and_the_pool_reuses_zeroed_buffers() {
    let dev = dev();
    let before = dev.memory_stats();
    let a = dev.alloc(DType::F32, 1000).expect("alloc");
    let mut b = dev.alloc(DType::BF16, 3 << 20).expect("alloc");
    let during = dev.memory_stats();
    assert_eq!(during.in_use - before.in_use, 4000 + 2 * (3 << 20));
    assert!(during.peak >= during.in_use);
    assert!(during.reserved >= during.in_use);
    dev.fill(b.all_mut(), 1.5).expect("fill");
    drop(b);
    let after = dev.memory_stats();
    assert_eq!(after.in_use - before.in_use, 4000);
    assert_eq!(after.peak, during.peak);
    // The freed buffer is cached (still reserved), and served again for the same size, zeroed.
    assert_eq!(after.reserved, during.reserved);
    let again = dev.alloc(DType::BF16, 3 << 20).expect("alloc");
    assert_eq!(
        dev.memory_stats().reserved,
        during.reserved,
        "reused, not new"
    );
    let v: Vec<bf16> = dev.to_vec(again.all()).expect("download");
    assert!(
        v.iter().all(|x| x.to_f32() == 0.0),
        "a reused buffer is zeroed"
    );
    dev.reset_peak_memory();
    assert_eq!(dev.memory_stats().peak, dev.memory_stats().in_use);
    drop(a);
}

#[test]
fn transfers_at_odd_offsets_touch_only_their_elements() {
    let dev = dev();
    // f16 views starting and ending inside words, bytes likewise.
    let mut h = dev.alloc(DType::F16, 11).expect("alloc");
    dev.fill(h.all_mut(), 7.0).expect("fill");
    let src: Vec<f16> = (0..5).map(|i| f16::from_f32(i as f32 + 0.5)).collect();
    dev.upload(&src, h.range_mut(3..8)).expect("upload");
    let got: Vec<f32> = dev
        .to_vec::<f16>(h.all())
        .expect("download")
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert_eq!(got, [7.0, 7.0, 7.0, 0.5, 1.5, 2.5, 3.5, 4.5, 7.0, 7.0, 7.0]);
    let part: Vec<f16> = dev.to_vec(h.range(5..6)).expect("download one");
    assert_eq!(part[0].to_f32(), 2.5);
    let mut other = dev.alloc(DType::F16, 11).expect("alloc");
    dev.copy(h.range(3..8), other.range_mut(1..6))
        .expect("copy");
    let got: Vec<f32> = dev
        .to_vec::<f16>(other.all())
        .expect("download")
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert_eq!(got, [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let mut bytes = dev.alloc(DType::U8, 9).expect("alloc");
    dev.fill(bytes.range_mut(2..7), 200.0).expect("fill");
    dev.upload(&[1u8, 2, 3], bytes.range_mut(5..8))
        .expect("upload");
    let got: Vec<u8> = dev.to_vec(bytes.all()).expect("download");
    assert_eq!(got, [0, 0, 200, 200, 200, 1, 2, 3, 0]);
}

#[test]
fn impossible_allocations_are_errors_not_crashes() {
    let dev = dev();
    let err = dev
        .alloc(DType::F32, usize::MAX / 2)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(!err.is_empty(), "an impossible allocation must fail");
    let limit_err = dev.alloc(DType::F32, 1 << 40).err();
    assert!(
        matches!(
            limit_err,
            Some(Error::OutOfMemory { .. } | Error::InvalidArgument { .. })
        ),
        "{limit_err:?}"
    );
    // The device still works afterwards.
    let b = dev.alloc_from(&[1.0f32, 2.0]).expect("alloc");
    assert_eq!(dev.to_vec::<f32>(b.all()).expect("download"), [1.0, 2.0]);
}

#[test]
fn adapter_selection_errors_list_what_exists() {
    let err = WgpuBackend::with_options(WgpuOptions {
        adapter: AdapterChoice::Index(99),
        f16: F16Mode::Auto,
        capacity: None,
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("DS_WGPU_ADAPTER=99") && err.contains("adapters found: 0:"),
        "{err}"
    );
    let err = WgpuBackend::with_options(WgpuOptions {
        adapter: AdapterChoice::Name("no such adapter".into()),
        f16: F16Mode::Auto,
        capacity: None,
    })
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("no such adapter"), "{err}");
    let by_name = WgpuBackend::with_options(WgpuOptions {
        adapter: AdapterChoice::Index(0),
        f16: F16Mode::Packed,
        capacity: None,
    })
    .expect("adapter 0");
    assert!(!by_name.native_f16());
}

#[test]
fn operands_past_one_binding_in_row_kernels_are_refused_by_name() {
    let dev = dev();
    let limit = dev.backend().max_binding_bytes() as usize;
    let cols = limit / 4 / 2 + 1;
    let x = dev.alloc(DType::F32, 2 * cols).expect("alloc");
    let (gamma, beta) = (
        dev.alloc(DType::F32, cols).expect("alloc"),
        dev.alloc(DType::F32, cols).expect("alloc"),
    );
    let mut y = dev.alloc(DType::F32, 2 * cols).expect("alloc");
    let (mut mean, mut rstd) = (
        dev.alloc(DType::F32, 2).expect("alloc"),
        dev.alloc(DType::F32, 2).expect("alloc"),
    );
    let err = dev
        .layer_norm(
            ds_core::params::Shape2::new(2, cols),
            1e-5,
            ds_core::kernels::LayerNormArgs {
                x: x.all(),
                gamma: gamma.all(),
                beta: beta.all(),
                y: y.all_mut(),
                mean: mean.all_mut(),
                rstd: rstd.all_mut(),
            },
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("layer_norm") && err.contains("storage binding"),
        "{err}"
    );
}

#[test]
fn a_memory_budget_is_reported_and_enforced() {
    let be = WgpuBackend::with_capacity(1 << 20).expect("adapter");
    let dev = ds_core::Device::new(be);
    assert_eq!(dev.info().memory_total, 1 << 20);
    let kept = dev
        .alloc(ds_core::DType::F32, 1 << 17)
        .expect("512 KiB fit");
    let err = dev
        .alloc(ds_core::DType::F32, 3 << 16)
        .expect_err("768 KiB more do not");
    assert!(
        matches!(err, ds_core::Error::OutOfMemory { requested, .. } if requested == 3 << 18),
        "{err}"
    );
    drop(kept);
    dev.alloc(ds_core::DType::F32, 3 << 16)
        .expect("fits once the first is freed");
}
