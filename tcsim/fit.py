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
3. Report: the consistent configurations, the parameters the data cannot pin down (ambiguities)
   with a directed probe (from tcsim.vectors) that would decide each, and a preset TOML file.
   When nothing fits: the best candidates, their mismatch counts and the first mismatching rows.
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

from . import corpus, formats, vectors
from .config import OUTPUT_FORMATS, Datapath
from .errors import CorpusError, FormatError
from .lowering import HOPPER_FP8_MMA_SYNC_K_ORDER
from .mma import run_datapath
from .npzfile import read_npz

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
        formats.check_representable(av, names["a_format"], what="a_bits")
        formats.check_representable(bv, names["b_format"], what="b_bits")
    except FormatError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    c = z["c_bits"].view(np.float32).astype(np.float64)
    if names["acc"] == "fp16":
        c = formats.round_to_format(c, "fp16")
    return RecordSet(path.stem, formats.get_format(names["a_format"]).name,
                     formats.get_format(names["b_format"]).name, names["acc"], av, bv, c,
                     z["d_bits"])


def output_precision_from_data(rs: RecordSet) -> int:
    """The most significant bits any normal, finite result uses (a lower bound on the datapath's
    output precision; the data never show more)."""
    if rs.acc == "fp16":
        return formats.fp16.precision
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
    out_prec = None if p >= formats.get_format(rs.acc).precision else p
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
    a, b, c = rs.a[rows], rs.b[rows], rs.c[rows]
    r, k = a.shape
    d = run_datapath(np.ascontiguousarray(a).reshape(r, 1, k),
                     np.ascontiguousarray(b).reshape(r, k, 1), c.reshape(r, 1, 1), dp,
                     rs.a_format, rs.b_format, rs.acc).reshape(r)
    return d.astype(np.float32).view(np.uint32)


@dataclass
class Probe:
    """A directed input row on which two consistent configurations disagree."""

    field: str
    values: tuple
    a: np.ndarray
    b: np.ndarray
    c: float
    predictions: tuple         # the two predicted results


@dataclass
class FitResult:
    record: RecordSet
    output_precision: int
    consistent: list                              # list[Datapath]
    ambiguities: dict = field(default_factory=dict)   # field -> sorted values
    probes: list = field(default_factory=list)        # list[Probe]
    best: list = field(default_factory=list)          # (mismatches, Datapath, first rows)
    extended: dict = field(default_factory=dict)      # field -> (values consistent, ruled out)
    candidates_tried: int = 0
    seconds: float = 0.0


def _ambiguities(consistent: list, k: int) -> dict:
    amb = {}
    for name in SEARCHED:
        vals = sorted({str(getattr(dp, name)) for dp in consistent})
        if len(vals) > 1:
            amb[name] = [f">={k}" if name == "block_size" and v == str(k) else v for v in vals]
    return amb


def _probe_pool(rs: RecordSet, seed: int = 1) -> vectors.VectorSet:
    pool = [vectors.suite("probes", rs.a_format, rs.b_format, k=rs.k)]
    for spread, scale in (("narrow", 1.0), ("narrow", 2.0 ** -12), ("wide", 1.0)):
        pool.append(vectors.random_vectors(rs.a_format, rs.b_format, 1500, rs.k, spread, seed,
                                           c_scale=scale))
    c = np.concatenate([v.c for v in pool])
    if rs.acc == "fp16":
        c = formats.round_to_format(c, "fp16", overflow="saturate")
    return vectors.VectorSet(rs.a_format, rs.b_format, np.concatenate([v.a for v in pool]),
                             np.concatenate([v.b for v in pool]), c,
                             sum((v.names for v in pool), []), "fit-probes", seed)


def _find_probes(rs: RecordSet, consistent: list, amb: dict) -> list:
    if not amb:
        return []
    pool = _probe_pool(rs)
    probe_rs = RecordSet("probe", rs.a_format, rs.b_format, rs.acc, pool.a, pool.b, pool.c,
                         np.zeros(pool.rows, np.uint32))
    probes = []
    first = consistent[0]
    d1 = predict_bits(probe_rs, first)
    for name in amb:
        # rivals that differ in this field, those closest to the first configuration first; two
        # settings can be the same arithmetic (lowered_k = 32 on a block of 32 is one block), so
        # the next rival is tried when a pair agrees on the whole pool
        rivals = sorted((dp for dp in consistent if getattr(dp, name) != getattr(first, name)),
                        key=lambda dp: sum(getattr(dp, f) != getattr(first, f) for f in SEARCHED))
        for other in rivals[:PROBE_RIVALS]:
            d2 = predict_bits(probe_rs, other)
            diff = np.flatnonzero(d1 != d2)
            if diff.size:
                i = int(diff[0])
                probes.append(Probe(name, (getattr(first, name), getattr(other, name)),
                                    pool.a[i], pool.b[i], float(pool.c[i]),
                                    tuple(float(np.uint32(x).view(np.float32))
                                          for x in (d1[i], d2[i]))))
                break
    return probes


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
        res.probes = _find_probes(rs, survivors, res.ambiguities)
        res.extended = _extended_fields(rs, survivors[0])
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


