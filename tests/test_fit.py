"""tcsim fit: recover every corpus folder's preset, report ambiguities with probes, write presets."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import upstream_corpus_copy
from tcsim import fit, load_model
from tcsim.corpus import RECORDED_PATHS, replay
from tcsim.datapath import Datapath

FIELDS = fit.SEARCHED + ("output_precision",)


# The default run fits the folders the assertions below name (V100: both outputs, written back
# as a preset; H100 E4M3: the c_placement / lowered_k ambiguity and its probe; H100 fp16: the
# extended fields). The whole corpus (40 sets) is fitted once under the `slow` marker, which CI
# runs as a step of its own.
DEFAULT_FOLDERS = ("V100", "H100/E4M3", "H100/fp16")


@pytest.fixture(scope="module")
def corpus_fits(corpus_root):
    return fit.fit([corpus_root / f for f in DEFAULT_FOLDERS])


@pytest.fixture(scope="module")
def whole_corpus_fits(seven_gpu_folders):
    return fit.fit(seven_gpu_folders)


def _shipped(rs):
    """The preset path the corpus replay uses for this record set (its recorded instruction)."""
    gpu = rs.name.split("/")[0].lower()
    name = RECORDED_PATHS.get((gpu, rs.a_format, rs.acc))
    return load_model(gpu).find_path(rs.a_format, rs.b_format, rs.acc, name)


def _same(dp: Datapath, want, k: int) -> bool:
    for f in FIELDS:
        got, exp = getattr(dp, f), getattr(want, f)
        if f == "block_size":                  # any n >= K is one block: equivalent
            got, exp = min(got, k), min(exp, k)
        if got != exp:
            return False
    return True


def _recovers_its_preset(fits):
    for r in fits:
        path = _shipped(r.record)
        if path.status == "unexplained":
            assert not r.consistent and r.best and r.best[0][0] > 1000, r.record.name
            continue
        assert r.consistent, r.record.name
        assert any(_same(dp, path, r.record.k) for dp in r.consistent), \
            (r.record.name, [fit._dp_summary(dp, r.record.k) for dp in r.consistent][:5])


def test_the_default_folders_recover_their_presets(corpus_fits):
    assert len(corpus_fits) == 6
    _recovers_its_preset(corpus_fits)


@pytest.mark.slow
def test_every_explained_folder_recovers_its_preset(whole_corpus_fits):
    """All 40 sets (minutes on 2 cores; benchmarks/bench_fit.py prints the time per set)."""
    assert len(whole_corpus_fits) == 40
    _recovers_its_preset(whole_corpus_fits)


@pytest.mark.slow
def test_every_fp32_output_pins_the_datapath_down(whole_corpus_fits):
    _fp32_outputs_pin_the_datapath_down(whole_corpus_fits)


def _fp32_outputs_pin_the_datapath_down(fits):
    fp32 = [r for r in fits if r.record.acc == "fp32" and r.consistent]
    assert fp32, "no fitted fp32-output set to check"     # a filter that leaves none is a failure
    for r in fp32:
        amb = set(r.ambiguities)
        # H100/H200 FP8 rows were recorded with C = 0: where C goes (inside the alignment,
        # after the sum, or added last behind a lowered k32 block) cannot be seen
        if r.record.a_format in ("e4m3", "e5m2") and r.record.name.startswith("H"):
            assert amb == {"c_placement", "lowered_k"}, r.record.name
        else:
            assert amb == set(), (r.record.name, amb)


def test_fp32_outputs_pin_the_datapath_down(corpus_fits):
    _fp32_outputs_pin_the_datapath_down(corpus_fits)


def test_the_pin_check_fails_when_its_filter_leaves_no_set():
    with pytest.raises(AssertionError, match="no fitted fp32-output set"):
        _fp32_outputs_pin_the_datapath_down([])


def test_probe_decides_the_ambiguity(corpus_fits):
    r = next(r for r in corpus_fits if r.record.name == "H100/E4M3->fp32")
    probe = next(p for p in r.probes if p.field == "c_placement")
    assert probe.predictions[0] != probe.predictions[1]
    one = fit.RecordSet("probe", "e4m3", "e4m3", "fp32", probe.a[None], probe.b[None],
                        np.array([probe.c]), np.zeros(1, np.uint32))
    preds = []
    for value in probe.values:
        dp = next(d for d in r.consistent if d.c_placement == value)
        preds.append(float(fit.predict_bits(one, dp).view(np.float32)[0]))
    assert tuple(preds) == probe.predictions
    assert "probe for c_placement" in fit.report([r])


def test_written_presets_load_and_reproduce(corpus_fits, corpus_root, tmp_path):
    v100 = [r for r in corpus_fits if r.record.name.startswith("V100")]
    assert v100, "no fitted V100 set to write"         # a filter that leaves none is a failure
    (path,) = fit.write_presets(v100, tmp_path)
    model = load_model(str(path))
    assert {p.output for p in model.paths} == {"fp32", "fp16"}
    assert all(res.mismatches == 0 for res in replay(corpus_root / "V100", model=str(path)))


def test_npz_records_and_a_known_datapath(tmp_path):
    """Records simulated with a known datapath (block 16, 13 bits, 14-bit RZ) are fitted back."""
    from tcsim import vectors
    from tcsim.mma import run_datapath
    true = Datapath(block_size=16, fraction_bits=13, output_precision=14)
    vs = vectors.random_vectors("e5m2", "e5m2", 600, 32, "narrow", seed=4)
    d = run_datapath(vs.a[:, None, :], vs.b[:, :, None], vs.c[:, None, None], true, "e5m2",
                     "e5m2", "fp32").reshape(-1)
    rec = tmp_path / "sim.npz"
    np.savez(rec, a_bits=vs.a.astype(np.float32).view(np.uint32),
             b_bits=vs.b.astype(np.float32).view(np.uint32),
             c_bits=vs.c.astype(np.float32).view(np.uint32), d_bits=d.view(np.uint32),
             a_format="e5m2", b_format="e5m2", acc="fp32")
    (r,) = fit.fit([rec])
    assert r.output_precision == 14
    assert any(_same(dp, true, 32) for dp in r.consistent)
    assert all(dp.block_size == 16 and dp.fraction_bits == 13 for dp in r.consistent)


def test_nothing_fits_is_reported():
    rng = np.random.default_rng(0)
    a = np.ones((40, 4))
    d = rng.integers(0x3F800000, 0x40000000, size=40).astype(np.uint32)   # noise
    rs = fit.RecordSet("noise", "fp16", "fp16", "fp32", a, a, np.zeros(40), d)
    r = fit.fit_one(rs)
    assert not r.consistent and r.best
    text = fit.report([r])
    assert "NOTHING FITS" in text and "row 0" in text
    table = fit.summary([r])
    assert "noise" in table and "NOTHING FITS (best:" in table and "0 fitted, 1 with no" in table


def test_cli(corpus_root, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tcsim.cli", "fit", str(corpus_root / "A2" / "fp16"),
                          "--out", str(tmp_path), "--probes-out", str(tmp_path / "p.npz"),
                          "--quiet", "--verbose"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "1 consistent configuration" in out.stdout
    assert (tmp_path / "a2-fit.toml").is_file() and (tmp_path / "p.npz").is_file()
    # rows that no configuration reproduces: recorded fp32 results with a flipped bit
    bad = tmp_path / "corrupt" / "X100" / "E5M2"
    bad.mkdir(parents=True)
    src = corpus_root / "H100" / "E5M2"
    for name in ("a_H100_E5M2.txt", "b_H100_E5M2.txt", "c_H100_fp32.txt", "d_H100_fp32.txt"):
        lines = (src / name).read_text().splitlines()[:300]
        if name.startswith("d_"):
            lines = [ln if i % 3 else ln[:20] + ("1" if ln[20] == "0" else "0") + ln[21:]
                     for i, ln in enumerate(lines)]
        (bad / name.replace("H100", "X100")).write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "tcsim.cli", "fit", str(bad), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 1 and "NOTHING FITS" in out.stdout, out.stdout[-2000:]


def test_fp8_fp16_output_rows_fit_only_the_lowered_mma_sync(corpus_fits):
    """The H100 FP8 fp16-output rows fit only as the lowered mma.sync (two HMMA steps, C last)."""
    r = next(r for r in corpus_fits if r.record.name == "H100/E4M3->fp16")
    assert r.consistent and all(dp.lowered_k == 32 for dp in r.consistent)
    text = fit.report([r])
    assert "lowered k32" in text and "NOTHING FITS" not in text


def test_extended_fields_are_tried(corpus_fits):
    """Clamps, subnormal handling, zero sign and overflow are tried on a consistent fit: the
    H100 fp16 rows hold subnormal inputs, which rule out flushing them; nothing in the corpus
    reaches the exponent clamp."""
    r = next(r for r in corpus_fits if r.record.name == "H100/fp16->fp32")
    ok, bad = r.extended["subnormal_inputs"]
    assert ok == ["keep"] and bad == ["flush"]
    ok, bad = r.extended["min_exp_limit"]
    assert None in ok and -133 in ok and not bad
    assert "rules out flush" in fit.report([r])


# ---- B200 (corpus folder of its own) ------------------------------------------------------------
def _b200_records(b200_root, fmts, acc=None):
    recs = fit.load_records([b200_root / "B200" / f for f in fmts])
    return [r for r in recs if acc is None or r.acc == acc]


def test_b200_fp8_fp16_output_rows_fit_only_the_lowered_mma_sync(b200_root):
    """B200 lowers FP8 mma.sync .f16 as Hopper does: every configuration that reproduces the
    10000 B200 rows is the k32 lowering onto two FP16 16-blocks with RNE steps, and the shipped
    b200 path is one of them."""
    for rs in _b200_records(b200_root, ("E4M3", "E5M2"), "fp16"):
        r = fit.fit_one(rs)
        assert r.consistent, rs.name
        assert all(dp.lowered_k == 32 and dp.block_size == 16 and dp.output_rounding == "rne"
                   for dp in r.consistent), rs.name
        assert any(_same(dp, _shipped(rs), rs.k) for dp in r.consistent), rs.name
        assert "lowered_k" not in r.ambiguities and "block_size" not in r.ambiguities


@pytest.fixture(scope="module")
def b200_tf32_fit(b200_root):
    (rs,) = _b200_records(b200_root, ("tf32",))
    return fit.fit_one(rs)


def test_b200_tf32_pins_25_fraction_bits(b200_tf32_fit):
    r, rs = b200_tf32_fit, b200_tf32_fit.record
    assert len(r.consistent) == 1 and r.consistent[0].fraction_bits == 25
    assert r.consistent[0].output_rounding == "rz" and r.consistent[0].block_size >= 4
    assert _same(r.consistent[0], _shipped(rs), rs.k)
    assert r.verdicts["fraction_bits"].pinned


def test_b200_tf32_rows_bound_the_block_size_without_pinning_it(b200_tf32_fit, tmp_path):
    """The 5000 B200 tf32 rows have K = 4: they show n >= 4, not n = 4 (the b200 preset says 8).
    The summary lists block_size as not pinned with a K = 8 probe that tells 4 from 8, and the
    written preset notes the bound instead of a fitted value."""
    r, rs = b200_tf32_fit, b200_tf32_fit.record
    assert rs.rows == 5000 and rs.k == 4
    text = fit.summary([r])
    assert re.search(r"^B200/tf32->fp32\s+5000\s+1\s+6/7\s+block_size >= 4 \(probe at K = 8\)",
                     text, re.M), text
    assert "block_size: at least 4; rows have K = 4" in fit.report([r])
    pr = next(p for p in r.probes if p.field == "block_size")
    first = r.consistent[0]
    got, want = _probe_bits(rs, pr, first, first.model_copy(update={"block_size": 8}))
    assert got == want and got[0] != got[1]
    shipped = _shipped(rs)
    assert shipped.block_size == 8 and \
        _probe_bits(rs, pr, shipped, shipped)[0][0] == want[1]     # the preset's 8 gives the 2nd
    (path,) = fit.write_presets([r], tmp_path)
    note = load_model(str(path)).paths[0].provenance["block_size"]
    assert note.startswith("FIT: at least 4; rows have K = 4"), note


@pytest.mark.slow
def test_every_b200_set_recovers_its_preset(b200_root):
    """All 8 B200 sets (minutes on 2 cores): the shipped b200 path is among the consistent
    configurations of each; the fp32 FP8 rows leave the lowering itself open (docs/hardware.md
    #blackwell; the probe b200-mma-sync-two-hmma-steps of tcsim.vectors.unit_probes decides)."""
    fits = fit.fit([b200_root / "B200"])
    assert len(fits) == 8
    _recovers_its_preset(fits)
    for r in fits:
        if r.record.a_format in ("e4m3", "e5m2") and r.record.acc == "fp32":
            assert "lowered_k" in r.ambiguities


def test_fit_reads_the_upstream_layout(corpus_root, b200_root, tmp_path):
    """tcsim fit on MATLAB-tensor-core/model_validation as cloned: GPU folders found, the CUDA/
    sources and MATLAB scripts skipped."""
    root = upstream_corpus_copy(corpus_root, b200_root, tmp_path / "model_validation")
    names = [rs.name for rs in fit.load_records([root])]
    assert names == ["B200/E4M3->fp32", "B200/E4M3->fp16", "B200/tf32->fp32", "H100/E4M3->fp32",
                     "H100/E4M3->fp16", "V100/fp16->fp32", "V100/fp16->fp16"]
    out = subprocess.run([sys.executable, "-m", "tcsim.cli", "fit", str(root / "B200" / "tf32"),
                          "--quiet"], capture_output=True, text=True, timeout=600)
    # the summary row: 40 rows, one configuration left, block_size bounded (K = 4) not pinned
    assert out.returncode == 0 and re.search(r"^B200/tf32->fp32\s+40\s+1\s+6/7\s+block_size >= 4",
                                              out.stdout, re.M), out.stdout


# ---- output paths are checked before the fit ----------------------------------------------------
def _tiny_record(tmp_path, dp=None, a=None, b=None, c=None, fmt="fp16", acc="fp32"):
    """An .npz record of rows simulated with ``dp`` (default: 4 random fp16 rows, K = 4)."""
    from tcsim.mma import run_datapath
    if a is None:
        rng = np.random.default_rng(7)
        a = np.round(rng.uniform(-2, 2, (4, 4)), 2).astype(np.float16).astype(np.float64)
        b, c = a[::-1].copy(), np.zeros(4)
    dp = dp or Datapath(block_size=4, fraction_bits=24)
    d = run_datapath(a[:, None, :], b[:, :, None], c[:, None, None], dp, fmt, fmt,
                     acc).reshape(-1).astype(np.float32)
    path = tmp_path / "tiny.npz"
    np.savez(path, a_bits=a.astype(np.float32).view(np.uint32),
             b_bits=b.astype(np.float32).view(np.uint32),
             c_bits=c.astype(np.float32).view(np.uint32), d_bits=d.view(np.uint32),
             a_format=fmt, b_format=fmt, acc=acc)
    return path


@pytest.mark.parametrize("option, value, message", [
    ("--probes-out", "missing/p.npz", "--probes-out: the folder of"),
    ("--probes-out", "folder", "is a folder, not a file"),
    ("--out", "a_file/presets", "--out: "),
])
def test_cli_checks_output_paths_before_fitting(tmp_path, option, value, message):
    rec = _tiny_record(tmp_path)
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "a_file").write_text("")
    out = subprocess.run([sys.executable, "-m", "tcsim.cli", "fit", str(rec), option,
                          str(tmp_path / value)], capture_output=True, text=True, timeout=600)
    # one error line and nothing else: no progress line, so no fitting was done
    assert out.returncode == 2 and out.stdout == "", out.stdout
    assert out.stderr.startswith("tcsim: error: ") and out.stderr.count("\n") == 1, out.stderr
    assert message in out.stderr


