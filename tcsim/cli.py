"""The ``tcsim`` command line.

    tcsim demo [--out PNG]                                  DeepSeek-V3 GEMM error table + plot
    tcsim mma A.npy B.npy [--c C.npy] [--out D.npy]          one bit-exact MMA
    tcsim gemm [--x X.npy --w W.npy | --m --n --k --dist]    an FP8 GEMM with a recipe
    tcsim corpus PATH... [--model NAME|FILE] [--json | --csv] replay recorded hardware outputs
    tcsim fit PATH... [--out DIR] [--probes-out NPZ]         identify a datapath from records
    tcsim explain [--example | --a .. --b ..] [--png F]      trace one output term by term
    tcsim sweep GRID.toml --out DIR [--scheduler ADDR]       design-space sweep to Parquet
    tcsim train CONFIG.toml [--out DIR] [--workers N]       FP8 training runs, loss curves
    tcsim models [NAME] [--json]                            list presets and their datapaths
    tcsim validate replay PATH... [--json]                  replay gpu_validate records (bits)
    tcsim validate suites --out DIR [--seed N]              write the GPU runner's input suites
    tcsim validate run --suite NAME --out PATH [--simulate P] run a suite on this machine's GPU
    tcsim validate unpack ARCHIVE... [--into DIR]           bring a device run's records home
    tcsim validate questions PATH... [--json]               open hardware questions answered
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from .errors import ConfigError, FormatError, ShapeError, TcsimError
from .frozen_config import config_error_message
from .gpu_model import OUTPUT_FORMATS
from .npzfile import read_npy
from .recipe import EPILOGUE_NAMES, GEMM_OUTPUTS, RECIPE_NAMES
from .scales import SCALE_FORMATS
from .workloads import DISTRIBUTIONS


def _cmd_corpus(args: argparse.Namespace) -> int:
    from . import corpus

    folders = corpus.find_sets(*args.paths)
    model = None
    if args.model is not None:
        from .presets import load_model
        model = load_model(args.model)
    results = []
    for i, folder in enumerate(folders, 1):
        if not args.quiet:
            print(f"[{i}/{len(folders)}] {folder}", file=sys.stderr, flush=True)
        results.extend(corpus.replay_set(corpus.read_set(folder), model))
    if args.json:
        print(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=2))
    elif args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(asdict(results[0])) + ["ok"])
        writer.writeheader()
        for r in results:
            writer.writerow(asdict(r) | {"ok": r.ok})
        print(buf.getvalue(), end="")
    else:
        print(corpus.format_table(results))
        bad = [r for r in results if not r.ok and r.served]
        unserved = [r for r in results if not r.served]
        unexplained = [r for r in results if r.status == "unexplained" and r.mismatches]
        total = sum(r.rows for r in results)
        print(f"\n{len(results)} output sets, {total} rows: "
              f"{sum(r.mismatches for r in results if r.status != 'unexplained')} mismatches in "
              f"explained sets; {len(unexplained)} set(s) known to be unexplained "
              f"({sum(r.mismatches for r in unexplained)} rows differ).")
        if bad:
            print(f"FAIL: {len(bad)} explained set(s) disagree with the hardware.")
        if unserved:
            print(f"FAIL: {len(unserved)} set(s) have no datapath in their preset "
                  f"({sum(r.rows for r in unserved)} rows not replayed).")
    return 1 if any(not r.ok for r in results) else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .presets import load_model, preset_names

    names = [args.name] if args.name else preset_names()
    models = [load_model(n) for n in names]
    if args.json:
        print(json.dumps([m.model_dump(mode="json") for m in models], indent=2))
        return 0
    for m in models:
        print(f"{m.name}: {m.description}")
        for p in m.paths:
            f = "exact" if p.fraction_bits is None else p.fraction_bits
            n = "K" if p.block_size is None else p.block_size
            extra = f", C {p.c_placement}" if p.c_placement != "inside" else ""
            if p.block_scale != "none":
                extra += (f", scales {'/'.join(p.scale_formats)} per "
                          f"{'/'.join(map(str, p.scale_blocks))} ({p.block_scale}"
                          f"{' of ' + str(p.group_size) if p.group_size else ''})")
            if p.lanes != 1:
                extra += f", {p.lanes} lanes (even/odd K)"
            if p.product_sum == "pairwise":
                extra += ", pairwise tree" + (" with FTZ at every node" if p.flush_nodes else "")
            if p.lowered_k is not None:
                extra += (f", lowered k{p.lowered_k}: {p.lowered_k // n} blocks from 0"
                          f"{' in k_order' if p.k_order else ''}, then + C")
            print(f"  {'/'.join(p.inputs):<28} -> {p.output:<4}  path {p.name:<9} n={n:<3} f={f:<5} "
                  f"out {p.effective_output_precision()} bits {p.output_rounding.upper()}"
                  f"{extra}  [{p.status}]")
        if args.name:
            for p in m.paths:
                for field, note in p.provenance.items():
                    print(f"    {p.name} {'/'.join(p.inputs)}->{p.output} {field}: {note}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .demo import run
    _positive(args, "m")
    _check_out_folder(args.out)
    return run(Path(args.out), m=args.m, n=args.m, seed=args.seed)


def _check_fit_outputs(args: argparse.Namespace) -> None:
    """Refuse --out / --probes-out paths that cannot be written, before the fit (minutes)."""
    import os
    from pathlib import Path
    if args.out is not None:
        # --out is a folder, made with its missing parents: the nearest existing one must be a
        # folder we may write in
        out = Path(args.out).resolve()
        existing = next(p for p in (out, *out.parents) if p.exists())
        if not existing.is_dir():
            raise ShapeError(f"--out: {str(existing)!r} is a file, not a folder")
        if not os.access(existing, os.W_OK):
            raise ShapeError(f"--out: the folder {str(existing)!r} is not writable")
    if args.probes_out is not None:
        # its folder must exist, unless it is the --out folder, which is made before it is written
        made = args.out is not None and \
            Path(args.probes_out).resolve().parent == Path(args.out).resolve()
        if not made:
            _check_out_folder(args.probes_out, "--probes-out")
        saved = Path(args.probes_out)            # VectorSet.save appends .npz when missing
        if saved.suffix != ".npz":
            saved = saved.with_name(saved.name + ".npz")
        if saved.is_dir():
            raise ShapeError(f"--probes-out: {str(saved)!r} is a folder, not a file")


def _cmd_fit(args: argparse.Namespace) -> int:
    from . import fit

    _check_fit_outputs(args)
    records = fit.load_records(args.paths)
    results = []
    one_line = sys.stderr.isatty()       # a terminal: one progress line, rewritten in place
    for i, rs in enumerate(records, 1):
        if not args.quiet:
            print(f"[{i}/{len(records)}] fitting {rs.name:<40}", file=sys.stderr, flush=True,
                  end="\r" if one_line else "\n")
        results.append(fit.fit_one(rs))
    if one_line and not args.quiet:
        print(file=sys.stderr)
    if args.json:
        print(json.dumps([{"record": r.record.name, "rows": r.record.rows,
                           "output_precision": r.output_precision,
                           "consistent": [dp.model_dump(mode="json") for dp in r.consistent],
                           "ambiguities": r.ambiguities,
                           "parameters": {v.name: {"values": v.values, "pinned": v.pinned,
                                                   "note": v.note, "mode": v.mode}
                                          for v in r.verdicts.values()},
                           "best": [{"mismatches": m, "datapath": dp.model_dump(mode="json")}
                                    for m, dp, _ in r.best]} for r in results], indent=2))
    elif args.verbose:
        print(fit.report(results) + "\n")
    presets = fit.write_presets(results, args.out) if args.out else []
    probes_path = None
    if args.probes_out:
        vs = fit.probe_vectors(results)
        if vs is not None:
            probes_path = vs.save(args.probes_out)
    if not args.json:
        print(fit.summary(results, probes_path, presets))
        if not args.verbose:
            print("(--verbose: each set's consistent configurations, ambiguities and probes)")
    return 0 if all(r.consistent for r in results) else 1


def _validate_commands():
    """gpu_validate.commands, the one module of gpu_validate the command line calls."""
    try:
        from gpu_validate import commands
    except ImportError as exc:
        raise TcsimError(f"tcsim validate needs gpu_validate, which could not be imported "
                         f"({exc})") from None
    return commands


def _cmd_validate_replay(args: argparse.Namespace) -> int:
    return _validate_commands().replay(args.paths, as_json=args.json, quiet=args.quiet)


def _cmd_validate_suites(args: argparse.Namespace) -> int:
    _positive(args, "rows", "k")
    if args.k % 32:
        raise ShapeError(f"--k must be a multiple of 32 (whole k32 instructions), got {args.k}")
    return _validate_commands().write_suites(args.out, k=args.k, rows=args.rows, seed=args.seed)


def _cmd_validate_run(args: argparse.Namespace) -> int:
    return _validate_commands().run(args.suite, args.out, suites=args.suites, build=args.build,
                                    simulate=args.simulate)


def _cmd_validate_questions(args: argparse.Namespace) -> int:
    return _validate_commands().questions(args.paths, as_json=args.json)


def _cmd_validate_unpack(args: argparse.Namespace) -> int:
    return _validate_commands().unpack(args.archives, args.into, overwrite=args.overwrite)


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain import deepseek_example, explain
    if args.example:
        a, b, c = deepseek_example()
    else:
        if not (args.a and args.b):
            print("tcsim: error: give --a and --b (comma-separated values), or --example",
                  file=sys.stderr)
            return 2
        a, b = _numbers(args.a, "--a"), _numbers(args.b, "--b")
        c = _exact_number(args.c, "--c")
    if args.max_terms < 0:
        raise ShapeError(f"--max-terms must be 0 or more, got {args.max_terms}")
    ex = explain(a, b, c, model=args.model, a_format=args.format, b_format=args.b_format,
                 acc=args.acc, path=args.path, promotion_interval=args.promotion or None)
    if args.json:
        print(json.dumps({"result": ex.result, "exact": float(ex.exact), "checked": ex.checked,
                          "blocks": [{"k0": bl.k0, "k1": bl.k1, "E": bl.E,
                                      "terms": [{"label": t.label, "value": float(t.value),
                                                 "exponent": t.exponent,
                                                 "aligned": float(t.aligned),
                                                 "swamped": t.swamped} for t in bl.terms],
                                      "notes": bl.notes,
                                      "result": float(bl.result)} for bl in ex.blocks]},
                         indent=2))
    else:
        print(ex.text(max_terms=args.max_terms))
    if args.png:
        saved = ex.figure(args.png)
        print(f"figure saved to {saved}" if saved else "(matplotlib missing: no figure)",
              file=sys.stderr)
    return 0


def _numbers(text: str, option: str):
    """A comma-separated list of numbers as a float64 array, each exactly the number written
    (a decimal that float64 would round is refused, as tcsim.mma refuses rounding)."""
    import numpy as np
    return np.array([_exact_number(v, option) for v in text.split(",")])


def _exact_number(text: str, option: str) -> float:
    from fractions import Fraction
    try:
        value = float(text)
    except ValueError:
        raise ShapeError(f"{option}: {text.strip()!r} is not a number (give comma-separated "
                         f"numbers, e.g. {option} 1,0.5,-2)") from None
    try:
        exact = Fraction(text.strip())
    except ValueError:      # inf, nan: no exact fraction (explain refuses them itself)
        return value
    if Fraction(value) != exact:
        raise FormatError(f"{option}: {text.strip()} is not exactly a binary floating-point "
                          f"value (the nearest float64 is {value:.17g}); give a value the "
                          f"format holds")
    return value


def _check_out_folder(path: Optional[str], option: str = "--out") -> None:
    """Refuse an output file whose folder does not exist, before any work is done."""
    from pathlib import Path
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ShapeError(f"{option}: the folder of {path!r} does not exist")


def _npy_out(path: Optional[str], option: str = "--out") -> Optional[str]:
    """The file an .npy output really goes to, checked before any work: np.save appends '.npy'
    to a name without it (so the message names that file), and a folder is refused (np.save
    would write FOLDER.npy beside it)."""
    import os
    from pathlib import Path
    if path is None:
        return None
    if Path(path).is_dir() or path.endswith(("/", os.sep)):
        raise ShapeError(f"{option}: {path!r} is a folder; give a file name, e.g. "
                         f"{str(Path(path) / 'out.npy')!r}")
    _check_out_folder(path, option)
    return path if path.endswith(".npy") else path + ".npy"


def _gemm_operand(path: str, option: str):
    """A GEMM operand from .npy file ``path``: float32 / float64 as saved (float16 widened, ints
    exactly converted); raw codes, complex, string and other arrays are refused, naming the file
    (a cast would keep garbage: numpy reads a |V1 code 0x38 as the digit '8' and complex
    numbers lose their imaginary part)."""
    import numpy as np
    arr = read_npy(path, option)
    if arr.dtype.type is np.void:
        raise FormatError(f"{option} {path}: holds raw {arr.dtype.itemsize}-byte codes (dtype "
                          f"{arr.dtype}: an ml_dtypes array saved with np.save); tcsim gemm "
                          f"quantises real values itself: save the values as float32")
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iub":
        values = arr.astype(np.float64)
        if (values.astype(arr.dtype) != arr).any():
            raise FormatError(f"{option} {path}: integers beyond 2^53 are not exactly float64")
        return values
    raise FormatError(f"{option} {path}: must hold real numbers (float32 or float64), got dtype "
                      f"{arr.dtype}")


def _physical_memory() -> Optional[int]:
    """Bytes of memory this machine has, or None where the system does not say."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _check_gemm_memory(m: int, k: int, n: int) -> None:
    """Refuse a generated GEMM that cannot fit before drawing its inputs (drawing them alone
    could take minutes): it holds at least x and w while drawing them (float64) and the M x N
    float32 accumulator."""
    need, have = 8 * (m * k + k * n) + 4 * m * n, _physical_memory()
    if have is not None and need > have:
        raise ShapeError(f"--m {m} --n {n} --k {k}: this GEMM needs at least "
                         f"{need / 2 ** 30:,.1f} GiB of memory (its inputs and the M x N "
                         f"accumulator); this machine has {have / 2 ** 30:,.1f} GiB")


