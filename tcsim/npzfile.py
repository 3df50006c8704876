"""Read .npz archives (fit records, gpu_validate records) and .npy arrays (the command line's
operands) for tcsim: never unpickle, and every way a read can fail is one error that names the
file. Also where an output file will go, checked before the work that writes it."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import tokenize
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .errors import FormatError, InputFileError, OutputFileError

# what numpy raises on an empty, truncated or garbage file, or a corrupted member (TokenError:
# a garbage header that numpy's Python 2 fallback tokenises)
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
               tokenize.TokenError, SyntaxError)


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
        with _quiet_header_parsing():
            loaded = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:
        raise unreadable(exc) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise error(f"{path}: a single .npy array, not an {what}")
    try:
        with loaded as z, _quiet_header_parsing():
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
        with _quiet_header_parsing():
            arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        arr = _raw_npy_codes(path) if "descr" in str(exc) else None
        if arr is None and "pickled" in str(exc):   # numpy's pickle fallback: no numpy magic
            raise InputFileError(f"{what}: {str(path)!r} is not a .npy file (pickles are never "
                                 f"loaded)") from None
        if arr is None:
            raise unreadable(exc) from None
    except (OSError, EOFError, tokenize.TokenError, SyntaxError, OverflowError) as exc:
        raise unreadable(exc) from None
    except MemoryError:
        # a header claiming more elements than the file holds is a bad file, not a big array
        claimed, held = _npy_data_bytes(path)
        if claimed is None or claimed <= held:
            raise
        raise InputFileError(f"{what}: {str(path)!r} is not a whole .npy array (its header "
                             f"claims {claimed:,} bytes of data, the file holds {held:,})"
                             ) from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputFileError(f"{what}: {str(path)!r} is an .npz archive; give one array saved "
                             f"with np.save (.npy)")
    return arr


def read_real_npy(path: Union[str, Path], what: str) -> np.ndarray:
    """Real values from .npy file ``path`` (a GEMM operand): float32 / float64 as saved (float16
    widened, ints exactly converted); raw codes, complex, string and other arrays are refused,
    naming ``what`` and the file (a cast would keep garbage: numpy reads a |V1 code 0x38 as the
    digit '8' and complex numbers lose their imaginary part)."""
    arr = read_npy(path, what)
    if arr.dtype.type is np.void:
        raise FormatError(f"{what} {path}: holds raw {arr.dtype.itemsize}-byte codes (dtype "
                          f"{arr.dtype}: an ml_dtypes array saved with np.save); tcsim gemm "
                          f"quantises real values itself: save the values as float32")
    if arr.dtype in (np.float32, np.float64):
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "iub":
        values = arr.astype(np.float64)
        if (values.astype(arr.dtype) != arr).any():
            raise FormatError(f"{what} {path}: integers beyond 2^53 are not exactly float64")
        return values
    raise FormatError(f"{what} {path}: must hold real numbers (float32 or float64), got dtype "
                      f"{arr.dtype}")


def check_out_folder(path: Optional[str], option: str = "--out") -> None:
    """Refuse an output file whose folder does not exist, before any work is done
    (:class:`OutputFileError` naming ``option`` and the file)."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise OutputFileError(f"{option}: the folder of {path!r} does not exist")


def npy_out_path(path: Optional[str], option: str = "--out") -> Optional[str]:
    """The file an .npy output really goes to, checked before any work: np.save appends '.npy'
    to a name without it (so the message names that file), and a folder is refused (np.save
    would write FOLDER.npy beside it). None for no output."""
    if path is None:
        return None
    if Path(path).is_dir() or path.endswith(("/", os.sep)):
        raise OutputFileError(f"{option}: {path!r} is a folder; give a file name, e.g. "
                              f"{str(Path(path) / 'out.npy')!r}")
    check_out_folder(path, option)
    return path if path.endswith(".npy") else path + ".npy"


@contextlib.contextmanager
def _quiet_header_parsing():
    """Silence the warnings of a .npy header parse (a garbage header makes ``ast.literal_eval``
    warn about invalid literals; numpy warns about a Python 2 header): the error that follows,
    or the array, says what matters, on one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.filterwarnings("ignore", message=".*created on Python 2", category=UserWarning)
        yield


def _npy_header(f) -> dict:
    """The header dict of the .npy file open as ``f``, which is left at its first data byte."""
    version = np.lib.format.read_magic(f)
    size = int.from_bytes(f.read(2 if version == (1, 0) else 4), "little")
    with _quiet_header_parsing():
        return ast.literal_eval(f.read(size).decode("latin1"))


def _npy_data_bytes(path: Union[str, Path]) -> tuple:
    """(bytes of data the header of .npy file ``path`` claims, bytes the file holds after the
    header); (None, 0) when the header cannot be read."""
    try:
        with open(path, "rb") as f:
            header = _npy_header(f)
            claimed = int(np.dtype(header["descr"]).itemsize)
            for extent in header["shape"]:
                claimed *= int(extent)              # Python ints: no overflow
            return claimed, os.fstat(f.fileno()).st_size - f.tell()
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, tokenize.TokenError):
        return None, 0


def _raw_npy_codes(path: Union[str, Path]):
    """The elements of a .npy file whose dtype numpy cannot rebuild (e.g. '<f1', as np.save
    writes ml_dtypes float8 arrays) as raw codes: a void array (|V1, |V2) of its shape, or None
    when the header does not describe 1- or 2-byte elements."""
    try:
        with open(path, "rb") as f:
            header = _npy_header(f)
            match = re.fullmatch(r"([<>|=]?)[a-zA-Z](\d+)", str(header["descr"]))
            shape = tuple(header["shape"])
            if match is None or int(match.group(2)) not in (1, 2):
                return None
            n = int(match.group(2))
            count = int(np.prod(shape))
            codes = np.frombuffer(f.read(count * n), dtype=f"{match.group(1) or '<'}u{n}")
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, OverflowError,
            tokenize.TokenError):
        return None
    if codes.size != count:
        return None
    order = "F" if header.get("fortran_order") else "C"
    return codes.astype(f"u{n}").reshape(shape, order=order).view(f"V{n}")