def _extended_fields(rs: RecordSet, dp: Datapath) -> dict:
    """For each EXTENDED field: the values that still reproduce every row, and those ruled out."""
    out = {}
    for name, values in EXTENDED.items():
        ok, bad = [], []
        for v in values:
            cand = dp.model_copy(update={name: v})
            same = np.array_equal(predict_bits(rs, cand), rs.d_bits)
            (ok if same else bad).append(v)
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
        if r.ambiguities:
            lines.append("   not pinned down by the data:")
            for name, vals in r.ambiguities.items():
                lines.append(f"     {name}: {', '.join(vals)}")
            for pr in r.probes:
                lines.append(f"   probe for {pr.field} {pr.values[0]} vs {pr.values[1]}: "
                             f"a = {_nz(pr.a)}, b = {_nz(pr.b)}, c = {pr.c!r} -> "
                             f"{pr.predictions[0]!r} vs {pr.predictions[1]!r}")
            for name in r.ambiguities:
                if not any(pr.field == name for pr in r.probes):
                    lines.append(f"   no probe among the directed and random candidate rows "
                                 f"separates {name} (a design for it is still needed)")
        for name, (ok, bad) in r.extended.items():
            verdict = "not exercised by these rows" if not bad else \
                f"rules out {', '.join(map(str, bad))}"
            lines.append(f"   {name}: consistent with {', '.join(map(str, ok))} ({verdict})")
    return "\n".join(lines)


def summary(results: list[FitResult], probes_path=None, presets=()) -> str:
    """One table for all record sets: rows, configurations left, how many of the searched
    parameters the rows pin down (and which they do not), probes written; then the totals.
    probes_path: where the probes were written (None: not written); presets: the preset
    files written."""
    table = []
    for r in results:
        if r.consistent:
            pinned = f"{len(SEARCHED) - len(r.ambiguities)}/{len(SEARCHED)}"
            open_ = ", ".join(r.ambiguities) or "-"
        else:
            pinned = "-"
            open_ = f"NOTHING FITS (best: {r.best[0][0]} rows off)" if r.best else "NOTHING FITS"
        written = len(r.probes) if probes_path is not None else 0
        table.append((r.record.name, r.record.rows, len(r.consistent), pinned, open_, written))
    w_set = max([len("set")] + [len(t[0]) for t in table])
    w_open = max([len("not pinned")] + [len(t[4]) for t in table])
    head = (f"{'set':<{w_set}}  {'rows':>6}  {'configs left':>12}  {'pinned':>6}  "
            f"{'not pinned':<{w_open}}  {'probes written':>14}")
    lines = [head, "-" * len(head)]
    lines += [f"{name:<{w_set}}  {rows:>6}  {left:>12}  {pinned:>6}  {open_:<{w_open}}  "
              f"{written:>14}" for name, rows, left, pinned, open_, written in table]
    fitted = sum(1 for r in results if r.consistent)
    proposed = sum(len(r.probes) for r in results)
    lines += ["", f"{len(results)} record set(s): {fitted} fitted, {len(results) - fitted} with "
                  f"no consistent configuration.",
              f"pinned: how many of the searched parameters ({', '.join(SEARCHED)}) have one "
              f"value left."]
    lines.append(f"{proposed} probe(s) written to {probes_path}" if probes_path is not None else
                 f"{proposed} probe(s) proposed, none written (--probes-out FILE writes them)")
    if presets:
        folder = Path(presets[0]).parent
        lines.append(f"{len(presets)} preset file(s) written to {folder}: "
                     f"{', '.join(Path(p).name for p in presets)}")
    return "\n".join(lines)


def _nz(v: np.ndarray) -> str:
    idx = np.flatnonzero(v)
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
        amb = "; ambiguous: " + ", ".join(r.ambiguities) if r.ambiguities else ""
        out.append("[paths.provenance]")
        for key in ("block_size", "fraction_bits", "output_rounding"):
            out.append(f'{key} = "FIT: reproduces {rs.rows}/{rs.rows} rows of {rs.name}{amb}"')
        out.append("")
    return "\n".join(out)


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


def probe_vectors(results: list[FitResult]) -> Optional[vectors.VectorSet]:
    """Every proposed probe as one VectorSet (rows padded to the longest K), for gpu_validate."""
    probes = [(r.record, p) for r in results for p in r.probes]
    if not probes:
        return None
    k = max(rs.k for rs, _ in probes)
    a = np.zeros((len(probes), k))
    b = np.zeros((len(probes), k))
    for i, (rs, p) in enumerate(probes):
        a[i, :rs.k], b[i, :rs.k] = p.a, p.b
    names = [f"{rs.name}: {p.field} {p.values[0]} vs {p.values[1]} -> {p.predictions[0]!r} vs "
             f"{p.predictions[1]!r}" for rs, p in probes]
    first = probes[0][0]
    return vectors.VectorSet(first.a_format, first.b_format, a, b,
                             np.array([p.c for _, p in probes]), names, "fit-probes")
