"""tcsim train: the training grid end to end (tiny model, a few steps), resume, errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tcsim.cli import main
from tcsim.errors import ConfigError
from tcsim.train import load_config, parse_config

REPO = Path(__file__).resolve().parent.parent

TINY = """
name = "tiny"
[model]
n_layer = 1
d_model = 32
n_head = 2
seq_len = 32
[data]
corpus_bytes = 20000
[train]
steps = 5
batch_size = 4
warmup = 2
eval_every = 2
eval_batches = 1
checkpoint_every = 2
stats_every = 2
[grid]
recipes = {recipes}
"""


def _config(tmp_path, recipes='["bf16", "deepseek_v3"]') -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(recipes=recipes))
    return path


def test_config_errors_name_file_and_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nsteps = 0\n[grid]\nrecipes = ['bf16']\n")
    with pytest.raises(ConfigError, match=r"bad.toml: train.steps"):
        load_config(bad)
    with pytest.raises(ConfigError, match="fraction_bits"):
        parse_config({"runs": [{"recipe": "accumulator_proposal"}]})
    with pytest.raises(ConfigError, match="no runs"):
        parse_config({})
    with pytest.raises(ConfigError, match="unknown model"):
        parse_config({"runs": [{"recipe": "deepseek_v3", "model": "h900"}]})
    with pytest.raises(ConfigError, match="no such training config"):
        load_config(tmp_path / "missing.toml")


def test_cli_bad_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nd_model = 30\nn_head = 4\n[grid]\nrecipes = ['bf16']\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml" in err[0] and "n_head" in err[0]


def test_cli_non_utf8_config_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes("name = 'caf\u00e9'\n[grid]\nrecipes = ['bf16']\n".encode("latin-1"))
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcsim: error: ")
    assert "latin1.toml: not a UTF-8 text file" in err[0]


def test_python_m_tcsim_train_entry_point(tmp_path):
    res = subprocess.run([sys.executable, "-m", "tcsim.train", str(tmp_path / "none.toml")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert "none.toml: no such training config file" in res.stderr


def test_run_specs_and_recipes():
    cfg = parse_config({"grid": {"recipes": ["bf16", "deepseek_v3"], "models": ["h100", "b200"]},
                        "runs": [{"recipe": "accumulator_proposal", "fraction_bits": 12},
                                 {"recipe": "fast_accum", "only": "wgrad"}]})
    labels = [s.label() for s in cfg.run_specs()]
    assert labels == ["bf16", "deepseek_v3 h100", "deepseek_v3 b200", "f12 h100",
                      "fast_accum h100 wgrad-only"]
    f12 = cfg.run_specs()[3].training_recipe()
    assert f12.fprop.resolved_datapath().fraction_bits == 12
    # fraction_bits alone keeps the model's output precision (h100: 14 significant bits)
    assert f12.fprop.resolved_datapath().output_precision == 14
    only = cfg.run_specs()[4].training_recipe()
    assert [only.fprop.precision, only.dgrad.precision, only.wgrad.precision] == \
        ["bf16", "bf16", "fp8"]
    assert len({cfg.run_id(s) for s in cfg.run_specs()}) == 5


def test_train_device_is_validated_without_torch_and_keeps_run_ids(tmp_path, capsys):
    base = {"grid": {"recipes": ["bf16", "deepseek_v3"]}}
    with pytest.raises(ConfigError, match=r"train.device: Input should be 'cpu' or 'cuda'"):
        parse_config(base | {"train": {"device": "gpu"}})
    ids = {}
    for dev in (None, "cpu", "cuda"):
        cfg = parse_config(base | ({"train": {"device": dev}} if dev else {}))
        assert cfg.train.device == dev
        ids[dev] = [cfg.run_id(s) for s in cfg.run_specs()]
    # the simulated GEMMs have the same bits on both backends: "cpu" resumes a run without it;
    # "cuda" may train on torch's GPU, whose own kernels sum in other orders: other runs
    assert ids["cpu"] == ids[None] and ids["cuda"] != ids[None]
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\ndevice = 'tpu'\n[grid]\nrecipes = ['bf16']\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.toml: train.device" in err[0]


_NO_GPU = """
import sys
import tcsim.cuda
if tcsim.cuda.available():      # a GPU here: nothing to refuse
    print("gpu"); sys.exit(0)
