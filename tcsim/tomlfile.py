"""Read a TOML file for tcsim: every way it can fail is one ConfigError naming the file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Union

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_toml(path: Union[str, Path], where: str = "") -> dict:
    """The table of TOML file ``path``; ConfigError (message starting ``where``, default the
    path) when it cannot be read, is not UTF-8 text or is not valid TOML."""
    where = where or str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    return parse_toml(raw, where)


def parse_toml(raw: Union[bytes, str], where: str) -> dict:
    """The table of TOML text ``raw`` (bytes are decoded as UTF-8, as TOML requires)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{where}: not a UTF-8 text file (byte {raw[exc.start]:#04x} at "
                              f"offset {exc.start}); TOML files are UTF-8") from None
    try:
        return tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
