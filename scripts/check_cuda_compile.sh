#!/usr/bin/env bash
# Compile-only check of the CUDA C++ sources (csrc/cuda/*.cu) for sm_90 on a machine without
# a CUDA build of torch: headers come from the CUDA torch wheel, unpacked once into the
# git-ignored .cuda-headers/ (idempotent: later runs reuse it). Exits non-zero on any error.
#
#   scripts/check_cuda_compile.sh            # all of csrc/cuda/*.cu
#   scripts/check_cuda_compile.sh FILE.cu    # selected files
#
# Env: TORCH_WHEEL_VERSION (default 2.14.1), CXX_STD (default c++20, which the 2.14 headers require),
#      NVCC (default nvcc), CUDA_ARCH (default sm_90). The lent GPU machines run torch 2.11:
#      TORCH_WHEEL_VERSION=2.11.0 CXX_STD=c++17 scripts/check_cuda_compile.sh mirrors their build.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_WHEEL_VERSION="${TORCH_WHEEL_VERSION:-2.14.1}"
NVCC="${NVCC:-nvcc}"
CUDA_ARCH="${CUDA_ARCH:-sm_90}"
CXX_STD="${CXX_STD:-c++20}"
CACHE=".cuda-headers"
INC="$CACHE/torch-$TORCH_WHEEL_VERSION/torch/include"

command -v "$NVCC" >/dev/null || { echo "nvcc not found (set NVCC=...)" >&2; exit 2; }

if [ ! -f "$INC/ATen/ATen.h" ]; then
  mkdir -p "$CACHE/wheels" "$CACHE/torch-$TORCH_WHEEL_VERSION"
  wheel=$(ls "$CACHE"/wheels/torch-"$TORCH_WHEEL_VERSION"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    echo "fetching torch==$TORCH_WHEEL_VERSION wheel (headers only are kept)..."
    pip download --quiet --no-deps "torch==$TORCH_WHEEL_VERSION" -d "$CACHE/wheels"
    wheel=$(ls "$CACHE"/wheels/torch-"$TORCH_WHEEL_VERSION"-*.whl | head -1)
  fi
  python - "$wheel" "$CACHE/torch-$TORCH_WHEEL_VERSION" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.startswith("torch/include/") or m == "torch/version.py"]
    z.extractall(dest, members)
print(f"unpacked {len(members)} header files from {wheel}")
PY
fi
grep -q "cuda" "$CACHE/torch-$TORCH_WHEEL_VERSION/torch/version.py" || echo "warning: wheel does not look like a CUDA build" >&2

if [ "$#" -gt 0 ]; then sources=("$@"); else sources=(csrc/cuda/*.cu); fi
[ -e "${sources[0]}" ] || { echo "no CUDA sources found" >&2; exit 1; }

PY_INC=$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
OUTDIR=$(mktemp -d)
trap 'rm -rf "$OUTDIR"' EXIT
status=0
for src in "${sources[@]}"; do
  start=$(date +%s)
  # The flags torch.utils.cpp_extension passes for a CUDAExtension, plus -Werror-ish checks.
  if "$NVCC" -c "$src" -o "$OUTDIR/$(basename "$src").o" \
      -std="$CXX_STD" -arch="$CUDA_ARCH" -O3 \
      -Xcompiler -fPIC -Xcompiler -Wall \
      -I"$INC" -I"$INC/torch/csrc/api/include" -I"$PY_INC" \
      -DFFKERNELS_WITH_CUDA -DTORCH_EXTENSION_NAME=_C -DTORCH_API_INCLUDE_EXTENSION_H \
      -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ \
      -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ \
      --expt-relaxed-constexpr --expt-extended-lambda -Xptxas=-warn-spills \
      -Xcudafe --diag_suppress=20012 ; then
    echo "OK   $src ($(( $(date +%s) - start )) s)"
  else
    echo "FAIL $src" >&2
    status=1
  fi
done
exit $status