from tcsim.cli import main
sys.exit(main(["train", sys.argv[1], "--device", "cuda", "--out", sys.argv[2]]))
"""


def test_train_device_cuda_without_a_gpu_is_one_line_exit_2(tmp_path):
    """--device cuda where tcsim's GPU backend cannot run (no GPU, simulator off): one line
    saying what is missing, before torch is imported or anything is written."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    res = subprocess.run([sys.executable, "-c", _NO_GPU, str(_config(tmp_path)),
                          str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    if res.stdout.strip() == "gpu":
        pytest.skip("a CUDA GPU is visible: --device cuda is usable here")
    assert res.returncode == 2, res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcsim: error: device='cuda': ")
    assert "NUMBA_ENABLE_CUDASIM=1" in err[0]
    assert not (tmp_path / "out").exists()


def test_torch_device_of_a_run():
    torch = pytest.importorskip("torch")
    from tcsim.train.runner import torch_device
    base = {"grid": {"recipes": ["bf16"]}}
    assert torch_device(parse_config(base)) == torch.device("cpu")
    cuda = parse_config(base | {"train": {"device": "cuda"}})
    import tcsim.cuda
    if not tcsim.cuda.available():
        with pytest.raises(tcsim.errors.DeviceError, match="device='cuda'"):
            torch_device(cuda)
    else:      # the GPU backend (or its simulator): torch on its GPU when it has one
        want = "cuda" if torch.cuda.is_available() else "cpu"
        assert torch_device(cuda) == torch.device(want)


def _bits(series) -> np.ndarray:
    return series.to_numpy(dtype=np.float64).view(np.uint64)


def _same_stats_bits(want, got) -> None:
    """Every statistic of every sampled GEMM, bit for bit (rows matched by their key)."""
    key = ["run", "step", "layer", "gemm"]
    a = want.sort_values(key).reset_index(drop=True)
    b = got.sort_values(key).reset_index(drop=True)
    assert a[key].equals(b[key])
    for col in [c for c in a.columns if c.endswith(("_rel_err", "_bias", "_var", "_cos"))]:
        assert np.array_equal(_bits(a[col]), _bits(b[col])), col


def test_train_grid_end_to_end_and_resume_bit_for_bit(tmp_path, capsys):
    pytest.importorskip("torch")
    from tcsim.train import load_gemm_stats, load_losses, run_grid
    cfg_path = _config(tmp_path, '["bf16", "te_hybrid_delayed"]')
    cfg = load_config(cfg_path)
    # uninterrupted, through the command line (in process)
    full = tmp_path / "full"
    assert main(["train", str(cfg_path), "--out", str(full)]) == 0
    out = capsys.readouterr()
    assert "2 finished" in out.out and "ETA" in out.err
    for name in ("losses.parquet", "gemm_stats.parquet", "loss_curves.png"):
        assert (full / name).stat().st_size > 0
    want = load_losses(full)
    assert sorted(set(want["run"])) == ["bf16", "te_hybrid_delayed h100"]
    assert len(want) == 2 * (5 + 1)                # 5 steps and the final evaluation each
    stats_want = load_gemm_stats(full)
    assert set(stats_want["step"]) == {0, 2, 4}
    assert set(stats_want["gemm"]) == {"fprop", "dgrad", "wgrad"}
    assert (stats_want.query("run == 'bf16'")["e2e_rel_err"] < 0.01).all()
    assert (stats_want.query("run != 'bf16'")["e2e_rel_err"] > 0.01).all()
    # interrupted after 3 steps (the last checkpoint is at step 2), then resumed
    part = tmp_path / "part"
    first = run_grid(cfg, part, progress=False, stop_after=3)
    assert first["stopped"] == 2 and not (part / "losses.parquet").exists()
    second = run_grid(cfg, part, progress=False)
    assert second["done"] == 2
    got = load_losses(part)
    for run in sorted(set(want["run"])):
        a, b = want[want.run == run], got[got.run == run]
        assert list(a["step"]) == list(b["step"])
        assert np.array_equal(_bits(a["train_loss"]), _bits(b["train_loss"])), run
        assert np.array_equal(_bits(a["val_loss"]), _bits(b["val_loss"])), run
    _same_stats_bits(stats_want, load_gemm_stats(part))
    # a third call finds both runs finished
    assert run_grid(cfg, part, progress=False)["skipped"] == 2


def test_pool_runs_match_in_process_runs(tmp_path):
    pytest.importorskip("torch")
    from tcsim.train import load_gemm_stats, load_losses, run_grid
    cfg = load_config(_config(tmp_path, '["deepseek_v3", "torchao_tensorwise"]'))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 3})})
    a = run_grid(cfg, tmp_path / "pool", workers=2, progress=False)
    assert a["done"] == 2, a
    b = run_grid(cfg, tmp_path / "local", progress=False)
    la = load_losses(tmp_path / "pool").sort_values(["run", "step"])
    lb = load_losses(tmp_path / "local").sort_values(["run", "step"])
    assert np.array_equal(_bits(la["train_loss"]), _bits(lb["train_loss"]))
    assert b["done"] == 2
    _same_stats_bits(load_gemm_stats(tmp_path / "pool"), load_gemm_stats(tmp_path / "local"))


