"""PyTorch on the same sizes as ds's GPU benchmark, for the same run.

Device-to-device copy of 256M fp32, torch.optim.AdamW(fused=True) over 256M fp32 parameters,
and torch.matmul in bf16 and f16 at 8192^3 (f32 at 4096^3, TF32 off). Medians of 5 runs of
`reps` calls timed with CUDA events.
"""
import statistics
import torch

assert torch.cuda.is_available(), "no CUDA device"
dev = torch.device("cuda")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
torch.backends.cuda.matmul.allow_tf32 = False


def bench(fn, reps):
    fn()
    torch.cuda.synchronize()
    runs = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        torch.cuda.synchronize()
        runs.append(s.elapsed_time(e) / reps / 1e3)
    return statistics.median(runs)


n = 256 * 1024 * 1024
x = torch.full((n,), 0.5, device=dev)
y = torch.empty_like(x)
t = bench(lambda: y.copy_(x), 10)
copy_gbs = 8 * n / t / 1e9
print(f"torch device-to-device copy f32 256M          {t*1e3:9.3f} ms {copy_gbs:9.1f} GB/s")
del x, y

p = torch.nn.Parameter(torch.ones(n, device=dev))
p.grad = torch.full((n,), 0.01, device=dev)
opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, fused=True)
t = bench(opt.step, 10)
print(f"torch AdamW(fused=True) fp32 256M             {t*1e3:9.3f} ms {28*n/t/1e9:9.1f} GB/s {100*28*n/t/1e9/copy_gbs:6.1f}% of copy")
del p, opt

for dtype, s in [(torch.bfloat16, 8192), (torch.float16, 8192), (torch.float32, 4096)]:
    a = torch.randn(s, s, device=dev, dtype=dtype)
    b = torch.randn(s, s, device=dev, dtype=dtype)
    t = bench(lambda: torch.matmul(a, b), 10)
    print(f"torch matmul {str(dtype):<16} {s}^3            {t*1e3:9.3f} ms {2*s**3/t/1e12:9.1f} TFLOP/s")
