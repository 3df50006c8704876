"""``tcsim fit``: identify a datapath from recorded hardware outputs.

Given rows of (a, b, c, d) recorded on a GPU, find every block-FMA configuration that reproduces
all rows bit for bit. Pruning instead of blind enumeration:

1. What the data say directly: the accumulator format (fp32 or fp16 results), the output
   precision (no fp32 result uses more significant bits than the datapath keeps: 14 for FP8 on
   Ada/Hopper), and an upper bound on the block size worth trying (a block of n >= K is one block:
   all such n are one candidate, reported as "n >= K").
2. Stages: every remaining combination (block size, fraction bits, term rounding, product
   alignment, C placement, output rounding) is first run on a few rows and dropped at its first
   mismatching batch; survivors run on more rows, then on all of them.
3. Audit: a parameter is pinned only when the rows leave one value of several the search could
   show. Not pinned: the consistent configurations disagree (ambiguities); the rows only bound
   it (n = K stands for every n >= K; fraction bits and output precision are tried beyond the
   searched range); it could not be tried (a k32 lowering on rows of other K); a mode tried on
   a consistent configuration (subnormals, overflow, zero sign, ...) that no row decides.
4. Report: the consistent configurations, each parameter not pinned with a directed probe
   (from tcsim.vectors' rows) that would pin it, and a preset TOML file whose notes say which
   values are pinned, bounded or not fitted (docs/fit.md). When nothing fits: the best
   candidates, their mismatch counts and the first mismatching rows.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from . import corpus, vectors
from .datapath import Datapath
from .errors import CorpusError, FormatError
from .formats.catalog import get_format
from .formats.conversion import check_representable, round_to_format
from .gpu_model import OUTPUT_FORMATS
from .lowering import HOPPER_FP8_MMA_SYNC_K_ORDER
from .npzfile import read_npz
from .recorded_rows import c_in_accumulator, rows_to_bits
from .route import FLOAT64_SUM_BITS

SEARCHED = ("block_size", "fraction_bits", "term_rounding", "product_alignment", "c_placement",
            "output_rounding", "lowered_k")
# Fields tried on a consistent configuration once the searched ones are fitted: each value either
# reproduces every row too (the rows do not exercise it) or is ruled out.
EXTENDED = {
    "min_exp_limit": (None, -19, -20, -21, -126, -130, -132, -133, -140),
    "subnormal_inputs": ("keep", "flush"),
    "subnormal_outputs": ("keep", "flush"),
    "zero_sign": ("plus", "ieee"),
    "overflow": ("ieee", "inf", "saturate"),
}
# Tried on a consistent configuration whose C joins after the product sum (c_placement "after"),
# the first value being the one the search uses: the rows may not reach the sum's rounding.
AFTER_MODES = {
    "product_sum_precision": (24, 11, 16, 22, 23, 25, 26, 28, 32, 48),
    "product_sum_rounding": ("rz", "rne"),
}
# Tried where the products are unnormalized (the only alignment it is defined for): does a zero
# operand take part in choosing E (MMA-Sim's -126) or not (None, Khattak-Mikaitis)?
ZERO_OPERAND_MODE = {"zero_operand_exponent": (None, -126)}
FRACTION_BITS = tuple(range(6, 35))
STAGES = (16, 256)          # rows in the early-rejection stages, then all rows
PROBE_RIVALS = 24           # rival configurations tried per ambiguous field when seeking a probe


@dataclass
class RecordSet:
    """Rows of one recorded output: D = sum_k a_k * b_k + c in the acc format."""

    name: str
    a_format: str
    b_format: str
    acc: str
    a: np.ndarray              # (rows, K)
    b: np.ndarray              # (rows, K)
    c: np.ndarray              # (rows,) as the hardware used it (in the acc format)
    d_bits: np.ndarray         # (rows,) uint32: fp32 bits (fp16 results widened to fp32)

    @property
    def rows(self) -> int:
        return self.a.shape[0]

    @property
    def k(self) -> int:
        return self.a.shape[1]


def load_records(paths: Iterable) -> list[RecordSet]:
    """Record sets from Khattak-Mikaitis corpus folders and/or tcsim .npz records.

    An .npz record holds a_bits, b_bits (rows, K) and c_bits, d_bits (rows,) as uint32 fp32
    patterns, plus a_format, b_format and acc.
    """
    out = []
    for p in paths:
        p = Path(p)
        if p.suffix == ".npz":
            out.append(read_npz_record(p))
            continue
        for folder in corpus.find_sets(p):
            cs = corpus.read_set(folder)
            for acc, bits in cs.d_bits.items():
                c = cs.c_used(acc)
                out.append(RecordSet(f"{cs.gpu}/{folder.name}->{acc}", cs.fmt, cs.fmt, acc, cs.a,
                                     cs.b, c, bits))
    if not out:
        raise CorpusError("no records found")
    return out


NPZ_ARRAYS = ("a_bits", "b_bits", "c_bits", "d_bits")
NPZ_NAMES = ("a_format", "b_format", "acc")


def read_npz_record(path) -> RecordSet:
    """One .npz record (see :func:`load_records`), checked: CorpusError naming the file and
    what is wrong (unreadable, pickled, a missing array, a wrong dtype or shape, a value its
    format does not hold)."""
    path = Path(path)
    z = read_npz(path, CorpusError, ".npz record")
    missing = [k for k in NPZ_ARRAYS + NPZ_NAMES if k not in z]
    if missing:
        raise CorpusError(f"{path}: missing {', '.join(missing)} (a record holds "
                          f"{', '.join(NPZ_ARRAYS + NPZ_NAMES)})")
    for key, ndim in (("a_bits", 2), ("b_bits", 2), ("c_bits", 1), ("d_bits", 1)):
        if z[key].dtype != np.uint32 or z[key].ndim != ndim:
            raise CorpusError(f"{path}: {key} must be a {ndim}-D uint32 array of fp32 bit "
                              f"patterns, got {z[key].dtype} of shape {z[key].shape}")
    names = {}
    for key in NPZ_NAMES:
        if z[key].ndim != 0 or z[key].dtype.kind != "U":
            raise CorpusError(f"{path}: {key} must be one string, got {z[key].dtype} of shape "
                              f"{z[key].shape}")
        names[key] = str(z[key])
    if names["acc"] not in OUTPUT_FORMATS:
        raise CorpusError(f"{path}: acc must be one of {', '.join(OUTPUT_FORMATS)}, got "
                          f"{names['acc']!r}")
    a, b = z["a_bits"], z["b_bits"]
    rows = a.shape[0]
    if a.shape != b.shape or 0 in a.shape:
        raise CorpusError(f"{path}: a_bits {a.shape} and b_bits {b.shape} must have one shape "
                          f"(rows, K) with rows, K >= 1")
    for key in ("c_bits", "d_bits"):
        if z[key].shape != (rows,):
            raise CorpusError(f"{path}: {key} has shape {z[key].shape}, expected ({rows},)")
    av, bv = (x.view(np.float32).astype(np.float64) for x in (a, b))
    try:
        check_representable(av, names["a_format"], what="a_bits")
        check_representable(bv, names["b_format"], what="b_bits")
    except FormatError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    c = c_in_accumulator(z["c_bits"].view(np.float32), names["acc"])
    return RecordSet(path.stem, get_format(names["a_format"]).name,
                     get_format(names["b_format"]).name, names["acc"], av, bv, c,
                     z["d_bits"])


def output_precision_from_data(rs: RecordSet) -> int:
    """The most significant bits any normal, finite result uses (a lower bound on the datapath's
    output precision; the data never show more)."""
    if rs.acc == "fp16":
        return get_format("fp16").precision
    bits = rs.d_bits
    exp = (bits >> 23) & 0xFF
    normal = (exp > 0) & (exp < 255)
    sig = (bits[normal] & 0x7FFFFF) | 0x800000
    if sig.size == 0:
        return 24
    tz = np.zeros(sig.shape, dtype=np.int64)
    s = sig.astype(np.int64)
    for _ in range(24):                       # trailing zero bits of each 24-bit significand
        z = (s & 1) == 0
        tz += z
        s = np.where(z, s >> 1, s)
    return int(24 - tz.min())


def block_sizes(k: int) -> list[int]:
    """Powers of two below K, then K itself (standing for every n >= K)."""
    out = [n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n < k]
    return out + [k]


def lowerings(rs: RecordSet) -> tuple:
    """The instruction lowerings worth trying: none, and for FP8 rows of whole k32 instructions
    Hopper's FP8 mma.sync on two FP16 HMMA steps (tcsim.lowering; lowered_k = 32 in its order)."""
    fp8 = rs.a_format in ("e4m3", "e5m2") and rs.b_format in ("e4m3", "e5m2")
    return (None, 32) if fp8 and rs.k % 32 == 0 else (None,)


