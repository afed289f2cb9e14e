//! The GPT's row kernels against the machine's copy bandwidth, and its attention at the
//! GPT's shapes, measured pairwise: each kernel runs alternately with a copy of the same
//! element count, round after round, and reads as its bytes moved per second over the copy's
//! (a copy moves 8 bytes per f32: one read, one write).
//!
//! - GELU forward (reads x, writes y: 8 B/element) and backward (x, dy, dx: 12 B/element);
//! - LayerNorm forward (8 B/element plus the row statistics) and backward (x, dy, dx: 12
//!   B/element plus the parameter-gradient partials);
//! - softmax cross-entropy forward (reads the logits: 4 B/element) and backward (logits in,
//!   gradient out: 8 B/element);
//! - causal attention forward + backward at the default GPT's shape (batch 32, 4 heads,
//!   context 64, head width 32) and the larger one (batch 8, 6 heads, context 256, width 64),
//!   in milliseconds: `scripts/peers/bench_torch_sdpa.py` times PyTorch's
//!   `scaled_dot_product_attention` forward + backward at the same shapes.
//!
//! Run: `DS_CPU_THREADS=2 cargo bench -p benches --bench rows` (`ROUNDS=n`, default 15); a
//! trailing argument keeps the kernels whose name contains it (`-- layernorm`).

use benches::setup::{cpu, filled, rounds, threads, varied};
use benches::timing::{interleaved, median, paired_speed};
use ds_core::cpu::CpuBackend;
use ds_core::kernels::{
    AttentionArgs, AttentionBackwardArgs, LayerNormArgs, LayerNormBackwardArgs,
};
use ds_core::params::{AttentionShape, Shape2};
use ds_core::{BufferExt, DType, Device, Result};

/// The kernels to run: those whose name contains the first argument that is not a flag
/// (case-insensitive), or all.
fn selected(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_none_or(|f| name.to_lowercase().contains(&f.to_lowercase()))
}

