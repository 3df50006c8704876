"""Run a sweep grid: one simulated GEMM per point, metrics against float64, one Parquet file per
finished point (written atomically), so an interrupted sweep loses only the points in flight and a
re-run skips every finished point. Local (in process, or a process pool) or on a Dask cluster.

    tcsim sweep grid.toml --out results/ [--workers 2] [--scheduler tcp://host:8786]
    df = tcsim.explore.load_results("results/")     # a tidy pandas table
    print(tcsim.explore.best_table(df))             # ranked by a robust metric (explore.rank)
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import TcsimError
from ..frozen_config import config_error_message
from ..tempfiles import process_exists, remove_stale
from .grid import BASE, Grid, base_path, named_recipe

POINTS_DIR = "points"
SWAMP_SAMPLE_MAX_K = 4096      # the swamped fraction is traced exactly (tcsim.explain) up to here


def build(point: dict):
    """(Datapath, Recipe) of a point; ValueError/TcsimError when the combination is invalid.
    The point's values are concrete (Grid.points resolves "base"), except the scalings, where
    "base" keeps each operand's scaling of the named recipe."""
    from ..datapath import Datapath
    from ..recipe import Recipe, Scaling
    recipe = named_recipe(point["recipe.base"])
    overrides = {"promotion_interval": point["recipe.promotion_interval"] or None}
    for role in ("a", "b"):
        gran = point[f"recipe.{role}_granularity"]
        dtype = point["recipe.scale_dtype"]
        base = getattr(recipe, f"{role}_scaling")
        if gran == "mx":
            if dtype not in (BASE, "ue8m0"):
                raise TcsimError(f"mx scaling uses ue8m0 scales, not scale_dtype {dtype!r}")
            sc = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        else:
            sc = Scaling(granularity=base.granularity if gran == BASE else gran,
                         group_size=base.group_size,
                         scale_dtype=base.scale_dtype if dtype == BASE else dtype)
        overrides[f"{role}_scaling"] = sc
    recipe = Recipe(**(recipe.model_dump() | overrides))
    path = base_path(point["datapath.base"], recipe)
    f = point["datapath.fraction_bits"]
    prec = point["datapath.output_precision"]
    if prec == "f+1":
        if f is None:
            raise TcsimError("output_precision 'f+1' needs finite fraction bits")
        prec = min(f + 1, 24)
    dp = Datapath(**(path.datapath().model_dump() | {
        "fraction_bits": f, "block_size": point["datapath.block_size"],
        "term_rounding": point["datapath.term_rounding"],
        "output_rounding": point["datapath.output_rounding"], "output_precision": prec,
        "sr_bits": point["datapath.sr_bits"], "sr_seed": point["workload.seed"]}))
    return dp, recipe


def _swamped_fraction(qa, qb, dp, recipe, k: int) -> float:
    """Share of nonzero products swamped (truncated to zero) in two sampled outputs."""
    from ..explain import explain
    if k > SWAMP_SAMPLE_MAX_K:
        return math.nan
    m, n = qa.values.shape[0], qb.values.shape[1]
    swamped = total = 0
    for i, j in {(0, 0), (m - 1, n - 1)}:
        ex = explain(qa.values[i], qb.values[:, j], 0.0, model=dp, a_format=recipe.a_format,
                     b_format=recipe.b_format, promotion_interval=recipe.promotion_interval)
        terms = [t for blk in ex.blocks for t in blk.terms if t.label != "C" and t.value != 0]
        swamped += sum(t.swamped for t in terms)
        total += len(terms)
    return swamped / total if total else 0.0


