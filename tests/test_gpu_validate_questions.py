"""The open questions (docs/hardware.md#open-questions) answered from records: on synthetic
records every question names the model that made them, uniquely; on a record made by another
datapath it names that datapath."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpu_validate import questions
from gpu_validate.records import find_records, load_record, save_record
from gpu_validate.replay import simulate

ROOT = Path(__file__).resolve().parent.parent
SYNTHETIC = ROOT / "gpu_validate" / "records" / "synthetic-h100"
KEYS = {q.key for q in questions.QUESTIONS}


def test_synthetic_records_answer_with_their_own_model_uniquely():
    recs = [load_record(p) for p in find_records([SYNTHETIC])]
    answers = questions.answer(recs)
    assert {a.key for a in answers} == KEYS
    for a in answers:
        assert a.synthetic and a.matching == ["h100/wgmma model"], (a.key, a.matching)
    (fp16,) = questions.fp16_path(recs)
    assert fp16.records >= 2 and "h100/wgmma model" in fp16.explaining


def _as_hardware(path: Path, out: Path, **changes) -> Path:
    """The record's inputs answered by the h100 datapath with ``changes``, saved as if an H100
    had produced it."""
    from tcsim import load_model
    rec = load_record(path)
    dp = load_model("h100").find_path("e4m3", "e4m3", "fp32", "wgmma").datapath()
    d = simulate(rec, dp.model_copy(update=changes))
    meta = dict(rec.meta, gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
                synthetic="false", model="",
                instruction="wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3")
    return save_record(out / path.name, rec.a_bits, rec.b_bits, rec.c_bits, d,
                       names=rec.names, **meta)


def test_a_different_datapath_is_named(tmp_path):
    for name in ("probes__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz",
                 "long-chains__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz"):
        _as_hardware(SYNTHETIC / name, tmp_path, block_size=16, fraction_bits=14)
    answers = {a.key: a for a in questions.answer(find_records([tmp_path]))}
    assert answers["block-size"].matching == ["block_size 16"]
    assert answers["fraction-bits"].verdict == "fraction_bits 14"
    assert not answers["block-size"].synthetic
    # questions the change does not touch still name the model
    assert answers["output-rounding"].matching == ["h100/wgmma model"]


def test_a_datapath_outside_the_candidates_is_said_so(tmp_path):
    # 15 significant bits out: 2 + 3 * 2^-13 is kept exactly, neither RZ nor RNE at 14 bits
    _as_hardware(SYNTHETIC / "probes__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz", tmp_path,
                 output_precision=15)
    answers = {a.key: a for a in questions.answer(find_records([tmp_path]))}
    assert answers["output-rounding"].verdict == "none of the candidates"
    assert answers["output-rounding"].hardware == ["2.0003662109375 (0x40000600)"]
    other = tmp_path / "full"
    other.mkdir()
    _as_hardware(SYNTHETIC / "probes__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz", other,
                 output_precision=24, fraction_bits=23)
    answers = {a.key: a for a in questions.answer(find_records([other]))}
    assert answers["fraction-bits"].matching == [
        "full fp32 (fraction_bits 23, output_precision 24)"]
    assert answers["c-without-products"].matching == [
        "C kept whole (added after the products, fp32 output)"]


def test_cli_questions_text_and_json():
    run = lambda *a: subprocess.run([sys.executable, "-m", "tcsim.cli", "validate", "questions",
                                     *a], capture_output=True, text=True, cwd=ROOT, timeout=600)
    text = run(str(SYNTHETIC))
    assert text.returncode == 0, text.stderr
    assert "block-size" in text.stdout and "-> h100/wgmma model" in text.stdout
    js = run(str(SYNTHETIC), "--json")
    data = json.loads(js.stdout)
    assert {q["key"] for q in data["questions"]} == KEYS
    assert all(q["verdict"] == "h100/wgmma model" for q in data["questions"])
    missing = run(str(ROOT / "no-such-folder"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
