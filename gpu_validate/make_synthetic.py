"""Write synthetic records: the gpu_validate suites run through tcsim's own models.

    python -m gpu_validate.make_synthetic [--out gpu_validate/records] [--seed 0] [--rows 200]

Writes ``<out>/synthetic-h100/`` (preset h100, path wgmma) and ``<out>/synthetic-ada/`` (preset
ada, path mma.sync): the suites of gpu_validate.suites for the format pairs and accumulators
chosen by :data:`SELECTION` (kept to a few hundred KB), with ``synthetic = "true"``,
``model = "<preset>:<path>"``, ``sass_opcode = "n/a (simulated)"`` and ``kernel_source_sha256`` = sha256 of the preset's TOML
file. They exercise the record format and the replay end to end without a GPU, and pin the
models: a change to a preset's FP8 datapath makes their replay fail until they are regenerated.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from .records import record_filename, save_record
from .suites import SUITES, build_suites

HERE = Path(__file__).resolve().parent
# folder -> (preset, path, accumulators)
MODELS = {
    "synthetic-h100": ("h100", "wgmma", ("fp32", "fp16")),
    "synthetic-ada": ("ada", "mma.sync", ("fp32", "fp16")),
}
SMALL = ("probes", "specials", "c-only")
SAME = (("e4m3", "e4m3"), ("e5m2", "e5m2"))
E4 = (("e4m3", "e4m3"),)
ALL_PAIRS = (("e4m3", "e4m3"), ("e4m3", "e5m2"), ("e5m2", "e4m3"), ("e5m2", "e5m2"))
# (folder, acc) -> (format pairs of the small suites, format pairs of the random and long ones):
# the committed files stay a few hundred KB
SELECTION = {
    ("synthetic-h100", "fp32"): (ALL_PAIRS, SAME),
    ("synthetic-h100", "fp16"): (SAME, E4),
    ("synthetic-ada", "fp32"): (ALL_PAIRS, E4),
    ("synthetic-ada", "fp16"): (E4, ()),
}
DEFAULT_ROWS = 200
LONG_ROWS = 24           # random rows of long-chains (after its 8 directed probes), K = 128


def selected(folder: str, acc: str, suite: str, pair: tuple) -> bool:
    """Whether make() writes this record (fp16 random suites: random-narrow only)."""
    small, large = SELECTION[(folder, acc)]
    if suite in SMALL:
        return tuple(pair) in small
    if acc == "fp16" and suite != "random-narrow":
        return False
    return tuple(pair) in large


def _model_sha(preset: str) -> str:
    from tcsim.presets import preset_dir

    return hashlib.sha256(preset_dir().joinpath(f"{preset}.toml").read_bytes()).hexdigest()


def make(out: Path, rows: int = DEFAULT_ROWS, seed: int = 0, quiet: bool = False) -> list:
    """Write every synthetic record under ``out``; returns the paths."""
    import tcsim
    from tcsim.presets import load_model

    from .records import Record
    from .replay import simulate

    inputs = [s for s in build_suites(rows=rows, seed=seed) if s.suite != "long-chains"]
    inputs += build_suites(rows=LONG_ROWS, seed=seed, suites=("long-chains",))
    written = []
    for folder, (preset, path_name, accs) in MODELS.items():
        model = load_model(preset)
        sha = _model_sha(preset)
        for acc in accs:
            for s in inputs:
                if not selected(folder, acc, s.suite, (s.a_format, s.b_format)):
                    continue
                path = model.find_path(s.a_format, s.b_format, acc, path_name)
                kernel = f"tcsim-{preset}-{path_name}"
                meta = dict(a_format=s.a_format, b_format=s.b_format, acc=acc,
                            gpu_name=f"synthetic (tcsim {preset} model)",
                            compute_capability="n/a", driver="n/a", cuda_version="n/a",
                            cupy_version="n/a", instruction=path.instruction,
                            sass_opcode="n/a (simulated)", kernel=kernel,
                            kernel_source_sha256=sha, suite=s.suite, seed=str(s.seed),
                            synthetic="true", model=f"{preset}:{path_name}",
                            tcsim_version=tcsim.__version__)
                rec = Record(s.a_bits, s.b_bits, s.c_bits, s.c_bits, s.names, meta)
                d_bits = simulate(rec, path)
                target = out / folder / record_filename(s.suite, s.a_format, s.b_format, acc,
                                                        kernel)
                written.append(save_record(target, s.a_bits, s.b_bits, s.c_bits, d_bits,
                                           names=s.names, **meta))
                if not quiet:
                    print(f"wrote {target} ({s.rows} rows)", file=sys.stderr)
    written += make_gemm(out / "synthetic-h100" / "gemm", seed=seed)
    return written


def make_gemm(out: Path, seed: int = 0) -> list:
    """Synthetic GEMM records: tcsim.gemm (h100) answering for the multi-instruction kernel."""
    import tempfile

    from .gemm import write_gemm_inputs
    from .gemm_device import run_gemm_inputs
    from .simulated import SimulatedBackend
    with tempfile.TemporaryDirectory() as tmp:
        write_gemm_inputs(tmp, seed=seed)
        backend = SimulatedBackend("h100")
        paths = run_gemm_inputs(backend, tmp, out.parent / "_gemm_tmp")
        final = []
        out.mkdir(parents=True, exist_ok=True)
        for p in paths:
            target = out / p.name
            p.replace(target)
            final.append(target)
        shutil.rmtree(out.parent / "_gemm_tmp", ignore_errors=True)
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gpu_validate.make_synthetic",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "records"), help="records folder")
    ap.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows per random suite")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    paths = make(Path(args.out), rows=args.rows, seed=args.seed, quiet=args.quiet)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} synthetic records, {total / 1024:.0f} KiB, suites {', '.join(SUITES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
