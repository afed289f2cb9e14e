//! criterion benchmarks of every kernel family on the CPU backend, with the machine's own
//! limits measured in the same run: a plain copy, an in-place kernel of the optimizer step's
//! shape (read 4 arrays, write 3 back) and the FMA peak. Throughput is declared in bytes moved
//! (FLOP for the peak), so `cargo run -p benches --bin bench-report` can state every kernel as
//! a fraction of those limits.
//!
//! `DS_CPU_THREADS` sets the thread count (default 2).

use benches::peak::fma_peak;
use benches::setup::{cpu, filled, threads, varied};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ds_core::cpu::{CpuBackend, CpuBuffer, roofline};
use ds_core::kernels::{
    AdagradArgs, AdamArgs, AttentionArgs, AttentionBackwardArgs, LayerNormArgs,
    LayerNormBackwardArgs, LionArgs, SgdArgs,
};
use ds_core::params::{
    AdagradParams, AdamParams, AttentionShape, GemmSpec, LambParams, LionParams, SgdParams, Shape2,
};
use ds_core::{BufferExt, DType, Device};
use std::time::Duration;

const M: usize = 1 << 20;

fn dev() -> Device<CpuBackend> {
    cpu().expect("CPU backend")
}

fn buf(dev: &Device<CpuBackend>, dtype: DType, len: usize) -> CpuBuffer {
    varied(dev, dtype, len).expect("allocation")
}

fn memory(c: &mut Criterion) {
    let dev = dev();
    let mut g = c.benchmark_group("memory");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [16 * M, 64 * M] {
        let x = buf(&dev, DType::F32, n);
        let mut y = buf(&dev, DType::F32, n);
        g.throughput(Throughput::Bytes(8 * n as u64));
        g.bench_function(BenchmarkId::new("copy_f32", format!("{}M", n / M)), |b| {
            b.iter(|| dev.copy(x.all(), y.all_mut()).expect("copy"))
        });
        let (mut p, gr, mut m, mut v) = (
            buf(&dev, DType::F32, n),
            filled(&dev, DType::F32, n, 0.0).expect("alloc"),
            buf(&dev, DType::F32, n),
            buf(&dev, DType::F32, n),
        );
        g.throughput(Throughput::Bytes(28 * n as u64));
        g.bench_function(
            BenchmarkId::new("inplace_4r3w", format!("{}M", n / M)),
            |b| {
                b.iter(|| {
                    roofline::inplace_4r3w(
                        dev.backend(),
                        p.all_mut(),
                        gr.all(),
                        m.all_mut(),
                        v.all_mut(),
                    )
                    .expect("roofline")
                })
            },
        );
    }
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let dev = dev();
    let n = 64 * M;
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let x = buf(&dev, DType::F32, n);
    let mut y = buf(&dev, DType::F32, n);
    let z = buf(&dev, DType::F32, n);
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function("fill_f32/64M", |b| {
        b.iter(|| dev.fill(y.all_mut(), 0.5).expect("fill"))
    });
    g.throughput(Throughput::Bytes(8 * n as u64));
    g.bench_function("scale_f32/64M", |b| {
        b.iter(|| dev.scale(y.all_mut(), 1.0).expect("scale"))
    });
    g.throughput(Throughput::Bytes(12 * n as u64));
    g.bench_function("axpy_f32/64M", |b| {
        b.iter(|| dev.axpy(0.0, x.all(), y.all_mut()).expect("axpy"))
    });
    g.bench_function("add_f32/64M", |b| {
        b.iter(|| dev.add(x.all(), z.all(), y.all_mut()).expect("add"))
    });
    g.bench_function("mul_f32/64M", |b| {
        b.iter(|| dev.mul(x.all(), z.all(), y.all_mut()).expect("mul"))
    });
    for to in [DType::F16, DType::BF16] {
        let mut h = buf(&dev, to, n);
        g.throughput(Throughput::Bytes(6 * n as u64));
        g.bench_function(format!("cast_f32_to_{to}/64M"), |b| {
            b.iter(|| dev.cast(x.all(), h.all_mut()).expect("cast"))
        });
        g.bench_function(format!("cast_{to}_to_f32/64M"), |b| {
            b.iter(|| dev.cast(h.all(), y.all_mut()).expect("cast"))
        });
    }
    g.finish();
}

