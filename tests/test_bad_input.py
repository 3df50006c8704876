"""Bad input to the command line and the API: one clear line, never a traceback (issue 15 items
5-7, 9-11; issue 16 item 8).

The CLI cases run ``tcsim.cli.main`` in this process (a traceback would escape as an exception
and fail the test); the cases that need a real process (a closed pipe, a missing extra) run one.
Every bad file is built here, in tmp_path.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import tcsim
from tcsim import ConfigError, Datapath, FormatError, TcsimError
from tcsim.cli import main

BINARY = bytes(range(256)) * 4          # not UTF-8 (0x80.. are stray continuation bytes)


def cli(argv, capsys):
    """(exit code, stdout, stderr) of ``tcsim ARGV`` run in this process."""
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _npy(path: Path, arr) -> Path:
    np.save(path, arr)
    return path


# ---- bad files, built in tmp_path ------------------------------------------------------------

def _corpus(root: Path, a_text=None, raw_a: bytes = None) -> Path:
    """A one-row Khattak-Mikaitis folder root/H100/E4M3 whose a file is replaced."""
    folder = root / "H100" / "E4M3"
    folder.mkdir(parents=True)
    a = folder / "a_H100_E4M3.txt"
    if raw_a is not None:
        a.write_bytes(raw_a)
    else:
        a.write_text(a_text if a_text is not None else "3f800000 3f800000\n")
    (folder / "b_H100_E4M3.txt").write_text("3f800000 3f800000\n")
    (folder / "c_H100_fp32.txt").write_text("0" * 32 + "\n")
    (folder / "d_H100_fp32.txt").write_text("01000000000000000000000000000000\n")
    return root


def _fit_record(path: Path, **changes) -> Path:
    """A tcsim .npz fit record (two rows, K = 2) with some arrays changed or removed (None)."""
    one = np.float32(1.0).view(np.uint32)
    arrays = dict(a_bits=np.full((2, 2), one, np.uint32), b_bits=np.full((2, 2), one, np.uint32),
                  c_bits=np.zeros(2, np.uint32),
                  d_bits=np.full(2, np.float32(2.0).view(np.uint32), np.uint32),
                  a_format=np.array("e4m3"), b_format=np.array("e4m3"), acc=np.array("fp32"))
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


def _valid_npz_bytes(tmp_path: Path) -> bytes:
    return _fit_record(tmp_path / "valid.npz").read_bytes()


def _tar(path: Path, members: dict) -> Path:
    """A tar holding ``members`` (name -> bytes)."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _ab(tmp_path, a=None, b=None):
    a = np.array([[1.0, 2.0]]) if a is None else a
    b = np.array([[1.0], [0.5]]) if b is None else b
    return _npy(tmp_path / "a.npy", a), _npy(tmp_path / "b.npy", b)


def _case_model_binary(t):
    (t / "bin.toml").write_bytes(BINARY)
    return ["models", t / "bin.toml"], "bin.toml"


def _case_model_latin1(t):
    (t / "latin1.toml").write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    a, b = _ab(t)
    return ["mma", a, b, "--model", t / "latin1.toml"], "latin1.toml"


def _case_sweep_grid_binary(t):
    (t / "grid.toml").write_bytes(BINARY)
    return ["sweep", t / "grid.toml", "--out", t / "out", "--quiet"], "grid.toml"


def _case_corpus_binary_a(t):
    return ["corpus", _corpus(t / "c", raw_a=BINARY), "--quiet"], "a_H100_E4M3.txt"


def _case_corpus_negative_hex(t):
    return ["corpus", _corpus(t / "c", "-1 3f800000\n"), "--quiet"], "a_H100_E4M3.txt"


def _case_corpus_wide_hex(t):
    return ["corpus", _corpus(t / "c", "1" + "0" * 20 + " 3f800000\n"), "--quiet"], \
        "a_H100_E4M3.txt"


def _case_fit_truncated(t):
    (t / "r.npz").write_bytes(_valid_npz_bytes(t)[:200])
    return ["fit", t / "r.npz", "--quiet"], "r.npz"


def _case_fit_empty(t):
    (t / "r.npz").write_bytes(b"")
    return ["fit", t / "r.npz", "--quiet"], "r.npz"


