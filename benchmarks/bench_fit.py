"""Benchmark: how long `tcsim fit` takes per recorded set of the Khattak-Mikaitis corpus.

    python benchmarks/bench_fit.py [CORPUS_FOLDER] [--tiny]
        (default folder ../shared/corpora/khattak-mikaitis-2025; --tiny: its first set only)

The test suite used to assert a wall-time bound on every set; a timing belongs here instead.
Prints one line per set (name, seconds, configurations left) and a last line of JSON:
{"sets": ..., "total_s": ..., "max_set_s": ..., "slowest": NAME}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _timing import TINY_HELP
from tcsim import corpus, fit
from tcsim.errors import TcsimError

DEFAULT_CORPUS = (Path(__file__).resolve().parents[2] / "shared" / "corpora"
                  / "khattak-mikaitis-2025")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", nargs="?", type=Path, default=DEFAULT_CORPUS,
                    help="a corpus folder (default: %(default)s)")
    ap.add_argument("--tiny", action="store_true", help=TINY_HELP + "; fits the first set only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    try:
        # --tiny: read only the first set's folder (reading them all takes seconds)
        folders = corpus.find_sets(args.corpus)[:1] if args.tiny else [args.corpus]
        records = fit.load_records(folders)
    except TcsimError as e:             # no corpus there: one line, not a traceback
        sys.exit(f"bench_fit: {e}")
    results = fit.fit(records[:1] if args.tiny else records)
    total = time.perf_counter() - t0
    for r in results:
        print(f"{r.record.name:24s} {r.seconds:7.1f} s  {len(r.consistent):4d} consistent")
    slowest = max(results, key=lambda r: r.seconds)
    print(json.dumps({"sets": len(results), "total_s": round(total, 1),
                      "max_set_s": round(slowest.seconds, 1), "slowest": slowest.record.name}))


if __name__ == "__main__":
    main()
