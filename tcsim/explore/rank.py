"""Ranking sweep results: within each workload (the ``workload.*`` axes), the design points
(datapath and recipe axes) ordered by an error metric, smallest first.

Only the robust metrics rank (tcsim.metrics.METRICS, of the accumulation or the total error):
the raw max |err| / |ref| is decided by whichever output lies nearest zero, and can call the
better accumulator the worse one (promotion every 128 against fast accumulation at K = 4096).
Comparing across workloads would mostly rank K, so every workload is ranked on its own.

    df = tcsim.explore.load_results("results/")
    print(best_table(df))                   # what `tcsim sweep` prints after a run
"""

from __future__ import annotations

from ..errors import TcsimError
from ..metrics import METRIC_LABELS, METRICS, fmt

RANK_METRIC = "acc_rel_fro"
"""The default: relative Frobenius error of the accumulation (the first of METRICS)."""

RANKABLE = tuple(f"{kind}_{m}" for kind in ("acc", "e2e") for m in METRICS)
KIND_WORDS = {"acc": "accumulation error", "e2e": "total error"}


def _workload_axes(df) -> list:
    return [c for c in df.columns if c.startswith("workload.")]


def design_axes(df) -> list:
    """The datapath and recipe axes whose value differs between the points of df."""
    return [c for c in df.columns if c.startswith(("datapath.", "recipe."))
            and df[c].astype(str).nunique() > 1]


def rank_points(df, metric: str = RANK_METRIC):
    """The ``ok`` points of df sorted by workload, then by ``metric`` (smallest error first,
    point_id breaking ties), with a ``rank`` column: 1 for the best design point of its
    workload. ``metric`` is one of RANKABLE; TcsimError otherwise, or when df lacks it (results
    of an older tcsim sweep: their acc_max_rel is the raw max, not a ranking metric)."""
    if metric not in RANKABLE:
        raise TcsimError(f"rank by {metric!r}: not a robust error metric (one of "
                         f"{', '.join(RANKABLE)})")
    ok = df[df["status"] == "ok"] if "status" in df else df.iloc[:0]
    if ok.empty:                        # nothing finished, or only invalid points
        return ok.assign(rank=[])
    if metric not in df:
        raise TcsimError(f"rank by {metric!r}: the results have no such column (written by an "
                         f"older tcsim sweep? run it again into a new folder)")
    workload = _workload_axes(df)
    ok = ok.sort_values(workload + [metric, "point_id"], kind="mergesort")
    ok = ok.reset_index(drop=True)
    ok["rank"] = ok.groupby(workload, sort=False).cumcount() + 1
    return ok


def _workload_label(row) -> str:
    return (f"M x K x N = {row['workload.m']} x {row['workload.k']} x {row['workload.n']}, "
            f"{row['workload.dist']} inputs, seed {row['workload.seed']}")


def best_table(df, top: int = 3, metric: str = RANK_METRIC) -> str:
    """The ``top`` design points of each workload by ``metric`` (see :func:`rank_points`) as
    text: rank, the robust metrics of the same error kind (the ranking one first), and the
    values of the design axes that vary across the points."""
    ranked = rank_points(df, metric)
    if ranked.empty:
        return "no finished point to rank"
    kind, name = metric.split("_", 1)
    names = [name] + [m for m in METRICS if m != name]
    axes = design_axes(ranked)
    per = ranked.groupby(_workload_axes(ranked), sort=False).size().max()
    lines = [f"best design points per workload by {KIND_WORDS[kind]}, {METRIC_LABELS[name]} "
             f"(lower is better; top {min(top, per)} of {per}):"]
    head = "  rank" + "".join(f"  {METRIC_LABELS[n]:>14}" for n in names) + "  design point"
    for _, group in ranked[ranked["rank"] <= top].groupby(_workload_axes(ranked), sort=False):
        lines += ["", _workload_label(group.iloc[0]), head]
        for _, row in group.iterrows():
            design = " ".join(f"{a.split('.', 1)[1]}={row[a]}" for a in axes) or "(the only one)"
            lines.append(f"  {row['rank']:>4}" + "".join(f"  {fmt(row[f'{kind}_{n}']):>14}"
                                                         for n in names) + f"  {design}")
    return "\n".join(lines)
