#!/usr/bin/env bash
# ZeRO-3's cost beside real DeepSpeed, in one run: the GPT of `ds train` (4 layers, width 128,
# context 64, global batch 32; 834,304 parameters) trained on 2 CPU processes of 1 thread each
# at ZeRO-2 and ZeRO-3, by DeepSpeed 0.19 (shared/peers/bench_ds_zero_gpt.py, gloo) and by
# `mpirun -np 2 ds train --config` with the config DeepSpeed printed, alternating ds and
# DeepSpeed PAIRS times. Twice: with DeepSpeed's default stage3_param_persistence_threshold
# (1e5, under which every parameter of this GPT stays whole on every rank in both), and with
# it at 0 (every parameter partitioned and gathered layer by layer).
# Prints ms per optimizer step (median of steps 4-13 of each run; the median over rounds), the
# stage-3/stage-2 ratios, and the parameter elements ds moved per step.
# Usage: [PAIRS=n] scripts/bench-zero3.sh VENV [PEERS_DIR]
#   VENV: made by PEERS_DIR/setup.sh (PyTorch and DeepSpeed).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/bench-zero3.sh VENV [PEERS_DIR]}
peers=$(cd "${2:-../shared/peers}" && pwd)
pairs=${PAIRS:-2}
export OMP_NUM_THREADS=1 DS_CPU_THREADS=1 DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_PEERS_DIR=$peers
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# DeepSpeed JIT-builds its shared-memory op with ninja from the venv.
export PATH="$venv/bin:$PATH"
cargo build -q --release -p ds --features mpi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'

run_deepspeed() { # stage persistence -> ms; writes the config DeepSpeed used
  local out
  out=$(cd "$work" && DS_PEER_PERSISTENCE=$2 python "$OLDPWD/scripts/peers/ds_zero_gpt_persistence.py" 2 "$1" \
    --steps 10 --print-config 2>/dev/null | grep -E '^\{|^DeepSpeed [0-9]')
  echo "$out" | head -n 1 > "$work/config-$1-$2.json"
  echo "$out" | tail -n 1 >&2
  echo "$out" | tail -n 1 | sed -E 's/.*: ([0-9.]+) ms\/step.*/\1/'
}

run_ds() { # stage persistence -> ms
  local dir=$work/ds-$1-$2
  rm -rf "$dir"
  mpirun -np 2 --oversubscribe --bind-to none target/release/ds train --config "$work/config-$1-$2.json" \
    --steps 13 --sample-tokens 0 --save-every 1000 --save-dir "$dir" > "$dir.log" 2>&1 \
    || { cat "$dir.log" >&2; exit 1; }
  grep -h "collectives per optimizer step" "$dir.log" >&2
  python3 - "$dir/metrics.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ms = [32 * 64 / r["tokens_per_s"] * 1e3 for r in rows[3:]]
print(f"{statistics.median(ms):.2f}")
PY
}

declare -A times
for round in $(seq "$pairs"); do
  for persistence in 100000 0; do
    for stage in 2 3; do
      [ "$stage" = 2 ] && [ "$persistence" = 0 ] && continue   # the threshold is stage 3's
      key=$stage-$persistence
      echo "=== round $round: ZeRO-$stage, persistence threshold $persistence" >&2
      times[deepspeed-$key]+="$(run_deepspeed "$stage" "$persistence") "
      times[ds-$key]+="$(run_ds "$stage" "$persistence") "
      echo "    DeepSpeed ${times[deepspeed-$key]}ms; ds ${times[ds-$key]}ms" >&2
    done
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
printf '%-40s %12s %12s\n' "ms per optimizer step (median)" DeepSpeed ds
for key in 2-100000 3-100000 3-0; do
  printf '%-40s %12s %12s\n' "ZeRO-${key%%-*} (persistence ${key##*-})" \
    "$(echo "${times[deepspeed-$key]}" | median)" "$(echo "${times[ds-$key]}" | median)"
done
for peer in deepspeed ds; do
  z2=$(echo "${times[$peer-2-100000]}" | median)
  for key in 3-100000 3-0; do
    z3=$(echo "${times[$peer-$key]}" | median)
    echo "$peer: ZeRO-3 (persistence ${key##*-}) / ZeRO-2 = $(python3 -c "print(f'{$z3/$z2:.3f}')")"
  done
done
