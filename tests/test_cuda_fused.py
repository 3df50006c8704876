"""The fused float32 tile on CUDA (tcsim.cuda.fused) bit for bit against the CPU kernel
(tcsim._kernels.fused) and, end to end, against the exact oracle (tcsim.reference).

The kernels run in numba's CUDA simulator here (tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1),
or on a GPU where NUMBA_ENABLE_CUDASIM=0. The CPU kernel's arguments are captured from
tcsim.mma.mma itself (fused.run wrapped), so the CUDA kernel gets exactly the operands and the
KernelParams that run_datapath builds; every comparison is of uint32 / uint16 bit patterns.
Shapes cross the CUDA tile's edges (TILE_M x TILE_N outputs, K_CHUNK) and the block size, and
stay small: the simulator runs each thread as Python.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

pytest.importorskip("numba.cuda.extending")

import tcsim.cuda  # noqa: E402

if not tcsim.cuda.available():
    pytest.skip("no CUDA GPU and no simulator", allow_module_level=True)

from helpers import bits  # noqa: E402
from tcsim import load_model, reference  # noqa: E402
from tcsim._kernels import fused as cpu_fused  # noqa: E402
from tcsim.cuda import fused as gpu_fused  # noqa: E402
from tcsim.cuda import prep as gpu_prep  # noqa: E402
from tcsim.datapath import Datapath  # noqa: E402
from tcsim.formats.catalog import get_format  # noqa: E402
from tcsim.formats.conversion import round_to_format  # noqa: E402
from tcsim.mma import mma  # noqa: E402
from tcsim.presets import preset_names  # noqa: E402
from tcsim.route import Kernel, route  # noqa: E402

cuda = tcsim.cuda.cuda()


def _assert_same(got, want, what=""):
    assert got.dtype == want.dtype and got.shape == want.shape
    bad = np.flatnonzero(bits(got) != bits(want))
    assert bad.size == 0, (
        f"{what}: {bad.size} of {got.size} outputs differ; first at index "
        f"{np.unravel_index(bad[0], got.shape)}: {got.flat[bad[0]]!r} "
        f"({bits(got).flat[bad[0]]:#x}) vs {want.flat[bad[0]]!r} ({bits(want).flat[bad[0]]:#x})")


def _fused_cases():
    """One case per distinct (datapath, format, accumulator) of models/ that tcsim.route sends to
    the fused kernel, with the ids of every preset path that shares it."""
    cases = {}
    for name in preset_names():
        for path in load_model(name).paths:
            for fmt in path.inputs:
                dp = path.datapath()
                try:
                    kernel = route(dp, fmt, fmt, path.output, 4 * (dp.block_size or 1)).kernel
                except Exception:       # a path no kernel models at this depth
                    continue
                if kernel is Kernel.FUSED:
                    key = (repr(dp), fmt, path.output)
                    ids = cases.setdefault(key, (name, path.name, fmt, path.output, []))[4]
                    ids.append(f"{name}-{path.name}-{fmt}-{path.output}")
    return [pytest.param(*case[:4], id="+".join(case[4])) for case in cases.values()]


FUSED_CASES = _fused_cases()


def test_fused_cases_cover_the_fp8_paths():
    """Hopper (h100, h200) and Ada (ada, l40s) FP8 paths, fp32 and fp16 output."""
    ids = "+".join(p.id for p in FUSED_CASES)
    for want in ("h100-wgmma-e4m3-fp32", "h200-wgmma-e5m2-fp16", "ada-mma.sync-e4m3-fp32",
                 "l40s-mma.sync-e5m2-fp16", "h100-wgmma-e5m2-fp32", "ada-mma.sync-e4m3-fp16"):
        assert want in ids


def _operand(rng, fmt, shape):
    """Values of ``fmt``: normals over a wide range, zeros of both signs, subnormals and the
    largest finite values of either sign."""
    f = get_format(fmt)
    x = rng.standard_normal(shape) * 2.0 ** rng.integers(-4, 5, shape)
    pick = rng.random(shape)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    x = np.where(pick < 0.06, 0.0, x)
    x = np.where((pick >= 0.06) & (pick < 0.1), -0.0, x)
    x = np.where((pick >= 0.1) & (pick < 0.18), sign * f.min_normal * rng.random(shape), x)
    x = np.where((pick >= 0.18) & (pick < 0.23), sign * f.max_finite, x)
    x = round_to_format(x, fmt, rounding="rz", overflow="saturate")
    if not f.has_negative_zero:
        x = np.where(x == 0, 0.0, x)
    return x


def _accumulator(rng, acc, shape):
    """C values of the accumulator: normals over the range, subnormals, values near overflow,
    zeros of both signs."""
    f = get_format(acc)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    x = sign * np.exp2(rng.uniform(f.emin, f.emax, shape))
    pick = rng.random(shape)
    x = np.where(pick < 0.1, 0.0, x)
    x = np.where((pick >= 0.1) & (pick < 0.15), -0.0, x)
    x = np.where((pick >= 0.15) & (pick < 0.3), sign * f.min_normal * rng.random(shape), x)
    x = np.where((pick >= 0.3) & (pick < 0.45), f.max_finite * (1.0 - 2.0 ** -rng.integers(
        1, 12, shape)), x)
    x = np.where((pick >= 0.45) & (pick < 0.55), rng.standard_normal(shape), x)
    dtype = np.float16 if acc == "fp16" else np.float32
    return round_to_format(x, acc, rounding="rz", overflow="saturate").astype(dtype)


def _smallest_subnormal(fmt):
    f = get_format(fmt)
    return np.ldexp(1.0, f.emin - f.mantissa_bits)


def _captured_cpu_run(a, b, c, dp, a_fmt, b_fmt, acc):
    """tcsim.mma.mma's call of the CPU fused kernel: (its arguments, its float32 result)."""
    calls = []
    real = cpu_fused.run

    def spy(*args):
        d = real(*args)
        calls.append((args, d))
        return d

    with pytest.MonkeyPatch.context() as m:
        m.setattr(cpu_fused, "run", spy)
        mma(a, b, c, model=dp, a_format=a_fmt, b_format=b_fmt, acc=acc)
    assert len(calls) == 1, "tcsim.mma did not run the fused kernel"
    return calls[0]


