"""PyTorch peer for ds's CPU GEMMs: torch.matmul at 1024^3 in f32 and bf16 (the shapes
`cargo bench -p benches --bench ratios -- --gemm-only` times), on the CPU. Prints one line per
dtype: median GFLOP/s over the rounds.

usage: OMP_NUM_THREADS=T python bench_torch_matmul.py T [--rounds N]
"""
import argparse
import statistics
import time

import torch

N = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--rounds", type=int, default=21)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
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
