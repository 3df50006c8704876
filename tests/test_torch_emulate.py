"""tcsim.torch.emulate: torch._scaled_mm (and F.scaled_mm) on the modelled tensor core.

Every emulated result is compared bit for bit (uint32 / uint16 views) with tcsim.gemm fed the
same FP8 codes and scales, built here independently of tcsim.torch.scaled_gemm; the torchao
test captures the six GEMMs of a real Float8Linear training step."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim  # noqa: E402
import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402
from tcsim.quant import Quantized  # noqa: E402
from tcsim.recipe import Recipe, Scaling  # noqa: E402

F = torch.nn.functional
FORMATS = {torch.float8_e4m3fn: "e4m3", torch.float8_e5m2: "e5m2"}


def _fp8(shape, dtype=torch.float8_e4m3fn, seed=0, scale=8.0, positive=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * scale
    return (x.abs() if positive else x).to(dtype)


def _operand(t, scale, granularity, role) -> Quantized:
    """The test's own Quantized of an FP8 tensor and its torch scales (role a: (M, K), b:
    (K, N)); K zero-padded to 128 for the 128-element groups and blocks."""
    values = np.array(t.to(torch.float32).numpy(), dtype=np.float64, order="C")
    scaling = Scaling(granularity=granularity)
    if granularity in ("group", "block"):
        axis = 1 if role == "a" else 0
        pad = -values.shape[axis] % 128
        values = np.pad(values, ((0, 0), (0, pad)) if role == "a" else ((0, pad), (0, 0)))
    s = np.array(scale.to(torch.float32).numpy(), dtype=np.float64).reshape(
        (1, 1) if granularity == "tensor" else tuple(scale.shape))
    return Quantized(values=values, scales=s, fmt=FORMATS[t.dtype], role=role, scaling=scaling,
                     amax=0.0)


def _direct(a, b, sa, sb, gran_a="tensor", gran_b="tensor", fast=False, model="h100",
            output="fp32"):
    """tcsim.gemm on the codes and scales, with the cublas recipe emulate() names."""
    base = Recipe.cublas_fast_accum if fast else Recipe.cublas_split_accum
    recipe = base(a_format=FORMATS[a.dtype], b_format=FORMATS[b.dtype],
                  a_scaling=Scaling(granularity=gran_a), b_scaling=Scaling(granularity=gran_b),
                  output=output)
    return tcsim.gemm(_operand(a, sa, gran_a, "a"), _operand(b, sb, gran_b, "b"), model=model,
                      recipe=recipe, progress=False)


def _cpu_kernel() -> str:
    """Where the dispatcher's CPU kernel of aten::_scaled_mm was registered."""
    dump = torch._C._dispatch_dump("aten::_scaled_mm")
    return next(line for line in dump.splitlines() if line.startswith("CPU:"))


def _column_major(n, k, dtype=torch.float8_e4m3fn, seed=1, **kw):
    """b (K, N) as torch's FP8 GEMMs take it: an (N, K) tensor transposed."""
    return _fp8((n, k), dtype, seed, **kw).t()


