"""``tcsim fit``: a datapath identified from recorded hardware outputs."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import OutputFileError
from ..npzfile import check_out_folder


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
            raise OutputFileError(f"--out: {str(existing)!r} is a file, not a folder")
        if not os.access(existing, os.W_OK):
            raise OutputFileError(f"--out: the folder {str(existing)!r} is not writable")
    if args.probes_out is not None:
        # its folder must exist, unless it is the --out folder, which is made before it is written
        made = args.out is not None and \
            Path(args.probes_out).resolve().parent == Path(args.out).resolve()
        if not made:
            check_out_folder(args.probes_out, "--probes-out")
        saved = Path(args.probes_out)            # VectorSet.save appends .npz when missing
        if saved.suffix != ".npz":
            saved = saved.with_name(saved.name + ".npz")
        if saved.is_dir():
            raise OutputFileError(f"--probes-out: {str(saved)!r} is a folder, not a file")


def _cmd_fit(args: argparse.Namespace) -> int:
    from .. import fit

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


def add_parser(sub) -> None:
    """Add the ``fit`` command to ``sub`` (the subparsers of ``tcsim``)."""
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
