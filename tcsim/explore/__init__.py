"""Exploration: design-space sweeps (grids in TOML, Parquet results, resumable, local or Dask)."""

from .grid import Grid, load_grid
from .rank import best_table, rank_points
from .sweep import ResultsError, evaluate_point, load_results, run_sweep

__all__ = ["Grid", "load_grid", "evaluate_point", "load_results", "run_sweep", "ResultsError",
           "rank_points", "best_table"]
