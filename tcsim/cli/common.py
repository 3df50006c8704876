"""What several commands share: size checks, the output-format and model options, and rows
printed as JSON, CSV or text."""

from __future__ import annotations

import argparse
import csv
import io
import json

from ..errors import ShapeError


def positive(args: argparse.Namespace, *names: str) -> None:
    """Refuse sizes below 1 (a GEMM with M = 0 has nothing to measure)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ShapeError(f"--{name} must be at least 1, got {value}")


def emit(args: argparse.Namespace, rows: list) -> None:
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


def output_flags(p: argparse.ArgumentParser) -> None:
    """Add --json and --csv (one or the other) to ``p``."""
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV")


def model_flags(p: argparse.ArgumentParser) -> None:
    """Add --model (a preset or TOML file) and --path (an instruction path of it) to ``p``."""
    p.add_argument("--model", default="h100",
                   help="preset name (tcsim models) or a TOML model file")
    p.add_argument("--path", help="instruction path of the model (e.g. mma.sync on b200)")