def candidate_space(rs: RecordSet, p: int) -> Iterable[dict]:
    out_prec = None if p >= get_format(rs.acc).precision else p
    for low, n, f, term, align, cpl, rnd in itertools.product(
            lowerings(rs), block_sizes(rs.k), FRACTION_BITS, ("truncate", "floor", "rne"),
            ("unnormalized", "normalized"), ("inside", "after"), ("rz", "rne")):
        if f + 2 + math.ceil(math.log2(n + 1)) > 53 or (low and low % n):
            continue
        fields = dict(block_size=n, fraction_bits=f, term_rounding=term, product_alignment=align,
                      c_placement=cpl, output_rounding=rnd, output_precision=out_prec)
        if low:
            fields.update(lowered_k=low, k_order=HOPPER_FP8_MMA_SYNC_K_ORDER)
        if cpl == "after":
            fields.update(product_sum_precision=24, product_sum_rounding="rz")
        yield fields


def predict_bits(rs: RecordSet, dp: Datapath, rows=slice(None)) -> np.ndarray:
    """The simulated results of ``rows`` as fp32 bit patterns."""
    return rows_to_bits(rs.a[rows], rs.b[rows], rs.c[rows], dp, rs.a_format, rs.b_format,
                        rs.acc)


@dataclass
class Probe:
    """A directed input row on which two consistent configurations disagree."""

    field: str
    values: tuple
    a: np.ndarray
    b: np.ndarray
    c: float
    predictions: tuple         # the two predicted results
    configs: tuple = ()        # the two configurations (Datapath) that give them


