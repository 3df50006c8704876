"""Run a grid of training runs: one process per run (local pool or Dask), checkpoints, Parquet.

Layout of the output folder::

    OUT/config.json                       the validated config
    OUT/runs/<run_id>/checkpoint.pt       model, optimizer, amax histories, rows so far
    OUT/runs/<run_id>/losses.parquet      written when the run is finished
    OUT/runs/<run_id>/gemm_stats.parquet
    OUT/runs/<run_id>/run.json
    OUT/losses.parquet, OUT/gemm_stats.parquet, OUT/loss_curves.png   all finished runs
    OUT/gaps.csv, OUT/gaps.png            with [study] reference: each run's paired gap

With train.seeds = n every run is trained with n seeds (each its own folder under runs/; the
tables have a ``seed`` column) and the [study] reference turns them into the paired-gap table of
tcsim.train.study.

A run resumes from its last checkpoint (written every ``train.checkpoint_every`` steps, at
step boundaries, atomically) and continues exactly as an uninterrupted run would: batches are
drawn from (seed, step), the learning rate is a function of the step, and the optimizer state,
the layers' amax histories and the rows so far are in the checkpoint. A finished run is skipped.

A run's files are read back before they are trusted, as the sweep does with its point files:
a checkpoint that does not load (truncated, random bytes, empty, not a checkpoint of this
run) is deleted and the run starts again from step 0; a run.json or Parquet table that does
not read back is written again (from the final checkpoint when it holds the whole run, else by
training again); temporary files left by a writer that died are removed. Each such repair is
one line of the summary's ``recovered`` list, naming the file.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import TcsimError
from ..tempfiles import remove_stale, write_atomically
from .config import Config, RunSpec

RUNS_DIR = "runs"
CHECKPOINT_KEYS = ("step", "model", "optim", "rows", "stats", "seconds")


class RunFileError(TcsimError, ValueError):
    """A file of a training run that cannot be read back (the message names it)."""


def learning_rate(cfg: Config, step: int) -> float:
    """Linear warm-up over train.warmup steps, then cosine decay from lr to lr / 10."""
    t = cfg.train
    if step < t.warmup:
        return t.lr * (step + 1) / t.warmup
    span = max(t.steps - t.warmup, 1)
    frac = min((step - t.warmup) / span, 1.0)
    return t.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * frac)))


class _Progress:
    """One stderr line per run: step, loss, seconds per step and ETA (at most every 2 s)."""

    def __init__(self, label: str, total: int, start: int, enabled: bool):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.t0 = self.last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, step: int, loss: float, final: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not final and now - self.last < 2.0):
            return
        self.last = now
        done = step + 1 - self.start
        per = (now - self.t0) / max(done, 1)
        eta = per * (self.total - step - 1)
        end = "\n" if final or not self.tty else "\r"
        print(f"train {self.label}: step {step + 1}/{self.total}, loss {loss:.4f}, "
              f"{per:.2f} s/step, ETA {_hms(eta)}   ", end=end, file=sys.stderr, flush=True)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _atomic_save(obj, path: Path) -> None:
    import torch
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def _atomic_parquet(frame, path: Path) -> None:
    write_atomically(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _remove_stale_temporaries(folder: Path) -> list:
    """Delete the temporaries (_atomic_save, _atomic_parquet) of writers that stopped; one
    report line each."""
    return [f"{path}: a temporary file left by a writer that stopped; removed"
            for path in remove_stale(folder)]


def _read_info(path: Path) -> dict:
    """run.json as a dict; RunFileError naming it when it is no JSON object."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunFileError(f"{path}: cannot be read back as a run summary "
                           f"({_first_line(exc)})") from None
    if not isinstance(info, dict):
        raise RunFileError(f"{path}: cannot be read back as a run summary (not a JSON object)")
    return info


