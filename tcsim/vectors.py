"""Named, seeded test-vector suites: rows of (a, b, c) dot products, shared by the simulator's
tests, ``tcsim fit`` (directed probes) and gpu_validate.

A :class:`VectorSet` holds ``a`` and ``b`` as (rows, K) float64 values exactly representable in
their formats and ``c`` as (rows,) fp32 values; row i asks for D_i = sum_k a_ik * b_ik + c_i.
Suites: "probes" (the directed probes of docs/hardware.md#open-questions), "random-narrow"
(exponents within a few binades: carries and cancellation), "random-wide" (codes uniform over
the format: the whole exponent range), "specials" (NaN, Inf, saturation, subnormal products, exact
cancellation, signed zeros, C only).

:func:`unit_probes` holds the directed probes of the block-scaled and AMD units
(docs/hardware.md#blackwell-block-scaled, #amd-cdna), each with the result every disputed
variant predicts; :func:`save_unit_probes` writes them as npz for a runner on such hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import ConfigError
from .formats.catalog import code_dtype, get_format
from .formats.conversion import decode, round_to_format


@dataclass
class VectorSet:
    """Rows of dot-product inputs; ``names`` says what each row probes."""

    a_format: str
    b_format: str
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    names: list = field(default_factory=list)
    suite: str = ""
    seed: int = 0

    @property
    def rows(self) -> int:
        return self.a.shape[0]

    def save(self, path) -> Path:
        """Write an .npz gpu_validate can run (inputs and C as raw fp32 bits, plus metadata);
        returns the path written (np.savez appends ".npz" to a name without it)."""
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        np.savez(path, a_bits=self.a.astype(np.float32).view(np.uint32),
                 b_bits=self.b.astype(np.float32).view(np.uint32),
                 c_bits=self.c.astype(np.float32).view(np.uint32), names=np.array(self.names),
                 a_format=self.a_format, b_format=self.b_format, suite=self.suite,
                 seed=self.seed)
        return path


def _pad(rows: list[tuple[list, list, float, str]], k: int):
    a = np.zeros((len(rows), k))
    b = np.zeros((len(rows), k))
    for i, (ra, rb, _, _) in enumerate(rows):
        a[i, :len(ra)] = ra
        b[i, :len(rb)] = rb
    c = np.array([r[2] for r in rows], dtype=np.float64)
    return a, b, c, [r[3] for r in rows]


def directed_probes(k: int = 32) -> list[tuple[list, list, float, str]]:
    """The E4M3 probes of docs/hardware.md#open-questions as (a, b, c, name); K is padded with
    zeros."""
    p7 = 2.0 ** -7
    sixteen = [p7] * 16
    probes = [
        ([1, p7], [1, p7], 0.0, "13 fraction bits: 1 + 2^-14"),
        ([1.5, 2 ** -6, 2 ** -6], [1.5, p7, p7], 0.0, "unnormalised products"),
        (sixteen + [1.0], sixteen + [1.0], 0.0, "block size 32 vs 16"),
        ([0.0], [0.0], 1 + 2 ** -20, "C truncated without products"),
        ([1, p7], [1, -p7], 0.0, "sign-magnitude truncation"),
        ([1, 1, 3 * 2 ** -13 * 64], [1, 1, 2 ** -6], 0.0, "output RZ vs RNE"),
        ([1.875] * 32, [1.875] * 32, 0.0, "carry headroom"),
        # 2^-13 survives 13 fraction bits but not 12; two 2^-14 terms add up to 2^-13 only when
        # each keeps a 14th fraction bit (the probe above cannot tell 12, 13 and 14 apart: its
        # 1 + 2^-14 needs 15 significant bits in the output either way)
        ([1, 2 ** -6], [1, p7], 0.0, "fraction bits 12 vs 13: 1 + 2^-13"),
        ([1, p7, p7], [1, p7, p7], 0.0, "fraction bits 13 vs 14: 1 + 2 * 2^-14"),
        # FP8 mma.sync lowered onto two HMMA steps (k mod 4 in {0, 1} first, docs/hardware.md
        # #blackwell): 2^16 + 2^-8 is RZ-rounded to 2^16 in each fp32 step; one sum of all
        # products keeps 2^16 + 2^-7
        ([256, 2 ** -4, 2 ** -4], [256, 2 ** -4, 2 ** -4], 0.0,
         "two lowered HMMA steps vs one sum: 2^16 + 2 * 2^-8"),
    ]
    if k >= 33:
        probes.append((sixteen + [0.0] * 16 + [1.0], sixteen + [0.0] * 16 + [1.0], 0.0,
                       "block size 32 vs 64"))
    return [p for p in probes if len(p[0]) <= k]


def random_vectors(a_format: str, b_format: str, rows: int, k: int, spread: str = "narrow",
                   seed: int = 0, c_scale: float = 1.0) -> VectorSet:
    """Random rows: "narrow" (normal values, a few binades) or "wide" (uniform codes)."""
    rng = np.random.default_rng(seed)

    def draw(fmt, shape):
        if spread == "narrow":
            x = rng.standard_normal(shape) * 2.0 ** rng.integers(-2, 3, size=shape)
            return round_to_format(x, fmt, overflow="saturate")
        f = get_format(fmt)
        if fmt == "tf32":
            codes = rng.integers(0, 1 << 19, size=shape, dtype=np.uint64) << 13
        else:
            codes = rng.integers(0, 1 << f.bits, size=shape, dtype=np.uint64)
        v = decode(codes.astype(code_dtype(fmt)), fmt)
        return np.where(np.isfinite(v), v, 0.0)

    if spread not in ("narrow", "wide"):
        raise ConfigError(f"spread must be 'narrow' or 'wide', got {spread!r}")
    a, b = draw(a_format, (rows, k)), draw(b_format, (rows, k))
    c = (rng.standard_normal(rows) * c_scale).astype(np.float32).astype(np.float64)
    return VectorSet(a_format, b_format, a, b, c, [f"random-{spread} {i}" for i in range(rows)],
                     f"random-{spread}", seed)


def specials(a_format: str, b_format: str, k: int = 32) -> VectorSet:
    """NaN, Inf, saturation, subnormal products, cancellation, signed zeros, C only."""
    fa, fb = get_format(a_format), get_format(b_format)
    big_a, big_b = fa.max_finite, fb.max_finite
    tiny_a, tiny_b = fa.min_subnormal, fb.min_subnormal
    rows = [
        ([tiny_a] * 4, [tiny_b] * 4, 0.0, "subnormal products"),
        ([1.0, -1.0], [1.0, 1.0], 0.0, "exact cancellation (+0 expected)"),
        ([-0.0], [1.0], -0.0, "all terms -0"),
        ([0.0], [0.0], 2.0 ** -130, "C only (subnormal fp32)"),
        ([big_a] * k, [big_b] * k, 0.0, "largest products, carries"),
        ([big_a, -big_a], [big_b, big_b], 1.0, "large cancellation leaving C"),
        # docs/hardware.md#zero-operands: under MMA-Sim's convention 0 * big_b has exponent
        # -126 + e(big_b) and E pushes a C of 2^-132 off the grid (result +0); zeros that take
        # no part in E keep it (2^-132)
        ([0.0], [big_b], 2.0 ** -132, "zero operand exponent (MMA-Sim -126) beside C = 2^-132"),
    ]
    if fa.has_inf:
        rows.append(([np.inf], [1.0], 0.0, "Inf input"))
        rows.append(([np.inf, np.inf], [1.0, -1.0], 0.0, "Inf - Inf"))
        rows.append(([np.inf], [0.0], 0.0, "Inf * 0"))
    if fa.has_nan:
        rows.append(([np.nan], [1.0], 0.0, "NaN input"))
    a, b, c, names = _pad(rows, k)
    return VectorSet(a_format, b_format, a, b, c, names, "specials")


SUITES = ("probes", "random-narrow", "random-wide", "specials")


def suite(name: str, a_format: str = "e4m3", b_format: Optional[str] = None, k: int = 32,
          rows: int = 1000, seed: int = 0) -> VectorSet:
    """A named suite (see module docstring), deterministic for a given seed."""
    b_format = b_format or a_format
    if name == "probes":
        a, b, c, names = _pad(directed_probes(k), k)
        return VectorSet(a_format, b_format, a, b, c, names, "probes")
    if name in ("random-narrow", "random-wide"):
        return random_vectors(a_format, b_format, rows, k, name.split("-")[1], seed)
    if name == "specials":
        return specials(a_format, b_format, k)
    raise ConfigError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")


# ---- directed probes of the block-scaled and AMD units (docs/hardware.md#amd-cdna) -----------
@dataclass
class UnitProbe:
    """One directed probe of a matrix unit: a single output D = sum_k a_k b_k (* scales) + c.

    a, b: (K,) values in a_format / b_format; a_scale, b_scale: (K / block,) scales or None;
    expect: path name -> the documented result under that variant (the probe separates them);
        a key "path+field=value" is that path with one setting changed (a convention that
        hardware rows have not decided, e.g. "wmma+zero_operand_exponent=-126");
    source: where the expected results come from.
    """

    name: str
    model: str
    a_format: str
    b_format: str
    a: np.ndarray
    b: np.ndarray
    c: float
    expect: dict
    source: str
    a_scale: Optional[np.ndarray] = None
    b_scale: Optional[np.ndarray] = None
    scale_format: Optional[str] = None

    def save(self, folder) -> Path:
        """Write ``<folder>/<name>.npz``: inputs and C as fp32 bits, scales (fp32 bits, or
        empty), the expected result bits per path, and the model / formats / source, so that a
        runner for the hardware concerned (Blackwell, CDNA) can replay the probe."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.name}.npz"
        none = np.zeros(0, np.uint32)
        np.savez(path, a_bits=self.a.astype(np.float32).view(np.uint32),
                 b_bits=self.b.astype(np.float32).view(np.uint32),
                 c_bits=np.float32(self.c).reshape(1).view(np.uint32),
                 a_scale_bits=none if self.a_scale is None
                 else self.a_scale.astype(np.float32).view(np.uint32),
                 b_scale_bits=none if self.b_scale is None
                 else self.b_scale.astype(np.float32).view(np.uint32),
                 scale_format=self.scale_format or "", model=self.model,
                 a_format=self.a_format, b_format=self.b_format, source=self.source,
                 expect_paths=np.array(list(self.expect)),
                 expect_bits=np.array([np.float32(v).view(np.uint32)
                                       for v in self.expect.values()], dtype=np.uint32))
        return path

    def datapath(self, key: str):
        """The datapath an ``expect`` key names: a path of the model, or "path+field=value"."""
        from .presets import load_model
        path, _, change = key.partition("+")
        dp = load_model(self.model).find_path(self.a_format, self.b_format, "fp32",
                                              path=path, scaled=self.a_scale is not None)
        dp = dp.datapath()
        if change:
            field, _, value = change.partition("=")
            dp = dp.replace(**{field: int(value) if value.lstrip("-").isdigit() else value})
        return dp

    def run(self, path: str) -> float:
        """The simulated result of this probe on ``path`` (an ``expect`` key) of its model (a
        Python float)."""
        from .mma import mma
        kw = {}
        if self.a_scale is not None:
            kw = dict(a_scale=self.a_scale[None, :], b_scale=self.b_scale[:, None],
                      scale_format=self.scale_format)
        d = mma(self.a[None, :], self.b[:, None], np.array([[self.c]], np.float32),
                model=self.datapath(path), a_format=self.a_format, b_format=self.b_format,
                **kw)
        return float(d[0, 0])