@dataclass
class Verdict:
    """What the rows say about one fitted parameter.

    values: the settings (as shown) that reproduce every row; pinned: the rows leave one and the
    search could have shown another; note: for one not pinned, the bound or the reason (rows' K,
    a setting no row reaches, several values fit); mode: an EXTENDED / AFTER_MODES field, tried
    on one consistent configuration instead of searched; short: the summary's few words on one
    not pinned (">= 4", "not tried"; empty: several values fit)."""

    name: str
    values: list
    pinned: bool
    note: str = ""
    mode: bool = False
    short: str = ""


@dataclass
class FitResult:
    record: RecordSet
    output_precision: int
    consistent: list                              # list[Datapath]
    ambiguities: dict = field(default_factory=dict)   # field -> sorted values
    probes: list = field(default_factory=list)        # list[Probe]
    best: list = field(default_factory=list)          # (mismatches, Datapath, first rows)
    extended: dict = field(default_factory=dict)      # field -> (values consistent, ruled out)
    verdicts: dict = field(default_factory=dict)      # field -> Verdict (fitted sets only)
    candidates_tried: int = 0
    seconds: float = 0.0


def _ambiguities(consistent: list, k: int) -> dict:
    amb = {}
    for name in SEARCHED:
        vals = sorted({str(getattr(dp, name)) for dp in consistent})
        if len(vals) > 1:
            amb[name] = [f">={k}" if name == "block_size" and v == str(k) else v for v in vals]
    return amb


def _probe_pool(rs: RecordSet, k: Optional[int] = None, seed: int = 1) -> RecordSet:
    """Candidate probe rows of K = ``k`` (default: the rows' K) in the rows' formats: directed
    probes, random rows, then special values (overflow, subnormals, signed zeros)."""
    k = k or rs.k
    pool = [vectors.suite("probes", rs.a_format, rs.b_format, k=k)]
    for spread, scale in (("narrow", 1.0), ("narrow", 2.0 ** -12), ("wide", 1.0)):
        pool.append(vectors.random_vectors(rs.a_format, rs.b_format, 1500, k, spread, seed,
                                           c_scale=scale))
    pool.append(vectors.specials(rs.a_format, rs.b_format, k))
    # rows for the modes: every term -0 (zero_sign); C at the accumulator's largest finite
    # value plus ones, then plus the largest products (overflow)
    fa, fb = get_format(rs.a_format), get_format(rs.b_format)
    top = get_format(rs.acc).max_finite
    a = np.concatenate([v.a for v in pool] + [np.full((1, k), -0.0), np.ones((1, k)),
                                              np.full((1, k), fa.max_finite)])
    b = np.concatenate([v.b for v in pool] + [np.ones((2, k)), np.full((1, k), fb.max_finite)])
    c = np.concatenate([v.c for v in pool] + [np.array([-0.0, top, top])])
    if rs.acc == "fp16":
        c = round_to_format(c, "fp16", overflow="saturate")
    return RecordSet("probe", rs.a_format, rs.b_format, rs.acc, a, b, c,
                     np.zeros(len(c), np.uint32))


