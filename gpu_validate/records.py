"""Hardware records: what one run of a matrix-unit kernel on one GPU produced, bit for bit.

Standard library and numpy only (this module runs on the GPU machine, which has no pydantic,
so it must not import ``tcsim``).

File layout
-----------
``gpu_validate/records/<gpu>/<suite>__<a_format>x<b_format>__<acc>__<kernel>.npz``
(:func:`record_filename`; ``<gpu>`` is a folder per machine, e.g. ``h100-sxm``,
``synthetic-h100``). Any other file name is accepted by :func:`load_record`: everything a replay
needs is inside the file. Files are zip archives readable by ``numpy.load`` (deflate-compressed,
written with fixed timestamps so the same arrays give the same bytes).

Arrays
------
``a_bits``, ``b_bits``  (rows, K) uint32: fp32 bit patterns of the A and B values, each exactly
                        representable in ``a_format`` / ``b_format`` (the kernel converts them to
                        FP8 codes exactly). Row i of A and row i of B form one dot product.
``c_bits``              (rows,) uint32: fp32 bits of C as given to the runner. For ``acc =
                        "fp16"`` the kernel receives C rounded to fp16 with round-to-nearest-even;
                        the file stores the fp32 value *before* that rounding (replay rounds it
                        the same way).
``d_bits``              (rows,) uint32: fp32 bits of the hardware result
                        D_i = sum_k a_ik * b_ik + c_i. fp16 results are widened to fp32 (exact;
                        an fp16 NaN 0x7fff becomes 0x7fffe000).
``names``               (rows,) str: what each row probes.

Metadata (0-d string arrays)
----------------------------
``a_format``, ``b_format``  "e4m3" / "e5m2" (also "fp16", "bf16", "tf32")
``acc``                     accumulator / output format: "fp32" or "fp16"
``gpu_name``                as the driver reports it ("NVIDIA H100 80GB HBM3")
``compute_capability``      "9.0", "8.9", ...
``driver``, ``cuda_version``, ``cupy_version``
``instruction``             the PTX instruction string the kernel issues
``sass_opcode``             the opcode found in the disassembled cubin
                            ("QGMMA.64x8x32.F32.E4M3.E4M3"; "n/a (simulated)" for synthetic)
``kernel``                  kernel (function) name
``kernel_source_sha256``    sha256 of the kernel source that was compiled
``suite``, ``seed``         the input suite (gpu_validate.suites) and its seed
``synthetic``               "true" for records produced by tcsim itself, else "false"
``model``                   synthetic records: "<preset>:<path>" of the tcsim model that produced
                            them ("h100:wgmma"); empty for hardware records
``created``                 ISO 8601 UTC time of the run (filled in when not given)

Any further keyword given to :func:`save_record` is stored the same way (a 0-d string), e.g.
``ftz``, ``self_check`` or ``notes``.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import re
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

ARRAY_KEYS = ("a_bits", "b_bits", "c_bits", "d_bits", "names")

REQUIRED_META = ("a_format", "b_format", "acc", "gpu_name", "compute_capability", "driver",
                 "cuda_version", "cupy_version", "instruction", "sass_opcode", "kernel",
                 "kernel_source_sha256", "suite", "seed", "synthetic")
OPTIONAL_META = ("model", "created")

ACC_FORMATS = ("fp32", "fp16")

# format -> (mantissa bits, min normal exponent, max finite, has inf); NaN is allowed in all.
FORMATS = {
    "e4m3": (3, -6, 448.0, False),
    "e5m2": (2, -14, 57344.0, True),
    "fp16": (10, -14, 65504.0, True),
    "bf16": (7, -126, float(np.ldexp(2.0 - 2.0 ** -7, 127)), True),
    "tf32": (10, -126, float(np.ldexp(2.0 - 2.0 ** -10, 127)), True),
    "fp32": (23, -126, float(np.finfo(np.float32).max), True),
}

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# ---- low-level helpers (shared with gpu_validate.suites) -------------------------------------

def write_npz(path: Union[str, Path], arrays: dict, compress: bool = True) -> Path:
    """Write ``arrays`` as an .npz readable by ``numpy.load``, byte-for-byte reproducible (fixed
    zip timestamps, no pickles), atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(tmp, "w", compression=method) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.compress_type = method
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    os.replace(tmp, path)
    return path


