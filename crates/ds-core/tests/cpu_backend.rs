//! CPU-backend behaviour the conformance suite does not reach: the large-buffer paths
//! (streaming stores, huge-page mappings), memory accounting, allocation failures and thread
//! configuration.

use ds_core::cpu::CpuBackend;
use ds_core::{BufferExt, DType, Device, Error, bf16, f16};

fn dev() -> Device<CpuBackend> {
    Device::new(CpuBackend::with_threads(2).expect("backend"))
}

/// Past the 8 MiB streaming threshold in every dtype.
const LARGE: usize = (5 << 20) + 3;

#[test]
fn large_casts_copies_and_fills_are_exact() {
    let dev = dev();
    let host: Vec<f32> = (0..LARGE)
        .map(|i| (i as f32 * 0.618).sin() * 1000.0)
        .collect();
    let x = dev.alloc_from(&host).expect("upload");
    let mut h = dev.alloc(DType::F16, LARGE).expect("alloc");
    let mut b = dev.alloc(DType::BF16, LARGE).expect("alloc");
    dev.cast(x.all(), h.all_mut()).expect("cast f16");
    dev.cast(x.all(), b.all_mut()).expect("cast bf16");
    let hv: Vec<f16> = dev.to_vec(h.all()).expect("download");
    let bv: Vec<bf16> = dev.to_vec(b.all()).expect("download");
    for i in (0..LARGE).step_by(997).chain([LARGE - 1]) {
        assert_eq!(hv[i], f16::from_f32(host[i]), "f16 at {i}");
        assert_eq!(bv[i], bf16::from_f32(host[i]), "bf16 at {i}");
    }
    let mut back = dev.alloc(DType::F32, LARGE).expect("alloc");
    dev.cast(h.all(), back.all_mut()).expect("cast back");
    let back: Vec<f32> = dev.to_vec(back.all()).expect("download");
    assert!((0..LARGE).all(|i| back[i] == hv[i].to_f32()));

    let mut y = dev.alloc(DType::F32, LARGE + 100).expect("alloc");
    dev.copy(x.all(), y.range_mut(50..50 + LARGE))
        .expect("copy");
    let yv: Vec<f32> = dev.to_vec(y.all()).expect("download");
    assert!(yv[..50].iter().chain(&yv[50 + LARGE..]).all(|&v| v == 0.0));
    assert_eq!(&yv[50..50 + LARGE], &host[..]);

    dev.fill(y.range_mut(1..LARGE + 99), -2.5).expect("fill");
    let yv: Vec<f32> = dev.to_vec(y.all()).expect("download");
    assert_eq!((yv[0], yv[LARGE + 99]), (0.0, 0.0));
    assert!(yv[1..LARGE + 99].iter().all(|&v| v == -2.5));
}

#[test]
fn memory_accounting_tracks_use_and_peak() {
    let dev = dev();
    let before = dev.memory_stats();
    let a = dev.alloc(DType::F32, 1000).expect("alloc");
    let b = dev.alloc(DType::BF16, LARGE).expect("alloc");
    let during = dev.memory_stats();
    assert_eq!(during.in_use - before.in_use, 4000 + 2 * LARGE as u64);
    assert!(during.peak >= during.in_use);
    drop(b);
    let after = dev.memory_stats();
    assert_eq!(after.in_use - before.in_use, 4000);
    assert_eq!(after.peak, during.peak);
    dev.reset_peak_memory();
    assert_eq!(dev.memory_stats().peak, dev.memory_stats().in_use);
    drop(a);
}

#[test]
fn impossible_allocations_are_errors_not_crashes() {
    let dev = dev();
    match dev.alloc(DType::F32, 1 << 60) {
        Err(Error::OutOfMemory { requested, .. }) => assert_eq!(requested, 4 << 60),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
    match dev.alloc(DType::F32, usize::MAX / 2) {
        Err(e) => assert_eq!(e.argument(), Some("len"), "{e}"),
        Ok(_) => panic!("an overflowing size was accepted"),
    }
}

#[test]
fn large_buffers_start_in_different_cache_sets() {
    // Four optimizer-state buffers must not alias in L1 (64 sets of 64-byte lines).
    let dev = dev();
    let bufs: Vec<_> = (0..4)
        .map(|_| dev.alloc(DType::F32, 1 << 20).expect("alloc"))
        .collect();
    let sets: Vec<usize> = bufs
        .iter()
        .map(|b| (b.bytes().as_ptr() as usize / 64) % 64)
        .collect();
    let mut distinct = sets.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "start sets {sets:?}");
}

#[test]
fn zero_threads_and_empty_buffers_are_handled() {
    assert!(CpuBackend::with_threads(0).is_err());
    let dev = dev();
    let mut e = dev.alloc(DType::F16, 0).expect("empty alloc");
    dev.fill(e.all_mut(), 1.0).expect("fill empty");
    assert!(dev.to_vec::<f16>(e.all()).expect("download").is_empty());
}

#[test]
fn host_views_refuse_out_of_range() {
    use ds_core::kernels::Memory;
    let be = CpuBackend::with_threads(1).expect("backend");
    let dev = Device::new(be.clone());
    let b = dev.alloc(DType::F32, 8).expect("alloc");
    assert_eq!(be.host_bytes(b.range(2..4)).map(<[u8]>::len), Some(8));
    assert!(be.host_bytes(b.range(4..12)).is_none());
}

#[test]
fn integer_fills_and_round_trips() {
    let dev = dev();
    let mut ids = dev.alloc(DType::I32, 5).expect("alloc");
    dev.fill(ids.range_mut(1..4), -7.0).expect("fill");
    assert_eq!(
        dev.to_vec::<i32>(ids.all()).expect("download"),
        vec![0, -7, -7, -7, 0]
    );
    let mut flags = dev.alloc(DType::U8, 3).expect("alloc");
    dev.fill(flags.all_mut(), 255.0).expect("fill");
    assert_eq!(
        dev.to_vec::<u8>(flags.all()).expect("download"),
        vec![255; 3]
    );
    assert_eq!(
        dev.fill(flags.all_mut(), 256.0)
            .err()
            .and_then(|e| e.argument()),
        Some("value")
    );
    assert_eq!(
        dev.upload(&[1i32, 2], ids.range_mut(0..3))
            .err()
            .and_then(|e| e.argument()),
        Some("dst")
    );
    assert_eq!(
        dev.to_vec::<f32>(ids.all())
            .err()
            .and_then(|e| e.argument()),
        Some("src")
    );
}

#[test]
fn a_capacity_makes_the_cpu_backend_a_device_of_that_size() {
    let dev = Device::new(CpuBackend::with_capacity(1, 1000).expect("backend"));
    assert_eq!(dev.info().memory_total, 1000);
    let a = dev.alloc(DType::F32, 200).expect("800 bytes fit");
    match dev.alloc(DType::F32, 100) {
        Err(ds_core::Error::OutOfMemory {
            requested,
            available,
            ..
        }) => assert_eq!((requested, available), (400, 200)),
        other => panic!("expected out of memory, got {other:?}"),
    }
    drop(a);
    dev.alloc(DType::F32, 250)
        .expect("freed memory is available again");
}