def point_metrics(y, ref, e2e, raw_max: bool = False) -> dict:
    """The metric columns of one point: ``acc_*`` of y against ``ref`` (the exact product of
    the quantised operands), ``e2e_*`` against ``e2e`` (float64 x @ w).

    The error metrics are tcsim.metrics.errors under tcsim.metrics.flat's names, as
    ``tcsim gemm`` prints them (rel_fro, max_scaled, p99_row); the raw max |err| / |ref|
    (acc_max_rel, e2e_max_rel) only with raw_max=True: an output near zero dominates it, and
    it can rank a better accumulator worse. Then the sweep's own statistics of the
    accumulation error (median relative error, bias, ULPs)."""
    from ..metrics import errors, flat
    nz = ref != 0
    rel = np.abs(y[nz] - ref[nz]) / np.abs(ref[nz])
    ulp = np.abs(y - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    cols = flat({"accumulation": errors(y, ref, elementwise=raw_max),
                 "total": errors(y, e2e, elementwise=raw_max)})
    return cols | {
        "acc_median_rel": float(np.median(rel)) if rel.size else 0.0,
        "acc_bias": float(np.mean(y - ref) / np.mean(np.abs(ref))) if np.any(ref) else 0.0,
        "acc_max_ulp": float(ulp.max()), "acc_median_ulp": float(np.median(ulp))}


def metric_columns(raw_max: bool = False) -> tuple:
    """The metric columns an ``ok`` point file holds (see :func:`point_metrics`)."""
    zeros = np.zeros((1, 1))
    return tuple(point_metrics(zeros, zeros, zeros, raw_max)) + ("swamped_fraction",)


def evaluate_point(point: dict, raw_max: bool = False) -> dict:
    """Simulate one point and measure it (see :func:`point_metrics`; raw_max adds the raw
    max relative errors)."""
    from ..gemm import gemm
    from ..workloads import make_inputs
    row = dict(point)
    t0 = time.perf_counter()
    try:
        dp, recipe = build(point)
        x, w = make_inputs(point["workload.dist"], point["workload.m"], point["workload.k"],
                           point["workload.n"], point["workload.seed"])
        y, det = gemm(x, w, model=dp, recipe=recipe, return_details=True, progress=False)
    except (ValueError, TcsimError) as exc:
        reason = config_error_message(exc) if hasattr(exc, "errors") else str(exc)
        row.update(status="invalid", reason=reason.splitlines()[0], seconds=0.0)
        return row
    y = np.asarray(y, dtype=np.float64)
    # the exact product of the quantised operands (a float64 matmul of the dequantised operands
    # can round: an FP8 value times an fp32 scale has up to 28 bits; tcsim.metrics.exact_product)
    ref = det.exact_product()
    e2e = x.astype(np.float64) @ w.astype(np.float64)
    row.update(status="ok", reason="", **point_metrics(y, ref, e2e, raw_max),
               swamped_fraction=_swamped_fraction(det.a, det.b, dp, recipe, point["workload.k"]),
               seconds=time.perf_counter() - t0)
    return row


def _write_row(out_dir: Path, row: dict) -> Path:
    """One point as a one-row Parquet file, written to a temporary name and renamed (atomic)."""
    import pandas as pd
    folder = out_dir / POINTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{row['point_id']}.parquet"
    tmp = folder / f".{row['point_id']}.{os.getpid()}.tmp"
    frame = pd.DataFrame([{k: (json.dumps(v) if isinstance(v, (list, dict)) else v)
                           for k, v in row.items()}])
    for col in frame.columns:      # mixed int/str axes (output_precision) as text
        if frame[col].dtype == object:
            frame[col] = frame[col].astype(str)
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, final)
    return final


class ResultsError(TcsimError, ValueError):
    """A results folder holding a point file that cannot be read back, or point files of
    another set of metrics than this sweep (or the rest of the folder) writes."""


def finished_ids(out_dir) -> set:
    """Ids of the point files on disk (not checked: see :func:`check_points`)."""
    folder = Path(out_dir) / POINTS_DIR
    return {p.stem for p in folder.glob("*.parquet")} if folder.is_dir() else set()


