"""The open questions of docs/hardware.md#open-questions, answered from records.

Each question names a directed probe (a row of the ``probes``, ``long-chains`` or ``c-only``
suite, E4M3 x E4M3, wgmma with an fp32 accumulator) and the datapath settings that would answer
it differently: the record's own model and its rivals (block size 16 or 64 instead of 32,
floor instead of sign-magnitude truncation, ...). :func:`answer` simulates the probe row under
each candidate and reports which of them give the hardware's bits, next to the exact value. The
fp16-accumulator question is asked of whole records: which of the fp16 path and its nearby
settings (gpu_validate.replay.nearby) reproduces every row of every fp16 wgmma record.

On synthetic records the answers are the model's own (a check of the machinery); on hardware
records they are the findings, e.g. for a session note:

    tcsim validate questions gpu_validate/records/NVIDIA_H200
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Union

import numpy as np

from tcsim.datapath import Datapath

from .records import Record, find_records, load_record
from .replay import compare_bits, nearby, resolve_path, simulate

Changes = Callable[[Datapath], list]


@dataclass(frozen=True)
class Question:
    """One open question: the probe row that settles it and the rival settings."""

    key: str
    text: str
    suite: str
    probes: tuple                    # each probe row's name contains one of these
    rivals: Changes                  # dp -> [(label, {field: value}), ...]


def _fraction_rivals(dp: Datapath) -> list:
    f = dp.fraction_bits
    out = [(f"fraction_bits {g}", {"fraction_bits": g}) for g in (f - 1, f + 1) if g >= 1]
    out.append(("full fp32 (fraction_bits 23, output_precision 24)",
                {"fraction_bits": 23, "output_precision": 24}))
    return out


QUESTIONS = (
    Question("fraction-bits", "How many fraction bits do the aligned terms keep (13)?",
             "probes", ("13 fraction bits", "fraction bits 12 vs 13", "fraction bits 13 vs 14"),
             _fraction_rivals),
    Question("unnormalised-products", "Are products aligned unnormalised (no shift before "
             "alignment)?", "probes", ("unnormalised products",),
             lambda dp: [("product_alignment normalized", {"product_alignment": "normalized"})]),
    Question("block-size", "Block size: 32, or 16 as on Ada, or 64 (two k32 instructions "
             "fused)?", "long-chains", ("block size 32 vs 16", "block size 32 vs 64"),
             lambda dp: [("block_size 16", {"block_size": 16}),
                         ("block_size 64", {"block_size": 64})]),
    Question("c-without-products", "Is C truncated even when A = B = 0?", "probes",
             ("C truncated without products",),
             lambda dp: [("C kept whole (added after the products, fp32 output)",
                          {"c_placement": "after", "product_sum_precision": 24,
                           "output_precision": None})]),
    Question("sign-handling", "Negative terms: sign-magnitude truncation, or floor?", "probes",
             ("sign-magnitude truncation",),
             lambda dp: [("term_rounding floor", {"term_rounding": "floor"})]),
    Question("output-rounding", "Output: round toward zero or to nearest even?", "probes",
             ("output RZ vs RNE",),
             lambda dp: [(f"output_rounding {'rne' if dp.output_rounding == 'rz' else 'rz'}",
                          {"output_rounding": "rne" if dp.output_rounding == "rz" else "rz"})]),
    Question("carry-headroom", "Does the sum of 32 large products keep its carries?", "probes",
             ("carry headroom",), lambda dp: []),
)


@dataclass
class Answer:
    """What one record says to one question: per probe row the exact value, the hardware's and
    each candidate's; ``matching`` = the candidates that give the hardware's bits on every row."""

    key: str
    question: str
    record: str
    gpu: str
    synthetic: bool
    probes: list                     # probe row names
    exact: list                      # per probe (str)
    hardware: list                   # per probe (str)
    predictions: dict                # candidate label -> [value per probe (str)]
    matching: list

    @property
    def verdict(self) -> str:
        if not self.matching:
            return "none of the candidates"
        if len(self.matching) == 1:
            return self.matching[0]
        return "cannot tell apart: " + "; ".join(self.matching)


@dataclass
class Fp16Answer:
    """The fp16-accumulator path over whole records: mismatching rows per candidate."""

    gpu: str
    records: int
    rows: int
    mismatches: dict = field(default_factory=dict)      # candidate label -> mismatching rows

    @property
    def explaining(self) -> list:
        return [k for k, v in self.mismatches.items() if v == 0]


def _value(bits) -> str:
    v = float(np.array(np.uint32(bits)).view(np.float32))
    return f"{v!r} (0x{int(bits):08x})"


def _exact(rec: Record, row: int) -> str:
    a, b, c = rec.a[row], rec.b[row], rec.c[row]
    if not (np.isfinite(a).all() and np.isfinite(b).all() and np.isfinite(c)):
        return "n/a"
    s = sum((Fraction(float(x)) * Fraction(float(y)) for x, y in zip(a, b)), Fraction(float(c)))
    return f"{float(s)!r}" + ("" if Fraction(float(s)) == s else f" ({s})")


def _candidates(dp: Datapath, rivals: list, model_label: str) -> list:
    out = [(model_label, dp)]
    for label, upd in rivals:
        try:
            out.append((label, dp.replace(**upd)))
        except ValueError:  # a ValidationError: a combination the datapath refuses
            continue
    return out


def _rows_record(rec: Record, rows: list) -> Record:
    return Record(rec.a_bits[rows], rec.b_bits[rows], rec.c_bits[rows], rec.d_bits[rows],
                  [rec.names[i] for i in rows], rec.meta, rec.path)


def _is_wgmma(rec: Record) -> bool:
    """A wgmma record: by its instruction (hardware) or its model (synthetic, "h100:wgmma")."""
    return "wgmma" in rec.meta.get("instruction", "").lower() + rec.meta.get("model", "")


def _is_probe_record(rec: Record, suite: str, acc: str) -> bool:
    return (rec.meta.get("suite") == suite and rec.a_format == "e4m3"
            and rec.b_format == "e4m3" and rec.acc == acc and _is_wgmma(rec))


def answer(records: Iterable[Union[Record, str, Path]]) -> list:
    """Every question answered by every record that holds its probe (see the module
    docstring); one :class:`Answer` per (question, record)."""
    recs = [r if isinstance(r, Record) else load_record(r) for r in records]
    out = []
    for q in QUESTIONS:
        for rec in (r for r in recs if _is_probe_record(r, q.suite, "fp32")):
            rows = [next((i for i, n in enumerate(rec.names) if p in str(n)), None)
                    for p in q.probes]
            rows = [i for i in rows if i is not None]
            preset, path, _ = resolve_path(rec)
            if not rows or path is None:
                continue
            sub = _rows_record(rec, rows)
            dp = path.datapath()
            preds, matching = {}, []
            for label, cand in _candidates(dp, q.rivals(dp), f"{preset}/{path.name} model"):
                got = simulate(sub, cand)
                preds[label] = [_value(g) for g in got]
                if compare_bits(sub.d_bits, got)[0].size == 0:
                    matching.append(label)
            out.append(Answer(q.key, q.text, str(rec.label), rec.meta.get("gpu_name", ""),
                              rec.synthetic, [str(n) for n in sub.names],
                              [_exact(rec, i) for i in rows],
                              [_value(d) for d in sub.d_bits], preds, matching))
    return out


def fp16_path(records: Iterable[Union[Record, str, Path]]) -> list:
    """Per GPU: mismatching rows of its fp16-accumulator wgmma records (all formats, all suites)
    under the preset's fp16 path and each nearby setting of it."""
    recs = [r if isinstance(r, Record) else load_record(r) for r in records]
    by_gpu: dict = {}
    for rec in recs:
        if rec.acc != "fp16" or not _is_wgmma(rec):
            continue
        preset, path, _ = resolve_path(rec)
        if path is None:
            continue
        gpu = rec.meta.get("gpu_name", "")
        ans = by_gpu.setdefault(gpu, Fp16Answer(gpu, 0, 0))
        ans.records += 1
        ans.rows += rec.rows
        dp = path.datapath()
        for label, cand in [(f"{preset}/{path.name} model", dp)] + nearby(dp, "fp16"):
            bad, _ = compare_bits(rec.d_bits, simulate(rec, cand))
            ans.mismatches[label] = ans.mismatches.get(label, 0) + int(bad.size)
    return list(by_gpu.values())


