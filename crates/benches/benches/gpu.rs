//! ds's kernels on an NVIDIA GPU, each beside a device-to-device copy measured in the same run
//! (the bandwidth these memory-bound kernels are bounded by), plus the fused AdamW step over
//! 256M fp32 parameters and GEMM in TFLOP/s. `benches/torch_gpu_peer.py` measures PyTorch on
//! the same sizes right after; scripts/gpu-check.sh runs both.
//!
//! Timing: each measurement queues `reps` launches, waits for the device, and divides; the
//! median of 5 such runs is reported. Bytes count reads plus writes.

use ds_backend_cuda::CudaBackend;
use ds_core::kernels::{AdamArgs, AttentionArgs, LayerNormArgs, SgdArgs};
use ds_core::params::{AdamParams, AttentionShape, GemmSpec, LambParams, SgdParams, Shape2};
use ds_core::{BufferExt, DType, Device, Result};
use std::time::Instant;

const M: usize = 1 << 20;

struct Bench {
    dev: Device<CudaBackend>,
    copy_gbs: f64,
}

impl Bench {
    /// Median seconds per call of `f` (`reps` calls per timed run, 5 runs, after a warm-up).
    fn time(&self, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        f()?;
        self.dev.sync()?;
        let mut runs = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            for _ in 0..reps {
                f()?;
            }
            self.dev.sync()?;
            runs.push(t.elapsed().as_secs_f64() / reps as f64);
        }
        runs.sort_by(f64::total_cmp);
        Ok(runs[2])
    }

    fn report(&self, name: &str, secs: f64, bytes: f64) {
        let gbs = bytes / secs / 1e9;
        println!(
            "{name:<44} {:>9.3} ms {:>9.1} GB/s {:>6.1}% of copy",
            secs * 1e3,
            gbs,
            100.0 * gbs / self.copy_gbs
        );
    }
}

fn filled(
    dev: &Device<CudaBackend>,
    dtype: DType,
    n: usize,
    v: f64,
) -> Result<ds_backend_cuda::CudaBuffer> {
    let mut b = dev.alloc(dtype, n)?;
    dev.fill(b.all_mut(), v)?;
    Ok(b)
}