def _read_point(path: Path):
    """One point file as a one-row DataFrame; ResultsError naming the file when it does not
    read back (truncated, random bytes, empty, or not one row of this point)."""
    import pandas as pd
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:     # pyarrow raises ArrowInvalid, OSError, ... on a bad file
        raise ResultsError(f"{path}: cannot be read back as a point file "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                           f"; run the sweep again to recompute it") from None
    if len(frame) != 1 or "point_id" not in frame or frame["point_id"].iloc[0] != path.stem:
        raise ResultsError(f"{path}: cannot be read back as a point file (not one row of point "
                           f"{path.stem}); run the sweep again to recompute it")
    return frame


def _metric_set(frame) -> Optional[frozenset]:
    """The metric columns (acc_*, e2e_*) of a one-row point file; None for an invalid point,
    which has none and fits any set."""
    if frame["status"].iloc[0] != "ok":
        return None
    return frozenset(c for c in frame.columns if c.startswith(("acc_", "e2e_")))


def _older_sweep(metrics: frozenset) -> bool:
    """Written before sweeps stored the robust metrics (no acc_max_scaled; acc_max_rel, the
    raw max |err| / |ref|, in every file)."""
    return "acc_max_scaled" not in metrics


def _metrics_mismatch(out_dir, found: dict, raw_max: bool) -> Optional[str]:
    """Why the point files of ``out_dir`` (file name -> metric set) cannot be resumed with
    the metrics of this run, or None when they all hold them."""
    expected = frozenset(c for c in metric_columns(raw_max) if c.startswith(("acc_", "e2e_")))
    other = sorted(name for name, m in found.items() if m is not None and m != expected)
    if not other:
        return None
    metrics = found[other[0]]
    what = f"{out_dir}: {len(other)} point files (e.g. {other[0]})"
    mixing = "resuming would mix two sets of metrics in one table"
    if _older_sweep(metrics):
        return (f"{what} were written by an older tcsim sweep (raw max relative error "
                f"acc_max_rel, no acc_max_scaled / acc_p99_row); {mixing}: give a new --out "
                f"folder (tcsim.explore.load_results still reads this one)")
    if ("acc_max_rel" in metrics) != raw_max:
        said = "with" if "acc_max_rel" in metrics else "without"
        return (f"{what} were written {said} --raw-max; {mixing}: run again {said} --raw-max, "
                f"or give a new --out folder")
    return (f"{what} hold the metrics {sorted(metrics)}, not this sweep's; {mixing}: give a "
            f"new --out folder")


def check_points(out_dir, raw_max: Optional[bool] = None) -> dict:
    """Before a resume: delete point files that do not read back (their points are computed
    again) and temporary files left by writers that died. Returns {"bad": [...],
    "stale_tmp": [...]} (file names). With raw_max given, first (before deleting anything)
    a ResultsError when a finished point holds other metrics than a point of this run would
    (an older sweep's, or the raw max relative error asked for differently)."""
    folder = Path(out_dir) / POINTS_DIR
    report = {"bad": [], "stale_tmp": []}
    if not folder.is_dir():
        return report
    found = {}
    for path in sorted(folder.glob("*.parquet")):
        try:
            found[path.name] = _metric_set(_read_point(path))
        except ResultsError:
            report["bad"].append(path.name)
    if raw_max is not None:
        why = _metrics_mismatch(out_dir, found, raw_max)
        if why:
            raise ResultsError(why)
    for name in report["bad"]:
        (folder / name).unlink()
    # .<point_id>.<pid>.tmp (see _write_row) of writers that stopped
    report["stale_tmp"] += [path.name for path in remove_stale(folder)]
    return report


