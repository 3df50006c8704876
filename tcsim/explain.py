"""``tcsim.explain``: what a datapath does to one output, term by term.

For one dot product (a row of A, a column of B, C) it shows every block of the chain: each
term's exponent, its value on the block's grid 2^(E - f), the part it lost (and whether it was
swamped entirely), the block's exact and aligned sums and the output rounding; with a promotion
interval, each partial's trip into the FP32 accumulator.

This module is a formatter: every number comes from the exact oracle's stage trace
(:func:`tcsim.reference.trace_dot`, and :func:`tcsim.reference_gemm.promoted_dot` for the
promotions), and the final bits are checked against the kernels (``tcsim.mma``; on promoted GEMMs
``tcsim.gemm`` with its FP32 epilogue where the GEMM can be expressed as one), so the trace is of
the real kernel's answer.

    tcsim explain --example deepseek        # the "14 bits" of Hopper's FP8 accumulator

Every datapath is traced: the AMD building blocks (even/odd lanes and the lane merge, the
asymmetric join with C, the pairwise tree node by node), lowered instructions (FP8 mma.sync on
sm_90: the two FP16 HMMA steps and the add of C), block scales (``a_scale``, ``b_scale``),
stochastic rounding, flushing and overflow. Finite inputs only (NaN/Inf follow the rules in
docs/hardware.md#special-values and need no trace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Union

import numpy as np

from . import reference, reference_gemm
from .datapath import Datapath
from .errors import ConfigError, FormatError, ShapeError
from .formats.catalog import get_format
from .formats.conversion import check_representable
from .formats.operands import ACC_BITS_DTYPES, ACC_DTYPES
from .mma import mma, resolve_datapath
from .presets import ModelLike
from .recipe import Recipe, Scaling
from .scales import scale_format_of


@dataclass
class Term:
    label: str            # "k=5", "g=0..15" or "C"
    value: Fraction       # exact product (or group sum times scales, or C)
    exponent: int         # alignment exponent (ea + eb for unnormalised products)
    aligned: Fraction     # the value on the grid

    @property
    def lost(self) -> Fraction:
        return self.value - self.aligned

    @property
    def swamped(self) -> bool:
        return self.value != 0 and self.aligned == 0


@dataclass
class Block:
    k0: int
    k1: int
    c_in: Union[Fraction, float]      # a Fraction when finite
    E: Optional[int]                  # max exponent after the clamp (None: no nonzero term)
    fraction_bits: Optional[int]
    terms: list = field(default_factory=list)
    exact_sum: Fraction = Fraction(0)
    aligned_sum: Fraction = Fraction(0)
    result: float = 0.0
    notes: list = field(default_factory=list)   # the staged steps (lanes, join, tree), in words
    ks: Optional[list] = None         # the K indices of the block when not k0..k1-1 (lowered)
    after: list = field(default_factory=list)   # steps after the block's rounding (lowered: C)
    trace: Optional[reference.BlockTrace] = None  # the oracle's records of this block

    @property
    def grid(self) -> Optional[Fraction]:
        if self.E is None or self.fraction_bits is None:
            return None
        return Fraction(2) ** (self.E - self.fraction_bits)


@dataclass
class Explanation:
    datapath: Datapath
    a_format: str
    b_format: str
    acc: str
    blocks: list
    result: float
    exact: Fraction                    # exact a.b + c (scaled, with promotion)
    promotions: list = field(default_factory=list)   # reference_gemm.Promotion, in K order
    checked: str = ""                  # what the result's bits were checked against

    def text(self, max_terms: int = 12) -> str:
        dp = self.datapath
        f = "exact" if dp.fraction_bits is None else dp.fraction_bits
        p = dp.output_precision or get_format(self.acc).precision
        stages = ""
        if dp.lanes == 2:
            stages += ", even/odd K lanes"
        if dp.product_sum == "pairwise":
            stages += ", pairwise tree" + (" with FTZ" if dp.flush_nodes else "")
        if dp.block_scale != "none":
            stages += f", block scales ({dp.block_scale})"
        if dp.lowered_k is not None:
            stages += (f", lowered k{dp.lowered_k}: blocks from 0 in k_order, C added last "
                       f"(RNE)")
        lines = [f"datapath: block {dp.block_size or 'K'}, {f} fraction bits below E, terms "
                 f"{dp.term_rounding}, products {dp.product_alignment}, C {dp.c_placement}"
                 f"{stages}, output {p} bits {dp.output_rounding.upper()} ({self.a_format} x "
                 f"{self.b_format} -> {self.acc})"]
        for i, b in enumerate(self.blocks):
            grid = f"grid 2^{b.E - b.fraction_bits}" if b.grid is not None else "exact"
            where = f"k = {b.k0}..{b.k1 - 1}" if b.ks is None else \
                f"k = {', '.join(str(k) for k in b.ks)}"
            lines.append(f"\nblock {i} ({where}), C in = {float(b.c_in)!r}, "
                         f"E = {b.E}, {grid}")
            lines.append(f"  {'term':<6} {'value':>16} {'exp':>5} {'aligned':>16} "
                         f"{'lost':>12}  note")
            ranked = sorted(b.terms, key=lambda t: -abs(t.value))
            shown, hidden = ranked[:max_terms], ranked[max_terms:]
            for t in shown:
                notes = ["SWAMPED" if t.swamped else ("truncated" if t.lost else "")]
                if _unnormalised(t):
                    notes.append("unnormalised: subnormal operand")
                lines.append(f"  {t.label:<6} {float(t.value):>16.9g} {t.exponent:>5} "
                             f"{float(t.aligned):>16.9g} {float(t.lost):>12.3g}  "
                             f"{'; '.join(n for n in notes if n)}")
            if hidden:
                lines.append(f"  ... {len(hidden)} more terms, "
                             f"{sum(t.swamped for t in hidden)} swamped")
            first = next((t for t in b.terms if _unnormalised(t) and t.label.startswith("k=")),
                         None)
            if first is not None:
                lines.append("  " + self._unnormalised_note(first))
            lines.extend(f"  {note}" for note in b.notes)
            lost = b.exact_sum - b.aligned_sum
            lines.append(f"  exact sum {float(b.exact_sum)!r}, aligned sum "
                         f"{float(b.aligned_sum)!r} (lost {float(lost):.3g}), rounded "
                         f"-> {b.result!r}")
            lines.extend(f"  {note}" for note in b.after)
        for pr in self.promotions:
            lines.append(f"\npromotion k = {pr.k0}..{pr.k1 - 1}: partial {pr.partial!r} x "
                         f"{pr.sa!r} x {pr.sb!r} into FP32: {pr.acc_before!r} -> {pr.acc_after!r}")
        if not math.isfinite(self.result):
            err = "inf"
        else:
            err = f"{float((Fraction(self.result) - self.exact) / self.exact):.3g}" \
                if self.exact else "0"
        lines.append(f"\nresult {self.result!r}; exact {float(self.exact)!r}; relative error "
                     f"{err}; swamped terms "
                     f"{sum(t.swamped for b in self.blocks for t in b.terms)}")
        return "\n".join(lines)

    def _unnormalised_note(self, t: Term) -> str:
        """Why a term's exp exceeds its magnitude's: a subnormal operand keeps its format's
        minimum exponent (significand below 1) and products are aligned by ea + eb."""
        own = reference.floor_log2(abs(t.value))
        fa, fb = (get_format(f) for f in (self.a_format, self.b_format))
        emins = f"{fa.name} 2^{fa.emin}" + ("" if fb.name == fa.name else
                                            f", {fb.name} 2^{fb.emin}")
        size = (f"= 2^{own}" if abs(t.value) == Fraction(2) ** own else
                f"< 2^{own + 1}")
        return (f"{t.label}: exp {t.exponent} although |value| {size}: an operand is subnormal, "
                f"so it enters with its format's\n  smallest exponent ({emins}) and a "
                f"significand below 1, and the unnormalised product is aligned\n  by ea + eb = "
                f"{t.exponent}, not by its own magnitude (so is every term marked "
                f"'unnormalised')")

    def figure(self, path) -> Optional[str]:
        """Terms of the first block as log2 magnitudes against the truncation grid (PNG);
        None when matplotlib is missing."""
        try:
            import matplotlib.pyplot as plt  # no backend forced: headless picks Agg itself
        except ImportError:
            return None
        b = self.blocks[0]
        fig, ax = plt.subplots(figsize=(9, 4))
        mags = [math.log2(abs(float(t.value))) if t.value else None for t in b.terms]
        floor = min((m for m in mags if m is not None), default=0) - 2
        xs = range(len(b.terms))
        colors = ["tab:red" if t.swamped else ("tab:orange" if t.lost else "tab:blue")
                  for t in b.terms]
        ax.bar([x for x, m in zip(xs, mags) if m is not None],
               [m - floor for m in mags if m is not None], bottom=floor,
               color=[c for c, m in zip(colors, mags) if m is not None])
        if b.grid is not None:
            ax.axhline(math.log2(b.grid), color="k", ls="--",
                       label=f"grid 2^(E-f) = 2^{b.E - b.fraction_bits}")
            ax.axhline(b.E, color="gray", ls=":", label=f"E = {b.E}")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([t.label for t in b.terms], rotation=90, fontsize=7)
        ax.set_ylabel("log2 |term|")
        ax.set_title("block 0: red = swamped, orange = truncated, blue = kept")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return str(path)


def _unnormalised(t: Term) -> bool:
    """A term aligned by an exponent above its own magnitude's (a subnormal operand)."""
    return t.value != 0 and t.exponent is not None and \
        t.exponent > reference.floor_log2(abs(t.value))


