#!/usr/bin/env bash
# Builds everything the GPU check runs, on a machine with no GPU and no CUDA toolkit (cudarc
# loads the libraries at run time), and collects the executables in .device-bin/:
#   ds            the command, with the cuda and rocm features (ds report, ds conformance
#                 --backend cuda|rocm)
#   cuda-tests-*  ds-backend-cuda's test executables (the conformance suite on CUDA, NCCL) and
#                 ds's engine test built with the cuda feature (the engine on CUDA against the CPU)
#   rocm-tests-*  the same for ROCm (ds-backend-rocm's conformance suite, RCCL, runtime probe;
#                 the engine on ROCm against the CPU)
#   gpu-bench     the GPU benchmark (kernels against a device-to-device copy, AdamW, GEMM)
# plus the PyTorch peer script. Then run scripts/gpu-check.sh .device-bin on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.device-bin}
rm -rf "$out"
mkdir -p "$out"
cargo build --release -p ds --features cuda,rocm
cp target/release/ds "$out/ds"
# Test and bench executables: ask cargo for their paths.
collect() { # $1: prefix, $2: target name to keep ("" keeps every test target); cargo's JSON on stdin
  python3 -c '
import json, sys, shutil, os
out, prefix, only = sys.argv[1], sys.argv[2], sys.argv[3]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        if only and m["target"]["name"] != only:
            continue
        name = prefix + m["target"]["name"]
        shutil.copy(m["executable"], os.path.join(out, name))
        print("collected", name)
' "$out" "$1" "$2"
}
for vendor in cuda rocm; do
  cargo test --release -p "ds-backend-$vendor" --no-run --message-format=json 2>/dev/null \
    | collect "$vendor-tests-" ""
  cargo test --release -p ds --features "$vendor" --test engine --no-run --message-format=json 2>/dev/null \
    | collect "$vendor-tests-" engine
done
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
