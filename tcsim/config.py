"""Datapath and GPU-model configuration (pydantic, frozen, unknown keys rejected).

A :class:`Datapath` describes one matrix-unit path (one instruction, one input/output format
combination) as a *block FMA*: ``n`` exact products plus the incoming accumulator C are aligned to
the largest exponent E, each term is rounded onto the grid ``2^(E - f)``, the terms are summed
exactly, and the sum is rounded once to the output format. A K longer than ``n`` is a chain of
blocks, each block's result being the next block's C. See ``docs/hardware.md#block-fma``.

A :class:`GpuModel` is a named collection of datapaths with provenance, loaded from
``models/<name>.toml`` by :func:`tcsim.load_model`.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError, UnknownModelError
from .formats.catalog import get_format
from .rounding import NAMES as ROUNDING_NAMES

INPUT_FORMATS = ("e4m3", "e5m2", "fp16", "bf16", "tf32",
                 # AMD CDNA3 FP8 (FNUZ) and the OCP MX element formats (FP6, FP4)
                 "e4m3fnuz", "e5m2fnuz", "e2m3", "e3m2", "e2m1",
                 # AMD f32 MFMA (a sequential FMA chain)
                 "fp32")
OUTPUT_FORMATS = ("fp32", "fp16")

TermRounding = Literal["truncate", "floor", "rne", "sr"]
OutputRounding = Literal["rz", "rne"]
AccRounding = Literal["rz", "rne", "sr"]
# each rounding name above maps to its code in tcsim.rounding.Rounding, the one table of modes
# that params and the kernels use
assert set(get_args(TermRounding) + get_args(AccRounding)) <= set(ROUNDING_NAMES)


class _Frozen(BaseModel):
    """Frozen, unknown keys rejected, and validated on every way in: a bad value raises
    :class:`~tcsim.errors.ConfigError` (a ValueError) with pydantic's field messages, from the
    constructor, ``model_validate`` and ``model_copy(update=...)`` alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, /, **data):
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc) from None

    # pydantic calls a model's own __init__ for nested models unless told it is the base one:
    # nested models are then validated inside the outer validation, so their errors keep their
    # place (paths.3.surprise) and the outer ValidationError is converted once, above
    __init__.__pydantic_base_init__ = True

    @classmethod
    def model_validate(cls, obj, **kwargs):
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _config_error(exc) from None

    def model_copy(self, *, update=None, deep: bool = False):
        """A copy; with ``update``, validated as a new instance would be (pydantic's own
        model_copy does not validate: block_size=0 would reach the kernels)."""
        if not update:
            return super().model_copy(deep=deep)
        return type(self)(**(dict(self) | dict(update)))