# ---- a real FP8 training step ----------------------------------------------------------------
def test_torchao_float8_training_step_is_tcsim_gemm_bit_for_bit(monkeypatch):
    pytest.importorskip("torchao")
    from torchao.float8 import convert_to_float8_training

    # every GEMM's K above 128 (fprop: 160 and 256, dgrad: 144 and 256, wgrad: 192 tokens), so
    # that fast and split accumulation give different bits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(160, 256, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(256, 144, bias=False))
    convert_to_float8_training(model)
    x = torch.randn(192, 160)
    calls = []
    real = torch._scaled_mm

    names = [arg.name for arg in torch.ops.aten._scaled_mm.default._schema.arguments]

    def spy(*args, **kwargs):       # what torchao passes (by name), and what comes back
        out = real(*args, **kwargs)
        calls.append((dict(zip(names, args), **kwargs), out.clone()))
        return out

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    with tt.emulate(model="h100"):
        model(x).square().mean().backward()
    monkeypatch.setattr(torch, "_scaled_mm", real)

    assert len(calls) == 6          # fprop of two layers, dgrad and wgrad of each
    fast = [kw.get("use_fast_accum", False) for kw, _ in calls]
    assert fast.count(True) == 2 and fast.count(False) == 4
    assert sum(kw["self"].dtype == torch.float8_e5m2 for kw, _ in calls) == 4  # gradients
    differs_from_torch = 0
    for kw, out in calls:
        a, b, sa, sb = kw["self"], kw["mat2"], kw["scale_a"], kw["scale_b"]
        assert sa.dim() == 0 and sb.dim() == 0 and kw.get("bias") is None
        assert out.dtype == kw["out_dtype"] == torch.float32
        want = _direct(a, b, sa, sb, fast=kw.get("use_fast_accum", False))
        np.testing.assert_array_equal(bits(out), bits(want))
        own = real(a, b, sa, sb, out_dtype=torch.float32)     # torch's own kernel
        differs_from_torch += not torch.equal(out, own)
    assert differs_from_torch > 0   # the modelled unit is not torch's fp32 matmul
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---- the modelled arithmetic -----------------------------------------------------------------
@pytest.mark.parametrize("fast", [True, False])
def test_ideal_model_agrees_with_torch_cpu_scaled_mm(fast):
    # Not bit for bit: torch's CPU kernel rounds each dequantised operand to fp32 (an e4m3 code
    # times an fp32 scale needs up to 28 bits) and sums the fp32 products in its own blocked
    # order, while "ideal" sums the exact products and rounds once (per 128 of K when split).
    # Both are within the classic fp32 dot-product bound of the exact value.
    k = 512
    a, b = _fp8((24, k)), _column_major(40, k)
    for sa, sb in ((torch.tensor(0.375), torch.tensor(1.5e-3)),
                   (torch.rand(24, 1) + 0.5, torch.rand(1, 40) + 0.5)):
        want = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=fast)
        with tt.emulate(model="ideal"):
            got = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=fast)
        mag = (a.double().abs() * sa.double()) @ (b.double().abs() * sb.double())
        bound = (k + 2) * 2.0 ** -24 * mag
        assert ((got.double() - want.double()).abs() <= 2 * bound).all()
        assert not torch.equal(got, torch.zeros_like(got))


def test_fast_and_split_accumulation_differ_and_each_is_its_recipe():
    # a long K of positive products: the 14-bit tensor-core accumulator (h100) truncates each
    # addend below its alignment; promotion every 128 restarts it, fast accumulation does not
    k = 8192
    a, b = _fp8((8, k), positive=True), _column_major(8, k, positive=True)
    sa, sb = torch.tensor(0.5), torch.tensor(0.25)
    with tt.emulate(model="h100"):
        fast = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=True)
        split = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=False)
    np.testing.assert_array_equal(bits(fast), bits(_direct(a, b, sa, sb, fast=True)))
    np.testing.assert_array_equal(bits(split), bits(_direct(a, b, sa, sb, fast=False)))
    exact = (a.double() * 0.5) @ (b.double() * 0.25)
    err_fast = (fast.double() - exact).abs().max()
    err_split = (split.double() - exact).abs().max()
    assert (bits(fast) != bits(split)).all()
    assert err_fast > 16 * err_split


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_rowwise_scales_bias_and_output_rounding(out_dtype):
    m, k, n = 20, 320, 24
    a, b = _fp8((m, k), torch.float8_e5m2), _column_major(n, k)
    sa, sb = torch.rand(m, 1) + 0.25, torch.rand(1, n) * 1e-2 + 1e-3
    bias = (torch.randn(n) * 10).to(torch.bfloat16)
    with tt.emulate(model="h100"):
        got = torch._scaled_mm(a, b, sa, sb, bias=bias, out_dtype=out_dtype)
        plain = torch._scaled_mm(a, b, sa, sb, out_dtype=out_dtype)
    assert got.dtype == out_dtype and got.shape == (m, n)
    acc = _direct(a, b, sa, sb, "channel", "channel")
    with_bias = acc + bias.float().numpy()        # float32 + float32: one RNE rounding
    if out_dtype == torch.float32:
        np.testing.assert_array_equal(bits(got), bits(with_bias))
        np.testing.assert_array_equal(bits(plain), bits(acc))
    elif out_dtype == torch.float16:
        np.testing.assert_array_equal(bits(got), bits(with_bias.astype(np.float16)))
        np.testing.assert_array_equal(bits(plain), bits(acc.astype(np.float16)))
    else:       # bf16: tcsim.gemm's own RNE output stage (recipe output "bf16"), ml_dtypes'
        ml_dtypes = pytest.importorskip("ml_dtypes")
        want = _direct(a, b, sa, sb, "channel", "channel", output="bf16")
        np.testing.assert_array_equal(bits(plain), np.asarray(want).view(np.uint16))
        np.testing.assert_array_equal(bits(got),
                                      with_bias.astype(ml_dtypes.bfloat16).view(np.uint16))