def unit_probes() -> list[UnitProbe]:
    """The worked probes of docs/hardware.md (and hand-derived ones that separate the disputed
    variants), with the result each variant gives."""
    out = []
    # s1: 35 vs 25 fraction bits on the k64 FP4 path: scale_A = [2^0, 2^-35], scale_B = [1, 1],
    # a0 = -1, b0 = 1, a32 = b32 = 1, C = 1: the exact sum 2^-35 survives 35 bits only.
    a = np.zeros(64)
    b = np.zeros(64)
    a[0], b[0], a[32], b[32] = -1.0, 1.0, 1.0, 1.0
    for path35, path25 in (("mxf4", "mxf4-25bits"), ("mxf4nvf4", "mxf4nvf4-25bits")):
        out.append(UnitProbe(
            f"b200-{path35}-35-vs-25-bits", "b200", "e2m1", "e2m1", a.copy(), b.copy(), 1.0,
            {path35: 2.0 ** -35, path25: 0.0},
            "docs/hardware.md#blackwell-block-scaled (disputed accumulator width)",
            np.array([1.0, 2.0 ** -35]), np.array([1.0, 1.0]), "ue8m0"))
    # s3: zero operands: an all-zero A row with scale 2^40, scale_B 1, C = 1.5 on the k64 path
    for path, drop in (("mxf4", "mxf4-dropzero"), ("mxf4nvf4", "mxf4nvf4-dropzero")):
        out.append(UnitProbe(
            f"b200-{path}-zero-operand", "b200", "e2m1", "e2m1", np.zeros(64), np.ones(64), 1.5,
            {path: 0.0, drop: 1.5},
            "docs/hardware.md#zero-operands (MMA-Sim vs Khattak-Mikaitis zeros)",
            np.array([2.0 ** 40, 2.0 ** 40]), np.array([1.0, 1.0]), "ue8m0"))
    # s1 step 1: the k32 scales move the products relative to C: a0*b0 = 1 scaled by 2^30 swamps
    # C = 1 below 25 bits (2^30 + 1 needs 31 bits: RZ keeps 2^30); unscaled, 2 is exact.
    a = np.zeros(32)
    b = np.zeros(32)
    a[0] = b[0] = 1.0
    out.append(UnitProbe(
        "b200-mxf8f6f4-scale-moves-products", "b200", "e4m3", "e4m3", a, b, 1.0,
        {"mxf8f6f4": 2.0 ** 30},
        "docs/hardware.md#blackwell-block-scaled (k32: E over scaled products and C)",
        np.array([2.0 ** 30]), np.array([1.0]), "ue8m0"))
    # B200 FP8 mma.sync, fp32 output (docs/hardware.md#blackwell): the corpus rows cannot tell
    # two HMMA steps in k-mod-4 order (the lowering the fp16-output rows pin) from one exact sum
    # of the 32 products before the add of C. Products 2^16 (k = 0), 2^-8 (k = 1, first step)
    # and 2^-8 (k = 2, second step), C = 0: each step's 2^16 + 2^-8 is RZ-rounded to 2^16 in
    # fp32 (ulp 2^-7 there), while one sum keeps 2^16 + 2^-7, an fp32 value (tcgen05 does).
    a = np.zeros(32)
    b = np.zeros(32)
    a[0] = b[0] = 256.0
    a[1] = b[1] = a[2] = b[2] = 2.0 ** -4
    out.append(UnitProbe(
        "b200-mma-sync-two-hmma-steps", "b200", "e4m3", "e4m3", a, b, 0.0,
        {"mma.sync": 2.0 ** 16, "tcgen05": 2.0 ** 16 + 2.0 ** -7},
        "docs/hardware.md#blackwell (FP8 mma.sync lowered onto two HMMA steps vs one sum)"))
    # s4 CDNA1: pairwise fp32 tree vs exact group sum: p = [2048, 2^-13, -2048, 0];
    # fl32(2048 + 2^-13) is a tie and rounds to 2048, so the tree gives +0, the exact sum 2^-13
    out.append(UnitProbe(
        "mi100-pairwise-vs-exact", "mi100", "fp16", "fp16",
        np.array([2048.0, 1.0, -2048.0, 0.0]), np.array([1.0, 2.0 ** -13, 1.0, 0.0]), 0.0,
        {"mfma": 0.0, "mfma-km": 2.0 ** -13}, "docs/hardware.md#amd-cdna (CDNA1 disagreement)"))
    # s4 CDNA2: flush at every node: a bf16 product 2^-140 is an fp32 subnormal; CDNA2 flushes it
    out.append(UnitProbe(
        "mi250-product-flush", "mi250", "bf16", "bf16", np.array([2.0 ** -70, 0.0, 0.0, 0.0]),
        np.array([2.0 ** -70, 0.0, 0.0, 0.0]), 0.0, {"mfma": 0.0},
        "docs/hardware.md#amd-cdna (CDNA2 FTZ everywhere)"))
    out.append(UnitProbe(
        "mi100-product-subnormal-kept", "mi100", "bf16", "bf16", np.array([2.0 ** -70, 0.0]),
        np.array([2.0 ** -70, 0.0]), 0.0, {"mfma": 2.0 ** -140},
        "docs/hardware.md#amd-cdna (CDNA1 keeps fp32 subnormals)"))
    # s4 CDNA3: C rounded down to 24 bits below E': C = -2^-30 under a product 1 becomes
    # -2^-24 (fp16 path: 1 - 2^-24 after RNE); the FP8 path drops a C more than 25 below E' (1)
    a = np.zeros(8)
    b = np.zeros(8)
    a[0] = b[0] = 1.0
    out.append(UnitProbe(
        "mi300-c-rounded-down", "mi300", "fp16", "fp16", a, b, -(2.0 ** -30),
        {"mfma": 1.0 - 2.0 ** -24}, "docs/hardware.md#amd-cdna (CDNA3 asymmetric join)"))
    a = np.zeros(16)
    b = np.zeros(16)
    a[0] = b[0] = 1.0
    out.append(UnitProbe(
        "mi300-fp8-c-dropped", "mi300", "e4m3fnuz", "e4m3fnuz", a, b, -(2.0 ** -30),
        {"mfma": 1.0}, "docs/hardware.md#amd-cdna (CDNA3 FP8: C below the window is dropped)"))
    # s4 CDNA3 FP8: lanes fused separately: even lane 1 (k=0) and odd lane -2^-30 (k=1): the odd
    # lane is rounded down to 24 bits below the even one's exponent: 1 - 2^-24 after the join
    a = np.zeros(16)
    b = np.zeros(16)
    a[0], b[0], a[1], b[1] = 1.0, 1.0, -(2.0 ** -15), 2.0 ** -15
    out.append(UnitProbe(
        "mi300-fp8-odd-lane-floored", "mi300", "e5m2fnuz", "e5m2fnuz", a, b, 0.0,
        {"mfma": 1.0 - 2.0 ** -24}, "docs/hardware.md#amd-cdna (CDNA3 FP8 even/odd fusion)"))
    out.extend(_conflict_probes())
    out.extend(_corner_probes())
    return out