class Datapath(_Frozen):
    """One block-FMA datapath. Every field is a property of the hardware being modelled.

    block_size: products summed per step (n). None = the whole K in one step (an ideal unit).
    fraction_bits: bits kept below the block's max exponent E (terms land on the grid 2^(E-f)).
        None = exact alignment: nothing is lost before the final rounding.
    term_rounding: how a term is put on the grid: "truncate" (toward zero in sign-magnitude),
        "floor" (two's-complement arithmetic shift, toward -inf), "rne" (nearest-even with
        guard/sticky bits), "sr" (stochastic, sign-magnitude: |term| rounds up when a random
        integer R in [0, 2^sr_bits) is below its first sr_bits discarded bits; R from the same
        counter-based hash as stochastic output rounding, at counter 2^32 + k for the product of
        K index k and 2^33 + block for a C term: a design proposal, no shipped GPU does it).
    product_alignment: "unnormalized": a product's exponent is ea+eb (its significand lies in
        [1, 4)); "normalized": the exponent of the exact product, floor(log2|a*b|).
    c_placement: "inside": C is one more term of the alignment; "after": the products are summed
        alone (E over products only), that sum is rounded to ``product_sum_precision`` bits with
        ``product_sum_rounding``, then C is added with one rounding (``output_rounding``).
    output_precision: significant bits of the result (<= the accumulator format's precision),
        e.g. 14 for FP8 on Ada/Hopper whose fp32 results have their low 10 mantissa bits zero.
    output_rounding: rounding of the normalised sum to ``output_precision`` bits: "rz", "rne", or
        "sr" (stochastic: the first ``sr_bits`` discarded bits D, read as an integer, round the
        magnitude up when a uniform random integer R in [0, 2^sr_bits) is below D, so up with
        probability D / 2^sr_bits). R comes from a counter-based hash (splitmix64) of
        (``sr_seed``, batch, row, column, block index): deterministic, whatever the threads.
    min_exp_limit: E is clamped from below at this exponent (None = no clamp).
    zero_operand_exponent: None: a product with a zero factor is no term (Khattak-Mikaitis);
        an integer: a zero operand has this exponent (MMA-Sim: -126), so its product, whose value
        is 0, still takes part in choosing E (docs/hardware.md#zero-operands). Unnormalised
        products only.
        With group terms: None drops a group whose sum is 0 from E, an integer keeps every group
        at its scale exponent; a zero ue4m3 scale has this exponent (None: no part in E). With
        c_placement "asymmetric", a zero C has this exponent in E' (MMA-Sim's zero C at -126).
    subnormal_inputs / subnormal_outputs: "keep" or "flush" (to zero of the same sign).
    zero_sign: sign of an exact-zero result: "plus" (always +0, the published model) or "ieee"
        (-0 only when every term is -0, or -0 under round-down); a nonzero sum that rounds to
        zero keeps its sign under both. "unsigned": every zero result is +0, an underflow to
        zero included (MMA-Sim's NVIDIA results, rebuilt from Python integers).
    overflow: a result beyond the accumulator's range: "ieee" (RNE gives Inf, RZ gives max
        finite), "inf" (always Inf), "saturate" (always max finite).
    c_precision_rounding: how a C held in a wider format is first brought into the accumulator
        format (fp32 C on the fp16-output paths is rounded to fp16 with RNE).

    Building blocks of the block-scaled and AMD units (docs/hardware.md#blackwell-block-scaled,
    docs/hardware.md#amd-cdna; all off by default):

    block_scale: scales inside the instruction (operands a_scale, b_scale of tcsim.mma):
        "exponent": the power-of-two scales' exponents Xa + Xb are added to each product's
        exponent (tcgen05 kind::mxf8f6f4: the scaled products are aligned together with C);
        "group": the products of each ``group_size`` consecutive K are summed exactly, and the
        group sum times the two scales is one term whose alignment exponent is Xa + Xb, taken from
        the scales, not from the sum's magnitude (kind::mxf4 / mxf4nvf4).
    group_size: products per exact sub-group sum (block_scale = "group").
    lanes: 1, or 2: the even-K and odd-K terms of a block are fused separately (each on the grid
        2^(E_lane - f) of its own max exponent); the lane with the smaller exponent is then rounded
        down (toward -inf) onto the grid of the larger, and the two are added (CDNA3 FP8).
    c_placement "asymmetric" (CDNA3): the products are fused alone (E over the products), then
        with E' = max(E, e_C) the product sum is rounded down to ``join_sum_bits`` fraction bits
        below E', C is rounded down to ``join_c_bits`` fraction bits below E' (or dropped, taken
        as 0, when e_C < E' - ``join_c_window``), the two are added exactly and the sum is rounded
        once (output_rounding). A zero C takes no part in E' (at zero_operand_exponent if set).
    product_sum: "fused" (one aligned exact sum, above) or "pairwise": each product is rounded
        to the accumulator format (product_sum_precision bits, product_sum_rounding, the
        accumulator's exponent range; a zero product is +0, as fma(a, b, +0) gives), and the block
        is summed as a balanced binary tree ((p0 + p1) + (p2 + p3)) whose every node is rounded
        the same way; C is then added with one rounding (output_rounding). Needs
        c_placement = "after" and fraction_bits = None (CDNA1/CDNA2).
        The tree's nodes are IEEE operations on Inf and NaN too: an Inf input is an Inf product
        node (NaN against a zero), and an overflowing node meeting an Inf of the other sign gives
        NaN, as MMA-Sim's pairwise_dot (fmaf nodes) does.
    flush_nodes: flush to zero at every node of a pairwise tree (CDNA2): inputs and C below their
        format's smallest normal become +0, every product, tree node and accumulator below
        2^emin of the accumulator becomes a zero of its sign.
    product_overflow: "exact" (a product is exact whatever its size), or "inf": in a block
        without NaN or Inf inputs, a product whose exact magnitude reaches 2^(emax + 1) of the
        accumulator makes the block's result Inf of its sign (NaN when both signs occur), before
        any sum with C (MMA-Sim amd_fused_dot_rd_add, CDNA3). Fused staged datapaths only.

    Lowered instructions (an instruction the compiler runs on other matrix instructions):

    lowered_k: the lowered instruction's K (None: not lowered). Every lowered_k products run
        as a chain of the datapath's blocks starting from C = 0, in ``k_order``, and the incoming
        C is added to that result last with one round-to-nearest-even into the output format;
        the sum is the next instruction's C (Hopper's FP8 mma.sync on FP16 HMMA, tcsim.lowering).
    k_order: the order in which one lowered instruction's products enter the blocks (a
        permutation of 0 .. lowered_k - 1; empty: natural order).
    """

    block_size: Optional[int] = Field(default=None, ge=1, le=4096)
    fraction_bits: Optional[int] = Field(default=None, ge=0, le=48)
    term_rounding: TermRounding = "truncate"
    product_alignment: Literal["unnormalized", "normalized"] = "unnormalized"
    c_placement: Literal["inside", "after", "asymmetric"] = "inside"
    product_sum_precision: Optional[int] = Field(default=None, ge=2, le=48)
    product_sum_rounding: OutputRounding = "rz"
    output_precision: Optional[int] = Field(default=None, ge=2, le=24)
    output_rounding: AccRounding = "rz"
    sr_bits: int = Field(default=16, ge=1, le=32)
    sr_seed: int = Field(default=0, ge=0, le=2 ** 63 - 1)
    min_exp_limit: Optional[int] = Field(default=None, ge=-1000, le=1000)
    zero_operand_exponent: Optional[int] = Field(default=None, ge=-400, le=400)
    subnormal_inputs: Literal["keep", "flush"] = "keep"
    subnormal_outputs: Literal["keep", "flush"] = "keep"
    zero_sign: Literal["plus", "ieee", "unsigned"] = "plus"
    overflow: Literal["ieee", "inf", "saturate"] = "ieee"
    c_precision_rounding: Literal["rne"] = "rne"
    block_scale: Literal["none", "exponent", "group"] = "none"
    group_size: Optional[int] = Field(default=None, ge=1, le=4096)
    lanes: Literal[1, 2] = 1
    join_sum_bits: Optional[int] = Field(default=None, ge=0, le=40)
    join_c_bits: Optional[int] = Field(default=None, ge=0, le=40)
    join_c_window: Optional[int] = Field(default=None, ge=0, le=200)
    product_sum: Literal["fused", "pairwise"] = "fused"
    flush_nodes: bool = False
    product_overflow: Literal["exact", "inf"] = "exact"
    lowered_k: Optional[int] = Field(default=None, ge=1, le=4096)
    k_order: tuple[int, ...] = ()

    def for_chunk(self, chunk: int) -> "Datapath":
        """The datapath of the chunk-th tensor-core partial of a promoted GEMM: with stochastic
        output rounding each chunk draws fresh random numbers (seed sr_seed + chunk)."""
        if self.output_rounding != "sr":
            return self
        return self.model_copy(update={"sr_seed": (self.sr_seed + chunk) % (1 << 63)})

    def replace(self, **changes) -> "Datapath":
        """A validated copy with some fields changed (the same as ``model_copy(update=changes)``)."""
        return type(self)(**(self.model_dump() | changes))

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
        if self.zero_operand_exponent is not None and self.product_alignment != "unnormalized":
            raise ValueError("zero_operand_exponent: only defined for unnormalized products")
        if self.fraction_bits is not None and self.block_size is None:
            raise ValueError("block_size: a finite fraction_bits needs a finite block size")
        self._check_building_blocks()
        return self

    def _check_building_blocks(self) -> None:
        """Consistency of the block-scaled / AMD building blocks (each message names its field)."""
        asym = self.c_placement == "asymmetric"
        if asym:
            if self.join_sum_bits is None or self.join_c_bits is None:
                raise ValueError("join_sum_bits: c_placement = 'asymmetric' needs join_sum_bits "
                                 "and join_c_bits")
            if self.join_c_bits > self.join_sum_bits:
                raise ValueError("join_c_bits: must not exceed join_sum_bits")
            if self.fraction_bits is None:
                raise ValueError("fraction_bits: c_placement = 'asymmetric' needs finite "
                                 "fraction bits")
        elif (self.join_sum_bits, self.join_c_bits, self.join_c_window) != (None, None, None):
            raise ValueError("join_sum_bits: join_* settings only apply to c_placement = "
                             "'asymmetric'")
        if self.lanes == 2:
            if self.fraction_bits is None:
                raise ValueError("lanes: 2 lanes need finite fraction bits")
            if self.c_placement == "inside":
                raise ValueError("lanes: 2 lanes need C outside the alignment (c_placement "
                                 "'after' or 'asymmetric')")
            if self.block_scale == "group":
                raise ValueError("lanes: 2 lanes are not defined for group terms")
        if self.block_scale == "group":
            if self.group_size is None:
                raise ValueError("group_size: block_scale = 'group' needs a group size")
            if self.fraction_bits is None:
                raise ValueError("fraction_bits: block_scale = 'group' needs finite fraction bits")
            if self.block_size % self.group_size:
                raise ValueError(f"group_size: {self.group_size} does not divide block_size "
                                 f"{self.block_size}")
            if self.product_alignment != "unnormalized" or self.term_rounding != "truncate":
                raise ValueError("block_scale: group terms are truncated at their scale "
                                 "exponent (product_alignment 'unnormalized', term_rounding "
                                 "'truncate')")
        elif self.group_size is not None:
            raise ValueError("group_size: only meaningful with block_scale = 'group'")
        if self.product_sum == "pairwise":
            if self.fraction_bits is not None or self.c_placement != "after":
                raise ValueError("product_sum: 'pairwise' needs fraction_bits = None and "
                                 "c_placement = 'after'")
            n = self.block_size
            if n is None or n & (n - 1):
                raise ValueError("block_size: a pairwise tree needs a power-of-two block size")
            if self.block_scale != "none" or self.lanes != 1:
                raise ValueError("product_sum: 'pairwise' takes no block scales or lanes")
            if self.output_rounding == "sr" or self.product_sum_rounding != "rne":
                raise ValueError("product_sum_rounding: a pairwise tree rounds its nodes with "
                                 "'rne' (and the output with 'rz' or 'rne')")
        elif self.flush_nodes:
            raise ValueError("flush_nodes: only defined for product_sum = 'pairwise'")
        if self.product_overflow == "inf" and (self.product_sum != "fused" or not self.staged()):
            raise ValueError("product_overflow: 'inf' is defined for fused staged datapaths "
                             "(the asymmetric join, lanes or group terms)")
        self._check_lowering()

    def _check_lowering(self) -> None:
        n = self.lowered_k
        if n is None:
            if self.k_order:
                raise ValueError("k_order: only meaningful with lowered_k")
            return
        if self.k_order and sorted(self.k_order) != list(range(n)):
            raise ValueError(f"k_order: must be a permutation of 0 .. {n - 1}")
        if self.block_size is None or n % self.block_size:
            raise ValueError(f"lowered_k: {n} must be a multiple of block_size "
                             f"({self.block_size})")
        if self.block_scale != "none":
            raise ValueError("lowered_k: a lowered instruction takes no block scales")
        if "sr" in (self.output_rounding, self.term_rounding):
            raise ValueError("lowered_k: stochastic rounding is not defined for a lowered "
                             "instruction")

    def staged(self) -> bool:
        """True when the datapath has a stage beyond the plain block FMA (group terms, lanes,
        stochastic terms, the asymmetric join or a pairwise tree)."""
        return (self.block_scale == "group" or self.lanes != 1 or self.term_rounding == "sr"
                or self.c_placement == "asymmetric" or self.product_sum == "pairwise")


