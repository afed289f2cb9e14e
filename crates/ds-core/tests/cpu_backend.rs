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

/// `alpha op(A) op(B) + beta C` in f64, for one batch entry.
#[allow(clippy::too_many_arguments)]
fn gemm_reference(
    (m, n, k): (usize, usize, usize),
    (ta, tb): (bool, bool),
    (alpha, beta): (f64, f64),
    a: &[f64],
    b: &[f64],
    c: &[f64],
) -> Vec<f64> {
    (0..m * n)
        .map(|at| {
            let (i, j) = (at / n, at % n);
            let dot: f64 = (0..k)
                .map(|p| {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    x * y
                })
                .sum();
            alpha * dot + beta * c[at]
        })
        .collect()
}

#[test]
fn large_gemms_cross_every_block_edge_of_the_active_kernels() {
    // m past two row blocks and not a multiple of the 8-row tile; n past one column panel
    // (48 wide for f32 on AVX-512, 32 for bf16) with a last panel that is ragged (70), 32 wide
    // (80) or 16 wide (64), which the f32 tile runs without the edge copy; k past two 256-deep
    // blocks and odd (the bf16 kernel pairs k): whatever instruction set is active
    // (DS_CPU_ISA), the product matches f64. m = 200 (whole tiles) with n = 80 or 64 lets
    // the AVX-512 f32 kernel read A^T B's operands in place, without packing.
    let dev = dev();
    let k = 531;
    let value = |i: usize, s: f64| ((i as f64 * s).sin() * 0.5).clamp(-1.0, 1.0);
    for (m, n, dtype) in [
        (203, 70, DType::F32),
        (203, 80, DType::F32),
        (203, 64, DType::F32),
        (203, 70, DType::BF16),
        (200, 80, DType::F32),
        (200, 64, DType::F32),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (-0.5, 0.25)] {
                let round = |v: f64| -> f64 {
                    if dtype == DType::BF16 {
                        f64::from(bf16::from_f64(v).to_f32())
                    } else {
                        f64::from(v as f32)
                    }
                };
                let a: Vec<f64> = (0..m * k).map(|i| round(value(i, 0.37))).collect();
                let b: Vec<f64> = (0..k * n).map(|i| round(value(i, 0.71))).collect();
                let c0: Vec<f64> = (0..m * n).map(|i| round(value(i, 1.3))).collect();
                let up = |x: &[f64]| {
                    let f: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                    typed_input(&dev, dtype, &f)
                };
                let (ab, bb, mut cb) = (up(&a), up(&b), up(&c0));
                let spec = ds_core::params::GemmSpec::new(m, n, k)
                    .transpose(ta, tb)
                    .scaled(alpha as f32, beta as f32);
                dev.gemm(&spec, ab.all(), bb.all(), cb.all_mut())
                    .expect("gemm");
                let mut c32 = dev.alloc(DType::F32, m * n).expect("alloc");
                dev.cast(cb.all(), c32.all_mut()).expect("cast");
                let got: Vec<f32> = dev.to_vec(c32.all()).expect("download");
                let want = gemm_reference((m, n, k), (ta, tb), (alpha, beta), &a, &b, &c0);
                // f32 accumulation over 531 terms of magnitude <= 0.25, then the output's
                // rounding (bf16: 2^-8 relative).
                let out_eps = if dtype == DType::BF16 {
                    1.0 / 256.0
                } else {
                    1e-6
                };
                for (at, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-4 + out_eps * w.abs();
                    assert!(
                        (f64::from(*g) - w).abs() <= tol,
                        "{dtype} m={m} n={n} ta={ta} tb={tb} alpha={alpha} beta={beta}: C[{at}] = {g}, want {w}"
                    );
                }
            }
        }
    }
}

/// `x` of `dtype` on the device, from f32 values.
fn typed_input(dev: &Device<CpuBackend>, dtype: DType, host: &[f32]) -> ds_core::cpu::CpuBuffer {
    let x = dev.alloc_from(host).expect("upload");
    let mut t = dev.alloc(dtype, host.len()).expect("alloc");
    dev.cast(x.all(), t.all_mut()).expect("cast");
    t
}