def _conflict_probes() -> list[UnitProbe]:
    """Probes where published hardware measurements disagree with each other or with the model
    (docs/hardware.md#conflicting-evidence)."""
    out = []
    # CDNA2: FTTN measured different answers on MI250X and MI100, yet the mi250 model (MMA-Sim's
    # CDNA2) is the mi100 tree plus flushing, i.e. the same on normal inputs. One 16x16x16 fp16
    # MFMA, C = 2^20, products -2^-5, -2^-6, -2^-5, -2^-6 at k = 0..3: the tree sums the group
    # exactly to -3 * 2^-5, and 2^20 - 3 * 2^-5 is a tie between 2^20 - 2^-4 and 2^20 - 2^-3
    # (the fp32 spacing below 2^20 is 2^-4): RNE picks the even 2^20 - 2^-3. A chain rounding
    # after every product (block size 1) ties at 2^20 - 2^-5 and returns to 2^20 each time.
    a = np.zeros(16)
    b = np.zeros(16)
    a[:4] = [-(2.0 ** -5), -(2.0 ** -6), -(2.0 ** -5), -(2.0 ** -6)]
    b[:4] = 1.0
    out.append(UnitProbe(
        "mi250-tree-vs-product-chain", "mi250", "fp16", "fp16", a, b, 2.0 ** 20,
        {"mfma": 2.0 ** 20 - 2.0 ** -3, "mfma+block_size=1": 2.0 ** 20},
        "docs/hardware.md#conflicting-evidence (FTTN: MI250X and MI100 differ; the model: equal)"))
    # Hopper FP8 with A = B = 0: SageAttention2's FP22 accumulator clears the low 10 mantissa
    # bits of C (measured with wgmma, where the model agrees: C is cut to 13 bits below its own
    # exponent, then RZ to 14 bits); the lowered mma.sync adds C after two HMMA steps from zero,
    # so C comes back whole. C = 1 + 2^-13 + (2^10 - 1) 2^-23: bit 10 set, bits 0-9 set.
    c = 1.0 + 2.0 ** -13 + (2 ** 10 - 1) * 2.0 ** -23
    out.append(UnitProbe(
        "h100-fp8-c-low-bits-without-products", "h100", "e4m3", "e4m3", np.zeros(32),
        np.zeros(32), c, {"wgmma": 1.0 + 2.0 ** -13, "mma.sync": c},
        "docs/hardware.md#conflicting-evidence (SageAttention2: low 10 bits of C cleared)"))
    return out


