"""Load GPU models: shipped presets (``models/*.toml``, installed as ``tcsim.models``) or user files.

A model file may say ``extends = "<preset>"`` (a shipped preset's name, any case; never a file
path): it then takes that preset's paths and sources, replaces the top-level keys it sets, and
each of its ``[[paths]]`` entries changes the fields of the one preset path it selects by
``name`` (plus ``inputs``/``output`` where several paths share a name), keeping the rest of that
path, its provenance notes and every other path. Shipped presets give a provenance note for every
parameter they set; in a user's file the notes are optional and a missing one reads "proposal"
(the path's status becomes "proposal"). A user's file that sets no ``name`` / ``description``
is named after the file and described as "a proposal (<file>) based on <preset>", never as the
preset itself; an error in one of its ``[[paths]]`` entries names that entry (its index in the
file and the path it selects). A worked example: ``examples/h100_f16_proposal.toml``.

Notes that several paths of one file share are written once, in top-level ``[[provenance]]``
entries (see :func:`_shared_notes`): each gives its notes to every ``[[paths]]`` entry of the
same file that writes the field values of its ``when`` table (every entry when it has none),
unless that path gives its own note for the field::

    [[provenance]]
    when = { zero_sign = "plus" }
    zero_sign = "follows Khattak-Mikaitis: an exact zero is +0 ..."
    zero_operand_exponent = "follows Khattak-Mikaitis: a zero product takes no part in E"
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path as FsPath
from typing import Union

from pydantic import ValidationError

from .errors import ConfigError, UnknownModelError
from .frozen_config import config_error_message
from .gpu_model import GpuModel, InstructionPath
from .tomlfile import parse_toml

ModelLike = Union[str, FsPath, GpuModel]


def preset_dir():
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
    return sorted(p.name[:-5] for p in preset_dir().iterdir() if p.name.endswith(".toml"))


def _preset_name(value, where: str) -> str:
    """The canonical (lower-case) name of the preset an ``extends`` names; nothing else is
    followed: a path (relative or absolute) in ``extends`` is refused, so a model file can only
    reach the shipped presets, whatever it says."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: extends: must be a preset name, not {value!r}")
    name = value.lower()
    if name not in preset_names():
        raise ConfigError(f"{where}: extends: {value!r} is not a preset name (presets: "
                          f"{', '.join(preset_names())}); extends takes a shipped preset's name, "
                          f"never a file path")
    return name


def _raw_preset(name: str, seen: tuple = ()) -> dict:
    """The resolved TOML data of shipped preset ``name`` (canonical lower-case)."""
    if name in seen:
        raise ConfigError(f"models/{name}.toml: 'extends' cycle through "
                          f"{' -> '.join(seen + (name,))}")
    entry = preset_dir().joinpath(f"{name}.toml")
    if not entry.is_file():
        raise UnknownModelError(
            f"unknown model {name!r}; presets: {', '.join(preset_names())} "
            f"(or give the path of a .toml model file)")
    where = f"models/{name}.toml"
    return _resolve(parse_toml(entry.read_text(), where), where, seen + (name,), user=False)


def _resolve(data: dict, where: str, seen: tuple = (), user: bool = True) -> dict:
    """Apply ``extends``: the file's top-level keys replace the preset's, and each of its
    ``[[paths]]`` entries overrides the one preset path it selects (see :func:`_override`).
    user: a user's file (not a shipped preset), whose paths need no provenance notes."""
    data = _shared_notes(data, where)
    parent = data.pop("extends", None)
    _no_path_fields_at_top(data, where, parent)
    if parent is None:
        if user and "paths" in data:
            data = dict(data, paths=[_as_proposal(p, where) for p in _path_list(data, where)])
        return data
    parent_name = _preset_name(parent, where)
    base = _raw_preset(parent_name, seen)
    merged = dict(base)
    if user:
        # a user's model is their proposal, not the preset: labelled by its own file unless it
        # names and describes itself (corpus tables and `tcsim models` show these)
        merged["name"] = FsPath(where).stem
        merged["description"] = f"a proposal ({FsPath(where).name}) based on {parent_name}"
    merged.update({k: v for k, v in data.items() if k != "paths"})
    if "paths" in data:
        paths = [dict(p) for p in base["paths"]]
        for i, entry in enumerate(_path_list(data, where)):
            _override(paths, i, entry, parent_name, where, user)
        merged["paths"] = paths
    return merged