def _case_fit_garbage(t):
    (t / "r.npz").write_bytes(BINARY)
    return ["fit", t / "r.npz", "--quiet"], "r.npz"


def _case_fit_pickled(t):
    return ["fit", _fit_record(t / "r.npz", a_bits=np.array([{"x": 1}], dtype=object)),
            "--quiet"], "r.npz"


def _case_fit_missing_key(t):
    return ["fit", _fit_record(t / "r.npz", d_bits=None), "--quiet"], "d_bits"


def _case_fit_wrong_dtype(t):
    return ["fit", _fit_record(t / "r.npz", a_bits=np.ones((2, 2))), "--quiet"], "a_bits"


def _case_fit_wrong_shape(t):
    return ["fit", _fit_record(t / "r.npz", a_bits=np.ones(4, np.uint32)), "--quiet"], "a_bits"


def _case_fit_rows_disagree(t):
    return ["fit", _fit_record(t / "r.npz", c_bits=np.zeros(3, np.uint32)), "--quiet"], "c_bits"


def _case_replay_empty(t):
    (t / "rec.npz").write_bytes(b"")
    return ["validate", "replay", t / "rec.npz", "--quiet"], "rec.npz"


def _case_replay_corrupt(t):
    (t / "rec.npz").write_bytes(_valid_npz_bytes(t)[:300])
    return ["validate", "replay", t / "rec.npz", "--quiet"], "rec.npz"


def _case_replay_gemm_corrupt(t):
    (t / "gemm__x.npz").write_bytes(BINARY)
    return ["validate", "replay", t / "gemm__x.npz", "--quiet"], "gemm__x.npz"


def _case_replay_gemm_missing_keys(t):
    np.savez(t / "gemm__y.npz", x_bits=np.zeros((1, 1), np.uint32))
    return ["validate", "replay", t / "gemm__y.npz", "--quiet"], "gemm__y.npz"


def _record_arrays(**changes) -> dict:
    """A gpu_validate record (one row, K = 2, every metadata name) with some arrays changed."""
    from gpu_validate.records import REQUIRED_META
    one = np.float32(1.0).view(np.uint32)
    arrays = {k: np.array("x") for k in REQUIRED_META}
    arrays.update(a_format=np.array("e4m3"), b_format=np.array("e4m3"), acc=np.array("fp32"),
                  synthetic=np.array("false"), a_bits=np.full((1, 2), one, np.uint32),
                  b_bits=np.full((1, 2), one, np.uint32), c_bits=np.zeros(1, np.uint32),
                  d_bits=np.full(1, np.float32(2.0).view(np.uint32), np.uint32))
    arrays.update(changes)
    return arrays


def _case_replay_record_wrong_dtype(t):
    np.savez(t / "rec.npz", **_record_arrays(a_bits=np.ones((1, 2))))
    return ["validate", "replay", t / "rec.npz", "--quiet"], "rec.npz"


def _case_replay_record_pickled_names(t):
    np.savez(t / "rec.npz", **_record_arrays(names=np.array([{"row": 0}], dtype=object)))
    return ["validate", "replay", t / "rec.npz", "--quiet"], "rec.npz"


def _case_mma_4d(t):
    a, b = _ab(t, np.ones((1, 1, 1, 2)), np.ones((1, 1, 2, 1)))
    return ["mma", a, b], "a"


def _case_mma_out_missing_folder(t):
    a, b = _ab(t)
    return ["mma", a, b, "--out", t / "nowhere" / "d.npy"], "--out"


def _case_mma_c_not_fp32(t):
    a, b = _ab(t)
    return ["mma", a, b, "--c", _npy(t / "c.npy", np.array([[0.1]]))], "c.npy"


def _case_mma_c_overflows_fp32(t):
    a, b = _ab(t)
    return ["mma", a, b, "--c", _npy(t / "c.npy", np.array([[1e300]]))], "c.npy"


def _case_mma_not_npy(t):
    _, b = _ab(t)
    (t / "a.npy").write_bytes(BINARY)
    return ["mma", t / "a.npy", b], "a.npy"