# ---- nothing claimed beyond what the rows show --------------------------------------------------
def _simulated(name, a, b, c, dp, fmt="fp16", acc="fp32"):
    """A RecordSet of rows simulated with ``dp`` (the fit must find dp's values among its own)."""
    from tcsim.mma import run_datapath
    d = run_datapath(a[:, None, :], b[:, :, None], c[:, None, None], dp, fmt, fmt,
                     acc).reshape(-1).astype(np.float32)
    return fit.RecordSet(name, fmt, fmt, acc, a, b, c, d.view(np.uint32))


def _random_rows(fmt, rows, k, seed=3, lo=-2.0, hi=2.0):
    from tcsim.formats.conversion import round_to_format
    rng = np.random.default_rng(seed)
    return round_to_format(rng.uniform(lo, hi, (rows, k)), fmt)


def _row(r):
    """The summary table's row of one fitted set, from its "not pinned" column on."""
    line = next(ln for ln in fit.summary([r]).splitlines() if ln.startswith(r.record.name + " "))
    return line.split(None, 4)[4]


def _note(toml_text, field):
    """The provenance note of ``field`` in a preset of one path."""
    notes = toml_text.split("[paths.provenance]", 1)[1]
    return next(ln for ln in notes.splitlines() if ln.startswith(f"{field} = ")).split(
        " = ", 1)[1]


