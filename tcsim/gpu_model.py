"""GPU models: which datapath serves which formats (pydantic, frozen, unknown keys rejected).

An :class:`InstructionPath` is one instruction/format path of a GPU: a
:class:`~tcsim.datapath.Datapath` with the input formats and accumulator it serves, its
instruction name, status and a provenance note per parameter. A :class:`GpuModel` is a named
collection of such paths with its sources, loaded from ``models/<name>.toml`` by
:func:`tcsim.load_model`.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from .datapath import Datapath
from .errors import UnknownModelError
from .formats.catalog import get_format
from .frozen_config import FrozenConfig

INPUT_FORMATS = ("e4m3", "e5m2", "fp16", "bf16", "tf32",
                 # AMD CDNA3 FP8 (FNUZ) and the OCP MX element formats (FP6, FP4)
                 "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2", "e2m1",
                 # AMD f32 MFMA (a sequential FMA chain)
                 "fp32")
OUTPUT_FORMATS = ("fp32", "fp16")


class InstructionPath(Datapath):
    """One instruction/format path of a GPU model: a datapath as one GPU provides it, which
    formats it serves and where each value comes from.

    inputs: the input formats accepted for A and for B (any pair from this list).
    output: accumulator/output format ("fp32" or "fp16").
    name: the instruction path ("wmma", "wgmma", "mma.sync", "tcgen05", ...); when a model has
        several paths for the same formats, the first is the default and the others are chosen
        with ``path=``.
    status: "explained" (reproduces recorded hardware), "model" (from a publication, no public
        data), "unexplained" (known not to reproduce the recorded hardware), "proposal" (a
        design proposal: a user's model file, see :func:`tcsim.load_model`).
    provenance: a note per parameter (field name -> source and evidence level).
    scale_formats: block-scaled paths: the scale formats the instruction takes ("ue8m0",
        "ue4m3"); scale_blocks: the K elements per scale it takes (32 for MX, 16 for NVFP4).
    """

    inputs: tuple[str, ...]
    scale_formats: tuple[Literal["ue8m0", "ue4m3"], ...] = ()
    scale_blocks: tuple[int, ...] = ()
    output: Literal["fp32", "fp16"]
    name: str = "default"
    instruction: str = ""
    status: Literal["explained", "model", "unexplained", "proposal"] = "model"
    provenance: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _formats_known(self) -> "InstructionPath":
        for f in self.inputs:
            if f not in INPUT_FORMATS:
                raise ValueError(f"inputs: unknown input format {f!r} (known: {INPUT_FORMATS})")
        if self.output_precision is not None:
            cap = get_format(self.output).precision
            if self.output_precision > cap:
                raise ValueError(f"output_precision: {self.output_precision} exceeds the "
                                 f"{self.output} precision ({cap})")
        if (self.block_scale != "none") != bool(self.scale_formats):
            raise ValueError("scale_formats: a block-scaled path (block_scale != 'none') lists "
                             "its scale formats, and only such a path does")
        if self.block_scale == "exponent" and set(self.scale_formats) != {"ue8m0"}:
            raise ValueError("scale_formats: block_scale 'exponent' takes ue8m0 scales only")
        if self.status != "unexplained":
            missing = [k for k in ("block_size", "fraction_bits", "output_rounding")
                       if k not in self.provenance]
            if missing:
                raise ValueError(f"provenance: no note for {', '.join(missing)}")
        return self

    def datapath(self) -> Datapath:
        """The bare datapath (hardware parameters only)."""
        return Datapath(**{k: getattr(self, k) for k in Datapath.model_fields})

    def effective_output_precision(self) -> int:
        return self.output_precision or get_format(self.output).precision


class GpuModel(FrozenConfig):
    """A named matrix unit: a list of paths, each serving some input/output formats."""

    name: str
    description: str = ""
    sources: tuple[str, ...] = ()
    paths: tuple[InstructionPath, ...]

    def find_path(self, a_format: str, b_format: str, acc: str = "fp32",
                  path: Optional[str] = None, scaled: bool = False,
                  scale_format: Optional[str] = None) -> InstructionPath:
        """The path serving ``a_format x b_format -> acc`` (the first one, or the one named);
        scaled: choose among the block-scaled paths (operands with scales) instead of the plain
        ones (a path named explicitly is taken either way)."""
        candidates = [p for p in self.paths
                      if a_format in p.inputs and b_format in p.inputs and p.output == acc]
        if path is None:
            candidates = [p for p in candidates if (p.block_scale != "none") == scaled]
            if scale_format is not None:
                candidates = [p for p in candidates if scale_format in p.scale_formats]
        if path is not None:
            named = [p for p in candidates if p.name == path]
            if not named:
                names = sorted({p.name for p in candidates}) or ["none"]
                raise UnknownModelError(
                    f"model {self.name!r} has no path {path!r} for {a_format} x {b_format} -> "
                    f"{acc} (paths for these formats: {', '.join(names)})")
            return named[0]
        if not candidates:
            served = sorted({f"{'/'.join(p.inputs)} -> {p.output}"
                             f"{' (block-scaled: ' + p.name + ')' if p.scale_formats else ''}"
                             for p in self.paths})
            kind = "block-scaled datapath" if scaled else "datapath"
            raise UnknownModelError(
                f"model {self.name!r} has no {kind} for {a_format} x {b_format} -> {acc}; "
                f"it serves: {'; '.join(served)}")
        return candidates[0]