/// Uniform values in [-1, 1) from a fixed-seed generator, stored as `dtype`.
fn random(
    dev: &Device<CudaBackend>,
    dtype: DType,
    n: usize,
    seed: u64,
) -> Result<ds_backend_cuda::CudaBuffer> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let host: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    let wide = dev.alloc_from(&host)?;
    let mut out = dev.alloc(dtype, n)?;
    dev.cast(wide.all(), out.all_mut())?;
    Ok(out)
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let dev = Device::new(CudaBackend::new(0)?);
    println!(
        "ds GPU benchmark on {} ({} SMs, {:.0} GiB)",
        dev.info().name,
        dev.info().compute_units,
        dev.info().memory_total as f64 / (1u64 << 30) as f64
    );
    let n = 256 * M;
    let x = filled(&dev, DType::F32, n, 0.5)?;
    let mut y = filled(&dev, DType::F32, n, 0.25)?;
    let mut b = Bench {
        dev: dev.clone(),
        copy_gbs: 1.0,
    };
    let copy = b.time(10, || dev.copy(x.all(), y.all_mut()))?;
    b.copy_gbs = 8.0 * n as f64 / copy / 1e9;
    println!(
        "{:<44} {:>9.3} ms {:>9.1} GB/s (reads + writes): the reference",
        "device-to-device copy f32 256M",
        copy * 1e3,
        b.copy_gbs
    );

    // Fused AdamW over 256M fp32 parameters: 28 bytes per parameter.
    let hp = AdamParams {
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    let (mut p, g, mut m, mut v) = (
        filled(&dev, DType::F32, n, 1.0)?,
        filled(&dev, DType::F32, n, 0.01)?,
        filled(&dev, DType::F32, n, 0.0)?,
        filled(&dev, DType::F32, n, 0.0)?,
    );
    let t = b.time(10, || {
        dev.adam_step(
            &hp,
            AdamArgs {
                param: p.all_mut(),
                grad: g.all(),
                exp_avg: m.all_mut(),
                exp_avg_sq: v.all_mut(),
                param_copy: None,
            },
        )
    })?;
    b.report("adam_step AdamW fp32 256M (28 B/param)", t, 28.0 * n as f64);
    let mut p16 = dev.alloc(DType::BF16, n)?;
    let t = b.time(10, || {
        dev.adam_step(
            &hp,
            AdamArgs {
                param: p.all_mut(),
                grad: g.all(),
                exp_avg: m.all_mut(),
                exp_avg_sq: v.all_mut(),
                param_copy: Some(p16.all_mut()),
            },
        )
    })?;
    b.report(
        "adam_step AdamW + bf16 copy 256M (30 B/param)",
        t,
        30.0 * n as f64,
    );
    let sgd = SgdParams {
        momentum: 0.9,
        step: 2,
        ..SgdParams::default()
    };
    let t = b.time(10, || {
        dev.sgd_step(
            &sgd,
            SgdArgs {
                param: p.all_mut(),
                grad: g.all(),
                momentum: Some(m.all_mut()),
                param_copy: None,
            },
        )
    })?;
    b.report(
        "sgd_step momentum fp32 256M (20 B/param)",
        t,
        20.0 * n as f64,
    );
    let t = b.time(5, || {
        dev.lamb_step(
            &LambParams::default(),
            AdamArgs {
                param: p.all_mut(),
                grad: g.all(),
                exp_avg: m.all_mut(),
                exp_avg_sq: v.all_mut(),
                param_copy: None,
            },
        )
    })?;
    b.report(
        "lamb_step fp32 256M (two passes, 40 B/param)",
        t,
        40.0 * n as f64,
    );
    drop((p, m, v, p16));

    let t = b.time(10, || dev.fill(y.all_mut(), 1.0))?;
    b.report("fill f32 256M", t, 4.0 * n as f64);
    let t = b.time(10, || dev.scale(y.all_mut(), 1.0))?;
    b.report("scale f32 256M", t, 8.0 * n as f64);
    let t = b.time(10, || dev.axpy(0.0, x.all(), y.all_mut()))?;
    b.report("axpy f32 256M", t, 12.0 * n as f64);
    let t = b.time(10, || dev.add(x.all(), g.all(), y.all_mut()))?;
    b.report("add f32 256M", t, 12.0 * n as f64);
    let mut h = dev.alloc(DType::BF16, n)?;
    let t = b.time(10, || dev.cast(x.all(), h.all_mut()))?;
    b.report("cast f32 -> bf16 256M", t, 6.0 * n as f64);
    let mut out = dev.alloc(DType::F32, 1)?;
    let t = b.time(10, || dev.sum_squares(x.all(), out.all_mut()))?;
    b.report("sum_squares f32 256M", t, 4.0 * n as f64);
    let mut flag = dev.alloc(DType::F32, 1)?;
    let t = b.time(10, || {
        dev.unscale_and_check(y.all_mut(), 1.0, flag.all_mut())
    })?;
    b.report("unscale_and_check f32 256M", t, 8.0 * n as f64);
    let t = b.time(10, || dev.gelu(x.all(), y.all_mut()))?;
    b.report("gelu f32 256M", t, 8.0 * n as f64);
    drop((h, g));

    let (rows, cols) = (32 * 1024, 4096);
    let sh = Shape2::new(rows, cols);
    let (gam, bet) = (
        filled(&dev, DType::F32, cols, 1.0)?,
        filled(&dev, DType::F32, cols, 0.0)?,
    );
    let (mut mean, mut rstd) = (dev.alloc(DType::F32, rows)?, dev.alloc(DType::F32, rows)?);
    let lx = x.range(0..rows * cols);
    let t = b.time(10, || {
        dev.layer_norm(
            sh,
            1e-5,
            LayerNormArgs {
                x: lx,
                gamma: gam.all(),
                beta: bet.all(),
                y: y.range_mut(0..rows * cols),
                mean: mean.all_mut(),
                rstd: rstd.all_mut(),
            },
        )
    })?;
    b.report("layer_norm f32 32768x4096", t, 8.0 * (rows * cols) as f64);
    let t = b.time(10, || {
        dev.bias_add(sh, y.range_mut(0..rows * cols), gam.all())
    })?;
    b.report("bias_add f32 32768x4096", t, 8.0 * (rows * cols) as f64);
    let (tokens, vocab) = (8192usize, 32768usize);
    let labels = dev.alloc_from(
        &(0..tokens as i32)
            .map(|i| i * 7 % vocab as i32)
            .collect::<Vec<_>>(),
    )?;
    let mut losses = dev.alloc(DType::F32, tokens)?;
    let t = b.time(10, || {
        dev.softmax_cross_entropy(
            Shape2::new(tokens, vocab),
            -100,
            x.range(0..tokens * vocab),
            labels.all(),
            losses.all_mut(),
        )
    })?;
    b.report(
        "softmax_cross_entropy f32 8192x32768",
        t,
        4.0 * (tokens * vocab) as f64,
    );
    let ash = AttentionShape::new(8, 16, 1024, 64);
    let qn = ash.qkv_len();
    let mut lse = dev.alloc(DType::F32, ash.lse_len())?;
    let t = b.time(3, || {
        dev.attention(
            &ash,
            AttentionArgs {
                q: x.range(0..qn),
                k: x.range(qn..2 * qn),
                v: x.range(2 * qn..3 * qn),
                out: y.range_mut(0..qn),
                lse: lse.all_mut(),
            },
        )
    })?;
    let flop = 2.0 * 2.0 * (ash.batch * ash.heads) as f64 * (ash.seq * ash.seq) as f64 / 2.0
        * ash.head_dim as f64;
    println!(
        "{:<44} {:>9.3} ms {:>9.1} TFLOP/s (naive kernel)",
        "attention f32 b8 h16 s1024 d64",
        t * 1e3,
        flop / t / 1e12
    );
    drop((x, y));

    for (dtype, s) in [
        (DType::BF16, 8192usize),
        (DType::F16, 8192),
        (DType::F32, 4096),
    ] {
        // Random operands: constant or zero data runs matrix units faster than real data.
        let a = random(&dev, dtype, s * s, 1)?;
        let bm = random(&dev, dtype, s * s, 2)?;
        let mut c = dev.alloc(dtype, s * s)?;
        let spec = GemmSpec::new(s, s, s);
        let t = b.time(10, || dev.gemm(&spec, a.all(), bm.all(), c.all_mut()))?;
        let tflops = 2.0 * (s as f64).powi(3) / t / 1e12;
        println!(
            "{:<44} {:>9.3} ms {:>9.1} TFLOP/s",
            format!("gemm {dtype} {s}^3 (f32 accumulation)"),
            t * 1e3,
            tflops
        );
    }
    Ok(())
}