def _case_mma_npz_given(t):
    np.savez(t / "a.npz", a=np.ones((1, 2)))
    _, b = _ab(t)
    return ["mma", t / "a.npz", b], "a.npz"


def _case_mma_void_codes_without_format(t):
    codes = np.array([[0x38, 0x38]], np.uint8).view(ml_dtypes.float8_e4m3fn)
    _, b = _ab(t)
    a = _npy(t / "a.npy", codes)                    # loads back as |V1
    return ["mma", a, b], "--a-format"


def _case_explain_bad_number(t):
    return ["explain", "--a", "1,x", "--b", "1,1"], "--a"


def _case_explain_decimal_float64_rounds(t):
    return ["explain", "--a", "1.00000000000000000001", "--b", "1"], "--a"


def _case_explain_c_float64_rounds(t):
    return ["explain", "--a", "1", "--b", "1", "--c", "0.1000000000000000000001"], "--c"


def _case_explain_negative_promotion(t):
    return ["explain", "--a", "1", "--b", "1", "--promotion", "-3"], "promotion_interval"


def _case_explain_negative_max_terms(t):
    return ["explain", "--example", "--max-terms", "-1"], "--max-terms"


def _case_suites_k_not_32(t):
    return ["validate", "suites", "--out", t / "s", "--k", "5"], "--k"


def _case_suites_no_rows(t):
    return ["validate", "suites", "--out", t / "s", "--rows", "0"], "--rows"


def _case_gemm_negative_m(t):
    return ["gemm", "--m", "-1", "--k", "32"], "--m"


def _case_gemm_zero_m(t):
    return ["gemm", "--m", "0", "--k", "32"], "--m"


def _case_gemm_zero_k(t):
    return ["gemm", "--k", "0"], "--k"


def _case_gemm_recipe_method(t):
    return ["gemm", "--recipe", "model_dump", "--k", "32"], "model_dump"


def _case_gemm_recipe_private(t):
    return ["gemm", "--recipe", "_consistent", "--k", "32"], "_consistent"


def _case_unpack_dot_member(t):
    return ["validate", "unpack", _tar(t / "p.tar", {".": b"x"}), "--into", t / "home"], "p.tar"


def _case_unpack_not_a_tar(t):
    (t / "p.tar").write_bytes(BINARY)
    return ["validate", "unpack", t / "p.tar", "--into", t / "home"], "p.tar"


def _xw(t, x=None, w=None):
    """--x / --w files of a small GEMM (K = 256), x replaced by ``x`` where given."""
    x = np.ones((2, 256), np.float32) if x is None else x
    w = np.ones((256, 2), np.float32) if w is None else w
    return ["--x", _npy(t / "x.npy", x), "--w", _npy(t / "w.npy", w)]


def _case_gemm_x_fp8_codes(t):
    """An ml_dtypes FP8 array saved with np.save loads back as |V1: numpy cast code 0x38 to
    the float 8.0 (its byte read as the digit '8') and the GEMM ran on that."""
    return ["gemm", *_xw(t, x=np.ones((2, 256)).astype(ml_dtypes.float8_e4m3fn))], "x.npy"


def _case_gemm_x_strings(t):
    return ["gemm", *_xw(t, x=np.full((2, 256), "a"))], "x.npy"


def _case_gemm_x_complex(t):
    """complex64 used to lose its imaginary part silently (the API refuses it)."""
    return ["gemm", *_xw(t, x=np.full((2, 256), 1 + 2j, np.complex64))], "complex64"


def _case_gemm_out_is_a_folder(t):
    """--out FOLDER wrote FOLDER.npy beside it and said "wrote FOLDER"."""
    (t / "results").mkdir()
    return ["gemm", *_xw(t), "--out", t / "results"], "results"


def _case_mma_out_is_a_folder(t):
    (t / "results").mkdir()
    return ["mma", *_ab(t), "--out", t / "results"], "results"


def _case_gemm_too_large_for_memory(t):
    """M x N float32 accumulator of 400 TB: a MemoryError traceback before."""
    return ["gemm", "--m", "10000000", "--n", "10000000", "--k", "1", "--recipe",
            "cublas_fast_accum"], "memory"


