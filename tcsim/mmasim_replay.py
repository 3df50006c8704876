"""Replay the MMA-Sim test vectors (``../shared/corpora/mmasim-2026``) through the presets.

The vectors are single-instruction outputs of MMA-Sim (microsoft/MMA-Sim, commit c785138;
P. Xie et al., arXiv 2511.10909): simulator outputs, not hardware. Layout (the folder's README):
``manifest.json`` lists every case (``<arch>/<instruction>``) with its formats, shape, the tcsim
preset and path it maps to, and the file holding it; ``<arch>.npz`` holds per case and input
kind (normal, wide, special) the operand codes A (T, M, K), B (T, K, N), C (T, M, N), MMA-Sim's
D, optional block scales SA / SB and a mask E of the elements MMA-Sim raised on (excluded).

:func:`replay` simulates every tile with the case's preset path and compares bits. NaN equals NaN
whatever the payload (the README: MMA-Sim's payloads carry no hardware meaning). Every other
differing element gets a reason: the first single datapath setting (:data:`VARIANTS`) under
which tcsim gives MMA-Sim's bits for it, then a reason read off the element's inputs and results
(a product beyond fp32, an Inf input, the sign of a zero), else "unexplained". Nothing here
changes a preset; the reasons say which convention a difference comes from.

    python -m tcsim.mmasim_replay ../shared/corpora/mmasim-2026 [--kind normal] [--case ID]

exits 1 when some element is unexplained or some case has no tcsim path, 2 on a bad folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import CorpusError, TcsimError
from .formats.conversion import decode
from .mma import mma
from .presets import load_model

KINDS = ("normal", "wide", "special")

# Single-setting departures tried, in order, on the elements that differ: the label names the
# convention (docs/hardware.md#zero-operands, #special-values, #exponent-clamp).
VARIANTS = (
    ("zero operand exponent -126", {"zero_operand_exponent": -126}),
    ("E floored at -126", {"min_exp_limit": -126}),
    ("zero operand exponent -126 and E floored at -126",
     {"zero_operand_exponent": -126, "min_exp_limit": -126}),
    ("overflow to Inf", {"overflow": "inf"}),
    ("IEEE sign of an exact zero", {"zero_sign": "ieee"}),
    ("sign of an exact zero +0", {"zero_sign": "plus"}),
    ("every zero result +0 (underflow included)", {"zero_sign": "unsigned"}),
    ("subnormal outputs kept", {"subnormal_outputs": "keep"}),
    ("subnormal inputs kept", {"subnormal_inputs": "keep"}),
)
UNEXPLAINED = "unexplained"


@dataclass
class CaseResult:
    """One case x input kind: compared outputs, matches, and the differing elements by reason."""

    case: str
    kind: str
    preset: str
    path: str
    outputs: int                      # compared (MMA-Sim errors excluded)
    excluded: int                     # elements MMA-Sim raised on
    mismatches: int
    reasons: Counter = field(default_factory=Counter)
    nan_payload: int = 0              # NaN vs NaN with other bits: counted as matches
    error: str = ""                   # the case could not be simulated (no path, ...)
    cites_mmasim: bool = False        # the preset path is a model built from MMA-Sim

    @property
    def explained(self) -> bool:
        """Simulated, and every differing element has a named reason."""
        return not self.error and UNEXPLAINED not in self.reasons


def _values(codes: np.ndarray, fmt: str) -> np.ndarray:
    """float64 values of MMA-Sim's stored codes (README "Encodings")."""
    codes = np.asarray(codes)
    if fmt == "tf32":             # binary32 bits with the low 13 bits zero
        return decode(codes.astype(np.int64) & ~np.int64(0x1FFF), "tf32")
    if fmt == "e2m1":             # one code per byte, low nibble
        return decode(codes & 0xF, "e2m1")
    return decode(codes, fmt)


