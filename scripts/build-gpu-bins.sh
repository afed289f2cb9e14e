#!/usr/bin/env bash
# Builds everything the GPU check runs, on a machine with no GPU and no CUDA toolkit (cudarc
# loads the libraries at run time), and collects the executables in .device-bin/:
#   ds            the command, with the cuda feature (ds report, ds conformance --backend cuda)
#   cuda-tests-*  ds-backend-cuda's test executables (the conformance suite on CUDA, NCCL) and
#                 ds's engine test built with the cuda feature (the engine on CUDA against the CPU)
#   gpu-bench     the GPU benchmark (kernels against a device-to-device copy, AdamW, GEMM)
# plus the PyTorch peer script. Then run scripts/gpu-check.sh .device-bin on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.device-bin}
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p ds --features cuda
cp target/release/ds "$out/ds"
# Test and bench executables: ask cargo for their paths.
cargo test --release -p ds-backend-cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil, os
out = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = "cuda-tests-" + m["target"]["name"]
        shutil.copy(m["executable"], os.path.join(out, name))
        print("collected", name)
' "$out"
cargo test --release -p ds --features cuda --test engine --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "engine":
        shutil.copy(m["executable"], os.path.join(sys.argv[1], "cuda-tests-engine"))
        print("collected cuda-tests-engine")
' "$out"
cargo build --release -p benches --features cuda --bench gpu --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu":
        shutil.copy(m["executable"], os.path.join(sys.argv[1], "gpu-bench"))
        print("collected gpu-bench")
' "$out"
cp crates/benches/torch_gpu_peer.py scripts/gpu-check.sh "$out/"
ls -la "$out"
