"""The command line, run as a user would (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run(*args, check=False):
    return subprocess.run([sys.executable, "-m", "tcsim.cli", *args], capture_output=True,
                          text=True, timeout=600)


def test_corpus_command_prints_table_and_exits_zero(seven_gpu_folders):
    out = run("corpus", *map(str, seven_gpu_folders), "--quiet")
    assert out.returncode == 0, out.stderr
    assert "0 mismatches in explained sets" in out.stdout
    assert "0 set(s) known to be unexplained" in out.stdout
    assert out.stdout.count(" ok") == 40


def test_corpus_command_fails_on_mismatch(corpus_root):
    out = run("corpus", str(corpus_root / "Ada" / "E4M3"), "--model", "h100", "--json")
    assert out.returncode == 1
    rows = json.loads(out.stdout)
    assert any(r["mismatches"] > 0 and not r["ok"] for r in rows)


def test_corpus_command_csv(corpus_root):
    out = run("corpus", str(corpus_root / "V100"), "--csv", "--quiet")
    assert out.returncode == 0
    assert out.stdout.splitlines()[0].startswith("gpu,fmt,output,rows,mismatches")


def test_bad_input_gives_clear_errors(tmp_path):
    out = run("corpus", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "no such folder" in out.stderr
    out = run("models", "nosuchgpu")
    assert out.returncode == 2 and "unknown model 'nosuchgpu'" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "h100"\nname = "x"\nsurprise = 1\n')
    out = run("models", str(bad))
    assert out.returncode == 2 and "surprise" in out.stderr and "bad.toml" in out.stderr


def test_models_command():
    out = run("models")
    assert out.returncode == 0
    for name in ("v100", "a100", "h100", "b200", "ideal", "fp32-fma"):
        assert f"{name}:" in out.stdout
    out = run("models", "h100", "--json")
    data = json.loads(out.stdout)
    assert data[0]["name"] == "h100"
    lowered = [p for p in data[0]["paths"] if p["lowered_k"]]
    assert {p["output"] for p in lowered} == {"fp16", "fp32"} and len(lowered[0]["k_order"]) == 32
    text = run("models", "h100").stdout
    assert "path mma.sync  n=16  f=25    out 11 bits RNE, lowered k32" in text


@pytest.mark.parametrize("args", [["--help"]] + [[c, "--help"] for c in ("corpus", "models", "demo", "mma", "gemm", "explain", "fit", "validate")])
def test_help(args):
    out = run(*args)
    assert out.returncode == 0 and "usage" in out.stdout


def test_mma_command(tmp_path):
    import numpy as np
    np.save(tmp_path / "a.npy", np.array([[1.0, 2.0 ** -7]]))
    np.save(tmp_path / "b.npy", np.array([[1.0], [2.0 ** -7]]))
    out = run("mma", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["bits"] == "0x3f800000"         # H100: 1 + 2^-14 -> 1
    out = run("mma", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--model", "ideal",
              "--out", str(tmp_path / "d.npy"))
    assert out.returncode == 0 and np.load(tmp_path / "d.npy")[0, 0] == 1 + 2.0 ** -14
    np.save(tmp_path / "bad.npy", np.array([[0.3, 1.0]]))
    out = run("mma", str(tmp_path / "bad.npy"), str(tmp_path / "b.npy"))
    assert out.returncode == 2 and "not exactly representable in e4m3" in out.stderr


def test_gemm_command():
    out = run("gemm", "--k", "1024", "--m", "16", "--n", "16", "--recipe", "cublas_fast_accum",
              "--dist", "uniform", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    assert row["K"] == 1024 and row["promotions"] == 1 and row["acc_rel_fro"] > 0.005
    out = run("gemm", "--k", "512", "--m", "8", "--n", "8", "--csv")
    assert out.returncode == 0 and out.stdout.startswith("model,recipe,M,N,K")
    out = run("gemm", "--recipe", "deepseek_v3", "--promotion", "0")
    assert out.returncode == 2 and "fast accumulation" in out.stderr


def test_mma_command_block_scaled(tmp_path):
    """The 35- vs 25-bit probe (docs/hardware.md#blackwell-block-scaled) through the CLI."""
    import numpy as np
    a = np.zeros((1, 64))
    b = np.zeros((64, 1))
    a[0, 0], b[0, 0], a[0, 32], b[32, 0] = -1.0, 1.0, 1.0, 1.0
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    np.save(tmp_path / "c.npy", np.ones((1, 1), np.float32))
    np.save(tmp_path / "sa.npy", np.array([[1.0, 2.0 ** -35]]))
    np.save(tmp_path / "sb.npy", np.ones((2, 1)))
    common = ["mma", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--c",
              str(tmp_path / "c.npy"), "--model", "b200", "--a-format", "e2m1", "--a-scale",
              str(tmp_path / "sa.npy"), "--b-scale", str(tmp_path / "sb.npy"), "--json"]
    out = run(*common, "--path", "mxf4")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0]["d"] == 2.0 ** -35
    out = run(*common, "--path", "mxf4-25bits")
    assert json.loads(out.stdout)[0]["d"] == 0.0
    out = run("mma", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--model", "b200",
              "--a-format", "e2m1", "--a-scale", str(tmp_path / "sa.npy"))
    assert out.returncode == 2 and "--b-scale" in out.stderr


