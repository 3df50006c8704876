#!/usr/bin/env bash
# The prepared device check (Hopper or Ada GPU), run from the repository root on the GPU
# machine with gpu_validate/build present (cubins, manifest and suite inputs prepared, there or on
# any CPU, by `python -m gpu_validate.compile` and `tcsim validate suites --out gpu_validate/build/suites`).
# Needs numpy, ml_dtypes and CuPy there (no pydantic); records torch._scaled_mm too where PyTorch
# sees the GPU.
#
# The records (about 150 files) are packed into a few $OUT/records-<n>.tar parts of bounded size
# (gpu_validate.bundle), beside $OUT/summary.json and $OUT/run.log, so that $OUT travels as a few
# plain files (gpu_validate/README.md). Then, on any machine:
#   tcsim validate unpack $OUT/records-*.tar            # -> gpu_validate/records/<GPU>/
#   tcsim validate replay gpu_validate/records/<GPU>
# Where tcsim and numba-cuda are installed on the GPU machine, it then checks the GPU backend
# (tcsim.cuda): $OUT/cuda_selfcheck.json (its bits vs the CPU backend) and $OUT/bench_cuda.txt.
# Exits 1 when a self-check fails (register-A vs shared-A, K permutation in a block) or a kernel
# raised; the records written so far are packed either way.
#
# Dry run on a CPU (tcsim answers for the device; records say synthetic):
#   GPU_VALIDATE_SIMULATE=h100 OUT=/tmp/out bash gpu_validate/device_check.sh
set -uo pipefail
OUT="${OUT:-device_out}"
BUILD="${GPU_VALIDATE_BUILD:-gpu_validate/build}"
SUITES="${GPU_VALIDATE_SUITES:-$BUILD/suites}"
RECORDS="$(mktemp -d)/records"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
{
    date -u +"start %Y-%m-%dT%H:%M:%SZ"
    if [ -z "${GPU_VALIDATE_SIMULATE:-}" ]; then
        nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv || true
        "$PY" -c "import cupy, ml_dtypes, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__, 'ml_dtypes', ml_dtypes.__version__)"
    fi
    start=$SECONDS
    "$PY" -m gpu_validate.runner --suites "$SUITES" --build "$BUILD" --out "$RECORDS"
    status=$?
    echo "runner exit status $status after $((SECONDS - start)) s"
    if [ -f "$RECORDS/summary.json" ]; then
        cp "$RECORDS/summary.json" "$OUT/summary.json"
        rm "$RECORDS/summary.json"
    fi
    if [ -d "$RECORDS" ] && [ -n "$(ls -A "$RECORDS")" ]; then
        "$PY" -m gpu_validate.bundle pack "$RECORDS" "$OUT" || status=2
    else
        echo "no records were written"
        [ "$status" -eq 0 ] && status=2
    fi
    # the GPU backend (tcsim.cuda), where tcsim and numba-cuda are installed here: its bits
    # against the CPU backend's on every served preset path and a DeepSeek-V3 GEMM, then its
    # speed (benchmarks/bench_cuda.py), each bounded in time; neither changes the exit status
    if [ -z "${GPU_VALIDATE_SIMULATE:-}" ] && "$PY" -c "import tcsim.cuda, numba_cuda" 2>/dev/null; then
        start=$SECONDS
        timeout 300 "$PY" -m tcsim.cuda.selfcheck --json "$OUT/cuda_selfcheck.json"
        echo "tcsim.cuda selfcheck exit status $? after $((SECONDS - start)) s"
        start=$SECONDS
        timeout 240 "$PY" benchmarks/bench_cuda.py --repeat 2 > "$OUT/bench_cuda.txt" 2>&1
        echo "bench_cuda exit status $? after $((SECONDS - start)) s"
        cat "$OUT/bench_cuda.txt"
    else
        echo "tcsim.cuda is not installed here: GPU backend check skipped (pip install -e '.[cuda]')"
    fi
    date -u +"end %Y-%m-%dT%H:%M:%SZ"
    exit "$status"
} 2>&1 | tee "$OUT/run.log"
exit "${PIPESTATUS[0]}"