def _shared_notes(data: dict, where: str) -> dict:
    """Give the notes of the file's top-level ``[[provenance]]`` entries to its ``[[paths]]``
    entries: an entry's notes go to every path that writes each field of the entry's ``when``
    table with that value (every path when ``when`` is absent), unless the path gives its own
    note for the field. A path's notes are then the shared ones it takes, in the order of the
    file's ``[[provenance]]`` entries, followed by its own in the order written. An entry that
    matches no path, or two entries giving one path a note for the same field, is an error."""
    if "provenance" not in data:
        return data
    data = dict(data)
    shared = data.pop("provenance")
    label = f"{where}: provenance"
    if not isinstance(shared, list) or not all(isinstance(e, dict) for e in shared):
        raise ConfigError(f"{label}: must be a list of tables ([[provenance]]), each with a "
                          f"`when` table and the notes it gives")
    paths = [dict(p) for p in _path_list(data, where)]
    taken: list = [{} for _ in paths]           # per path: field -> (entry index, note)
    for i, entry in enumerate(shared):
        when, notes = _shared_entry(entry, f"{label}.{i}")
        matched = [j for j, p in enumerate(paths)
                   if all(k in p and p[k] == v for k, v in when.items())]
        if not matched:
            raise ConfigError(f"{label}.{i}: when = {when!r} matches no [[paths]] entry of this "
                              f"file (a shared note applies to the paths that write these values)")
        for j in matched:
            for field, note in notes.items():
                if field in taken[j]:
                    raise ConfigError(f"{label}.{i}: paths.{j} ({_describe(paths[j])}) already "
                                      f"takes a note for {field} from provenance.{taken[j][field][0]}")
                taken[j][field] = (i, note)
    for j, path in enumerate(paths):
        own = path.get("provenance") or {}
        if not isinstance(own, dict):
            raise ConfigError(f"{where}: paths.{j}.provenance: must be a table of notes")
        inherited = {f: note for f, (_, note) in taken[j].items() if f not in own}
        if inherited:
            path["provenance"] = {**inherited, **own}
    if "paths" in data:
        data["paths"] = paths
    return data


def _shared_entry(entry: dict, label: str) -> tuple[dict, dict]:
    """The ``when`` table and the notes of one ``[[provenance]]`` entry, checked: ``when`` names
    path fields (a misspelt one would silently match nothing), every note is a string."""
    when = entry.get("when", {})
    if not isinstance(when, dict):
        raise ConfigError(f"{label}.when: must be a table of path fields and values")
    unknown = [k for k in when if k not in InstructionPath.model_fields or k == "provenance"]
    if unknown:
        raise ConfigError(f"{label}.when: {unknown[0]!r} is not a path field")
    notes = {k: v for k, v in entry.items() if k != "when"}
    if not notes:
        raise ConfigError(f"{label}: gives no notes (field = \"note\" beside its when table)")
    bad = [k for k, v in notes.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{label}.{bad[0]}: a note must be a string")
    return when, notes


def _no_path_fields_at_top(data: dict, where: str, parent) -> None:
    """A datapath field written at the top level (``fraction_bits = 16``) belongs to a path: say
    how to write it instead of pydantic's "extra inputs are not permitted"."""
    stray = [k for k in data
             if k in InstructionPath.model_fields and k not in GpuModel.model_fields]
    if stray:
        how = (f"a [[paths]] entry naming the path of {parent} it changes (name, and inputs or "
               f"output where several paths share the name)" if parent is not None
               else "a [[paths]] entry")
        raise ConfigError(f"{where}: {stray[0]}: a datapath field belongs to a path; write it in "
                          f"{how}")


def _path_list(data: dict, where: str) -> list:
    paths = data.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, dict) for p in paths):
        raise ConfigError(f"{where}: paths: must be a list of tables ([[paths]])")
    return paths


PROPOSAL = "proposal"
# the fields whose provenance note InstructionPath requires
NOTED_FIELDS = ("block_size", "fraction_bits", "output_rounding")
SELECTORS = ("name", "inputs", "output")                           # pick a path, never changed


def _proposal_note(where: str) -> str:
    return f"{PROPOSAL} ({FsPath(where).name}; no source given)"


