"""Replay gpu_validate records through tcsim, bit for bit, on a CPU.

:func:`replay_record` picks the tcsim preset from the record's GPU (synthetic records name their
model), the datapath from the PTX instruction, simulates every row and compares the fp32 bit
patterns exactly. :func:`diagnose` re-runs nearby datapath settings on a mismatching record and
says which single change (if any) explains every row. :func:`format_table` prints one line per
record, like :func:`tcsim.corpus.format_table`.

A result is *ok* when every row agrees (NaN payload differences are counted apart and do not
fail), or when the record has no model to compare with ("no model": a GPU without a preset, or a
path the preset lacks), or when the model's path is marked "unexplained"
(a known, documented disagreement, as in ``tcsim corpus``).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Union

import numpy as np

from tcsim.datapath import Datapath
from tcsim.errors import TcsimError
from tcsim.formats.catalog import get_format
from tcsim.gpu_model import InstructionPath
from tcsim.presets import load_model
from tcsim.recorded_rows import c_in_accumulator, rows_to_bits

from .records import Record, find_records, load_record

# GPU name (lower case) -> preset; the first match wins.
GPU_PRESETS = (
    (r"\bgh200\b", "h100"),
    (r"\bh200\b", "h200"),
    (r"\bh100\b|\bh800\b|\bh20\b", "h100"),
    (r"\bl40s\b", "l40s"),
    (r"\brtx 40\d0\b|\bl40\b|\bl4\b|\brtx \d000 ada\b|\bada\b", "ada"),
    (r"\bgb200\b|\bb200\b|\bb100\b", "b200"),
    (r"\ba100\b|\ba800\b", "a100"),
    (r"\ba30\b", "a30"),
    (r"\ba2\b", "a2"),
    (r"\bv100\b", "v100"),
)
# compute capability -> preset, when the name is not recognised
CC_PRESETS = {"9.0": "h100", "8.9": "ada", "10.0": "b200", "8.0": "a100", "7.0": "v100"}
FIRST_SHOWN = 5


@dataclass
class ReplayResult:
    """The agreement of one record with its tcsim model."""

    file: str
    gpu: str
    suite: str
    a_format: str
    b_format: str
    acc: str
    kernel: str
    rows: int
    k: int
    mismatches: int               # rows whose bits differ (NaN vs NaN with another payload apart)
    nan_payload: int              # rows where both are NaN with different bit patterns
    preset: str                   # tcsim preset ("" when none)
    path: str                     # path of the preset ("" when none)
    path_status: str              # explained / model / unexplained / "" (no model)
    status: str                   # ok / MISMATCH / unexplained (expected) / no model
    synthetic: bool = False
    note: str = ""
    first: list = field(default_factory=list)   # decoded first mismatching rows (dicts)
    datapath: Optional[Datapath] = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status != "MISMATCH"

    @property
    def has_model(self) -> bool:
        return self.datapath is not None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("datapath")
        d["ok"] = self.ok
        return d


@dataclass
class Variant:
    """One nearby datapath setting tried by :func:`diagnose`."""

    label: str                    # "fraction_bits 14"
    mismatches: int
    rows: int
    datapath: Datapath = field(repr=False)

    @property
    def explains(self) -> bool:
        return self.mismatches == 0


def _as_record(record: Union[Record, str, Path]) -> Record:
    return record if isinstance(record, Record) else load_record(record)


def preset_for(record: Record) -> tuple:
    """(preset name or None, path name or None, note) for a record.

    Synthetic records name their model ("h100:wgmma"). Otherwise the preset comes from the GPU
    name (compute capability as a fallback) and the path from the instruction: "wgmma" ->
    "wgmma"; "mma.sync" -> "mma.sync" (on sm_90 the FP8 form is the preset's lowered path:
    two FP16 HMMA steps and an add of C, tcsim.lowering).
    """
    meta = record.meta
    if record.synthetic:
        model = meta.get("model", "")
        preset, _, path = model.partition(":")
        return (preset or None), (path or None), ""
    name = meta.get("gpu_name", "").lower()
    preset = next((p for pat, p in GPU_PRESETS if re.search(pat, name)), None)
    cc = meta.get("compute_capability", "").strip()
    if preset is None:
        preset = CC_PRESETS.get(cc)
    if preset is None:
        return None, None, f"no tcsim preset for GPU {meta.get('gpu_name', '')!r} (cc {cc})"
    ins = meta.get("instruction", "").lower()
    if "wgmma" in ins:
        return preset, "wgmma", ""
    if "tcgen05" in ins:
        return preset, "tcgen05", ""
    if "mma.sync" in ins and "wmma" not in ins:
        # FP8 mma.sync on sm_90 runs lowered onto FP16 HMMA: the preset's "mma.sync" path
        # models that lowering (tcsim.lowering)
        return preset, "mma.sync", ""
    if "wmma" in ins:
        return preset, "wmma", ""
    return preset, "", ""            # "" = the preset's default path for these formats


def resolve_path(record: Record) -> tuple:
    """(preset, InstructionPath or None, note): the datapath a record is compared with."""
    preset, path, note = preset_for(record)
    if preset is None or path is None:
        return preset or "", None, note
    try:
        model = load_model(preset)
        return preset, model.find_path(record.a_format, record.b_format, record.acc,
                                       path or None), ""
    except TcsimError as exc:
        return preset, None, str(exc)


def simulate(record: Record, datapath: Union[Datapath, InstructionPath]) -> np.ndarray:
    """The datapath's results for every row of ``record`` as fp32 bit patterns (uint32).

    Row i is a (1, K) x (K, 1) product with C as stored; for acc fp16 C is first rounded to
    fp16 (RNE, the datapath's c_precision_rounding), as the kernel receives it.
    """
    dp = datapath.datapath() if isinstance(datapath, InstructionPath) else datapath
    c = c_in_accumulator(record.c, record.acc, dp.c_precision_rounding)
    return rows_to_bits(record.a, record.b, c, dp, record.a_format, record.b_format, record.acc)


def compare_bits(want: np.ndarray, got: np.ndarray) -> tuple:
    """(indices of mismatching rows, number of NaN-payload-only differences)."""
    differ = want != got
    both_nan = np.isnan(want.view(np.float32)) & np.isnan(got.view(np.float32))
    return np.flatnonzero(differ & ~both_nan), int(np.count_nonzero(differ & both_nan))


def _f(bits) -> str:
    bits = np.uint32(bits)
    return f"{float(np.array(bits).view(np.float32))!r} (0x{int(bits):08x})"


def _terms(a: np.ndarray, b: np.ndarray, limit: int = 4) -> str:
    idx = np.flatnonzero((a != 0) | (b != 0) | np.isnan(a) | np.isnan(b))
    parts = [f"{int(i)}: {float(a[i])!r}*{float(b[i])!r}" for i in idx[:limit]]
    more = f", ... ({idx.size} nonzero)" if idx.size > limit else ""
    return "{" + ", ".join(parts) + more + "}"


def decode_rows(record: Record, got: np.ndarray, rows: Iterable[int]) -> list:
    """Mismatching rows decoded: inputs, C, hardware and model results."""
    a, b = record.a, record.b
    out = []
    for i in rows:
        i = int(i)
        out.append({"row": i, "name": record.names[i], "terms": _terms(a[i], b[i]),
                    "c": _f(record.c_bits[i]), "hardware": _f(record.d_bits[i]),
                    "model": _f(got[i])})
    return out


def replay_record(record: Union[Record, str, Path]) -> ReplayResult:
    """Simulate every row of a record with its tcsim model and compare bits exactly."""
    rec = _as_record(record)
    preset, path, note = resolve_path(rec)
    meta = rec.meta
    base = dict(file=str(rec.label), gpu=meta.get("gpu_name", ""), suite=meta.get("suite", ""),
                a_format=rec.a_format, b_format=rec.b_format, acc=rec.acc,
                kernel=meta.get("kernel", ""), rows=rec.rows, k=rec.k, synthetic=rec.synthetic)
    if path is None:
        return ReplayResult(**base, mismatches=0, nan_payload=0, preset=preset, path="",
                            path_status="", status="no model", note=note)
    got = simulate(rec, path)
    bad, nan_payload = compare_bits(rec.d_bits, got)
    if bad.size == 0:
        status = "ok"
    elif path.status == "unexplained":
        status = "unexplained (expected)"
    else:
        status = "MISMATCH"
    if nan_payload:
        note = (note + "; " if note else "") + f"{nan_payload} row(s) differ in NaN payload only"
    return ReplayResult(**base, mismatches=int(bad.size), nan_payload=nan_payload, preset=preset,
                        path=path.name, path_status=path.status, status=status, note=note,
                        first=decode_rows(rec, got, bad[:FIRST_SHOWN]), datapath=path.datapath())


def replay(paths) -> list:
    """Replay every record file under ``paths`` (files or folders)."""
    return [replay_record(p) for p in find_records(paths)]


# ---- diagnosis -----------------------------------------------------------------------------------

def _fields(dp: Datapath) -> dict:
    return {k: getattr(dp, k) for k in Datapath.model_fields}


def nearby(datapath: Union[Datapath, InstructionPath], acc: str = "fp32") -> list:
    """(label, Datapath) for the settings next to ``datapath`` (see :func:`diagnose`)."""
    dp = datapath.datapath() if isinstance(datapath, InstructionPath) else datapath
    base = _fields(dp)
    changes = []
    f = dp.fraction_bits
    if f is not None:
        for delta in (-2, -1, 1, 2):
            if f + delta >= 0:
                changes.append((f"fraction_bits {f + delta}", {"fraction_bits": f + delta}))
    n = dp.block_size
    if n is not None:
        changes.append((f"block_size {n * 2}", {"block_size": n * 2}))
        if n // 2 >= 1:
            changes.append((f"block_size {n // 2}", {"block_size": n // 2}))
    other = "rne" if dp.output_rounding == "rz" else "rz"
    changes.append((f"output_rounding {other}", {"output_rounding": other}))
    if dp.c_placement == "inside":
        changes.append(("c_placement after (product_sum_precision 24)",
                        {"c_placement": "after", "product_sum_precision": 24}))
    else:
        changes.append(("c_placement inside", {"c_placement": "inside",
                                               "product_sum_precision": None}))
    p = dp.output_precision
    if p is not None:
        cap = get_format(acc).precision
        for q in (p - 1, p + 1):
            if 2 <= q <= cap:
                changes.append((f"output_precision {q}", {"output_precision": q}))
    out = []
    for label, upd in changes:
        try:
            out.append((label, Datapath(**(base | upd))))
        except Exception:  # pydantic ValidationError: an inconsistent combination, skip it
            continue
    return out


def diagnose(record: Union[Record, str, Path],
             datapath: Union[Datapath, InstructionPath]) -> list:
    """Re-run nearby settings of ``datapath`` on ``record``: fraction bits +-1 and +-2, block
    size x2 and /2, output rounding rz <-> rne, C inside <-> after (product_sum_precision 24),
    output precision +-1 when set. Returns :class:`Variant` s, fewest mismatches first; those
    with ``explains`` reproduce every row."""
    rec = _as_record(record)
    out = []
    for label, dp in nearby(datapath, rec.acc):
        bad, _ = compare_bits(rec.d_bits, simulate(rec, dp))
        out.append(Variant(label, int(bad.size), rec.rows, dp))
    out.sort(key=lambda v: v.mismatches)
    return out


def explanation(variants: list) -> str:
    """One line: which nearby change explains every row, or the closest ones."""
    if not variants:
        return "no nearby setting to try"
    good = [v.label for v in variants if v.explains]
    if len(good) == 1:
        return f"explained by {good[0]} (every row reproduced)"
    if good:
        return f"explained by any of: {'; '.join(good)} (every row reproduced)"
    best = ", ".join(f"{v.label} ({v.mismatches})" for v in variants[:3])
    return f"no single nearby change explains every row; closest: {best}"


def diagnosis_lines(result: ReplayResult, variants: list) -> list:
    lines = [f"== {result.file}: {result.mismatches}/{result.rows} rows differ from "
             f"{result.preset}/{result.path}"]
    for row in result.first:
        lines.append(f"   row {row['row']} ({row['name']}): terms {row['terms']}, c = {row['c']}")
        lines.append(f"      hardware {row['hardware']}, model {row['model']}")
    lines.append("   nearby settings (mismatching rows): " +
                 ", ".join(f"{v.label}: {v.mismatches}" for v in variants))
    lines.append("   " + explanation(variants))
    return lines


# ---- table ---------------------------------------------------------------------------------------

def format_table(results: Iterable[ReplayResult]) -> str:
    """The agreement table: one line per record."""
    results = list(results)
    cols = ("GPU", "suite", "formats", "acc", "kernel", "rows", "mismatch", "model", "status")
    rows = []
    for r in results:
        model = f"{r.preset}/{r.path}" if r.path else (r.preset or "-")
        status = r.status + (f"  [{r.note}]" if r.note else "")
        rows.append((r.gpu, r.suite, f"{r.a_format}x{r.b_format}", r.acc, r.kernel, str(r.rows),
                     str(r.mismatches), model, status))
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols[:-1])]
    right = {5, 6}

    def line(values):
        cells = [(v.rjust(w) if i in right else v.ljust(w)) for i, (v, w) in
                 enumerate(zip(values[:-1], widths))]
        return " ".join(cells) + "  " + values[-1]

    header = line(cols)
    return "\n".join([header, "-" * len(header)] + [line(r) for r in rows])


def summary(results: list) -> str:
    modelled = [r for r in results if r.has_model]
    bad = [r for r in results if not r.ok]
    unexplained = [r for r in results if r.status == "unexplained (expected)"]
    no_model = [r for r in results if r.status == "no model"]
    text = (f"{len(results)} record(s), {sum(r.rows for r in results)} rows: "
            f"{sum(r.mismatches for r in modelled if r.path_status != 'unexplained')} mismatches "
            f"on modelled paths; {len(unexplained)} record(s) on paths known to be unexplained; "
            f"{len(no_model)} without a model.")
    if bad:
        text += f"\nFAIL: {len(bad)} record(s) disagree with their model."
    return text
