"""PyTorch peer for ds's CPU GEMMs: torch.matmul at 1024^3 in f32 and bf16 (the shapes
`cargo bench -p benches --bench ratios -- --gemm-only` times), on the CPU. Prints one line per
dtype: median GFLOP/s over the rounds. With --gpt: the default GPT's f32 products instead, as
its layers call them (`--gpt-gemms` in the ratios bench; same names, shapes and transposes),
all interleaved round after round.

usage: OMP_NUM_THREADS=T python bench_torch_matmul.py T [--rounds N] [--gpt]
"""
import argparse
import statistics
import time

import torch

N = 1024

# (name, m, n, k, trans_a, trans_b, beta): C = op(A) op(B) + beta C, as in ratios.rs's GPT_GEMMS.
GPT_GEMMS = [
    ("qkv fwd", 2048, 384, 128, False, False, 0.0),
    ("qkv dW", 128, 384, 2048, True, False, 1.0),
    ("qkv dX", 2048, 128, 384, False, True, 0.0),
    ("proj fwd", 2048, 128, 128, False, False, 0.0),
    ("proj dW", 128, 128, 2048, True, False, 1.0),
    ("proj dX", 2048, 128, 128, False, True, 0.0),
    ("up fwd", 2048, 512, 128, False, False, 0.0),
    ("up dW", 128, 512, 2048, True, False, 1.0),
    ("up dX", 2048, 128, 512, False, True, 0.0),
    ("down fwd", 2048, 128, 512, False, False, 0.0),
    ("down dW", 512, 128, 2048, True, False, 1.0),
    ("down dX", 2048, 512, 128, False, True, 0.0),
]


def gpt(rounds):
    cases = []
    for name, m, n, k, ta, tb, beta in GPT_GEMMS:
        a = torch.rand(k, m) if ta else torch.rand(m, k)
        b = torch.rand(n, k) if tb else torch.rand(k, n)
        a, b = (a.t() if ta else a), (b.t() if tb else b)
        c = torch.rand(m, n)
        if beta:
            run = lambda a=a, b=b, c=c: c.addmm_(a, b)
        else:
            run = lambda a=a, b=b, c=c: torch.matmul(a, b, out=c)
        cases.append((name, m, n, k, run, []))
    for i in range(rounds + 3):
        for _, _, _, _, run, times in cases:
            t0 = time.perf_counter()
            run()
            t1 = time.perf_counter()
            if i >= 3:
                times.append(t1 - t0)
    for name, m, n, k, _, times in cases:
        t = statistics.median(times)
        print(f"torch {torch.__version__} gemm {name:<9} {m:>5} x {n:>4} x {k:>5}  "
              f"{2.0 * m * n * k / t / 1e9:7.1f} GFLOP/s  {t * 1e3:7.3f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--gpt", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.gpt:
        gpt(args.rounds)
        return
    for name, dtype in (("f32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.rand(N, N).sub_(0.5).to(dtype)
        b = torch.rand(N, N).sub_(0.5).to(dtype)
        out = torch.empty(N, N, dtype=dtype)
        times = []
        for i in range(args.rounds + 3):
            t0 = time.perf_counter()
            torch.matmul(a, b, out=out)
            t1 = time.perf_counter()
            if i >= 3:
                times.append(t1 - t0)
        flops = 2.0 * N**3 / statistics.median(times)
        print(f"torch {torch.__version__} matmul {name} {N}^3 {flops / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