def _as_proposal(entry: dict, where: str) -> dict:
    """A path of a user's file: status "proposal" unless it says otherwise, and a "proposal"
    note for every field that needs one and has none."""
    entry = dict(entry)
    entry.setdefault("status", PROPOSAL)
    notes = dict(entry.get("provenance") or {})
    for key in NOTED_FIELDS:
        notes.setdefault(key, _proposal_note(where))
    entry["provenance"] = notes
    return entry


def _describe(path: dict) -> str:
    inputs = "/".join(path.get("inputs", ()))
    return f"{path.get('name', 'default')} {inputs} -> {path.get('output')}"


def _override(paths: list, i: int, entry: dict, parent: str, where: str, user: bool) -> None:
    """Apply override ``entry`` (``[[paths]]`` number i of the file) to the one path of
    ``paths`` whose name equals its ``name`` and which serves every format of its ``inputs`` and
    its ``output`` (those given): its other keys replace that path's fields, the rest of the path
    and its provenance notes stay. A changed field takes the entry's note; in a user's file a
    field without one gets a "proposal" note and the path the status "proposal"; a shipped preset
    must give a note for every field it changes."""
    label = f"{where}: paths.{i}"
    if "name" not in entry:
        raise ConfigError(f"{label}: an override of {parent}'s paths names the path it changes "
                          f"(name = ..., with inputs/output where several share it); {parent} "
                          f"has: {'; '.join(_describe(p) for p in paths)}")
    given = {k: entry[k] for k in SELECTORS if k in entry}
    shown = ", ".join(f"{k} = {v!r}" for k, v in given.items())
    wanted = entry.get("inputs", [])
    if not (isinstance(wanted, list) and all(isinstance(f, str) for f in wanted)):
        raise ConfigError(f"{label}.inputs: must be a list of format names, not {wanted!r}")
    wanted = set(wanted)
    matches = [j for j, p in enumerate(paths)
               if p.get("name", "default") == entry["name"]
               and entry.get("output", p.get("output")) == p.get("output")
               and wanted <= set(p.get("inputs", ()))]
    if not matches:
        raise ConfigError(f"{label} ({shown}) matches no path of {parent}; its paths: "
                          f"{'; '.join(_describe(p) for p in paths)}")
    if len(matches) > 1:
        raise ConfigError(f"{label} ({shown}) matches {len(matches)} paths of {parent} "
                          f"({'; '.join(_describe(paths[j]) for j in matches)}): add inputs or "
                          f"output to pick one")
    target = dict(paths[matches[0]])
    changes = {k: v for k, v in entry.items() if k not in SELECTORS and k != "provenance"}
    own_notes = entry.get("provenance") or {}
    if not isinstance(own_notes, dict):
        raise ConfigError(f"{label}.provenance: must be a table of notes")
    notes = dict(target.get("provenance") or {})
    notes.update(own_notes)
    for key in changes:
        if key == "status" or key in own_notes:
            continue
        if not user:
            raise ConfigError(f"{label} ({shown}): no provenance note for {key} (a shipped preset "
                              f"gives a source for every field it changes)")
        notes[key] = _proposal_note(where)
    target.update(changes)
    target["provenance"] = notes
    if user and "status" not in changes and set(changes) - {"status", "description",
                                                            "instruction"}:
        target["status"] = PROPOSAL
    _check_path(target, f"{label} ({shown})")
    paths[matches[0]] = target


def _check_path(path: dict, label: str) -> None:
    """Validate one overridden path now, so that an error names the entry the file wrote
    (``label``), not the path's position in the preset's list."""
    try:
        InstructionPath(**path)
    except (ValidationError, ConfigError) as exc:
        raise ConfigError(config_error_message(exc, where=f"{label}: ")) from None
    except TypeError as exc:
        raise ConfigError(f"{label}: {exc}") from None


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
    """Return a validated :class:`~tcsim.gpu_model.GpuModel`.

    ``name_or_path`` is a preset name ("h100", "b200", "ideal", ...; any case; see
    :func:`preset_names`), the path of a TOML model file (a proposal, which may ``extends`` a
    preset and override some fields of its paths: see the module docstring), or a GpuModel
    (returned as is).
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
        return _validate(_resolve(parse_toml(path.read_bytes(), text), text), text)
    return _load_preset(text.lower())