CASES = {name[len("_case_"):]: fn for name, fn in sorted(globals().items())
         if name.startswith("_case_")}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, capsys):
    """Each bad input of the fault campaign: exit 2, one stderr line that names the file or the
    argument, no traceback."""
    argv, names = CASES[case](tmp_path)
    code, _, err = cli(argv, capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tcsim: error: ") and names in lines[0], lines[0]
    assert "Traceback" not in err


def test_unpack_dot_member_writes_nothing(tmp_path, capsys):
    """A member named '.' is not written as a file at --into (15.11)."""
    code, _, _ = cli(["validate", "unpack", _tar(tmp_path / "p.tar", {".": b"x"}), "--into",
                      tmp_path / "home"], capsys)
    assert code == 2 and not (tmp_path / "home").exists()


def test_unpack_checks_every_archive_before_writing(tmp_path, capsys):
    """Several archives unpack all or nothing: the bad second one leaves no file of the first,
    and fixing it lets the same command succeed (15.11)."""
    good = _tar(tmp_path / "records-1.tar", {"h100/a.npz": b"1", "h100/b.npz": b"2"})
    bad = _tar(tmp_path / "records-2.tar", {"h100/c.npz": b"3", "../evil": b"4"})
    home = tmp_path / "home"
    code, _, err = cli(["validate", "unpack", good, bad, "--into", home], capsys)
    assert code == 2 and "records-2.tar" in err
    assert not home.exists() or not any(home.rglob("*.npz"))
    bad = _tar(tmp_path / "records-2.tar", {"h100/c.npz": b"3"})
    code, out, err = cli(["validate", "unpack", good, bad, "--into", home], capsys)
    assert code == 0, err
    assert sorted(p.name for p in home.rglob("*.npz")) == ["a.npz", "b.npz", "c.npz"]
    assert (home / "h100" / "c.npz").read_bytes() == b"3"


def test_unpack_refuses_the_same_member_twice(tmp_path, capsys):
    a = _tar(tmp_path / "records-1.tar", {"h100/a.npz": b"1"})
    b = _tar(tmp_path / "records-2.tar", {"h100/a.npz": b"2"})
    code, _, err = cli(["validate", "unpack", a, b, "--into", tmp_path / "home"], capsys)
    assert code == 2 and "h100/a.npz" in err and not (tmp_path / "home").exists()


def test_unpack_refuses_a_file_where_a_folder_must_go(tmp_path, capsys):
    """An existing file in the way of a member's folder is found before anything is written."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "h100").write_bytes(b"a file")
    a = _tar(tmp_path / "records-1.tar", {"zz/first.npz": b"1", "h100/a.npz": b"1"})
    code, _, err = cli(["validate", "unpack", a, "--into", home], capsys)
    assert code == 2 and "h100" in err and not (home / "zz").exists()


# ---- the API (15.5, 15.7, 15.9, 15.10) ---------------------------------------------------------

def _longdouble_is_wider() -> bool:
    return np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant


@pytest.mark.skipif(not _longdouble_is_wider(), reason="np.longdouble is float64 here")
def test_longdouble_values_are_checked_in_their_own_precision():
    """1 + 2^-60 as a long double rounds to 1.0 in float64, which e4m3 holds; the value itself
    is not representable and must be refused (15.5)."""
    one_plus = np.longdouble(1) + np.longdouble(2) ** -60
    a = np.array([[one_plus, 1.0]], dtype=np.longdouble)
    b = np.array([[1.0], [1.0]])
    with pytest.raises(FormatError, match=r"a\[0, 0\]"):
        tcsim.mma(a, b, a_format="e4m3", b_format="e4m3")
    with pytest.raises(FormatError, match="a_row"):
        tcsim.explain(a[0], b[:, 0])
    assert not tcsim.formats.is_representable(a, "e4m3")[0, 0]
    # exactly-float64 long doubles are fine, bit for bit the float64 answer
    ok = np.array([[1.5, 2.0 ** -7]], dtype=np.longdouble)
    want = tcsim.mma(ok.astype(np.float64), b, a_format="e4m3", b_format="e4m3")
    got = tcsim.mma(ok, b, a_format="e4m3", b_format="e4m3")
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()
    assert tcsim.explain(ok[0], b[:, 0]).result == float(want[0, 0])


def test_longdouble_c_of_explain_is_checked():
    one_plus = np.longdouble(1) + np.longdouble(2) ** -60
    if one_plus == 1:
        pytest.skip("np.longdouble is float64 here")
    with pytest.raises(FormatError, match="c"):
        tcsim.explain([1.0], [1.0], c=one_plus)


def test_explain_refuses_a_c_the_accumulator_cannot_hold():
    """explain used to cast C to float32 silently (0.1 -> its float32 neighbour)."""
    with pytest.raises(FormatError, match="c is not exactly representable in fp32"):
        tcsim.explain([1.0], [1.0], c=0.1)
    with pytest.raises(FormatError, match="fp16"):
        tcsim.explain([1.0], [1.0], c=2.0 ** -30, acc="fp16", model="h100")


@pytest.mark.parametrize("interval", [0, -3, 1.5, True])
def test_explain_refuses_a_bad_promotion_interval(interval):
    """A negative interval used to trace nothing and report 0.0 (exact 0.0) for 1 x 1."""
    with pytest.raises(ConfigError, match="promotion_interval"):
        tcsim.explain([1.0], [1.0], promotion_interval=interval)


def test_explain_refuses_non_numbers():
    with pytest.raises(FormatError, match="a_row"):
        tcsim.explain(["1", "x"], [1.0, 1.0])


@pytest.mark.parametrize("update", [{"block_size": 0}, {"fraction_bits": -5},
                                    {"block_size": None}, {"c_placement": "after"}])
def test_model_copy_validates(update):
    """Datapath.model_copy(update=...) used to skip validation: block_size=0 reached numba
    (SystemError), fraction_bits=-5 ran (15.7)."""
    dp = tcsim.load_model("h100").paths[0].datapath()
    with pytest.raises(ConfigError):
        dp.model_copy(update=update)
    path = tcsim.load_model("h100").paths[0]
    with pytest.raises(ConfigError):
        path.model_copy(update=update)


def test_model_copy_still_copies():
    dp = tcsim.load_model("h100").paths[0].datapath()
    assert dp.model_copy(update={"fraction_bits": 14}).fraction_bits == 14
    assert dp.model_copy() == dp


def test_validation_errors_are_config_errors_and_value_errors():
    """Every pydantic ValidationError reaches the user as a ConfigError (a TcsimError and a
    ValueError) keeping pydantic's field messages (15.10)."""
    for build in (lambda: Datapath(block_size=0), lambda: tcsim.Recipe(promotion_interval=0),
                  lambda: tcsim.Scaling(granularity="nope"),
                  lambda: tcsim.GpuModel.model_validate({"name": "x"}),
                  lambda: Datapath.model_validate({"fraction_bits": 99})):
        with pytest.raises(ConfigError) as info:
            build()
        assert isinstance(info.value, (TcsimError, ValueError))
        assert info.value.field_errors and "Input should" in str(info.value) or \
            "Field required" in str(info.value)
    with pytest.raises(ConfigError, match="block_size: Input should be greater than or equal"):
        Datapath(block_size=0)
    # a nested model's error keeps its place
    h100 = tcsim.load_model("h100")
    paths = [p.model_dump() for p in h100.paths]
    paths[1]["surprise"] = 1
    with pytest.raises(ConfigError, match=r"paths\.1\.surprise") as info:
        tcsim.GpuModel(name="x", paths=paths)
    assert info.value.field_errors[0]["loc"] == ("paths", 1, "surprise")


def test_load_model_refuses_binary_toml(tmp_path):
    (tmp_path / "bin.toml").write_bytes(BINARY)
    with pytest.raises(ConfigError, match="bin.toml.*UTF-8"):
        tcsim.load_model(tmp_path / "bin.toml")


def test_gemm_takes_a_recipe_name():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 256)), rng.standard_normal((256, 4))
    by_name = tcsim.gemm(x, w, recipe="cublas_fast_accum")
    by_object = tcsim.gemm(x, w, recipe=tcsim.Recipe.cublas_fast_accum())
    assert by_name.view(np.uint32).tolist() == by_object.view(np.uint32).tolist()
    for bad in ("nope", "model_dump", "_consistent", 3):
        with pytest.raises(ConfigError, match="recipe"):
            tcsim.gemm(x, w, recipe=bad)


