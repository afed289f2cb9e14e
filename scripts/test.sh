#!/usr/bin/env bash
# The project's one test command: installs what the suite needs when it is missing, then runs
# formatting, lints, every test (the conformance suite on the CPU backend included) and the
# coverage matrix. Exits non-zero on the first failure. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

need_component() {
  # $1: cargo subcommand to probe, $2: rustup component providing it
  if ! cargo "$1" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1 && rustup component add "$2"; then
      return 0
    fi
    echo "error: 'cargo $1' is missing and could not be installed; install it with: rustup component add $2" >&2
    exit 1
  fi
}

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is not installed; install Rust from https://rustup.rs (ds needs Rust 1.95 or newer)" >&2
  exit 1
fi
need_component fmt rustfmt
need_component clippy clippy

# apt_install WHY PACKAGE...: installs with apt (as root, or through sudo without a password)
# and says why; fails when apt or the rights to use it are missing, or the install fails.
apt_install() {
  local why=$1 sudo=""
  shift
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo="sudo -n"
  command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" -eq 0 ] || [ -n "$sudo" ]; } || return 1
  echo "installing $* ($why)"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

# ds-comm-mpi builds against MPI (rsmpi: headers, mpicc, and libclang for its bindings) and its
# tests launch `mpirun`. Install Open MPI and libclang with apt when they are missing.
need_mpi() {
  local missing=()
  command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
  command -v mpicc >/dev/null 2>&1 || missing+=(libopenmpi-dev)
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 \
    || missing+=(libclang-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "MPI for ds-comm-mpi" openmpi-bin libopenmpi-dev libclang-dev && return 0
  echo "error: ds-comm-mpi needs Open MPI and libclang, and they are missing (${missing[*]});" \
    "install them (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev libclang-dev;" \
    "Fedora: dnf install openmpi-devel clang-devel) and run this again" >&2
  exit 1
}
need_mpi

# ds-backend-wgpu's tests run every WGSL kernel for real on Mesa's software Vulkan driver
# (lavapipe). Install it and the Vulkan loader with apt when no Vulkan driver is present.
need_vulkan() {
  local icds
  icds=$(ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json 2>/dev/null || true)
  if [ -n "$icds" ] && ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    return 0
  fi
  apt_install "lavapipe, for the WGPU backend's tests" mesa-vulkan-drivers libvulkan1 && return 0
  echo "error: the WGPU backend's tests need a Vulkan driver and none is installed;" \
    "install Mesa's (Debian/Ubuntu: apt-get install mesa-vulkan-drivers libvulkan1;" \
    "Fedora: dnf install mesa-vulkan-drivers vulkan-loader) and run this again" >&2
  exit 1
}
need_vulkan

# ds-backend-rocm's tests load Debian's HIP runtime (HIP 5.2: libamdhip64 with hiprtc inside, and
# comgr) with no AMD GPU: the probe must report "no ROCm device", and hiprtc compiles every kernel
# for gfx90a and gfx1030. Install it with apt when missing; without it those tests are NOT RUN.
hip_ok=0
need_hip() {
  if ldconfig -p 2>/dev/null | grep -q 'libamdhip64\.so' && ldconfig -p | grep -q 'libamd_comgr\.so'; then
    hip_ok=1; return 0
  fi
  apt_install "Debian's HIP runtime and comgr, for the ROCm backend's tests" libamdhip64-5 \
    && hip_ok=1 && return 0
  echo "note: Debian's HIP runtime (libamdhip64-5) could not be installed; its tests will be NOT RUN"
}
need_hip
# Open MPI refuses root unless told, and the tests run more ranks than this machine has cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

say "formatting (cargo fmt --check)"
cargo fmt --all -- --check

say "lints (cargo clippy -D warnings), with the CUDA, ROCm and WGPU backends and GPU benches compiled in"
cargo clippy --workspace --all-targets --features ds/cuda,ds/mpi,ds/rocm,ds/wgpu,benches/cuda,benches/wgpu \
  -- -D warnings

say "tests (cargo test --workspace; WGPU's conformance on lavapipe)"
cargo test --workspace

# Every later step selects the whole workspace with ds's GPU and MPI features on top. Cargo
# resolves a shared dependency's features from the packages selected, so `-p ds` or
# `-p ds-backend-rocm` each resolved `half`, `bytemuck` and `syn` differently from the
# workspace and rebuilt ds-core and everything above it: the four rebuilds cargo timed took
# 11 of the run's 54 minutes on two Zen 3 cores, and the command-line runs rebuilt too. With
# the workspace always selected, only ds rebuilds (measured: 71 s, once).
workspace_with_features=(--workspace --features ds/wgpu,ds/mpi,ds/rocm)
# The ds command line as those tests built it (integration tests build their package's binary).
ds_bin="${CARGO_TARGET_DIR:-target}/debug/ds"

say "with the WGPU and ROCm backends and MPI compiled in (--features wgpu,mpi,rocm): ds report and conformance without a HIP runtime, the engine on WGPU at ZeRO 0-3 on 1-4 threaded ranks, ds train --backend wgpu, ds train under mpirun (ZeRO-2 and ZeRO-3), MPI collectives at 1-4 ranks (host and wgpu buffers), their guards, and the engine under mpirun"
# The mpirun tests launch the zero_train example (ZeRO 0-3 on 1, 2 and 4 MPI ranks): build it first.
cargo build "${workspace_with_features[@]}" --example zero_train
# `--test engine` also selects ds-zero's engine tests (a fraction of a second, run twice).
cargo test "${workspace_with_features[@]}" --test engine --test train_wgpu --test train_mpi --test mpi_wgpu \
  --test mpirun --test rocm

say "ROCm without an AMD GPU: Debian's HIP runtime says no ROCm device; hiprtc compiles every kernel for gfx90a and gfx1030"
if [ "$hip_ok" = 1 ]; then
  cargo test "${workspace_with_features[@]}" --test runtime -- --ignored --nocapture
  cargo test "${workspace_with_features[@]}" --test rocm -- --ignored
else
  echo "NOT RUN: the HIP runtime checks and the hiprtc compile of every kernel (libamdhip64-5 not installed)"
fi

say "the consolidated fp32 checkpoint loads in Python's safetensors (numpy)"
# Installed from PyPI into target/ when missing; without network it is reported as not run.
pytools=target/pytools
if ! PYTHONPATH="$PWD/$pytools" python3 -c "import safetensors, numpy" >/dev/null 2>&1; then
  python3 -m pip install -q --target "$pytools" safetensors numpy >/dev/null 2>&1 || true
fi
if PYTHONPATH="$PWD/$pytools" python3 -c "import safetensors, numpy" >/dev/null 2>&1; then
  PYTHONPATH="$PWD/$pytools" cargo test "${workspace_with_features[@]}" --test zero_to_fp32 -- --ignored --nocapture
else
  echo "NOT RUN: the Python safetensors check (python3 with safetensors and numpy unavailable)"
fi

say "CUDA kernels compile with NVRTC (no GPU needed)"
# NVRTC runs without a GPU: install it from PyPI into target/ when missing, then compile every
# CUDA kernel for Ampere and Hopper. Without network it is reported as not run, never as passed.
nvrtc_dir=target/nvrtc
if ! ls "$nvrtc_dir"/nvidia/cu13/lib/libnvrtc.so.* >/dev/null 2>&1; then
  python3 -m pip install -q --no-deps --target "$nvrtc_dir" nvidia-cuda-nvrtc >/dev/null 2>&1 || true
fi
if ls "$nvrtc_dir"/nvidia/cu13/lib/libnvrtc.so.* >/dev/null 2>&1; then
  LD_LIBRARY_PATH="$PWD/$nvrtc_dir/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test "${workspace_with_features[@]}" --test without_gpu -- --ignored
else
  echo "NOT RUN: the NVRTC compile check (could not install nvidia-cuda-nvrtc from PyPI)"
fi

if [ ! -x "$ds_bin" ]; then
  echo "error: $ds_bin was not built by the tests above (is CARGO_TARGET_DIR relative to another directory?)" >&2
  exit 1
fi

# The whole suite already ran at the widest instruction set and on both of lavapipe's f16 paths
# (conformance/tests/cpu.rs and ds-backend-wgpu/tests/conformance.rs, in cargo test above). The
# command line's own runs there are a smoke check of `ds conformance` with 4 random inputs per
# cell; the narrower instruction sets, which only these runs reach, get the full 24.
say "coverage matrix (ds conformance --backend cpu --cases 4: the command line; the full suite ran in cargo test)"
"$ds_bin" conformance --backend cpu --cases 4
# The CPU kernels run the widest instruction set the processor has; run the suite again on
# each narrower one (DS_CPU_ISA forces it), so every path is tested on this machine. `ds report`
# names the active set and every set this processor offers, narrowest first:
#   kernels: amx (of baseline, avx2, avx512, avx512bf16, amx; DS_CPU_ISA caps it)
kernels=$("$ds_bin" report | sed -n 's/^ *kernels: //p')
best=${kernels%% *}
offered=$(echo "$kernels" | sed -n 's/.*(of \([^;]*\);.*/\1/p' | tr -d ',')
for isa in $offered; do
  [ "$isa" = "$best" ] && break
  say "coverage matrix with the CPU kernels forced to $isa (DS_CPU_ISA=$isa)"
  DS_CPU_ISA=$isa "$ds_bin" conformance --backend cpu
  DS_CPU_ISA=$isa cargo test -q "${workspace_with_features[@]}" --test cpu_backend large_gemms
done
echo "CPU kernels tested on: every instruction set up to $best (wider ones: not on this processor)"

say "coverage matrix on lavapipe (ds conformance --backend wgpu --cases 4: the command line; both f16 paths ran in full in cargo test)"
"$ds_bin" conformance --backend wgpu --cases 4

say "all checks passed"
