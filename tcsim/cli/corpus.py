"""``tcsim corpus``: recorded hardware outputs replayed, the agreement table."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict

from .common import output_flags


def _cmd_corpus(args: argparse.Namespace) -> int:
    from .. import corpus

    folders = corpus.find_sets(*args.paths)
    model = None
    if args.model is not None:
        from ..presets import load_model
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


def add_parser(sub) -> None:
    """Add the ``corpus`` command to ``sub`` (the subparsers of ``tcsim``)."""
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
    output_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=_cmd_corpus)
