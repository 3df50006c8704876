"""Paired-seed comparison of training runs: each run's loss gap to a reference run, with its spread.

A study trains every run of a config with each of ``train.seeds`` seeds (seed s: the same initial
weights and the same batches for every run), so the runs of one seed differ only in their recipe.
For run r and seed s the *gap* is

    gap(r, s) = final validation loss(r, s) - final validation loss(reference, s),

and pairing by seed removes the seed-to-seed variation that the runs share (initialisation and
data order move every run's loss together). Over the n seeds the table gives the mean gap, its
standard deviation, a 95% confidence interval of the mean gap (Student's t with n - 1 degrees of
freedom: mean +- t * sd / sqrt(n)) and in how many seeds the run was worse than the reference.
A gap whose interval lies above 0 is harm the seeds agree on; an interval that holds 0 is
within noise at this size and length.

Beside the gaps, where the runs recorded GEMM statistics (``train.stats_every``), the table gives
each GEMM's mean ``acc_cos`` (tcsim.torch.stats: the cosine of the simulated output to the exact
product of the same quantised operands), a predictor that needs no training run to the end.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

# Two-sided 95% quantiles of Student's t distribution, t_{0.975}(df) for df = 1..30 (standard
# tables, e.g. NIST/SEMATECH e-Handbook of Statistical Methods, table 1.4.2.3; numpy has no
# t quantile and scipy is not a dependency). Beyond 30 degrees of freedom the normal 1.960 is
# within 1.5% of the t quantile.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
Z975 = 1.960

GAP_COLUMNS = ("run", "seeds", "loss", "reference_loss", "gap", "gap_sd", "ci_low", "ci_high",
               "worse_in")
GEMMS = ("fprop", "dgrad", "wgrad")


def t_quantile_975(df: int) -> float:
    """t_{0.975}(df): the half-width factor of a two-sided 95% interval (NaN for df < 1)."""
    if df < 1:
        return math.nan
    return T975[df - 1] if df <= len(T975) else Z975


def final_losses(losses):
    """One row per (run, seed): the final validation loss (the row at the last step).

    ``losses``: tcsim.train.load_losses's frame (columns run, seed, step, val_loss, ...); a frame
    without a ``seed`` column (results of one seed) counts as seed 0."""
    frame = losses if "seed" in losses else losses.assign(seed=0)
    last = frame.loc[frame.groupby(["run", "seed"], sort=False)["step"].idxmax()]
    return last[["run", "seed", "val_loss"]].reset_index(drop=True)


def paired_gaps(losses, reference: str, gemm_stats=None):
    """The gap table (module docstring) of every run but ``reference``, in the runs' order.

    Only seeds that both a run and the reference finished are paired; a run none of whose seeds
    is paired is left out. ``gemm_stats`` (load_gemm_stats's frame) adds the mean ``acc_cos``
    of each GEMM (columns ``fprop_acc_cos`` ...) where it has that column."""
    import pandas as pd
    finals = final_losses(losses)
    if reference not in set(finals["run"]):
        from ..errors import ConfigError
        raise ConfigError(f"study.reference: no finished run named {reference!r}; runs: "
                          f"{', '.join(dict.fromkeys(finals['run']))}")
    ref = finals[finals["run"] == reference].set_index("seed")["val_loss"]
    rows = []
    for run, df in finals.groupby("run", sort=False):
        if run == reference:
            continue
        df = df[df["seed"].isin(ref.index)]
        if not len(df):
            continue
        gap = df["val_loss"].to_numpy() - ref.loc[df["seed"]].to_numpy()
        n = len(gap)
        mean = float(gap.mean())
        sd = float(gap.std(ddof=1)) if n > 1 else math.nan
        half = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else math.nan
        rows.append({"run": run, "seeds": n, "loss": float(df["val_loss"].mean()),
                     "reference_loss": float(ref.loc[df["seed"]].mean()), "gap": mean,
                     "gap_sd": sd, "ci_low": mean - half, "ci_high": mean + half,
                     "worse_in": int((gap > 0).sum())})
    table = pd.DataFrame(rows, columns=list(GAP_COLUMNS))
    if gemm_stats is not None and len(gemm_stats) and "acc_cos" in gemm_stats:
        cos = gemm_stats.groupby(["run", "gemm"])["acc_cos"].mean().unstack()
        for g in GEMMS:
            column = cos[g] if g in cos else pd.Series(dtype=float)
            table[f"{g}_acc_cos"] = table["run"].map(column)
    return table


def format_gaps(table, reference: str) -> str:
    """The gap table as text: one line per run, the confidence interval and a verdict."""
    lines = [f"validation-loss gap to {reference!r}, paired by seed (mean, 95% CI, worse in):"]
    for r in table.itertuples(index=False):
        if r.seeds > 1:
            verdict = ("worse" if r.ci_low > 0 else "better" if r.ci_high < 0
                       else "within noise")
            ci = f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        else:
            verdict, ci = "one seed: no interval", ""
        lines.append(f"  {r.run:34s} {r.gap:+.4f} {ci:20s} worse in {r.worse_in}/{r.seeds} "
                     f"seeds: {verdict}")
    return "\n".join(lines)


def plot_gaps(table, png, reference: str, title: str = "") -> Optional[Path]:
    """Each run's mean gap with its 95% interval (a horizontal error bar), in the table's order;
    None when the table is empty."""
    if not len(table):
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    y = np.arange(len(table))[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.5))
    low = (table["gap"] - table["ci_low"]).fillna(0.0).to_numpy()
    high = (table["ci_high"] - table["gap"]).fillna(0.0).to_numpy()
    ax.errorbar(table["gap"], y, xerr=[low, high], fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(y, table["run"], fontsize=8)
    ax.set(xlabel=f"final validation loss - {reference} (paired by seed; 95% CI)",
           title=title)
    fig.tight_layout()
    png = Path(png)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png