def report(paths, as_dict: bool = False):
    """Answers for every record under ``paths``: a text report, or a dict for JSON."""
    files = find_records(paths)
    recs = [load_record(p) for p in files]
    answers, fp16 = answer(recs), fp16_path(recs)
    if as_dict:
        return {"questions": [dict(a.__dict__, verdict=a.verdict) for a in answers],
                "fp16_accumulator": [dict(f.__dict__, explaining=f.explaining) for f in fp16]}
    lines = []
    for a in answers:
        tag = " [synthetic: the model answering itself]" if a.synthetic else ""
        lines.append(f"{a.key}: {a.question}")
        lines.append(f"  {a.gpu}{tag}: {Path(a.record).name}")
        for j, probe in enumerate(a.probes):
            lines.append(f"  probe {probe!r}: exact {a.exact[j]}, hardware {a.hardware[j]}")
        for label, values in a.predictions.items():
            mark = "=" if label in a.matching else " "
            lines.append(f"    {mark} {label}: {', '.join(values)}")
        lines.append(f"  -> {a.verdict}")
    for f in fp16:
        lines.append(f"fp16-accumulator: {f.gpu}: {f.records} fp16 wgmma record(s), {f.rows} rows")
        for label, n in sorted(f.mismatches.items(), key=lambda kv: kv[1]):
            lines.append(f"    {'=' if n == 0 else ' '} {label}: {n} mismatching rows")
        lines.append(f"  -> {'; '.join(f.explaining) or 'no candidate explains every row'}")
    if not lines:
        lines.append("no E4M3 x E4M3 wgmma probe records (suites probes, long-chains) and no "
                     "fp16 wgmma records under " + " ".join(map(str, paths)))
    return "\n".join(lines)

