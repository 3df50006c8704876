"""Load GPU models: shipped presets (``models/*.toml``, installed as ``tcsim.models``) or user files.

A model file may say ``extends = "<preset>"``: it then takes that preset's paths and sources and
overrides the top-level keys it sets (a file that lists ``[[paths]]`` replaces them all).
"""

from __future__ import annotations

import functools
import sys
from importlib import resources
from pathlib import Path as FsPath
from typing import Union

from pydantic import ValidationError

from .config import GpuModel, config_error_message
from .errors import ConfigError, UnknownModelError
from .tomlfile import parse_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ModelLike = Union[str, FsPath, GpuModel]


def _preset_dir():
    """The folder holding the shipped presets, installed or in a source checkout."""
    try:
        folder = resources.files("tcsim.models")
        if folder.joinpath("h100.toml").is_file():
            return folder
    except ModuleNotFoundError:
        pass
    return FsPath(__file__).resolve().parent.parent / "models"


def preset_names() -> list[str]:
    """Names of the shipped presets."""
    return sorted(p.name[:-5] for p in _preset_dir().iterdir() if p.name.endswith(".toml"))


def _read_toml(text, where: str) -> dict:
    """TOML text (str, or bytes decoded as UTF-8) -> dict; ConfigError naming ``where``."""
    return parse_toml(text, where)


def _raw_preset(name: str, seen: tuple = ()) -> dict:
    if name in seen:
        raise ConfigError(f"models/{name}.toml: 'extends' cycle through {' -> '.join(seen)}")
    entry = _preset_dir().joinpath(f"{name}.toml")
    if not entry.is_file():
        raise UnknownModelError(
            f"unknown model {name!r}; presets: {', '.join(preset_names())} "
            f"(or give the path of a .toml model file)")
    return _resolve(_read_toml(entry.read_text(), f"models/{name}.toml"), seen + (name,))


def _resolve(data: dict, seen: tuple = ()) -> dict:
    parent = data.pop("extends", None)
    if parent is None:
        return data
    merged = dict(_raw_preset(str(parent), seen))
    merged.update(data)
    return merged


@functools.lru_cache(maxsize=64)
def _load_preset(name: str) -> GpuModel:
    return _validate(_raw_preset(name), f"models/{name}.toml")


def _validate(data: dict, where: str) -> GpuModel:
    try:
        return GpuModel(**data)
    except (ValidationError, ConfigError) as exc:
        raise ConfigError(config_error_message(exc, where=f"{where}: ")) from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_model(name_or_path: ModelLike) -> GpuModel:
    """Return a validated :class:`~tcsim.config.GpuModel`.

    ``name_or_path`` is a preset name ("h100", "b200", "ideal", ...; see :func:`preset_names`), the
    path of a TOML model file (which may ``extends`` a preset), or a GpuModel (returned as is).
    Raises :class:`~tcsim.errors.UnknownModelError` for an unknown name or a missing file and
    :class:`~tcsim.errors.ConfigError` naming the file and field for a malformed one.
    """
    if isinstance(name_or_path, GpuModel):
        return name_or_path
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = FsPath(text)
        if not path.is_file():
            raise UnknownModelError(f"model file {text!r} does not exist")
        return _validate(_resolve(_read_toml(path.read_bytes(), text)), text)
    return _load_preset(text.lower())