def _probe_bits(rs, pr, dp, rival):
    """The probe row's results under dp and its rival, as fp32 bits, and the probe's own."""
    one = fit.RecordSet("probe", rs.a_format, rs.b_format, rs.acc, pr.a[None], pr.b[None],
                        np.array([pr.c]), np.zeros(1, np.uint32))
    got = [int(fit.predict_bits(one, d)[0]) for d in (dp, rival)]
    want = [int(np.float32(v).view(np.uint32)) for v in pr.predictions]
    return got, want


@pytest.fixture(scope="module")
def bound_fit():
    """64 random fp16 rows of K = 4 simulated with a block of 8, fitted."""
    a = _random_rows("fp16", 64, 4)
    rs = _simulated("S/bound->fp32", a, a[::-1].copy(), _random_rows("fp16", 64, 1)[:, 0],
                    Datapath(block_size=8, fraction_bits=24))
    return fit.fit_one(rs)


def test_a_block_of_k_is_a_bound_not_a_fit(bound_fit):
    """K = 4 rows show n >= 4 only: block_size is not pinned, a K = 8 probe decides n = 4 vs 8."""
    r, rs = bound_fit, bound_fit.record
    assert r.consistent and {dp.block_size for dp in r.consistent} == {4}
    assert _row(r).startswith("block_size >= 4 (probe at K = 8)"), _row(r)
    text = fit.report([r])
    assert "block_size: at least 4; rows have K = 4" in text
    assert "probe for block_size 4 vs 8 (a row of K = 8, as one instruction)" in text
    pr = next(p for p in r.probes if p.field == "block_size")
    first = r.consistent[0]
    got, want = _probe_bits(rs, pr, first, first.model_copy(update={"block_size": 8}))
    assert got == want and got[0] != got[1]
    assert _note(fit.preset_toml([r]), "block_size").startswith(
        '"FIT: at least 4; rows have K = 4')


