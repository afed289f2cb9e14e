//! Every kernel family on the WGPU backend beside the CPU backend, in one run: each case is
//! built on both devices and timed alternately, round after round (`benches::timing`), so the
//! two columns share the machine's load. A device copy measured the same way on each is the
//! reference for the memory-bound kernels; GEMM is stated in GFLOP/s.
//!
//! On a machine with only lavapipe (Mesa's software Vulkan), "wgpu" is the WGSL compiled by
//! LLVM and run on the same CPU cores as the CPU backend: the ratio is the cost of portability
//! there, not a GPU's speed. `cargo bench -p benches --features wgpu --bench wgpu`;
//! `DS_BENCH_ELEMENTS` (default 16M) sets the elementwise size.

use benches::timing::{interleaved, median};
use ds_backend_wgpu::WgpuBackend;
use ds_core::cpu::CpuBackend;
use ds_core::kernels::{AdamArgs, AttentionArgs, AttentionBackwardArgs, LayerNormArgs, SgdArgs};
use ds_core::params::{AdamParams, AttentionShape, GemmSpec, LambParams, SgdParams, Shape2};
use ds_core::{Backend, BufferExt, DType, Device, Result};

const M: usize = 1 << 20;
const ROUNDS: usize = 5;

type Run<'a> = Box<dyn FnMut() -> Result<()> + 'a>;

/// One benchmark case: a name, what one call moves (bytes) or computes (FLOP), and the call.
struct Case<'a> {
    name: String,
    work: f64,
    flops: bool,
    run: Run<'a>,
}

fn case<'a>(
    name: impl Into<String>,
    bytes: usize,
    run: impl FnMut() -> Result<()> + 'a,
) -> Case<'a> {
    Case {
        name: name.into(),
        work: bytes as f64,
        flops: false,
        run: Box::new(run),
    }
}

/// Varied values in [-1, 1), stored as `dtype`.
fn varied<B: Backend>(dev: &Device<B>, dtype: DType, n: usize, salt: usize) -> Result<B::Buffer> {
    let host: Vec<f32> = (0..n)
        .map(|i| (((i + salt).wrapping_mul(2_654_435_761) % 2000) as f32 / 1000.0) - 1.0)
        .collect();
    let wide = dev.alloc_from(&host)?;
    if dtype == DType::F32 {
        return Ok(wide);
    }
    let mut out = dev.alloc(dtype, n)?;
    dev.cast(wide.all(), out.all_mut())?;
    Ok(out)
}

fn filled<B: Backend>(dev: &Device<B>, dtype: DType, n: usize, v: f64) -> Result<B::Buffer> {
    let mut b = dev.alloc(dtype, n)?;
    dev.fill(b.all_mut(), v)?;
    Ok(b)
}