def load_results(out_dir):
    """Every finished point as one pandas DataFrame (readable even mid-sweep); a file that
    does not read back raises :class:`ResultsError` naming it. A folder written by an older
    tcsim sweep (raw acc_max_rel, no acc_max_scaled / acc_p99_row) loads with a warning;
    one mixing those files with newer ones raises ResultsError (one table, two metric sets)."""
    import pandas as pd
    files = sorted((Path(out_dir) / POINTS_DIR).glob("*.parquet"))
    if not files:
        return pd.DataFrame()
    frames = [_read_point(f) for f in files]
    sets = {f.name: _metric_set(frame) for f, frame in zip(files, frames)}
    older = sorted(name for name, m in sets.items() if m is not None and _older_sweep(m))
    newer = sorted(name for name, m in sets.items() if m is not None and not _older_sweep(m))
    if older and newer:
        raise ResultsError(f"{out_dir}: {len(older)} point files (e.g. {older[0]}) were written "
                           f"by an older tcsim sweep and {len(newer)} by this one, with other "
                           f"metrics; move the older ones to a folder of their own and load "
                           f"each folder separately")
    if older:
        warnings.warn(f"{out_dir}: written by an older tcsim sweep: acc_max_rel / e2e_max_rel "
                      f"are the raw max |err| / |ref|, dominated by outputs near zero (do not "
                      f"rank by them); rank by acc_rel_fro, or run the sweep again into a new "
                      f"folder for acc_max_scaled and acc_p99_row", stacklevel=2)
    return pd.concat(frames, ignore_index=True)


PR_SET_PDEATHSIG = 1            # linux/prctl.h: a signal sent to this process when its parent dies


def exit_with_parent(sweep_pid: int) -> None:
    """Pool-worker initializer: the worker ends when the sweep process does (a SIGKILLed sweep
    cannot shut its pool down; tcsim train's pool uses it too). Linux: the kernel sends SIGTERM when the parent dies
    (prctl PR_SET_PDEATHSIG). Everywhere: a daemon thread checks twice a second that the parent
    is unchanged and the sweep alive (it runs whenever the worker is not inside one kernel)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass                    # the watchdog below still covers it

    def sweep_gone() -> bool:
        if os.getppid() != parent:  # reparented: the parent died
            return True
        return os.name == "posix" and not process_exists(sweep_pid)

    def watch() -> None:
        while not sweep_gone():
            time.sleep(0.5)
        os._exit(1)
    if sweep_gone():               # the sweep died before the prctl took effect
        os._exit(1)
    threading.Thread(target=watch, name="tcsim-exit-with-parent", daemon=True).start()


class _InterruptGuard:
    """Ctrl-C during the write of a point file is held back until the file is complete: a
    KeyboardInterrupt raised inside pyarrow (a writer's __del__) is swallowed by Python
    ("Exception ignored in ...") and the sweep would run on. Active only in the main thread
    and when SIGINT has Python's default handler."""

    def __init__(self):
        self.busy = self.pending = False
        self.previous = None

    def __enter__(self):
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)

    def _handler(self, signum, frame) -> None:
        if self.busy:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def write(self, out_dir: Path, row: dict) -> None:
        self.busy = True
        try:
            _write_row(out_dir, row)
        finally:
            self.busy = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


