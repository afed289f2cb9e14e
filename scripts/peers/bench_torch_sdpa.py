"""PyTorch peer for ds's CPU attention kernels: scaled_dot_product_attention(is_causal=True)
forward + backward at the GPT's shapes (the ones `cargo bench -p benches --bench rows` times),
f32, on the CPU. Prints one line per shape: median ms of forward + backward.

usage: OMP_NUM_THREADS=T python bench_torch_sdpa.py T [--rounds N]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(32, 4, 64, 32), (8, 6, 256, 64)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", type=int)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for b, h, s, d in SHAPES:
        q, k, v = (torch.randn(b, h, s, d, requires_grad=True) for _ in range(3))
        dout = torch.randn(b, h, s, d)
        times = []
        for i in range(args.rounds + 3):
            t0 = time.perf_counter()
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            out.backward(dout)
            t1 = time.perf_counter()
            q.grad = k.grad = v.grad = None
            if i >= 3:
                times.append(t1 - t0)
        print(f"torch {torch.__version__} sdpa: batch {b} heads {h} context {s} width {d}: "
              f"{statistics.median(times) * 1e3:.3f} ms forward + backward")


if __name__ == "__main__":
    main()