@pytest.mark.parametrize("seed", [-1, "x", 1.5, True, [1, -2]])
def test_stochastic_encode_seed_errors(seed):
    with pytest.raises(FormatError, match="seed"):
        tcsim.encode(np.array([0.3]), "e4m3", "stochastic", seed=seed)
    with pytest.raises(FormatError, match="seed"):
        tcsim.round_to_format(np.array([0.3]), "e4m3", "stochastic", seed=seed)


def test_stochastic_encode_seed_still_accepts_ints_and_generators():
    x = np.array([0.3, 0.7])
    a = tcsim.encode(x, "e4m3", "stochastic", seed=5)
    assert a.tolist() == tcsim.encode(x, "e4m3", "stochastic", seed=np.int64(5)).tolist()
    assert a.tolist() == tcsim.encode(x, "e4m3", "stochastic",
                                      seed=np.random.default_rng(5)).tolist()


# ---- operands and outputs of tcsim mma / tcsim gemm -------------------------------------------

def _e8m0(values):
    return np.asarray(values, np.float64).astype(ml_dtypes.float8_e8m0fnu)


def test_e8m0_scales_saved_with_np_save_are_read_as_codes(tmp_path, capsys):
    """ml_dtypes float8_e8m0fnu scales saved with np.save load back as |V1; the API (with
    scale_format) and the CLI (--a-scale) read them as ue8m0 codes, bit for bit the result of
    the ml_dtypes scales (a ValueError traceback before)."""
    rng = np.random.default_rng(3)
    a = rng.integers(-4, 5, (2, 64)).astype(np.float64)
    b = rng.integers(-4, 5, (64, 3)).astype(np.float64)
    sa, sb = _e8m0(2.0 ** rng.integers(-3, 4, (2, 2))), _e8m0(2.0 ** rng.integers(-3, 4, (2, 3)))
    np.save(tmp_path / "sa.npy", sa)
    np.save(tmp_path / "sb.npy", sb)
    loaded = np.load(tmp_path / "sa.npy")
    assert loaded.dtype == np.dtype("V1")           # what the user gets back
    want = tcsim.mma(a, b, model="b200", path="mxf8f6f4", a_format="e4m3", b_format="e4m3",
                     a_scale=sa, b_scale=sb)
    got = tcsim.mma(a, b, model="b200", path="mxf8f6f4", a_format="e4m3", b_format="e4m3",
                    a_scale=loaded, b_scale=np.load(tmp_path / "sb.npy"), scale_format="ue8m0")
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()
    code, out, err = cli(["mma", _npy(tmp_path / "a.npy", a), _npy(tmp_path / "b.npy", b),
                          "--a-format", "e4m3", "--model", "b200", "--path", "mxf8f6f4",
                          "--a-scale", tmp_path / "sa.npy", "--b-scale", tmp_path / "sb.npy",
                          "--json"], capsys)
    assert code == 0, err
    import json
    bits = [int(r["bits"], 16) for r in json.loads(out)]
    assert bits == want.view(np.uint32).ravel().tolist()


