"""``tcsim validate``: hardware validation through gpu_validate (replay, suites, run, unpack,
questions); gpu_validate.commands is the one module of gpu_validate reached from here."""

from __future__ import annotations

import argparse

from ..errors import ShapeError, TcsimError
from .common import positive


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
    positive(args, "rows", "k")
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


def add_parser(sub) -> None:
    """Add the ``validate`` command and its subcommands to ``sub`` (the subparsers of
    ``tcsim``)."""
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