# ---------------------------------------------------------------------------------------------
# The oracle's records, in words
# ---------------------------------------------------------------------------------------------
def _exact(num: reference.Num) -> Union[Fraction, float]:
    """A finite Num as its exact Fraction; NaN / Inf as floats."""
    return num.value if num.kind == "finite" else float(num)


def _r(x) -> str:
    return repr(float(x))


def _note(rec: reference.Record, dp: Datapath, acc: str) -> Optional[str]:
    """One stage record as a line of the block's notes (None: the table shows it)."""
    d, o, i = rec.decided, rec.outputs, rec.inputs
    f = dp.fraction_bits
    if rec.stage in ("specials", "scales"):
        return f"{d['why']}: the block's result is {_r(o['result'])} " \
               f"(docs/hardware.md#special-values)"
    if rec.stage == "flush":
        return f"flushed to zero (subnormal): {', '.join(d.get('flushed', []))}"
    if rec.stage == "align" and dp.lanes == 2:
        return (f"{('even', 'odd')[d['lane']]} lane: E = {d['E']}, grid 2^{d['E'] - f}, "
                f"sum {_r(o['sum'])}")
    if rec.stage == "lanes":
        return f"the lane below E = {d['E']} rounded down onto grid 2^{d['E'] - f}: " \
               f"sum {_r(o['sum'])}"
    if rec.stage == "join" and d["placement"] == "after":
        return (f"C after the products: their sum {_r(i['sum'])} rounded to {d['precision']} "
                f"bits ({d['rounding'].upper()}) -> {_r(o['products'])}, + C "
                f"{_r(i['c'])} = {_r(o['sum'])}")
    if rec.stage == "join":
        c = i["c"]
        return (f"asymmetric join at E' = {d['E']}: products {_r(i['sum'])} rounded down to "
                f"{d['sum_bits']} bits -> {_r(o['products'])}; C {_r(c)} "
                + ("dropped (below the window)" if d["c_dropped"] else
                   f"rounded down to {d['c_bits']} bits -> {_r(o['c'])}"))
    if rec.stage == "round" and o["result"].is_inf:
        return f"the sum overflows {acc} ({d['overflow']} overflow): {_r(o['result'])}"
    if rec.stage == "round" and d["sr"] is not None:
        return f"stochastic rounding: random {d['sr'][0]} of {d['sr'][1]} bits"
    if rec.stage == "lowered_c":
        return (f"C added last: {_r(i['sum'])} + {_r(i['c'])} -> {_r(o['result'])} "
                f"(one RNE rounding to {acc})")
    if rec.stage == "zero_sign":
        return "zero_sign 'unsigned': the zero result is +0.0"
    return None