def test_fraction_bits_beyond_the_searched_range_are_tried():
    """Rows that need f >= 34 (a 2^-34 product left by a cancellation) but never more: only
    f = 34, the end of the search, survives, and every f up to 48 (the simulator's most) fits
    too, so fraction_bits is a lower bound, not a fit."""
    a, b = _random_rows("fp16", 64, 4), _random_rows("fp16", 64, 4, seed=4)
    c = _random_rows("fp16", 64, 1, seed=5)[:, 0]
    a[:4], b[:4], c[:4] = [1.0, -1.0, 2.0 ** -17, 0.0], [1.0, 1.0, 2.0 ** -17, 0.0], 0.0
    rs = _simulated("S/frac->fp32", a, b, c, Datapath(block_size=4, fraction_bits=40))
    r = fit.fit_one(rs)
    assert {dp.fraction_bits for dp in r.consistent} == {34}
    assert "fraction_bits >= 34" in _row(r), _row(r)
    assert "fraction_bits: at least 34: every value from 34 to 48" in fit.report([r])
    assert _note(fit.preset_toml([r]), "fraction_bits").startswith('"FIT: at least 34')
    v = r.verdicts["fraction_bits"]
    assert not v.pinned and v.values[0] == "34" and v.values[-1] == "48", v


def test_output_precision_the_rows_only_bound():
    """Small integer results show a few significant bits: a datapath keeping all 24 fits them
    too, so output_precision is not pinned."""
    rng = np.random.default_rng(5)
    a = rng.integers(-3, 4, (48, 4)).astype(float)
    rs = _simulated("S/outp->fp32", a, a[::-1].copy(), np.zeros(48),
                    Datapath(block_size=4, fraction_bits=24))
    r = fit.fit_one(rs)
    assert r.output_precision < 8
    assert f"output_precision >= {r.output_precision}" in _row(r), _row(r)
    assert _note(fit.preset_toml([r]), "output_precision").startswith(
        f'"FIT: at least {r.output_precision}')