@pytest.mark.parametrize("lay_a,lay_b", [("group", "block"), ("block", "group"),
                                         ("group", "group")])
def test_blockwise_scales_as_deepseek_tiles(lay_a, lay_b):
    m, k, n = 12, 300, 136      # K not a multiple of 128: the last group is zero-padded
    a, b = _fp8((m, k)), _column_major(n, k)
    nk = -(-k // 128)
    shapes = {("a", "group"): (m, nk), ("a", "block"): (-(-m // 128), nk),
              ("b", "group"): (nk, n), ("b", "block"): (nk, -(-n // 128))}
    g = torch.Generator().manual_seed(5)
    sa = torch.rand(shapes["a", lay_a], generator=g) + 0.5
    sb = torch.rand(shapes["b", lay_b], generator=g) * 0.01 + 0.001
    names = {"group": F.ScalingType.BlockWise1x128, "block": F.ScalingType.BlockWise128x128}
    with tt.emulate(model="h100"):
        got = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32)
        v2 = F.scaled_mm(a, b, sa, names[lay_a], sb, names[lay_b], output_dtype=torch.float32)
    want = _direct(a, b, sa, sb, lay_a, lay_b)
    np.testing.assert_array_equal(bits(got), bits(want))
    np.testing.assert_array_equal(bits(v2), bits(want))


def test_public_scaled_mm_is_emulated_too():
    a, b = _fp8((16, 256)), _column_major(32, 256)
    sa, sb = torch.tensor(0.125), torch.tensor(2.0)
    own = F.scaled_mm(a, b, sa, F.ScalingType.TensorWise, sb, F.ScalingType.TensorWise)
    with tt.emulate(model="h100"):
        got = F.scaled_mm(a, b, sa, F.ScalingType.TensorWise, sb, F.ScalingType.TensorWise,
                          use_fast_accum=True)      # default output: bfloat16
    assert got.dtype == torch.bfloat16
    want = _direct(a, b, sa, sb, fast=True, output="bf16")
    np.testing.assert_array_equal(bits(got), np.asarray(want).view(np.uint16))
    assert not torch.equal(got, own)


# ---- the context ---------------------------------------------------------------------------
def test_leaving_restores_torch_and_nothing_else_is_touched():
    a, b = _fp8((16, 2048), positive=True), _column_major(16, 2048, positive=True)
    sa, sb = torch.tensor(0.5), torch.tensor(0.5)
    own = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=True)
    x, w = torch.randn(32, 64), torch.randn(48, 64)
    mm, lin = x @ w.t(), F.linear(x, w)
    with tt.emulate(model="h100") as ctx:
        assert tt.is_emulating() and "h100" in repr(ctx)
        assert "RegisterCPU" not in _cpu_kernel()          # a Python kernel serves it
        emulated = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=True)
        np.testing.assert_array_equal(bits(x @ w.t()), bits(mm))
        np.testing.assert_array_equal(bits(F.linear(x, w)), bits(lin))
    assert not tt.is_emulating() and "RegisterCPU" in _cpu_kernel()    # torch's own again
    assert not torch.equal(emulated, own)
    after = torch._scaled_mm(a, b, sa, sb, out_dtype=torch.float32, use_fast_accum=True)
    np.testing.assert_array_equal(bits(after), bits(own))


def test_nesting_reentry_and_decorator():
    a, b = _fp8((8, 4096), positive=True), _column_major(8, 4096, positive=True)
    s = torch.tensor(1.0)

    def run():
        return torch._scaled_mm(a, b, s, s, out_dtype=torch.float32, use_fast_accum=True)

    own = run()
    h100, ideal = _direct(a, b, s, s, fast=True), _direct(a, b, s, s, fast=True, model="ideal")
    assert (bits(h100) != bits(ideal)).any()
    outer = tt.emulate(model="h100")
    with outer:
        with tt.emulate(model="ideal"):
            np.testing.assert_array_equal(bits(run()), bits(ideal))
        np.testing.assert_array_equal(bits(run()), bits(h100))    # the outer model again
        with outer:                                                 # re-entered
            np.testing.assert_array_equal(bits(run()), bits(h100))
        np.testing.assert_array_equal(bits(run()), bits(h100))
    np.testing.assert_array_equal(bits(run()), bits(own))

    @tt.emulate(model="ideal")
    def decorated():
        return run()

    np.testing.assert_array_equal(bits(decorated()), bits(ideal))
    np.testing.assert_array_equal(bits(run()), bits(own))


def test_out_variant_writes_the_emulated_result():
    a, b = _fp8((8, 256)), _column_major(16, 256)
    s = torch.tensor(0.5)
    out = torch.empty(0, dtype=torch.float32)
    with tt.emulate(model="h100"):
        torch._scaled_mm(a, b, s, s, out_dtype=torch.float32, out=out)
    np.testing.assert_array_equal(bits(out), bits(_direct(a, b, s, s)))


# ---- errors ----------------------------------------------------------------------------------
def test_unsupported_arguments_raise_clear_errors():
    a, b = _fp8((8, 256)), _column_major(16, 256)
    s = torch.tensor(1.0)
    with tt.emulate(model="h100"):
        with pytest.raises(tt.UnsupportedScaledMM, match=r"self \(a\): dtype torch.float32"):
            torch._scaled_mm(a.float(), b, s, s, out_dtype=torch.float32)
        fnuz = torch.randn(8, 256).to(torch.float8_e4m3fnuz)
        with pytest.raises(NotImplementedError, match="float8_e4m3fnuz"):
            torch._scaled_mm(fnuz, b, s, s, out_dtype=torch.float32)
        with pytest.raises(tt.UnsupportedScaledMM, match=r"scale_a: shape \(3, 5\)"):
            torch._scaled_mm(a, b, torch.ones(3, 5), s, out_dtype=torch.float32)
        with pytest.raises(tt.UnsupportedScaledMM, match="RowWise scales must be float32"):
            torch._scaled_mm(a, b, torch.ones(8, 1, dtype=torch.float64), s,
                             out_dtype=torch.float32)
        with pytest.raises(tt.UnsupportedScaledMM, match="out_dtype: None"):
            torch._scaled_mm(a, b, s, s)
        with pytest.raises(tt.UnsupportedScaledMM, match="scale_result"):
            torch._scaled_mm(a, b, s, s, scale_result=torch.tensor(2.0),
                             out_dtype=torch.float32)
        with pytest.raises(tt.UnsupportedScaledMM, match="use_fast_accum=True with block-wise"):
            torch._scaled_mm(a, b, torch.ones(8, 2), torch.ones(2, 16), out_dtype=torch.float32,
                             use_fast_accum=True)
        with pytest.raises(tt.UnsupportedScaledMM, match="BlockWise1x32"):
            F.scaled_mm(a, b, torch.ones(8, 8), F.ScalingType.BlockWise1x32,
                        torch.ones(8, 16), F.ScalingType.BlockWise1x32)
    assert not tt.is_emulating()       # an error inside leaves the context cleanly
    with pytest.raises(tcsim.UnknownModelError):
        tt.emulate(model="no-such-gpu")
    with pytest.raises(tcsim.ConfigError, match="split_interval"):
        tt.emulate(split_interval=0)


# ---- the CUDA dispatch key and tcsim's GPU backend -------------------------------------------
_OPS = ("aten::_scaled_mm", "aten::_scaled_mm.out", "aten::_scaled_mm_v2")


def _kernel_line(op: str, key: str):
    """The dispatcher's entry of ``op`` at ``key`` (None when it has no kernel there)."""
    dump = torch._C._dispatch_dump(op)
    return next((line for line in dump.splitlines() if line.startswith(f"{key}:")), None)


def test_cuda_key_is_registered_inside_and_torch_s_own_is_back_after():
    # a CPU-only torch has no CUDA kernel before or after; a CUDA build has its own back
    before = {op: _kernel_line(op, "CUDA") for op in _OPS}
    with tt.emulate(model="h100"):
        for op in _OPS:
            assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op
            assert "RegisterCUDA" not in _kernel_line(op, "CUDA"), op  # a Python kernel
    for op in _OPS:
        assert _kernel_line(op, "CUDA") == before[op], op
        if before[op] is None:
            assert not torch._C._dispatch_has_kernel_for_dispatch_key(op, "CUDA"), op


def test_the_cuda_key_serves_the_emulated_gemm():
    # the dispatcher's CUDA entry, called directly (no CUDA tensors here): tcsim's GEMM
    a, b = _fp8((8, 256)), _column_major(16, 256)
    s = torch.tensor(0.5)
    cuda = torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA)
    with tt.emulate(model="h100"):
        got = torch.ops.aten._scaled_mm.default.redispatch(cuda, a, b, s, s,
                                                           out_dtype=torch.float32)
    np.testing.assert_array_equal(bits(got), bits(_direct(a, b, s, s)))
    if _kernel_line("aten::_scaled_mm", "CUDA") is None:     # outside: no kernel (CPU torch)
        with pytest.raises(NotImplementedError, match="CUDA"):
            torch.ops.aten._scaled_mm.default.redispatch(cuda, a, b, s, s,
                                                         out_dtype=torch.float32)


def test_device_option_is_checked_and_shown():
    with pytest.raises(tcsim.ConfigError, match="device: expected None, 'cpu' or 'cuda'"):
        tt.emulate(device="gpu")
    assert "device='cpu'" in repr(tt.emulate(model="h100", device="cpu"))
    assert "device" not in repr(tt.emulate(model="h100"))


def _float8_step(device):
    """One forward / backward of a tiny torchao Float8Linear model under emulate(device=...):
    (y, x.grad, weight grads)."""
    from torchao.float8 import convert_to_float8_training
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16, bias=False), torch.nn.ReLU(),
                                torch.nn.Linear(16, 32, bias=False))
    convert_to_float8_training(model)
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with tt.emulate(model="h100", device=device):
        y = model(x)
        y.square().mean().backward()
    return [y.detach(), x.grad] + [p.grad for p in model.parameters()]