def _positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse sizes below 1 (a GEMM with M = 0 has nothing to measure)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ShapeError(f"--{name} must be at least 1, got {value}")


def _emit(args: argparse.Namespace, rows: list) -> None:
    """Print rows of dicts as JSON, CSV or aligned text."""
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        for r in rows:
            print("  ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                            for k, v in r.items()))


def _cmd_mma(args: argparse.Namespace) -> int:
    import numpy as np

    from . import formats
    from .mma import ACC_DTYPES, mma
    out = _npy_out(args.out)
    a, b = read_npy(args.a, "A"), read_npy(args.b, "B")
    c = None
    if args.c:
        c = read_npy(args.c, "C")
        if c.dtype != ACC_DTYPES[args.acc] and c.dtype.kind in "fiu":
            # C must be exactly a value of the accumulator, as tcsim.mma demands (no cast)
            try:
                formats.check_representable(c, args.acc, what="C")
            except TcsimError as exc:
                raise FormatError(f"--c {args.c}: {exc} (--acc {args.acc})") from None
            c = c.astype(ACC_DTYPES[args.acc])
    a_format, b_format = _mma_formats(args, a, b)
    scales = {}
    if args.a_scale or args.b_scale:
        if not (args.a_scale and args.b_scale):
            raise ShapeError("give both --a-scale and --b-scale (block-scaled paths)")
        scales = dict(a_scale=read_npy(args.a_scale, "A scales"),
                      b_scale=read_npy(args.b_scale, "B scales"),
                      scale_format=args.scale_format)
    d = mma(a, b, c, model=args.model, a_format=a_format, b_format=b_format, acc=args.acc,
            path=args.path, **scales)
    if out:
        np.save(out, d)
        print(f"wrote {out} ({d.shape}, {d.dtype})", file=sys.stderr)
    bits = d.view(np.uint32 if d.dtype == np.float32 else np.uint16)
    rows = []
    for index in np.ndindex(d.shape):       # (i, j), or (batch, i, j) for 3-D operands
        names = ("i", "j") if d.ndim == 2 else ("batch", "i", "j")
        rows.append({**dict(zip(names, map(int, index))), "d": float(d[index]),
                     "bits": f"{int(bits[index]):#x}"})
    if not args.out or args.json or args.csv:
        _emit(args, rows)
    return 0


def _mma_formats(args: argparse.Namespace, a, b) -> tuple:
    """The formats of A and B: the option, else the array's dtype (float16, ml_dtypes), else
    the other operand's, else e4m3. Raw codes (an ml_dtypes array saved with np.save loads
    back as |V1) carry no format: they need the option."""
    import numpy as np

    from .mma import DTYPE_FORMATS
    for arr, given, option, path in ((a, args.a_format, "--a-format", args.a),
                                     (b, args.b_format or args.a_format, "--b-format", args.b)):
        if arr.dtype.type is np.void and given is None:
            raise FormatError(f"{path}: holds raw {arr.dtype.itemsize}-byte codes (dtype "
                              f"{arr.dtype}: an ml_dtypes array saved with np.save); give "
                              f"{option} to say which format they are")
    a_dtype, b_dtype = (DTYPE_FORMATS.get(x.dtype.name) for x in (a, b))
    a_format = args.a_format or a_dtype or b_dtype or "e4m3"
    b_format = args.b_format or b_dtype or (args.a_format or a_dtype) or "e4m3"
    return a_format, b_format


def _cmd_gemm(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from .gemm import gemm
    from .metrics import error_table, flat, gemm_errors
    from .recipe import Recipe
    from .workloads import make_inputs
    out = _npy_out(args.out)
    if args.recipe not in RECIPE_NAMES:
        raise ConfigError(f"--recipe: unknown recipe {args.recipe!r}; named recipes: "
                          f"{', '.join(RECIPE_NAMES)}")
    if args.x or args.w:
        if not (args.x and args.w):
            raise ShapeError("give both --x and --w (or neither, for generated inputs)")
        x, w = _gemm_operand(args.x, "--x"), _gemm_operand(args.w, "--w")
    else:
        _positive(args, "m", "n", "k")
        _check_gemm_memory(args.m, args.k, args.n)
        x, w = make_inputs(args.dist, args.m, args.k, args.n, args.seed)
    overrides = {}
    if args.promotion is not None:
        overrides["promotion_interval"] = None if args.promotion == 0 else args.promotion
    if args.epilogue:
        overrides["epilogue"] = args.epilogue
    if args.output:
        overrides["output"] = args.output
    try:
        recipe = Recipe.named(args.recipe, **overrides)
    except ValueError as exc:
        raise ConfigError(config_error_message(exc, where="recipe: ")) from None
    t0 = time.perf_counter()
    y, det = gemm(x, w, model=args.model, recipe=recipe, return_details=True, path=args.path)
    seconds = time.perf_counter() - t0
    if out:
        np.save(out, np.asarray(y, dtype=np.float32))
        print(f"wrote {out}", file=sys.stderr)
    errs = gemm_errors(x, w, y, det, elementwise=args.raw_max)
    (m, k), n = x.shape, w.shape[1]
    row = {"model": args.model, "recipe": args.recipe, "M": m, "N": n, "K": k,
           "promotions": det.chunks} | flat(errs) | {"seconds": seconds}
    if args.json or args.csv:
        _emit(args, [row])
    else:
        print(f"{args.model}, recipe {args.recipe}: M = {m}, N = {n}, K = {k}, "
              f"{det.chunks} tensor-core chunk(s) per output, simulated in {seconds:.2f} s")
        print(error_table(errs))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:        # checked before any point is computed (the points are saved with these)
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"tcsim sweep needs {exc.name or 'pandas and pyarrow'} (the 'explore' "
                          f"extra): pip install 'tcsim[explore]'") from None
    from .explore import load_grid, load_results, run_sweep
    from .explore.rank import best_table
    from .explore.sweep import finished_ids
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


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import load_config
    cfg = load_config(args.config)      # a config is checked without PyTorch (the recipes need none)
    if args.device is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": args.device})})
    if cfg.train.device == "cuda":       # tcsim's GPU backend, checked before torch is imported
        from .cuda import require
        require()
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TcsimError("tcsim train needs PyTorch: pip install 'tcsim[torch]'") from None
    from .train.runner import run_grid
    if args.steps is not None:
        if args.steps < 1:
            raise ConfigError(f"--steps: must be >= 1, got {args.steps}")
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": args.steps})})
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
        for label, loss in summary.get("final_val_loss", {}).items():
            print(f"  {label:40s} final validation loss {loss:.4f}")
        for line in summary["recovered"]:
            print(f"  recovered: {line}")
        for e in summary["errors"]:
            print(f"  error: {e}")
    return 1 if summary["errors"] else 0


def _output_flags(p: argparse.ArgumentParser) -> None:
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="h100",
                   help="preset name (tcsim models) or a TOML model file")
    p.add_argument("--path", help="instruction path of the model (e.g. mma.sync on b200)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcsim", description="Bit-exact simulator of GPU matrix-unit accumulation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="DeepSeek-V3 FP8 GEMM on a simulated H100: error table and "
                                    "plot", description="Simulate FP8 GEMMs with fast "
                       "accumulation and with promotion every 128 (h100), b200 and an ideal unit; "
                       "print the errors against float64 and save a plot of error against K.")
    p.add_argument("--out", default="tcsim_demo.png", help="PNG file for the plot")
    p.add_argument("--m", type=int, default=64, help="M = N of the simulated GEMMs")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("mma", help="D = A*B + C through a modelled matrix unit (.npy in/out)",
                       description="Simulate one matrix multiply-accumulate bit for bit. A, B "
                       "(and C) are .npy arrays (2-D, or 3-D for a batch) of exactly "
                       "representable values: floats, float16 / ml_dtypes arrays (their dtype "
                       "gives the format), or raw codes (ml_dtypes arrays saved with np.save "
                       "load back as |V1: give the format).")
    p.add_argument("a", help="A (M, K) .npy")
    p.add_argument("b", help="B (K, N) .npy")
    p.add_argument("--c", help="C (M, N) .npy, values exactly representable in the "
                               "accumulator format (default: zeros)")
    _model_flags(p)
    p.add_argument("--a-format", dest="a_format",
                   help="input format of A (e4m3, e5m2, fp16, bf16, tf32, e2m1, ...; default: "
                        "from A's dtype, else B's, else e4m3)")
    p.add_argument("--b-format", dest="b_format",
                   help="input format of B (default: from B's dtype, else --a-format / A's)")
    p.add_argument("--acc", default="fp32", choices=OUTPUT_FORMATS,
                   help="accumulator (and output) format")
    p.add_argument("--a-scale", dest="a_scale",
                   help="block-scaled paths: A scales (M, K/s) .npy (s = 16 or 32)")
    p.add_argument("--b-scale", dest="b_scale", help="block-scaled paths: B scales (K/s, N) .npy")
    p.add_argument("--scale-format", dest="scale_format", default="ue8m0",
                   choices=SCALE_FORMATS, help="format of the block scales")
    p.add_argument("--out", help="write D as .npy to this file ('.npy' is appended when "
                                 "missing; a folder is refused)")
    _output_flags(p)
    p.set_defaults(func=_cmd_mma)

    p = sub.add_parser("gemm", help="simulate an FP8 GEMM with a recipe; error vs float64",
                       description="Quantise x and w with a named recipe, simulate the GEMM on "
                       "the model and print its accumulation error (against the exact product "
                       "of the quantised FP8 inputs: what the matrix unit loses) and its total "
                       "error (against x @ w in float64: quantisation + accumulation), as "
                       "fractions.")
    p.add_argument("--x", help="x (M, K) .npy (default: generated with --dist)")
    p.add_argument("--w", help="w (K, N) .npy")
    p.add_argument("--m", type=int, default=64, help="rows of the generated x (M >= 1)")
    p.add_argument("--n", type=int, default=64, help="columns of the generated w (N >= 1)")
    p.add_argument("--k", type=int, default=4096, help="inner dimension K of the generated "
                                                         "inputs (K >= 1)")
    p.add_argument("--dist", default="normal", choices=DISTRIBUTIONS,
                   help="distribution of the generated inputs (tcsim.workloads)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    _model_flags(p)
    p.add_argument("--recipe", default="deepseek_v3",
                   help=f"named recipe: {', '.join(RECIPE_NAMES)}")
    p.add_argument("--promotion", type=int, help="promotion interval (0 = fast accumulation)")
    p.add_argument("--epilogue", choices=EPILOGUE_NAMES,
                   help="order of the scaling FMA at each promotion (default: the recipe's)")
    p.add_argument("--output", choices=GEMM_OUTPUTS,
                   help="output format (default: the recipe's)")
    p.add_argument("--out", help="write y as .npy (float32) to this file ('.npy' is appended "
                                 "when missing; a folder is refused)")
    p.add_argument("--raw-max", dest="raw_max", action="store_true",
                   help="also report the raw max elementwise relative error max|err|/|ref| "
                        "(dominated by outputs near zero)")
    _output_flags(p)
    p.set_defaults(func=_cmd_gemm)

    p = sub.add_parser("sweep", help="run a design-space grid (TOML) to Parquet, resumable",
                       description="Evaluate every point of a grid TOML file (datapath, recipe "
                       "and workload axes; see the README's sweep section) and write one "
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

    p = sub.add_parser("train", help="FP8 training runs of a small GPT (TOML grid), loss curves",
                       description="Train a small character-level GPT on the standard library's "
                       "source text with each training recipe of CONFIG (format: the README's FP8 "
                       "training section; example: examples/train_small.toml) side by side; write "
                       "losses and per-GEMM statistics as Parquet and a PNG of the loss curves. "
                       "Runs resume from their checkpoints; a run's file that does not read "
                       "back is recomputed, and the output names it. Needs PyTorch (the torch "
                       "extra).")
    p.add_argument("config", help="training config TOML file")
    p.add_argument("--out", help="results folder (default: <name>_results)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--scheduler", help="Dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--device", choices=("cpu", "cuda"),
                   help="override train.device: where the simulated GEMMs run (cuda: tcsim's GPU "
                        "backend, and torch's GPU when torch has CUDA)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("explain", help="trace one output through a datapath, term by term",
                       description="Every term's exponent, its value on the block's grid, what "
                       "it lost (or whether it was swamped), the block sums and the rounding. "
                       "--example shows Hopper's 14-bit FP8 accumulation swamping small "
                       "products next to a large one.")
    p.add_argument("--a", help="comma-separated values of the row of A")
    p.add_argument("--b", help="comma-separated values of the column of B")
    p.add_argument("--c", default="0",
                   help="C, exactly representable in the accumulator format")
    p.add_argument("--example", action="store_true", help="the DeepSeek '14 bits' example")
    _model_flags(p)
    p.add_argument("--format", default="e4m3", help="format of A (and of B unless --b-format)")
    p.add_argument("--b-format", dest="b_format", help="format of B (default: --format)")
    p.add_argument("--acc", default="fp32", choices=OUTPUT_FORMATS,
                   help="accumulator (and output) format")
    p.add_argument("--promotion", type=int,
                   help="promotion interval into FP32 accumulation (0 or none: no promotion)")
    p.add_argument("--max-terms", type=int, default=12, help="terms shown per block")
    p.add_argument("--png", help="save the term/grid figure of the first block")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("corpus", help="replay recorded hardware outputs (Khattak-Mikaitis layout)",
                       description="Simulate every row of a recorded-output folder with the "
                                   "matching preset and print the agreement table. A set no "
                                   "preset path serves is a 'no datapath' row. Exits 1 on any "
                                   "mismatch in a set not marked unexplained, or any such row.")
    p.add_argument("paths", nargs="+", metavar="path",
                   help="corpus folders (root, <GPU> or <GPU>/<format>), e.g. the upstream "
                        "MATLAB-tensor-core/model_validation")
    p.add_argument("--model", help="use this model (preset name or TOML file) for every set "
                                   "instead of the preset named by each GPU folder")
    _output_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser("fit", help="identify a datapath from recorded hardware outputs",
                       description="Search block size, fraction bits, term rounding, product "
                       "alignment, C placement and output rounding for every configuration that "
                       "reproduces all rows bit for bit; report each parameter the rows do not "
                       "pin (several values fit, a bound such as block_size >= K for rows of K, "
                       "a mode no row reaches) with a directed probe that would pin it. Exits 1 "
                       "when some record set has no consistent configuration.")
    p.add_argument("paths", nargs="+", help="corpus folders (Khattak-Mikaitis layout) or .npz "
                                            "records")
    p.add_argument("--out", help="folder for the fitted presets (<gpu>-fit.toml; a note per "
                                 "parameter says pinned, bounded or NOT FITTED)")
    p.add_argument("--probes-out", help=".npz file for the proposed probes (for gpu_validate); "
                                        "its folder must exist or be the --out folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--verbose", action="store_true",
                   help="before the summary table, each set's consistent configurations, "
                        "ambiguities, probes and (when nothing fits) best candidates")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("models", help="list presets and their datapaths",
                       description="List the shipped presets; with a NAME, also the provenance "
                                   "of every parameter.")
    p.add_argument("name", nargs="?", help="one preset name or TOML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("validate", help="hardware validation: replay GPU records, write the "
                                        "input suites, run them on a GPU",
                       description="gpu_validate: records of real (or synthetic) tensor-core "
                                   "runs, replayed bit for bit through tcsim.")
    vsub = p.add_subparsers(dest="validate_command", required=True)
    v = vsub.add_parser("replay", help="replay gpu_validate records through their tcsim model",
                        description="Simulate every row of each record (.npz, or folders of "
                                    "them) with the preset of its GPU and the path of its "
                                    "instruction, compare bits exactly, print one line per "
                                    "record and a diagnosis of each mismatching record. Exits 1 "
                                    "on any mismatch of a record whose path has a model (paths "
                                    "marked unexplained excepted).")
    v.add_argument("paths", nargs="+", help="record files or folders (searched recursively)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    v.set_defaults(func=_cmd_validate_replay)
    v = vsub.add_parser("suites", help="write the input suites the GPU runner reads",
                        description="Write <suite>__<a>x<b>.npz input files (raw fp32 bits) for "
                                    "every suite and FP8 format pair; the same seed gives the "
                                    "same bytes.")
    v.add_argument("--out", required=True, help="output folder")
    v.add_argument("--seed", type=int, default=0, help="seed of the random suites")
    v.add_argument("--rows", type=int, default=512, help="rows per random suite")
    v.add_argument("--k", type=int, default=32, help="K of the K = 32 suites (multiple of 32)")
    v.set_defaults(func=_cmd_validate_suites)
    v = vsub.add_parser("run", help="run a suite on this machine's GPU (needs CuPy and CUDA)",
                        description="Run one suite through the FP8 kernels of gpu_validate on "
                                    "the local GPU and write records.")
    v.add_argument("--suite", required=True, help="suite name")
    v.add_argument("--out", required=True, help="where the records go")
    v.add_argument("--suites", help="folder of suite input files (default "
                                    "gpu_validate/build/suites)")
    v.add_argument("--build", help="folder of compiled cubins (default gpu_validate/build)")
    v.add_argument("--simulate", metavar="PRESET[@CC]",
                   help="dry run without a GPU: tcsim's PRESET answers for the device and the "
                        "records say synthetic")
    v.set_defaults(func=_cmd_validate_run)
    v = vsub.add_parser("unpack", help="unpack the records-<n>.tar parts of a device run",
                        description="Extract the records-<n>.tar parts of a device run under "
                                    "--into. Every part is checked before anything is written; "
                                    "an existing file is never replaced without --overwrite.")
    v.add_argument("archives", nargs="+", help="records-<n>.tar parts")
    v.add_argument("--into", default=None,
                   help="records folder (default: gpu_validate/records of the tcsim repository "
                        "when run inside a checkout of it, else ./gpu_validate_records)")
    v.add_argument("--overwrite", action="store_true", help="replace existing files")
    v.set_defaults(func=_cmd_validate_unpack)
    v = vsub.add_parser("questions", help="the open hardware questions, answered by records",
                        description="For each open question (fraction bits, unnormalised "
                                    "products, block size, C without products, sign handling, "
                                    "output rounding, carry headroom, the fp16-accumulator "
                                    "path): the probe rows of the records, the exact value, the "
                                    "hardware's, and which candidate settings reproduce it.")
    v.add_argument("paths", nargs="+", help="record files or folders (searched recursively)")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=_cmd_validate_questions)
    for p in _all_parsers(parser):
        p.formatter_class = _HelpFormatter
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every --help shows the defaults; options without one (None, or off flags) say nothing."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def _all_parsers(parser: argparse.ArgumentParser) -> list:
    """The parser and every subcommand's parser, depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):
                found.extend(_all_parsers(sub))
    return found


def _fail(error) -> int:
    """Print ``error`` as one line on stderr (several lines joined with '; '); exit status 2."""
    message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    print(f"tcsim: error: {message}", file=sys.stderr)
    return 2


# Exit status when the reader of stdout went away (``tcsim mma ... | head``): 128 + SIGPIPE,
# what a shell reports for a program killed by the broken pipe.
EXIT_BROKEN_PIPE = 141


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()          # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader stopped reading: exit quietly, with stdout pointed at devnull so that
        # Python's final flush does not complain either
        import os
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except MemoryError as exc:
        # numpy's says how much one array needed ("Unable to allocate 3.64 TiB for an array
        # with shape (1000000, 1000000) ...")
        return _fail(f"not enough memory: {str(exc) or 'an allocation failed'}")
    except (TcsimError, OSError) as exc:
        # what is wrong and with which file or argument (OSError: a file the operating system
        # refused, e.g. a folder given where a file goes)
        return _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
