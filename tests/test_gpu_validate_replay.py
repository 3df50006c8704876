"""gpu_validate on a CPU: the record format, the device suites, replay and diagnosis, the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gpu_validate import records, replay, suites
from tcsim import load_model, vectors

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "gpu_validate" / "records"
NARROW = RECORDS / "synthetic-h100" / "random-narrow__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz"


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tcsim.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def _meta(**over):
    meta = dict(a_format="e4m3", b_format="e4m3", acc="fp32", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability="9.0", driver="580.65", cuda_version="13.0",
                cupy_version="13.6.0", instruction="wgmma.mma_async.sync.aligned.m64n8k32."
                "f32.e4m3.e4m3", sass_opcode="QGMMA.64x8x32.F32.E4M3.E4M3", kernel="wgmma_f32",
                kernel_source_sha256="0" * 64, suite="probes", seed="0", synthetic="false")
    meta.update(over)
    return meta


# ---- committed records ----------------------------------------------------------------------

COMMITTED = records.find_records(RECORDS) if RECORDS.is_dir() else []


def test_committed_records_exist_and_are_small():
    assert len(COMMITTED) >= 40
    assert {p.parent.name for p in COMMITTED} >= {"synthetic-h100", "synthetic-ada"}
    assert sum(p.stat().st_size for p in COMMITTED if "synthetic" in p.parent.name) < 500_000


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_committed_record_replays_bit_exact(path):
    r = replay.replay_record(path)
    detail = "\n".join(f"row {x['row']} ({x['name']}): hardware {x['hardware']}, "
                       f"model {x['model']}" for x in r.first)
    assert r.ok, f"{path}: {r.mismatches}/{r.rows} rows differ from {r.preset}/{r.path}\n{detail}"
    if r.has_model and r.path_status != "unexplained":
        assert r.mismatches == 0, detail
    if r.synthetic:
        assert r.status == "ok" and r.mismatches == 0 and r.nan_payload == 0


def test_committed_synthetic_metadata():
    rec = records.load_record(NARROW)
    assert rec.meta["synthetic"] == "true" and rec.meta["model"] == "h100:wgmma"
    assert rec.meta["gpu_name"] == "synthetic (tcsim h100 model)"
    assert rec.meta["sass_opcode"] == "n/a (simulated)"
    assert rec.rows == 200 and rec.k == 32 and len(rec.names) == 200
    for key in records.REQUIRED_META + records.OPTIONAL_META:
        assert rec.meta[key] != "", key


# ---- tampering and diagnosis ----------------------------------------------------------------

def test_tampered_record_is_caught(tmp_path):
    rec = records.load_record(NARROW)
    d = rec.d_bits.copy()
    d[17] ^= np.uint32(1 << 10)           # the lowest bit the 14-bit output keeps
    path = records.save_record(tmp_path / "t.npz", rec.a_bits, rec.b_bits, rec.c_bits, d,
                               names=rec.names, **rec.meta)
    r = replay.replay_record(path)
    assert r.status == "MISMATCH" and not r.ok
    assert r.mismatches == 1 and r.first[0]["row"] == 17
    assert r.first[0]["hardware"] != r.first[0]["model"]
    out = cli("validate", "replay", str(path), "--quiet")
    assert out.returncode == 1, out.stderr
    assert "MISMATCH" in out.stdout and "row 17" in out.stdout


def test_diagnose_names_fraction_bits_14(tmp_path):
    rec = records.load_record(NARROW)
    h100 = load_model("h100").find_path("e4m3", "e4m3", "fp32", "wgmma")
    assert h100.fraction_bits == 13
    d14 = replay.simulate(rec, h100.datapath().model_copy(update={"fraction_bits": 14}))
    meta = dict(rec.meta)
    path = records.save_record(tmp_path / "f14.npz", rec.a_bits, rec.b_bits, rec.c_bits, d14,
                               names=rec.names, **meta)
    r = replay.replay_record(path)
    assert r.status == "MISMATCH" and r.mismatches > 0
    variants = replay.diagnose(records.load_record(path), h100)
    labels = {v.label for v in variants}
    assert {"fraction_bits 11", "fraction_bits 12", "fraction_bits 15", "block_size 16",
            "block_size 64", "output_rounding rne", "output_precision 13", "output_precision 15",
            "c_placement after (product_sum_precision 24)"} <= labels
    assert [v.label for v in variants if v.explains] == ["fraction_bits 14"]
    assert "explained by fraction_bits 14" in replay.explanation(variants)
    out = cli("validate", "replay", str(path), "--quiet", "--json")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    assert data[0]["diagnosis"]["variants"]["fraction_bits 14"] == 0


# ---- model selection ------------------------------------------------------------------------

@pytest.mark.parametrize("gpu, cc, instruction, fmts, expected", [
    ("NVIDIA H100 80GB HBM3", "9.0", "wgmma.mma_async.sync.aligned.m64n8k32.f32.e4m3.e4m3",
     ("e4m3", "e4m3"), ("h100", "wgmma")),
    ("NVIDIA H200", "9.0", "wgmma.mma_async.sync.aligned.m64n8k32.f32.e5m2.e4m3",
     ("e5m2", "e4m3"), ("h200", "wgmma")),
    ("NVIDIA GeForce RTX 4090", "8.9", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
     ("e4m3", "e4m3"), ("ada", "mma.sync")),
    ("NVIDIA L40S", "8.9", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
     ("e4m3", "e4m3"), ("l40s", "mma.sync")),
    ("NVIDIA H100 PCIe", "9.0", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
     ("e4m3", "e4m3"), ("h100", "mma.sync")),
    ("Some unknown GPU", "7.5", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
     ("e4m3", "e4m3"), (None, None)),
    ("Some future GPU", "9.0", "wgmma.mma_async", ("e4m3", "e4m3"), ("h100", "wgmma")),
])
def test_preset_for(gpu, cc, instruction, fmts, expected):
    rec = records.Record(np.zeros((1, 32), np.uint32), np.zeros((1, 32), np.uint32),
                         np.zeros(1, np.uint32), np.zeros(1, np.uint32), ["x"],
                         _meta(gpu_name=gpu, compute_capability=cc, instruction=instruction,
                               a_format=fmts[0], b_format=fmts[1]))
    preset, path, note = replay.preset_for(rec)
    assert (preset, path) == expected
    if path is None:
        assert "no tcsim preset" in note


def test_mma_sync_on_hopper_replays_against_the_lowered_path(tmp_path):
    """FP8 mma.sync on sm_90 is compared with h100's lowered mma.sync path (two FP16 HMMA steps
    and an add of C): its own bits pass, one flipped bit is a mismatch."""
    rec = records.load_record(RECORDS / "synthetic-h100" /
                              "probes__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz")
    meta = _meta(instruction="mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32",
                 kernel="mma_sync_f32_e4m3_e4m3")
    lowered = load_model("h100").find_path("e4m3", "e4m3", "fp32", "mma.sync")
    assert lowered.lowered_k == 32
    d = replay.simulate(rec, lowered)
    assert not np.array_equal(d, rec.d_bits)          # not the wgmma datapath
    good = records.save_record(tmp_path / "ms.npz", rec.a_bits, rec.b_bits, rec.c_bits, d,
                               names=rec.names, **meta)
    r = replay.replay_record(good)
    assert r.status == "ok" and r.path == "mma.sync" and r.has_model
    d[0] ^= np.uint32(1 << 12)
    bad = records.save_record(tmp_path / "bad.npz", rec.a_bits, rec.b_bits, rec.c_bits, d,
                              names=rec.names, **meta)
    assert replay.replay_record(bad).status == "MISMATCH"


def test_a_gpu_without_preset_reports_no_model(tmp_path):
    rec = records.load_record(RECORDS / "synthetic-h100" /
                              "probes__e4m3xe4m3__fp32__tcsim-h100-wgmma.npz")
    meta = _meta(gpu_name="Some unknown GPU", compute_capability="7.5",
                 instruction="mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32")
    path = records.save_record(tmp_path / "nm.npz", rec.a_bits, rec.b_bits, rec.c_bits,
                               rec.d_bits, names=rec.names, **meta)
    r = replay.replay_record(path)
    assert r.status == "no model" and r.ok and not r.has_model
    assert "no model" in replay.format_table([r])
    out = cli("validate", "replay", str(path), "--quiet")
    assert out.returncode == 0 and "no model" in out.stdout


def test_fp16_record_rounds_c_and_counts_nan_payload_apart(tmp_path):
    rec = records.load_record(RECORDS / "synthetic-ada" /
                              "c-only__e4m3xe4m3__fp16__tcsim-ada-mma.sync.npz")
    nan_rows = np.flatnonzero(np.isnan(rec.d))
    assert nan_rows.size and (rec.d_bits[nan_rows] == 0x7FFFE000).all()   # fp16 NaN widened
    # C = 1 + 2^-20 is rounded to fp16 (-> 1.0) before the kernel sees it
    i = next(j for j, n in enumerate(rec.names) if n.startswith("C = 1 + 2^-20 "))
    assert rec.d[i] == 1.0
    d = rec.d_bits.copy()
    d[nan_rows[0]] = np.uint32(0x7FC00000)
    meta = dict(rec.meta)
    path = records.save_record(tmp_path / "nan.npz", rec.a_bits, rec.b_bits, rec.c_bits, d,
                               names=rec.names, **meta)
    r = replay.replay_record(path)
    assert r.mismatches == 0 and r.nan_payload == 1 and r.ok and "NaN payload" in r.note


# ---- record format ----------------------------------------------------------------------------

def test_record_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    a = rng.choice([0.0, 1.0, -0.5, 448.0, 2.0 ** -9, np.nan], size=(5, 32))
    b = rng.choice([0.0, 1.5, -3.0, 2.0 ** -6], size=(5, 32))
    c = np.array([0.0, 1 + 2.0 ** -20, -2.0 ** -130, 3.0, np.inf])
    d = np.array([1.0, 2.0, -0.0, np.nan, 5.0])
    bits = [records.values_to_bits(x) for x in (a, b, c, d)]
    path = records.save_record(tmp_path / "sub" / "r.npz", *bits, names=list("abcde"),
                               **_meta(notes="hello"))
    rec = records.load_record(path)
    for got, want in zip((rec.a_bits, rec.b_bits, rec.c_bits, rec.d_bits), bits):
        assert got.dtype == np.uint32 and np.array_equal(got, want)
    assert rec.names == list("abcde") and rec.rows == 5 and rec.k == 32
    assert rec.meta["gpu_name"] == "NVIDIA H100 80GB HBM3" and rec.meta["notes"] == "hello"
    assert rec.meta["model"] == "" and rec.meta["created"].endswith("Z")
    z = np.load(path)                                  # a plain numpy .npz
    assert z["acc"].ndim == 0 and str(z["sass_opcode"]) == "QGMMA.64x8x32.F32.E4M3.E4M3"
    assert records.find_records([tmp_path, path]) == [path]
    assert records.record_filename("probes", "e4m3", "e5m2", "fp16", "wgmma f16/x") == \
        "probes__e4m3xe5m2__fp16__wgmma-f16-x.npz"


def test_save_record_rejects_missing_metadata_and_bad_arrays(tmp_path):
    z2, z1 = np.zeros((2, 32), np.uint32), np.zeros(2, np.uint32)
    meta = _meta()
    del meta["sass_opcode"], meta["driver"]
    with pytest.raises(ValueError, match="missing record metadata: driver, sass_opcode"):
        records.save_record(tmp_path / "x.npz", z2, z2, z1, z1, **meta)
    with pytest.raises(ValueError, match="model"):
        records.save_record(tmp_path / "x.npz", z2, z2, z1, z1, **_meta(synthetic="true"))
    with pytest.raises(ValueError, match="uint32"):
        records.save_record(tmp_path / "x.npz", z2.astype(np.int64), z2, z1, z1, **_meta())
    with pytest.raises(ValueError, match=r"c_bits"):
        records.save_record(tmp_path / "x.npz", z2, z2, z1[:1], z1, **_meta())
    bad = z2.copy()
    bad[1, 3] = records.values_to_bits(np.array([1.0625]))[0]     # not an e4m3 value
    with pytest.raises(ValueError, match="a_bits row 1 .*e4m3"):
        records.save_record(tmp_path / "x.npz", bad, z2, z1, z1, **_meta())
    with pytest.raises(ValueError, match="acc"):
        records.save_record(tmp_path / "x.npz", z2, z2, z1, z1, **_meta(acc="bf16"))
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(FileNotFoundError):
        records.find_records(tmp_path / "nowhere")


def test_representable_matches_tcsim():
    from tcsim.formats.conversion import is_representable, round_to_format

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(5000) * 2.0 ** rng.integers(-30, 30, 5000),
                        [0.0, -0.0, np.inf, np.nan, 448.0, 480.0, 57344.0, 2.0 ** -9,
                         2.0 ** -10, 2.0 ** -16, 2.0 ** -17, 65504.0]])
    x = np.concatenate([x, round_to_format(x, "e4m3"), round_to_format(x, "e5m2"),
                        round_to_format(x, "fp16")])
    for fmt in ("e4m3", "e5m2", "fp16", "bf16"):
        want = is_representable(x, fmt) | np.isnan(x)
        assert np.array_equal(records.representable(x, fmt), want), fmt


def test_c_operand_matches_tcsim():
    """gpu_validate.device.c_operand (the device side, without tcsim) brings C into the
    accumulator as tcsim.recorded_rows.c_in_accumulator does: fp32 as is; fp16 by RNE,
    subnormals kept, overflow to Inf (NaN stays NaN, payload aside)."""
    from gpu_validate.device import c_operand
    from tcsim.recorded_rows import c_in_accumulator

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.standard_normal(4000) * 2.0 ** rng.integers(-30, 20, 4000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65519.99, 65520.0,
                         -65520.0, 1e6, 2.0 ** -24, 2.0 ** -25, 1.5 * 2.0 ** -25, 2.0 ** -26,
                         1 + 2.0 ** -11, 1 + 3 * 2.0 ** -11, 1 + 2.0 ** -20]])
    c_bits = x.astype(np.float32).view(np.uint32)
    c = c_bits.view(np.float32).astype(np.float64)
    assert np.array_equal(c_operand(c_bits, "fp32").view(np.uint32), c_bits)
    assert np.array_equal(c_in_accumulator(c, "fp32").astype(np.float32).view(np.uint32), c_bits)
    device = c_operand(c_bits, "fp16").view(np.float16).astype(np.float64)
    host = c_in_accumulator(c, "fp16")
    nan = np.isnan(c)
    assert np.array_equal(np.isnan(device), nan) and np.array_equal(np.isnan(host), nan)
    assert np.array_equal(device[~nan].view(np.uint64), host[~nan].view(np.uint64))


def test_records_and_suites_import_without_tcsim(tmp_path):
    """The GPU machine has numpy but no pydantic: these modules must not need tcsim."""
    inputs = suites.write_suites(tmp_path, rows=4)
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tcsim", "pydantic"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from gpu_validate import records, suites
        rec = records.load_record({str(NARROW)!r})
        s = suites.load_inputs({str(inputs[0])!r})
        assert rec.rows == 200 and s.rows > 0
        print("ok", len(suites.find_inputs({str(tmp_path)!r})))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(len(inputs))]


# ---- suites -------------------------------------------------------------------------------------

def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_suites_are_deterministic(tmp_path):
    one = suites.write_suites(tmp_path / "one", rows=32, seed=5)
    suites.write_suites(tmp_path / "two", rows=32, seed=5)
    other = suites.write_suites(tmp_path / "other", rows=32, seed=6)
    assert len(one) == len(suites.SUITES) * len(suites.FORMAT_PAIRS) == 24
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")     # byte-identical files
    for p1, p3 in zip(one, other):
        s1, s3 = suites.load_inputs(p1), suites.load_inputs(p3)
        same = all(np.array_equal(x, y) for x, y in
                   ((s1.a_bits, s3.a_bits), (s1.b_bits, s3.b_bits), (s1.c_bits, s3.c_bits)))
        if s1.suite in ("random-narrow", "random-wide", "long-chains", "c-only"):
            assert not same, p1.name
        else:
            assert same, p1.name


def test_suite_contents():
    by = {(s.suite, s.a_format, s.b_format): s for s in suites.build_suites(rows=16)}
    assert set(by) == {(n, a, b) for n in suites.SUITES for a, b in suites.FORMAT_PAIRS}
    for (name, fa, fb), s in by.items():
        assert s.a_bits.dtype == np.uint32 and s.k % 32 == 0 and len(s.names) == s.rows
        assert records.representable(records.bits_to_values(s.a_bits), fa).all()
        assert records.representable(records.bits_to_values(s.b_bits), fb).all()
    long = by[("long-chains", "e4m3", "e4m3")]
    assert long.k == 128 and any("block size 32 vs 64" in n for n in long.names)
    assert long.rows == len(vectors.directed_probes(128)) + 16
    assert len(vectors.directed_probes(128)) == 11
    conly = by[("c-only", "e5m2", "e4m3")]
    assert not conly.a_bits.any() and not conly.b_bits.any()
    c = records.bits_to_values(conly.c_bits)
    assert 1 + 2.0 ** -20 in c and (c < 0).any() and ((c != 0) & (np.abs(c) < 2.0 ** -126)).any()
    probes = by[("probes", "e5m2", "e5m2")]
    assert any("rounded toward zero" in n for n in probes.names)     # 1.875 is not e5m2
    assert by[("random-narrow", "e4m3", "e4m3")].rows == 16


# ---- command line -------------------------------------------------------------------------------

def test_cli_replay_committed_records():
    out = cli("validate", "replay", "gpu_validate/records", "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["GPU", "suite", "formats", "acc"]
    table = lines[2:2 + len(COMMITTED)]
    assert all(ln.rstrip().endswith((" ok", "no model", "unexplained (expected)")) or "  [" in ln
               for ln in table), table
    assert lines[2 + len(COMMITTED)] == ""
    assert sum(ln.rstrip().endswith(" ok") for ln in table) >= 40     # the synthetic records
    assert "0 mismatches on modelled paths" in out.stdout


def test_cli_replay_errors(tmp_path):
    out = cli("validate", "replay", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no such file or folder" in out.stderr
    suites.write_suites(tmp_path, rows=2)
    out = cli("validate", "replay", str(tmp_path), "--quiet")
    assert out.returncode == 2 and "suite input file, not a record" in out.stderr


def test_cli_suites(tmp_path):
    out = cli("validate", "suites", "--out", str(tmp_path), "--seed", "3", "--rows", "8")
    assert out.returncode == 0, out.stderr
    assert len(list(tmp_path.glob("*.npz"))) == 24
    s = suites.load_inputs(tmp_path / "random-wide__e4m3xe5m2.npz")
    assert s.seed == 3 and s.rows == 8


def _has_gpu() -> bool:
    try:
        import cupy
        return bool(cupy.cuda.is_available())
    except Exception:
        return False


@pytest.mark.skipif(_has_gpu(), reason="a CUDA GPU is present")
def test_cli_run_without_gpu_fails_clearly(tmp_path):
    out = cli("validate", "run", "--suite", "probes", "--out", str(tmp_path / "r.npz"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.startswith("tcsim: error:")
    assert "Traceback" not in out.stderr
    low = out.stderr.lower()
    assert "runner" in low or "cuda" in low or "gpu" in low