class Path(Datapath):
    """A datapath as one GPU provides it: which formats it serves and where each value comes from.

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
    def _formats_known(self) -> "Path":
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


class GpuModel(_Frozen):
    """A named matrix unit: a list of paths, each serving some input/output formats."""

    name: str
    description: str = ""
    sources: tuple[str, ...] = ()
    paths: tuple[Path, ...]

    def find_path(self, a_format: str, b_format: str, acc: str = "fp32",
                  path: Optional[str] = None, scaled: bool = False,
                  scale_format: Optional[str] = None) -> Path:
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


def config_error_message(exc: Exception, where: str = "") -> str:
    """Turn a pydantic ValidationError (or a ConfigError wrapping one) into one readable line
    per bad field."""
    errors = getattr(exc, "field_errors", None)
    if not errors and callable(getattr(exc, "errors", None)):
        errors = exc.errors()
    if not errors:
        return f"{where}{exc}"
    lines = []
    for err in errors:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(model)"
        lines.append(f"{where}{loc}: {err.get('msg', '')}")
    return "\n".join(lines)


def _config_error(exc: ValidationError) -> ConfigError:
    return ConfigError(config_error_message(exc), field_errors=exc.errors(include_url=False))


def make_datapath(**fields) -> Datapath:
    """Build a Datapath, raising :class:`ConfigError` naming the bad field(s)."""
    try:
        return Datapath(**fields)
    except Exception as exc:  # pydantic.ValidationError
        raise ConfigError(config_error_message(exc)) from None


# ---- GEMM recipes (two-level accumulation and fine-grained scaling) ---------------------------

Granularity = Literal["tensor", "channel", "group", "block", "mx", "nvfp4"]
Epilogue = Literal["deepgemm", "1d1d", "2d1d", "2d2d", "mul_add"]
EPILOGUE_NAMES = get_args(Epilogue)
GemmOutput = Literal["fp32", "bf16"]
GEMM_OUTPUTS = get_args(GemmOutput)


class Scaling(_Frozen):
    """How one GEMM operand is quantised (see tcsim.quant for the exact arithmetic).

    granularity, for A = x (M, K) / B = w (K, N):
        "tensor": one scale; "channel": one per row of A / per column of B (per output channel);
        "group": 1 x group_size along K per row of A / group_size x 1 per column of B (DeepSeek-V3
        activations: 1 x 128); "block": group_size x group_size blocks (DeepSeek-V3 weights:
        128 x 128); "mx": OCP MX, 32 consecutive K elements share one E8M0 power-of-two scale;
        "nvfp4": NVIDIA NVFP4, 16 consecutive K elements share one ue4m3 (e4m3) scale, times one
        fp32 scale per tensor (tcsim.quant gives the arithmetic); scales inside the MMA only.
    group_size: K extent of a group/block (128 in DeepSeek-V3; 32 for mx).
    scale_dtype: "fp32" (scale = amax / max_finite in fp32), "pow2" (rounded up to a power of
        two), "ue8m0" (a power of two stored as E8M0; mx always uses it).
    amax_history: delayed scaling (Transformer Engine): the scale comes from the max over the
        last ``amax_history`` amax values (the current one included: TE's own rule, previous
        steps only, is tcsim.reciprocal_scaling's "te_delayed"); tensor granularity only.
    margin: delayed scaling margin: the scale is multiplied by 2^margin.
    """

    granularity: Granularity = "tensor"
    group_size: int = Field(default=128, ge=1, le=65536)
    scale_dtype: Literal["fp32", "pow2", "ue8m0", "ue4m3"] = "fp32"
    amax_history: Optional[int] = Field(default=None, ge=1, le=65536)
    margin: int = Field(default=0, ge=0, le=64)

    @model_validator(mode="after")
    def _consistent(self) -> "Scaling":
        if self.granularity == "mx":
            if self.scale_dtype != "ue8m0":
                raise ValueError("scale_dtype: mx scaling uses ue8m0 scales")
            if self.group_size != 32:
                raise ValueError("group_size: mx scaling shares one scale per 32 elements")
        if self.granularity == "nvfp4":
            if self.scale_dtype != "ue4m3" or self.group_size != 16:
                raise ValueError("scale_dtype: nvfp4 scaling uses ue4m3 scales per 16 elements "
                                 "(scale_dtype='ue4m3', group_size=16)")
        elif self.scale_dtype == "ue4m3":
            raise ValueError("scale_dtype: ue4m3 scales belong to nvfp4 scaling")
        if self.amax_history is not None and self.granularity != "tensor":
            raise ValueError("amax_history: delayed scaling is per-tensor only")
        return self

    def k_group(self, k: int) -> int:
        """K extent over which this operand's scale is constant."""
        return self.group_size if self.granularity in ("group", "block", "mx", "nvfp4") else k


class Recipe(_Frozen):
    """An FP8 GEMM as a production kernel runs it (docs/hardware.md#promotion).

    a_format, b_format: FP8 formats of x and w.
    a_scaling, b_scaling: quantisation of each operand.
    promotion_interval: every this many K elements the tensor-core partial sum is promoted into an
        FP32 register (scaled there) and the tensor-core accumulator restarts at 0; a multiple of
        the datapath's block size that divides the scale groups along K. None = fast
        accumulation: the whole K stays in the tensor-core accumulator, scales applied once.
    epilogue: how a partial p is scaled and added into the FP32 accumulator acc, in IEEE FP32
        with a true single-rounding FMA: "deepgemm" fma(sa*sb, p, acc); "1d1d" fma(p*sa, sb, acc);
        "2d1d" fma(p*sb, sa, acc); "2d2d" fma(p, sa*sb, acc); "mul_add" acc + (p*sa)*sb, every
        operation rounded.
    output: "fp32", or "bf16" (RNE from the FP32 accumulator).
    scales_in_mma: the MX scales (ue8m0 per 32 K elements, both operands) go into a block-scaled
        MMA instruction (Blackwell kind::mxf8f6f4: a path with block_scale set) instead of being
        applied at promotion; each promoted partial is then added with unit scales. With
        promotion_interval None the whole K stays in the tensor-core accumulator.
    """

    a_format: Literal["e4m3", "e5m2", "e2m1"] = "e4m3"
    b_format: Literal["e4m3", "e5m2", "e2m1"] = "e4m3"
    a_scaling: Scaling = Scaling()
    b_scaling: Scaling = Scaling()
    promotion_interval: Optional[int] = Field(default=128, ge=1)
    epilogue: Epilogue = "deepgemm"
    output: GemmOutput = "fp32"
    scales_in_mma: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> "Recipe":
        if self.scales_in_mma:
            grans = {self.a_scaling.granularity, self.b_scaling.granularity}
            if len(grans) != 1 or not grans <= {"mx", "nvfp4"}:
                raise ValueError(f"a_scaling: scales_in_mma takes MX (ue8m0 per 32) or NVFP4 "
                                 f"(ue4m3 per 16) scaling on both operands, not "
                                 f"{sorted(grans)}")
            if "nvfp4" in grans and (self.a_format, self.b_format) != ("e2m1", "e2m1"):
                raise ValueError("a_format: NVFP4 scaling takes e2m1 operands")
            if self.promotion_interval is not None and self.promotion_interval % 32:
                raise ValueError("promotion_interval: a multiple of 32 with scales_in_mma")
            return self
        for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
            if sc.granularity == "nvfp4":
                raise ValueError(f"{name}: NVFP4 scales are applied inside the MMA only "
                                 f"(scales_in_mma=True, e.g. Recipe.nvfp4())")
        if "e2m1" in (self.a_format, self.b_format):
            raise ValueError("a_format: FP4 (e2m1) operands need scales_in_mma (Recipe.nvfp4, "
                             "Recipe.mxfp4)")
        if self.promotion_interval is None:
            for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
                if sc.granularity in ("group", "block", "mx"):
                    raise ValueError(f"{name}: fast accumulation (promotion_interval None) needs "
                                     f"scales constant along K, not {sc.granularity!r}")
        else:
            for name, sc in (("a_scaling", self.a_scaling), ("b_scaling", self.b_scaling)):
                if sc.granularity in ("group", "block", "mx") and \
                        sc.group_size % self.promotion_interval:
                    raise ValueError(f"promotion_interval: {self.promotion_interval} does not "
                                     f"divide {name}.group_size {sc.group_size} (a partial sum "
                                     f"must not straddle two scales)")
        return self

    # ---- named recipes ------------------------------------------------------------------------
    @classmethod
    def named(cls, name: str, **overrides) -> "Recipe":
        """The named recipe ``name`` (one of :data:`RECIPE_NAMES`, e.g. "deepseek_v3") with
        some fields overridden; ConfigError for any other name."""
        if not isinstance(name, str) or name not in RECIPE_NAMES:
            raise ConfigError(f"unknown recipe {name!r}; named recipes: {', '.join(RECIPE_NAMES)}")
        return getattr(cls, name)(**overrides)

    @classmethod
    def deepseek_v3(cls, **overrides) -> "Recipe":
        """DeepSeek-V3 (arXiv 2412.19437 s3.3): E4M3 everywhere, activations per 1x128 tile,
        weights per 128x128 block, fp32 scales = amax/448, promotion every N_C = 128 elements,
        DeepGEMM's epilogue fma(sa*sb, p, acc). Output fp32 (DeepGEMM writes bf16: pass
        output="bf16")."""
        base = dict(a_scaling=Scaling(granularity="group"), b_scaling=Scaling(granularity="block"),
                    promotion_interval=128, epilogue="deepgemm")
        return cls(**(base | overrides))

    @classmethod
    def cublas_fast_accum(cls, **overrides) -> "Recipe":
        """cuBLASLt with CUBLASLT_MATMUL_DESC_FAST_ACCUM (PyTorch _scaled_mm(use_fast_accum=True)):
        per-tensor scales, the whole K in the tensor-core accumulator."""
        base = dict(a_scaling=Scaling(), b_scaling=Scaling(), promotion_interval=None,
                    epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def cublas_split_accum(cls, **overrides) -> "Recipe":
        """cuBLASLt without fast accumulation: per-tensor scales, promotion into FP32 every 4 k32
        wgmma = 128 elements (docs/hardware.md#promotion)."""
        base = dict(a_scaling=Scaling(), b_scaling=Scaling(), promotion_interval=128,
                    epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def te_delayed(cls, history: int = 1024, margin: int = 0, **overrides) -> "Recipe":
        """Transformer Engine delayed scaling (forward GEMM): per-tensor scales from the max of an
        amax history, E4M3 activations and weights, fast accumulation."""
        sc = Scaling(amax_history=history, margin=margin)
        base = dict(a_scaling=sc, b_scaling=sc, promotion_interval=None, epilogue="2d2d")
        return cls(**(base | overrides))

    @classmethod
    def mxfp8(cls, **overrides) -> "Recipe":
        """OCP MXFP8: one E8M0 scale per 32 K-elements of each operand; each 32-element partial
        is scaled and accumulated in FP32 (promotion every 32)."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_scaling=mx, b_scaling=mx, promotion_interval=32, epilogue="deepgemm")
        return cls(**(base | overrides))

    @classmethod
    def mxfp8_native(cls, **overrides) -> "Recipe":
        """OCP MXFP8 with the scales inside the MMA (Blackwell tcgen05 kind::mxf8f6f4): the
        whole K accumulates in the tensor core's fp32 accumulator; needs a block-scaled path
        (b200 'mxf8f6f4', or a proposal with block_scale = 'exponent')."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_scaling=mx, b_scaling=mx, promotion_interval=None, epilogue="deepgemm",
                    scales_in_mma=True)
        return cls(**(base | overrides))

    @classmethod
    def mxfp4(cls, **overrides) -> "Recipe":
        """OCP MXFP4: e2m1 elements, one ue8m0 scale per 32, scales inside the MMA (Blackwell
        kind::mxf4 / mxf4nvf4, k64), the whole K in the tensor-core accumulator."""
        mx = Scaling(granularity="mx", group_size=32, scale_dtype="ue8m0")
        base = dict(a_format="e2m1", b_format="e2m1", a_scaling=mx, b_scaling=mx,
                    promotion_interval=None, epilogue="deepgemm", scales_in_mma=True)
        return cls(**(base | overrides))

    @classmethod
    def nvfp4(cls, **overrides) -> "Recipe":
        """NVIDIA NVFP4: e2m1 elements, one ue4m3 scale per 16 inside the MMA (kind::mxf4nvf4)
        and one fp32 scale per tensor applied to the accumulator in the epilogue
        (fma(sa * sb, acc, 0) in fp32)."""
        nv = Scaling(granularity="nvfp4", group_size=16, scale_dtype="ue4m3")
        base = dict(a_format="e2m1", b_format="e2m1", a_scaling=nv, b_scaling=nv,
                    promotion_interval=None, epilogue="deepgemm", scales_in_mma=True)
        return cls(**(base | overrides))


# The recipes Recipe.named (and ``tcsim gemm --recipe``, ``tcsim.gemm(recipe="...")``) knows.
RECIPE_NAMES = ("deepseek_v3", "cublas_fast_accum", "cublas_split_accum", "te_delayed", "mxfp8",
                "mxfp8_native", "mxfp4", "nvfp4")