/// The f32 bits of a buffer's values (16-bit values widen exactly).
fn bits(dev: &Device<CpuBackend>, b: ds_core::Slice<'_, ds_core::cpu::CpuBuffer>) -> Vec<u32> {
    let mut w = dev.alloc(DType::F32, b.len()).expect("alloc");
    dev.cast(b, w.all_mut()).expect("widen");
    let v: Vec<f32> = dev.to_vec(w.all()).expect("download");
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn large_gelu_outputs_are_streamed_with_the_same_bits_as_small_ones() {
    let dev = dev();
    let host: Vec<f32> = (0..LARGE).map(|i| (i as f32 * 0.377).sin() * 7.0).collect();
    let dhost: Vec<f32> = (0..LARGE).map(|i| (i as f32 * 0.131).cos()).collect();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let (x, dy) = (
            typed_input(&dev, dtype, &host),
            typed_input(&dev, dtype, &dhost),
        );
        let (mut y, mut dx) = (
            dev.alloc(dtype, LARGE).expect("alloc"),
            dev.alloc(dtype, LARGE).expect("alloc"),
        );
        dev.gelu(x.all(), y.all_mut()).expect("gelu");
        dev.gelu_backward(x.all(), dy.all(), dx.all_mut())
            .expect("gelu backward");
        let (y, dx) = (bits(&dev, y.all()), bits(&dev, dx.all()));
        // Windows below the streaming threshold, unaligned and at the end, computed alone.
        for start in [0, 12_345, LARGE - 4099] {
            let r = start..start + 4099;
            let (mut ys, mut dxs) = (
                dev.alloc(dtype, 4099).expect("alloc"),
                dev.alloc(dtype, 4099).expect("alloc"),
            );
            dev.gelu(x.range(r.clone()), ys.all_mut()).expect("gelu");
            dev.gelu_backward(x.range(r.clone()), dy.range(r.clone()), dxs.all_mut())
                .expect("gelu backward");
            assert_eq!(
                bits(&dev, ys.all()),
                y[r.clone()],
                "{dtype:?} gelu at {start}"
            );
            assert_eq!(
                bits(&dev, dxs.all()),
                dx[r],
                "{dtype:?} gelu backward at {start}"
            );
        }
    }
}

#[test]
fn large_layer_norm_outputs_are_streamed_with_the_same_bits_as_small_ones() {
    use ds_core::kernels::{LayerNormArgs, LayerNormBackwardArgs};
    use ds_core::params::Shape2;
    let dev = dev();
    let cols = 1000;
    let rows = LARGE / cols + 1;
    let n = rows * cols;
    let host: Vec<f32> = (0..n)
        .map(|i| (i as f32 * 0.377).sin() * 3.0 + 0.5)
        .collect();
    let dhost: Vec<f32> = (0..n).map(|i| (i as f32 * 0.131).cos()).collect();
    let ghost: Vec<f32> = (0..cols).map(|i| 1.0 + i as f32 / cols as f32).collect();
    for dtype in [DType::F32, DType::BF16] {
        let (x, dy) = (
            typed_input(&dev, dtype, &host),
            typed_input(&dev, dtype, &dhost),
        );
        let (gamma, beta) = (
            typed_input(&dev, dtype, &ghost),
            typed_input(&dev, dtype, &dhost[..cols]),
        );
        let run = |rows: usize, r: std::ops::Range<usize>| {
            let e = r.start * cols..r.end * cols;
            let mut y = dev.alloc(dtype, rows * cols).expect("alloc");
            let mut dx = dev.alloc(dtype, rows * cols).expect("alloc");
            let (mut mean, mut rstd) = (
                dev.alloc(DType::F32, rows).expect("alloc"),
                dev.alloc(DType::F32, rows).expect("alloc"),
            );
            let (mut dg, mut db) = (
                dev.alloc(dtype, cols).expect("alloc"),
                dev.alloc(dtype, cols).expect("alloc"),
            );
            let shape = Shape2::new(rows, cols);
            dev.layer_norm(
                shape,
                1e-5,
                LayerNormArgs {
                    x: x.range(e.clone()),
                    gamma: gamma.all(),
                    beta: beta.all(),
                    y: y.all_mut(),
                    mean: mean.all_mut(),
                    rstd: rstd.all_mut(),
                },
            )
            .expect("layer norm");
            dev.layer_norm_backward(
                shape,
                false,
                LayerNormBackwardArgs {
                    x: x.range(e.clone()),
                    gamma: gamma.all(),
                    mean: mean.all(),
                    rstd: rstd.all(),
                    dy: dy.range(e),
                    dx: dx.all_mut(),
                    dgamma: dg.all_mut(),
                    dbeta: db.all_mut(),
                },
            )
            .expect("layer norm backward");
            (
                bits(&dev, y.all()),
                bits(&dev, mean.all()),
                bits(&dev, dx.all()),
            )
        };
        let (y, mean, dx) = run(rows, 0..rows);
        for start in [0, 1234, rows - 9] {
            let (ys, means, dxs) = run(9, start..start + 9);
            let e = start * cols..(start + 9) * cols;
            assert_eq!(ys, y[e.clone()], "{dtype:?} y at row {start}");
            assert_eq!(
                means,
                mean[start..start + 9],
                "{dtype:?} mean at row {start}"
            );
            assert_eq!(dxs, dx[e], "{dtype:?} dx at row {start}");
        }
    }
}