class Progress:
    """points done / total, rate and ETA on one stderr line."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0, self.done = total, enabled, time.perf_counter(), 0

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if elapsed else 0.0
        eta = (self.total - self.done) / rate if rate else 0.0
        end = "\n" if self.done == self.total else "\r"
        print(f"sweep: {self.done}/{self.total} points, {rate:.2f}/s, ETA {eta:.0f} s   ",
              end=end, file=sys.stderr, flush=True)


SCHEDULER_TIMEOUT_ENV = "TCSIM_SCHEDULER_TIMEOUT"
DEFAULT_SCHEDULER_TIMEOUT = 10.0


def scheduler_timeout(value: Optional[float] = None) -> float:
    """Seconds allowed to reach a Dask scheduler: ``value``, else $TCSIM_SCHEDULER_TIMEOUT,
    else DEFAULT_SCHEDULER_TIMEOUT."""
    text = os.environ.get(SCHEDULER_TIMEOUT_ENV, "") if value is None else str(value)
    if not text:
        return DEFAULT_SCHEDULER_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        where = "scheduler timeout" if value is not None else SCHEDULER_TIMEOUT_ENV
        raise TcsimError(f"{where} {text!r}: not a positive number of seconds")
    return seconds


def _check_address(scheduler: str) -> None:
    """A clear TcsimError for an address dask cannot even parse."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import get_backend
    what = f"Dask scheduler address {scheduler!r}"
    if not scheduler.strip():
        raise TcsimError("Dask scheduler address: empty address (give e.g. tcp://host:8786)")
    try:
        scheme, loc = parse_address(scheduler)
    except ValueError as exc:
        raise TcsimError(f"{what}: {exc}") from None
    try:
        get_backend(scheme)
    except ValueError:
        raise TcsimError(f"{what}: unknown protocol {scheme!r} (use tcp://host:port)") from None
    if scheme in ("tcp", "tls", "ws", "wss"):
        try:
            host, _ = parse_host_port(loc, 8786)
        except ValueError as exc:
            raise TcsimError(f"{what}: {exc}") from None
        if not host:
            raise TcsimError(f"{what}: no host (give e.g. tcp://host:8786)")


async def _identify(address: str, timeout: float):
    """Dask's identity reply of the server at ``address`` (its handshake, then one request)."""
    from distributed.comm import connect as dask_connect
    comm = await dask_connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def _probe(address: str, timeout: float):
    """Ask the server at ``address`` who it is, in a thread of its own with its own event loop
    (a server that never answers, or answers garbage, cannot hold the caller past timeout).
    Returns the reply, or raises what the exchange raised, or TimeoutError."""
    import asyncio
    result: dict = {}

    def run():
        try:
            # one second more than dask's own connect timeout, so that its clearer errors
            # (refused: "Timed out trying to connect") come first
            result["reply"] = asyncio.run(asyncio.wait_for(_identify(address, timeout),
                                                           timeout + 1.0))
        except BaseException as exc:       # handed to the caller
            result["error"] = exc
    thread = threading.Thread(target=run, name="tcsim-dask-probe", daemon=True)
    thread.start()
    thread.join(timeout + 3.0)
    if thread.is_alive():
        raise TimeoutError
    if "error" in result:
        raise result["error"]
    return result["reply"]


def connect(scheduler: str, timeout: Optional[float] = None):
    """A Dask client for ``scheduler``; every failure (an address dask cannot parse, nothing
    listening, a server that is not a Dask scheduler or never answers) is one TcsimError line
    within about ``timeout`` seconds (default: see :func:`scheduler_timeout`)."""
    import asyncio
    timeout = scheduler_timeout(timeout)
    try:
        from distributed import Client
    except ImportError as exc:
        raise TcsimError("--scheduler needs dask.distributed (pip install 'dask[distributed]')"
                         ) from exc
    _check_address(scheduler)
    silent = (f"{scheduler}: no answer from a Dask scheduler within {timeout:g} s (is something "
              f"else listening on that port?)")
    try:
        reply = _probe(scheduler, timeout)
    except (TimeoutError, asyncio.TimeoutError):
        raise TcsimError(silent) from None
    except OSError as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Timed out during handshake" in text:
            raise TcsimError(silent) from None
        if "Timed out trying to connect" in text or isinstance(exc, ConnectionError):
            raise TcsimError(f"cannot reach the Dask scheduler at {scheduler} within "
                             f"{timeout:g} s: {text}") from None
        raise TcsimError(f"{scheduler} is not a Dask scheduler: the connection failed after "
                         f"connecting ({text})") from None
    except Exception as exc:     # garbage read as Dask frames: MemoryError, ValueError, ...
        raise TcsimError(f"{scheduler} is not a Dask scheduler: its reply is not Dask's protocol "
                         f"({type(exc).__name__})") from None
    kind = reply.get("type") if isinstance(reply, dict) else type(reply).__name__
    if kind != "Scheduler":
        raise TcsimError(f"{scheduler} is not a Dask scheduler (it answers as {kind!r})")
    try:
        return Client(scheduler, timeout=f"{timeout}s")
    except Exception as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TcsimError(f"cannot connect a Dask client to {scheduler}: {text}") from None


