"""The hardware datapath: one matrix-unit path as a block FMA (pydantic, frozen, unknown keys
rejected).

A :class:`Datapath` describes one matrix-unit path (one instruction, one input/output format
combination) as a *block FMA*: ``n`` exact products plus the incoming accumulator C are aligned to
the largest exponent E, each term is rounded onto the grid ``2^(E - f)``, the terms are summed
exactly, and the sum is rounded once to the output format. A K longer than ``n`` is a chain of
blocks, each block's result being the next block's C. See ``docs/hardware.md#block-fma``.

Which GPU serves which formats with which datapath is :mod:`tcsim.gpu_model`; the software
around the unit (scales, promotion, epilogue) is :mod:`tcsim.recipe`.
"""

from __future__ import annotations

from typing import Literal, Optional, get_args

from pydantic import Field, model_validator

from .errors import ConfigError
from .frozen_config import FrozenConfig, config_error_message
from .rounding import NAMES as ROUNDING_NAMES

TermRounding = Literal["truncate", "floor", "rne", "sr"]
OutputRounding = Literal["rz", "rne"]
AccRounding = Literal["rz", "rne", "sr"]
# each rounding name above maps to its code in tcsim.rounding.Rounding, the one table of modes
# that params and the kernels use
assert set(get_args(TermRounding) + get_args(AccRounding)) <= set(ROUNDING_NAMES)


class Datapath(FrozenConfig):
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


def make_datapath(**fields) -> Datapath:
    """Build a Datapath, raising :class:`ConfigError` naming the bad field(s)."""
    try:
        return Datapath(**fields)
    except Exception as exc:  # pydantic.ValidationError
        raise ConfigError(config_error_message(exc)) from None