def test_ue4m3_scale_codes_saved_with_np_save_are_read_as_codes():
    """Raw ue4m3 codes (|V1), sign bits and a zero included, give the bits of the
    float8_e4m3fn scales they were saved from."""
    sa = np.array([[0.5, -0.25, 0.0, 448.0]] * 2).astype(ml_dtypes.float8_e4m3fn)
    sb = np.array([[-2.0, 1.0]] * 4).astype(ml_dtypes.float8_e4m3fn)
    a, b = np.ones((2, 64)), np.ones((64, 2))
    kw = dict(model="b200", path="mxf4nvf4", a_format="e2m1", b_format="e2m1")
    want = tcsim.mma(a, b, a_scale=sa, b_scale=sb, **kw)
    got = tcsim.mma(a, b, a_scale=sa.view("V1"), b_scale=sb.view("V1"), scale_format="ue4m3",
                    **kw)
    assert got.view(np.uint32).tolist() == want.view(np.uint32).tolist()


def test_scale_codes_that_are_not_codes_of_the_format_are_refused():
    """A |V2 array holds no 1-byte scale codes: one FormatError naming the operand."""
    a, b = np.ones((1, 32)), np.ones((32, 1))
    with pytest.raises(FormatError, match="a_scale"):
        tcsim.mma(a, b, model="b200", path="mxf8f6f4", a_format="e4m3", b_format="e4m3",
                  a_scale=np.zeros((1, 1), np.uint16).view("V2"),
                  b_scale=_e8m0([[1.0]]), scale_format="ue8m0")