/// The cases, built on `dev`. Each call ends with a device sync, so its time is the kernel's.
fn cases<B: Backend>(dev: &Device<B>, n: usize) -> Result<Vec<Case<'_>>> {
    let mut out = Vec::new();
    let d = dev;
    let synced = move |r: Result<()>| r.and_then(|_| d.sync());

    let x = varied(d, DType::F32, n, 1)?;
    let mut y = varied(d, DType::F32, n, 2)?;
    out.push(case("copy f32 (reference)", 8 * n, move || {
        synced(d.copy(x.all(), y.all_mut()))
    }));
    let mut y = varied(d, DType::F32, n, 2)?;
    out.push(case("fill f32", 4 * n, move || {
        synced(d.fill(y.all_mut(), 0.5))
    }));
    let mut y = varied(d, DType::F32, n, 2)?;
    out.push(case("scale f32", 8 * n, move || {
        synced(d.scale(y.all_mut(), 1.0))
    }));
    let (x, mut y) = (varied(d, DType::F32, n, 1)?, varied(d, DType::F32, n, 2)?);
    out.push(case("axpy f32", 12 * n, move || {
        synced(d.axpy(0.0, x.all(), y.all_mut()))
    }));
    let (a, b, mut o) = (
        varied(d, DType::F32, n, 1)?,
        varied(d, DType::F32, n, 3)?,
        d.alloc(DType::F32, n)?,
    );
    out.push(case("add f32", 12 * n, move || {
        synced(d.add(a.all(), b.all(), o.all_mut()))
    }));
    for to in [DType::F16, DType::BF16] {
        let (x, mut h) = (varied(d, DType::F32, n, 1)?, d.alloc(to, n)?);
        out.push(case(format!("cast f32 -> {to}"), 6 * n, move || {
            synced(d.cast(x.all(), h.all_mut()))
        }));
    }
    let (x, mut s) = (varied(d, DType::F32, n, 1)?, d.alloc(DType::F32, 1)?);
    out.push(case("sum_squares f32", 4 * n, move || {
        synced(d.sum_squares(x.all(), s.all_mut()))
    }));
    for dtype in [DType::F32, DType::BF16] {
        let (mut x, mut flag) = (varied(d, dtype, n, 1)?, d.alloc(DType::F32, 1)?);
        out.push(case(
            format!("unscale_and_check {dtype}"),
            2 * dtype.size_bytes() * n,
            move || synced(d.unscale_and_check(x.all_mut(), 1.0, flag.all_mut())),
        ));
    }
    let (x, mut g) = (varied(d, DType::F32, n, 1)?, d.alloc(DType::F32, n)?);
    out.push(case("gelu f32", 8 * n, move || {
        synced(d.gelu(x.all(), g.all_mut()))
    }));

    // Optimizers: fp32 master weights, fp32 or bf16 gradients, bf16 copy-out for AdamW.
    let hp = AdamParams {
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    let (mut p, gr, mut m, mut v) = (
        varied(d, DType::F32, n, 1)?,
        varied(d, DType::F32, n, 2)?,
        filled(d, DType::F32, n, 0.0)?,
        filled(d, DType::F32, n, 0.0)?,
    );
    out.push(case(
        "adam_step AdamW f32 (28 B/param)",
        28 * n,
        move || {
            synced(d.adam_step(
                &hp,
                AdamArgs {
                    param: p.all_mut(),
                    grad: gr.all(),
                    exp_avg: m.all_mut(),
                    exp_avg_sq: v.all_mut(),
                    param_copy: None,
                },
            ))
        },
    ));
    let (mut p, gr, mut m, mut v, mut c) = (
        varied(d, DType::F32, n, 1)?,
        varied(d, DType::BF16, n, 2)?,
        filled(d, DType::F32, n, 0.0)?,
        filled(d, DType::F32, n, 0.0)?,
        d.alloc(DType::BF16, n)?,
    );
    out.push(case(
        "adam_step bf16 grad + bf16 copy (26 B/param)",
        26 * n,
        move || {
            synced(d.adam_step(
                &hp,
                AdamArgs {
                    param: p.all_mut(),
                    grad: gr.all(),
                    exp_avg: m.all_mut(),
                    exp_avg_sq: v.all_mut(),
                    param_copy: Some(c.all_mut()),
                },
            ))
        },
    ));
    let sgd = SgdParams {
        momentum: 0.9,
        ..SgdParams::default()
    };
    let (mut p, gr, mut buf) = (
        varied(d, DType::F32, n, 1)?,
        varied(d, DType::F32, n, 2)?,
        filled(d, DType::F32, n, 0.0)?,
    );
    out.push(case(
        "sgd_step momentum f32 (20 B/param)",
        20 * n,
        move || {
            synced(d.sgd_step(
                &sgd,
                SgdArgs {
                    param: p.all_mut(),
                    grad: gr.all(),
                    momentum: Some(buf.all_mut()),
                    param_copy: None,
                },
            ))
        },
    ));
    let lamb = LambParams::default();
    let (mut p, gr, mut m, mut v) = (
        varied(d, DType::F32, n, 1)?,
        varied(d, DType::F32, n, 2)?,
        filled(d, DType::F32, n, 0.0)?,
        filled(d, DType::F32, n, 0.0)?,
    );
    out.push(case(
        "lamb_step f32 (two passes, 48 B/param)",
        48 * n,
        move || {
            synced(d.lamb_step(
                &lamb,
                AdamArgs {
                    param: p.all_mut(),
                    grad: gr.all(),
                    exp_avg: m.all_mut(),
                    exp_avg_sq: v.all_mut(),
                    param_copy: None,
                },
            ))
        },
    ));

    // GEMM, f32 and bf16 storage (f32 accumulation), in GFLOP/s.
    for dtype in [DType::F32, DType::BF16] {
        let k = 512;
        let (a, b, mut c) = (
            varied(d, dtype, k * k, 1)?,
            varied(d, dtype, k * k, 2)?,
            d.alloc(dtype, k * k)?,
        );
        let spec = GemmSpec::new(k, k, k);
        let mut cs = case(format!("gemm {dtype} 512^3 (GFLOP/s)"), 0, move || {
            synced(d.gemm(&spec, a.all(), b.all(), c.all_mut()))
        });
        cs.work = 2.0 * (k * k * k) as f64;
        cs.flops = true;
        out.push(cs);
    }

    // NN kernels at a GPT-block's shapes.
    let (rows, cols) = (4096, 1024);
    let (x, gamma, beta, mut yv, mut mean, mut rstd) = (
        varied(d, DType::F32, rows * cols, 1)?,
        filled(d, DType::F32, cols, 1.0)?,
        filled(d, DType::F32, cols, 0.0)?,
        d.alloc(DType::F32, rows * cols)?,
        d.alloc(DType::F32, rows)?,
        d.alloc(DType::F32, rows)?,
    );
    out.push(case(
        "layer_norm f32 4096x1024",
        8 * rows * cols,
        move || {
            synced(d.layer_norm(
                Shape2::new(rows, cols),
                1e-5,
                LayerNormArgs {
                    x: x.all(),
                    gamma: gamma.all(),
                    beta: beta.all(),
                    y: yv.all_mut(),
                    mean: mean.all_mut(),
                    rstd: rstd.all_mut(),
                },
            ))
        },
    ));
    let (mut xb, bias) = (
        varied(d, DType::F32, rows * cols, 1)?,
        varied(d, DType::F32, cols, 2)?,
    );
    out.push(case("bias_add f32 4096x1024", 8 * rows * cols, move || {
        synced(d.bias_add(Shape2::new(rows, cols), xb.all_mut(), bias.all()))
    }));
    let classes = 4096;
    let logit_rows = 1024;
    let labels: Vec<i32> = (0..logit_rows as i32)
        .map(|i| (i * 37) % classes as i32)
        .collect();
    let (logits, lab, mut losses) = (
        varied(d, DType::F32, logit_rows * classes, 1)?,
        d.alloc_from(&labels)?,
        d.alloc(DType::F32, logit_rows)?,
    );
    out.push(case(
        "softmax_cross_entropy f32 1024x4096",
        4 * logit_rows * classes,
        move || {
            synced(d.softmax_cross_entropy(
                Shape2::new(logit_rows, classes),
                -100,
                logits.all(),
                lab.all(),
                losses.all_mut(),
            ))
        },
    ));
    let sh = AttentionShape::new(4, 4, 256, 64);
    let len = 4 * 4 * 256 * 64;
    let (q, k, v, mut o, mut lse) = (
        varied(d, DType::F32, len, 1)?,
        varied(d, DType::F32, len, 2)?,
        varied(d, DType::F32, len, 3)?,
        d.alloc(DType::F32, len)?,
        d.alloc(DType::F32, 4 * 4 * 256)?,
    );
    d.attention(
        &sh,
        AttentionArgs {
            q: q.all(),
            k: k.all(),
            v: v.all(),
            out: o.all_mut(),
            lse: lse.all_mut(),
        },
    )?;
    let (dout, mut dq, mut dk, mut dv) = (
        varied(d, DType::F32, len, 4)?,
        d.alloc(DType::F32, len)?,
        d.alloc(DType::F32, len)?,
        d.alloc(DType::F32, len)?,
    );
    let (q2, k2, v2) = (
        varied(d, DType::F32, len, 1)?,
        varied(d, DType::F32, len, 2)?,
        varied(d, DType::F32, len, 3)?,
    );
    let (mut o2, mut lse2) = (d.alloc(DType::F32, len)?, d.alloc(DType::F32, 4 * 4 * 256)?);
    out.push(case(
        "attention f32 4x4x256x64 (bytes of q,k,v,out)",
        16 * len,
        move || {
            synced(d.attention(
                &sh,
                AttentionArgs {
                    q: q2.all(),
                    k: k2.all(),
                    v: v2.all(),
                    out: o2.all_mut(),
                    lse: lse2.all_mut(),
                },
            ))
        },
    ));
    out.push(case(
        "attention_backward f32 4x4x256x64",
        36 * len,
        move || {
            synced(d.attention_backward(
                &sh,
                AttentionBackwardArgs {
                    q: q.all(),
                    k: k.all(),
                    v: v.all(),
                    out: o.all(),
                    lse: lse.all(),
                    dout: dout.all(),
                    dq: dq.all_mut(),
                    dk: dk.all_mut(),
                    dv: dv.all_mut(),
                },
            ))
        },
    ));
    Ok(out)
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let n = std::env::var("DS_BENCH_ELEMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16 * M);
    let cpu = Device::new(CpuBackend::with_threads(benches::setup::threads())?);
    let gpu = Device::new(WgpuBackend::new()?);
    println!("cpu:  {}", cpu.info().name);
    println!("wgpu: {}", gpu.info().name);
    println!(
        "elementwise size {} M elements; {ROUNDS} alternating rounds, medians\n",
        n / M
    );
    let mut c_cases = cases(&cpu, n)?;
    let mut g_cases = cases(&gpu, n)?;
    println!(
        "{:<48} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "kernel", "cpu ms", "cpu GB/s", "wgpu ms", "wgpu GB/s", "wgpu/cpu"
    );
    for (c, g) in c_cases.iter_mut().zip(g_cases.iter_mut()) {
        let samples = interleaved(ROUNDS, &mut [&mut *c.run, &mut *g.run])?;
        let (tc, tg) = (median(&samples[0]), median(&samples[1]));
        println!(
            "{:<48} {:>10.3} {:>10.2} {:>10.3} {:>10.2} {:>9.2}",
            c.name,
            tc * 1e3,
            c.work / tc / 1e9,
            tg * 1e3,
            g.work / tg / 1e9,
            tc / tg
        );
    }
    println!(
        "\nGB/s counts reads plus writes (GFLOP/s for gemm); wgpu/cpu > 1 means wgpu is faster."
    );
    Ok(())
}
