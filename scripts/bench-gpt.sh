#!/usr/bin/env bash
# ds's GPT training step on the CPU against PyTorch's eager twin, in alternating pairs in one
# session (so a noisy machine hits both alike), plus the attention kernels against PyTorch's
# scaled_dot_product_attention:
#   fp32, the default model (ds train's: 4 layers, 4 heads, width 128, context 64, batch 32);
#   fp32, a larger model (6 layers, 6 heads, width 384, context 256, batch 8);
#   bf16 on the default model (ds: "bf16": {"enabled": true}; PyTorch: torch.autocast(cpu,
#     bfloat16)), only on a CPU with AVX512-BF16 or AMX;
#   causal attention forward + backward at both shapes (cargo bench --bench rows; the peer
#     scripts/peers/bench_torch_sdpa.py);
#   f32 and bf16 GEMM 1024^3 (cargo bench --bench ratios -- --gemm-only, which also prints the
#     share of the FMA peak measured in its own rounds; the peer scripts/peers/bench_torch_matmul.py).
# Prints each run, then the median ratio of ds's tokens/s (GEMMs: GFLOP/s) over PyTorch's per
# configuration.
# Usage: [PAIRS=n] scripts/bench-gpt.sh VENV [PEERS_DIR] [THREADS]
#   VENV: a Python environment with PyTorch (shared/peers/setup.sh makes one).
set -euo pipefail
venv=${1:?usage: scripts/bench-gpt.sh VENV [PEERS_DIR] [THREADS]}
peers=${2:-$(dirname "$0")/../../shared/peers}
threads=${3:-2}
pairs=${PAIRS:-3}
here=$(cd "$(dirname "$0")" && pwd)
export OMP_NUM_THREADS=$threads DS_CPU_THREADS=$threads
py="$venv/bin/python"
large=(--layers 6 --dim 384 --heads 6 --context 256 --batch 8)
cargo bench -q -p ds-nn --bench gpt_step --no-run
cargo bench -q -p benches --bench rows --no-run
cargo bench -q -p benches --bench ratios --no-run
bf16=no
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then bf16=yes; fi
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads, bf16 pairs: $bf16"
log=$(mktemp)
ds_step() { cargo bench -q -p ds-nn --bench gpt_step -- "$@" | grep -E "per step" | sed 's/^/ds    /'; }
for r in $(seq "$pairs"); do
  echo "=== round $r"
  { echo "fp32 default"; ds_step; "$py" "$peers/bench_torch_gpt.py" "$threads" --steps 10 | sed 's/^/torch /'; } | tee -a "$log"
  { echo "fp32 large"; ds_step "${large[@]}"; "$py" "$peers/bench_torch_gpt.py" "$threads" "${large[@]}" --steps 10 | sed 's/^/torch /'; } | tee -a "$log"
  if [ "$bf16" = yes ]; then
    { echo "bf16 default"; ds_step --bf16; "$py" "$here/peers/bench_torch_gpt_autocast.py" "$peers/bench_torch_gpt.py" "$threads" --steps 10 | sed 's/^/torch /'; } | tee -a "$log"
  fi
  cargo bench -q -p benches --bench rows -- attention | grep -E "heads .* context" | sed 's/^/ds    /'
  "$py" "$here/peers/bench_torch_sdpa.py" "$threads" | sed 's/^/torch /'
  gemm=$(cargo bench -q -p benches --bench ratios -- --gemm-only)
  torch_gemm=$("$py" "$here/peers/bench_torch_matmul.py" "$threads")
  echo "$gemm" | grep -E "ratio:" | sed 's/^ */ds    f32 GEMM /'
  for dt in f32 bf16; do
    echo "gemm $dt 1024^3"
    echo "$gemm" | grep -E "gemm $dt 1024" | sed 's/^ */ds    /'
    echo "$torch_gemm" | grep -E "matmul $dt " | sed 's/^/torch /'
  done | tee -a "$log"
done
echo "=== ds tokens/s (GEMMs: GFLOP/s) over PyTorch eager's (median of $pairs alternating pairs)"
"$py" - "$log" <<'PY'
import re, statistics, sys
ratios, cfg, ds = {}, None, None
for line in open(sys.argv[1]):
    if re.match(r"^(fp32|bf16|gemm) ", line):
        cfg = line.strip()
    elif line.startswith("ds "):
        ds = float(re.search(r"([0-9.]+) (tokens|GFLOP)/s", line).group(1))
    elif line.startswith("torch "):
        torch = float(re.search(r"([0-9.]+) (tokens|GFLOP)/s", line).group(1))
        ratios.setdefault(cfg, []).append(ds / torch)
for cfg, r in ratios.items():
    print(f"  {cfg:<13} {statistics.median(r):.2f}x  (pairs: {' '.join(f'{x:.2f}' for x in r)})")
PY
rm -f "$log"