def test_gemm_with_w_in_pytorch_layout_names_the_shapes():
    """w given as (N, K) used to be reported as "K = 32 is not a multiple of the block size
    128" (w's N taken for K); the shapes are checked first and w.T is suggested."""
    x, w = np.ones((4, 256), np.float32), np.ones((32, 256), np.float32)
    with pytest.raises(tcsim.ShapeError) as info:
        tcsim.gemm(x, w)
    message = str(info.value)
    assert "block size" not in message
    assert "(4, 256)" in message and "(32, 256)" in message and "w.T" in message
    with pytest.raises(tcsim.ShapeError, match="w must be 2-D"):
        tcsim.gemm(x, np.ones(256, np.float32))
    with pytest.raises(tcsim.ShapeError) as info:           # no transpose fits: no hint
        tcsim.gemm(x, np.ones((32, 4), np.float32))
    assert "w.T" not in str(info.value) and "K = 256" in str(info.value)


def test_unreadable_npy_is_a_file_error(tmp_path, capsys):
    """A garbage .npy is an error about the file (InputFileError), not about shapes."""
    from tcsim.errors import InputFileError, ShapeError
    from tcsim.npzfile import read_npy
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"\x93NUMPY" + BINARY)
    with pytest.raises(InputFileError, match="bad.npy") as info:
        read_npy(bad, "A")
    assert not isinstance(info.value, ShapeError)
    code, _, err = cli(["mma", bad, _ab(tmp_path)[1]], capsys)
    assert code == 2 and "bad.npy" in err and len(err.strip().splitlines()) == 1


def _npy_bytes(header: str, data: bytes = b"\0" * 16) -> bytes:
    """A version 1.0 .npy file of ``header`` (padded, as np.save pads it) and ``data``."""
    text = header.encode("latin1")
    text += b" " * (-(10 + len(text) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + data


def _whole_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 256), np.float32))
    return buf.getvalue()


# broken .npy files: each must be an error about the file, whichever operand it is
BROKEN_NPY = {
    "empty": lambda: b"",
    "magic only": lambda: b"\x93NUMPY\x01\x00",
    "truncated header": lambda: _whole_npy()[:60],
    "truncated data": lambda: _whole_npy()[:-5],
    "random bytes": lambda: np.random.default_rng(0).bytes(300),
    "random bytes after the magic": lambda: b"\x93NUMPY\x01\x00" +
    np.random.default_rng(1).bytes(300),
    # numpy's Python 2 fallback tokenises this header and raised tokenize.TokenError
    "unclosed bracket in the header": lambda: _npy_bytes("{'descr': '<f4', 'shape': ((2,"),
    # a header claiming ~400 GB over 16 bytes of data: numpy's MemoryError said "not enough
    # memory" without naming the file
    "header claims a huge shape": lambda: _npy_bytes(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999,), }"),
    # numpy's OverflowError escaped as a traceback
    "header shape beyond int64": lambda: _npy_bytes(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }"),
    "raw 1-byte codes, truncated": lambda: _npy_bytes(
        "{'descr': '<f1', 'fortran_order': False, 'shape': (2, 256), }", b"\x38" * 10),
}


@pytest.mark.parametrize("broken", sorted(BROKEN_NPY))
def test_broken_npy_is_a_file_error(broken, tmp_path):
    """read_npy / read_real_npy: InputFileError naming the file, never another exception."""
    from tcsim.errors import InputFileError, ShapeError
    from tcsim.npzfile import read_npy, read_real_npy
    bad = tmp_path / "broken.npy"
    bad.write_bytes(BROKEN_NPY[broken]())
    for read in (read_npy, read_real_npy):
        with pytest.raises(InputFileError, match="broken.npy") as info:
            read(bad, "A")
        assert not isinstance(info.value, ShapeError)


