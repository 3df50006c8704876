#!/usr/bin/env bash
# The prepared device check (Hopper or Ada GPU), run from the repository root on the device
# machine with gpu_validate/build carried along (cubins, manifest and suite inputs prepared on the
# CPU by `python -m gpu_validate.compile` and `tcsim validate suites --out gpu_validate/build/suites`).
# Needs numpy, ml_dtypes and CuPy there (no pydantic). Writes records under $OUT/records and a
# summary.json; exits 1 when a self-check fails (register-A vs shared-A, K permutation in a block).
set -euo pipefail
OUT="${OUT:-device_out}"
nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv || true
python -c "import cupy, ml_dtypes, numpy; print('cupy', cupy.__version__)"
time python -m gpu_validate.runner --suites gpu_validate/build/suites --build gpu_validate/build \
    --out "$OUT/records"
