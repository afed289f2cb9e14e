#!/usr/bin/env bash
# Runs ds's GPU checks on the first GPU from prebuilt executables (made by
# scripts/build-gpu-bins.sh on any machine), and prints a summary. The vendor is found from the
# machine (/dev/kfd: AMD, ROCm; otherwise NVIDIA, CUDA); VENDOR=cuda|rocm overrides.
#   1. ds report (the device, its memory and capabilities)
#   2. the conformance matrix on the vendor's backend (every kernel x dtype against the f64 oracle)
#   3. the backend's GPU tests (NCCL's or RCCL's single-rank path, the engine against the CPU;
#      FULL=1 adds the stamped suite, the same cases as the matrix as #[test]s)
#   4. CUDA only: the GPU benchmark, then PyTorch's peer numbers in the same run
# Usage: [QUICK=1] scripts/gpu-check.sh [BIN_DIR] [OUT_DIR]
#   QUICK=1 runs only ds report and the GPU tests (NCCL, the engine on CUDA against the CPU).
set -uo pipefail
bin=$(cd "${1:-.device-bin}" && pwd)
out=${2:-${OUT:-/tmp/ds-gpu-check}}
mkdir -p "$out"
log() { printf '\n== %s\n' "$*"; }

# cudarc looks libraries up by name: put NVRTC, cuBLAS and NCCL on LD_LIBRARY_PATH, wherever
# the toolkit or the Python wheels keep them, and give NCCL the libnccl.so name it looks for.
libdir=$(mktemp -d)
dirs=""
for pattern in 'libnvrtc.so.*' 'libcublas.so.*' 'libcublasLt.so.*' 'libnccl.so.*' 'libnvrtc-builtins.so.*'; do
  f=$(find /usr/local /usr/lib /opt -name "$pattern" -not -name '*.alt.*' 2>/dev/null | sort | tail -n 1)
  [ -n "$f" ] && dirs="$dirs:$(dirname "$f")"
done
nccl=$(find /usr/local /usr/lib /opt -name 'libnccl.so.2*' 2>/dev/null | head -n 1)
[ -n "$nccl" ] && ln -sf "$nccl" "$libdir/libnccl.so"
export LD_LIBRARY_PATH="$libdir${dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null

vendor=${VENDOR:-$([ -e /dev/kfd ] && echo rocm || echo cuda)}
echo "vendor: $vendor"
# ROCm: ds finds HIP, hiprtc, rocBLAS and RCCL under $ROCM_PATH (default /opt/rocm).
[ "$vendor" = rocm ] && export ROCM_PATH=${ROCM_PATH:-/opt/rocm}

status=0
log "ds report"
"$bin/ds" report | tee "$out/report.txt" || status=1

if [ "${QUICK:-0}" != 1 ]; then
log "conformance matrix on $vendor"
"$bin/ds" conformance --backend "$vendor" ${CASES:+--cases "$CASES"} > "$out/conformance.txt" 2>&1
rc=$?
tail -n 60 "$out/conformance.txt"
[ $rc -eq 0 ] || status=1
fi

log "$vendor backend GPU tests"
for t in "$bin"/"$vendor"-tests-*; do
  [ -x "$t" ] || continue
  # The stamped conformance tests run the same cases as the matrix above; FULL=1 runs them too.
  case "$t" in *conformance) [ "${FULL:-0}" = 1 ] || continue ;; esac
  "$t" --ignored --nocapture --test-threads 4 > "$out/$(basename "$t").txt" 2>&1
  rc=$?
  grep -E "^test result|FAILED|panicked" "$out/$(basename "$t").txt" | head -n 20
  [ $rc -eq 0 ] || status=1
done

if [ "${QUICK:-0}" != 1 ] && [ "$vendor" = cuda ]; then
log "GPU benchmark"
if [ -x "$bin/gpu-bench" ]; then
  "$bin/gpu-bench" | tee "$out/bench.txt" || status=1
fi
log "PyTorch peer, same run"
python3 "$bin/torch_gpu_peer.py" 2>&1 | tee "$out/torch.txt" || echo "PyTorch peer not run (no PyTorch here)"
fi

log "summary"
echo "conformance: $(grep -E 'failure\(s\)' "$out/conformance.txt" 2>/dev/null || echo 'not run')"
grep -h "^test result" "$out"/"$vendor"-tests-*.txt 2>/dev/null
exit $status
