"""Datapath and GPU-model configuration (pydantic, frozen, unknown keys rejected).

A :class:`Datapath` describes one matrix-unit path (one instruction, one input/output format
combination) as a *block FMA*: ``n`` exact products plus the incoming accumulator C are aligned to
the largest exponent E, each term is rounded onto the grid ``2^(E - f)``, the terms are summed
exactly, and the sum is rounded once to the output format. A K longer than ``n`` is a chain of
blocks, each block's result being the next block's C. See ``../shared/HARDWARE.md`` section 1.

A :class:`GpuModel` is a named collection of datapaths with provenance, loaded from
``models/<name>.toml`` by :func:`tcsim.load_model`.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import ConfigError, UnknownModelError
from .formats import get_format

INPUT_FORMATS = ("e4m3", "e5m2", "fp16", "bf16", "tf32")
OUTPUT_FORMATS = ("fp32", "fp16")

TermRounding = Literal["truncate", "floor", "rne"]
OutputRounding = Literal["rz", "rne"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Datapath(_Frozen):
    """One block-FMA datapath. Every field is a property of the hardware being modelled.

    block_size: products summed per step (n). None = the whole K in one step (an ideal unit).
    fraction_bits: bits kept below the block's max exponent E (terms land on the grid 2^(E-f)).
        None = exact alignment: nothing is lost before the final rounding.
    term_rounding: how a term is put on the grid: "truncate" (toward zero in sign-magnitude),
        "floor" (two's-complement arithmetic shift, toward -inf), "rne" (nearest-even with
        guard/sticky bits).
    product_alignment: "unnormalized": a product's exponent is ea+eb (its significand lies in
        [1, 4)); "normalized": the exponent of the exact product, floor(log2|a*b|).
    c_placement: "inside": C is one more term of the alignment; "after": the products are summed
        alone (E over products only), that sum is rounded to ``product_sum_precision`` bits with
        ``product_sum_rounding``, then C is added with one rounding (``output_rounding``).
    output_precision: significant bits of the result (<= the accumulator format's precision),
        e.g. 14 for FP8 on Ada/Hopper whose fp32 results have their low 10 mantissa bits zero.
    output_rounding: rounding of the normalised sum to ``output_precision`` bits.
    min_exp_limit: E is clamped from below at this exponent (None = no clamp).
    subnormal_inputs / subnormal_outputs: "keep" or "flush" (to zero of the same sign).
    zero_sign: sign of an exact-zero result: "plus" (always +0, the published model) or "ieee"
        (-0 only when every term is -0, or -0 under round-down).
    overflow: a result beyond the accumulator's range: "ieee" (RNE gives Inf, RZ gives max
        finite), "inf" (always Inf), "saturate" (always max finite).
    c_precision_rounding: how a C held in a wider format is first brought into the accumulator
        format (fp32 C on the fp16-output paths is rounded to fp16 with RNE).
    """

    block_size: Optional[int] = Field(default=None, ge=1, le=4096)
    fraction_bits: Optional[int] = Field(default=None, ge=0, le=48)
    term_rounding: TermRounding = "truncate"
    product_alignment: Literal["unnormalized", "normalized"] = "unnormalized"
    c_placement: Literal["inside", "after"] = "inside"
    product_sum_precision: Optional[int] = Field(default=None, ge=2, le=48)
    product_sum_rounding: OutputRounding = "rz"
    output_precision: Optional[int] = Field(default=None, ge=2, le=24)
    output_rounding: OutputRounding = "rz"
    min_exp_limit: Optional[int] = Field(default=None, ge=-1000, le=1000)
    subnormal_inputs: Literal["keep", "flush"] = "keep"
    subnormal_outputs: Literal["keep", "flush"] = "keep"
    zero_sign: Literal["plus", "ieee"] = "plus"
    overflow: Literal["ieee", "inf", "saturate"] = "ieee"
    c_precision_rounding: Literal["rne"] = "rne"

    @model_validator(mode="after")
    def _consistent(self) -> "Datapath":
        if self.c_placement == "after":
            if self.product_sum_precision is None:
                raise ValueError("product_sum_precision: required when c_placement = 'after'")
        elif self.product_sum_precision is not None:
            raise ValueError("product_sum_precision: only meaningful when c_placement = 'after'")
        if self.fraction_bits is None and self.term_rounding != "truncate":
            raise ValueError("term_rounding: must be 'truncate' (unused) when fraction_bits is "
                             "None (exact alignment)")
        if self.fraction_bits is not None and self.block_size is None:
            raise ValueError("block_size: a finite fraction_bits needs a finite block size")
        return self


class Path(Datapath):
    """A datapath as one GPU provides it: which formats it serves and where each value comes from.

    inputs: the input formats accepted for A and for B (any pair from this list).
    output: accumulator/output format ("fp32" or "fp16").
    name: the instruction path ("wmma", "wgmma", "mma.sync", "tcgen05", ...); when a model has
        several paths for the same formats, the first is the default and the others are chosen
        with ``path=``.
    status: "explained" (reproduces recorded hardware), "model" (from a publication, no public
        data), "unexplained" (known not to reproduce the recorded hardware).
    provenance: a note per parameter (field name -> source and evidence level).
    """

    inputs: tuple[str, ...]
    output: Literal["fp32", "fp16"]
    name: str = "default"
    instruction: str = ""
    status: Literal["explained", "model", "unexplained"] = "model"
    provenance: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _formats_known(self) -> "Path":
        for f in self.inputs:
            if f not in INPUT_FORMATS:
                raise ValueError(f"inputs: unknown input format {f!r} (known: {INPUT_FORMATS})")
        if self.output_precision is not None:
            cap = get_format(self.output).precision
            if self.output_precision > cap:
                raise ValueError(f"output_precision: {self.output_precision} exceeds the "
                                 f"{self.output} precision ({cap})")
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


class GpuModel(_Frozen):
    """A named matrix unit: a list of paths, each serving some input/output formats."""

    name: str
    description: str = ""
    sources: tuple[str, ...] = ()
    paths: tuple[Path, ...]

    def find_path(self, a_format: str, b_format: str, acc: str = "fp32",
                  path: Optional[str] = None) -> Path:
        """The path serving ``a_format x b_format -> acc`` (the first one, or the one named)."""
        candidates = [p for p in self.paths
                      if a_format in p.inputs and b_format in p.inputs and p.output == acc]
        if path is not None:
            named = [p for p in candidates if p.name == path]
            if not named:
                names = sorted({p.name for p in candidates}) or ["none"]
                raise UnknownModelError(
                    f"model {self.name!r} has no path {path!r} for {a_format} x {b_format} -> "
                    f"{acc} (paths for these formats: {', '.join(names)})")
            return named[0]
        if not candidates:
            served = sorted({f"{'/'.join(p.inputs)} -> {p.output}" for p in self.paths})
            raise UnknownModelError(
                f"model {self.name!r} has no datapath for {a_format} x {b_format} -> {acc}; "
                f"it serves: {'; '.join(served)}")
        return candidates[0]


def config_error_message(exc: Exception, where: str = "") -> str:
    """Turn a pydantic ValidationError into one readable line per bad field."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return f"{where}{exc}"
    lines = []
    for err in errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(model)"
        lines.append(f"{where}{loc}: {err.get('msg', '')}")
    return "\n".join(lines)


def make_datapath(**fields) -> Datapath:
    """Build a Datapath, raising :class:`ConfigError` naming the bad field(s)."""
    try:
        return Datapath(**fields)
    except Exception as exc:  # pydantic.ValidationError
        raise ConfigError(config_error_message(exc)) from None