fn reduction(c: &mut Criterion) {
    let dev = dev();
    let n = 64 * M;
    let mut g = c.benchmark_group("reduction");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let x = buf(&dev, DType::F32, n);
    let mut out = dev.alloc(DType::F32, 1).expect("alloc");
    let mut flag = dev.alloc(DType::F32, 1).expect("alloc");
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function("sum_f32/64M", |b| {
        b.iter(|| dev.sum(x.all(), out.all_mut()).expect("sum"))
    });
    g.bench_function("sum_squares_f32/64M", |b| {
        b.iter(|| dev.sum_squares(x.all(), out.all_mut()).expect("sum"))
    });
    g.bench_function("non_finite_f32/64M", |b| {
        b.iter(|| dev.non_finite(x.all(), flag.all_mut()).expect("check"))
    });
    for dtype in [DType::F32, DType::BF16] {
        let mut y = buf(&dev, dtype, n);
        g.throughput(Throughput::Bytes(2 * dtype.size_bytes() as u64 * n as u64));
        g.bench_function(format!("unscale_and_check_{dtype}/64M"), |b| {
            b.iter(|| {
                dev.unscale_and_check(y.all_mut(), 1.0, flag.all_mut())
                    .expect("unscale")
            })
        });
    }
    g.finish();
}

fn optimizer(c: &mut Criterion) {
    let dev = dev();
    let mut g = c.benchmark_group("optimizer");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let hp = AdamParams {
        weight_decay: 0.01,
        ..AdamParams::default()
    };
    for n in [16 * M, 64 * M] {
        let label = format!("{}M", n / M);
        let (mut p, grad, mut m, mut v) = (
            buf(&dev, DType::F32, n),
            buf(&dev, DType::F32, n),
            filled(&dev, DType::F32, n, 0.0).expect("alloc"),
            filled(&dev, DType::F32, n, 0.0).expect("alloc"),
        );
        g.throughput(Throughput::Bytes(28 * n as u64));
        g.bench_function(BenchmarkId::new("adamw_f32", &label), |b| {
            b.iter(|| {
                dev.adam_step(
                    &hp,
                    AdamArgs {
                        param: p.all_mut(),
                        grad: grad.all(),
                        exp_avg: m.all_mut(),
                        exp_avg_sq: v.all_mut(),
                        param_copy: None,
                    },
                )
                .expect("adam")
            })
        });
        let mut copy = buf(&dev, DType::BF16, n);
        g.throughput(Throughput::Bytes(30 * n as u64));
        g.bench_function(BenchmarkId::new("adamw_f32_bf16_copy", &label), |b| {
            b.iter(|| {
                dev.adam_step(
                    &hp,
                    AdamArgs {
                        param: p.all_mut(),
                        grad: grad.all(),
                        exp_avg: m.all_mut(),
                        exp_avg_sq: v.all_mut(),
                        param_copy: Some(copy.all_mut()),
                    },
                )
                .expect("adam")
            })
        });
        if n == 64 * M {
            let grad16 = buf(&dev, DType::BF16, n);
            g.throughput(Throughput::Bytes(28 * n as u64));
            g.bench_function(BenchmarkId::new("adamw_bf16_grad_bf16_copy", &label), |b| {
                b.iter(|| {
                    dev.adam_step(
                        &hp,
                        AdamArgs {
                            param: p.all_mut(),
                            grad: grad16.all(),
                            exp_avg: m.all_mut(),
                            exp_avg_sq: v.all_mut(),
                            param_copy: Some(copy.all_mut()),
                        },
                    )
                    .expect("adam")
                })
            });
            let sgd = SgdParams {
                momentum: 0.9,
                step: 2,
                ..SgdParams::default()
            };
            g.throughput(Throughput::Bytes(20 * n as u64));
            g.bench_function(BenchmarkId::new("sgd_momentum_f32", &label), |b| {
                b.iter(|| {
                    dev.sgd_step(
                        &sgd,
                        SgdArgs {
                            param: p.all_mut(),
                            grad: grad.all(),
                            momentum: Some(m.all_mut()),
                            param_copy: None,
                        },
                    )
                    .expect("sgd")
                })
            });
            // Adagrad and Lion move what momentum SGD moves: weights and one state read and
            // written, the gradient read (20 B/param).
            g.throughput(Throughput::Bytes(20 * n as u64));
            g.bench_function(BenchmarkId::new("adagrad_f32", &label), |b| {
                b.iter(|| {
                    dev.adagrad_step(
                        &AdagradParams::default(),
                        AdagradArgs {
                            param: p.all_mut(),
                            grad: grad.all(),
                            exp_avg_sq: v.all_mut(),
                            param_copy: None,
                        },
                    )
                    .expect("adagrad")
                })
            });
            g.bench_function(BenchmarkId::new("lion_f32", &label), |b| {
                b.iter(|| {
                    dev.lion_step(
                        &LionParams::default(),
                        LionArgs {
                            param: p.all_mut(),
                            grad: grad.all(),
                            exp_avg: m.all_mut(),
                            param_copy: None,
                        },
                    )
                    .expect("lion")
                })
            });
            g.throughput(Throughput::Bytes(40 * n as u64));
            g.bench_function(BenchmarkId::new("lamb_f32", &label), |b| {
                b.iter(|| {
                    dev.lamb_step(
                        &LambParams::default(),
                        AdamArgs {
                            param: p.all_mut(),
                            grad: grad.all(),
                            exp_avg: m.all_mut(),
                            exp_avg_sq: v.all_mut(),
                            param_copy: None,
                        },
                    )
                    .expect("lamb")
                })
            });
        }
    }
    g.finish();
}