/// One kernel against a copy of `n` f32: prints its GB/s and its share of the copy's.
fn against_copy(
    dev: &Device<CpuBackend>,
    rounds: usize,
    name: &str,
    n: usize,
    bytes_per_element: f64,
    kernel: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    if !selected(name) {
        return Ok(());
    }
    let src = varied(dev, DType::F32, n)?;
    let mut dst = filled(dev, DType::F32, n, 0.0)?;
    let mut copy = || dev.copy(src.all(), dst.all_mut());
    let s = interleaved(rounds, &mut [&mut copy, kernel])?;
    let copy_gbs = 8.0 * n as f64 / median(&s[0]) / 1e9;
    let kernel_gbs = bytes_per_element * n as f64 / median(&s[1]) / 1e9;
    // Per round: (kernel bytes / kernel time) / (copy bytes / copy time).
    let share = paired_speed(&s[0], &s[1]) * bytes_per_element / 8.0;
    println!(
        "  {name:<34} {:>7.3} ms {:>7.1} GB/s   copy {:>6.1} GB/s   {:>5.1}% of copy",
        median(&s[1]) * 1e3,
        kernel_gbs,
        copy_gbs,
        100.0 * share
    );
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let rounds = rounds(15);
    let dev = cpu()?;
    println!(
        "ds row kernels and attention: {} threads, {rounds} interleaved rounds, kernels: {}",
        threads(),
        ds_core::cpu::isa::active().name()
    );
    let (rows, cols) = (8192usize, 768usize);
    let n = rows * cols;
    let shape = Shape2::new(rows, cols);
    let x = varied(&dev, DType::F32, n)?;
    let dy = varied(&dev, DType::F32, n)?;
    let mut y = filled(&dev, DType::F32, n, 0.0)?;
    println!("\nrows x cols = {rows} x {cols} (f32)");
    against_copy(&dev, rounds, "add (reference)", n, 12.0, &mut || {
        dev.add(x.all(), dy.all(), y.all_mut())
    })?;
    against_copy(&dev, rounds, "GELU forward", n, 8.0, &mut || {
        dev.gelu(x.all(), y.all_mut())
    })?;
    against_copy(&dev, rounds, "GELU backward", n, 12.0, &mut || {
        dev.gelu_backward(x.all(), dy.all(), y.all_mut())
    })?;
    let (gamma, beta) = (
        varied(&dev, DType::F32, cols)?,
        varied(&dev, DType::F32, cols)?,
    );
    let (mut mean, mut rstd) = (
        filled(&dev, DType::F32, rows, 0.0)?,
        filled(&dev, DType::F32, rows, 0.0)?,
    );
    against_copy(&dev, rounds, "LayerNorm forward", n, 8.0, &mut || {
        dev.layer_norm(
            shape,
            1e-5,
            LayerNormArgs {
                x: x.all(),
                gamma: gamma.all(),
                beta: beta.all(),
                y: y.all_mut(),
                mean: mean.all_mut(),
                rstd: rstd.all_mut(),
            },
        )
    })?;
    let (mut dg, mut db) = (
        filled(&dev, DType::F32, cols, 0.0)?,
        filled(&dev, DType::F32, cols, 0.0)?,
    );
    against_copy(&dev, rounds, "LayerNorm backward", n, 12.0, &mut || {
        dev.layer_norm_backward(
            shape,
            false,
            LayerNormBackwardArgs {
                x: x.all(),
                gamma: gamma.all(),
                mean: mean.all(),
                rstd: rstd.all(),
                dy: dy.all(),
                dx: y.all_mut(),
                dgamma: dg.all_mut(),
                dbeta: db.all_mut(),
            },
        )
    })?;
    let (tokens, vocab) = (2048usize, 8192usize);
    let logits = varied(&dev, DType::F32, tokens * vocab)?;
    let labels = dev.alloc_from(
        &(0..tokens as i32)
            .map(|i| i * 3 % vocab as i32)
            .collect::<Vec<_>>(),
    )?;
    let mut losses = filled(&dev, DType::F32, tokens, 0.0)?;
    let mut dlogits = filled(&dev, DType::F32, tokens * vocab, 0.0)?;
    let xs = Shape2::new(tokens, vocab);
    println!("\ntokens x vocab = {tokens} x {vocab} (f32)");
    against_copy(
        &dev,
        rounds,
        "softmax cross-entropy forward",
        tokens * vocab,
        4.0,
        &mut || dev.softmax_cross_entropy(xs, -100, logits.all(), labels.all(), losses.all_mut()),
    )?;
    against_copy(
        &dev,
        rounds,
        "softmax cross-entropy backward",
        tokens * vocab,
        8.0,
        &mut || {
            dev.softmax_cross_entropy_backward(
                xs,
                -100,
                1.0 / tokens as f32,
                logits.all(),
                labels.all(),
                dlogits.all_mut(),
            )
        },
    )?;

    println!("\ncausal attention forward + backward (f32)");
    for (b, h, s, d) in [(32usize, 4usize, 64usize, 32usize), (8, 6, 256, 64)] {
        if !selected("attention") {
            break;
        }
        let sh = AttentionShape::new(b, h, s, d);
        let n = sh.qkv_len();
        let (q, k, v, dout) = (
            varied(&dev, DType::F32, n)?,
            varied(&dev, DType::F32, n)?,
            varied(&dev, DType::F32, n)?,
            varied(&dev, DType::F32, n)?,
        );
        let mut out = filled(&dev, DType::F32, n, 0.0)?;
        let mut lse = filled(&dev, DType::F32, sh.lse_len(), 0.0)?;
        let (mut dq, mut dk, mut dv) = (
            filled(&dev, DType::F32, n, 0.0)?,
            filled(&dev, DType::F32, n, 0.0)?,
            filled(&dev, DType::F32, n, 0.0)?,
        );
        let mut step = || -> Result<()> {
            dev.attention(
                &sh,
                AttentionArgs {
                    q: q.all(),
                    k: k.all(),
                    v: v.all(),
                    out: out.all_mut(),
                    lse: lse.all_mut(),
                },
            )?;
            dev.attention_backward(
                &sh,
                AttentionBackwardArgs {
                    q: q.all(),
                    k: k.all(),
                    v: v.all(),
                    out: out.all(),
                    lse: lse.all(),
                    dout: dout.all(),
                    dq: dq.all_mut(),
                    dk: dk.all_mut(),
                    dv: dv.all_mut(),
                },
            )
        };
        let t = interleaved(rounds, &mut [&mut step])?;
        // Causal FLOP: forward q k^T and p v, backward five products, over the lower triangle.
        let flop = 7.0 * 2.0 * (b * h) as f64 * (s * (s + 1) / 2) as f64 * d as f64;
        println!(
            "  batch {b} heads {h} context {s} width {d}: {:>8.3} ms ({:.1} GFLOP/s causal)",
            median(&t[0]) * 1e3,
            flop / median(&t[0]) / 1e9
        );
    }
    Ok(())
}