def test_runs_on_a_dask_local_cluster(tmp_path):
    pytest.importorskip("torch")
    distributed = pytest.importorskip("distributed")
    from tcsim.train import load_losses, run_grid
    cfg = load_config(_config(tmp_path, '["bf16", "torchao_tensorwise"]'))
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})})
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        summary = run_grid(cfg, tmp_path / "dask", client=client, progress=False)
    assert summary["done"] == 2 and not summary["errors"]
    assert sorted(set(load_losses(tmp_path / "dask")["run"])) == ["bf16",
                                                                   "torchao_tensorwise h100"]


def test_config_loads_without_torch(tmp_path):
    """A training config (recipes included) validates on a machine without PyTorch, and
    ``tcsim train`` then says in one line that it needs PyTorch (torch is hidden from a child
    process, so this runs whether or not torch is installed)."""
    cfg_path = _config(tmp_path, '["deepseek_v3", "torchao_tensorwise"]')
    code = ("import sys; sys.modules['torch'] = None\n"
            "from tcsim.train import load_config\n"
            f"cfg = load_config({str(cfg_path)!r})\n"
            "print(len(cfg.run_specs()))\n"
            "from tcsim.cli import main\n"
            f"sys.exit(main(['train', {str(cfg_path)!r}]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stdout.split()[0].isdigit() and int(res.stdout.split()[0]) >= 2
    assert res.stderr.strip().splitlines() == [
        "tcsim: error: tcsim train needs PyTorch: pip install 'tcsim[torch]'"]


# ---- damaged run folders: read back, recompute what does not read, name the file ----------

SMALL = TINY.replace("steps = 5", "steps = 4")


@pytest.fixture(scope="module")
def finished_bf16(tmp_path_factory):
    """A finished bf16 run (no FP8 GEMM: quick): (config, results folder)."""
    pytest.importorskip("torch")
    from tcsim.train import run_grid
    folder = tmp_path_factory.mktemp("bf16")
    path = folder / "small.toml"
    path.write_text(SMALL.format(recipes='["bf16"]'))
    cfg = load_config(path)
    assert run_grid(cfg, folder / "out", progress=False)["done"] == 1
    return cfg, folder / "out"


def _run_folder(cfg, out) -> Path:
    return out / "runs" / cfg.run_id(cfg.run_specs()[0])


def _same_results(want_out, got_out) -> None:
    from tcsim.train import load_gemm_stats, load_losses
    a, b = load_losses(want_out), load_losses(got_out)
    assert list(a["step"]) == list(b["step"])
    for col in ("train_loss", "val_loss"):
        assert np.array_equal(_bits(a[col]), _bits(b[col])), col
    _same_stats_bits(load_gemm_stats(want_out), load_gemm_stats(got_out))


_DAMAGE = {"truncated": lambda raw: raw[:len(raw) // 2], "random": lambda raw: bytes(
    np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "empty": lambda raw: b""}


@pytest.mark.parametrize("damage", sorted(_DAMAGE))
def test_damaged_checkpoint_restarts_the_run(finished_bf16, tmp_path, damage, capsys):
    from tcsim.train import run_grid
    cfg, want = finished_bf16
    out = tmp_path / "out"
    assert run_grid(cfg, out, progress=False, stop_after=3)["stopped"] == 1   # checkpoint: step 2
    ckpt = _run_folder(cfg, out) / "checkpoint.pt"
    ckpt.write_bytes(_DAMAGE[damage](ckpt.read_bytes()))
    cfg_path = tmp_path / "small.toml"
    cfg_path.write_text(SMALL.format(recipes='["bf16"]'))
    assert main(["train", str(cfg_path), "--out", str(out), "--quiet"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "recovered:" in ln]
    assert len(lines) == 1 and str(ckpt) in lines[0] and "from step 0" in lines[0], lines
    _same_results(want, out)


@pytest.mark.parametrize("name", ["run.json", "losses.parquet", "gemm_stats.parquet"])
def test_damaged_results_of_a_finished_run_are_written_again(finished_bf16, tmp_path, name):
    from tcsim.train import run_grid
    cfg, want = finished_bf16
    out = tmp_path / "out"
    shutil.copytree(want, out)
    folder = _run_folder(cfg, out)
    (folder / name).write_bytes(b"\x00garbage" * 10)
    stale = folder / ".checkpoint.pt.999999999.tmp"       # its writer is gone
    stale.write_bytes(b"partial")
    summary = run_grid(cfg, out, progress=False)
    assert summary["done"] == 1 and not summary["errors"]
    assert any(str(folder / name) in r for r in summary["recovered"]), summary["recovered"]
    assert any(str(stale) in r for r in summary["recovered"]) and not stale.exists()
    assert json.loads((folder / "run.json").read_text())["status"] == "done"
    _same_results(want, out)
    assert run_grid(cfg, out, progress=False)["skipped"] == 1


def test_damaged_table_of_another_run_is_one_line(finished_bf16, tmp_path, capsys):
    cfg, want = finished_bf16
    out = tmp_path / "out"
    shutil.copytree(want, out)
    other = out / "runs" / "0123456789abcdef"             # a run of an earlier config
    other.mkdir()
    (other / "losses.parquet").write_bytes(b"not parquet")
    cfg_path = tmp_path / "small.toml"
    cfg_path.write_text(SMALL.format(recipes='["bf16"]'))
    assert main(["train", str(cfg_path), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(other / "losses.parquet") in err[0], err


def test_workers_recover_and_failures_name_run_and_file(tmp_path):
    pytest.importorskip("torch")
    from tcsim.train import run_grid
    path = tmp_path / "small.toml"
    path.write_text(SMALL.format(recipes='["bf16", "fp32"]'))
    cfg = load_config(path)
    out = tmp_path / "out"
    bf16, fp32 = (out / "runs" / cfg.run_id(s) for s in cfg.run_specs())
    bf16.mkdir(parents=True)
    (bf16 / "checkpoint.pt").write_bytes(b"\x80\x04garbage")    # recovered in its worker
    (fp32 / "run.json").mkdir(parents=True)                     # cannot be written: fails
    summary = run_grid(cfg, out, workers=2, progress=False)
    assert summary["done"] == 1
    assert any(str(bf16 / "checkpoint.pt") in r for r in summary["recovered"])
    assert len(summary["errors"]) == 1
    err = summary["errors"][0]
    assert "'fp32'" in err and str(fp32) in err and "run.json" in err, err


def test_in_process_failure_names_run_and_file(tmp_path):
    pytest.importorskip("torch")
    from tcsim.train import run_grid
    path = tmp_path / "small.toml"
    path.write_text(SMALL.format(recipes='["bf16"]'))
    cfg = load_config(path)
    folder = tmp_path / "out" / "runs" / cfg.run_id(cfg.run_specs()[0])
    (folder / "run.json").mkdir(parents=True)                   # cannot be written
    summary = run_grid(cfg, tmp_path / "out", progress=False)
    assert summary["done"] == 0 and len(summary["errors"]) == 1
    assert "'bf16'" in summary["errors"][0] and str(folder / "run.json") in summary["errors"][0]


def test_output_precision_is_explicit_and_in_the_label():
    cfg = parse_config({"runs": [{"recipe": "accumulator_proposal", "fraction_bits": 3,
                                  "output_precision": 4, "only": "wgrad"}]})
    spec = cfg.run_specs()[0]
    assert spec.label() == "f3 h100 p4 wgrad-only"
    dp = spec.training_recipe().wgrad.resolved_datapath()
    assert (dp.fraction_bits, dp.output_precision) == (3, 4)
    with pytest.raises(ConfigError, match="output_precision: only meaningful"):
        parse_config({"runs": [{"recipe": "fast_accum", "output_precision": 4}]})


def test_study_config_errors():
    with pytest.raises(ConfigError, match=r"study.reference: 'f9' is not a run of this config"):
        parse_config({"grid": {"recipes": ["bf16"]}, "study": {"reference": "f9"}})
    with pytest.raises(ConfigError, match=r"train.seeds"):
        parse_config({"grid": {"recipes": ["bf16"]}, "train": {"seeds": 0}})
    cfg = parse_config({"grid": {"recipes": ["bf16"]}, "train": {"seed": 3, "seeds": 3}})
    assert cfg.seeds() == [3, 4, 5]
    # a run is one seed's: the id of seed s in a study is the id of a one-seed run with seed s
    one = parse_config({"grid": {"recipes": ["bf16"]}, "train": {"seed": 4}})
    spec = cfg.run_specs()[0]
    assert cfg.for_seed(4).run_id(spec) == one.run_id(spec)
    assert cfg.for_seed(3).run_id(spec) != one.run_id(spec)


def test_t_quantiles_against_the_t_distribution():
    """Each tabulated t_{0.975}(df) leaves 2.5% in the upper tail: the Student t density
    integrated from 0 to t (Simpson's rule, 20000 intervals) is 0.475 to 4 decimals."""
    from tcsim.train.study import T975, t_quantile_975

    def half_mass(t, df):
        c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
        n, h = 20000, t / 20000
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        return h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    for df, t in enumerate(T975, start=1):
        assert abs(half_mass(t, df) - 0.475) < 1e-4, (df, t)
    assert t_quantile_975(40) == 1.96 and math.isnan(t_quantile_975(0))


def test_paired_gaps_by_hand():
    import pandas as pd

    from tcsim.train.study import format_gaps, paired_gaps
    rows = []
    finals = {"ref": [2.0, 2.5, 3.0], "worse": [2.1, 2.7, 3.3], "same": [2.0, 2.6, 2.9]}
    for run, losses in finals.items():
        for seed, loss in enumerate(losses):
            rows += [{"run": run, "seed": seed, "step": 0, "val_loss": 9.0},
                     {"run": run, "seed": seed, "step": 10, "val_loss": loss}]
    rows.append({"run": "worse", "seed": 7, "step": 10, "val_loss": 1.0})   # no reference
    table = paired_gaps(pd.DataFrame(rows), "ref")
    assert list(table["run"]) == ["worse", "same"]
    worse = table.iloc[0]
    gaps = np.array([0.1, 0.2, 0.3])
    assert worse["seeds"] == 3 and worse["worse_in"] == 3
    assert worse["gap"] == pytest.approx(0.2) and worse["gap_sd"] == pytest.approx(0.1)
    half = 4.303 * gaps.std(ddof=1) / math.sqrt(3)
    assert worse["ci_low"] == pytest.approx(0.2 - half)
    assert worse["ci_high"] == pytest.approx(0.2 + half)
    same = table.iloc[1]
    assert same["worse_in"] == 1 and same["ci_low"] < 0 < same["ci_high"]
    text = format_gaps(table, "ref")
    assert "worse in 3/3 seeds: within noise" in text or "worse in 3/3 seeds: worse" in text
    assert "worse in 1/3 seeds: within noise" in text
    with pytest.raises(ConfigError, match="no finished run named 'nope'"):
        paired_gaps(pd.DataFrame(rows), "nope")


def test_study_with_seeds_end_to_end(tmp_path, capsys):
    """Two seeds, a reference: gaps.csv/gaps.png, the seed column, and seed 1's run is the
    one-seed run with train.seed = 1, bit for bit (it is reused, not trained again)."""
    pytest.importorskip("torch")
    import pandas as pd

    from tcsim.train import load_losses, run_grid
    base = TINY.format(recipes='["bf16", "deepseek_v3"]').replace(
        "steps = 5", "steps = 3")
    one = tmp_path / "one.toml"
    one.write_text(base.replace("[train]", "[train]\nseed = 1"))
    study = tmp_path / "study.toml"
    study.write_text(base.replace("[train]", "[train]\nseeds = 2") +
                     '[study]\nreference = "bf16"\n')
    out = tmp_path / "out"
    first = run_grid(load_config(one), out, progress=False)
    assert first["done"] == 2 and "gaps" not in first
    assert main(["train", str(study), "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "2 already done" in printed and "paired by seed" in printed
    assert "deepseek_v3 h100" in printed and "/2 seeds" in printed
    gaps = pd.read_csv(out / "gaps.csv")
    assert list(gaps["run"]) == ["deepseek_v3 h100"] and list(gaps["seeds"]) == [2]
    assert (out / "gaps.png").stat().st_size > 0
    losses = load_losses(out)
    assert sorted(set(losses["seed"])) == [0, 1]
    finals = losses[losses["step"] == 3].set_index(["run", "seed"])["val_loss"]
    gap = [finals["deepseek_v3 h100", s] - finals["bf16", s] for s in (0, 1)]
    assert gaps["gap"].iloc[0] == pytest.approx(np.mean(gap), rel=1e-12)
    assert gaps["worse_in"].iloc[0] == sum(g > 0 for g in gap)
    # --seeds overrides train.seeds: a third seed trains only the new seed's runs
    assert main(["train", str(study), "--out", str(out), "--quiet", "--seeds", "3"]) == 0
    assert "4 already done, 6 finished" in capsys.readouterr().out
    assert list(pd.read_csv(out / "gaps.csv")["seeds"]) == [3]
    assert main(["train", str(study), "--out", str(out), "--seeds", "0"]) == 2
    assert "--seeds: must be 1 to 64, got 0" in capsys.readouterr().err