fn linalg(c: &mut Criterion) {
    let dev = dev();
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(
        2 * 12 * 8 * 20_000_000 * threads() as u64,
    ));
    g.bench_function("fma_peak/flop", |b| b.iter(|| fma_peak(threads(), 1)));
    for (dtype, s) in [
        (DType::F32, 1024usize),
        (DType::BF16, 1024),
        (DType::F16, 1024),
        (DType::F32, 256),
    ] {
        let (a, bm) = (buf(&dev, dtype, s * s), buf(&dev, dtype, s * s));
        let mut cm = buf(&dev, dtype, s * s);
        let spec = GemmSpec::new(s, s, s);
        g.throughput(Throughput::Bytes((3 * s * s * dtype.size_bytes()) as u64));
        g.bench_function(format!("{dtype}/{s}x{s}x{s}"), |b| {
            b.iter(|| {
                dev.gemm(&spec, a.all(), bm.all(), cm.all_mut())
                    .expect("gemm")
            })
        });
    }
    let (batch, s) = (64usize, 64usize);
    let (a, bm) = (
        buf(&dev, DType::F32, batch * s * s),
        buf(&dev, DType::F32, batch * s * s),
    );
    let mut cm = buf(&dev, DType::F32, batch * s * s);
    let spec = GemmSpec::new(s, s, s).batched(batch);
    g.throughput(Throughput::Bytes((3 * batch * s * s * 4) as u64));
    g.bench_function(format!("f32_batched{batch}/{s}x{s}x{s}"), |b| {
        b.iter(|| {
            dev.gemm(&spec, a.all(), bm.all(), cm.all_mut())
                .expect("gemm")
        })
    });
    g.finish();
}