def read_npz(path: Union[str, Path]) -> dict:
    """Every array of an .npz (no pickles) as a dict. The same checks as tcsim.npzfile.read_npz,
    written again because this module must import on a GPU machine without tcsim."""
    path = Path(path)
    # TokenError / SyntaxError: numpy parses a member's header with the tokenizer, and a
    # garbage header (an unclosed bracket) raises those rather than ValueError
    errors = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
              tokenize.TokenError, SyntaxError, OverflowError)
    try:
        loaded = np.load(path, allow_pickle=False)
    except errors as exc:
        if "pickled" in str(exc):       # numpy falls back to pickle for a file without its magic
            raise ValueError(f"{path}: not a numpy .npz file (pickles are never loaded)") from None
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: "
                         f"{exc})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an .npz file")
    try:
        with loaded as z:
            return {k: z[k] for k in z.files}
    except errors as exc:
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: "
                         f"{exc})") from None


def representable(values: np.ndarray, fmt: str) -> np.ndarray:
    """Mask of float64 ``values`` exactly representable in ``fmt`` (NaN counts as representable;
    Inf only in formats that have it)."""
    m, emin, max_finite, has_inf = FORMATS[fmt]
    v = np.asarray(values, dtype=np.float64)
    ok = np.isnan(v)
    ok |= np.isinf(v) & has_inf
    fin = np.isfinite(v) & (np.abs(v) <= max_finite)
    with np.errstate(all="ignore"):
        _, e = np.frexp(np.where(fin, v, 1.0))
        q = np.maximum(e - 1, emin) - m          # exponent of the last significant bit
        scaled = np.ldexp(np.where(fin, v, 0.0), -q)
    ok |= fin & (scaled == np.floor(scaled))
    return ok


def bits_to_values(bits: np.ndarray) -> np.ndarray:
    """uint32 fp32 bit patterns -> float64 values (exact)."""
    return np.asarray(bits, dtype=np.uint32).view(np.float32).astype(np.float64)


def values_to_bits(values: np.ndarray) -> np.ndarray:
    """float64 values (exact in fp32) -> uint32 fp32 bit patterns."""
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64).astype(np.float32)) \
        .view(np.uint32)