def _corner_probes() -> list[UnitProbe]:
    """Corners where the NVIDIA presets rest on hardware rows that never reach them, and MMA-Sim
    (c785138) takes another convention (docs/hardware.md#zero-operands, #exponent-clamp,
    #special-values). Each probe gives the preset's result and MMA-Sim's; bf16, K = 8."""
    out = []

    def row(pairs):
        a, b = np.zeros(8), np.zeros(8)
        for k, (x, y) in enumerate(pairs):
            a[k], b[k] = x, y
        return a, b

    for model in ("a100", "ada", "h100", "b200"):
        # zero operands: 0 * 2^127 has exponent -126 + 127 = 1 under MMA-Sim, so E = 1 and
        # C = 2^-100 falls below the grid 2^(1 - f) (result +0); dropped zeros leave C alone
        a, b = row([(0.0, 2.0 ** 127)])
        out.append(UnitProbe(
            f"{model}-zero-operand-exponent", model, "bf16", "bf16", a, b, 2.0 ** -100,
            {"wmma": 2.0 ** -100, "wmma+zero_operand_exponent=-126": 0.0},
            "docs/hardware.md#zero-operands (Khattak-Mikaitis: no part in E; MMA-Sim: -126)"))
        # the floor of E: products 2^-140 and -2^-155, C = 0. The preset's E (-140, clamped at
        # -132 / -133) keeps -2^-155 on its grid (2^-156 / 2^-158): fp32 RZ gives
        # 2^-140 - 2^-149; E floored at -126 (grid 2^-150 / 2^-151) drops it: 2^-140
        a, b = row([(2.0 ** -70, 2.0 ** -70), (-(2.0 ** -77), 2.0 ** -78)])
        out.append(UnitProbe(
            f"{model}-exponent-floor", model, "bf16", "bf16", a, b, 0.0,
            {"wmma": 2.0 ** -140 - 2.0 ** -149, "wmma+min_exp_limit=-126": 2.0 ** -140},
            "docs/hardware.md#exponent-clamp (MMA-Sim pins a zero C at -126: E >= -126)"))
        # a truncated result beyond fp32: 2^127 * 2 = 2^128; RZ saturates to the largest
        # finite value, MMA-Sim's float32 conversion gives Inf
        a, b = row([(2.0 ** 127, 2.0)])
        out.append(UnitProbe(
            f"{model}-overflow-rz", model, "bf16", "bf16", a, b, 0.0,
            {"wmma": float(np.finfo(np.float32).max), "wmma+overflow=inf": float("inf")},
            "docs/hardware.md#special-values (RZ overflow: largest finite vs Inf)"))
        # a negative sum that rounds to zero: -2^-75 * 2^-75 = -2^-150 is below fp32's
        # smallest subnormal; RZ keeps the sign (-0), MMA-Sim's integer rebuild gives +0
        a, b = row([(-(2.0 ** -75), 2.0 ** -75)])
        out.append(UnitProbe(
            f"{model}-underflow-sign", model, "bf16", "bf16", a, b, 0.0,
            {"wmma": -0.0, "wmma+zero_sign=unsigned": 0.0},
            "docs/hardware.md#special-values (sign of a result that underflows to zero)"))
    # V100 has no bf16: zero operands with fp16, 0 * 2^15 (exponent -111) against C = 2^-140
    # (a subnormal at exponent -126): the grid 2^(-111 - 23) drops C under MMA-Sim's convention
    a, b = np.zeros(4), np.zeros(4)
    b[0] = 2.0 ** 15
    out.append(UnitProbe(
        "v100-zero-operand-exponent", "v100", "fp16", "fp16", a, b, 2.0 ** -140,
        {"wmma": 2.0 ** -140, "wmma+zero_operand_exponent=-126": 0.0},
        "docs/hardware.md#zero-operands (Khattak-Mikaitis: no part in E; MMA-Sim: -126)"))
    return out


def save_unit_probes(folder) -> list[Path]:
    """Write every probe of :func:`unit_probes` under ``folder`` (see :meth:`UnitProbe.save`)."""
    return [p.save(folder) for p in unit_probes()]