def _read_parquet(path: Path, hint: str = ""):
    """A Parquet table; RunFileError naming it (then ``hint``) when it does not read back."""
    import pandas as pd
    try:
        return pd.read_parquet(path)
    except Exception as exc:      # pyarrow raises ArrowInvalid, OSError, ... on a bad file
        raise RunFileError(f"{path}: cannot be read back as a Parquet table "
                           f"({_first_line(exc)}){hint}") from None


def _read_table(path: Path, label: str, rows: Optional[int] = None):
    """A run's Parquet table; RunFileError naming it when it does not read back or is not
    this run's (its ``run`` column; ``rows`` rows when given)."""
    frame = _read_parquet(path)
    if len(frame) and ("run" not in frame or set(frame["run"]) != {label}):
        raise RunFileError(f"{path}: not a table of run {label!r}")
    if rows is not None and len(frame) != rows:
        raise RunFileError(f"{path}: {len(frame)} rows, expected {rows}")
    return frame


def _read_checkpoint(path: Path, steps: int) -> dict:
    """The checkpoint's dict, checked for what run_one needs; RunFileError naming it when it
    does not load. weights_only: a damaged file is data, never code to run."""
    import torch
    try:
        # map_location: a checkpoint written on a GPU loads anywhere; load_state_dict then
        # copies into the model's and the optimizer's device
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:      # zip, pickle and EOF errors on truncated or random bytes
        raise RunFileError(f"{path}: cannot be read back as a checkpoint "
                           f"({_first_line(exc)})") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS):
        raise RunFileError(f"{path}: not a training checkpoint (it needs "
                           f"{', '.join(CHECKPOINT_KEYS)})")
    step, rows = state["step"], state["rows"]
    # rows: one per step so far, and the final evaluation's once the run is complete
    ok = isinstance(step, int) and 0 <= step <= steps and isinstance(rows, list) \
        and (len(rows) == step or (step == steps and len(rows) == steps + 1)) \
        and isinstance(state["stats"], list) and isinstance(state["seconds"], (int, float)) \
        and all(isinstance(r, dict) for r in rows + state["stats"])
    if not ok:
        raise RunFileError(f"{path}: not a checkpoint of this run (step {step!r} of {steps}, "
                           f"{len(rows) if isinstance(rows, list) else '?'} loss rows)")
    return state


def build_model(cfg: Config, spec: RunSpec):
    """(model, Conversion): the GPT with the config's seed, converted to the run's recipe with
    its GEMMs on train.device, on :func:`torch_device`."""
    import torch

    from ..torch import convert
    from .data import VOCAB
    from .model import GPT
    torch.manual_seed(cfg.train.seed)
    model = GPT(cfg.model, VOCAB)
    conversion = convert(model, spec.training_recipe(), device=cfg.train.device)
    return model.to(torch_device(cfg)), conversion