def _tree_notes(rec: reference.Record, dp: Datapath) -> list:
    d, levels = rec.decided, rec.outputs["levels"]
    out = [f"tree level {n}: " + ", ".join(_r(x) for x in nodes) +
           f" (each rounded to {d['precision']} bits, RNE" +
           (", flushed below 2^emin)" if d["flush"] else ")")
           for n, nodes in enumerate(levels[1:], 1)]
    out.append(f"C + tree = {_r(rec.inputs['c'])} + {_r(levels[-1][0])} -> "
               f"{_r(rec.outputs['result'])} ({d['mode'].upper()})")
    return out


def _block(bt: reference.BlockTrace, dp: Datapath, acc: str) -> Block:
    """An explain Block from the oracle's BlockTrace: the table of terms and the notes."""
    ks = list(bt.ks)
    contiguous = ks == list(range(ks[0], ks[0] + len(ks))) if ks else True
    blk = Block(min(ks, default=0), max(ks, default=-1) + 1, _exact(bt.c_in), None,
                dp.fraction_bits, result=float(bt.result), trace=bt,
                ks=None if contiguous else ks)
    for rec in bt.records:
        if rec.stage == "terms":
            blk.exact_sum = rec.outputs["exact"]
        elif rec.stage == "align":
            for t in rec.outputs["terms"]:
                label = t.label if dp.lanes == 1 else f"{t.label}{'eo'[t.lane]}"
                blk.terms.append(Term(label, t.value, t.exponent, t.aligned))
            blk.E, blk.aligned_sum = rec.decided["E"], rec.outputs["sum"]
        elif rec.stage == "lanes":
            blk.E, blk.aligned_sum = rec.decided["E"], rec.outputs["sum"]
        elif rec.stage == "tree":
            blk.fraction_bits = None
            blk.terms = [Term(t.label, t.value, t.exponent, t.aligned)
                         for t in rec.outputs["terms"]]
            blk.exact_sum = rec.outputs["exact"] or Fraction(0)
            blk.aligned_sum = rec.outputs["sum"] or Fraction(0)
            blk.notes.extend(_tree_notes(rec, dp))
        note = _note(rec, dp, acc)
        if note:
            blk.notes.append(note)
    blk.after = [n for n in (_note(r, dp, acc) for r in bt.after) if n]
    return blk


