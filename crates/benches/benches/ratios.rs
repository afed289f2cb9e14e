//! The acceptance ratios of the foundation, measured pairwise on a noisy machine: kernels are
//! run alternately, round after round, and compared by their medians, so a neighbour's load
//! lands on both sides of each ratio.
//!
//! - fused AdamW (fp32, 64M parameters) over the in-place 4-read/3-write bandwidth kernel:
//!   both move 28 bytes per parameter, so the ratio is the step's share of the machine's
//!   bandwidth for that access pattern;
//! - the same with a bf16 copy of the weights written in the pass;
//! - fused Adagrad and Lion (20 B/param: weights and one state read and written, the gradient
//!   read) over the same bandwidth kernel's bytes/s;
//! - the fused unscale-and-check and the f32 to f16 cast over 64M values, in milliseconds,
//!   beside a copy of the same bytes;
//! - f32 GEMM 1024^3 over the measured FMA peak, and bf16 GEMM over f32 (and over the measured
//!   AMX or `vdpbf16ps` peak, whichever it runs on).
//!
//! Run: `DS_CPU_THREADS=2 cargo bench -p benches --bench ratios` (`ROUNDS=n` to change the
//! number of rounds, default 21; `-- --gemm-only` for the GEMM part, which
//! `scripts/bench-gpt.sh` alternates with PyTorch's matmul, `scripts/peers/bench_torch_matmul.py`;
//! `-- --gpt-gemms [NAME]` for the default GPT's twelve f32 products instead (or those whose
//! name contains NAME, e.g. `dW`), each in GFLOP/s, which the same peer times with `--gpt`).

use benches::peak::fma_peak;
use benches::setup::{cpu, filled, rounds, threads, varied};
use benches::timing::{interleaved, median, paired_speed};
use ds_core::cpu::CpuBackend;
use ds_core::cpu::roofline;
use ds_core::kernels::{AdagradArgs, AdamArgs, LionArgs};
use ds_core::params::{AdagradParams, AdamParams, GemmSpec, LionParams};
use ds_core::{BufferExt, DType, Device, Result};

const M: usize = 1 << 20;

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rounds = rounds(21);
    let dev = cpu()?;
    let t = threads();
    println!(
        "ds ratios: {t} threads, {rounds} interleaved rounds; times are medians, ratios are medians of per-round ratios"
    );

    if std::env::args().any(|a| a == "--gpt-gemms") {
        return gpt_gemms(&dev, rounds);
    }
    if !std::env::args().any(|a| a == "--gemm-only") {
        bandwidth(&dev, rounds)?;
    }
    gemm(&dev, rounds, t)
}

/// The default GPT's f32 products (tokens 2048, width 128, MLP 512, vocab 256) as its layers
/// call them (`W` stored inputs x outputs): forward `x W`, weight gradient `x^T dy` (added
/// into the gradient), input gradient `dy W^T`. `(name, m, n, k, trans_a, trans_b, beta)`.
pub const GPT_GEMMS: [(&str, usize, usize, usize, bool, bool, f32); 12] = [
    ("qkv fwd", 2048, 384, 128, false, false, 0.0),
    ("qkv dW", 128, 384, 2048, true, false, 1.0),
    ("qkv dX", 2048, 128, 384, false, true, 0.0),
    ("proj fwd", 2048, 128, 128, false, false, 0.0),
    ("proj dW", 128, 128, 2048, true, false, 1.0),
    ("proj dX", 2048, 128, 128, false, true, 0.0),
    ("up fwd", 2048, 512, 128, false, false, 0.0),
    ("up dW", 128, 512, 2048, true, false, 1.0),
    ("up dX", 2048, 128, 512, false, true, 0.0),
    ("down fwd", 2048, 128, 512, false, false, 0.0),
    ("down dW", 512, 128, 2048, true, false, 1.0),
    ("down dX", 2048, 512, 128, false, true, 0.0),
];