def torch_device(cfg: Config):
    """Where torch trains: its GPU for train.device "cuda" when torch has CUDA, else the CPU
    (with a CPU-only torch the simulated GEMMs still run on tcsim's GPU backend, their operands
    copied in and out). DeviceError, before anything is built, for "cuda" where tcsim's GPU
    backend cannot run (no numba-cuda, no GPU and no CUDA simulator)."""
    import torch
    if cfg.train.device != "cuda":
        return torch.device("cpu")
    from ..cuda import require
    require()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_one(cfg: Config, spec: RunSpec, out_dir, progress: bool = True,
            stop_after: Optional[int] = None) -> dict:
    """Train one run to cfg.train.steps (resuming from its checkpoint); returns a summary.

    stop_after: train at most this many steps in this call, then return without saving (as a
    killed run: the next call resumes from the last checkpoint)."""
    import pandas as pd
    import torch

    from ..torch import GemmStats, attach_stats
    from .data import Corpus

    torch.set_num_threads(cfg.train.threads)
    device = torch_device(cfg)          # DeviceError here when "cuda" cannot run
    run_id = cfg.run_id(spec)
    folder = Path(out_dir) / RUNS_DIR / run_id
    folder.mkdir(parents=True, exist_ok=True)
    tc, mc = cfg.train, cfg.model
    label = spec.label()
    recovered = _remove_stale_temporaries(folder)
    info = folder / "run.json"
    tables = {"losses.parquet": tc.steps + 1, "gemm_stats.parquet": None}
    if info.is_file():
        try:
            summary = _read_info(info)
            if summary.get("status") == "done":
                for name, rows in tables.items():
                    _read_table(folder / name, label, rows)
                return summary | {"skipped": True, "recovered": recovered}
        except RunFileError as exc:   # written again below, from the final checkpoint if any
            info.unlink(missing_ok=True)
            recovered.append(f"{exc}; the run's results are written again")
    corpus = Corpus(cfg.data.corpus_bytes, cfg.data.val_fraction)
    stats = GemmStats(every=tc.stats_every) if tc.stats_every else None

    def fresh():
        model, conversion = build_model(cfg, spec)
        opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                betas=(0.9, 0.95))
        attach_stats(model, stats)
        return model, conversion, opt

    model, conversion, opt = fresh()
    step, rows, seconds = 0, [], 0.0
    ckpt = folder / "checkpoint.pt"
    if ckpt.is_file():
        try:
            state = _read_checkpoint(ckpt, tc.steps)
            try:
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optim"])
            except Exception as exc:      # missing or misshapen tensors
                raise RunFileError(f"{ckpt}: not a checkpoint of this run's model "
                                   f"({_first_line(exc)})") from None
            step, rows, seconds = state["step"], state["rows"], float(state["seconds"])
            if stats is not None:
                stats.rows = state["stats"]
        except RunFileError as exc:
            ckpt.unlink(missing_ok=True)
            recovered.append(f"{exc}; deleted, the run starts again from step 0")
            model, conversion, opt = fresh()     # nothing half-loaded stays
    bar = _Progress(label, tc.steps, step, progress)

    def batch(split: str, index: int):
        """(inputs, targets) of a batch, on the model's device."""
        return (torch.from_numpy(a).to(device) for a in corpus.batch(
            split, tc.seed, index, tc.batch_size, mc.seq_len))

    def evaluate() -> float:
        if stats is not None:
            stats.step = None              # evaluation passes are not sampled
        model.eval()
        with torch.no_grad():
            losses = [float(model(*batch("val", i))) for i in range(tc.eval_batches)]
        model.train()
        return float(np.mean(losses))

    def checkpoint(next_step: int, elapsed: float) -> None:
        _atomic_save({"step": next_step, "model": model.state_dict(), "optim": opt.state_dict(),
                      "rows": rows, "stats": stats.rows if stats is not None else [],
                      "seconds": elapsed}, ckpt)

    t_call = time.perf_counter()
    done_here = 0
    while step < tc.steps:
        if stop_after is not None and done_here >= stop_after:
            # as if killed here: what is not in the last checkpoint is lost
            return {"run_id": run_id, "label": label, "status": "stopped", "step": step,
                    "recovered": recovered}
        val = evaluate() if step % tc.eval_every == 0 else math.nan
        lr = learning_rate(cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        if stats is not None:
            stats.begin_step(step)
        x, y = batch("train", step)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        rows.append({"step": step, "lr": lr, "train_loss": loss.item(), "val_loss": val})
        bar.update(step, rows[-1]["train_loss"])
        step += 1
        done_here += 1
        if step % tc.checkpoint_every == 0 and step < tc.steps:
            checkpoint(step, seconds + time.perf_counter() - t_call)
    if len(rows) == tc.steps:      # else the final checkpoint holds the final evaluation
        rows.append({"step": tc.steps, "lr": math.nan, "train_loss": math.nan,
                     "val_loss": evaluate()})
        bar.update(tc.steps - 1, rows[-2]["train_loss"] if len(rows) > 1 else math.nan,
                   final=True)
        seconds += time.perf_counter() - t_call
        checkpoint(tc.steps, seconds)
    losses = pd.DataFrame(rows)
    losses.insert(0, "run", label)
    losses.insert(1, "seed", tc.seed)
    _atomic_parquet(losses, folder / "losses.parquet")
    sf = stats.frame() if stats is not None else pd.DataFrame()
    sf.insert(0, "run", label)
    sf.insert(1, "seed", tc.seed)
    _atomic_parquet(sf, folder / "gemm_stats.parquet")
    summary = {"run_id": run_id, "label": label, "seed": tc.seed, "status": "done",
               "spec": spec.model_dump(),
               "recipe": model_recipe_dump(model), "converted": conversion.converted,
               "kept": conversion.kept, "not_simulated": conversion.not_simulated,
               "seconds": seconds,
               "final_val_loss": rows[-1]["val_loss"], "files": corpus.files[:3] + ["..."]}
    info.write_text(json.dumps(summary, indent=1))
    return summary | {"recovered": recovered}


def model_recipe_dump(model) -> Optional[dict]:
    from ..torch import layers
    found = layers(model)
    return found[0].recipe.model_dump(mode="json") if found else None


def _worker(args) -> dict:
    cfg_json, spec_json, out_dir, stop_after = args     # cfg: one seed's (Config.for_seed)
    cfg = Config.model_validate_json(cfg_json)
    spec = RunSpec.model_validate_json(spec_json)
    return run_one(cfg, spec, out_dir, progress=True, stop_after=stop_after)


def run_grid(cfg: Config, out_dir, workers: int = 1, scheduler: Optional[str] = None,
             progress: bool = True, stop_after: Optional[int] = None, client=None) -> dict:
    """Every run of the config with each of its seeds (finished ones skipped), then the
    combined tables, the PNG and, with a [study] reference, the paired-gap table
    (``summary["gaps"]``, OUT/gaps.csv, OUT/gaps.png).

    workers: local processes (1: in this process); scheduler: a Dask scheduler address, or
    client: a dask.distributed Client to run on.
    stop_after: at most this many training steps per run in this call (then stop as if killed:
    the next call resumes from each run's last checkpoint)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=1))
    seeded = cfg.seeded_runs()         # one job per (seed, run)
    jobs = [(c.model_dump_json(), s.model_dump_json(), str(out_dir), stop_after)
            for c, s in seeded]
    results, errors = [], []

    def failed(job: tuple, exc: BaseException) -> None:
        """One line naming the run (and seed), its folder and (in the message) the file at
        fault."""
        run_cfg, spec = job
        folder = Path(out_dir) / RUNS_DIR / run_cfg.run_id(spec)
        text = str(exc) if isinstance(exc, TcsimError) else _first_line(exc)
        seed = f" seed {run_cfg.train.seed}" if cfg.train.seeds > 1 else ""
        errors.append(f"run {spec.label()!r}{seed} ({folder}): {text}")

    t0 = time.perf_counter()
    if scheduler is not None or client is not None:
        own = None
        if client is None:
            from ..explore.sweep import connect
            client = own = connect(scheduler)
        try:
            futures = client.map(_worker, jobs, pure=False)
            for job, fut in zip(seeded, futures):
                try:
                    results.append(fut.result())
                except Exception as exc:      # reported; the run resumes next time
                    failed(job, exc)
        finally:
            if own is not None:
                own.close()
    elif workers > 1:
        import multiprocessing

        from ..explore.sweep import exit_with_parent  # workers end with a killed parent
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                 initializer=exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_worker, j): job for j, job in zip(jobs, seeded)}
            for fut in as_completed(futures):
                try:
                    results.append(fut.result())
                except Exception as exc:
                    failed(futures[fut], exc)
    else:
        for job in seeded:
            try:
                results.append(run_one(*job, out_dir, progress=progress,
                                       stop_after=stop_after))
            except OSError as exc:     # a file that cannot be written: reported as a worker's
                failed(job, exc)
    done = [r for r in results if r.get("status") == "done"]
    summary = {"runs": len(seeded), "done": len(done),
               "skipped": sum(bool(r.get("skipped")) for r in results),
               "stopped": sum(r.get("status") == "stopped" for r in results),
               "errors": errors[:5], "seconds": time.perf_counter() - t0, "out": str(out_dir),
               "recovered": [line for r in results for line in r.get("recovered", [])]}
    if done:
        losses, stats = load_losses(out_dir), load_gemm_stats(out_dir)
        _atomic_parquet(losses, out_dir / "losses.parquet")
        _atomic_parquet(stats, out_dir / "gemm_stats.parquet")
        plot_losses(losses, out_dir / "loss_curves.png", title=cfg.name)
        # one seed: each run's loss; more: each run's mean over its finished seeds
        finals: dict = {s.label(): [] for s in cfg.run_specs()}      # in the config's order
        for r in done:
            finals[r["label"]].append(r["final_val_loss"])
        finals = {k: v for k, v in finals.items() if v}
        summary["final_val_loss"] = {k: float(np.mean(v)) for k, v in finals.items()}
        if cfg.study.reference is not None:
            summary["gaps"] = _write_gaps(cfg, out_dir)
    return summary


def _write_gaps(cfg: Config, out_dir: Path) -> list:
    """The paired-gap table of the finished runs of this config (gaps.csv, gaps.png) as a
    list of row dicts; [] when the reference has not finished."""
    from .study import paired_gaps, plot_gaps
    # this config's runs only: the folder may hold other configs' runs under the same labels
    run_ids = [c.run_id(spec) for c, spec in cfg.seeded_runs()]
    losses, stats = (_finished(out_dir, name, run_ids)
                     for name in ("losses.parquet", "gemm_stats.parquet"))
    if not len(losses) or cfg.study.reference not in set(losses["run"]):
        return []
    table = paired_gaps(losses, cfg.study.reference, stats)
    write_atomically(out_dir / "gaps.csv", lambda tmp: table.to_csv(tmp, index=False))
    plot_gaps(table, out_dir / "gaps.png", cfg.study.reference, title=cfg.name)
    return table.to_dict("records")


def _finished(out_dir, name: str, run_ids: Optional[list] = None):
    """The ``name`` tables of the finished runs (those of ``run_ids`` only, when given)."""
    import pandas as pd
    runs = Path(out_dir) / RUNS_DIR
    files = sorted(runs.glob(f"*/{name}")) if run_ids is None else \
        [runs / i / name for i in run_ids if (runs / i / name).is_file()]   # in their order
    # a file that does not read back: one line naming it
    frames = [_read_parquet(f, "; a run of this config writes it again, another config's run "
                               "when tcsim train runs that config") for f in files]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def load_losses(out_dir):
    """Losses of every finished run: columns run, step, lr, train_loss, val_loss."""
    return _finished(out_dir, "losses.parquet")


def load_gemm_stats(out_dir):
    """GEMM statistics of every finished run (tcsim.torch.stats.COLUMNS plus run)."""
    return _finished(out_dir, "gemm_stats.parquet")


def plot_losses(losses, png, title: str = "", smooth: int = 10) -> Path:
    """Training loss (moving average over ``smooth`` steps) and validation loss per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for run, df in losses.groupby("run", sort=False):
        seeds = df["seed"].nunique() if "seed" in df else 1
        if seeds > 1:                                       # the mean curve over the seeds
            df = df.groupby("step", as_index=False)[["train_loss", "val_loss"]].mean()
            run = f"{run} (mean of {seeds} seeds)"
        tr = df.dropna(subset=["train_loss"])
        ax1.plot(tr["step"], tr["train_loss"].rolling(smooth, min_periods=1).mean(), label=run)
        va = df.dropna(subset=["val_loss"])
        ax2.plot(va["step"], va["val_loss"], marker=".", label=run)
    ax1.set(xlabel="step", ylabel=f"training loss (mean of {smooth})", title=title)
    ax2.set(xlabel="step", ylabel="validation loss")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
