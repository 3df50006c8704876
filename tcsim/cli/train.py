"""``tcsim train`` (and ``python -m tcsim.train``): FP8 training runs and their loss curves."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError, TcsimError


def _cmd_train(args: argparse.Namespace) -> int:
    from ..train import load_config
    cfg = load_config(args.config)      # a config is checked without PyTorch (the recipes need none)
    if args.device is not None:
        cfg = cfg.with_train(device=args.device)
    if cfg.train.device == "cuda":       # tcsim's GPU backend, checked before torch is imported
        from ..cuda import require
        require()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TcsimError("tcsim train needs PyTorch: pip install 'tcsim[torch]'") from None
    from ..train.runner import run_grid
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
        cfg = cfg.with_train(steps=args.steps)
    if args.seeds is not None:
        if not 1 <= args.seeds <= 64:
            raise ConfigError(f"--seeds: must be 1 to 64, got {args.seeds}")
        cfg = cfg.with_train(seeds=args.seeds)
    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    out = args.out or f"{cfg.name}_results"
    try:
        summary = run_grid(cfg, out, workers=args.workers, scheduler=args.scheduler,
                           progress=not args.quiet)
    except KeyboardInterrupt:
        print(f"\ninterrupted: checkpoints are in {out}/runs; run the same command again to "
              f"resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['runs']} runs: {summary['skipped']} already done, {summary['done']} "
              f"finished, {len(summary['errors'])} failed ({summary['seconds']:.1f} s); "
              f"{out}/losses.parquet, {out}/gemm_stats.parquet, {out}/loss_curves.png")
        mean = " (mean over seeds)" if cfg.train.seeds > 1 else ""
        for label, loss in summary.get("final_val_loss", {}).items():
            print(f"  {label:40s} final validation loss {loss:.4f}{mean}")
        if summary.get("gaps"):
            import pandas as pd

            from ..train.study import format_gaps
            print(format_gaps(pd.DataFrame(summary["gaps"]), cfg.study.reference))
            print(f"  (table: {out}/gaps.csv, plot: {out}/gaps.png)")
        for line in summary["recovered"]:
            print(f"  recovered: {line}")
        for e in summary["errors"]:
            print(f"  error: {e}")
    return 1 if summary["errors"] else 0


def add_parser(sub) -> None:
    """Add the ``train`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("train", help="FP8 training runs of a small GPT (TOML grid), loss curves",
                       description="Train a small character-level GPT on the standard library's "
                       "source text with each training recipe of CONFIG (format: "
                       "help(tcsim.train.config); example: examples/train_small.toml) side by "
                       "side, with each of its seeds; write losses and per-GEMM statistics as "
                       "Parquet and a PNG of the loss curves, and with a [study] reference each "
                       "run's loss gap to it, paired by seed, with a 95% interval. "
                       "Runs resume from their checkpoints; a run's file that does not read "
                       "back is recomputed, and the output names it. Needs PyTorch (the torch "
                       "extra).")
    p.add_argument("config", help="training config TOML file")
    p.add_argument("--out", help="results folder (default: <name>_results)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--seeds", type=int,
                   help="override train.seeds: train every run with this many seeds (runs of "
                        "seeds already trained are reused)")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="override train.device: where the simulated GEMMs run (cuda: tcsim's GPU "
                        "backend, and torch's GPU when torch has CUDA)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_train)