def check_bits(name: str, arr, ndim: int) -> np.ndarray:
    """``arr`` as a uint32 array of ``ndim`` dimensions, or ValueError naming ``name``."""
    a = np.asarray(arr)
    if a.dtype != np.uint32:
        raise ValueError(f"{name} must be uint32 fp32 bit patterns, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _bad_rows(values: np.ndarray, fmt: str) -> np.ndarray:
    ok = representable(values, fmt)
    return np.flatnonzero(~ok.reshape(ok.shape[0], -1).all(axis=1))


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat() \
        .replace("+00:00", "Z")


# ---- records ---------------------------------------------------------------------------------

@dataclass
class Record:
    """One record: the raw-bit arrays, the row names and the metadata (strings)."""

    a_bits: np.ndarray
    b_bits: np.ndarray
    c_bits: np.ndarray
    d_bits: np.ndarray
    names: list
    meta: dict = field(default_factory=dict)
    path: Optional[Path] = None

    @property
    def rows(self) -> int:
        return int(self.a_bits.shape[0])

    @property
    def k(self) -> int:
        return int(self.a_bits.shape[1])

    @property
    def a_format(self) -> str:
        return self.meta["a_format"]

    @property
    def b_format(self) -> str:
        return self.meta["b_format"]

    @property
    def acc(self) -> str:
        return self.meta["acc"]

    @property
    def synthetic(self) -> bool:
        return self.meta.get("synthetic", "false").lower() == "true"

    @property
    def a(self) -> np.ndarray:
        return bits_to_values(self.a_bits)

    @property
    def b(self) -> np.ndarray:
        return bits_to_values(self.b_bits)

    @property
    def c(self) -> np.ndarray:
        """C as stored (fp32, before any rounding to fp16)."""
        return bits_to_values(self.c_bits)

    @property
    def d(self) -> np.ndarray:
        return bits_to_values(self.d_bits)

    @property
    def label(self) -> str:
        return str(self.path) if self.path is not None else record_filename(
            self.meta.get("suite", "?"), self.a_format, self.b_format, self.acc,
            self.meta.get("kernel", "?"))


def record_filename(suite: str, a_format: str, b_format: str, acc: str, kernel: str) -> str:
    """``<suite>__<a_format>x<b_format>__<acc>__<kernel>.npz`` (unsafe characters -> '-')."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(kernel)).strip("-") or "kernel"
    return f"{suite}__{a_format}x{b_format}__{acc}__{safe}.npz"


def _validate(a_bits, b_bits, c_bits, d_bits, names, meta: dict, where: str) -> tuple:
    missing = [k for k in REQUIRED_META if str(meta.get(k, "")).strip() == ""]
    if meta.get("synthetic", "").strip().lower() == "true" and not str(meta.get("model", "")):
        missing.append("model (required when synthetic = 'true')")
    if missing:
        raise ValueError(f"{where}missing record metadata: {', '.join(missing)}")
    if meta["synthetic"].lower() not in ("true", "false"):
        raise ValueError(f"{where}synthetic must be 'true' or 'false', got {meta['synthetic']!r}")
    for key in ("a_format", "b_format"):
        if meta[key] not in FORMATS or meta[key] == "fp32":
            raise ValueError(f"{where}{key} {meta[key]!r} is not an input format "
                             f"(one of e4m3, e5m2, fp16, bf16, tf32)")
    if meta["acc"] not in ACC_FORMATS:
        raise ValueError(f"{where}acc must be one of {ACC_FORMATS}, got {meta['acc']!r}")
    a = check_bits(f"{where}a_bits", a_bits, 2)
    b = check_bits(f"{where}b_bits", b_bits, 2)
    c = check_bits(f"{where}c_bits", c_bits, 1)
    d = check_bits(f"{where}d_bits", d_bits, 1)
    if a.shape != b.shape:
        raise ValueError(f"{where}a_bits {a.shape} and b_bits {b.shape} differ in shape")
    rows = a.shape[0]
    if rows == 0 or a.shape[1] == 0:
        raise ValueError(f"{where}a record needs at least one row and K >= 1, got {a.shape}")
    if c.shape != (rows,) or d.shape != (rows,):
        raise ValueError(f"{where}c_bits {c.shape} and d_bits {d.shape} must both be ({rows},)")
    names = [str(n) for n in (names if names is not None else
                              [f"row {i}" for i in range(rows)])]
    if len(names) != rows:
        raise ValueError(f"{where}names has {len(names)} entries for {rows} rows")
    for key, bits, fmt in (("a_bits", a, meta["a_format"]), ("b_bits", b, meta["b_format"]),
                           ("d_bits", d, meta["acc"])):
        bad = _bad_rows(bits_to_values(bits), fmt)
        if bad.size:
            raise ValueError(f"{where}{key} row {int(bad[0])} ({names[int(bad[0])]!r}) holds a "
                             f"value not representable in {fmt} ({bad.size} such rows)")
    return a, b, c, d, names


def save_record(path: Union[str, Path], a_bits, b_bits, c_bits, d_bits,
                names: Optional[Sequence[str]] = None, **meta) -> Path:
    """Validate and write one record (see the module docstring for every field).

    Every name of :data:`REQUIRED_META` must be given (non-empty; any value is stored with
    ``str``); ``model`` too when ``synthetic = "true"``. ``created`` defaults to now (UTC);
    ``names`` to "row i". Raises ValueError naming what is missing or malformed.
    """
    meta = {k: ("" if v is None else str(v)) for k, v in meta.items()}
    for k in meta:
        if not _META_KEY.match(k) or k in ARRAY_KEYS:
            raise ValueError(f"bad metadata key {k!r}")
    a, b, c, d, names = _validate(a_bits, b_bits, c_bits, d_bits, names, meta, "")
    meta.setdefault("model", "")
    if not meta.get("created"):
        meta["created"] = utc_now()
    arrays = {"a_bits": a, "b_bits": b, "c_bits": c, "d_bits": d, "names": np.array(names)}
    arrays.update({k: np.array(v) for k, v in sorted(meta.items())})
    return write_npz(path, arrays)


def load_record(path: Union[str, Path]) -> Record:
    """Read and validate one record file."""
    path = Path(path)
    z = read_npz(path)
    missing = [k for k in ("a_bits", "b_bits", "c_bits", "d_bits") if k not in z]
    if missing:
        hint = " (a suite input file, not a record?)" if "d_bits" in missing and "a_bits" in z \
            else ""
        raise ValueError(f"{path}: missing arrays {', '.join(missing)}{hint}")
    meta = {k: str(v) for k, v in z.items() if k not in ARRAY_KEYS and v.ndim == 0}
    names = [str(n) for n in z["names"]] if "names" in z else None
    a, b, c, d, names = _validate(z["a_bits"], z["b_bits"], z["c_bits"], z["d_bits"], names, meta,
                                  f"{path}: ")
    meta.setdefault("model", "")
    meta.setdefault("created", "")
    return Record(a, b, c, d, names, meta, path)


GEMM_PREFIX = "gemm__"   # GEMM records (gpu_validate.gemm) have their own layout and replay


def find_records(paths: Union[str, Path, Iterable], gemm: bool = False) -> list:
    """Record files among ``paths``: files as given, folders searched recursively for *.npz.
    Dot-product records by default; with gemm=True the GEMM records (named gemm__*) instead.
    Sorted, without duplicates. Raises FileNotFoundError for a path that does not exist."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found.update(q for q in p.rglob("*.npz") if q.is_file())
        elif p.is_file():
            found.add(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return sorted(q for q in found if q.name.startswith(GEMM_PREFIX) == gemm)