def _check_against_cpu(dp, a_fmt, b_fmt, acc, m, n, k, seed, batch=None, device_inputs=False):
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    a = _operand(rng, a_fmt, lead + (m, k))
    b = _operand(rng, b_fmt, lead + (k, n))
    c = _accumulator(rng, acc, lead + (m, n))
    # special outputs (0, 0): a row of -0 times a column of +0 plus C = -0 sums to -0 exactly, which
    # the kernel returns as +0; output (m - 1, n - 1): a zero block sum next to a small C
    a[..., 0, :] = -0.0 if get_format(a_fmt).has_negative_zero else 0.0
    b[..., :, 0] = 0.0
    c[..., 0, 0] = -0.0
    a[..., m - 1, :] = 0.0
    c[..., m - 1, n - 1] = get_format(acc).min_normal / 4
    # output (1, 1): products of the smallest subnormals (an fp16 result below the normals)
    a[..., 1, :] = _smallest_subnormal(a_fmt)
    b[..., :, 1] = _smallest_subnormal(b_fmt)
    c[..., 1, 1] = 0.0
    args, want = _captured_cpu_run(a, b, c, dp, a_fmt, b_fmt, acc)
    prm = args[5]
    if device_inputs:       # device arrays in (C as float64, converted on the device)
        args = tuple(cuda.to_device(x) for x in args[:5])
    got = gpu_fused.run(*args[:5], prm)
    assert gpu_prep.on_device(got)
    _assert_same(got.copy_to_host(), want, "cuda vs cpu fused kernel")
    return want


@pytest.mark.parametrize("model,path,fmt,acc", FUSED_CASES)
def test_presets_equal_cpu_kernel(model, path, fmt, acc):
    """M crosses a row tile (TILE_M), K spans two blocks and crosses a K chunk (K_CHUNK)."""
    dp = load_model(model).find_path(fmt, fmt, acc, path).datapath()
    m, k = 33, 2 * dp.block_size + 5
    assert m > gpu_fused.TILE_M and k > gpu_fused.K_CHUNK
    want = _check_against_cpu(dp, fmt, fmt, acc, m, 9, k,
                              seed=zlib.crc32(f"{model}-{path}-{fmt}-{acc}".encode()))
    # the operands reach the overflow and flush paths, not only plain sums
    assert np.isinf(want).any() or np.abs(want).max() >= get_format(acc).max_finite / 2