/// Each of [`GPT_GEMMS`] in GFLOP/s, all interleaved round after round
/// (`scripts/peers/bench_torch_matmul.py --gpt` times the same products in PyTorch).
fn gpt_gemms(dev: &Device<CpuBackend>, rounds: usize) -> Result<()> {
    let mut cases = Vec::new();
    // A later argument that is not a flag keeps the products whose name contains it.
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let kept = GPT_GEMMS
        .iter()
        .filter(|g| only.as_ref().is_none_or(|f| g.0.contains(f.as_str())));
    for &(name, m, n, k, ta, tb, beta) in kept {
        let spec = GemmSpec::new(m, n, k).transpose(ta, tb).scaled(1.0, beta);
        let a = varied(dev, DType::F32, m * k)?;
        let b = varied(dev, DType::F32, k * n)?;
        let c = varied(dev, DType::F32, m * n)?;
        cases.push((name, spec, a, b, c));
    }
    let mut runs: Vec<Box<dyn FnMut() -> Result<()> + '_>> = cases
        .iter_mut()
        .map(|(_, spec, a, b, c)| {
            let d = dev.clone();
            Box::new(move || d.gemm(spec, a.all(), b.all(), c.all_mut()))
                as Box<dyn FnMut() -> Result<()>>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<()>> =
        runs.iter_mut().map(|r| &mut **r as _).collect();
    let samples = interleaved(rounds, &mut refs)?;
    drop(refs);
    drop(runs);
    println!(
        "\nthe default GPT's f32 products ({} kernels)",
        ds_core::cpu::isa::active().name()
    );
    for ((name, spec, ..), s) in cases.iter().zip(&samples) {
        let flop = 2.0 * (spec.m * spec.n * spec.k) as f64;
        println!(
            "  gemm {name:<9} {:>5} x {:>4} x {:>5}  {:>7.1} GFLOP/s  {:>7.3} ms",
            spec.m,
            spec.n,
            spec.k,
            flop / median(s) / 1e9,
            median(s) * 1e3
        );
    }
    Ok(())
}

/// AdamW and the 64M-value passes against their bandwidth references.
fn bandwidth(dev: &Device<CpuBackend>, rounds: usize) -> Result<()> {
    let n = 64 * M;
    let (mut p, g, mut m, mut v) = (
        varied(dev, DType::F32, n)?,
        varied(dev, DType::F32, n)?,
        filled(dev, DType::F32, n, 0.0)?,
        filled(dev, DType::F32, n, 0.0)?,
    );
    let (mut rp, rg, mut rm, mut rv) = (
        varied(dev, DType::F32, n)?,
        filled(dev, DType::F32, n, 0.0)?,
        varied(dev, DType::F32, n)?,
        varied(dev, DType::F32, n)?,
    );
    let mut copy16 = dev.alloc(DType::BF16, n)?;
    let hp = AdamParams {
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    let be = dev.backend().clone();
    let (dev_a, dev_b) = (dev.clone(), dev.clone());
    let mut roof =
        || roofline::inplace_4r3w(&be, rp.all_mut(), rg.all(), rm.all_mut(), rv.all_mut());
    let mut adam = || {
        let args = AdamArgs {
            param: p.all_mut(),
            grad: g.all(),
            exp_avg: m.all_mut(),
            exp_avg_sq: v.all_mut(),
            param_copy: None,
        };
        dev_a.adam_step(&hp, args)
    };
    let s = interleaved(rounds, &mut [&mut roof, &mut adam])?;
    let (t_roof, t_adam) = (median(&s[0]), median(&s[1]));
    let bytes = 28.0 * n as f64;
    println!("\nfused AdamW fp32, 64M parameters (28 B/param)");
    println!(
        "  in-place 4r/3w bandwidth kernel {:>8.2} ms  {:>6.1} GB/s",
        t_roof * 1e3,
        bytes / t_roof / 1e9
    );
    println!(
        "  ds adam_step (AdamW)            {:>8.2} ms  {:>6.1} GB/s",
        t_adam * 1e3,
        bytes / t_adam / 1e9
    );
    println!(
        "  ratio (adam bytes/s over bandwidth kernel): {:.1}%",
        100.0 * paired_speed(&s[0], &s[1])
    );

    let mut adam_copy = || {
        let args = AdamArgs {
            param: p.all_mut(),
            grad: g.all(),
            exp_avg: m.all_mut(),
            exp_avg_sq: v.all_mut(),
            param_copy: Some(copy16.all_mut()),
        };
        dev_b.adam_step(&hp, args)
    };
    let mut roof2 =
        || roofline::inplace_4r3w(&be, rp.all_mut(), rg.all(), rm.all_mut(), rv.all_mut());
    let s = interleaved(rounds, &mut [&mut roof2, &mut adam_copy])?;
    println!(
        "  with bf16 weight copy (30 B/param) {:>8.2} ms  {:.1}% of the bandwidth kernel's bytes/s",
        median(&s[1]) * 1e3,
        100.0 * (30.0 / 28.0) * paired_speed(&s[0], &s[1])
    );

    let dev_c = dev.clone();
    let mut adagrad = || {
        let args = AdagradArgs {
            param: p.all_mut(),
            grad: g.all(),
            exp_avg_sq: v.all_mut(),
            param_copy: None,
        };
        dev_c.adagrad_step(&AdagradParams::default(), args)
    };
    let dev_d = dev.clone();
    let mut lp = varied(dev, DType::F32, n)?;
    let mut lion = || {
        let args = LionArgs {
            param: lp.all_mut(),
            grad: g.all(),
            exp_avg: m.all_mut(),
            param_copy: None,
        };
        dev_d.lion_step(&LionParams::default(), args)
    };
    let mut roof3 =
        || roofline::inplace_4r3w(&be, rp.all_mut(), rg.all(), rm.all_mut(), rv.all_mut());
    let s = interleaved(rounds, &mut [&mut roof3, &mut adagrad, &mut lion])?;
    for (name, i) in [("adagrad_step", 1), ("lion_step", 2)] {
        println!(
            "  ds {name} (20 B/param)         {:>8.2} ms  {:.1}% of the bandwidth kernel's bytes/s",
            median(&s[i]) * 1e3,
            100.0 * (20.0 / 28.0) * paired_speed(&s[0], &s[i])
        );
    }

    let mut x = varied(dev, DType::F32, n)?;
    let y = varied(dev, DType::F32, n)?;
    let mut h = dev.alloc(DType::F16, n)?;
    let mut flag = dev.alloc(DType::F32, 1)?;
    let (d1, d2, d3) = (dev.clone(), dev.clone(), dev.clone());
    let mut unscale = || d1.unscale_and_check(x.all_mut(), 1.0, flag.all_mut());
    let mut cast = || d2.cast(y.all(), h.all_mut());
    let mut copy = {
        let mut z = varied(dev, DType::F32, n)?;
        let w = varied(dev, DType::F32, n)?;
        move || d3.copy(w.all(), z.all_mut())
    };
    let s = interleaved(rounds, &mut [&mut copy, &mut unscale, &mut cast])?;
    let times: Vec<f64> = s.iter().map(|x| median(x)).collect();
    println!(
        "\n64M values (targets: PyTorch's fused check+unscale 10.7 ms, fp32->fp16 copy_ 15.4 ms)"
    );
    println!(
        "  copy f32 -> f32 (8 B/value)       {:>8.2} ms  {:>6.1} GB/s",
        times[0] * 1e3,
        8.0 * n as f64 / times[0] / 1e9
    );
    println!(
        "  unscale_and_check f32 (8 B/value) {:>8.2} ms  {:>6.1} GB/s",
        times[1] * 1e3,
        8.0 * n as f64 / times[1] / 1e9
    );
    println!(
        "  cast f32 -> f16 (6 B/value)       {:>8.2} ms  {:>6.1} GB/s",
        times[2] * 1e3,
        6.0 * n as f64 / times[2] / 1e9
    );

    Ok(())
}

/// f32 and bf16 GEMM 1024^3 against the FMA peak of `t` threads, interleaved.
fn gemm(dev: &Device<CpuBackend>, rounds: usize, t: usize) -> Result<()> {
    let s = 1024;
    let (a, b) = (
        varied(dev, DType::F32, s * s)?,
        varied(dev, DType::F32, s * s)?,
    );
    let mut c = dev.alloc(DType::F32, s * s)?;
    let spec = GemmSpec::new(s, s, s);
    let d4 = dev.clone();
    let mut gemm = || d4.gemm(&spec, a.all(), b.all(), c.all_mut());
    let (a16, b16) = (
        varied(dev, DType::BF16, s * s)?,
        varied(dev, DType::BF16, s * s)?,
    );
    let mut c16 = dev.alloc(DType::BF16, s * s)?;
    let d5 = dev.clone();
    let mut gemm_bf16 = || d5.gemm(&spec, a16.all(), b16.all(), c16.all_mut());
    let mut peak_flops = Vec::new();
    let mut peak = || -> Result<()> {
        peak_flops.push(fma_peak(t, 1));
        Ok(())
    };
    let samples = interleaved(rounds, &mut [&mut peak, &mut gemm, &mut gemm_bf16])?;
    let flop = 2.0 * (s * s * s) as f64;
    let gemm_flops = flop / median(&samples[1]);
    // peak_flops[0] is the warm-up call; the rest pair with the GEMM rounds.
    let peak_median = median(&peak_flops[1..]);
    let per_round: Vec<f64> = peak_flops[1..]
        .iter()
        .zip(&samples[1])
        .map(|(p, t)| flop / t / p)
        .collect();
    let gemm_share = median(&per_round);
    println!(
        "\nf32 GEMM {s}^3 against the measured FMA peak ({t} threads x {}-wide FMA chains)",
        benches::peak::peak_lanes()
    );
    println!("  FMA peak          {:>8.1} GFLOP/s", peak_median / 1e9);
    println!(
        "  gemm f32 1024^3   {:>8.1} GFLOP/s  {:>6.2} ms",
        gemm_flops / 1e9,
        median(&samples[1]) * 1e3
    );
    println!("  ratio: {:.1}% of peak", 100.0 * gemm_share);
    let bf16_flops = flop / median(&samples[2]);
    println!(
        "  gemm bf16 1024^3  {:>8.1} GFLOP/s  {:>6.2} ms  ({:.2}x f32; kernels: {})",
        bf16_flops / 1e9,
        median(&samples[2]) * 1e3,
        paired_speed(&samples[1], &samples[2]),
        ds_core::cpu::isa::active().name()
    );
    if ds_core::cpu::isa::active() == ds_core::cpu::isa::Isa::Avx512Bf16
        && let Some(dp) = benches::peak::dpbf16_peak(t, 3)
    {
        println!(
            "  vdpbf16ps peak    {:>8.1} GFLOP/s ({t} threads x {}-chain vdpbf16ps; {:.2}x the FMA peak): gemm bf16 at {:.1}% of it",
            dp / 1e9,
            benches::peak::CHAINS,
            dp / peak_median,
            100.0 * bf16_flops / dp
        );
    }
    if let Some(amx) = benches::peak::amx_peak(t, 3) {
        println!(
            "  AMX bf16 peak     {:>8.1} GFLOP/s ({t} threads x 4 tdpbf16ps chains): gemm bf16 at {:.1}% of it",
            amx / 1e9,
            100.0 * bf16_flops / amx
        );
    }
    Ok(())
}
