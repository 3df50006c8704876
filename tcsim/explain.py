"""``tcsim.explain``: what a datapath does to one output, term by term.

For one dot product (a row of A, a column of B, C) it traces every block of the chain: each
term's exponent, its value on the block's grid 2^(E - f), the part it lost (and whether it was
swamped entirely), the block's exact and aligned sums and the output rounding; with a promotion
interval, each partial's trip into the FP32 accumulator. Exact arithmetic (Fractions); the final
result is checked against tcsim.mma's bits, so the trace is of the real kernel's answer.

    tcsim explain --example deepseek        # the "14 bits" of Hopper's FP8 accumulator

The AMD building blocks are traced too (even/odd lanes and the lane merge, the asymmetric join
with C, the pairwise tree node by node), each step in the block's notes, and so are lowered
instructions (FP8 mma.sync on sm_90: the two FP16 HMMA steps on their products and the add of
C); block scales and stochastic terms are not traced yet (ConfigError).

Finite inputs only (NaN/Inf follow the rules in docs/hardware.md#special-values and need no trace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional, Union

import numpy as np

from . import formats
from .config import Datapath
from .errors import ConfigError, FormatError, ShapeError
from .mma import mma, resolve_datapath
from .presets import ModelLike
from .reference import _floor_log2


@dataclass
class Term:
    label: str            # "k=5" or "C"
    value: Fraction       # exact product (or C)
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
    c_in: Fraction
    E: Optional[int]                  # max exponent after the clamp (None: no nonzero term)
    fraction_bits: Optional[int]
    terms: list = field(default_factory=list)
    exact_sum: Fraction = Fraction(0)
    aligned_sum: Fraction = Fraction(0)
    result: Fraction = Fraction(0)
    notes: list = field(default_factory=list)   # the staged steps (lanes, join, tree), in words
    ks: Optional[list] = None         # the K indices of the block when not k0..k1-1 (lowered)
    after: list = field(default_factory=list)   # steps after the block's rounding (lowered: C)

    @property
    def grid(self) -> Optional[Fraction]:
        if self.E is None or self.fraction_bits is None:
            return None
        return Fraction(2) ** (self.E - self.fraction_bits)


@dataclass
class Promotion:
    k0: int
    k1: int
    partial: float
    sa: float
    sb: float
    acc_before: float
    acc_after: float


@dataclass
class Explanation:
    datapath: Datapath
    a_format: str
    b_format: str
    acc: str
    blocks: list
    result: float
    exact: Fraction                    # exact a.b + c (scaled, with promotion)
    promotions: list = field(default_factory=list)

    def text(self, max_terms: int = 12) -> str:
        dp = self.datapath
        f = "exact" if dp.fraction_bits is None else dp.fraction_bits
        p = dp.output_precision or formats.get_format(self.acc).precision
        stages = ""
        if dp.lanes == 2:
            stages += ", even/odd K lanes"
        if dp.product_sum == "pairwise":
            stages += ", pairwise tree" + (" with FTZ" if dp.flush_nodes else "")
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
            first = next((t for t in b.terms if _unnormalised(t) and t.label != "C"), None)
            if first is not None:
                lines.append("  " + self._unnormalised_note(first))
            lines.extend(f"  {note}" for note in b.notes)
            lost = b.exact_sum - b.aligned_sum
            lines.append(f"  exact sum {float(b.exact_sum)!r}, aligned sum "
                         f"{float(b.aligned_sum)!r} (lost {float(lost):.3g}), rounded "
                         f"-> {float(b.result)!r}")
            lines.extend(f"  {note}" for note in b.after)
        for pr in self.promotions:
            lines.append(f"\npromotion k = {pr.k0}..{pr.k1 - 1}: partial {pr.partial!r} x "
                         f"{pr.sa!r} x {pr.sb!r} into FP32: {pr.acc_before!r} -> {pr.acc_after!r}")
        err = (Fraction(self.result) - self.exact) / self.exact if self.exact else Fraction(0)
        lines.append(f"\nresult {self.result!r}; exact {float(self.exact)!r}; relative error "
                     f"{float(err):.3g}; swamped terms "
                     f"{sum(t.swamped for b in self.blocks for t in b.terms)}")
        return "\n".join(lines)

    def _unnormalised_note(self, t: Term) -> str:
        """Why a term's exp exceeds its magnitude's: a subnormal operand keeps its format's
        minimum exponent (significand below 1) and products are aligned by ea + eb."""
        own = _floor_log2(abs(t.value))
        fa, fb = (formats.get_format(f) for f in (self.a_format, self.b_format))
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
            import matplotlib.pyplot as plt   # no backend forced: headless picks Agg itself
        except ImportError:
            return None
        b = self.blocks[0]
        fig, ax = plt.subplots(figsize=(9, 4))
        mags = [math.log2(abs(float(t.value))) if t.value else None for t in b.terms]
        xs = range(len(b.terms))
        colors = ["tab:red" if t.swamped else ("tab:orange" if t.lost else "tab:blue")
                  for t in b.terms]
        ax.bar([x for x, m in zip(xs, mags) if m is not None],
               [m - (min(m for m in mags if m is not None) - 2) for m in mags if m is not None],
               bottom=min(m for m in mags if m is not None) - 2,
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
    return t.value != 0 and t.exponent is not None and t.exponent > _floor_log2(abs(t.value))


def _exp(x: Fraction, fmt) -> int:
    """An input's (or C's) alignment exponent: floor(log2|x|), or emin for subnormals."""
    return max(_floor_log2(abs(x)), fmt.emin)


def _on_grid(v: Fraction, grid: Fraction, mode: str) -> Fraction:
    q = v / grid
    if mode == "truncate":
        n = math.floor(abs(q)) * (1 if q >= 0 else -1)
    elif mode == "floor":
        n = math.floor(q)
    else:
        n = round(q)   # Fraction rounds half to even
    return n * grid


def _round_out(s: Fraction, p: int, emin: int, mode: str) -> Fraction:
    if s == 0:
        return Fraction(0)
    return _on_grid(s, Fraction(2) ** (max(_floor_log2(abs(s)), emin) - (p - 1)),
                    "truncate" if mode == "rz" else "rne")


def _block(a, b, c: Fraction, dp: Datapath, fa, fb, accf, k0) -> Block:
    prods = [(f"k={k0 + i}", Fraction(x) * Fraction(y),
              _exp(Fraction(x), fa) + _exp(Fraction(y), fb) if x and y else None)
             for i, (x, y) in enumerate(zip(a, b))]
    if dp.product_alignment == "normalized":
        prods = [(lbl, v, _floor_log2(abs(v)) if v else None) for lbl, v, _ in prods]
    terms = [(lbl, v, e) for lbl, v, e in prods if v != 0]
    if dp.c_placement == "inside" and c != 0:
        terms.append(("C", c, _exp(abs(c), accf)))
    E = max((e for _, _, e in terms), default=None)
    if E is not None and dp.min_exp_limit is not None:
        E = max(E, dp.min_exp_limit)
    blk = Block(k0, k0 + len(a), c, E, dp.fraction_bits)
    for lbl, v, e in terms:
        aligned = v if blk.grid is None else _on_grid(v, blk.grid, dp.term_rounding)
        blk.terms.append(Term(lbl, v, e, aligned))
    blk.exact_sum = sum((t.value for t in blk.terms), Fraction(0))
    blk.aligned_sum = sum((t.aligned for t in blk.terms), Fraction(0))
    p = dp.output_precision or accf.precision
    if dp.c_placement == "after":
        s = _round_out(blk.aligned_sum, dp.product_sum_precision, -10 ** 6,
                       dp.product_sum_rounding) + c
        blk.exact_sum += c
        blk.result = _round_out(s, p, accf.emin, dp.output_rounding)
    else:
        blk.result = _round_out(blk.aligned_sum, p, accf.emin, dp.output_rounding)
    return blk


def _staged_block(a, b, c: Fraction, dp: Datapath, fa, fb, accf, k0) -> Block:
    """A block through the AMD building blocks: even/odd lanes, the asymmetric join with C, or a
    pairwise tree of rounded nodes (block scales are not traced). Each step is in ``notes``."""
    from .reference import _add_nodes, _decode, _round_node
    p = dp.output_precision or accf.precision
    f = dp.fraction_bits
    if dp.product_sum == "pairwise":
        blk = Block(k0, k0 + len(a), c, None, None)
        pp = dp.product_sum_precision
        nodes = []
        for i in range(dp.block_size):
            v = Fraction(a[i]) * Fraction(b[i]) if i < len(a) else Fraction(0)
            node = _round_node(v, False, pp, accf, "rne", dp.flush_nodes)
            nodes.append(node)
            if i < len(a):
                e = _exp(Fraction(a[i]), fa) + _exp(Fraction(b[i]), fb) if v else 0
                blk.terms.append(Term(f"k={k0 + i}", v, e, node.value))
        level = 1
        while len(nodes) > 1:
            nodes = [_add_nodes(nodes[2 * t], nodes[2 * t + 1], pp, accf, "rne", dp.flush_nodes)
                     for t in range(len(nodes) // 2)]
            blk.notes.append(f"tree level {level}: " + ", ".join(
                repr(float(x.value)) for x in nodes) + f" (each rounded to {pp} bits, RNE"
                + (", flushed below 2^emin)" if dp.flush_nodes else ")"))
            level += 1
        out = _add_nodes(_decode(float(c)), nodes[0], p, accf, dp.output_rounding,
                         dp.flush_nodes)
        blk.notes.append(f"C + tree = {float(c)!r} + {float(nodes[0].value)!r} -> "
                         f"{float(out.value)!r} ({dp.output_rounding.upper()})")
        blk.exact_sum = sum((t.value for t in blk.terms), Fraction(0)) + c
        blk.aligned_sum = nodes[0].value + c
        blk.result = out.value
        return blk
    terms = []      # (label, value, exponent, lane)
    for i, (x, y) in enumerate(zip(a, b)):
        v = Fraction(x) * Fraction(y)
        if v != 0:
            e = _exp(Fraction(x), fa) + _exp(Fraction(y), fb)
            if dp.product_alignment == "normalized":
                e = _floor_log2(abs(v))
        elif dp.zero_operand_exponent is not None:
            z = dp.zero_operand_exponent
            e = (z if x == 0 else _exp(Fraction(x), fa)) + (z if y == 0 else _exp(Fraction(y), fb))
        else:
            continue
        terms.append((f"k={k0 + i}", v, e, i % dp.lanes))
    e_c = _exp(abs(c), accf) if c != 0 else None
    if dp.c_placement == "inside" and c != 0:
        terms.append(("C", c, e_c, 0))
    lanes = []      # (E, S) of each lane holding a term
    blk = Block(k0, k0 + len(a), c, None, f)
    for lane in range(dp.lanes):
        mine = [t for t in terms if t[3] == lane]
        if not mine:
            continue
        E = max(e for _, _, e, _ in mine)
        if dp.min_exp_limit is not None:
            E = max(E, dp.min_exp_limit)
        grid = Fraction(2) ** (E - f)
        S = Fraction(0)
        for lbl, v, e, _ in mine:
            aligned = _on_grid(v, grid, dp.term_rounding)
            blk.terms.append(Term(lbl if dp.lanes == 1 else f"{lbl}{'eo'[lane]}", v, e,
                                  aligned))
            S += aligned
        lanes.append((E, S))
        if dp.lanes == 2:
            blk.notes.append(f"{('even', 'odd')[lane]} lane: E = {E}, grid 2^{E - f}, "
                             f"sum {float(S)!r}")
    Ep, S = (None, Fraction(0))
    if lanes:
        Ep = max(E for E, _ in lanes)
        S = sum((_on_grid(x, Fraction(2) ** (Ep - f), "floor") for _, x in lanes), Fraction(0))
        if len(lanes) == 2:
            blk.notes.append(f"the lane below E = {Ep} rounded down onto grid 2^{Ep - f}: "
                             f"sum {float(S)!r}")
    blk.E = Ep
    blk.aligned_sum = S
    blk.exact_sum = sum((t.value for t in blk.terms), Fraction(0))
    if dp.c_placement != "inside":
        blk.exact_sum += c
    if dp.c_placement == "inside":
        total = S
    elif dp.c_placement == "after":
        total = _round_out(S, dp.product_sum_precision, -10 ** 6, dp.product_sum_rounding) + c
    else:
        E2 = max(e for e in (Ep, e_c) if e is not None) if (Ep, e_c) != (None, None) else None
        total = Fraction(0)
        if E2 is not None:
            s2 = _on_grid(S, Fraction(2) ** (E2 - dp.join_sum_bits), "floor")
            dropped = e_c is None or (dp.join_c_window is not None
                                      and e_c < E2 - dp.join_c_window)
            c2 = Fraction(0) if dropped else _on_grid(c, Fraction(2) ** (E2 - dp.join_c_bits),
                                                      "floor")
            total = s2 + c2
            blk.notes.append(
                f"asymmetric join at E' = {E2}: products {float(S)!r} rounded down to "
                f"{dp.join_sum_bits} bits -> {float(s2)!r}; C {float(c)!r} "
                + ("dropped (below the window)" if dropped and c != 0 else
                   f"rounded down to {dp.join_c_bits} bits -> {float(c2)!r}"))
    blk.result = _round_out(total, p, accf.emin, dp.output_rounding)
    return blk


def _lowered_blocks(a, b, c: Fraction, dp: Datapath, fa, fb, accf, block_fn, blocks) -> Fraction:
    """A lowered instruction chain (Datapath.lowered_k, tcsim.lowering): per instruction, the
    inner blocks from 0 on the products in k_order, then C added last with one RNE rounding;
    appends the blocks, returns the result."""
    from .reference import _add_nodes, _decode
    lk, n = dp.lowered_k, dp.block_size
    order = list(dp.k_order) or list(range(lk))
    inner = dp.replace(lowered_k=None, k_order=())
    pad = -a.size % lk
    a, b = np.concatenate([a, np.zeros(pad)]), np.concatenate([b, np.zeros(pad)])
    for start in range(0, a.size, lk):
        s = Fraction(0)
        for j in range(0, lk, n):
            ks = [start + x for x in order[j:j + n]]
            blk = block_fn(a[ks], b[ks], s, inner, fa, fb, accf, 0)
            for t in blk.terms:           # the block's own labels count 0..n-1: name the real k
                if t.label.startswith("k="):
                    t.label = f"k={ks[int(t.label[2:])]}"
            blk.ks = ks
            blocks.append(blk)
            s = blk.result
        out = _add_nodes(_decode(float(s)), _decode(float(c)), accf.precision, accf, "rne",
                         False)
        if out.kind != "finite":
            raise ConfigError(f"the result overflows {accf.name}: explain traces finite results")
        blocks[-1].after.append(f"C added last: {float(s)!r} + {float(c)!r} -> "
                                f"{float(out.value)!r} (one RNE rounding to {accf.name})")
        c = out.value
    return c


def explain(a_row, b_col, c: float = 0.0, model: Union[ModelLike, Datapath] = "h100",
            a_format: str = "e4m3", b_format: Optional[str] = None, acc: str = "fp32",
            path: Optional[str] = None, promotion_interval: Optional[int] = None,
            a_scales=None, b_scales=None) -> Explanation:
    """Trace one output D = a_row . b_col + c through the model's datapath.

    With ``promotion_interval`` the K axis is cut into chunks whose tensor-core partials (from
    C = 0) are promoted into an FP32 accumulator as fma(sa*sb, p, acc) (DeepGEMM's order);
    a_scales / b_scales give one scale per chunk (default 1), and c is the accumulator's start.
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
    dp = resolve_datapath(model, formats.get_format(a_format).name,
                          formats.get_format(b_format).name, acc, path)
    if dp.output_rounding == "sr":
        raise ConfigError("explain does not trace stochastic output rounding yet")
    if dp.block_scale != "none" or dp.term_rounding == "sr":
        raise ConfigError("explain does not trace block scales or stochastic terms yet: use "
                          "tcsim.reference for their exact arithmetic")
    if dp.lowered_k is not None and promotion_interval is not None:
        raise ConfigError("explain does not trace a promoted GEMM of a lowered instruction "
                          "(lowered_k) yet: trace the instruction without promotion_interval")
    if dp.flush_nodes:      # inputs and C below their smallest normal are +0 (CDNA2)
        a = np.where(np.abs(a) < formats.get_format(a_format).min_normal, 0.0, a)
        b = np.where(np.abs(b) < formats.get_format(b_format).min_normal, 0.0, b)
        if abs(c) < formats.get_format(acc).min_normal:
            c = 0.0
    block_fn = _staged_block if dp.staged() else _block
    fa, fb, accf = (formats.get_format(x) for x in (a_format, b_format, acc))
    c32 = np.array([[c]], dtype=np.float32 if acc == "fp32" else np.float16)
    k = a.size
    chunk = promotion_interval or max(k, 1)
    n_chunks = max(1, -(-k // chunk))
    sa = np.ones(n_chunks) if a_scales is None else np.asarray(a_scales, np.float64)
    sb = np.ones(n_chunks) if b_scales is None else np.asarray(b_scales, np.float64)
    blocks, promos = [], []
    n = dp.block_size or max(k, 1)
    if promotion_interval is None:
        cur = Fraction(float(c32[0, 0]))
        if dp.lowered_k is not None:
            cur = _lowered_blocks(a, b, cur, dp, fa, fb, accf, block_fn, blocks)
        for k0 in range(0, k if dp.lowered_k is None else 0, n):
            blk = block_fn(a[k0:k0 + n], b[k0:k0 + n], cur, dp, fa, fb, accf, k0)
            blocks.append(blk)
            cur = blk.result
        result = float(cur)
        sim = mma(a[None], b[:, None], c32, model=dp, a_format=a_format, b_format=b_format,
                  acc=acc)[0, 0]
        exact = sum((Fraction(x) * Fraction(y) for x, y in zip(a, b)), Fraction(float(c32[0, 0])))
    else:
        acc32 = np.float32(c)
        exact = Fraction(float(acc32))
        for ci, k0 in enumerate(range(0, k, chunk)):
            cur = Fraction(0)
            for j0 in range(k0, min(k0 + chunk, k), n):
                j1 = min(j0 + n, k0 + chunk, k)
                blk = block_fn(a[j0:j1], b[j0:j1], cur, dp, fa, fb, accf, j0)
                blocks.append(blk)
                cur = blk.result
            s = np.float32(np.float32(sa[ci]) * np.float32(sb[ci]))
            before = acc32
            # FP32 FMA with one rounding: the float64 product of two fp32 values is exact and
            # the exact sum is rounded once (Fraction -> float -> float32 could double round,
            # so round the Fraction directly)
            acc32 = np.float32(_fp32(Fraction(float(s)) * cur + Fraction(float(acc32))))
            promos.append(Promotion(k0, min(k0 + chunk, k), float(cur), float(sa[ci]),
                                    float(sb[ci]), float(before), float(acc32)))
            exact += Fraction(float(s)) * sum((Fraction(x) * Fraction(y) for x, y in
                                               zip(a[k0:k0 + chunk], b[k0:k0 + chunk])),
                                              Fraction(0))
        result = float(acc32)
        sim = result   # the promotion arithmetic is traced here; the blocks checked below
        for blk in blocks:
            chk = mma(a[None, blk.k0:blk.k1], b[blk.k0:blk.k1, None],
                      np.array([[float(blk.c_in)]], np.float32), model=dp, a_format=a_format,
                      b_format=b_format, acc=acc)[0, 0]
            assert float(chk) == float(blk.result), "explain and the kernel disagree"
    if float(sim) != result and not (result == 0 and float(sim) == 0):
        raise AssertionError(f"explain traced {result!r} but tcsim.mma gives {float(sim)!r}")
    return Explanation(dp, fa.name, fb.name, acc, blocks, result, exact, promos)


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
    formats.check_representable(arr if wide else values, fmt, what=what)
    return values


def _fp32(q: Fraction) -> float:
    """Round an exact value to the nearest binary32 (ties to even)."""
    from .reference_gemm import fp32_round
    return fp32_round(q)


def deepseek_example():
    """A row where Hopper's 13-bit alignment swamps small products next to one large one:
    1 * 1 plus 31 products of 2^-7 * 2^-7 = 2^-14 (each below the 2^-13 grid of E = 0)."""
    a = [1.0] + [2.0 ** -7] * 31
    return np.array(a), np.array(a), 0.0