def test_modes_no_row_exercises_are_marked_not_fitted():
    """Rows without subnormals, zeros or overflow: the modes stay open; the preset keeps their
    defaults noted NOT FITTED, and a probe is proposed for each mode the candidate rows reach."""
    a = _random_rows("fp16", 64, 4, lo=0.5, hi=2.0)
    rs = _simulated("S/modes->fp32", a, a[::-1].copy(), np.full(64, 0.25),
                    Datapath(block_size=4, fraction_bits=24))
    r = fit.fit_one(rs)
    assert re.search(r"\s6/6\s", _row(r)), _row(r)
    text = fit.report([r])
    for mode in ("min_exp_limit", "subnormal_inputs", "subnormal_outputs", "zero_sign",
                 "overflow", "zero_operand_exponent"):
        assert f"     {mode}: no row exercises it" in text, mode
    toml = fit.preset_toml([r])
    for mode in ("overflow", "zero_sign", "subnormal_inputs", "zero_operand_exponent"):
        assert _note(toml, mode).startswith('"NOT FITTED: no row exercises it'), mode
    pr = next(p for p in r.probes if p.field == "zero_sign")
    first = r.consistent[0]
    got, want = _probe_bits(rs, pr, first, first.model_copy(update={"zero_sign": "ieee"}))
    assert got == want and got[0] != got[1]


