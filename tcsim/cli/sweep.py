"""``tcsim sweep``: a design-space grid evaluated to Parquet, resumable."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:        # checked before any point is computed (the points are saved with these)
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"tcsim sweep needs {exc.name or 'pandas and pyarrow'} (the 'explore' "
                          f"extra): pip install 'tcsim[explore]'") from None
    from ..explore import load_grid, load_results, run_sweep
    from ..explore.rank import best_table
    from ..explore.sweep import finished_ids
    grid = load_grid(args.grid)
    if args.top < 0:
        raise ConfigError(f"--top {args.top}: give 0 (no ranking) or more design points")
    try:
        summary = run_sweep(grid, args.out, workers=args.workers, scheduler=args.scheduler,
                            progress=not args.quiet, connect_timeout=args.scheduler_timeout,
                            raw_max=args.raw_max)
    except KeyboardInterrupt:
        done = len(finished_ids(args.out))     # file names only: nothing to read, nothing to fail
        print(f"\ninterrupted: {done} finished points are in {args.out}; run the same command "
              f"again to resume", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{summary['points']} points: {summary['skipped']} already done, "
              f"{summary['ok']} evaluated, {summary['invalid']} invalid combinations, "
              f"{summary['error']} failed ({summary['seconds']:.1f} s); results in {args.out} "
              f"(tcsim.explore.load_results)")
        if summary["other_files"]:
            print(f"  note: {summary['other_files']} point files in {args.out} are not points of "
                  f"this grid (an earlier grid?); load_results returns them too")
        if summary["recomputed"]:
            print(f"  {summary['recomputed']} point files that did not read back were computed "
                  f"again")
        for e in summary["errors"]:
            print(f"  error: {e}")
        if args.top:        # this grid's points only, ranked by a robust metric
            ids = {p["point_id"] for p in grid.points()}
            df = load_results(args.out)
            print()
            print(best_table(df[df["point_id"].isin(ids)] if len(df) else df, top=args.top))
    return 1 if summary["error"] else 0


def add_parser(sub) -> None:
    """Add the ``sweep`` command to ``sub`` (the subparsers of ``tcsim``)."""
    p = sub.add_parser("sweep", help="run a design-space grid (TOML) to Parquet, resumable",
                       description="Evaluate every point of a grid TOML file (datapath, recipe "
                       "and workload axes; the format: help(tcsim.explore.grid)) and write one "
                       "Parquet file per finished point under OUT/points; a re-run skips finished "
                       "points. Local process pool by default, a Dask cluster with --scheduler.")
    p.add_argument("grid", help="grid TOML file")
    p.add_argument("--out", required=True, help="results folder")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--scheduler-timeout", dest="scheduler_timeout", type=float,
                   help="seconds to reach the scheduler (default $TCSIM_SCHEDULER_TIMEOUT or 10)")
    p.add_argument("--raw-max", dest="raw_max", action="store_true",
                   help="also store the raw max elementwise relative error max|err|/|ref| "
                        "(acc_max_rel, e2e_max_rel; dominated by outputs near zero, never "
                        "used to rank)")
    p.add_argument("--top", type=int, default=3,
                   help="after the run, print the N best design points of each workload by "
                        "accumulation error, relative Frobenius (0: none)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_cmd_sweep)