fn nn(c: &mut Criterion) {
    let dev = dev();
    let mut g = c.benchmark_group("nn");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    let (rows, cols) = (8192usize, 768usize);
    let n = rows * cols;
    let shape = Shape2::new(rows, cols);
    let x = buf(&dev, DType::F32, n);
    let dy = buf(&dev, DType::F32, n);
    let mut y = buf(&dev, DType::F32, n);
    let bias = buf(&dev, DType::F32, cols);
    let mut db = buf(&dev, DType::F32, cols);
    g.throughput(Throughput::Bytes(8 * n as u64));
    g.bench_function("bias_add_f32/8192x768", |b| {
        b.iter(|| dev.bias_add(shape, y.all_mut(), bias.all()).expect("bias"))
    });
    g.throughput(Throughput::Bytes(4 * n as u64));
    g.bench_function("bias_grad_f32/8192x768", |b| {
        b.iter(|| {
            dev.bias_grad(shape, dy.all(), db.all_mut(), false)
                .expect("bias grad")
        })
    });
    g.throughput(Throughput::Bytes(8 * n as u64));
    g.bench_function("gelu_f32/8192x768", |b| {
        b.iter(|| dev.gelu(x.all(), y.all_mut()).expect("gelu"))
    });
    g.bench_function("relu_f32/8192x768", |b| {
        b.iter(|| dev.relu(x.all(), y.all_mut()).expect("relu"))
    });
    g.throughput(Throughput::Bytes(12 * n as u64));
    g.bench_function("gelu_backward_f32/8192x768", |b| {
        b.iter(|| {
            dev.gelu_backward(x.all(), dy.all(), y.all_mut())
                .expect("gelu")
        })
    });
    let (gamma, beta) = (buf(&dev, DType::F32, cols), buf(&dev, DType::F32, cols));
    let (mut mean, mut rstd) = (buf(&dev, DType::F32, rows), buf(&dev, DType::F32, rows));
    g.throughput(Throughput::Bytes(8 * n as u64));
    g.bench_function("layer_norm_f32/8192x768", |b| {
        b.iter(|| {
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
            .expect("ln")
        })
    });
    let (mut dg, mut dbeta) = (buf(&dev, DType::F32, cols), buf(&dev, DType::F32, cols));
    g.throughput(Throughput::Bytes(12 * n as u64));
    g.bench_function("layer_norm_backward_f32/8192x768", |b| {
        b.iter(|| {
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
                    dbeta: dbeta.all_mut(),
                },
            )
            .expect("ln backward")
        })
    });
    let (tokens, vocab) = (2048usize, 8192usize);
    let logits = buf(&dev, DType::F32, tokens * vocab);
    let labels = dev
        .alloc_from(
            &(0..tokens as i32)
                .map(|i| i * 3 % vocab as i32)
                .collect::<Vec<_>>(),
        )
        .expect("labels");
    let mut losses = buf(&dev, DType::F32, tokens);
    let mut dlogits = buf(&dev, DType::F32, tokens * vocab);
    let xs = Shape2::new(tokens, vocab);
    g.throughput(Throughput::Bytes(4 * (tokens * vocab) as u64));
    g.bench_function("softmax_cross_entropy_f32/2048x8192", |b| {
        b.iter(|| {
            dev.softmax_cross_entropy(xs, -100, logits.all(), labels.all(), losses.all_mut())
                .expect("xent")
        })
    });
    g.throughput(Throughput::Bytes(8 * (tokens * vocab) as u64));
    g.bench_function("softmax_cross_entropy_backward_f32/2048x8192", |b| {
        b.iter(|| {
            dev.softmax_cross_entropy_backward(
                xs,
                -100,
                1.0 / tokens as f32,
                logits.all(),
                labels.all(),
                dlogits.all_mut(),
            )
            .expect("xent")
        })
    });
    let (vocab, dim, ntok) = (50_257usize, 768usize, 8192usize);
    let table = buf(&dev, DType::F32, vocab * dim);
    let mut dtable = buf(&dev, DType::F32, vocab * dim);
    let ids = dev
        .alloc_from(
            &(0..ntok as i32)
                .map(|i| (i * 7919) % vocab as i32)
                .collect::<Vec<_>>(),
        )
        .expect("ids");
    let mut emb = buf(&dev, DType::F32, ntok * dim);
    g.throughput(Throughput::Bytes(8 * (ntok * dim) as u64));
    g.bench_function("embedding_f32/8192x768", |b| {
        b.iter(|| {
            dev.embedding(
                Shape2::new(vocab, dim),
                ids.all(),
                table.all(),
                emb.all_mut(),
            )
            .expect("embedding")
        })
    });
    g.throughput(Throughput::Bytes((4 * vocab * dim + 8 * ntok * dim) as u64));
    g.bench_function("embedding_backward_f32/50257x768", |b| {
        b.iter(|| {
            dev.embedding_backward(
                Shape2::new(vocab, dim),
                false,
                ids.all(),
                emb.all(),
                dtable.all_mut(),
            )
            .expect("embedding backward")
        })
    });
    let sh = AttentionShape::new(4, 12, 256, 64);
    let qn = sh.qkv_len();
    let (q, k, v) = (
        buf(&dev, DType::F32, qn),
        buf(&dev, DType::F32, qn),
        buf(&dev, DType::F32, qn),
    );
    let (mut o, mut lse) = (
        buf(&dev, DType::F32, qn),
        buf(&dev, DType::F32, sh.lse_len()),
    );
    g.throughput(Throughput::Bytes((16 * qn) as u64));
    g.bench_function("attention_f32/b4h12s256d64", |b| {
        b.iter(|| {
            dev.attention(
                &sh,
                AttentionArgs {
                    q: q.all(),
                    k: k.all(),
                    v: v.all(),
                    out: o.all_mut(),
                    lse: lse.all_mut(),
                },
            )
            .expect("attention")
        })
    });
    let (mut dq, mut dk, mut dv) = (
        buf(&dev, DType::F32, qn),
        buf(&dev, DType::F32, qn),
        buf(&dev, DType::F32, qn),
    );
    g.throughput(Throughput::Bytes((32 * qn) as u64));
    g.bench_function("attention_backward_f32/b4h12s256d64", |b| {
        b.iter(|| {
            dev.attention_backward(
                &sh,
                AttentionBackwardArgs {
                    q: q.all(),
                    k: k.all(),
                    v: v.all(),
                    out: o.all(),
                    lse: lse.all(),
                    dout: q.all(),
                    dq: dq.all_mut(),
                    dk: dk.all_mut(),
                    dv: dv.all_mut(),
                },
            )
            .expect("attention backward")
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = memory, elementwise, reduction, optimizer, linalg, nn
}
criterion_main!(benches);
