"""The CUDA staged kernels (tcsim.cuda.staged) against the CPU staged kernel, bit for bit.

Every preset path that tcsim.route sends to the staged kernel (STAGED_TILE or PAIRWISE), and a
few datapaths beside the presets for the modes no preset uses (floor / rne / sr terms,
normalised products, C after the product sum, SR output, the output-by-output pairwise tree, the
overflow policies, ...), on small random operands of the path's formats (zeros, subnormals,
large values, NaN/Inf where the case says so) whose K crosses block edges and whose outputs
cross a thread block. Operands are prepared exactly as tcsim.mma.run_datapath prepares them
(:func:`prepare`), then the CPU kernel and the CUDA kernel (numba's CUDA simulator by default:
tests/conftest.py) run on the same arrays and their float64 results are compared as uint64 bits
(NaNs compared by position: their payloads are not part of the model, to_accumulator makes every
NaN canonical).
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

pytest.importorskip("numba.cuda.extending")     # numba-cuda

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402

from helpers import describe_routes  # noqa: E402
from strategies import plain_problems, staged_problems  # noqa: E402  (the oracle tests')
from tcsim.datapath import Datapath  # noqa: E402
from tcsim.errors import ConfigError  # noqa: E402
from tcsim.formats.catalog import code_dtype, get_format  # noqa: E402
from tcsim.formats.conversion import decode, round_to_format  # noqa: E402
from tcsim.mma import operand_scales  # noqa: E402
from tcsim.params import kernel_params  # noqa: E402
from tcsim.presets import load_model, preset_names  # noqa: E402
from tcsim.route import Kernel, route  # noqa: E402

staged_cuda = pytest.importorskip("tcsim.cuda.staged")
mma_module = __import__("importlib").import_module("tcsim.mma")  # (tcsim.mma: the function)
from tcsim._kernels import staged as cpu_staged_module  # noqa: E402
from tcsim._kernels.staged import staged_kernel as cpu_staged_kernel  # noqa: E402

STAGED = (Kernel.STAGED_TILE, Kernel.PAIRWISE)


# ---- operands --------------------------------------------------------------------------------

def _values(rng, fmt: str, shape, special: bool) -> np.ndarray:
    """Values of ``fmt``: mostly moderate normals (sums that carry and cancel), with zeros of
    both signs, uniformly drawn codes (subnormals, the largest values) and, when ``special``,
    a few NaN / Inf."""
    f = get_format(fmt)
    size = int(np.prod(shape))
    x = rng.standard_normal(size) * np.exp2(rng.integers(-4, 5, size))
    x = round_to_format(x, fmt, rounding="rne", overflow="saturate")
    kind = rng.random(size)
    if fmt == "tf32":
        codes = rng.integers(0, 1 << 19, size, dtype=np.uint64) << np.uint64(13)
    else:
        codes = rng.integers(0, 1 << f.bits, size, dtype=np.uint64)
    coded = decode(codes.astype(code_dtype(fmt)), fmt)
    coded = np.where(np.isfinite(coded), coded, f.min_normal)
    x = np.where(kind < 0.2, coded, x)
    tiny = rng.integers(0, f.mantissa_bits + 1, size)            # subnormals of the format
    sub = np.ldexp(rng.integers(1, 1 << max(f.mantissa_bits, 1), size).astype(float),
                   f.emin - f.mantissa_bits) * np.ldexp(1.0, -tiny)
    sub = round_to_format(sub, fmt, rounding="rz", overflow="saturate")
    x = np.where((kind >= 0.2) & (kind < 0.27), sub * rng.choice([-1.0, 1.0], size), x)
    x = np.where((kind >= 0.27) & (kind < 0.37), rng.choice([0.0, -0.0], size), x)
    if special:
        x = np.where(kind > 0.97, rng.choice([np.inf, -np.inf, np.nan], size), x)
    if not f.has_negative_zero:
        x = np.where(x == 0, 0.0, x)
    return x.reshape(shape)


def _c_values(rng, acc: str, shape, special: bool) -> np.ndarray:
    """C in the accumulator format: normals, zeros, subnormals, large values (NaN/Inf)."""
    dt = np.float32 if acc == "fp32" else np.float16
    f = get_format(acc)
    size = int(np.prod(shape))
    c = (rng.standard_normal(size) * np.exp2(rng.integers(-6, 7, size))).astype(dt)
    kind = rng.random(size)
    c = np.where(kind < 0.15, dt(0) * rng.choice([1, -1], size), c)
    c = np.where((kind >= 0.15) & (kind < 0.22), dt(f.min_normal / 4), c)
    c = np.where((kind >= 0.22) & (kind < 0.27), dt(f.max_finite / 2), c)
    if special:
        c = np.where(kind > 0.95, rng.choice([np.inf, -np.inf, np.nan], size).astype(dt), c)
    return c.astype(np.float64).reshape(shape)


def _window(rng, fmt: str, shape, low: bool) -> np.ndarray:
    """Positive values of ``fmt`` in its three lowest (``low``) or highest normal binades."""
    f = get_format(fmt)
    e = (rng.integers(f.emin, f.emin + 3, shape) if low
         else rng.integers(f.emax - 2, f.emax + 1, shape))
    x = np.ldexp(1.0 + rng.random(shape), e)
    return round_to_format(x, fmt, rounding="rz", overflow="saturate")


def _structure(rng, av, bv, cv, a_fmt, b_fmt, acc, n, scaled):
    """Rows and columns that reach the rare rules (in place): A row 0 negative values in the
    lowest binades and B column 0 positive ones (products below every clamp, binary32 tree
    leaves that underflow to -0, with C = -0 there), B column 2 moderately small (binary32
    subnormal leaves: flush_nodes); A row 1 all -0 (every product -0 with C = -0: the IEEE zero
    sign; with scales only its first block, a zero group at a large scale, C small); A row 2
    and B column 1 in the highest binades (products beyond a binary16 accumulator)."""
    NB, M, K = av.shape
    N = bv.shape[2]
    av[:, 0, :] = -_window(rng, a_fmt, (NB, K), low=True)
    av[:, 1, :n if scaled else K] = -0.0
    av[:, 2, :] = _window(rng, a_fmt, (NB, K), low=False) * rng.choice([-1.0, 1.0], (NB, K))
    bv[:, :, 0] = _window(rng, b_fmt, (NB, K), low=True)
    bv[:, :, 1] = _window(rng, b_fmt, (NB, K), low=False) * rng.choice([-1.0, 1.0], (NB, K))
    small = np.ldexp(1.0 + rng.random((NB, K)), rng.integers(-12, -2, (NB, K)))
    bv[:, :, 2] = round_to_format(small, b_fmt, rounding="rz", overflow="saturate")
    dt = np.float32 if acc == "fp32" else np.float16
    cv[:, 1, 2:] = (rng.standard_normal((NB, N - 2)) * 2.0 ** -8).astype(dt)
    cv[:, 0, 0] = cv[:, 1, 0] = cv[:, 1, 1] = -0.0
    for x, fmt in ((av, a_fmt), (bv, b_fmt)):
        if not get_format(fmt).has_negative_zero:     # FNUZ: no -0
            x[x == 0] = 0.0


def _scales(rng, fmt: str, shape) -> np.ndarray:
    """Block scales of ``fmt`` (ue8m0: powers of two; ue4m3: e4m3 magnitudes, a few zeros)."""
    if fmt == "ue8m0":
        return np.exp2(rng.integers(-6, 7, shape)).astype(np.float64)
    v = np.abs(_values(rng, "e4m3", shape, False))
    return np.where(rng.random(shape) < 0.1, 0.0, v)


# ---- the preparation of tcsim.mma.run_datapath -----------------------------------------------

def prepare(av, bv, cv, dp, a_fmt, b_fmt, acc, scales=None):
    """(the arguments of the CPU staged_kernel, the route) as tcsim.mma.run_datapath builds
    them (av, bv, cv: batched float64 values; scales: None or operand_scales(...) batched):
    captured from its own calls, so the test never restates the preparation. The arguments are
    None when the route is not the staged kernel."""
    calls, routes = [], []

    def kernel_spy(*args):
        calls.append(args)
        return real_kernel(*args)

    def route_spy(*args):
        routes.append(real_route(*args))
        return routes[-1]

    real_kernel, real_route = cpu_staged_module.staged_kernel, mma_module.route
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cpu_staged_module, "staged_kernel", kernel_spy)
        m.setattr(mma_module, "route", route_spy)
        mma_module.run_datapath(av, bv, cv, dp, a_fmt, b_fmt, acc, scales)
    return (calls[0] if calls else None), routes[0]


# ---- cases -----------------------------------------------------------------------------------

def _preset_cases():
    """(id, datapath, a_fmt, b_fmt, acc, scale_format, scale_block) of every preset path whose
    route is the staged kernel (one per distinct datapath and formats)."""
    seen = set()
    cases = []
    for name in preset_names():
        for p in load_model(name).paths:
            dp = p.datapath()
            key0 = repr(dp.model_dump())
            for fmt in p.inputs:
                for special in (False, True):
                    try:
                        r = route(dp, fmt, fmt, p.output, 2 * (p.block_size or 8), special)
                    except Exception:       # a format no kernel models exactly for this path
                        continue
                    if r.kernel not in STAGED:
                        continue
                    sfmt = p.scale_formats[-1] if p.scale_formats else None
                    blk = p.scale_blocks[0] if p.scale_blocks else 0
                    key = (key0, fmt, p.output, special, sfmt)
                    if key in seen:
                        continue
                    seen.add(key)
                    tag = f"{name}-{p.name}-{fmt}-{p.output}" + ("-special" if special else "")
                    cases.append((tag, dp, fmt, fmt, p.output, sfmt, blk, special))
    return cases


def _dp(**fields):
    return Datapath(**fields)


# Datapaths beside the presets: the modes no shipped path uses.
EXTRA = [
    ("floor-terms-rne", _dp(block_size=8, fraction_bits=20, term_rounding="floor",
                            output_rounding="rne", min_exp_limit=-20), "fp16", "bf16", "fp32"),
    ("rne-terms-normalized", _dp(block_size=4, fraction_bits=12, term_rounding="rne",
                                 product_alignment="normalized", output_precision=14,
                                 zero_sign="ieee"), "bf16", "bf16", "fp32"),
    ("sr-terms-sr-out", _dp(block_size=8, fraction_bits=16, term_rounding="sr", sr_bits=9,
                            sr_seed=12345, output_rounding="sr"), "fp16", "fp16", "fp32"),
    ("c-after-fp16", _dp(block_size=8, fraction_bits=18, c_placement="after",
                         product_sum_precision=13, product_sum_rounding="rne",
                         output_rounding="rne", overflow="saturate",
                         zero_sign="ieee"), "e4m3", "e5m2", "fp16"),
    ("c-after-sr", _dp(block_size=4, fraction_bits=24, c_placement="after",
                       product_sum_precision=24, output_rounding="sr", sr_bits=13,
                       sr_seed=7), "tf32", "tf32", "fp32"),
    ("zero-exp-flush", _dp(block_size=16, fraction_bits=23, zero_operand_exponent=-14,
                           subnormal_inputs="flush", subnormal_outputs="flush",
                           overflow="inf"), "fp16", "fp16", "fp16"),
    ("asym-lanes-ovf-fp16", _dp(block_size=16, fraction_bits=24, c_placement="asymmetric",
                                join_sum_bits=31, join_c_bits=24, join_c_window=10, lanes=2,
                                output_rounding="rne", product_overflow="inf",
                                zero_operand_exponent=-126), "e4m3fnuz", "e5m2fnuz", "fp16"),
    ("lanes-c-after-floor", _dp(block_size=8, fraction_bits=20, lanes=2, c_placement="after",
                                product_sum_precision=20, term_rounding="floor",
                                output_rounding="rz"), "e4m3", "e4m3", "fp32"),
    ("pairwise-fp16-out", _dp(block_size=4, c_placement="after", product_sum="pairwise",
                              product_sum_precision=11, product_sum_rounding="rne",
                              output_rounding="rne"), "fp16", "fp16", "fp16"),
    ("pairwise-rz-flush", _dp(block_size=8, c_placement="after", product_sum="pairwise",
                              product_sum_precision=24, product_sum_rounding="rne",
                              output_rounding="rz", flush_nodes=True), "bf16", "bf16", "fp32"),
    ("pairwise32-n1", _dp(block_size=1, c_placement="after", product_sum="pairwise",
                          product_sum_precision=24, product_sum_rounding="rne",
                          output_rounding="rne", flush_nodes=True), "fp16", "fp16", "fp32"),
    ("pairwise32-n8", _dp(block_size=8, c_placement="after", product_sum="pairwise",
                          product_sum_precision=24, product_sum_rounding="rne",
                          output_rounding="rne"), "bf16", "fp16", "fp32"),
]


def _shape(n: int, scaled: bool, wide: bool):
    """(NB, M, N, K): K crosses block edges: three blocks, the last one short by one product
    (a binary32 tree pads it with a +0 product), or two whole blocks when the operands carry
    scales; NB * M * N > 128 crosses a thread block when ``wide``."""
    K = 2 * n if scaled else (3 * n - 1 if n > 1 else 3)
    return (2, 9, 8, K) if wide else (1, 5, 5, K)


def _run_case(dp, a_fmt, b_fmt, acc, sfmt, sblock, special, seed, wide, device=False):
    rng = np.random.default_rng(seed)
    n = dp.block_size
    NB, M, N, K = _shape(n, dp.block_scale != "none", wide)
    av = _values(rng, a_fmt, (NB, M, K), special)
    bv = _values(rng, b_fmt, (NB, K, N), special)
    cv = _c_values(rng, acc, (NB, M, N), special)
    scaled = dp.block_scale != "none"
    _structure(rng, av, bv, cv, a_fmt, b_fmt, acc, n, scaled)
    scales = None
    if scaled:
        a_s = _scales(rng, sfmt, (M, K // sblock))
        b_s = _scales(rng, sfmt, (K // sblock, N))
        a_s[1] = 64.0 if sfmt == "ue8m0" else 448.0      # A row 1: zero groups, large scale
        if special and sfmt == "ue8m0":
            a_s[0, -1] = np.nan
        got = operand_scales(dp, a_s[None].repeat(NB, 0), b_s[None].repeat(NB, 0), sfmt,
                             av.shape, bv.shape)
        scales = got
    args, kernel_route = prepare(av, bv, cv, dp, a_fmt, b_fmt, acc, scales)
    assert kernel_route.kernel in STAGED
    _compare(args, dp, kernel_route, device)
    return args[-1]


def _compare(args, dp, kernel_route, device=False):
    """Run the CPU staged kernel and the CUDA one on the prepared ``args`` (``kernel_route``:
    the route tcsim.mma took, named by a failure); same bits."""
    prm = args[-1]
    assert staged_cuda.unserved(prm) is None, staged_cuda.unserved(prm)
    want = cpu_staged_kernel(*args)
    if device:      # device arrays (cuda.to_device), as the GPU backend passes them
        cuda = staged_cuda.cuda
        args = tuple(cuda.to_device(x) for x in args[:-1]) + (prm,)
    got = staged_cuda.staged_kernel(*args)
    got = got.copy_to_host() if hasattr(got, "copy_to_host") else np.asarray(got)
    _assert_same_bits(got, want, dp, kernel_route)


def _assert_same_bits(got, want, dp, kernel_route):
    assert got.shape == want.shape and got.dtype == np.float64
    nan_g, nan_w = np.isnan(got), np.isnan(want)
    assert (nan_g == nan_w).all(), (f"NaN positions differ: {np.argwhere(nan_g != nan_w)[:5]}"
                                    f"\n{describe_routes([kernel_route])}\n{dp!r}")
    gb = np.where(nan_g, 0, got.view(np.uint64))
    wb = np.where(nan_w, 0, want.view(np.uint64))
    bad = np.argwhere(gb != wb)
    assert bad.size == 0, (f"{len(bad)} of {got.size} outputs differ; first at {tuple(bad[0])}: "
                           f"cuda {got[tuple(bad[0])]!r} vs cpu {want[tuple(bad[0])]!r}\n"
                           f"{describe_routes([kernel_route])}\n{dp!r}")


PRESET_CASES = _preset_cases()


# The NaN/Inf twin of every preset case runs with the slow tier (the suite's time budget); the
# special-value rules stay in the default tier through the extra modes and hypothesis below.
@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c[-1] else c
                                  for c in PRESET_CASES], ids=[c[0] for c in PRESET_CASES])
def test_preset_paths_equal_cpu_kernel(case):
    _, dp, a_fmt, b_fmt, acc, sfmt, sblock, special = case
    _run_case(dp, a_fmt, b_fmt, acc, sfmt, sblock, special, seed=zlib.crc32(case[0].encode()),
              wide=False)


@pytest.mark.parametrize("case", EXTRA, ids=[c[0] for c in EXTRA])
@pytest.mark.parametrize("special", [False, True])
def test_other_modes_equal_cpu_kernel(case, special):
    name, dp, a_fmt, b_fmt, acc = case
    _run_case(dp, a_fmt, b_fmt, acc, None, 0, special, seed=len(name) * 1000 + special,
              wide=False)


@pytest.mark.parametrize("model, fmt", [("mi300", "e4m3fnuz"), ("mi250", "bf16")])
def test_outputs_cross_thread_blocks(model, fmt):
    """NB * M * N = 144 outputs: two thread blocks of 128; a batch of two; device arrays."""
    dp = load_model(model).find_path(fmt, fmt, "fp32").datapath()
    _run_case(dp, fmt, fmt, "fp32", None, 0, True, seed=3, wide=True, device=True)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_wide_sweep(seed):
    """Every preset case and every other mode on the wide shape (two thread blocks, a batch of
    two), one more seed (a minute in the simulator)."""
    for _, dp, a_fmt, b_fmt, acc, sfmt, sblock, special in PRESET_CASES:
        _run_case(dp, a_fmt, b_fmt, acc, sfmt, sblock, special, seed=seed, wide=True)
    for _, dp, a_fmt, b_fmt, acc in EXTRA:
        for special in (False, True):
            _run_case(dp, a_fmt, b_fmt, acc, None, 0, special, seed=seed, wide=True)


def test_route_cases_cover_both_families():
    """The preset sweep reaches both routes of the staged kernel and every building block."""
    kinds = set()
    for _, dp, a_fmt, b_fmt, acc, _, _, special in PRESET_CASES:
        kinds.add(route(dp, a_fmt, b_fmt, acc, 64, special).kernel)
        kinds.update(k for k in ("group", "exponent") if dp.block_scale == k)
        kinds.update(k for k in ("asymmetric",) if dp.c_placement == k)
        kinds.update(k for k in ("pairwise",) if dp.product_sum == k)
        kinds.update(k for k in ("lanes",) if dp.lanes == 2)
    assert {Kernel.STAGED_TILE, "group", "exponent", "asymmetric", "pairwise",
            "lanes"} <= kinds
    extra_routes = {route(dp, a, b, acc, 64, False).kernel for _, dp, a, b, acc in EXTRA}
    assert Kernel.PAIRWISE in extra_routes


def test_unserved_names_the_mode():
    """A datapath beyond the scratch bounds is refused with its mode named, never run."""
    big_tree = Datapath(block_size=128, c_placement="after", product_sum="pairwise",
                        product_sum_precision=11, product_sum_rounding="rne",
                        output_rounding="rne")
    prm = kernel_params(big_tree, "fp16", 256, False, 0, "fp16", "fp16")
    assert not prm.tiled and "pairwise tree of block 128" in staged_cuda.unserved(prm)
    many_groups = Datapath(block_size=256, fraction_bits=20, block_scale="group", group_size=8)
    prm = kernel_params(many_groups, "fp32", 256, False, 32, "e2m1", "e2m1")
    assert "group terms: 32 groups" in staged_cuda.unserved(prm)
    exact = kernel_params(Datapath(block_size=4), "fp32", 8, False, 0, "fp16", "fp16")
    assert "exact alignment" in staged_cuda.unserved(exact)
    from tcsim.errors import DeviceError
    with pytest.raises(DeviceError, match="pairwise tree of block 128"):
        z = np.zeros((1, 1, 256))
        staged_cuda.staged_kernel(z, z, z, z, z, z, z, z, z, z, z, z, z, z,
                                  kernel_params(big_tree, "fp16", 256, False, 0, "fp16", "fp16"))



def test_both_kernels_unpack_the_stage_settings_in_order():
    """The CPU tile and the CUDA per-output function unpack stage_settings(prm) into locals
    named as StageSettings' fields, in their order (a swapped name would read another setting,
    maybe of the same type, without an error)."""
    import ast
    import inspect
    import textwrap

    def unpacked(fn) -> list:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn.py_func)))
        found = [node.targets[0] for node in ast.walk(tree) if isinstance(node, ast.Assign)
                 and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "id", None) == "stage_settings"]
        assert len(found) == 1, f"{fn.__name__}: one stage_settings(prm) unpacking"
        return [elt.id for elt in found[0].elts]

    fields = list(cpu_staged_module.StageSettings._fields)
    assert unpacked(cpu_staged_module._staged_tile) == fields
    assert unpacked(staged_cuda._fused_output) == fields

# ---- random datapaths: the oracle tests' strategies (every field, NaN/Inf, subnormals) -------

HYPO = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HYPO_SLOW = settings(HYPO, max_examples=300)


def _random_plain(problem):
    """The oracle tests' plain problems (block FMAs, every configuration field) that route to
    the staged kernel; a run in which none does fails (hypothesis: Unsatisfiable)."""
    dp, a_fmt, b_fmt, acc, a, b, c = problem
    av, bv, cv = a[None].astype(np.float64), b[None].astype(np.float64), c[None].astype(float)
    try:
        args, kernel_route = prepare(av, bv, cv, dp, a_fmt, b_fmt, acc)
    except ConfigError:
        assume(False)
    assume(kernel_route.kernel in STAGED)
    _compare(args, dp, kernel_route)


def _random_staged(problem):
    """The oracle tests' staged problems (group terms with scales, lanes, the asymmetric join,
    pairwise trees, stochastic terms), batched."""
    dp, fmt, a, b, c, kw = problem
    av, bv = a[None], b[None]
    cv = c.astype(np.float32).astype(np.float64)[None]
    try:
        scales = None
        if kw:
            scales = operand_scales(dp, kw["a_scale"][None], kw["b_scale"][None],
                                    kw["scale_format"], av.shape, bv.shape)
        args, kernel_route = prepare(av, bv, cv, dp, fmt, fmt, "fp32", scales)
    except ConfigError as exc:      # a group-term combination whose sums are not exact
        assert "not modelled exactly" in str(exc)
        return
    assert kernel_route.kernel in STAGED
    _compare(args, dp, kernel_route)


@HYPO
@given(plain_problems(exact=False))
def test_random_plain_datapaths_equal_cpu_kernel(problem):
    _random_plain(problem)


@HYPO
@given(staged_problems(max_m=3))
def test_random_staged_datapaths_equal_cpu_kernel(problem):
    _random_staged(problem)


@pytest.mark.slow
@HYPO_SLOW
@given(plain_problems())
def test_random_plain_datapaths_equal_cpu_kernel_slow(problem):
    _random_plain(problem)


@pytest.mark.slow
@HYPO_SLOW
@given(staged_problems(max_m=3))
def test_random_staged_datapaths_equal_cpu_kernel_slow(problem):
    _random_staged(problem)
