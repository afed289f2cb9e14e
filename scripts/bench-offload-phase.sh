#!/usr/bin/env bash
# The offloaded optimizer phase, ds beside DeepSpeed, in one run alternating PAIRS times: ds's
# phase (crates/benches/benches/offload_phase.rs: one norm pass over the 16-bit gradients, one
# fused AdamW pass writing the 16-bit parameters, 30 B/param, beside the in-place 4r/3w
# bandwidth kernel) and DeepSpeed 0.19's ZeRO-Offload phase reproduced op for op
# (shared/peers/bench_ds_offload_phase.py: 82 B/param; its parts 5-8 are the host work of a GPU
# run), fp16, 16M and 64M parameters, on THREADS threads. Prints both outputs and the ratios.
# Usage: [PAIRS=n] scripts/bench-offload-phase.sh VENV [PEERS_DIR] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:?usage: scripts/bench-offload-phase.sh VENV [PEERS_DIR] [THREADS]}
peers=$(cd "${2:-../shared/peers}" && pwd)
threads=${3:-2}
pairs=${PAIRS:-2}
export OMP_NUM_THREADS=$threads DS_CPU_THREADS=$threads DS_ACCELERATOR=cpu DS_BUILD_OPS=0
export PATH="$venv/bin:$PATH"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
lscpu | grep -E "Model name|^CPU\(s\)" | sed 's/  */ /g'
cargo bench -q -p benches --bench offload_phase --no-run
for r in $(seq "$pairs"); do
  echo "=== round $r: ds"
  cargo bench -q -p benches --bench offload_phase | tee -a "$work/ds.txt"
  echo "=== round $r: DeepSpeed"
  (cd "$work" && python "$peers/bench_ds_offload_phase.py" "$threads" 16 64 --dtype fp16 2>/dev/null) \
    | grep -E "DS-offload|deepspeed" | tee -a "$work/peer.txt"
done
echo
python3 - "$work/ds.txt" "$work/peer.txt" <<'PY'
import re, statistics, sys
ds, peer = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"ds-offload-phase (\d+)M ms=([0-9.]+)", line)
    if m:
        ds.setdefault(m[1], []).append(float(m[2]))
for line in open(sys.argv[2]):
    m = re.search(r"fp16\s+(\d+)M .*?(TOTAL 1-9|5-8 \(host)\S*.*?med=\s*([0-9.]+) ms", line)
    if m:
        peer.setdefault((m[1], m[2][:5]), []).append(float(m[3]))
med = statistics.median
for size in sorted(ds, key=int):
    d = med(ds[size])
    host, whole = med(peer[(size, "5-8 (")]), med(peer[(size, "TOTAL")])
    print(f"{size}M: ds phase {d:.2f} ms; DeepSpeed host share (parts 5-8) {host:.2f} ms -> "
          f"{host / d:.2f}x; DeepSpeed whole phase (1-9) {whole:.2f} ms -> {whole / d:.2f}x")
PY