class _Probes:
    """Finds, for a parameter, a pool row on which a configuration and one of its rivals differ
    (pools built once per K)."""

    def __init__(self, rs: RecordSet):
        self.rs, self.pools = rs, {}

    def find(self, name: str, dp: Datapath, rivals: list, k: Optional[int] = None,
             values=None) -> Optional[Probe]:
        k = k or self.rs.k
        if k not in self.pools:
            self.pools[k] = _probe_pool(self.rs, k)
        pool = self.pools[k]
        d1 = predict_bits(pool, dp)
        # two settings can be the same arithmetic (lowered_k = 32 on a block of 32 is one
        # block): the next rival is tried when a pair agrees on the whole pool
        for other in rivals[:PROBE_RIVALS]:
            d2 = predict_bits(pool, other)
            diff = np.flatnonzero(d1 != d2)
            if diff.size:
                i = int(diff[0])
                return Probe(name, values or (getattr(dp, name), getattr(other, name)),
                             pool.a[i], pool.b[i], float(pool.c[i]),
                             tuple(float(np.uint32(x).view(np.float32)) for x in (d1[i], d2[i])),
                             (dp, other))
        return None


def _find_probes(rs: RecordSet, consistent: list, amb: dict, finder=None) -> list:
    finder = finder or _Probes(rs)
    probes = []
    first = consistent[0]
    for name in amb:
        # rivals that differ in this field, those closest to the first configuration first
        rivals = sorted((dp for dp in consistent if getattr(dp, name) != getattr(first, name)),
                        key=lambda dp: sum(getattr(dp, f) != getattr(first, f) for f in SEARCHED))
        probe = finder.find(name, first, rivals)
        if probe is not None:
            probes.append(probe)
    return probes


def _reproduces(rs: RecordSet, dp: Datapath) -> bool:
    return bool(np.array_equal(predict_bits(rs, dp), rs.d_bits))


def _max_fraction_bits(n: int) -> int:
    """The most fraction bits the simulator holds for a block of n (53-bit sums, <= 48)."""
    most = next(m.le for m in Datapath.model_fields["fraction_bits"].metadata if hasattr(m, "le"))
    return min(most, FLOAT64_SUM_BITS - 2 - math.ceil(math.log2(n + 1)))    # route.check_sum_bits


def _span(values: list) -> str:
    """Sorted integers as runs: 12, 14-20."""
    runs, out = [], []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    for lo, hi in runs:
        out.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return ", ".join(out)


def _audit(rs: RecordSet, survivors: list, p: int, extended: dict,
           finder: _Probes) -> tuple[dict, list]:
    """A Verdict per fitted parameter, and the probes for those the rows bound without pinning
    (the ambiguities among the survivors get theirs from :func:`_find_probes`).

    A parameter is pinned only when the rows leave one value of several the search could show:
    a block of n = K stands for every n >= K (the rows' K bounds it), a value at the end of the
    searched range is tried beyond it, a lowering the rows' K cannot hold is not tested, and the
    modes are tried value by value on the first consistent configuration."""
    first, k = survivors[0], rs.k
    verdicts, probes = {}, []

    def probe(name, dp, rivals, pk=None, values=None):
        found = finder.find(name, dp, rivals, pk, values)
        if found is not None:
            probes.append(found)

    for name in SEARCHED:
        vals = sorted({getattr(dp, name) for dp in survivors},
                      key=lambda v: (v is None, v if isinstance(v, int) else 0, str(v)))
        if name == "lowered_k" and lowerings(rs) == (None,):
            if rs.a_format not in ("e4m3", "e5m2"):
                continue                          # no lowering is known for these formats
            verdicts[name] = Verdict(name, ["None"], False, f"not tried: the k32 lowering needs "
                                     f"rows of K a multiple of 32; rows have K = {k}",
                                     short="not tried")
            if 32 % first.block_size == 0:
                probe(name, first, [first.model_copy(update=dict(
                    lowered_k=32, k_order=HOPPER_FP8_MMA_SYNC_K_ORDER))], 32, (None, 32))
            continue
        if name == "block_size":
            shown = [f">={k}" if v == k else str(v) for v in sorted(vals)]
            if vals == [k]:
                verdicts[name] = Verdict(name, shown, False, f"at least {k}; rows have K = {k}",
                                         short=f">= {k}")
                if not first.lowered_k and 2 * k <= 4096:
                    # rows of 2K: n = K is two blocks, n = 2K one
                    probe(name, first, [first.model_copy(update={name: 2 * k})], 2 * k)
                continue
            vals = shown
        if name == "fraction_bits":
            verdicts[name] = _fraction_bits_verdict(rs, survivors, vals, finder, probes)
            continue
        shown = [str(v) for v in vals]
        verdicts[name] = Verdict(name, shown, len(vals) == 1,
                                 "" if len(vals) == 1 else f"{', '.join(shown)} fit every row")
    verdicts["output_precision"] = _output_precision_verdict(rs, first, p, probe)
    for name, (ok, bad) in extended.items():
        if len(ok) == 1:
            note = ""
        elif not bad:
            note = f"no row exercises it: {', '.join(map(str, ok))} all fit"
        else:
            note = f"{', '.join(map(str, ok))} fit every row (the rows rule out " \
                   f"{', '.join(map(str, bad))})"
        verdicts[name] = Verdict(name, [str(v) for v in ok], len(ok) == 1, note, mode=True)
        if len(ok) > 1:
            mine = getattr(first, name)
            probe(name, first, [first.model_copy(update={name: v}) for v in ok if v != mine])
    return verdicts, probes


