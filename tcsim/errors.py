"""Exception types raised by tcsim.

Every error tcsim raises on bad user input derives from :class:`TcsimError`, so callers can catch
one type; each subclass also derives from the matching builtin (ValueError, KeyError, ...).
"""


class TcsimError(Exception):
    """Base class of every error tcsim raises on bad input."""


class FormatError(TcsimError, ValueError):
    """Unknown format name, or a value that the stated format cannot represent."""


class ConfigError(TcsimError, ValueError):
    """A datapath/model configuration that is malformed or inconsistent (names the field).

    field_errors: when it wraps a pydantic ValidationError, pydantic's per-field error dicts
    (``loc``, ``msg``, ``type``, ...); empty otherwise.
    """

    def __init__(self, *args, field_errors=()):
        super().__init__(*args)
        self.field_errors = tuple(field_errors)


class UnknownModelError(TcsimError, KeyError):
    """A preset name or model file that does not exist, or a path the model does not provide."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class ShapeError(TcsimError, ValueError):
    """Operands whose shapes or dtypes do not fit together."""


class CorpusError(TcsimError, ValueError):
    """A malformed or incomplete recorded-hardware folder."""


class InputFileError(TcsimError, ValueError):
    """A file given as input that cannot be read as what it should be (names the file)."""


class OutputFileError(TcsimError, ValueError):
    """An output file that cannot go where it was asked: a missing or unwritable folder, a
    folder given for a file (names the option and the path); checked before the work."""


class DeviceError(TcsimError, RuntimeError):
    """A device that cannot be used: ``device="cuda"`` without numba-cuda or a GPU (or the CUDA
    simulator), an array on a device of another kind, or a datapath the GPU backend does not
    serve (names the kernel it needs)."""
