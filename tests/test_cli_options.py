"""The command line's options (issue 16 item 8): formats inferred as the API does, raw float8
codes, batched operands, exact C, a closed pipe, a missing extra, and --help for every option."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

import tcsim
from tcsim.cli import build_parser, main
from tcsim.cli.parser import all_parsers


def cli(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _bits(rows):
    return [r["bits"] for r in rows]


def _api_bits(d):
    return [f"{int(v):#x}" for v in d.view(np.uint32).reshape(-1)]


def test_every_option_has_help_and_every_help_shows_defaults():
    """Walk every (sub)parser: each option has a help line, defaults are shown, and no help
    text sends the user to a source file."""
    parsers = all_parsers(build_parser())
    assert len(parsers) >= 15             # tcsim, 9 commands, validate's 5
    for parser in parsers:
        assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            assert action.help and action.help != argparse.SUPPRESS, \
                f"{parser.prog} {action.option_strings or action.dest}: no help"
            if action.default not in (None, False) and action.option_strings:
                assert f"(default: {action.default})" in " ".join(text.split()), \
                    f"{parser.prog} {action.option_strings}: default not shown"
        assert not re.search(r"\w\.(py|md|sh)\b|tcsim/|\.\./shared", text), \
            f"{parser.prog} --help points at a file: {text}"


def test_mma_infers_float16_from_the_dtype(tmp_path, capsys):
    """float16 .npy inputs are fp16, as tcsim.mma infers (the CLI used to force e4m3)."""
    a = np.array([[1.0, 2.0 ** -11, 3.0]], np.float16)
    b = np.array([[1.0], [1.0], [2.0 ** -9]], np.float16)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    code, out, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--json"], capsys)
    assert code == 0, err
    assert _bits(json.loads(out)) == _api_bits(tcsim.mma(a, b))


def test_mma_reads_float8_arrays_saved_with_np_save(tmp_path, capsys):
    """ml_dtypes float8 arrays saved with np.save load back as |V1: read as codes of the
    format given (the API takes them the same way); without a format, a clear error."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 32)).astype(ml_dtypes.float8_e4m3fn)
    b = rng.standard_normal((32, 3)).astype(ml_dtypes.float8_e5m2)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert np.load(tmp_path / "a.npy").dtype == np.dtype("V1")
    want = _api_bits(tcsim.mma(a, b))
    code, out, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--a-format", "e4m3",
                          "--b-format", "e5m2", "--json"], capsys)
    assert code == 0, err
    assert _bits(json.loads(out)) == want
    raw_a = np.load(tmp_path / "a.npy")       # e5m2 is saved as '<f1', which np.load refuses
    assert _api_bits(tcsim.mma(raw_a, b, a_format="e4m3")) == want
    code, _, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--a-format", "fp16",
                        "--b-format", "e5m2"], capsys)
    assert code == 2 and "1-byte" in err and "fp16" in err
    with pytest.raises(tcsim.FormatError, match="a_format"):
        tcsim.mma(raw_a, b)


def test_mma_batched_operands(tmp_path, capsys):
    """3-D .npy operands (a batch) print one row per (batch, i, j)."""
    rng = np.random.default_rng(2)
    a = tcsim.round_to_format(rng.standard_normal((2, 3, 32)), "e4m3")
    b = tcsim.round_to_format(rng.standard_normal((2, 32, 2)), "e4m3")
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    code, out, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["batch"], r["i"], r["j"]) for r in rows] == list(np.ndindex(2, 3, 2))
    assert _bits(rows) == _api_bits(tcsim.mma(a, b, a_format="e4m3", b_format="e4m3"))


def test_mma_c_values_are_checked_not_cast(tmp_path, capsys):
    """--c takes any float array whose values the accumulator holds exactly; others are
    refused as tcsim.mma refuses them (0.1 and 1e300 used to be cast to float32)."""
    a, b = np.array([[1.0, 2.0 ** -7]]), np.array([[1.0], [2.0 ** -7]])
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    for c in (np.array([[0.5]]), np.array([[0.5]], np.float16)):
        np.save(tmp_path / "c.npy", c)
        code, out, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--c",
                              tmp_path / "c.npy", "--json"], capsys)
        assert code == 0, err
        want = tcsim.mma(a, b, np.float32(c), a_format="e4m3", b_format="e4m3")
        assert _bits(json.loads(out)) == _api_bits(want)
    for bad in (0.1, 1e300):
        np.save(tmp_path / "c.npy", np.array([[bad]]))
        code, _, err = cli(["mma", tmp_path / "a.npy", tmp_path / "b.npy", "--c",
                            tmp_path / "c.npy"], capsys)
        assert code == 2 and "not exactly representable in fp32" in err and "c.npy" in err
        with pytest.raises(tcsim.FormatError):
            tcsim.mma(a, b, np.array([[bad]]), a_format="e4m3", b_format="e4m3")


def test_closed_pipe_exits_quietly(tmp_path):
    """``tcsim mma ... | head``: the reader goes away; no BrokenPipeError traceback."""
    np.save(tmp_path / "a.npy", np.ones((8, 32)))
    np.save(tmp_path / "b.npy", np.ones((32, 8)))
    proc = subprocess.Popen([sys.executable, "-m", "tcsim.cli", "mma", str(tmp_path / "a.npy"),
                             str(tmp_path / "b.npy")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()                   # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=600) == 141
    assert err == "", err


def test_sweep_without_the_explore_extra_stops_before_computing(tmp_path, capsys,
                                                                  monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text("[workload]\nm = [4]\nn = [4]\nk = [128]\n")
    monkeypatch.setitem(sys.modules, "pandas", None)       # import pandas now fails
    code, _, err = cli(["sweep", grid, "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2 and "pip install 'tcsim[explore]'" in err and "pandas" in err
    assert not (tmp_path / "out").exists()