def run_sweep(grid: Grid, out_dir, workers: int = 1, scheduler: Optional[str] = None,
              client=None, progress: bool = True, limit: Optional[int] = None,
              connect_timeout: Optional[float] = None, raw_max: bool = False) -> dict:
    """Evaluate every point not already on disk; returns a summary.

    workers: processes for a local pool (1 = in this process). scheduler / client: run on a
    Dask cluster instead. limit: evaluate at most this many points (the rest stay to do).
    connect_timeout: seconds to reach the scheduler (see :func:`scheduler_timeout`).
    raw_max: also store the raw max relative errors (acc_max_rel, e2e_max_rel). A folder whose
    finished points hold other metrics (an older sweep's, or raw_max the other way) is refused
    with a ResultsError before anything is computed: one table, one set of metrics.
    """
    points = grid.points()
    own_client = None
    if scheduler is not None and client is None:     # before anything is written
        client = own_client = connect(scheduler, connect_timeout)
    try:
        return _run_points(grid, points, Path(out_dir), workers, client, progress, limit,
                           raw_max)
    finally:
        if own_client is not None:
            own_client.close()


def _run_points(grid: Grid, points: list, out_dir: Path, workers: int, client, progress: bool,
                limit: Optional[int], raw_max: bool) -> dict:
    """run_sweep once the client (if any) is connected."""
    # refuses a folder of other metrics; what does not read back is computed again
    checked = check_points(out_dir, raw_max)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "grid.json").write_text(grid.model_dump_json(indent=1))
    done = finished_ids(out_dir)
    todo = [p for p in points if p["point_id"] not in done]
    if limit is not None:
        todo = todo[:limit]
    bar = Progress(len(todo), progress)
    counts = {"ok": 0, "invalid": 0, "error": 0}
    errors = []

    guard = _InterruptGuard()

    def finish(row):
        guard.write(out_dir, row)
        counts[row["status"]] += 1
        bar.step()

    def failed(exc, point=None):     # a failing point is reported and retried next run
        counts["error"] += 1
        errors.append(f"{point['point_id']}: {exc}" if point else str(exc))

    t0 = time.perf_counter()
    with guard:
        if client is not None:
            from distributed import as_completed as dask_completed
            for fut in dask_completed(client.map(evaluate_point, todo, pure=False,
                                                        raw_max=raw_max)):
                try:
                    finish(fut.result())
                except Exception as exc:
                    failed(exc)
        elif workers > 1:
            with ProcessPoolExecutor(max_workers=workers, initializer=exit_with_parent,
                                     initargs=(os.getpid(),)) as pool:
                try:
                    futures = [pool.submit(evaluate_point, p, raw_max) for p in todo]
                    for fut in as_completed(futures):
                        try:
                            finish(fut.result())
                        except Exception as exc:
                            failed(exc)
                except BaseException:   # Ctrl-C: do not wait for the points not yet started
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        else:
            for p in todo:
                try:
                    row = evaluate_point(p, raw_max)
                except Exception as exc:
                    failed(exc, p)
                    continue
                finish(row)
    ids = {p["point_id"] for p in points}
    return {"points": len(points), "skipped": len(done & ids), "recomputed": len(checked["bad"]),
            "other_files": len(done - ids), "evaluated": len(todo), **counts,
            "errors": errors[:5], "seconds": time.perf_counter() - t0, "out": str(out_dir)}