def _fraction_bits_verdict(rs, survivors, vals, finder, probes) -> Verdict:
    """Fraction bits: at an end of FRACTION_BITS, the values beyond it are tried too."""
    name = "fraction_bits"
    top = next(dp for dp in survivors if dp.fraction_bits == vals[-1])
    bottom = next(dp for dp in survivors if dp.fraction_bits == vals[0])
    limit = _max_fraction_bits(top.block_size)
    above = below = []
    if vals[-1] == FRACTION_BITS[-1]:
        above = [f for f in range(vals[-1] + 1, limit + 1)
                 if _reproduces(rs, top.model_copy(update={name: f}))]
    if vals[0] == FRACTION_BITS[0]:
        below = [f for f in range(0, vals[0])
                 if _reproduces(rs, bottom.model_copy(update={name: f}))]
    every = below + list(vals) + above
    if len(every) == 1:
        return Verdict(name, [str(vals[0])], True)
    short = ""
    if above and every[-1] == limit and every == list(range(every[0], limit + 1)):
        note = (f"at least {every[0]}: every value from {every[0]} to {limit}, the most the "
                f"simulator holds, fits every row")
        short = f">= {every[0]}"
    else:
        note = f"{_span(every)} fit every row"
    if above or below:                  # the survivors' own disagreement has its probe already
        dp, other = (top, above[0]) if above else (bottom, below[-1])
        found = finder.find(name, dp, [dp.model_copy(update={name: other})])
        if found is not None:
            probes.append(found)
    return Verdict(name, [str(v) for v in every], False, note, short=short)


def _output_precision_verdict(rs: RecordSet, first: Datapath, p: int, probe) -> Verdict:
    """The rows show at most p significant bits; a datapath keeping more may fit them too."""
    name = "output_precision"
    full = get_format(rs.acc).precision
    if rs.acc != "fp32" or p >= full:
        return Verdict(name, [str(first.output_precision or "full")], True)
    wider = [q for q in range(p + 1, full + 1)
             if _reproduces(rs, first.model_copy(update={name: None if q == full else q}))]
    if not wider:
        return Verdict(name, [str(p)], True)
    probe(name, first, [first.model_copy(update={name: None if wider[0] == full else wider[0]})])
    return Verdict(name, [str(v) for v in [p] + wider], False,
                   f"at least {p}: the rows show at most {p} significant bits, and "
                   f"{_span(wider)} fit every row too", short=f">= {p}")


