"""Input suites for the GPU runner: what to feed the matrix unit, as raw fp32 bits.

Standard library and numpy at module level (the runner imports this on the GPU machine, which
has no pydantic); :func:`build_suites` / :func:`write_suites` import ``tcsim`` inside and run on
a CPU.

Input file: ``<out_dir>/<suite>__<a_format>x<b_format>.npz`` (:func:`input_filename`), written
by :func:`write_suites`, read by :func:`load_inputs`, holding
``a_bits``, ``b_bits`` (rows, K) uint32 fp32 bits of values exact in a_format / b_format;
``c_bits`` (rows,) uint32 fp32 bits of C (the runner rounds it to fp16 RNE for an fp16
accumulator, and records the fp32 value); ``names`` (rows,) str; and 0-d strings ``a_format``,
``b_format``, ``suite``, ``seed``. K is a multiple of 32 (whole k32 instructions).

Suites, for each format pair of :data:`FORMAT_PAIRS`:
  "probes"         the directed probes of docs/hardware.md#open-questions (K = 32; values a
                   format cannot hold, e.g. 1.875 in e5m2, are rounded toward zero and the
                   row name says so)
  "random-narrow"  random normal values within a few binades (carries, cancellation)
  "random-wide"    random codes over the whole format (every exponent, subnormals)
  "specials"       NaN, Inf, saturation, subnormal products, cancellation, signed zeros
  "long-chains"    K = 128, a chain of 4 k32 instructions: the directed probes at K = 128
                   (including "block size 32 vs 64") then random narrow rows
  "c-only"         A = B = 0 and C with many low mantissa bits set (1 + 2^-20, ...),
                   subnormal, negative, huge and special C, then random C
Random rows are seeded per (suite, format pair) from ``seed`` with
``numpy.random.SeedSequence([seed, suite index, pair index])``: the same seed gives
byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .records import (
    bits_to_values,
    check_bits,
    find_records,
    read_npz,
    representable,
    values_to_bits,
    write_npz,
)

FORMAT_PAIRS = (("e4m3", "e4m3"), ("e4m3", "e5m2"), ("e5m2", "e4m3"), ("e5m2", "e5m2"))
BASE_SUITES = ("probes", "random-narrow", "random-wide", "specials")
SUITES = BASE_SUITES + ("long-chains", "c-only")
LONG_K = 128
DEFAULT_ROWS = 512


@dataclass
class SuiteInputs:
    """One input file: rows of (a, b, c) as fp32 bits, ready for a kernel."""

    suite: str
    a_format: str
    b_format: str
    a_bits: np.ndarray
    b_bits: np.ndarray
    c_bits: np.ndarray
    names: list = field(default_factory=list)
    seed: int = 0
    path: Optional[Path] = None

    @property
    def rows(self) -> int:
        return int(self.a_bits.shape[0])

    @property
    def k(self) -> int:
        return int(self.a_bits.shape[1])

    def arrays(self) -> dict:
        return {"a_bits": self.a_bits, "b_bits": self.b_bits, "c_bits": self.c_bits,
                "names": np.array(self.names), "a_format": np.array(self.a_format),
                "b_format": np.array(self.b_format), "suite": np.array(self.suite),
                "seed": np.array(str(self.seed))}


def input_filename(suite: str, a_format: str, b_format: str) -> str:
    return f"{suite}__{a_format}x{b_format}.npz"


def save_inputs(path: Union[str, Path], inputs: SuiteInputs) -> Path:
    """Write one input file (reproducible bytes)."""
    return write_npz(path, inputs.arrays())


def load_inputs(path: Union[str, Path]) -> SuiteInputs:
    """Read one input file written by :func:`write_suites` (checks shapes and formats)."""
    path = Path(path)
    z = read_npz(path)
    need = ("a_bits", "b_bits", "c_bits", "names", "a_format", "b_format", "suite", "seed")
    missing = [k for k in need if k not in z]
    if missing:
        raise ValueError(f"{path}: not a suite input file (missing {', '.join(missing)})")
    a = check_bits("a_bits", z["a_bits"], 2)
    b = check_bits("b_bits", z["b_bits"], 2)
    c = check_bits("c_bits", z["c_bits"], 1)
    if a.shape != b.shape or c.shape != (a.shape[0],) or len(z["names"]) != a.shape[0]:
        raise ValueError(f"{path}: inconsistent shapes a {a.shape}, b {b.shape}, c {c.shape}, "
                         f"names {z['names'].shape}")
    fa, fb = str(z["a_format"]), str(z["b_format"])
    for key, bits, fmt in (("a_bits", a, fa), ("b_bits", b, fb)):
        if not representable(bits_to_values(bits), fmt).all():
            raise ValueError(f"{path}: {key} holds values not representable in {fmt}")
    return SuiteInputs(str(z["suite"]), fa, fb, a, b, c, [str(n) for n in z["names"]],
                       int(str(z["seed"])), path)


def find_inputs(folder: Union[str, Path], suite: Optional[str] = None) -> list:
    """Input files under ``folder`` (sorted), optionally only those of one suite."""
    files = find_records(folder)
    if suite is not None:
        files = [f for f in files if f.name.split("__")[0] == suite]
    return files


# ---- building the suites (CPU, imports tcsim) -------------------------------------------------

def _seed(seed: int, suite: str, pair: tuple) -> int:
    ss = np.random.SeedSequence([int(seed), SUITES.index(suite), FORMAT_PAIRS.index(tuple(pair))
                                 if tuple(pair) in FORMAT_PAIRS else 99])
    return int(ss.generate_state(1)[0])


def _fit_to_formats(a, b, names, a_format, b_format):
    """Round values a format cannot hold toward zero (e.g. the probes' 1.875 in e5m2)."""
    from tcsim.formats.conversion import is_representable, round_to_format

    names = list(names)
    out = []
    for vals, fmt in ((a, a_format), (b, b_format)):
        bad = ~is_representable(vals, fmt)
        if bad.any():
            vals = np.where(bad, round_to_format(vals, fmt, rounding="rz"), vals)
            for i in np.flatnonzero(bad.any(axis=1)):
                if "rounded" not in names[i]:
                    names[i] += f" [values rounded toward zero to fit {a_format} x {b_format}]"
        out.append(vals)
    return out[0], out[1], names


def _probes(a_format, b_format, k):
    from tcsim import vectors

    vs = vectors.suite("probes", a_format, b_format, k=k)
    a, b, names = _fit_to_formats(vs.a, vs.b, vs.names, a_format, b_format)
    return a, b, vs.c, names


def c_only_values(rng: np.random.Generator, n_random: int = 32) -> tuple:
    """C values for the c-only suite: (fp32 values as float64, names)."""
    f32 = np.finfo(np.float32)
    fixed = [
        (1 + 2.0 ** -20, "C = 1 + 2^-20 (open question: truncated to 1 on H100?)"),
        # SageAttention2 reports the low 10 mantissa bits of C cleared on Hopper (wgmma); the
        # lowered FP8 mma.sync model adds C after two HMMA steps from zero and keeps them
        # (docs/hardware.md#conflicting-evidence): bit 10 and bits 0-9 set tell the two apart
        (1 + 2.0 ** -13 + (2 ** 10 - 1) * 2.0 ** -23,
         "C = 1 + 2^-13 + (2^10 - 1) 2^-23 (low 10 bits set: cleared by wgmma, kept by the "
         "lowered mma.sync?)"),
        (1 + 2.0 ** -23, "C = 1 + 2^-23 (last fp32 bit)"),
        (1 + 2.0 ** -10, "C = 1 + 2^-10"),
        (1 + 2.0 ** -11, "C = 1 + 2^-11"),
        (1 + 2.0 ** -13, "C = 1 + 2^-13 (14th significant bit)"),
        (1 + 2.0 ** -14, "C = 1 + 2^-14 (15th significant bit)"),
        (1 + 2.0 ** -10 + 2.0 ** -20, "C = 1 + 2^-10 + 2^-20"),
        (2 - 2.0 ** -23, "C = 2 - 2^-23 (all mantissa bits set)"),
        (-(1 + 2.0 ** -20), "C = -(1 + 2^-20) (sign-magnitude vs floor)"),
        (-(2 - 2.0 ** -23), "C = -(2 - 2^-23)"),
        (1.0, "C = 1"),
        (0.0, "C = +0"),
        (-0.0, "C = -0"),
        (2.0 ** -126, "C = 2^-126 (min normal fp32)"),
        (2.0 ** -126 * (1 + 2.0 ** -20), "C = 2^-126 (1 + 2^-20)"),
        (2.0 ** -130, "C = 2^-130 (subnormal fp32)"),
        (2.0 ** -127 + 2.0 ** -149, "C = 2^-127 + 2^-149 (subnormal, low bit set)"),
        (-(2.0 ** -149), "C = -2^-149 (smallest negative subnormal)"),
        (2.0 ** -24 * (1 + 2.0 ** -10), "C = 2^-24 (1 + 2^-10) (fp16 subnormal range)"),
        (65504.0, "C = 65504 (fp16 max)"),
        (65520.0, "C = 65520 (rounds to Inf in fp16)"),
        (2.0 ** 100 * (1 + 2.0 ** -23), "C = 2^100 (1 + 2^-23)"),
        (float(f32.max), "C = fp32 max"),
        (-float(f32.max), "C = -fp32 max"),
        (np.inf, "C = +Inf"),
        (-np.inf, "C = -Inf"),
        (np.nan, "C = NaN"),
    ]
    vals = [v for v, _ in fixed]
    names = [n for _, n in fixed]
    # random fp32 values with every mantissa bit random, exponents within 2^-20 .. 2^20
    mant = rng.integers(0, 1 << 23, size=n_random, dtype=np.uint64)
    exp = rng.integers(127 - 20, 127 + 21, size=n_random, dtype=np.uint64)
    sign = rng.integers(0, 2, size=n_random, dtype=np.uint64)
    bits = ((sign << 31) | (exp << 23) | mant).astype(np.uint32)
    vals += list(bits.view(np.float32).astype(np.float64))
    names += [f"C random {i}" for i in range(n_random)]
    return np.array(vals, dtype=np.float64), names


def build_suite(name: str, a_format: str, b_format: str, k: int = 32,
                rows: int = DEFAULT_ROWS, seed: int = 0) -> SuiteInputs:
    """One suite for one format pair (see the module docstring)."""
    from tcsim import vectors

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    if k % 32:
        raise ValueError(f"K must be a multiple of 32 (whole k32 instructions), got {k}")
    s = _seed(seed, name, (a_format, b_format))
    if name == "probes":
        a, b, c, names = _probes(a_format, b_format, k)
    elif name in ("random-narrow", "random-wide"):
        vs = vectors.suite(name, a_format, b_format, k=k, rows=rows, seed=s)
        a, b, c, names = vs.a, vs.b, vs.c, vs.names
    elif name == "specials":
        vs = vectors.suite("specials", a_format, b_format, k=k)
        a, b, c, names = vs.a, vs.b, vs.c, vs.names
    elif name == "long-chains":
        pa, pb, pc, pn = _probes(a_format, b_format, LONG_K)
        vs = vectors.random_vectors(a_format, b_format, rows, LONG_K, "narrow", s)
        a, b = np.concatenate([pa, vs.a]), np.concatenate([pb, vs.b])
        c = np.concatenate([pc, vs.c])
        names = [f"probe K=128: {n}" for n in pn] + [f"chain of 4 k32, {n}" for n in vs.names]
    else:  # c-only
        c, names = c_only_values(np.random.default_rng(s))
        a = np.zeros((len(c), k))
        b = np.zeros((len(c), k))
    return SuiteInputs(name, a_format, b_format, values_to_bits(a), values_to_bits(b),
                       values_to_bits(np.asarray(c, dtype=np.float64)), list(names), int(seed))


def build_suites(k: int = 32, rows: int = DEFAULT_ROWS, seed: int = 0,
                 suites=SUITES, pairs=FORMAT_PAIRS) -> list:
    """Every suite x format pair, in a fixed order."""
    return [build_suite(name, fa, fb, k=k, rows=rows, seed=seed)
            for name in suites for fa, fb in pairs]


def write_suites(out_dir: Union[str, Path], k: int = 32, rows: int = DEFAULT_ROWS,
                 seed: int = 0) -> list:
    """Write every suite input file into ``out_dir``; returns the paths (sorted)."""
    out_dir = Path(out_dir)
    paths = [save_inputs(out_dir / input_filename(s.suite, s.a_format, s.b_format), s)
             for s in build_suites(k=k, rows=rows, seed=seed)]
    return sorted(paths)
