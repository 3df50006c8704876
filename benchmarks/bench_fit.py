"""Benchmark: how long `tcsim fit` takes per recorded set of the Khattak-Mikaitis corpus.

    python benchmarks/bench_fit.py [CORPUS_FOLDER]   (default ../shared/corpora/khattak-mikaitis-2025)

The test suite used to assert a wall-time bound on every set; a timing belongs here instead.
Prints one line per set (name, seconds, configurations left) and a last line of JSON:
{"sets": ..., "total_s": ..., "max_set_s": ..., "slowest": NAME}.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tcsim import fit


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else
                Path(__file__).resolve().parents[2] / "shared" / "corpora" / "khattak-mikaitis-2025")
    t0 = time.perf_counter()
    results = fit.fit([root])
    total = time.perf_counter() - t0
    for r in results:
        print(f"{r.record.name:24s} {r.seconds:7.1f} s  {len(r.consistent):4d} consistent")
    slowest = max(results, key=lambda r: r.seconds)
    print(json.dumps({"sets": len(results), "total_s": round(total, 1),
                      "max_set_s": round(slowest.seconds, 1), "slowest": slowest.record.name}))


if __name__ == "__main__":
    main()
