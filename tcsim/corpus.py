"""Read and replay recorded tensor-core outputs in the Khattak-Mikaitis layout.

Layout (``../shared/corpora/khattak-mikaitis-2025/README.md``): ``<GPU>/<format>/`` holding
``a_<GPU>_<fmt>.txt`` and ``b_<GPU>_<fmt>.txt`` (K fp32 bit patterns in hex per row),
``c_<GPU>_fp32.txt`` (C as 32 binary digits), ``d_<GPU>_fp32.txt`` and optionally
``d_<GPU>_fp16.txt`` (the fp16-output result stored as fp32 bits). Row i of every file belongs
together: D_i = sum_k a_ik * b_ik + C_i.

The same layout is the ``model_validation/`` folder of the public repository the data come
from (``git clone https://github.com/north-numerical-computing/MATLAB-tensor-core``): there the
GPU folders (B200 included) sit beside MATLAB scripts and a ``CUDA/`` folder of kernel sources,
which :func:`find_sets` skips (a set folder is one holding ``a_<GPU>_<format>.txt`` named after
itself and its parent). Several roots can be replayed at once.

The data stay where the user keeps them: tcsim never copies a corpus.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from .errors import CorpusError, FormatError, UnknownModelError
from .formats.conversion import check_representable
from .gpu_model import GpuModel
from .presets import load_model
from .recorded_rows import c_in_accumulator, rows_to_bits

_HEX32 = re.compile(r"[0-9a-fA-F]{1,8}")

# Folder name of a format -> tcsim input format.
FOLDER_FORMATS = {"e4m3": "e4m3", "e5m2": "e5m2", "fp16": "fp16", "bf16": "bf16", "tf32": "tf32"}

# Outputs recorded with C = 0 although the c file holds other values (corpus README, "Caveats":
# H100 and H200 E4M3/E5M2 wgmma runs). Measured here: this holds for the fp32-output files
# (0 mismatches with C = 0); the fp16-output files agree far better with the c file's C
# (about 1900 of 5000 rows differ, against about 4990 with C = 0), so C is used for those.
C_IGNORED = {("h100", "e4m3", "fp32"), ("h100", "e5m2", "fp32"),
             ("h200", "e4m3", "fp32"), ("h200", "e5m2", "fp32")}

# The instruction path a recorded output came from, where it is not the preset's default. The
# H100/H200 FP8 fp16-output files were recorded with mma.sync.m16n8k32 .f16 (the authors'
# model_validation/CUDA/mma_fp8_output_fp16.cu, north-numerical-computing/MATLAB-tensor-core),
# which sm_90 lowers onto FP16 HMMA (tcsim.lowering): not with wgmma, whose f16 form the
# corpus therefore does not measure.
# The B200 FP8 files (fp32 and fp16 output) come from the same mma.sync kernels on sm_100
# (corpus README, caveats), not from tcgen05: b200's mma.sync paths (docs/hardware.md#blackwell).
RECORDED_PATHS = {("h100", "e4m3", "fp16"): "mma.sync", ("h100", "e5m2", "fp16"): "mma.sync",
                  ("h200", "e4m3", "fp16"): "mma.sync", ("h200", "e5m2", "fp16"): "mma.sync",
                  ("b200", "e4m3", "fp32"): "mma.sync", ("b200", "e5m2", "fp32"): "mma.sync",
                  ("b200", "e4m3", "fp16"): "mma.sync", ("b200", "e5m2", "fp16"): "mma.sync"}


@dataclass
class CorpusSet:
    """One GPU x input-format folder: the inputs, C, and every recorded output."""

    folder: Path
    gpu: str                  # folder name as recorded ("H100")
    fmt: str                  # tcsim input format ("e4m3")
    a: np.ndarray             # (rows, K) float64 values
    b: np.ndarray             # (rows, K)
    c: np.ndarray             # (rows,) fp32 values as float64
    d_bits: dict = field(default_factory=dict)   # "fp32"/"fp16" -> (rows,) uint32 recorded bits

    @property
    def preset(self) -> str:
        return self.gpu.lower()

    def c_used(self, output: str, rounding: str = "rne") -> np.ndarray:
        """The C the hardware used for ``output``: zeros where the corpus caveat says so, and
        for fp16 outputs the fp32 C first brought into fp16 (``rounding``; RNE on every known
        path, Datapath.c_precision_rounding; tcsim.recorded_rows.c_in_accumulator)."""
        if (self.preset, self.fmt, output) in C_IGNORED:
            return np.zeros_like(self.c)
        return c_in_accumulator(self.c, output, rounding)


@dataclass
class Agreement:
    """The result of replaying one recorded output file."""

    gpu: str
    fmt: str
    output: str
    rows: int
    mismatches: int
    preset: str
    path: str
    status: str               # the path's status: explained / model / unexplained, or NO_DATAPATH
    first_mismatch: Optional[int] = None
    note: str = ""

    @property
    def served(self) -> bool:
        """False when the preset has no datapath (or no preset exists) for this set."""
        return self.status != NO_DATAPATH

    @property
    def ok(self) -> bool:
        return self.served and (self.mismatches == 0 or self.status == "unexplained")


# Agreement.status of a set that no preset path serves: reported as a row, never replayed.
NO_DATAPATH = "no datapath"


def _read_lines(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CorpusError(f"{path}: not a text file of digits (byte {raw[exc.start]:#04x} at "
                          f"offset {exc.start})") from None
    return [ln for ln in text.splitlines() if ln.strip()]


def _hex_matrix(path: Path) -> np.ndarray:
    rows = [ln.split() for ln in _read_lines(path)]
    if not rows:
        raise CorpusError(f"{path}: no rows")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise CorpusError(f"{path}: rows have different lengths {sorted(widths)}")
    for i, row in enumerate(rows):
        # unsigned hex digits only (int() would also take a sign, '_' and a 0x prefix)
        bad = [t for t in row if not _HEX32.fullmatch(t)]
        if bad:
            raise CorpusError(f"{path}: row {i + 1} holds {bad[0][:40]!r}, not a 32-bit pattern "
                              f"in hex (1 to 8 hex digits)")
    bits = np.array([[int(t, 16) for t in r] for r in rows], dtype=np.uint32)
    return bits.view(np.float32).astype(np.float64)


def _binary_column(path: Path) -> np.ndarray:
    lines = [ln.strip() for ln in _read_lines(path)]
    bad = [i for i, ln in enumerate(lines) if len(ln) != 32 or set(ln) - {"0", "1"}]
    if bad:
        raise CorpusError(f"{path}: line {bad[0] + 1} is not 32 binary digits: {lines[bad[0]]!r}")
    return np.array([int(ln, 2) for ln in lines], dtype=np.uint32)


def read_set(folder: Path) -> CorpusSet:
    """Read one ``<GPU>/<format>`` folder."""
    folder = Path(folder)
    gpu, fmt_name = folder.parent.name, folder.name
    fmt = FOLDER_FORMATS.get(fmt_name.lower())
    if fmt is None:
        raise CorpusError(f"{folder}: unknown format folder {fmt_name!r} "
                          f"(expected one of {', '.join(FOLDER_FORMATS)})")
    a_path = folder / f"a_{gpu}_{fmt_name}.txt"
    b_path = folder / f"b_{gpu}_{fmt_name}.txt"
    c_path = folder / f"c_{gpu}_fp32.txt"
    for p in (a_path, b_path, c_path):
        if not p.is_file():
            raise CorpusError(f"{folder}: missing {p.name}")
    a, b = _hex_matrix(a_path), _hex_matrix(b_path)
    c = _binary_column(c_path).view(np.float32).astype(np.float64)
    d_bits = {}
    for out in ("fp32", "fp16"):
        p = folder / f"d_{gpu}_{out}.txt"
        if p.is_file():
            d_bits[out] = _binary_column(p)
    if not d_bits:
        raise CorpusError(f"{folder}: no d_{gpu}_fp32.txt or d_{gpu}_fp16.txt")
    rows = {len(a), len(b), len(c)} | {len(v) for v in d_bits.values()}
    if len(rows) != 1 or a.shape != b.shape:
        raise CorpusError(f"{folder}: files disagree on the number of rows or K "
                          f"(a {a.shape}, b {b.shape}, c {len(c)}, "
                          f"d {[len(v) for v in d_bits.values()]})")
    for name, values in (("a", a), ("b", b)):
        try:
            check_representable(values, fmt, what=f"{folder.name}/{name}")
        except FormatError as exc:
            raise CorpusError(f"{folder}: {exc}") from None
    return CorpusSet(folder, gpu, fmt, a, b, c, d_bits)


def _is_set_file(path: Path, root: Path) -> bool:
    """``a_<GPU>_<format>.txt`` in the folder <GPU>/<format>, outside hidden folders (.git)."""
    folder = path.parent
    if any(part.startswith(".") for part in path.relative_to(root).parts[:-1]):
        return False
    return path.name == f"a_{folder.parent.name}_{folder.name}.txt"


def find_sets(root, *more_roots) -> list[Path]:
    """Every ``<GPU>/<format>`` folder under each root (a root may itself be one), in order:
    the sets of the first root sorted, then those of the next. Files and folders that are not
    sets (the upstream repository's MATLAB scripts, CUDA/ sources, README, LICENCE) are
    skipped."""
    found: list[Path] = []
    for r in (root, *more_roots):
        r = Path(r)
        if not r.exists():
            raise CorpusError(f"{r}: no such folder")
        sets = sorted({p.parent for p in r.rglob("a_*_*.txt") if _is_set_file(p, r)})
        if not sets:
            raise CorpusError(f"{r}: no corpus files (<GPU>/<format>/a_<GPU>_<format>.txt) found")
        found.extend(s for s in sets if s not in found)
    return found


def replay_set(cs: CorpusSet, model: Optional[GpuModel] = None,
               path_name: Optional[str] = None) -> list[Agreement]:
    """Simulate every recorded output of a set with the matching preset and count mismatches
    (path_name: an instruction path of the model other than the default, e.g. "mma.sync")."""
    rows = cs.a.shape[0]
    try:
        gpu_model = model or load_model(cs.preset)
    except UnknownModelError:
        return [Agreement(cs.gpu, cs.fmt, out, rows, 0, cs.preset, "-", NO_DATAPATH,
                          note=f"no preset named {cs.preset!r}") for out in cs.d_bits]
    results = []
    for out, recorded in cs.d_bits.items():
        name = path_name or RECORDED_PATHS.get((cs.preset, cs.fmt, out))
        try:
            path = gpu_model.find_path(cs.fmt, cs.fmt, out, name)
        except UnknownModelError as exc:
            results.append(Agreement(cs.gpu, cs.fmt, out, rows, 0, gpu_model.name, name or "-",
                                     NO_DATAPATH, note=str(exc)))
            continue
        got = rows_to_bits(cs.a, cs.b, cs.c_used(out, path.c_precision_rounding),
                           path.datapath(), cs.fmt, cs.fmt, out)   # fp16 results as fp32 bits
        bad = np.flatnonzero(got != recorded)
        results.append(Agreement(
            gpu=cs.gpu, fmt=cs.fmt, output=out, rows=rows, mismatches=int(bad.size),
            preset=gpu_model.name, path=path.name, status=path.status,
            first_mismatch=int(bad[0]) if bad.size else None,
            note="C = 0 (corpus caveat)" if (cs.preset, cs.fmt, out) in C_IGNORED else ""))
    return results


def replay(roots, model=None) -> list[Agreement]:
    """Replay every set under ``roots`` (one folder or a list of them); a set no preset serves
    is a NO_DATAPATH row, not an error."""
    roots = [roots] if isinstance(roots, (str, Path)) else list(roots)
    gpu_model = load_model(model) if model is not None else None
    out: list[Agreement] = []
    for folder in find_sets(*roots):
        out.extend(replay_set(read_set(folder), gpu_model))
    return out


def format_table(results: Iterable[Agreement]) -> str:
    """The agreement table, one row per GPU, input format and output format."""
    header = f"{'GPU':<6} {'input':<6} {'output':<6} {'rows':>6} {'mismatch':>9}  {'preset/path':<18} status"
    lines = [header, "-" * len(header)]
    for r in results:
        status = r.status if r.mismatches == 0 else (
            "UNEXPLAINED (expected)" if r.status == "unexplained" else "MISMATCH")
        if r.mismatches == 0:
            status = "ok"
        if not r.served:
            status = "NO DATAPATH"
        extra = f"  [{r.note}]" if r.note else ""
        mismatches = r.mismatches if r.served else "-"
        lines.append(f"{r.gpu:<6} {r.fmt:<6} {r.output:<6} {r.rows:>6} {mismatches:>9}  "
                     f"{r.preset + '/' + r.path:<18} {status}{extra}")
    return "\n".join(lines)
