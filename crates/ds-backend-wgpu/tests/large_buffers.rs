//! A 200M-element f32 buffer (800 MB, over six times lavapipe's 128 MiB storage-binding limit)
//! round-trips, and goes through axpy (on a view starting at an odd element) and a fused
//! AdamW step (with a bf16 copy-out) correctly. Kernels see it in pieces of one binding; the
//! samples include every piece boundary. The reference for the step is the CPU backend run on
//! the sampled elements.

use ds_backend_wgpu::WgpuBackend;
use ds_core::cpu::CpuBackend;
use ds_core::kernels::AdamArgs;
use ds_core::params::AdamParams;
use ds_core::{BufferExt, DType, Device, bf16};

const N: usize = 200_000_000;

fn value(i: usize, salt: usize) -> f32 {
    (((i * 7 + salt) % 2001) as f32 - 1000.0) * 1e-3
}

/// Every 9973rd element, and three on each side of every piece boundary.
fn samples(piece: usize) -> Vec<usize> {
    let mut s: Vec<usize> = (0..N).step_by(9973).collect();
    let mut b = piece;
    while b < N {
        s.extend(b.saturating_sub(3)..(b + 3).min(N));
        b += piece;
    }
    s.push(N - 1);
    s.sort_unstable();
    s.dedup();
    s
}

#[test]
fn a_200m_element_buffer_round_trips_and_steps() {
    let backend = WgpuBackend::new().unwrap_or_else(|e| panic!("NOT RUN: {e}"));
    let piece = ((backend.max_binding_bytes() - 256) / 4) as usize / 256 * 256;
    assert!(
        N * 4 > backend.max_binding_bytes() as usize,
        "the buffer must exceed one binding"
    );
    let dev = Device::new(backend);
    let idx = samples(piece);

    // Round trip.
    let host_p: Vec<f32> = (0..N).map(|i| value(i, 0)).collect();
    let mut p = dev.alloc(DType::F32, N).expect("alloc p");
    dev.upload(&host_p, p.all_mut()).expect("upload");
    let back: Vec<f32> = dev.to_vec(p.all()).expect("download");
    assert!(back == host_p, "round trip differs");
    drop(back);

    // axpy on [1, N): g[i] += 0.5 * p[i - 1].
    let host_g: Vec<f32> = (0..N).map(|i| value(i, 3)).collect();
    let mut g = dev.alloc(DType::F32, N).expect("alloc g");
    dev.upload(&host_g, g.all_mut()).expect("upload g");
    dev.axpy(0.5, p.range(0..N - 1), g.range_mut(1..N))
        .expect("axpy");
    let got: Vec<f32> = dev.to_vec(g.all()).expect("download g");
    for &i in &idx {
        let want = if i == 0 {
            host_g[0]
        } else {
            host_g[i] + 0.5 * host_p[i - 1]
        };
        assert!(
            (got[i] - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "axpy [{i}]: {} vs {want}",
            got[i]
        );
    }
    let grad_host = got;

    // AdamW with a bf16 copy-out, moments starting at zero.
    let hp = AdamParams {
        lr: 1e-3,
        weight_decay: 0.01,
        step: 1,
        ..AdamParams::default()
    };
    let mut m = dev.alloc(DType::F32, N).expect("alloc m");
    let mut v = dev.alloc(DType::F32, N).expect("alloc v");
    let mut copy = dev.alloc(DType::BF16, N).expect("alloc copy");
    dev.adam_step(
        &hp,
        AdamArgs {
            param: p.all_mut(),
            grad: g.all(),
            exp_avg: m.all_mut(),
            exp_avg_sq: v.all_mut(),
            param_copy: Some(copy.all_mut()),
        },
    )
    .expect("adam");
    let got_p: Vec<f32> = dev.to_vec(p.all()).expect("p");
    let got_v: Vec<f32> = dev.to_vec(v.all()).expect("v");
    let got_c: Vec<bf16> = dev.to_vec(copy.all()).expect("copy");

    // The CPU backend on the sampled elements.
    let cpu = Device::new(CpuBackend::new().expect("cpu"));
    let sp: Vec<f32> = idx.iter().map(|&i| host_p[i]).collect();
    let sg: Vec<f32> = idx.iter().map(|&i| grad_host[i]).collect();
    let k = idx.len();
    let (mut cp, mut cg) = (
        cpu.alloc(DType::F32, k).expect("p"),
        cpu.alloc(DType::F32, k).expect("g"),
    );
    cpu.upload(&sp, cp.all_mut()).expect("p");
    cpu.upload(&sg, cg.all_mut()).expect("g");
    let (mut cm, mut cv) = (
        cpu.alloc(DType::F32, k).expect("m"),
        cpu.alloc(DType::F32, k).expect("v"),
    );
    let mut cc = cpu.alloc(DType::BF16, k).expect("copy");
    cpu.adam_step(
        &hp,
        AdamArgs {
            param: cp.all_mut(),
            grad: cg.all(),
            exp_avg: cm.all_mut(),
            exp_avg_sq: cv.all_mut(),
            param_copy: Some(cc.all_mut()),
        },
    )
    .expect("cpu adam");
    let want_p: Vec<f32> = cpu.to_vec(cp.all()).expect("p");
    let want_v: Vec<f32> = cpu.to_vec(cv.all()).expect("v");
    let want_c: Vec<bf16> = cpu.to_vec(cc.all()).expect("copy");
    for (j, &i) in idx.iter().enumerate() {
        let close = |a: f32, b: f32| (a - b).abs() <= 4.0 * f32::EPSILON * b.abs().max(1e-6);
        assert!(
            close(got_p[i], want_p[j]),
            "param [{i}]: {} vs {}",
            got_p[i],
            want_p[j]
        );
        assert!(
            close(got_v[i], want_v[j]),
            "exp_avg_sq [{i}]: {} vs {}",
            got_v[i],
            want_v[j]
        );
        let (a, b) = (got_c[i].to_f32(), want_c[j].to_f32());
        assert!(
            (a - b).abs() <= 0.008 * b.abs().max(1e-6),
            "bf16 copy [{i}]: {a} vs {b}"
        );
    }
    println!(
        "{N} elements in pieces of {piece}: round trip exact, axpy and AdamW match at {} samples",
        idx.len()
    );
}
