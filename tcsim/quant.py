"""FP8 quantisation of GEMM operands, bit-exact and documented.

``quantize(x, fmt, scaling, role)`` turns a float32/float64 operand into FP8 values and
*dequantisation* scales (``x ~= values * scale``), as the production FP8 GEMMs do
(DeepSeek-V3 / DeepGEMM, cuBLASLt per-tensor scaling, Transformer Engine delayed scaling, OCP MX).
The GEMM kernel and its oracle rely on the arithmetic below; every step is stated exactly.

Notation: RN32(v) is IEEE binary32 round-to-nearest-even of the exact value v (numpy float32
arithmetic and float64 -> float32 casts are RN32); ``max_finite`` is 448 for e4m3, 57344 for
e5m2; ``emax_elem`` is 8 for e4m3, 15 for e5m2.

Operands and groups
-------------------
role "a": x is (M, K), K is axis 1 (activations). role "b": x is (K, N), K is axis 0 (weights).
Below, a "row" is a row of A / a column of B (one output row / output column of the GEMM).
g = ``scaling.group_size``.

=============  ===========================  ================  ====================
granularity    one scale per                scales, role a     scales, role b
=============  ===========================  ================  ====================
"tensor"       the whole tensor             (1, 1)             (1, 1)
"channel"      row (all of K)               (M, 1)             (1, N)
"group"        1 x g along K                (M, K/g)           (K/g, N)
"block"        g rows x g along K           (ceil(M/g), K/g)   (K/g, ceil(N/g))
"mx"           1 x 32 along K (E8M0)        (M, K/32)          (K/32, N)
"nvfp4"        1 x 16 along K (e4m3)        (M, K/16)          (K/16, N)
=============  ===========================  ================  ====================

For "group", "block" and "mx", K must be a multiple of g: otherwise ShapeError, telling which
padding to apply (:func:`pad_k`); nothing is ever padded silently. For "block" the last block
along M (role a) / N (role b) may be partial. :meth:`Quantized.k_scales` expands block scales along
M/N, giving one scale per (row, K-group): (M, nK) for role a, (nK, N) for role b, nK = K // g
(nK = 1 for "tensor" and "channel").

Inputs
------
x must be a 2-D float32 or float64 array (other dtypes: FormatError; other ndim: ShapeError;
role other than "a"/"b": ShapeError). NaN or +-Inf anywhere in x: FormatError naming the first
bad index (``quantize: x[3, 5] = inf; NaN/Inf cannot be scaled``). A finite float64 entry whose
RN32 overflows float32 is rejected the same way (the kernels see x in float32).

Step 1: amax
------------
amax of a group = max |x| over its elements, exact (in float64; an empty group has amax 0).
``Quantized.amax`` is the amax of the whole tensor (float64, exact), to be appended to a delayed-
scaling history by the caller.

Delayed scaling (``scaling.amax_history = L``, tensor granularity only; Transformer Engine's
"max" amax algorithm): amax_used = max(amax, max of the last L-1 entries of ``amax_history``)
(``amax_history`` is a 1-D array of previous amaxes, oldest first, finite and >= 0; None or an
empty array = no history; L = 1 uses the current amax only). Without delayed scaling,
amax_used = amax, and passing ``amax_history`` is a ConfigError. (TE stores the quantisation
scale max_finite / amax * 2^-margin; we store its inverse, the dequantisation scale.) This rule
includes the current amax, so nothing saturates; Transformer Engine itself casts with the scale
of the *previous* steps' history only and multiplies by it: :mod:`tcsim.reciprocal_scaling`
("te_delayed", used by tcsim.torch's te_hybrid_delayed recipe).

Step 2: the scale of a group (from amax_used = A)
-------------------------------------------------
* A == 0 (an all-zero group): scale = 1.0, whatever the scale dtype (margin not applied).
* "fp32": s = RN32(RN32(A) / max_finite) (DeepSeek-V3's ``s = amax / 448.`` in fp32). If that
  underflows to 0 (A < 2^-150 * max_finite, i.e. x in fp32's subnormal range, or a float64 x
  below fp32's range) s = 2^-149, the smallest positive fp32. s may be an fp32 subnormal.
* "pow2": s = 2^e, the smallest power of two with 2^e * max_finite >= A (an exact comparison,
  so the amax element never exceeds max_finite after scaling: no saturation), but at least 2^-149.
* "ue8m0" (tensor/channel/group/block): as "pow2", then clamped to E8M0's range [2^-127, 2^127].
* mx (OCP Microscaling Formats v1.0, section 6.3): shared_exp = floor(log2(A)) - emax_elem
  (floor(log2) exact, from the float64 exponent of A); s = 2^shared_exp clamped to
  [2^-127, 2^127]. Here the amax element can land above max_finite (e.g. A = 1.9375 * 2^k in
  e4m3 scales to 496): such elements saturate to +-max_finite (the spec's clamp).
* nvfp4 (NVIDIA NVFP4, e2m1 elements; scales used inside the MMA only): one fp32 scale per
  tensor, sg = RN32(RN32(amax_tensor) / 2688) (2688 = 448 * 6: the e4m3 scale range times the
  e2m1 range; sg = 1 for an all-zero tensor, 2^-149 if it underflows), and per 16 elements a
  ue4m3 scale s = e4m3 RNE with saturation of RN32(RN32(amax / 6) / sg) (an all-zero group, or
  one whose s rounds to 0, gets s = 1: nothing to scale). The elements are quantised with the
  fp32 divisor RN32(s * sg). ``Quantized.scales`` holds the ue4m3 s, ``global_scale`` sg;
  k_scales() and dequantize() use s * sg (exact in float64).
* margin (``scaling.margin``, any granularity, TE's delayed-scaling margin): the scale from the
  rules above is multiplied by 2^margin, exactly (for "ue8m0"/mx the exponent is added before
  the E8M0 clamp). A scale beyond fp32's range after the margin is a FormatError.
Every scale is an fp32 value (stored in float64); "pow2"/"ue8m0"/mx scales are powers of two.

Step 3: the codes
-----------------
q = RN32(RN32(x) / s) (float32 division, as the reference kernels do ``x.float() / s``), then
values = RNE of q to fmt with saturation (the same as ``formats.round_to_format(q, fmt,
rounding="rne", overflow="saturate")``, computed by a jitted one-pass kernel): FP8
round-to-nearest-even with saturation to +-max_finite. This equals ml_dtypes' cast of q after
clipping q to [-max_finite, max_finite] (ml_dtypes itself overflows to NaN/Inf). The fp32 scale
makes this a double rounding (fp32 division, then FP8 cast), exactly as on the GPU. For a
power-of-two scale the division is exact unless the quotient falls in fp32's subnormal range,
where the FP8 cast gives +-0 either way: only the final cast rounds. Signed zeros are kept
(-0.0 in x gives a -0.0 value).

Memory
------
No float64 copy of x is made: the amaxes are taken a block of rows at a time in x's own dtype,
the codes are computed from x directly, and the only float64 array of x's size is ``values``.
:func:`quantize_plan` does steps 1-2 only and quantises blocks of x on request
(:class:`QuantPlan`): tcsim.gemm uses it to quantise one promotion chunk at a time.

Dequantisation
--------------
``Quantized.dequantize()`` = values * (the scale of each element's group), in float64: exact,
since an FP8 value has at most 4 significant bits and a scale at most 24.

Error bound (a consequence, tested): for an element whose scaled value q is in FP8's normal
range and not saturated, |dequantize - x| <= s * (ulp_fp8(q) / 2 + ulp_fp32(x/s) / 2)
(the fp32 term is zero for power-of-two scales), i.e. a relative error <= 2^-4 (e4m3) or 2^-3
(e5m2) up to the tiny fp32 term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .device import is_cuda_array
from .errors import ConfigError, FormatError, ShapeError
from .formats.catalog import get_format
from .formats.conversion import index_str
from .recipe import Scaling

__all__ = ["Quantized", "quantize", "quantize_plan", "QuantPlan", "pad_k", "FP8_FORMATS",
           "EMAX_ELEM"]

FP8_FORMATS = ("e4m3", "e5m2")
#: element formats quantize() produces: FP8, and FP4 for the MX / NVFP4 scalings
ELEMENT_FORMATS = FP8_FORMATS + ("e2m1",)
#: emax of the element format, as the OCP MX spec uses it (e4m3: 8, e5m2: 15, e2m1: 2)
EMAX_ELEM = {"e4m3": 8, "e5m2": 15, "e2m1": 2}
NVFP4_GLOBAL_DIVISOR = 448.0 * 6.0
_ROLES = ("a", "b")
_FP32_MIN_EXP = -149  # 2^-149: smallest positive float32 (subnormal)
_FP32_MAX = float(np.finfo(np.float32).max)
_E8M0_MIN_EXP, _E8M0_MAX_EXP = -127, 127
# |x| from here on rounds to +-Inf in float32 (halfway to 2^128 rounds up, to even)
_RN32_OVERFLOW = 2.0 ** 128 - 2.0 ** 103
_BLOCK_ELEMENTS = 1 << 20    # elements per block of the blockwise passes over x


@dataclass(frozen=True, eq=False)
class Quantized:
    """A quantised GEMM operand (see the module docstring for the exact arithmetic).

    values: float64, same shape as the input, every entry exactly representable in ``fmt``.
    scales: float64 dequantisation scales (fp32 values, powers of two for pow2/ue8m0/mx), in the
        compact shape of the granularity (module docstring table).
    fmt: "e4m3" or "e5m2". role: "a" (x is (M, K)) or "b" (w is (K, N)).
    scaling: the :class:`tcsim.recipe.Scaling` used.
    amax: max |x| over the whole (current) tensor, exact; append it to a delayed-scaling history.
    The arrays are writable (numba-jitted code rejects read-only arrays); do not modify them.
    """

    values: np.ndarray
    scales: np.ndarray
    fmt: str
    role: str
    scaling: Scaling
    amax: float
    global_scale: float = 1.0     # NVFP4: the per-tensor fp32 scale (1 for the others)

    def block_scales(self) -> np.ndarray:
        """The scales an MMA instruction takes, one per (row, K-group) as k_scales(): for NVFP4
        the ue4m3 block scales without the per-tensor scale; for the others k_scales()."""
        if self.scaling.granularity != "nvfp4":
            return self.k_scales()
        return np.array(self.scales, dtype=np.float64)

    @property
    def k(self) -> int:
        """K, the reduction extent."""
        return int(self.values.shape[1 if self.role == "a" else 0])

    def k_scales(self) -> np.ndarray:
        """One scale per (output row, K-group): (M, nK) for role a, (nK, N) for role b.

        nK = K // group_size for group/block/mx, 1 for tensor and channel. Tensor and channel
        scales are broadcast, block scales repeated over the g rows of A / columns of B they
        cover (the last block may be partial). A fresh float64 array.
        """
        rows = self.values.shape[0 if self.role == "a" else 1]
        c = _canonical(self.scales, self.role) * self.global_scale  # (R', nK), exact
        if self.scaling.granularity == "block":
            c = np.repeat(c, self.scaling.group_size, axis=0)[:rows]
        else:
            c = np.broadcast_to(c, (rows, c.shape[1]))
        out = np.array(c, dtype=np.float64)
        return out if self.role == "a" else np.ascontiguousarray(out.T)

    def element_scales(self) -> np.ndarray:
        """The scale of every element, same shape as ``values`` (float64)."""
        ks = _canonical(self.k_scales(), self.role)  # (R, nK)
        if self.scaling.granularity in ("group", "block", "mx", "nvfp4"):
            full = np.repeat(ks, self.scaling.group_size, axis=1)
        else:
            full = np.broadcast_to(ks, (ks.shape[0], self.k))
        return np.ascontiguousarray(_canonical(full, self.role), dtype=np.float64)

    def dequantize(self) -> np.ndarray:
        """values * (each element's scale), float64; exact (<= 4 x 24 significant bits)."""
        return self.values * self.element_scales()


def _canonical(a: np.ndarray, role: str) -> np.ndarray:
    """Role a arrays as they are, role b arrays transposed: rows = output rows/cols, axis 1 = K."""
    return a if role == "a" else a.T


def _check_role(role) -> str:
    if role not in _ROLES:
        raise ShapeError(f"role must be 'a' (x is (M, K), K on axis 1) or 'b' (w is (K, N), "
                         f"K on axis 0), got {role!r}")
    return role


def _check_2d(a: np.ndarray, what: str) -> None:
    if a.ndim != 2:
        raise ShapeError(f"{what}: x must be 2-D ((M, K) for role 'a', (K, N) for role 'b'), "
                         f"got shape {a.shape}")


def pad_k(x, multiple: int, role: str) -> np.ndarray:
    """Zero-pad the K axis of ``x`` (axis 1 for role "a", axis 0 for role "b") up to a multiple.

    Returns a new array of x's dtype; a copy even if no padding is needed. Zeros along K add
    nothing to a GEMM (both operands must be padded the same way) and do not change any amax.
    """
    _check_role(role)
    a = np.asarray(x)
    _check_2d(a, "pad_k")
    if isinstance(multiple, (bool, np.bool_)) or not isinstance(multiple, (int, np.integer)) \
            or multiple < 1:
        raise ShapeError(f"pad_k: multiple must be a positive integer, got {multiple!r}")
    axis = 1 if role == "a" else 0
    k = a.shape[axis]
    extra = (-k) % int(multiple)
    widths = [(0, 0), (0, 0)]
    widths[axis] = (0, extra)
    return np.pad(a, widths, mode="constant", constant_values=0)


def _check_x(x) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        raise FormatError(f"quantize: x must be float32 or float64, got dtype {a.dtype}")
    _check_2d(a, "quantize")
    return np.ascontiguousarray(a)      # the kernels read x in its own dtype, C order


def _first_bad(a: np.ndarray, bad) -> int:
    """Flat index of the first element of a where bad(block) holds, scanning row blocks (no
    whole-array temporary)."""
    rows = max(1, _BLOCK_ELEMENTS // max(1, a.shape[1]))
    for r0 in range(0, a.shape[0], rows):
        hit = np.flatnonzero(bad(a[r0:r0 + rows]).reshape(-1))
        if hit.size:
            return r0 * a.shape[1] + int(hit[0])
    return -1


def _check_finite(a: np.ndarray, amax_tensor: float) -> None:
    """FormatError naming the first NaN/Inf of x (or float64 entry overflowing float32), given
    the max of |x| bits (NaN bits sort above Inf's, so a NaN/Inf anywhere makes it non-finite)."""
    if _finite_ok(a.dtype, amax_tensor):
        return
    i = _first_bad(a, lambda blk: ~np.isfinite(blk))
    if i >= 0:
        raise FormatError(f"quantize: x{index_str(a.shape, i)} = {a.reshape(-1)[i]}; "
                          f"NaN/Inf cannot be scaled")
    i = _first_bad(a, lambda blk: np.abs(blk) >= _RN32_OVERFLOW)
    raise FormatError(f"quantize: x{index_str(a.shape, i)} = {a.reshape(-1)[i]} "
                      f"overflows float32; it cannot be scaled")


def _fp8_format(fmt, scaling: Scaling) -> str:
    f = get_format(fmt)
    if f.name not in ELEMENT_FORMATS:
        raise FormatError(f"quantize: fmt must be one of {', '.join(ELEMENT_FORMATS)}, "
                          f"got {fmt!r}")
    if (f.name == "e2m1") != (scaling.granularity == "nvfp4") and \
            not (f.name == "e2m1" and scaling.granularity == "mx"):
        raise FormatError(f"quantize: {f.name} elements with {scaling.granularity!r} scaling; "
                          f"e2m1 takes mx or nvfp4 scaling, nvfp4 takes e2m1")
    return f.name


def _group_amax(a: np.ndarray, g0: int, g1: int) -> np.ndarray:
    """max |x| (float64, exact; NaN if a group holds a NaN) over each g0 x g1 block of ``a`` in
    its own layout (a partial last block covers what is left), one block of rows at a time:
    |x| and max are exact in x's own dtype, and the only temporaries are a block's."""
    r, c = a.shape
    out = np.zeros((-(-r // g0), -(-c // g1)))
    rows = max(1, _BLOCK_ELEMENTS // max(c, 1))
    whole = g0 <= rows                  # blocks of whole row groups, else parts of one group
    step = rows // g0 * g0 if whole else rows
    pad_c = -c % g1
    r0 = 0
    while r0 < r:
        r1 = min(r0 + step, r) if whole else min(r0 + step, r, (r0 // g0 + 1) * g0)
        blk = np.abs(a[r0:r1])
        pad_r = -(r1 - r0) % g0 if whole else 0
        if pad_r or pad_c:              # |x| >= 0: zeros leave every max as it is
            blk = np.pad(blk, ((0, pad_r), (0, pad_c)))
        nc = blk.shape[1] // g1
        if whole:
            nr = blk.shape[0] // g0
            out[r0 // g0:r0 // g0 + nr] = blk.reshape(nr, g0, nc, g1).max(axis=(1, 3))
        else:
            gi = r0 // g0
            out[gi] = np.maximum(out[gi], blk.reshape(-1, nc, g1).max(axis=(0, 2)))
        r0 = r1
    return out


def _pow2_exponent(amax: np.ndarray, max_finite: float) -> np.ndarray:
    """Smallest integer e with 2^e * max_finite >= amax (amax > 0), by exact comparisons."""
    _, ea = np.frexp(amax)          # amax in [2^(ea-1), 2^ea)
    _, ef = np.frexp(max_finite)    # max_finite in [2^(ef-1), 2^ef)
    e = (ea - ef - 1).astype(np.int64)  # 2^(e-1) * max_finite < 2^(ea-2) < amax: a lower bound
    for _ in range(2):              # amax / max_finite < 2^(ea-ef+1): at most two steps up
        e += np.ldexp(max_finite, e) < amax
    return e


def _scales(amax: np.ndarray, scaling: Scaling, fmt: str) -> np.ndarray:
    """Dequantisation scales (float64 holding fp32 values) for amax_used values ``amax``."""
    f = get_format(fmt)
    maxf = f.max_finite
    zero = amax == 0
    safe = np.where(zero, 1.0, amax)
    margin = int(scaling.margin)
    if scaling.granularity == "mx":
        _, ea = np.frexp(safe)
        e = ea.astype(np.int64) - 1 - EMAX_ELEM[fmt] + margin
        s = np.ldexp(1.0, np.clip(e, _E8M0_MIN_EXP, _E8M0_MAX_EXP))
    elif scaling.scale_dtype == "fp32":
        with np.errstate(under="ignore"):
            s32 = safe.astype(np.float32) / np.float32(maxf)
        s = s32.astype(np.float64)
        s[s == 0] = 2.0 ** _FP32_MIN_EXP
        s = np.ldexp(s, margin)
    else:
        e = np.maximum(_pow2_exponent(safe, maxf), _FP32_MIN_EXP) + margin
        if scaling.scale_dtype == "ue8m0":
            e = np.clip(e, _E8M0_MIN_EXP, _E8M0_MAX_EXP)
        s = np.ldexp(1.0, e)
    s = np.where(zero, 1.0, s)
    if (s > _FP32_MAX).any():
        raise FormatError(f"quantize: a scale exceeds the float32 range after the margin "
                          f"2^{margin} (amax {float(amax.max())}); lower scaling.margin")
    return s


def _history_max(amax_history, scaling: Scaling) -> float:
    if amax_history is None:
        return 0.0
    if scaling.amax_history is None:
        raise ConfigError("quantize: amax_history given, but scaling.amax_history is None "
                          "(delayed scaling is off)")
    h = np.asarray(amax_history)
    if h.ndim != 1:
        raise ShapeError(f"quantize: amax_history must be 1-D (oldest first), got shape {h.shape}")
    if h.dtype.kind not in "fiu":
        raise FormatError(f"quantize: amax_history must be numeric, got dtype {h.dtype}")
    h = h.astype(np.float64)
    bad = ~(np.isfinite(h) & (h >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FormatError(f"quantize: amax_history[{i}] = {h[i]}; amaxes are finite and >= 0")
    n = scaling.amax_history - 1
    if n <= 0 or h.size == 0:
        return 0.0
    return float(h[-n:].max())


def quantize(x, fmt: str, scaling: Scaling, role: str, amax_history=None) -> Quantized:
    """Quantise a GEMM operand to FP8 with dequantisation scales (module docstring: arithmetic).

    x: 2-D float32/float64, (M, K) for role "a", (K, N) for role "b".
    fmt: "e4m3" or "e5m2". scaling: a :class:`tcsim.recipe.Scaling`.
    amax_history: delayed scaling only: 1-D array of previous amaxes (oldest first) or None.
    Raises FormatError (dtype, NaN/Inf, format, bad history values), ShapeError (ndim, role,
    K not a multiple of the K-group, history shape), ConfigError (scaling not a Scaling, history
    without delayed scaling).
    """
    plan, scales_only = quantize_plan(x, fmt, scaling, role, amax_history)
    return plan.quantized(scales_only)


def quantize_plan(x, fmt: str, scaling: Scaling, role: str, amax_history=None):
    """The first half of :func:`quantize`: the checks, amaxes and scales, without the values.

    Returns (plan, scales_only): ``scales_only`` is the Quantized operand whose ``values`` is a
    zero-memory placeholder of the right shape (read-only zeros: only its shape, the scales and
    the other fields are meaningful); ``plan.fill`` quantises any block of x and
    ``plan.quantized(scales_only)`` gives the full :class:`Quantized`. tcsim.gemm quantises one
    promotion chunk at a time this way, so the whole operand never exists in float64.
    """
    if not isinstance(scaling, Scaling):
        raise ConfigError(f"quantize: scaling must be a tcsim.Scaling, "
                          f"got {type(scaling).__name__}")
    _check_role(role)
    on_device = is_cuda_array(x)
    a = _check_x_device(x) if on_device else _check_x(x)
    fmt = _fp8_format(fmt, scaling)
    gran = scaling.granularity
    g = int(scaling.group_size)
    shape = tuple(a.shape)
    r, k = shape if role == "a" else shape[::-1]
    if gran in ("group", "block", "mx", "nvfp4") and k % g:
        what = "the mx block size" if gran in ("mx", "nvfp4") else \
            "the block size" if gran == "block" else "the group size"
        padded = k + (-k) % g
        raise ShapeError(f"K = {k} is not a multiple of {what} {g}: pad K to {padded} with "
                         f"zeros, e.g. tcsim.quant.pad_k(x, {g}, role='{role}')")

    g0, g1 = _groups(gran, g, r, k, role)
    if on_device:     # the amaxes (one per group: small) come back; x stays on the device
        from .cuda import quantize as device_quantize
        amax_x = device_quantize.group_amax(a, g0, g1).copy_to_host()
    else:
        amax_x = _group_amax(a, g0, g1)                 # compact amax in x's layout
    amax_tensor = float(amax_x.max(initial=0.0))
    if not on_device:
        _check_finite(a, amax_tensor)
    elif not _finite_ok(a.dtype, amax_tensor):
        _check_finite(a.copy_to_host(), amax_tensor)    # a host copy only to name the culprit
    group_amax = _canonical(amax_x, role)
    if scaling.amax_history is not None or amax_history is not None:
        hmax = _history_max(amax_history, scaling)
        group_amax = np.maximum(group_amax, hmax)
    global_scale = 1.0
    if gran == "nvfp4":
        scales_c, global_scale, divisors_c = _nvfp4_scales(group_amax, amax_tensor)
    else:
        scales_c = _scales(group_amax, scaling, fmt)
        divisors_c = scales_c

    sc = np.ascontiguousarray(_canonical(scales_c, role), dtype=np.float64)
    div = np.ascontiguousarray(_canonical(divisors_c, role), dtype=np.float32)
    assert np.array_equal(div.astype(np.float64), _canonical(divisors_c, role)), \
        "scales must be fp32 values"
    if on_device:
        from .cuda import arrays
        plan = DeviceQuantPlan(a, arrays.to_device(div), g0, g1, get_format(fmt))
    else:
        plan = QuantPlan(a, div, g0, g1, get_format(fmt))
    placeholder = np.broadcast_to(np.float64(0.0), shape)
    return plan, Quantized(values=placeholder, scales=sc, fmt=fmt, role=role, scaling=scaling,
                           amax=amax_tensor, global_scale=global_scale)


def _finite_ok(dtype, amax_tensor: float) -> bool:
    """True when the largest |x| shows no NaN/Inf (and no float64 value beyond float32)."""
    return bool(np.isfinite(amax_tensor)) and not (np.dtype(dtype) == np.float64
                                                   and amax_tensor >= _RN32_OVERFLOW)


def _check_x_device(x):
    """x as a numba device array (CuPy / PyTorch CUDA / numba: no copy), float32 or float64,
    2-D."""
    from .cuda import arrays
    a = arrays.to_device(x)
    if np.dtype(a.dtype) not in (np.float32, np.float64):
        raise FormatError(f"quantize: x must be float32 or float64, got dtype {a.dtype}")
    if len(tuple(a.shape)) != 2:
        raise ShapeError(f"quantize: x must be 2-D ((M, K) for role 'a', (K, N) for role 'b'), "
                         f"got shape {tuple(a.shape)}")
    return a


def _groups(gran: str, g: int, r: int, k: int, role: str) -> tuple:
    """(g0, g1): the rows and columns of x (in x's own layout) that share one scale."""
    row_group = {"tensor": max(r, 1), "channel": 1, "block": g}.get(gran, 1)  # along M / N
    k_group = g if gran in ("group", "block", "mx", "nvfp4") else max(k, 1)
    return (row_group, k_group) if role == "a" else (k_group, row_group)


@dataclass(frozen=True, eq=False)
class QuantPlan:
    """x and its fp32 divisors, ready to quantise any block of x (tcsim.gemm quantises one
    promotion chunk at a time, so the whole FP8 operand never exists in float64)."""

    x: np.ndarray          # x in its own layout and dtype, C-contiguous
    div: np.ndarray        # float32 divisors, compact, x's layout
    g0: int                # rows of x that share one scale
    g1: int                # columns of x that share one scale
    f: object              # the element format (tcsim.formats)

    def fill(self, r0: int, c0: int, out: np.ndarray, along_k: bool = False) -> np.ndarray:
        """out (float64) <- the quantised values of blocks of x starting at (r0, c0): out 2-D
        (R, C) is x[r0:r0 + R, c0:c0 + C]; out 3-D (B, R, C) is B such blocks side by side
        along x's columns (``along_k``, role a's K) or along its rows."""
        from ._kernels.quantize import scale_and_round  # numba loads on first use
        blocks = out if out.ndim == 3 else out.reshape((1,) + out.shape)
        scale_and_round(self.x, self.div, r0, c0, self.g0, self.g1, self.f.precision,
                        self.f.emin, self.f.max_finite, int(along_k), blocks)
        return out

    def quantized(self, scales_only: "Quantized") -> "Quantized":
        """The full Quantized operand: ``scales_only`` with the values of the whole of x."""
        return dataclasses.replace(scales_only, values=self.fill(0, 0, np.empty(self.x.shape)))


@dataclass(frozen=True, eq=False)
class DeviceQuantPlan:
    """QuantPlan of an operand on the GPU (tcsim.cuda): x and its fp32 divisors are device
    arrays, and ``fill`` writes device blocks with tcsim.cuda.quantize.scale_and_round (the CPU
    kernel's per-element rounding, the same bits)."""

    x: object              # numba device array, x's own layout and dtype
    div: object            # float32 divisors (device), compact, x's layout
    g0: int
    g1: int
    f: object

    def fill(self, r0: int, c0: int, out, along_k: bool = False):
        """QuantPlan.fill on device arrays: out a float64 device array (R, C) or (B, R, C)."""
        from .cuda import quantize as device_quantize
        blocks = out if len(tuple(out.shape)) == 3 else out.reshape((1,) + tuple(out.shape))
        device_quantize.scale_and_round(self.x, self.div, r0, c0, self.g0, self.g1,
                                        self.f.precision, self.f.emin, self.f.max_finite,
                                        int(along_k), blocks)
        return out

    def quantized(self, scales_only: "Quantized") -> "Quantized":
        """The full Quantized operand, its values copied to the host (numpy, as Quantized
        holds them)."""
        from .cuda import arrays
        values = self.fill(0, 0, arrays.empty(tuple(self.x.shape), np.float64))
        return dataclasses.replace(scales_only, values=values.copy_to_host())


def _nvfp4_scales(group_amax: np.ndarray, amax_tensor: float):
    """NVFP4 (module docstring): ue4m3 block scales, the fp32 tensor scale, and the fp32
    divisors RN32(s * sg) the elements are quantised with."""
    from .formats.conversion import round_to_format
    with np.errstate(under="ignore"):
        sg = np.float32(amax_tensor) / np.float32(NVFP4_GLOBAL_DIVISOR)
    sg = float(sg) if amax_tensor > 0 else 1.0
    if sg == 0.0:
        sg = 2.0 ** _FP32_MIN_EXP
    with np.errstate(under="ignore", over="ignore"):
        q = (group_amax.astype(np.float32) / np.float32(6.0)) / np.float32(sg)
    s = round_to_format(q.astype(np.float64), "e4m3", rounding="rne", overflow="saturate")
    s = np.where(s == 0.0, 1.0, s)
    div = (s.astype(np.float32) * np.float32(sg)).astype(np.float64)
    div = np.where(div == 0.0, 2.0 ** _FP32_MIN_EXP, div)
    return s, sg, div
