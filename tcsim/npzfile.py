"""Read an .npz archive for tcsim: never unpickle, and every way it can fail is one error that
names the file (fit records, gpu_validate records)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Union

import numpy as np

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