def test_torchao_step_on_tcsim_s_gpu_backend_gives_the_cpu_bits(monkeypatch):
    """emulate(device="cuda") on CPU tensors: the six FP8 GEMMs of a Float8Linear step run on
    tcsim.cuda (numba's CUDA simulator here) and give the CPU backend's bits."""
    pytest.importorskip("torchao")
    pytest.importorskip("numba.cuda.extending", reason="the GPU backend needs numba-cuda")
    from tcsim.cuda import run as cuda_run
    monkeypatch.delenv("TCSIM_DEVICE", raising=False)
    chunks = []                 # one entry per tensor-core chunk run on tcsim's GPU backend
    real = cuda_run.run_datapath

    def counted(*args, **kwargs):
        chunks.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cuda_run, "run_datapath", counted)
    cpu = _float8_step("cpu")
    assert not chunks
    gpu = _float8_step("cuda")
    assert len(chunks) >= 6                      # every GEMM ran on the GPU backend
    for got, want in zip(gpu, cpu):
        np.testing.assert_array_equal(bits(got), bits(want))
    ran = len(chunks)
    default = _float8_step(None)                 # CPU tensors, no TCSIM_DEVICE: the CPU
    assert len(chunks) == ran
    for got, want in zip(default, cpu):
        np.testing.assert_array_equal(bits(got), bits(want))
