"""The ``tcsim`` command line.

    tcsim demo [--out PNG]                                  DeepSeek-V3 GEMM error table + plot
    tcsim corpus PATH [--model NAME|FILE] [--json | --csv]   replay recorded hardware outputs
    tcsim fit PATH... [--out DIR] [--probes-out NPZ]         identify a datapath from records
    tcsim models [NAME] [--json]                            list presets and their datapaths
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict
from typing import Optional, Sequence

from .errors import TcsimError


def _cmd_corpus(args: argparse.Namespace) -> int:
    from . import corpus

    folders = corpus.find_sets(args.path)
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
        bad = [r for r in results if not r.ok]
        unexplained = [r for r in results if r.status == "unexplained" and r.mismatches]
        total = sum(r.rows for r in results)
        print(f"\n{len(results)} output sets, {total} rows: "
              f"{sum(r.mismatches for r in results if r.status != 'unexplained')} mismatches in "
              f"explained sets; {len(unexplained)} set(s) known to be unexplained "
              f"({sum(r.mismatches for r in unexplained)} rows differ).")
        if bad:
            print(f"FAIL: {len(bad)} explained set(s) disagree with the hardware.")
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
    return run(Path(args.out), m=args.m, n=args.m, seed=args.seed)


def _cmd_fit(args: argparse.Namespace) -> int:
    from . import fit

    records = fit.load_records(args.paths)
    results = []
    for i, rs in enumerate(records, 1):
        if not args.quiet:
            print(f"[{i}/{len(records)}] fitting {rs.name}", file=sys.stderr, flush=True)
        results.append(fit.fit_one(rs))
    if args.json:
        print(json.dumps([{"record": r.record.name, "rows": r.record.rows,
                           "output_precision": r.output_precision,
                           "consistent": [dp.model_dump(mode="json") for dp in r.consistent],
                           "ambiguities": r.ambiguities,
                           "best": [{"mismatches": m, "datapath": dp.model_dump(mode="json")}
                                    for m, dp, _ in r.best]} for r in results], indent=2))
    else:
        print(fit.report(results))
    if args.out:
        for path in fit.write_presets(results, args.out):
            print(f"wrote {path}", file=sys.stderr)
    if args.probes_out:
        vs = fit.probe_vectors(results)
        if vs is not None:
            print(f"wrote {vs.save(args.probes_out)} ({vs.rows} probes)", file=sys.stderr)
    return 0 if all(r.consistent for r in results) else 1


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
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("corpus", help="replay recorded hardware outputs (Khattak-Mikaitis layout)",
                       description="Simulate every row of a recorded-output folder with the "
                                   "matching preset and print the agreement table. Exits 1 on "
                                   "any mismatch in a set not marked unexplained.")
    p.add_argument("path", help="corpus folder (root, <GPU> or <GPU>/<format>)")
    p.add_argument("--model", help="use this model (preset name or TOML file) for every set "
                                   "instead of the preset named by each GPU folder")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_corpus)

    p = sub.add_parser("fit", help="identify a datapath from recorded hardware outputs",
                       description="Search block size, fraction bits, term rounding, product "
                       "alignment, C placement and output rounding for every configuration that "
                       "reproduces all rows bit for bit; report ambiguities with directed probes. "
                       "Exits 1 when some record set has no consistent configuration.")
    p.add_argument("paths", nargs="+", help="corpus folders (Khattak-Mikaitis layout) or .npz "
                                            "records")
    p.add_argument("--out", help="folder for the fitted presets (<gpu>-fit.toml)")
    p.add_argument("--probes-out", help=".npz file for the proposed probes (for gpu_validate)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("models", help="list presets and their datapaths",
                       description="List the shipped presets; with a NAME, also the provenance "
                                   "of every parameter.")
    p.add_argument("name", nargs="?", help="one preset name or TOML file")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TcsimError as exc:
        print(f"tcsim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
