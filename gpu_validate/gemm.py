"""GEMM-level validation, host side: the recipes of tcsim.gemm (promotion interval, scale order)
written as inputs for the multi-instruction kernel ``kernels/fp8_gemm.cu`` (run on the device
by gpu_validate.gemm_device) and its records replayed against tcsim.gemm.

Module-level imports are numpy only, so that the module loads without tcsim; the functions that
simulate (:func:`write_gemm_inputs`, :func:`replay_gemm_record`) import tcsim inside.

Input file ``gemm__<name>.npz``: ``x_bits`` (M, K) and ``w_bits`` (K, N) uint32 fp32 bits of FP8
values, ``sa`` (M, nK) and ``sb`` (nK, N) float32 dequantisation scales per K-group, 0-d
``a_format``, ``b_format``, ``promotion`` (elements; K = fast accumulation), ``epilogue``,
``recipe``, ``seed``. A GEMM record adds ``y_bits`` (M, N) uint32 and the device metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .records import read_npz, write_npz

GEMM_SHAPE = (64, 16, 256)          # M, N, K: 2 K-groups of 128, one 64 x 8 tile row, 2 columns


def _cases():
    """(name, recipe) pairs: the named recipes plus, with fine scaling, every epilogue order
    (tcsim.recipe.EPILOGUE_NAMES) those do not use."""
    from tcsim.recipe import EPILOGUE_NAMES, Recipe
    cases = [("deepseek_v3", Recipe.deepseek_v3()),
             ("cublas_fast_accum", Recipe.cublas_fast_accum()),
             ("cublas_split_accum", Recipe.cublas_split_accum()),
             ("deepseek_v3_e5m2_w", Recipe.deepseek_v3(b_format="e5m2"))]
    used = {recipe.epilogue for _, recipe in cases}
    for epi in (e for e in EPILOGUE_NAMES if e not in used):
        cases.append((f"group128_{epi}", Recipe.deepseek_v3(epilogue=epi)))
    cases.append(("promote32", Recipe.cublas_split_accum(promotion_interval=32)))
    return cases


def write_gemm_inputs(out_dir, seed: int = 0) -> list:
    """Quantise seeded random operands for every case (tcsim.quant) and write the inputs."""
    from tcsim.quant import quantize
    from tcsim.workloads import make_inputs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    m, n, k = GEMM_SHAPE
    written = []
    for i, (name, recipe) in enumerate(_cases()):
        x, w = make_inputs("outliers" if i % 2 else "normal", m, k, n, seed=seed * 1000 + i)
        qa = quantize(x, recipe.a_format, recipe.a_scaling, "a")
        qb = quantize(w, recipe.b_format, recipe.b_scaling, "b")
        path = out_dir / f"gemm__{name}.npz"
        write_npz(path, {
            "x_bits": qa.values.astype(np.float32).view(np.uint32),
            "w_bits": qb.values.astype(np.float32).view(np.uint32),
            "sa": qa.k_scales().astype(np.float32), "sb": qb.k_scales().astype(np.float32),
            "a_format": np.array(recipe.a_format), "b_format": np.array(recipe.b_format),
            "promotion": np.array(str(recipe.promotion_interval or k)),
            "epilogue": np.array(recipe.epilogue), "recipe": np.array(name),
            "seed": np.array(str(seed))})
        written.append(path)
    return written


def simulate_gemm(a_format: str, b_format: str, x_bits, w_bits, sa, sb, promotion: int,
                  epilogue: str, model: str = "h100") -> np.ndarray:
    """tcsim.gemm on the recorded codes and per-K-group scales, with the recorded recipe."""
    from tcsim import Recipe, Scaling, gemm
    from tcsim.quant import Quantized
    x = np.asarray(x_bits).view(np.float32).astype(np.float64)
    w = np.asarray(w_bits).view(np.float32).astype(np.float64)
    sa, sb = np.asarray(sa, np.float64), np.asarray(sb, np.float64)
    k, nk = x.shape[1], sa.shape[1]
    scaling = Scaling(granularity="channel") if nk == 1 else \
        Scaling(granularity="group", group_size=k // nk)
    recipe = Recipe(a_format=a_format, b_format=b_format, a_scaling=scaling, b_scaling=scaling,
                    promotion_interval=None if promotion == k else promotion, epilogue=epilogue)
    qa = Quantized(values=x, scales=sa, fmt=a_format, role="a", scaling=scaling,
                   amax=float(np.abs(x).max(initial=0.0)))
    qb = Quantized(values=w, scales=sb, fmt=b_format, role="b", scaling=scaling,
                   amax=float(np.abs(w).max(initial=0.0)))
    return gemm(qa, qb, model=model, recipe=recipe, progress=False)


GEMM_RECORD_KEYS = ("x_bits", "w_bits", "sa", "sb", "y_bits", "a_format", "b_format",
                    "promotion", "epilogue", "recipe")


def _checked_gemm_record(path) -> dict:
    """The arrays of a GEMM record, checked for the keys, dtypes and shapes replay needs;
    ValueError naming the file and what is wrong."""
    z = read_npz(path)
    missing = [k for k in GEMM_RECORD_KEYS if k not in z]
    if missing:
        raise ValueError(f"{path}: not a GEMM record: missing {', '.join(missing)}")
    x, w, y, sa, sb = (z[key] for key in ("x_bits", "w_bits", "y_bits", "sa", "sb"))
    ok = all(a.dtype == np.uint32 for a in (x, w, y)) and \
        all(a.ndim == 2 for a in (x, w, y, sa, sb))
    if ok:
        (m, k), (k2, n), nk = x.shape, w.shape, sa.shape[1]
        ok = min(m, n, k, nk) >= 1 and k == k2 and k % nk == 0 and y.shape == (m, n) and \
            sa.shape == (m, nk) and sb.shape == (nk, n)
    if not ok:
        got = ", ".join(f"{key} {z[key].dtype} {z[key].shape}"
                        for key in ("x_bits", "w_bits", "y_bits", "sa", "sb"))
        raise ValueError(f"{path}: GEMM record arrays do not fit together (need uint32 x_bits "
                         f"(M, K), w_bits (K, N), y_bits (M, N) and scales sa (M, nK), "
                         f"sb (nK, N)); got {got}")
    try:
        promotion = int(str(z["promotion"]))
    except ValueError:
        raise ValueError(f"{path}: promotion {str(z['promotion'])!r} is not an integer") from None
    if promotion < 1:
        raise ValueError(f"{path}: promotion {promotion} must be >= 1")
    return z


def replay_gemm_record(path, model: Optional[str] = None) -> dict:
    """Simulate a GEMM record with tcsim.gemm (same codes, scales and recipe); count mismatches.
    The model: ``model``, else the record's ``model`` entry (synthetic records), else from the
    GPU name (H200 -> h200, otherwise h100).

    ``torch._scaled_mm`` records (closed-source cuBLASLt kernels) also get ``interpretations``:
    mismatches for each promotion interval (32, 64, 128, K) with the per-tensor scales applied to
    every promoted partial (as recorded) or once at the end (y = fp32(sa * sb) * sum of
    partials); the one with no mismatch is what cuBLASLt does."""
    z = _checked_gemm_record(path)
    gpu = str(z.get("gpu_name", ""))
    model = model or str(z.get("model", "")) or ("h200" if "H200" in gpu else "h100")
    y = simulate_gemm(str(z["a_format"]), str(z["b_format"]), z["x_bits"], z["w_bits"], z["sa"],
                      z["sb"], int(str(z["promotion"])), str(z["epilogue"]), model)
    got, want = y.view(np.uint32), z["y_bits"]
    bad = np.flatnonzero(got != want)
    out = {"record": str(path), "recipe": str(z["recipe"]), "model": model, "gpu": gpu,
           "synthetic": str(z.get("synthetic", "false")) == "true",
           "outputs": int(want.size), "mismatches": int(bad.size),
           "first": [int(i) for i in bad[:3]]}
    if str(z["recipe"]).startswith("torch_scaled_mm"):
        out["interpretations"] = scaled_mm_interpretations(z, model)
    return out


def scaled_mm_interpretations(z: dict, model: str) -> dict:
    """label -> mismatching outputs, for a per-tensor-scaled GEMM record (see
    :func:`replay_gemm_record`)."""
    k = z["x_bits"].shape[1]
    want = z["y_bits"]
    alpha = np.float32(np.float32(z["sa"].flat[0]) * np.float32(z["sb"].flat[0]))
    ones_a, ones_b = np.ones_like(z["sa"]), np.ones_like(z["sb"])
    out = {}
    for promo in sorted({32, 64, 128, k}):
        if promo > k or k % promo:
            continue
        name = "fast accumulation" if promo == k else f"promotion every {promo}"
        per_chunk = simulate_gemm(str(z["a_format"]), str(z["b_format"]), z["x_bits"],
                                  z["w_bits"], z["sa"], z["sb"], promo, "2d2d", model)
        out[f"{name}, scales per partial"] = int(np.count_nonzero(
            per_chunk.view(np.uint32) != want))
        partials = simulate_gemm(str(z["a_format"]), str(z["b_format"]), z["x_bits"],
                                 z["w_bits"], ones_a, ones_b, promo, "2d2d", model)
        at_end = (alpha * partials.astype(np.float32)).astype(np.float32)
        out[f"{name}, scales at the end"] = int(np.count_nonzero(at_end.view(np.uint32) != want))
    return out


def format_gemm_table(results: list) -> str:
    head = f"{'GEMM record':<48} {'recipe':<22} {'model':<6} {'outputs':>7} {'mismatch':>8}"
    lines = [head, "-" * len(head)]
    for r in results:
        lines.append(f"{Path(r['record']).name[:48]:<48} {r['recipe']:<22} {r['model']:<6} "
                     f"{r['outputs']:>7} {r['mismatches']:>8}")
        readings = r.get("interpretations")
        if readings:
            explained = [k for k, v in readings.items() if v == 0]
            label, n = min(readings.items(), key=lambda kv: kv[1])
            lines.append("    cuBLASLt reading: " + ("; ".join(explained) if explained else
                         f"none explains every output; closest {label} ({n})"))
    return "\n".join(lines)