@pytest.mark.parametrize("command", ["mma", "gemm"])
@pytest.mark.parametrize("broken", sorted(BROKEN_NPY))
def test_broken_npy_given_to_the_cli_is_one_line_naming_it(broken, command, tmp_path, capsys):
    """A truncated or garbage .npy operand of tcsim mma / gemm: exit 2, one line naming the
    file, nothing run."""
    bad = tmp_path / "broken.npy"
    bad.write_bytes(BROKEN_NPY[broken]())
    a, b = _ab(tmp_path)
    argv = ["mma", bad, b] if command == "mma" else ["gemm", "--x", bad, "--w", b]
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == "", (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tcsim: error: ") and str(bad) in lines[0], lines[0]


def test_out_path_errors_are_output_file_errors(tmp_path):
    """A --out that cannot be written is an OutputFileError (a file error, not a shape one)."""
    from tcsim.errors import OutputFileError, ShapeError
    from tcsim.npzfile import npy_out_path
    with pytest.raises(OutputFileError, match="--out") as info:
        npy_out_path(str(tmp_path))
    assert not isinstance(info.value, ShapeError)
    with pytest.raises(OutputFileError, match="does not exist"):
        npy_out_path(str(tmp_path / "nowhere" / "y"))
    assert npy_out_path(str(tmp_path / "y")) == str(tmp_path / "y") + ".npy"
    assert npy_out_path(None) is None


@pytest.mark.parametrize("command", ["mma", "gemm"])
def test_out_without_npy_names_the_file_written(tmp_path, capsys, command):
    """np.save appends '.npy': the message names that file (it said "wrote y")."""
    args = ["mma", *_ab(tmp_path)] if command == "mma" else ["gemm", *_xw(tmp_path)]
    code, _, err = cli([*args, "--out", tmp_path / "y"], capsys)
    assert code == 0, err
    assert (tmp_path / "y.npy").is_file() and not (tmp_path / "y").exists()
    assert f"wrote {tmp_path / 'y.npy'}" in err


def test_gemm_keeps_float64_and_integer_inputs(tmp_path, capsys):
    """--x / --w float64 values reach tcsim.gemm as they are (not rounded to float32 first),
    integers exactly: the same bits as the API on the same arrays."""
    import json
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 256)), rng.integers(-3, 4, (256, 2))
    code, out, err = cli(["gemm", *_xw(tmp_path, x=x, w=w), "--out", tmp_path / "y.npy",
                          "--json"], capsys)
    assert code == 0, err
    want = tcsim.gemm(x, w.astype(np.float64))
    assert np.load(tmp_path / "y.npy").view(np.uint32).tolist() == \
        want.view(np.uint32).tolist()
    assert json.loads(out)[0]["K"] == 256


def test_memory_error_inside_a_command_is_one_line(tmp_path, capsys, monkeypatch):
    """A GEMM whose arrays do not fit (numpy's MemoryError from tcsim.gemm) is one line."""
    import sys as _sys

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 3.64 TiB for an array with shape (1000000, "
                          "1000000) and data type float32")
    monkeypatch.setattr(_sys.modules["tcsim.gemm"], "gemm", too_big)
    code, _, err = cli(["gemm", *_xw(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("tcsim: error: not enough memory: Unable to allocate 3.64 TiB")


def test_ml_dtypes_scales_of_the_other_format_are_checked():
    """Only codes of the scale format itself skip the representability check: an e4m3 array
    given as ue8m0 scales holds values (3.0 is no power of two), checked as such."""
    from tcsim.scales import decode_scales
    e4m3 = np.array([[3.0, 1.0]]).astype(ml_dtypes.float8_e4m3fn)
    with pytest.raises(FormatError, match=r"a_scale\[0, 0\] = 3.0"):
        decode_scales(e4m3, "ue8m0", "a_scale", None)
    e8m0 = np.array([[4.0, 0.5]]).astype(ml_dtypes.float8_e8m0fnu)
    values, exps = decode_scales(e8m0, "ue8m0", "a_scale", None)
    assert values.tolist() == [[4.0, 0.5]] and exps.tolist() == [[2, -1]]