def test_a_c_join_the_rows_cannot_see_is_not_pinned():
    """Rows recorded with C = 0 cannot show where C joins: the candidates disagree on
    c_placement, and the preset says so instead of stating the value written as fitted."""
    a = _random_rows("fp16", 64, 4)
    rs = _simulated("S/cjoin->fp32", a, a[::-1].copy(), np.zeros(64),
                    Datapath(block_size=4, fraction_bits=24))
    r = fit.fit_one(rs)
    assert {dp.c_placement for dp in r.consistent} == {"inside", "after"}
    assert "c_placement" in _row(r), _row(r)
    assert _note(fit.preset_toml([r]), "c_placement").startswith(
        '"FIT: after, inside fit every row')


def test_a_lowering_the_rows_k_cannot_hold_is_not_tried(monkeypatch):
    """FP8 rows of K = 16 cannot hold the k32 lowering: lowered_k is not pinned (not tried), and
    a K = 32 probe is proposed."""
    monkeypatch.setattr(fit, "FRACTION_BITS", (12, 13, 14))     # a small search, same audit
    from tcsim import vectors
    vs = vectors.random_vectors("e4m3", "e4m3", 64, 16, "narrow", seed=2)
    rs = _simulated("S/lowk->fp32", vs.a, vs.b, np.zeros(64),
                    Datapath(block_size=16, fraction_bits=13, output_precision=14), fmt="e4m3")
    r = fit.fit_one(rs)
    assert r.consistent and "lowered_k" not in r.ambiguities
    assert "lowered_k not tried (probe at K = 32)" in _row(r), _row(r)
    assert "lowered_k: not tried: the k32 lowering needs rows of K a multiple of 32; rows have " \
           "K = 16" in fit.report([r])


def test_a_sum_rounding_the_rows_do_not_reach_is_not_fitted(monkeypatch):
    """C joining after the product sum is pinned by the rows, but the sum's own rounding (24 bits
    RZ in the search) is not reached by small sums: both are marked NOT FITTED."""
    monkeypatch.setattr(fit, "FRACTION_BITS", (8, 10, 12))
    a = _random_rows("fp16", 48, 4, lo=0.01, hi=0.1)
    dp = Datapath(block_size=4, fraction_bits=10, c_placement="after", product_sum_precision=24,
                  product_sum_rounding="rz")
    rs = _simulated("S/after->fp32", a, np.ones_like(a), np.full(48, 1000.0), dp)
    r = fit.fit_one(rs)
    assert r.consistent and all(d.c_placement == "after" for d in r.consistent)
    toml = fit.preset_toml([r])
    for mode in ("product_sum_precision", "product_sum_rounding"):
        assert _note(toml, mode).startswith('"NOT FITTED:'), mode
        assert not r.verdicts[mode].pinned


def test_written_probes_of_several_k_keep_their_predictions(bound_fit, tmp_path):
    """The K = 8 block probe and the K = 4 mode probes go to one file padded to K = 8 with zero
    products; every padded row still gives both predicted results (bits), the all -0 row of the
    zero_sign probe included."""
    r, rs = bound_fit, bound_fit.record
    vs = fit.probe_vectors([r])
    assert vs.a.shape == (len(r.probes), 8)
    assert {"block_size", "zero_sign"} <= {p.field for p in r.probes}
    for i, pr in enumerate(r.probes):
        one = fit.RecordSet("p", rs.a_format, rs.b_format, rs.acc, vs.a[i:i + 1], vs.b[i:i + 1],
                            vs.c[i:i + 1], np.zeros(1, np.uint32))
        got = [int(fit.predict_bits(one, dp)[0]) for dp in pr.configs]
        assert got == [int(np.float32(v).view(np.uint32)) for v in pr.predictions], pr.field
        assert "only)" not in vs.names[i]
    saved = vs.save(tmp_path / "p.npz")
    assert np.array_equal(np.load(saved)["a_bits"], vs.a.astype(np.float32).view(np.uint32))
