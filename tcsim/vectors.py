"""Named, seeded test-vector suites: rows of (a, b, c) dot products, shared by the simulator's
tests, ``tcsim fit`` (directed probes) and gpu_validate.

A :class:`VectorSet` holds ``a`` and ``b`` as (rows, K) float64 values exactly representable in
their formats and ``c`` as (rows,) fp32 values; row i asks for D_i = sum_k a_ik * b_ik + c_i.
Suites: "probes" (the directed probes of HARDWARE.md section 5), "random-narrow" (exponents
within a few binades: carries and cancellation), "random-wide" (codes uniform over the format:
the whole exponent range), "specials" (NaN, Inf, saturation, subnormal products, exact
cancellation, signed zeros, C only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from . import formats
from .errors import ConfigError


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
        """Write an .npz gpu_validate can run (inputs and C as raw fp32 bits, plus metadata)."""
        path = Path(path)
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
    """The E4M3 probes of HARDWARE.md section 5 as (a, b, c, name); K is padded with zeros."""
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
            return formats.round_to_format(x, fmt, overflow="saturate")
        f = formats.get_format(fmt)
        if fmt == "tf32":
            codes = rng.integers(0, 1 << 19, size=shape, dtype=np.uint64) << 13
        else:
            codes = rng.integers(0, 1 << f.bits, size=shape, dtype=np.uint64)
        v = formats.decode(codes.astype(formats.code_dtype(fmt)), fmt)
        return np.where(np.isfinite(v), v, 0.0)

    if spread not in ("narrow", "wide"):
        raise ConfigError(f"spread must be 'narrow' or 'wide', got {spread!r}")
    a, b = draw(a_format, (rows, k)), draw(b_format, (rows, k))
    c = (rng.standard_normal(rows) * c_scale).astype(np.float32).astype(np.float64)
    return VectorSet(a_format, b_format, a, b, c, [f"random-{spread} {i}" for i in range(rows)],
                     f"random-{spread}", seed)


def specials(a_format: str, b_format: str, k: int = 32) -> VectorSet:
    """NaN, Inf, saturation, subnormal products, cancellation, signed zeros, C only."""
    fa, fb = formats.get_format(a_format), formats.get_format(b_format)
    big_a, big_b = fa.max_finite, fb.max_finite
    tiny_a, tiny_b = fa.min_subnormal, fb.min_subnormal
    rows = [
        ([tiny_a] * 4, [tiny_b] * 4, 0.0, "subnormal products"),
        ([1.0, -1.0], [1.0, 1.0], 0.0, "exact cancellation (+0 expected)"),
        ([-0.0], [1.0], -0.0, "all terms -0"),
        ([0.0], [0.0], 2.0 ** -130, "C only (subnormal fp32)"),
        ([big_a] * k, [big_b] * k, 0.0, "largest products, carries"),
        ([big_a, -big_a], [big_b, big_b], 1.0, "large cancellation leaving C"),
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