BASE = dict(block_size=16, fraction_bits=13, min_exp_limit=None, zero_sign="plus")
VARIANTS = {
    # nearest-even terms, fp32 nearest-even output (round_bits, not the RZ mask)
    "rne-terms-fp32-rne": (dict(BASE, term_rounding="rne", output_rounding="rne"), "fp32"),
    # fp16 toward zero with reduced precision, overflow to Inf, zeros as +0 (unsigned)
    "fp16-rz-p9-inf": (dict(BASE, output_rounding="rz", output_precision=9, overflow="inf",
                            zero_sign="unsigned"), "fp16"),
    # fp16 nearest-even, subnormal results flushed (fp32 results of FP8 / fp16 products are
    # never subnormal: the flush of the fp32 RZ mask path is not reached by these inputs)
    "fp16-rne-flush": (dict(BASE, output_rounding="rne", subnormal_outputs="flush"), "fp16"),
    # saturating overflow, subnormal results flushed, fp32 RZ mask with p = 14
    "fp32-rz-p14-saturate-flush": (dict(BASE, output_rounding="rz", output_precision=14,
                                        overflow="saturate", subnormal_outputs="flush"), "fp32"),
    # zero operands take part in E, E clamped below (at 2^4: most blocks reach the clamp)
    "zero-exponent-min-exp": (dict(BASE, zero_operand_exponent=-14, min_exp_limit=4,
                                   output_rounding="rne"), "fp32"),
    # a block longer than a K chunk: E and the products in two passes over the chunks
    "block-64": (dict(BASE, block_size=64, fraction_bits=12, output_rounding="rz"), "fp32"),
    # one product per block, fp16 output with a clamp
    "block-1-fp16": (dict(BASE, block_size=1, fraction_bits=20, min_exp_limit=-20,
                          output_rounding="rne"), "fp16"),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_datapath_variants_equal_cpu_kernel(name):
    """The settings the presets leave out: term / output rounding, precision, overflow, flush,
    zero operand exponents, the clamp, blocks longer than K_CHUNK and of one product; mixed
    input formats and fp16 inputs."""
    fields, acc = VARIANTS[name]
    dp = Datapath(**fields)
    a_fmt, b_fmt = {"block-64": ("e5m2", "e4m3"), "block-1-fp16": ("fp16", "e5m2")}.get(
        name, ("e4m3", "e5m2"))
    k = 2 * dp.block_size + 7 if dp.block_size > 1 else 9
    assert route(dp, a_fmt, b_fmt, acc, k).kernel is Kernel.FUSED
    m, n = 7, gpu_fused.TILE_N + 1     # N crosses a column tile
    _check_against_cpu(dp, a_fmt, b_fmt, acc, m, n, k, seed=len(name))


def test_batched_device_inputs_equal_cpu_kernel():
    """A batch of 2 (the grid's z axis), every argument a device array, C as float64 (converted
    on the device)."""
    dp = load_model("h100").find_path("e4m3", "e4m3", "fp16", "wgmma").datapath()
    _check_against_cpu(dp, "e4m3", "e4m3", "fp16", 5, 6, 40, seed=3, batch=2,
                       device_inputs=True)


def _device_mma(a, b, c, dp, a_fmt, b_fmt, acc):
    """run_datapath's fused route, every step on the device (tcsim.cuda.prep and
    tcsim.cuda.fused): specials check, flushes, operand preparation, kernel, accumulator."""
    from tcsim.params import NO_TERM, kernel_params
    av, bv = (cuda.to_device(np.asarray(x, np.float64)[None]) for x in (a, b))
    cv = cuda.to_device(np.asarray(c, np.float64)[None])
    special = gpu_prep.has_special(av, bv, cv)
    kernel_route = route(dp, a_fmt, b_fmt, acc, av.shape[2], special)
    assert kernel_route.kernel is Kernel.FUSED
    if dp.subnormal_inputs == "flush":
        av, bv = gpu_prep.flush_subnormals(av, a_fmt), gpu_prep.flush_subnormals(bv, b_fmt)
    if dp.subnormal_outputs == "flush":
        cv = gpu_prep.flush_subnormals(cv, acc)
    zero_exp = NO_TERM if dp.zero_operand_exponent is None else dp.zero_operand_exponent
    ops = []
    for x, fmt in ((av, a_fmt), (bv, b_fmt)):
        vals, exps = cuda.device_array(x.shape, np.float32), cuda.device_array(x.shape, np.int16)
        assert gpu_prep.prepare_operand(x, get_format(fmt).emin, zero_exp, vals,
                                        exps) == 0
        ops += [vals, exps]
    prm = kernel_params(dp, acc, av.shape[2], special, 0, a_fmt, b_fmt, kernel_route)
    d = gpu_fused.run(ops[0], ops[2], ops[1], ops[3], cv, prm)
    out = gpu_prep.to_accumulator(d, acc, dp.zero_sign == "unsigned")
    return out.copy_to_host()[0]


@pytest.mark.parametrize("model,fmt,acc", [("h100", "e4m3", "fp32"), ("ada", "e5m2", "fp16")])
def test_device_pipeline_equals_oracle(model, fmt, acc):
    """End to end on the device against the exact oracle (and tcsim.mma)."""
    path = "wgmma" if model == "h100" else "mma.sync"
    dp = load_model(model).find_path(fmt, fmt, acc, path).datapath()
    rng = np.random.default_rng(11)
    a, b = _operand(rng, fmt, (6, 2 * dp.block_size + 3)), _operand(rng, fmt,
                                                                   (2 * dp.block_size + 3, 5))
    c = _accumulator(rng, acc, (6, 5))
    got = _device_mma(a, b, c, dp, fmt, fmt, acc)
    _assert_same(got, reference.mma(a, b, c, dp, fmt, fmt, acc), "device pipeline vs oracle")
    _assert_same(got, mma(a, b, c, model=dp, a_format=fmt, b_format=fmt, acc=acc),
                 "device pipeline vs tcsim.mma")
