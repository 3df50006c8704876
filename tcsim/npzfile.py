"""Read .npz archives (fit records, gpu_validate records) and .npy arrays (the command line's
operands) for tcsim: never unpickle, and every way a read can fail is one error that names the
file."""

from __future__ import annotations

import ast
import re
import zipfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from .errors import InputFileError

# what numpy raises on an empty, truncated or garbage file, or a corrupted member
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


def read_npz(path: Union[str, Path], error: type = ValueError, what: str = ".npz file") -> dict:
    """Every array of .npz archive ``path`` as a dict; ``error(message)`` naming the file when it
    cannot be read, is a single .npy array or holds pickled objects (never loaded).
    what: how the message calls the file (".npz record" for a fit record)."""
    path = Path(path)

    def unreadable(exc: Exception) -> Exception:
        if "pickled" in str(exc):       # numpy falls back to pickle for a file without its magic
            return error(f"{path}: not a numpy .npz file (pickles are never loaded)")
        return error(f"{path}: not a readable {what} ({type(exc).__name__}: {exc})")

    try:
        loaded = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise unreadable(exc) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise error(f"{path}: a single .npy array, not an {what}")
    try:
        with loaded as z:
            return {k: z[k] for k in z.files}
    except _NPZ_ERRORS as exc:
        raise unreadable(exc) from None


def read_npy(path: Union[str, Path], what: str) -> np.ndarray:
    """The array of .npy file ``path``; :class:`InputFileError` naming ``what`` and the file when
    it cannot be read, holds a pickle (never loaded) or is an .npz archive. Elements whose dtype
    numpy cannot rebuild (ml_dtypes float8 arrays are saved as '<f1') come back as raw codes
    (|V1, |V2): their format is for the caller to know."""
    def unreadable(exc: Exception) -> InputFileError:
        return InputFileError(f"{what}: cannot read {str(path)!r} as a .npy array "
                              f"({type(exc).__name__}: {exc})")

    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        arr = _raw_npy_codes(path) if "descr" in str(exc) else None
        if arr is None and "pickled" in str(exc):   # numpy's pickle fallback: no numpy magic
            raise InputFileError(f"{what}: {str(path)!r} is not a .npy file (pickles are never "
                                 f"loaded)") from None
        if arr is None:
            raise unreadable(exc) from None
    except (OSError, EOFError) as exc:
        raise unreadable(exc) from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputFileError(f"{what}: {str(path)!r} is an .npz archive; give one array saved "
                             f"with np.save (.npy)")
    return arr


def _raw_npy_codes(path: Union[str, Path]):
    """The elements of a .npy file whose dtype numpy cannot rebuild (e.g. '<f1', as np.save
    writes ml_dtypes float8 arrays) as raw codes: a void array (|V1, |V2) of its shape, or None
    when the header does not describe 1- or 2-byte elements."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            size = int.from_bytes(f.read(2 if version == (1, 0) else 4), "little")
            header = ast.literal_eval(f.read(size).decode("latin1"))
            match = re.fullmatch(r"([<>|=]?)[a-zA-Z](\d+)", str(header["descr"]))
            shape = tuple(header["shape"])
            if match is None or int(match.group(2)) not in (1, 2):
                return None
            n = int(match.group(2))
            count = int(np.prod(shape))
            codes = np.frombuffer(f.read(count * n), dtype=f"{match.group(1) or '<'}u{n}")
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return None
    if codes.size != count:
        return None
    order = "F" if header.get("fortran_order") else "C"
    return codes.astype(f"u{n}").reshape(shape, order=order).view(f"V{n}")