def _scales(codes: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "ue8m0":
        return decode(codes, "e8m0")
    return np.abs(decode(codes, "e4m3"))     # ue4m3: MMA-Sim uses |code|


def _bits(d: np.ndarray, fmt: str) -> np.ndarray:
    return d.astype(np.float16 if fmt == "fp16" else np.float32).view(
        np.uint16 if fmt == "fp16" else np.uint32).astype(np.uint32)


def _is_nan(bits: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "fp16":
        return ((bits & 0x7C00) == 0x7C00) & ((bits & 0x3FF) != 0)
    return ((bits & 0x7F800000) == 0x7F800000) & ((bits & 0x7FFFFF) != 0)


def _simulate(case: dict, model, a, b, c, sa, sb, path: Optional[str] = None) -> np.ndarray:
    """tcsim's D for the case's tiles: ``model`` a GpuModel (with ``path``) or a Datapath."""
    kw = {}
    if sa is not None:
        kw = dict(a_scale=sa, b_scale=sb, scale_format=case["scale_format"])
    acc = case["d_format"]
    return mma(a, b, c.astype(np.float16 if acc == "fp16" else np.float32), model=model,
               a_format=case["a_format"], b_format=case["b_format"], acc=acc,
               path=path, **kw)


def replay_case(case: dict, z, kind: str) -> CaseResult:
    """Replay one case x kind; ``z`` is its opened .npz file."""
    t = case["tcsim"]
    p = case["key_prefix"] + kind + "/"
    res = CaseResult(case["id"], kind, t["preset"], t["path"] or t["datapath"], 0, 0, 0)
    a = _values(z[p + "A"], case["a_format"])
    b = _values(z[p + "B"], case["b_format"])
    c = _values(z[p + "C"], case["c_format"])
    want = z[p + "D"].astype(np.uint32)
    skip = z[p + "E"] if p + "E" in z.files else np.zeros(want.shape, bool)
    sa = sb = None
    if p + "SA" in z.files:
        sa, sb = _scales(z[p + "SA"], case["scale_format"]), _scales(z[p + "SB"],
                                                                   case["scale_format"])
    try:
        model = load_model(t["preset"])
        res.cites_mmasim = cites_mmasim(model.find_path(
            case["a_format"], case["b_format"], case["d_format"], t["path"], scaled=sa is not None))
        got = _bits(_simulate(case, model, a, b, c, sa, sb, t["path"]), case["d_format"])
    except TcsimError as exc:
        res.error = str(exc)
        return res
    dfmt = case["d_format"]
    both_nan = _is_nan(got, dfmt) & _is_nan(want, dfmt)
    differ = (got != want) & ~skip
    res.nan_payload = int(np.count_nonzero(differ & both_nan))
    differ &= ~both_nan
    res.excluded = int(np.count_nonzero(skip))
    res.outputs = int(want.size - res.excluded)
    res.mismatches = int(np.count_nonzero(differ))
    if res.mismatches:
        res.reasons = _reasons(case, model, a, b, c, sa, sb, want, differ)
    return res


def cites_mmasim(path) -> bool:
    """A preset path whose source is MMA-Sim: status "model", and the notes of its defining
    parameters (block size, fraction bits, output rounding) name MMA-Sim. Such a path must give
    MMA-Sim's bits, corners included (issue 14); other notes may name MMA-Sim as the other view."""
    return path.status == "model" and any(
        "MMA-Sim" in path.provenance.get(f, "")
        for f in ("block_size", "fraction_bits", "output_rounding"))


def _reasons(case, model, a, b, c, sa, sb, want, differ) -> Counter:
    """Each differing element's reason: the first VARIANTS entry that gives MMA-Sim's bits."""
    path = model.find_path(case["a_format"], case["b_format"], case["d_format"],
                           case["tcsim"]["path"], scaled=sa is not None)
    dp = path.datapath()
    dfmt = case["d_format"]
    left = differ.copy()
    reasons: Counter = Counter()
    for label, change in VARIANTS:
        if not left.any():
            break
        try:
            variant = dp.model_copy(update=change)
            if variant == dp:
                continue
            got = _bits(_simulate(case, variant, a, b, c, sa, sb), dfmt)
        except (TcsimError, ValueError):
            continue
        fixed = left & ((got == want) | (_is_nan(got, dfmt) & _is_nan(want, dfmt)))
        if fixed.any():
            reasons[label] += int(np.count_nonzero(fixed))
            left &= ~fixed
    if left.any():
        reasons.update(_element_reasons(a, b, sa, sb, want, dfmt, left, got_default(
            case, model, a, b, c, sa, sb)))
    return reasons


def got_default(case, model, a, b, c, sa, sb) -> np.ndarray:
    """tcsim's bits with the preset path itself."""
    return _bits(_simulate(case, model, a, b, c, sa, sb, case["tcsim"]["path"]), case["d_format"])


def _element_reasons(a, b, sa, sb, want, dfmt, left, got) -> Counter:
    """Reasons read off the inputs and results of elements no single setting explains."""
    prods = _abs_products(a, b, sa, sb)
    fp32_max = float(np.finfo(np.float32).max)
    largest = np.where(np.isfinite(prods), prods, 0.0).max(axis=-1)
    overflowing = largest > fp32_max
    # an Inf input, or two products above fp32_max / 2 whose fp32 partial sum overflows
    inf_or_overflowing_sum = np.isinf(prods).any(axis=-1) | (largest > fp32_max / 2)
    want_nan, got_nan = _is_nan(want, dfmt), _is_nan(got, dfmt)
    mag = 0x7FFF if dfmt == "fp16" else 0x7FFFFFFF
    zero_sign = ((want & mag) == 0) & ((got & mag) == 0)
    out: Counter = Counter()
    rules = (
        ("sign of a zero result (MMA-Sim +0 on underflow)", zero_sign),
        ("a product beyond fp32 before the sum (MMA-Sim: Inf/NaN)", overflowing),
        ("an Inf input or overflowing fp32 partial sum: MMA-Sim NaN",
         want_nan & ~got_nan & inf_or_overflowing_sum),
        ("NaN only in MMA-Sim", want_nan & ~got_nan),
    )
    for label, hit in rules:
        hit = left & hit
        if hit.any():
            out[label] += int(np.count_nonzero(hit))
            left = left & ~hit
    if left.any():
        out[UNEXPLAINED] += int(np.count_nonzero(left))
    return out


def _abs_products(a, b, sa, sb) -> np.ndarray:
    """|a_ik * b_kj| (times the block scales) as (T, M, N, K) float64 (no overflow in float64
    for any format here: |x| < 2^128 and scales < 2^128)."""
    if sa is not None:
        a = a * np.repeat(sa, a.shape[-1] // sa.shape[-1], axis=-1)
        b = b * np.repeat(sb, b.shape[-2] // sb.shape[-2], axis=-2)
    with np.errstate(invalid="ignore"):
        return np.abs(a[:, :, None, :] * np.swapaxes(b, 1, 2)[:, None, :, :])


def load_manifest(root) -> dict:
    root = Path(root)
    try:
        return json.loads((root / "manifest.json").read_text())
    except OSError as exc:
        raise CorpusError(f"{root}: no MMA-Sim manifest.json ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CorpusError(f"{root / 'manifest.json'}: not JSON: {exc}") from None


def replay(root, kinds=KINDS, cases: Optional[list] = None) -> tuple[list, list]:
    """(results, skipped): a CaseResult per recorded case and kind (``cases``: only these
    ids), and the manifest's skipped cases as (id, reason)."""
    root = Path(root)
    man = load_manifest(root)
    results, skipped, opened = [], [], {}
    for case in man["cases"]:
        if cases is not None and case["id"] not in cases:
            continue
        if case["status"] != "recorded":
            skipped.append((case["id"], case.get("reason", "")))
            continue
        if case["file"] not in opened:
            opened[case["file"]] = np.load(root / case["file"])
        for kind in kinds:
            results.append(replay_case(case, opened[case["file"]], kind))
    return results, skipped


def format_report(results: list, skipped: list) -> str:
    """One line per case x kind, then the totals by reason and per preset."""
    lines = [f"{'case':<58} {'kind':<8} {'preset/path':<24} {'outputs':>7} {'differ':>7}  reasons"]
    for r in results:
        why = r.error or ("match" if not r.mismatches else
                          "; ".join(f"{k}: {v}" for k, v in r.reasons.most_common()))
        if r.nan_payload:
            why += f" (NaN payloads differ: {r.nan_payload})"
        lines.append(f"{r.case:<58} {r.kind:<8} {r.preset + '/' + r.path:<24} {r.outputs:>7} "
                     f"{r.mismatches:>7}  {why}")
    for case, reason in skipped:
        lines.append(f"{case:<58} {'-':<8} {'-':<24} {0:>7} {'-':>7}  skipped: {reason}")
    total = Counter()
    for r in results:
        total.update(r.reasons)
    lines.append("")
    cited = [r for r in results if r.cites_mmasim]
    lines.append(f"{len({r.case for r in cited})} cases on preset paths that cite MMA-Sim: "
                 f"{sum(r.outputs for r in cited)} outputs, "
                 f"{sum(r.mismatches for r in cited)} differ")
    lines.append(f"{len({r.case for r in results})} cases, {sum(r.outputs for r in results)} "
                 f"outputs compared, {sum(r.mismatches for r in results)} differ "
                 f"({sum(r.nan_payload for r in results)} NaN payloads not counted); "
                 f"{len(skipped)} cases skipped by the corpus; "
                 f"{sum(1 for r in results if r.error)} case x kind without a tcsim path")
    for reason, n in total.most_common():
        lines.append(f"  {n:>6}  {reason}")
    per_preset: dict = {}
    for r in results:
        cur = per_preset.setdefault(r.preset, [0, 0, Counter()])
        cur[0] += r.outputs
        cur[1] += r.mismatches
        cur[2].update(r.reasons)
    for preset, (n, bad, why) in sorted(per_preset.items()):
        lines.append(f"  {preset:<14} {n:>7} outputs, {bad:>6} differ: "
                     + ("; ".join(f"{k} {v}" for k, v in why.most_common()) or "all match"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tcsim.mmasim_replay",
                                 description="Replay the MMA-Sim vectors through the presets and "
                                             "list every case as match or differences by reason.")
    ap.add_argument("root", help="the mmasim-2026 folder (manifest.json and <arch>.npz)")
    ap.add_argument("--kind", choices=KINDS, action="append", help="input kinds (default all)")
    ap.add_argument("--case", action="append", help="only this case id (repeatable)")
    args = ap.parse_args(argv)
    try:
        results, skipped = replay(args.root, tuple(args.kind or KINDS), args.case)
    except TcsimError as exc:
        print(f"python -m tcsim.mmasim_replay: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(results, skipped))
    return 1 if any(not r.explained for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