def test_explain_command_on_an_amd_preset():
    """The CDNA3 FP8 lanes through the command line: the odd lane's -2^-30 is rounded down onto
    the even lane's 2^-24 grid (docs/hardware.md#amd-cdna)."""
    out = run("explain", "--a", "1,0.0000152587890625", "--b", "1,-0.0000152587890625",
              "--model", "mi300", "--format", "e5m2fnuz", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["result"] == 1.0 - 2.0 ** -24
    assert any("odd lane" in n for n in data["blocks"][0]["notes"])


def test_corpus_command_takes_several_roots_and_reports_no_datapath(corpus_root, tmp_path):
    """Two roots in one call; a set whose format the preset does not serve is a row
    ("NO DATAPATH"), the replay goes on, and the exit status is 1 at the end."""
    out = run("corpus", str(corpus_root / "A2" / "tf32"), str(corpus_root / "V100" / "fp16"),
              "--quiet")
    assert out.returncode == 0 and out.stdout.count(" ok") == 3, out.stdout
    out = run("corpus", str(corpus_root / "Ada" / "E4M3"), str(corpus_root / "V100" / "fp16"),
              "--model", "v100", "--quiet")
    assert out.returncode == 1, out.stdout
    assert out.stdout.count("NO DATAPATH") == 2 and out.stdout.count(" ok") == 2
    assert "2 set(s) have no datapath" in out.stdout


def test_gemm_command_reports_accumulation_error_first_with_significant_digits():
    """`tcsim gemm` prints the accumulation error before the total error, as fractions with
    three significant digits: b200's ~1e-7 accumulation error is not rounded away to 0."""
    out = run("gemm", "--model", "b200", "--recipe", "cublas_fast_accum", "--k", "1024",
              "--m", "16", "--n", "16")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    acc = next(i for i, ln in enumerate(lines) if ln.startswith("accumulation"))
    tot = next(i for i, ln in enumerate(lines) if ln.startswith("total"))
    assert acc < tot and "fractions" in lines[acc - 2]
    values = [float(v) for v in lines[acc].split(")")[-1].split()]
    assert len(values) == 3 and all(0 < v < 1e-5 for v in values), lines[acc]
    assert "raw max" not in out.stdout                        # only when asked
    out = run("gemm", "--k", "256", "--m", "8", "--n", "8", "--raw-max", "--json")
    row = json.loads(out.stdout)[0]
    assert {"acc_rel_fro", "acc_max_scaled", "acc_p99_row", "acc_max_rel",
            "e2e_rel_fro", "e2e_max_rel"} <= set(row)


def test_fit_command_ends_with_one_summary_table(corpus_root, tmp_path):
    """`tcsim fit` prints one table (set, configurations left, pinned parameters, probes
    written) and a totals line; the per-set detail only with --verbose."""
    out = run("fit", str(corpus_root / "A2"), "--probes-out", str(tmp_path / "p.npz"),
              "--quiet")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["set", "rows", "configs"] and "probes written" in lines[0]
    body = [ln for ln in lines[2:] if ln.startswith("A2/")]
    assert len(body) == 4 and len(lines) <= 12             # fp16 holds fp16 and fp32 outputs
    assert "4 record set(s): 4 fitted, 0 with" in out.stdout and "probe(s) written to" in out.stdout
    assert "consistent configuration(s), e.g." not in out.stdout
    verbose = run("fit", str(corpus_root / "A2" / "fp16"), "--quiet", "--verbose")
    assert "consistent configuration(s), e.g." in verbose.stdout
    assert "none written (--probes-out FILE writes them)" in verbose.stdout


def test_explain_example_says_why_a_term_has_exp_minus_12():
    """2^-7 is subnormal in e4m3 (0.5 x 2^-6): the product 2^-14 is aligned by ea + eb = -12,
    and the trace says so instead of listing exp -12 unexplained."""
    out = run("explain", "--example")
    assert out.returncode == 0, out.stderr
    rows = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("k=1 ")]
    assert rows and rows[0].split()[2] == "-12" and "unnormalised: subnormal operand" in rows[0]
    assert "k=1: exp -12 although |value| = 2^-14: an operand is subnormal" in out.stdout
    assert "(e4m3 2^-6)" in out.stdout and "aligned\n  by ea + eb = -12" in out.stdout
    first = next(ln for ln in out.stdout.splitlines() if ln.strip().startswith("k=0 "))
    assert "unnormalised" not in first                          # 1 x 1 is normal


