"""Check a GPU install: every preset path the GPU backend serves, and a DeepSeek-V3 GEMM, on
small random operands, on the GPU and on the CPU, compared bit for bit.

    python -m tcsim.cuda.selfcheck [--json FILE]

Prints one line per path (the kernel family tcsim.route chose, and equal / DIFFERENT / not
served), exits 1 when any bits differ. Runs under numba's CUDA simulator too
(NUMBA_ENABLE_CUDASIM=1), slowly. Needs the ``cuda`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

SHAPE = (2, 19, 17, 70)         # batch, M, N, K: crosses tile edges and block boundaries


def _operand(rng, fmt: str, shape) -> np.ndarray:
    """Random values of ``fmt`` (normal-ish, with zeros and a few of the largest values)."""
    from ..formats.catalog import get_format
    from ..formats.conversion import round_to_format
    f = get_format(fmt)
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-3, 4, shape)
    x[rng.random(shape) < 0.1] = 0.0
    x[rng.random(shape) < 0.02] = f.max_finite
    return round_to_format(np.clip(x, -f.max_finite, f.max_finite), fmt)


def check_paths(rng, log=print) -> list:
    """One row per (model, path, formats) the backend serves: (label, kernel, result)."""
    from .. import load_model, mma, preset_names
    from ..errors import DeviceError
    from ..formats.operands import ACC_DTYPES
    from ..route import route
    rows = []
    nb, m, n, k = SHAPE
    for model in preset_names():
        gpu = load_model(model)
        for path in gpu.paths:
            if path.block_scale != "none":
                continue          # block-scaled paths need scales (the GEMM below has some)
            fa = path.inputs[0]
            label = f"{model}/{path.name} {fa}->{path.output}"
            try:
                kernel = route(path, fa, fa, path.output, k).kernel.value
            except Exception as exc:      # a path no kernel serves at this K
                rows.append((label, "-", f"not routed: {exc}"))
                continue
            a = _operand(rng, fa, (nb, m, k))
            b = _operand(rng, fa, (nb, k, n))
            c = _operand(rng, path.output, (nb, m, n)).astype(ACC_DTYPES[path.output])
            try:
                gpu_d = mma(a, b, c, model=path, a_format=fa, b_format=fa, acc=path.output,
                            device="cuda")
            except DeviceError as exc:
                rows.append((label, kernel, f"not served: {exc}"))
                log(f"{label:48s} {kernel:14s} not served")
                continue
            cpu_d = mma(a, b, c, model=path, a_format=fa, b_format=fa, acc=path.output,
                        device="cpu")
            bits = np.uint32 if path.output == "fp32" else np.uint16
            same = bool((gpu_d.view(bits) == cpu_d.view(bits)).all())
            rows.append((label, kernel, "equal" if same else "DIFFERENT"))
            log(f"{label:48s} {kernel:14s} {'equal' if same else 'DIFFERENT'}")
    return rows


def check_gemm(rng, log=print) -> tuple:
    """The DeepSeek-V3 GEMM on h100 at 16 x 256 x 256 on both backends: (label, result)."""
    from .. import gemm
    x = rng.standard_normal((16, 256)).astype(np.float32)
    w = (rng.standard_normal((256, 256)) * 0.05).astype(np.float32)
    g = gemm(x, w, model="h100", recipe="deepseek_v3", device="cuda", progress=False)
    c = gemm(x, w, model="h100", recipe="deepseek_v3", device="cpu", progress=False)
    same = bool((g.view(np.uint32) == c.view(np.uint32)).all())
    label = "gemm h100 deepseek_v3 16x256x256"
    log(f"{label:48s} {'fused':14s} {'equal' if same else 'DIFFERENT'}")
    return label, "equal" if same else "DIFFERENT"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcsim.cuda.selfcheck",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    from . import require, simulated
    require()
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    print(f"tcsim.cuda selfcheck on {'the numba CUDA simulator' if simulated() else 'the GPU'}; "
          f"operands (B, M, N, K) = {SHAPE}")
    rows = check_paths(rng)
    rows.append(check_gemm(rng))
    differ = [r for r in rows if r[-1] == "DIFFERENT"]
    equal = [r for r in rows if r[-1] == "equal"]
    print(f"selfcheck: {len(equal)} equal, {len(differ)} different, "
          f"{len(rows) - len(equal) - len(differ)} not served; {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"simulated": simulated(), "shape": SHAPE,
                       "rows": [list(r) for r in rows]}, fh, indent=1)
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
