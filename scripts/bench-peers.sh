#!/usr/bin/env bash
# Runs ds's paired CPU benchmark beside the peers users would otherwise pick, in one session,
# alternating PAIRS times so a noisy machine hits both alike:
#   ds:    cargo bench -p benches --bench ratios  (AdamW vs the 4r/3w bandwidth kernel,
#          unscale-and-check, f32->f16 cast, GEMM vs FMA peak)
#   peers: DeepSpeedCPUAdam (AdamW fp32, 64M params), PyTorch fused AdamW, PyTorch's fused
#          check+unscale and fp32->fp16 copy_ (scripts from the project's shared/peers).
# Usage: [PAIRS=n] [ROUNDS=n] scripts/bench-peers.sh VENV [PEERS_DIR] [THREADS]
#   PAIRS: ds/peer alternations (default 2); ROUNDS: interleaved rounds inside ds's bench.
#   VENV: made by PEERS_DIR/setup.sh (PyTorch, DeepSpeed with its CPU Adam built).
set -euo pipefail
venv=${1:?usage: scripts/bench-peers.sh VENV [PEERS_DIR] [THREADS]}
peers=${2:-$(dirname "$0")/../../shared/peers}
threads=${3:-2}
pairs=${PAIRS:-2}
export OMP_NUM_THREADS=$threads DS_CPU_THREADS=$threads DS_ACCELERATOR=cpu DS_BUILD_OPS=0
# DeepSpeed JIT-loads its CPU Adam with ninja from the venv.
export PATH="$venv/bin:$PATH"
work=$(mktemp -d)
cargo bench -q -p benches --bench ratios --no-run
for r in $(seq "$pairs"); do
  echo "=== round $r: ds"
  cargo bench -q -p benches --bench ratios
  echo "=== round $r: peers"
  (cd "$work" && "$venv/bin/python" "$peers/bench_ds_adam.py" "$threads" 64 | grep -E "deepspeed|AdamW fp32")
  (cd "$work" && "$venv/bin/python" "$peers/bench_torch_adam.py" "$threads" 64 | grep -iE "torch|fused")
  (cd "$work" && "$venv/bin/python" "$peers/bench_torch_misc.py" "$threads" | grep -E "torch |check_and_unscale|fp32->fp16 out.copy_")
done
rm -rf "$work"
