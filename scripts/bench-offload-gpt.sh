#!/usr/bin/env bash
# ZeRO-Offload's cost on the whole GPT step beside real DeepSpeed, in one run: the GPT of
# `ds train` (4 layers, width 128, context 64, global batch 32; 834,304 parameters) on 2 CPU
# processes of 1 thread each at ZeRO-2, with and without `offload_optimizer: {"device": "cpu"}`,
# by DeepSpeed 0.19 (shared/peers/bench_ds_zero_gpt.py 2 2 [--offload-opt], gloo; its offload
# runs DeepSpeedCPUAdam) and by `mpirun -np 2 ds train --config` with the config DeepSpeed
# printed, alternating ds and DeepSpeed PAIRS times.
# Prints ms per optimizer step (median of steps 4-13 of each run; the median over rounds) for
# the four runs and each engine's offloaded/non-offloaded ratio.
# Usage: [PAIRS=n] scripts/bench-offload-gpt.sh VENV [PEERS_DIR]
#   VENV: made by PEERS_DIR/setup.sh (PyTorch and DeepSpeed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/bench-offload-gpt.sh VENV [PEERS_DIR]}
peers=$(cd "${2:-../shared/peers}" && pwd)
pairs=${PAIRS:-2}
export OMP_NUM_THREADS=1 DS_CPU_THREADS=1 DS_ACCELERATOR=cpu DS_BUILD_OPS=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# DeepSpeed JIT-builds its CPU Adam and shared-memory ops with ninja from the venv.
export PATH="$venv/bin:$PATH"
cargo build -q --release -p ds --features mpi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'

run_deepspeed() { # offload(0|1) -> ms; writes the config DeepSpeed used
  local flag="" out
  [ "$1" = 1 ] && flag=--offload-opt
  out=$(cd "$work" && python "$peers/bench_ds_zero_gpt.py" 2 2 $flag --steps 10 --print-config 2>/dev/null \
    | grep -E '^\{|^DeepSpeed [0-9]')
  echo "$out" | head -n 1 > "$work/config-$1.json"
  echo "$out" | tail -n 1 >&2
  echo "$out" | tail -n 1 | sed -E 's/.*: ([0-9.]+) ms\/step.*/\1/'
}

run_ds() { # offload(0|1) -> ms
  local dir=$work/ds-$1
  rm -rf "$dir"
  mpirun -np 2 --oversubscribe --bind-to none target/release/ds train --config "$work/config-$1.json" \
    --steps 13 --sample-tokens 0 --save-every 1000 --save-dir "$dir" > "$dir.log" 2>&1 \
    || { cat "$dir.log" >&2; exit 1; }
  grep -h "optimizer state" "$dir.log" >&2 || true
  python3 - "$dir/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ms = [32 * 64 / r["tokens_per_s"] * 1e3 for r in rows[3:]]
print(f"{statistics.median(ms):.2f}")
PY
}

declare -A times
for round in $(seq "$pairs"); do
  for offload in 0 1; do
    echo "=== round $round: ZeRO-2, offload_optimizer $offload" >&2
    times[deepspeed-$offload]+="$(run_deepspeed "$offload") "
    times[ds-$offload]+="$(run_ds "$offload") "
    echo "    DeepSpeed ${times[deepspeed-$offload]}ms; ds ${times[ds-$offload]}ms" >&2
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
printf '%-44s %12s %12s\n' "ms per optimizer step (median)" DeepSpeed ds
for offload in 0 1; do
  label="ZeRO-2"
  [ "$offload" = 1 ] && label="ZeRO-2 + offload_optimizer cpu"
  printf '%-44s %12s %12s\n' "$label" \
    "$(echo "${times[deepspeed-$offload]}" | median)" "$(echo "${times[ds-$offload]}" | median)"
done
for peer in deepspeed ds; do
  on=$(echo "${times[$peer-0]}" | median)
  off=$(echo "${times[$peer-1]}" | median)
  echo "$peer: offloaded / on the device = $(python3 -c "print(f'{$off/$on:.3f}')")"
done