# ---------------------------------------------------------------------------------------------
# explain
# ---------------------------------------------------------------------------------------------
def explain(a_row, b_col, c: float = 0.0, model: Union[ModelLike, Datapath] = "h100",
            a_format: str = "e4m3", b_format: Optional[str] = None, acc: str = "fp32",
            path: Optional[str] = None, promotion_interval: Optional[int] = None,
            a_scales=None, b_scales=None, a_scale=None, b_scale=None,
            scale_format: Optional[str] = None) -> Explanation:
    """Trace one output D = a_row . b_col + c through the model's datapath.

    With ``promotion_interval`` the K axis is cut into chunks whose tensor-core partials (from
    C = 0) are promoted into an FP32 accumulator as fma(sa*sb, p, acc) (DeepGEMM's order);
    a_scales / b_scales give one fp32 scale per chunk (default 1), and c is the accumulator's
    start. a_scale / b_scale: the block scales of a block-scaled path (one per K/s elements,
    as tcsim.mma takes them for one row and one column; ``scale_format`` as in tcsim.mma).

    The result's bits are checked against ``tcsim.mma`` (and for promoted GEMMs against
    ``tcsim.gemm`` when the GEMM is one tcsim.gemm runs: FP8 inputs, fp32 accumulator, c = +0, K a
    multiple of the interval, the interval a multiple of the block; otherwise every partial is
    checked against tcsim.mma): a difference raises AssertionError. ``Explanation.checked``
    says which check ran.
    """
    b_format = b_format or a_format
    if promotion_interval is not None and (isinstance(promotion_interval, bool) or not isinstance(
            promotion_interval, (int, np.integer)) or promotion_interval < 1):
        raise ConfigError(f"promotion_interval must be None or an integer >= 1, got "
                          f"{promotion_interval!r}")
    a = _checked_values(a_row, a_format, "a_row").reshape(-1)
    b = _checked_values(b_col, b_format, "b_col").reshape(-1)
    if a.shape != b.shape:
        raise ShapeError(f"a_row has {a.size} elements, b_col {b.size}")
    # C enters the tensor-core accumulator (acc), or with promotion the FP32 accumulator
    if np.ndim(c) != 0:
        raise ShapeError(f"c must be one number, got shape {np.shape(c)}")
    c = float(_checked_values(c, "fp32" if promotion_interval else acc, "c"))
    fa, fb = get_format(a_format).name, get_format(b_format).name
    scaled = a_scale is not None or b_scale is not None
    sfmt = scale_format_of(a_scale, scale_format, "a_scale") if a_scale is not None else None
    dp = resolve_datapath(model, fa, fb, acc, path, scaled=scaled, scale_format=sfmt)
    block_scales = _block_scales(dp, a, a_scale, b_scale, sfmt)
    if promotion_interval is None:
        tr = reference.trace_dot(a.tolist(), b.tolist(), c, dp, fa, fb, acc,
                                 **block_scales.get("reference", {}))
        blocks = [_block(bt, dp, acc) for bt in tr.blocks]
        result = float(tr.result)
        sim = mma(a[None], b[:, None], np.array([[c]], ACC_DTYPES[acc]), model=dp,
                  a_format=fa, b_format=fb, acc=acc, **block_scales.get("mma", {}))[0, 0]
        _check_bits(result, sim, acc, "tcsim.mma")
        return Explanation(dp, fa, fb, acc, blocks, result, tr.exact,
                           checked="bits equal tcsim.mma")
    k = a.size
    chunks = [(k0, min(k0 + promotion_interval, k)) for k0 in range(0, k, promotion_interval)]
    sa = [1.0] * len(chunks) if a_scales is None else _chunk_scales(a_scales, len(chunks), "a")
    sb = [1.0] * len(chunks) if b_scales is None else _chunk_scales(b_scales, len(chunks), "b")
    run = reference_gemm.promoted_dot(a.tolist(), b.tolist(), chunks, list(zip(sa, sb)), dp,
                                      fa, fb, "deepgemm", c, acc, record=True,
                                      block_scales=block_scales.get("reference"))
    acc32, promos = run.result, run.promotions
    blocks = [_block(bt, dp, acc) for pr in promos for bt in pr.trace.blocks]
    checked = _check_promoted(a, b, c, dp, fa, fb, acc, promotion_interval, sa, sb, acc32,
                              promos, block_scales.get("mma"))
    return Explanation(dp, fa, fb, acc, blocks, acc32, run.exact,
                       promos, checked)