def fit_one(rs: RecordSet, progress: bool = False) -> FitResult:
    """Every searched configuration that reproduces all rows of ``rs`` bit for bit."""
    t0 = time.perf_counter()
    p = output_precision_from_data(rs)
    survivors, scores, tried = [], [], 0
    stage_rows = [slice(0, min(n, rs.rows)) for n in STAGES] + [slice(None)]
    for fields in candidate_space(rs, p):
        tried += 1
        dp = Datapath(**fields)
        ok = True
        for rows in stage_rows:
            bad = int(np.count_nonzero(predict_bits(rs, dp, rows) != rs.d_bits[rows]))
            if bad:
                ok = False
                scores.append((bad / len(rs.d_bits[rows]), rows.stop or rs.rows, dp))
                break
        if ok:
            survivors.append(dp)
        if progress and tried % 500 == 0:
            print(f"\r  {rs.name}: {tried} candidates, {len(survivors)} consistent", end="",
                  file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    res = FitResult(rs, p, survivors, candidates_tried=tried)
    if survivors:
        res.ambiguities = _ambiguities(survivors, rs.k)
        finder = _Probes(rs)
        res.probes = _find_probes(rs, survivors, res.ambiguities, finder)
        modes = dict(EXTENDED)
        if all(dp.c_placement == "after" for dp in survivors):
            modes.update(AFTER_MODES)
        if survivors[0].product_alignment == "unnormalized":
            modes.update(ZERO_OPERAND_MODE)
        res.extended = _extended_fields(rs, survivors[0], modes)
        res.verdicts, bound_probes = _audit(rs, survivors, p, res.extended, finder)
        res.probes += [pr for pr in bound_probes
                       if not any(q.field == pr.field for q in res.probes)]
    else:
        scores.sort(key=lambda s: (s[0], -s[1]))
        for _, _, dp in scores[:5]:
            pred = predict_bits(rs, dp)
            bad = np.flatnonzero(pred != rs.d_bits)
            res.best.append((int(bad.size), dp, [(int(i), float(rs.c[i]),
                                                  float(rs.d_bits[i:i + 1].view(np.float32)[0]),
                                                  float(pred[i:i + 1].view(np.float32)[0]))
                                                 for i in bad[:3]]))
        res.best.sort(key=lambda t: t[0])
    res.seconds = time.perf_counter() - t0
    return res


def _extended_fields(rs: RecordSet, dp: Datapath, fields: Optional[dict] = None) -> dict:
    """For each EXTENDED field (or each of ``fields``): the values that still reproduce every
    row, and those ruled out."""
    out = {}
    for name, values in (fields or EXTENDED).items():
        ok, bad = [], []
        for v in values:
            (ok if _reproduces(rs, dp.model_copy(update={name: v})) else bad).append(v)
        out[name] = (ok, bad)
    return out


def fit(records, progress: bool = False) -> list[FitResult]:
    """Fit every record set (paths are loaded with :func:`load_records`)."""
    if not (isinstance(records, list) and records and isinstance(records[0], RecordSet)):
        records = load_records(records if isinstance(records, (list, tuple)) else [records])
    return [fit_one(rs, progress) for rs in records]


def _dp_summary(dp: Datapath, k: int) -> str:
    n = f">={k}" if dp.block_size == k else str(dp.block_size)
    out = dp.output_precision or "full"
    low = f" lowered k{dp.lowered_k} (2 HMMA steps, C last)" if dp.lowered_k else ""
    return (f"n={n} f={dp.fraction_bits} {dp.term_rounding} {dp.product_alignment} "
            f"C {dp.c_placement} out {out} bits {dp.output_rounding.upper()}{low}")


def report(results: list[FitResult]) -> str:
    lines = []
    for r in results:
        rs = r.record
        lines.append(f"== {rs.name} ({rs.rows} rows, K = {rs.k}, {rs.a_format} x {rs.b_format} -> "
                     f"{rs.acc}; {r.candidates_tried} candidates in {r.seconds:.1f} s)")
        lines.append(f"   output precision from the data: {r.output_precision} significant bits")
        if not r.consistent:
            lines.append("   NOTHING FITS. Best candidates (mismatching rows of all):")
            for bad, dp, first in r.best:
                lines.append(f"     {bad:5d}  {_dp_summary(dp, rs.k)}")
                for i, c, want, got in first:
                    lines.append(f"            row {i}: c = {c!r}, hardware {want!r}, "
                                 f"model {got!r}")
            continue
        lines.append(f"   {len(r.consistent)} consistent configuration(s), e.g. "
                     f"{_dp_summary(r.consistent[0], rs.k)}")
        unpinned = [v for v in r.verdicts.values() if not v.pinned]
        if unpinned:
            lines.append("   not pinned down by the data:")
            for v in unpinned:
                lines.append(f"     {v.name}: {v.note}")
            for pr in r.probes:
                lines.append(f"   probe for {pr.field} {pr.values[0]} vs {pr.values[1]}"
                             f"{_probe_k(pr, rs)}: a = {_nz(pr.a)}, b = {_nz(pr.b)}, "
                             f"c = {pr.c!r} -> {pr.predictions[0]!r} vs {pr.predictions[1]!r}")
            for v in unpinned:
                if not any(pr.field == v.name for pr in r.probes):
                    lines.append(f"   no probe among the directed, random and special candidate "
                                 f"rows separates {v.name} (a design for it is still needed)")
        pinned = [v for v in r.verdicts.values() if v.pinned]
        if pinned:
            lines.append("   pinned by the data: " + ", ".join(
                f"{v.name} {v.values[0]}" + _ruled_out(r, v.name) for v in pinned))
    return "\n".join(lines)


def _ruled_out(r: FitResult, name: str) -> str:
    bad = r.extended.get(name, ((), ()))[1]
    return f" (rules out {', '.join(map(str, bad))})" if bad else ""


def _probe_k(pr: Probe, rs: RecordSet) -> str:
    # rows of another K: one instruction of that K (chained instructions of the rows' K
    # cannot show a larger block)
    return f" (a row of K = {pr.a.size}, as one instruction)" if pr.a.size != rs.k else ""


def _counted(r: FitResult) -> list:
    """The searched and derived parameters of a fitted set (the modes are counted apart)."""
    return [v for v in r.verdicts.values() if not v.mode]


def summary(results: list[FitResult], probes_path=None, presets=()) -> str:
    """One table for all record sets: rows, configurations left, how many of the fitted
    parameters the rows pin down and which they do not (with the bound, and where the probe that
    would pin it has rows of another K, that K), how many modes no row decides, probes written;
    then the totals. probes_path: where the probes were written (None: not written); presets:
    the preset files written."""
    table = []
    for r in results:
        if r.consistent:
            counted = _counted(r)
            open_v = [v for v in counted if not v.pinned]
            modes = [v for v in r.verdicts.values() if v.mode]
            pinned = f"{len(counted) - len(open_v)}/{len(counted)}"
            open_ = ", ".join(_not_pinned(r, v) for v in open_v) or "-"
            modes_open = f"{sum(not v.pinned for v in modes)}/{len(modes)}"
        else:
            pinned = modes_open = "-"
            open_ = f"NOTHING FITS (best: {r.best[0][0]} rows off)" if r.best else "NOTHING FITS"
        written = len(r.probes) if probes_path is not None else 0
        table.append((r.record.name, r.record.rows, len(r.consistent), pinned, open_, modes_open,
                      written))
    w_set = max([len("set")] + [len(t[0]) for t in table])
    w_open = max([len("not pinned")] + [len(t[4]) for t in table])
    head = (f"{'set':<{w_set}}  {'rows':>6}  {'configs left':>12}  {'pinned':>6}  "
            f"{'not pinned':<{w_open}}  {'modes open':>10}  {'probes written':>14}")
    lines = [head, "-" * len(head)]
    lines += [f"{name:<{w_set}}  {rows:>6}  {left:>12}  {pinned:>6}  {open_:<{w_open}}  "
              f"{modes:>10}  {written:>14}"
              for name, rows, left, pinned, open_, modes, written in table]
    fitted = sum(1 for r in results if r.consistent)
    proposed = sum(len(r.probes) for r in results)
    lines += ["", f"{len(results)} record set(s): {fitted} fitted, {len(results) - fitted} with "
                  f"no consistent configuration.",
              "pinned: how many of the fitted parameters (the searched ones, "
              f"{', '.join(SEARCHED)}, where they apply, and output_precision) the rows leave "
              "one value of. not pinned: several values fit, or the rows only bound it (>= 4: a "
              "block of n = K stands for every n >= K); each has a probe that would pin it "
              "(probe at K = 8: a row of another K), unless marked (no probe).",
              "modes open: how "
              f"many of the modes tried on a consistent configuration ({', '.join(EXTENDED)}; "
              f"{', '.join(ZERO_OPERAND_MODE)} for unnormalized products; "
              f"{', '.join(AFTER_MODES)} with C joined after the sum) no row decides: presets "
              "keep their defaults, noted NOT FITTED. --verbose shows every probe."]
    lines.append(f"{proposed} probe(s) written to {probes_path}" if probes_path is not None else
                 f"{proposed} probe(s) proposed, none written (--probes-out FILE writes them)")
    if presets:
        folder = Path(presets[0]).parent
        lines.append(f"{len(presets)} preset file(s) written to {folder}: "
                     f"{', '.join(Path(p).name for p in presets)}")
    return "\n".join(lines)


def _not_pinned(r: FitResult, v: Verdict) -> str:
    """One parameter of the summary's "not pinned" column: its name, its bound, and the probe's
    K where it is not the rows' (or "no probe")."""
    pr = next((pr for pr in r.probes if pr.field == v.name), None)
    where = " (no probe)" if pr is None else \
        (f" (probe at K = {pr.a.size})" if pr.a.size != r.record.k else "")
    return f"{v.name}{' ' + v.short if v.short else ''}{where}"


def _nz(v: np.ndarray) -> str:
    idx = np.flatnonzero((v != 0) | np.signbit(v))           # -0 entries shown too
    return "{" + ", ".join(f"{int(i)}: {float(v[i])!r}" for i in idx[:6]) + \
        (", ..." if idx.size > 6 else "") + "}"


def preset_toml(results: list[FitResult], name: str = "fitted") -> str:
    """A model file with one path per fitted record set (its first consistent configuration)."""
    out = [f'name = "{name}"', 'description = "Fitted by tcsim fit from recorded outputs"',
           'sources = ["tcsim fit"]', ""]
    for r in results:
        if not r.consistent:
            continue
        dp, rs = r.consistent[0], r.record
        out += ["[[paths]]", 'name = "fit"', f'instruction = "{rs.name}"',
                f'inputs = ["{rs.a_format}"' + (f', "{rs.b_format}"]' if rs.b_format != rs.a_format
                                                 else "]"),
                f'output = "{rs.acc}"', 'status = "explained"']
        for key, value in dp.model_dump().items():
            if value is None or value == Datapath.model_fields[key].default:
                continue
            if isinstance(value, bool):
                out.append(f"{key} = {str(value).lower()}")
            elif isinstance(value, int):
                out.append(f"{key} = {value}")
            elif isinstance(value, tuple):
                out.append(f"{key} = [{', '.join(str(v) for v in value)}]")
            else:
                out.append(f'{key} = "{value}"')
        out.append("[paths.provenance]")
        for key, v in r.verdicts.items():
            out.append(f'{key} = "{_provenance(r, v, getattr(dp, key))}"')
        out.append("")
    return "\n".join(out)


def _provenance(r: FitResult, v: Verdict, written) -> str:
    """The preset note of one fitted parameter: pinned, bounded, or not fitted (a mode no row
    decides keeps its default), with the value written."""
    rs = r.record
    where = f"{rs.rows}/{rs.rows} rows of {rs.name}"
    if v.pinned:
        return f"FIT: pinned by {where}{_ruled_out(r, v.name)}"
    if v.mode:
        return f"NOT FITTED: {v.note} ({where}); the default {written} is written"
    return f"FIT: {v.note} ({where}); written: {written}, one value that fits"


def write_presets(results: list[FitResult], folder) -> list[Path]:
    """One model file per GPU (the part of each record name before '/'), loadable by
    tcsim.load_model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list] = {}
    for r in results:
        if r.consistent:
            groups.setdefault(r.record.name.split("/")[0].lower(), []).append(r)
    written = []
    for gpu, rs in groups.items():
        path = folder / f"{gpu}-fit.toml"
        path.write_text(preset_toml(rs, name=f"{gpu}-fit"))
        written.append(path)
    return written


def _padded(rs: RecordSet, p: Probe, k: int) -> tuple:
    """The probe's a and b padded to K = k with zero products, and whether the two
    configurations still give its predictions: -0 products first (a row of -0 terms keeps its
    zero sign), then +0."""
    if p.a.size == k or not p.configs:
        return p.a, p.b, True
    want = [np.float32(v).view(np.uint32) for v in p.predictions]
    for zero in (-0.0, 0.0):
        a, b = np.full(k, zero), np.zeros(k)
        a[:p.a.size], b[:p.b.size] = p.a, p.b
        one = RecordSet("probe", rs.a_format, rs.b_format, rs.acc, a[None], b[None],
                        np.array([p.c]), np.zeros(1, np.uint32))
        if [predict_bits(one, dp)[0] for dp in p.configs] == want:
            return a, b, True
    return a, b, False


def probe_vectors(results: list[FitResult]) -> Optional[vectors.VectorSet]:
    """Every proposed probe as one VectorSet (rows padded to the longest K), for gpu_validate."""
    probes = [(r.record, p) for r in results for p in r.probes]
    if not probes:
        return None
    k = max(p.a.size for _, p in probes)     # a bound on block_size has a probe of K > the rows'
    rows = [_padded(rs, p, k) for rs, p in probes]
    a, b = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    names = [f"{rs.name}: {p.field} {p.values[0]} vs {p.values[1]} -> {p.predictions[0]!r} vs "
             f"{p.predictions[1]!r}{'' if kept else f' (at K = {p.a.size} only)'}"
             for (rs, p), (_, _, kept) in zip(probes, rows)]
    first = probes[0][0]
    return vectors.VectorSet(first.a_format, first.b_format, a, b,
                             np.array([p.c for _, p in probes]), names, "fit-probes")
