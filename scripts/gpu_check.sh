#!/usr/bin/env bash
# One prepared check for a lent GPU machine (H100/H200, no network): build the extension with
# its CUDA kernels, report the backends, run the test-suite on CUDA, time the kernels against
# their baselines, and write the logs and tables under $OUT (./gpu_out when unset).
# Kernels timed (benchmarks/bench_gpu.py): aggregate (Triton, CUDA C++; uniform and skewed),
# goodness_loss_grad (Triton; allocating and inplace=True, ff and symba), linear_goodness_step
# (Triton fused), sf_loss_grad (Triton), linear_jvp (Triton, against three cuBLAS matmuls and
# torch.func.jvp), dropout (Triton, against torch's dropout and a copy); then
# `ffkernels bench --suite ops --device cuda`.
#
# Run from anywhere (it cd's to the repo root); with the device tool:
#     run(command="bash scripts/gpu_check.sh", timeout_s=540)
# Env: GPU_CHECK_QUICK=1 for 1/4 benchmark sizes; GPU_CHECK_SKIP_TESTS=1 to time only;
#      GPU_CHECK_TEST_ARGS to choose the pytest targets (default: kernel tests, then the rest);
#      GPU_CHECK_BENCH_ARGS extra bench_gpu.py flags (--smoke for a dry run without a GPU).
# Whole script stays under ~8 minutes: each step has its own time limit, and a failing step
# is recorded in the summary and does not stop the steps after it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.md"
: > "$SUMMARY"
T0=$(date +%s)

step() {  # step NAME LIMIT_S LOGFILE CMD...
  local name=$1 limit=$2 log=$3
  shift 3
  local t0=$(date +%s)
  echo "=== [$name] (limit ${limit}s)"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - t0 ))
  echo "=== [$name] rc=$rc in ${dt}s"
  echo "| $name | $rc | ${dt}s |" >> "$SUMMARY"
  return "$rc"
}

{
  echo "# gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || echo "nvidia-smi unavailable"
  "$PY" -c 'import torch, sys; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name())'
  "$PY" -c 'import triton; print("triton", triton.__version__)' 2>&1 || true
  nvcc --version 2>/dev/null | tail -1 || echo "nvcc not found"
  echo
  echo "| step | rc | time |"
  echo "|---|---|---|"
} >> "$SUMMARY"
cat "$SUMMARY"

# 1. Build (only Hopper code: one arch keeps nvcc to a minute or two).
export FFKERNELS_WITH_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-16}"
if ! step build 330 build.log "$PY" -m pip install --no-build-isolation --no-deps -v -e . ; then
  echo "pip install failed; trying an in-place build"
  step build_inplace 300 build.log "$PY" setup.py build_ext --inplace
fi

# 2. Which backends are usable (the cuda one needs the freshly built extension).
step backends 60 build.log "$PY" -c 'import ffkernels, json; b = ffkernels.available_backends(); print(json.dumps(b, indent=1)); import sys; sys.exit(0 if b["triton"]["available"] and b["cuda"]["available"] else 3)'

# 3. Tests on CUDA, kernel tests first (time-boxed; -x stops at the first failure so the log
#    ends on it), then the rest of the suite with what the time box leaves.
if [ "${GPU_CHECK_SKIP_TESTS:-0}" != "1" ]; then
  if [ -n "${GPU_CHECK_TEST_ARGS:-}" ]; then
    # shellcheck disable=SC2086
    step tests 200 tests.log "$PY" -m pytest -x -q -p no:cacheprovider $GPU_CHECK_TEST_ARGS
  else
    # tests/ops: every op x backend vs the reference, in place goodness (allocation checked with the
    # CUDA allocator), SF loss, autograd, NaN/Inf, the Triton tile edge cases.
    step tests_kernels 170 tests.log "$PY" -m pytest -x -q -p no:cacheprovider tests/ops tests/test_package.py
    remaining=$(( 300 - ($(date +%s) - T0) ))
    if [ "$remaining" -gt 30 ]; then
      step tests_rest "$remaining" tests.log "$PY" -m pytest -x -q -p no:cacheprovider tests \
        --ignore=tests/ops --ignore=tests/test_package.py
    else
      echo "tests_rest skipped (no time left)" | tee -a "$SUMMARY"
    fi
  fi
fi

# 4. Timings (markdown table + JSON under $OUT).
remaining=$(( 470 - ($(date +%s) - T0) ))
quick=""
if [ "${GPU_CHECK_QUICK:-0}" = "1" ] || [ "$remaining" -lt 150 ]; then quick="--quick"; fi
# shellcheck disable=SC2086
step bench "$(( remaining > 60 ? remaining : 60 ))" bench.log "$PY" benchmarks/bench_gpu.py --out "$OUT" $quick ${GPU_CHECK_BENCH_ARGS:-}

# 4b. The op suite on the GPU (same cases as the CPU table; into bench.log: $OUT holds 8 files at most).
remaining=$(( 470 - ($(date +%s) - T0) ))
if [ "$remaining" -gt 90 ]; then
  step ops_suite 80 bench.log "$PY" -m ffkernels bench --suite ops --device cuda --quick --min-run-time 0.2
else
  echo "ops_suite skipped (no time left: ${remaining}s)" | tee -a "$SUMMARY"
fi

# 5. Optional end-to-end suite, when the command-line tool has it and time is left.
remaining=$(( 470 - ($(date +%s) - T0) ))
if [ "$remaining" -gt 40 ] && "$PY" -c 'import ffkernels.cli' 2>/dev/null; then
  if "$PY" -m ffkernels.cli bench --help 2>/dev/null | grep -q -- "--suite"; then
    # (8 files at most come back from $OUT: this is the 8th.)
    step e2e "$remaining" e2e.log "$PY" -m ffkernels.cli bench --suite e2e --device cuda --quick \
      --json "$OUT/e2e.json" --timeout "$remaining"
  else
    echo "ffkernels bench --suite not available yet: e2e skipped" | tee -a "$SUMMARY"
  fi
else
  echo "e2e skipped (no ffkernels.cli or no time left: ${remaining}s)" | tee -a "$SUMMARY"
fi

echo "total $(( $(date +%s) - T0 ))s" | tee -a "$SUMMARY"
[ -f "$OUT/gpu_bench.md" ] && cat "$OUT/gpu_bench.md"
cat "$SUMMARY"