def _check_bits(result: float, sim, acc: str, against: str) -> None:
    """The trace's result encoded by the oracle == the kernel's bits (signed zeros, canonical
    NaN), else AssertionError."""
    want = int(np.asarray(sim, ACC_DTYPES[acc]).view(ACC_BITS_DTYPES[acc]))
    got = reference.result_bits(result, acc)
    if got != want:
        raise AssertionError(f"explain traced {result!r} (bits {got:#x}) but {against} gives "
                             f"{float(sim)!r} (bits {want:#x})")


def _check_promoted(a, b, c, dp, fa, fb, acc, interval, sa, sb, acc32, promos,
                    mma_scales: Optional[dict]) -> str:
    """The promoted result against tcsim.gemm (a GEMM it runs: see explain), or each partial
    against tcsim.mma. Returns what was checked."""
    k = a.size
    gemm_form = (fa in ("e4m3", "e5m2") and fb in ("e4m3", "e5m2") and acc == "fp32"
                 and math.copysign(1.0, c) > 0 and c == 0 and k % interval == 0
                 and (dp.block_size is None or interval % dp.block_size == 0)
                 and mma_scales is None)
    if gemm_form:
        from .gemm import gemm
        from .quant import Quantized
        scaling = Scaling(granularity="group", group_size=interval)
        qa = Quantized(a[None].copy(), np.array([sa], np.float64), fa, "a", scaling, 1.0)
        qb = Quantized(b[:, None].copy(), np.array(sb, np.float64)[:, None], fb, "b", scaling,
                       1.0)
        recipe = Recipe(a_format=fa, b_format=fb, a_scaling=scaling, b_scaling=scaling,
                        promotion_interval=interval, epilogue="deepgemm", output="fp32")
        _check_bits(acc32, gemm(qa, qb, model=dp, recipe=recipe, progress=False)[0, 0], acc,
                    "tcsim.gemm")
        return "bits equal tcsim.gemm (partials and the FP32 epilogue)"
    for ci, pr in enumerate(promos):
        scales = {}
        if mma_scales is not None:      # the chunk's blocks of scales (one per s K elements)
            s = a.size // mma_scales["a_scale"].size
            scales = dict(mma_scales, a_scale=mma_scales["a_scale"][:, pr.k0 // s:pr.k1 // s],
                          b_scale=mma_scales["b_scale"][pr.k0 // s:pr.k1 // s])
        sim = mma(a[None, pr.k0:pr.k1], b[pr.k0:pr.k1, None],
                  np.zeros((1, 1), ACC_DTYPES[acc]), model=dp.for_chunk(ci), a_format=fa,
                  b_format=fb, acc=acc, **scales)[0, 0]
        _check_bits(pr.partial, sim, acc, f"tcsim.mma (partial k = {pr.k0}..{pr.k1 - 1})")
    return "partials' bits equal tcsim.mma (the FP32 epilogue is the exact oracle's)"


def _chunk_scales(x, n: int, what: str) -> list:
    vals = np.asarray(x, np.float64).reshape(-1)
    if vals.size != n:
        raise ShapeError(f"{what}_scales has {vals.size} values for {n} promotion chunks")
    check_representable(vals, "fp32", what=f"{what}_scales")
    return vals.tolist()


def _block_scales(dp: Datapath, a: np.ndarray, a_scale, b_scale, sfmt) -> dict:
    """The block scales as the oracle takes them (one per K element) and as tcsim.mma takes them
    (a_scale (1, K/s), b_scale (K/s, 1))."""
    if dp.block_scale == "none":
        if a_scale is not None or b_scale is not None:
            raise ConfigError("a_scale / b_scale given, but this datapath takes no block scales")
        return {}
    if a_scale is None or b_scale is None:
        raise ConfigError(f"this datapath is block-scaled (block_scale = {dp.block_scale!r}): "
                          f"give a_scale and b_scale")
    sa = np.asarray(a_scale).reshape(-1)
    sb = np.asarray(b_scale).reshape(-1)
    if sa.size != sb.size or sa.size == 0 or a.size % sa.size:
        raise ShapeError(f"a_scale has {sa.size} and b_scale {sb.size} scales for K = {a.size}")
    s = a.size // sa.size
    per_k = {"a_scales": np.repeat(sa.astype(np.float64), s).tolist(),
             "b_scales": np.repeat(sb.astype(np.float64), s).tolist(), "scale_format": sfmt}
    return {"reference": per_k,
            "mma": {"a_scale": sa[None], "b_scale": sb[:, None], "scale_format": sfmt}}


def _checked_values(x, fmt: str, what: str) -> np.ndarray:
    """``x`` as float64 values, each finite and exactly a value of ``fmt``, checked in the
    input's own precision (a long double that float64 would round is refused)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiuV" or arr.dtype.type is np.void:
        raise FormatError(f"{what} must hold numbers, got dtype {arr.dtype}")
    values = arr.astype(np.float64)
    if not np.isfinite(values).all():
        raise FormatError(f"explain handles finite inputs; {what} holds NaN/Inf")
    wide = arr.dtype.kind == "f" and arr.dtype.itemsize > 8
    check_representable(arr if wide else values, fmt, what=what)
    return values


def deepseek_example():
    """A row where Hopper's 13-bit alignment swamps small products next to one large one:
    1 * 1 plus 31 products of 2^-7 * 2^-7 = 2^-14 (each below the 2^-13 grid of E = 0)."""
    a = [1.0] + [2.0 ** -7] * 31
    return np.array(a), np.array(a), 0.0