def test_demo_command_says_it_compiles_and_reports_accumulation_error_first(tmp_path):
    out = run("demo", "--m", "4", "--out", str(tmp_path / "demo.png"))
    assert out.returncode == 0, out.stderr
    assert "numba compiles them on the first run" in out.stderr
    assert "[5/5] ideal (exact sum, one rounding) ..." in out.stderr and "Kernels ready in" in \
        out.stderr and "[50/50]" in out.stderr
    head = next(ln for ln in out.stdout.splitlines() if ln.startswith("dist"))
    assert head.index("acc fro") < head.index("tot fro")
    b200 = next(ln for ln in out.stdout.splitlines() if "b200" in ln and "4096" in ln)
    assert all("e-" in v or "e+" in v for v in b200.split()[-6:]) and "0.000" not in b200
    assert (tmp_path / "demo.png").stat().st_size > 10000


def test_demo_figure_keeps_every_configuration_apart():
    """Each configuration has its own (marker, line style); every panel has a K tick at each
    power of two from 256 to 16384; one legend for the whole figure."""
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from tcsim.deepseek import CONFIGS
    from tcsim.demo import DEMO_KS, figure
    rows = [{"dist": d, "K": k, "config": c, "acc_rel_fro": 1e-4 * (i + 1) * k}
            for d in ("uniform", "normal") for k in DEMO_KS for i, c in enumerate(CONFIGS)]
    fig = figure(rows)
    assert len(fig.legends) == 1 and len(fig.legends[0].get_texts()) == len(CONFIGS)
    for ax in fig.axes:
        assert list(ax.get_xticks()) == [2 ** e for e in range(8, 15)]
        styles = {(ln.get_marker(), str(ln.get_linestyle()), ln.get_markerfacecolor() == "none")
                  for ln in ax.get_lines()}
        assert len(styles) == len(CONFIGS)
        assert ax.get_legend() is None