#[test]
fn large_cross_entropy_gradients_are_streamed_with_the_same_bits_as_small_ones() {
    use ds_core::params::Shape2;
    let dev = dev();
    let cols = 1000;
    let rows = LARGE / cols + 1;
    let host: Vec<f32> = (0..rows * cols)
        .map(|i| (i as f32 * 0.377).sin() * 4.0)
        .collect();
    // Every seventh row ignored (-100), so the fill path sits between streamed rows.
    let labels: Vec<i32> = (0..rows)
        .map(|r| {
            if r % 7 == 3 {
                -100
            } else {
                (r * 31 % cols) as i32
            }
        })
        .collect();
    let labels = dev.alloc_from(&labels).expect("upload");
    for dtype in [DType::F32, DType::BF16] {
        let logits = typed_input(&dev, dtype, &host);
        let run = |r: std::ops::Range<usize>| {
            let e = r.start * cols..r.end * cols;
            let mut d = dev.alloc(dtype, e.len()).expect("alloc");
            dev.softmax_cross_entropy_backward(
                Shape2::new(r.len(), cols),
                -100,
                0.25,
                logits.range(e),
                labels.range(r),
                d.all_mut(),
            )
            .expect("cross-entropy backward");
            bits(&dev, d.all())
        };
        let all = run(0..rows);
        for start in [0, 1234, rows - 9] {
            let e = start * cols..(start + 9) * cols;
            assert_eq!(run(start..start + 9), all[e], "{dtype:?} at row {start}");
        }
    }
}

#[test]
fn a_buffer_for_overwrite_holds_no_zeros_promise_but_a_plain_alloc_always_does() {
    // 1 MiB: a cached mapping, which the next buffer of its size reuses.
    let dev = dev();
    let len = 1 << 18;
    let mut first = dev.alloc(DType::F32, len).expect("alloc");
    dev.upload(&vec![7.0f32; len], first.all_mut())
        .expect("upload");
    drop(first);
    let out = dev.alloc_for_overwrite(DType::F32, len).expect("alloc");
    let stale: Vec<f32> = dev.to_vec(out.all()).expect("download");
    // Debug builds (the tests) poison it with NaN, so a kernel reading its output before
    // writing it fails here instead of reading the 7s a release build would leave.
    assert!(stale.iter().all(|v| v.is_nan()), "{:?}", &stale[..4]);
    drop(out);
    let zeroed = dev.alloc(DType::F32, len).expect("alloc");
    let zeros: Vec<f32> = dev.to_vec(zeroed.all()).expect("download");
    assert!(zeros.iter().all(|&v| v == 0.0), "{:?}", &zeros[..4]);
    let e = dev
        .alloc_for_overwrite(DType::F32, usize::MAX)
        .expect_err("overflow")
        .to_string();
    assert!(
        e.contains("alloc_for_overwrite") && e.contains("len"),
        "{e}"
    );
}
