"""``tcsim validate ...``: the one entry point of gpu_validate for tcsim's command line.

tcsim.cli parses the options and calls one function here per subcommand; each prints its
report and returns the exit status (0 ok, 1 a mismatch or failed self-check). Bad input (an
unreadable record, a missing folder, an unsafe archive) raises :class:`ValidateInputError`,
which the command line prints as one line (exit 2). Host side: imports tcsim.
"""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path
from typing import Optional, Sequence

from tcsim.errors import TcsimError


class ValidateInputError(TcsimError, ValueError):
    """A record, folder or archive a validate command cannot use (names it)."""


def replay(paths: Sequence[str], as_json: bool = False, quiet: bool = False) -> int:
    """Replay every record (and GEMM record) under ``paths`` through its tcsim model; print the
    agreement table and a diagnosis of each mismatching record (or JSON). 1 on any mismatch."""
    from . import records
    from . import replay as rp
    from .gemm import format_gemm_table, replay_gemm_record

    try:
        files = records.find_records(paths)
        gemm_files = records.find_records(paths, gemm=True)
    except FileNotFoundError as exc:
        raise ValidateInputError(str(exc)) from None
    if not files and not gemm_files:
        raise ValidateInputError(f"no .npz records under {' '.join(map(str, paths))}")
    results, gemm_results = [], []
    try:
        for path in gemm_files:
            gemm_results.append(replay_gemm_record(path))
        for i, path in enumerate(files, 1):
            if not quiet:
                print(f"[{i}/{len(files)}] {path}", file=sys.stderr, flush=True)
            results.append(rp.replay_record(records.load_record(path)))
    except ValueError as exc:       # an unreadable or malformed record (names its file)
        raise ValidateInputError(str(exc)) from None
    if as_json:
        out = []
        for r in results:
            d = r.to_dict()
            if r.status == "MISMATCH":
                variants = rp.diagnose(records.load_record(r.file), r.datapath)
                d["diagnosis"] = {"variants": {v.label: v.mismatches for v in variants},
                                  "explanation": rp.explanation(variants)}
            out.append(d)
        print(json.dumps(out + gemm_results, indent=2))
    else:
        print(rp.format_table(results))
        for r in results:
            if r.status == "MISMATCH":
                variants = rp.diagnose(records.load_record(r.file), r.datapath)
                print()
                print("\n".join(rp.diagnosis_lines(r, variants)))
        print()
        print(rp.summary(results))
        if gemm_results:
            print("\n" + format_gemm_table(gemm_results))
    return 1 if any(not r.ok for r in results) or any(g["mismatches"] for g in gemm_results) \
        else 0


def write_suites(out: str, k: int, rows: int, seed: int) -> int:
    """Write the device's input suites (and the GEMM inputs under ``out/gemm``); print them."""
    from . import suites
    from .gemm import write_gemm_inputs

    try:
        paths = suites.write_suites(out, k=k, rows=rows, seed=seed)
    except ValueError as exc:
        raise ValidateInputError(str(exc)) from None
    paths += write_gemm_inputs(Path(out) / "gemm", seed=seed)
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} input files to {out} (seed {seed})", file=sys.stderr)
    return 0


def run(suite: str, out: str, suites: Optional[str] = None, build: Optional[str] = None,
        simulate: Optional[str] = None) -> int:
    """Run a suite on this machine's GPU (or, with ``simulate``, a tcsim preset answering for
    it) and write records; 1 when a self-check or a kernel fails."""
    from .runner import main_run

    try:
        result = main_run(suite=suite, out=out, suites=suites, build=build, simulate=simulate)
    except (RuntimeError, OSError) as exc:
        raise ValidateInputError(str(exc)) from None
    failures = result.get("self_check_failures") or []
    errors = result.get("kernel_errors") or []
    print(f"{len(result.get('records', []))} record(s) written to {out}")
    for f in failures:
        print(f"self-check FAILED: {f}")
    for e in errors:
        print(f"kernel FAILED: {e}")
    return 1 if failures or errors else 0


def questions(paths: Sequence[str], as_json: bool = False) -> int:
    """The open hardware questions, answered from the probe rows of the records."""
    from . import questions as qs

    try:
        out = qs.report(paths, as_dict=as_json)
    except (FileNotFoundError, ValueError) as exc:
        raise ValidateInputError(str(exc)) from None
    print(json.dumps(out, indent=2) if as_json else out)
    return 0


def unpack(archives: Sequence[str], into: Optional[str] = None, overwrite: bool = False) -> int:
    """Unpack a device run's ``records-<n>.tar`` parts under ``into`` (default:
    :func:`gpu_validate.bundle.default_records_folder`); print where every file went and the
    replay command."""
    from . import bundle

    root = (Path(into) if into else bundle.default_records_folder()).absolute()
    try:
        files = bundle.unpack(archives, root, overwrite=overwrite)
    except (bundle.BundleError, OSError, tarfile.TarError) as exc:
        raise ValidateInputError(str(exc)) from None
    folders = sorted({str(f.parent) for f in files})
    print(f"{len(files)} file(s) unpacked into {', '.join(folders)}")
    if not into:
        print(f"(records folder {root}: the default here; --into chooses another)")
    print(f"next: tcsim validate replay {' '.join(folders)}")
    return 0
