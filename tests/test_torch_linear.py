"""tcsim.torch.Linear: the three GEMMs of a linear layer against torch.nn.Linear (high-precision
recipes) and against tcsim.gemm on the same operands, bit for bit (FP8 recipes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim  # noqa: E402
import tcsim.torch as tt  # noqa: E402
from tcsim.quant import pad_k  # noqa: E402
from tcsim.reciprocal_scaling import quantize_reciprocal  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _bits(a) -> np.ndarray:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _pair(recipe, tokens=256, fin=256, fout=128, bias=True, seed=0):
    torch.manual_seed(seed)
    ref = torch.nn.Linear(fin, fout, bias=bias)
    sim = tt.Linear(fin, fout, bias=bias, recipe=recipe, name="layer")
    sim.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(tokens, fin)
    dy = torch.randn(tokens, fout)
    return ref, sim, x, dy


def _run(layer, x, dy):
    xg = x.clone().requires_grad_(True)
    y = layer(xg)
    y.backward(dy)
    return y.detach(), xg.grad, layer.weight.grad.clone()


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_high_precision_recipes_match_nn_linear(name):
    recipe = tt.TrainingRecipe.named(name)
    ref, sim, x, dy = _pair(recipe)
    y0, dx0, dw0 = _run(ref, x, dy)
    y1, dx1, dw1 = _run(sim, x, dy)
    # fp32: the same products up to float32 rounding; bf16: operands rounded to 8 significant
    # bits (relative error <= 2^-9 each), so a relative Frobenius error of a few 2^-9
    for got, want in ((y1, y0), (dx1, dx0), (dw1, dw0)):
        if name == "fp32":
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        else:
            assert float((got - want).norm() / want.norm()) < 4 * 2.0 ** -9
    torch.testing.assert_close(sim.bias.grad, ref.bias.grad)
    if name == "bf16":    # and it is not the fp32 result: the operands were rounded
        assert not torch.equal(y1, y0)


def _expected_fp8(recipe, x, w, dy):
    """The three GEMMs computed directly with tcsim.gemm on the operands the recipe names."""
    def run(s, a, b):     # K zero-padded to 128 when the recipe's scales are K-grouped
        grouped = {s.recipe.a_scaling.granularity, s.recipe.b_scaling.granularity} & \
            {"group", "block"}
        if grouped and a.shape[1] % 128:
            a, b = pad_k(a, 128, "a"), pad_k(b, 128, "b")
        if s.scale_rule == "torchao":      # torchao's per-tensor cast (tcsim.reciprocal_scaling)
            r = s.recipe
            a = quantize_reciprocal(a, r.a_format, "a", "torchao", r.a_scaling)
            b = quantize_reciprocal(b, r.b_format, "b", "torchao", r.b_scaling)
        return tcsim.gemm(a, b, model=s.resolved_datapath(), recipe=s.recipe)

    out = {}
    xn, wn, dyn = x.numpy(), w.detach().numpy(), dy.numpy()
    out["fprop"] = run(recipe.fprop, xn, np.ascontiguousarray(wn.T))
    out["dgrad"] = run(recipe.dgrad, dyn, wn)
    x_w = xn
    if recipe.saved_activation == "fp8":   # x as the FP8 cache holds it: RN32(code * scale)
        f = recipe.fprop.recipe
        q = tcsim.quantize(pad_k(xn, 128, "a"), f.a_format, f.a_scaling, "a")
        x_w = (q.values * q.element_scales()).astype(np.float32)[:, :xn.shape[1]]
    out["wgrad"] = run(recipe.wgrad, np.ascontiguousarray(dyn.T), x_w)
    return out


FP8_RECIPES = {
    "deepseek_v3": lambda: tt.TrainingRecipe.deepseek_v3(),
    "torchao_tensorwise": lambda: tt.TrainingRecipe.torchao_tensorwise(),
    "h100_f16": lambda: tt.TrainingRecipe.accumulator_proposal(16),
    "b200_fast": lambda: tt.TrainingRecipe.fast_accum("b200"),
}


@pytest.mark.parametrize("name", sorted(FP8_RECIPES))
@pytest.mark.parametrize("shape", [(256, 256, 128), (200, 256, 128), (64, 96, 32)],
                         ids=["aligned", "tokens-padded", "all-padded"])
def test_fp8_gemms_equal_tcsim_gemm_bit_for_bit(name, shape):
    """tokens x in -> out; K not a multiple of 128 is zero-padded for K-grouped scales."""
    recipe = FP8_RECIPES[name]()
    tokens, fin, fout = shape
    _, sim, x, dy = _pair(recipe, tokens=tokens, fin=fin, fout=fout, bias=False)
    y, dx, dw = _run(sim, x, dy)
    want = _expected_fp8(recipe, x, sim.weight, dy)
    assert np.array_equal(_bits(y), _bits(want["fprop"]))
    assert np.array_equal(_bits(dx), _bits(want["dgrad"]))
    assert np.array_equal(_bits(dw), _bits(want["wgrad"]))
    # and FP8 is visible: not the float32 product
    assert not np.array_equal(_bits(y), _bits(x @ sim.weight.detach().T))


def _te_cast(x: np.ndarray, fmt: str, history: list, role: str):
    """Transformer Engine's delayed-scaling cast, built here with ml_dtypes: the quantisation
    scale S = RN32(max_fp8 / max(history)) (1.0 with no history), codes = the saturating FP8
    cast of RN32(x * S), dequantisation scale RN32(1 / S)."""
    import ml_dtypes
    dt = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[fmt]
    maxf = float(ml_dtypes.finfo(dt).max)
    s = np.float32(maxf) / np.float32(max(history)) if history else np.float32(1.0)
    q = np.clip(x.astype(np.float32) * s, -maxf, maxf)
    codes = q.astype(dt).astype(np.float64)
    return tcsim.quant.Quantized(values=codes, scales=np.full((1, 1), float(np.float32(1) / s)),
                                 fmt=fmt, role=role, scaling=tcsim.Scaling(),
                                 amax=float(np.abs(x).max()))


def test_delayed_scaling_history_bit_for_bit():
    """te_hybrid_delayed over four steps: each tensor is cast with the scale from the amaxes of
    the steps before (history 2: the last two), never its own amax, as Transformer Engine does;
    each GEMM equals tcsim.gemm on those casts."""
    recipe = tt.TrainingRecipe.te_hybrid_delayed(history=2)
    torch.manual_seed(1)
    sim = tt.Linear(128, 128, bias=False, recipe=recipe)
    hist = {"x": [], "w": [], "dy": []}
    saturated = []
    for step, scale in enumerate((1.0, 0.25, 4.0, 32.0)):
        x, dy = torch.randn(128, 128) * scale, torch.randn(128, 128) / scale
        y, dx, dw = _run(sim, x, dy)
        sim.weight.grad = None
        xn, wn, dyn = x.numpy(), sim.weight.detach().numpy(), dy.numpy()
        h = {k: v[-2:] for k, v in hist.items()}
        qx, qw = _te_cast(xn, "e4m3", h["x"], "a"), _te_cast(wn.T, "e4m3", h["w"], "b")
        kw = dict(model="h100")
        want_y = tcsim.gemm(qx, qw, recipe=recipe.fprop.recipe, **kw)
        want_dx = tcsim.gemm(_te_cast(dyn, "e5m2", h["dy"], "a"), _te_cast(wn, "e4m3", h["w"], "b"),
                             recipe=recipe.dgrad.recipe, **kw)
        want_dw = tcsim.gemm(_te_cast(np.ascontiguousarray(dyn.T), "e5m2", h["dy"], "a"),
                             _te_cast(xn, "e4m3", h["x"], "b"), recipe=recipe.wgrad.recipe,
                             **kw)
        assert np.array_equal(_bits(y), _bits(want_y)), step
        assert np.array_equal(_bits(dx), _bits(want_dx)), step
        assert np.array_equal(_bits(dw), _bits(want_dw)), step
        saturated.append(float(np.mean(np.abs(qx.values) == 448)))
        for k, v in (("x", xn), ("w", wn), ("dy", dyn)):
            hist[k].append(float(np.abs(v).max()))
    # x shrinking (step 1) saturates nothing; x outgrowing its history (steps 2, 3: 4x and 8x
    # the largest amax of the two steps before) saturates a large part of it
    assert saturated[1] == 0.0 and saturated[2] > 0.1 and saturated[3] > 0.3
    assert sim.amax_history == {k: v[-2:] for k, v in hist.items()}
    # the history is state: a copy loaded from the state_dict continues identically
    other = tt.Linear(128, 128, bias=False, recipe=recipe)
    other.load_state_dict(sim.state_dict())
    assert other.amax_history == sim.amax_history


def test_backward_retiling_hand_worked():
    """DeepSeek-V3's scale groups per GEMM on operands built so every amax is known by hand.

    tokens T = 256, in = 128, out = 256, groups of 128.
    x[t, i] = (t + 1) * c_i with c_i = 1 + i % 7:  fprop tiles 1x128 along `in` (one per token)
        have amax 7 (t + 1); wgrad tiles 128x1 along tokens (two per column i) have amax
        128 c_i and 256 c_i. x / s = 64 c_i is exact in e4m3, so the FP8 cache holds x exactly.
    dy[t, o] = (t + 1) * d_o with d_o = 1 + o % 5: dgrad tiles 1x128 along `out` (two per
        token) have amax 5 (t + 1); wgrad tiles of dy^T 1x128 along tokens (two per row o) have
        amax 128 d_o and 256 d_o.
    w[o, i] = (1 + o // 128) * c_i: 128x128 blocks with amax 7 and 14, one column of blocks in
        fprop (w^T: K = in) and one row in dgrad (w: K = out) -- the same blocks transposed.
    Scales are RN32(RN32(amax) / 448), but x's (the FP8 cache, fprop and wgrad) are powers of
    two: the smallest 2^e with 448 * 2^e >= amax (DeepSeek-V3 s3.3.3).
    """
    T, fin, fout = 256, 128, 256
    t = np.arange(T, dtype=np.float32)[:, None] + 1
    c = (1 + np.arange(fin) % 7).astype(np.float32)
    d = (1 + np.arange(fout) % 5).astype(np.float32)
    x, dy = t * c[None, :], t * d[None, :]
    w = (1 + np.arange(fout)[:, None] // 128).astype(np.float32) * c[None, :]
    sim = tt.Linear(fin, fout, bias=False, recipe=tt.TrainingRecipe.deepseek_v3())
    with torch.no_grad():
        sim.weight.copy_(torch.from_numpy(w))
    sim.keep_details = True
    _run(sim, torch.from_numpy(x), torch.from_numpy(dy))
    det = sim.details

    def s(amax):
        return np.float32(amax) / np.float32(448)

    def p(amax):
        return np.array([min(2.0 ** e for e in range(-30, 30) if 448 * 2.0 ** e >= a)
                         for a in np.asarray(amax, dtype=np.float64)])

    tt_ = t[:, 0]
    # fprop: x (T, in) one scale per token; w^T (in, out) blocks (1, 2)
    assert det["fprop"].a.scales.shape == (T, 1)
    assert np.array_equal(det["fprop"].a.scales[:, 0], p(7 * tt_))
    assert np.array_equal(det["fprop"].b.scales, [[s(7), s(14)]])
    # dgrad: dy (T, out) two tiles per token along out; w (out, in) blocks (2, 1)
    assert det["dgrad"].a.scales.shape == (T, 2)
    assert np.array_equal(det["dgrad"].a.scales, np.stack([s(5 * tt_)] * 2, axis=1))
    assert np.array_equal(det["dgrad"].b.scales, [[s(7)], [s(14)]])
    # wgrad: dy^T (out, T) two tiles per row along tokens; x (T, in) 128x1 tiles along tokens
    assert det["wgrad"].a.scales.shape == (fout, 2)
    assert np.array_equal(det["wgrad"].a.scales, np.stack([s(128 * d), s(256 * d)], axis=1))
    assert det["wgrad"].b.scales.shape == (2, fin)
    assert np.array_equal(det["wgrad"].b.scales, np.stack([p(128 * c), p(256 * c)], axis=0))
    # re-tiling the FP8 cache with power-of-two scales adds no error: wgrad's x is the cache
    assert np.array_equal(det["wgrad"].b.dequantize(), det["fprop"].a.dequantize())
    assert not np.array_equal(det["fprop"].a.dequantize(), x)       # the cache rounds x


def test_convert_keeps_deepseek_high_precision_layers():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 16)
            self.qkv = torch.nn.Linear(16, 48)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(),
                                           torch.nn.Linear(64, 16))
            self.gate = torch.nn.Linear(16, 4)
            self.norm = torch.nn.LayerNorm(16)
            self.lm_head = torch.nn.Linear(16, 10)

    model = Block()
    w = model.qkv.weight
    report = tt.convert(model, tt.TrainingRecipe.deepseek_v3())
    assert report.converted == ["qkv", "mlp.0", "mlp.2"]
    assert report.kept == ["gate", "lm_head"]
    assert isinstance(model.mlp[2], tt.Linear) and not isinstance(model.lm_head, tt.Linear)
    assert model.qkv.weight is w             # the Parameters are shared
    assert "3 Linear layer(s) converted" in str(report)
    only = tt.convert(Block(), tt.TrainingRecipe.bf16(), include=["mlp.*"], exclude=())
    assert only.converted == ["mlp.0", "mlp.2"]
    every = tt.convert(Block(), tt.TrainingRecipe.bf16(), exclude=())
    assert every.kept == []


def test_convert_reports_what_it_does_not_simulate():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 16)
            self.conv = torch.nn.Conv1d(16, 16, 3)
            self.attn = torch.nn.MultiheadAttention(16, 2)
            self.fc = torch.nn.Linear(16, 16)
            self.mix = torch.nn.Parameter(torch.randn(16, 16))   # used by F.linear in forward

    model = Net()
    with pytest.warns(UserWarning, match="3 module"):
        report = tt.convert(model, tt.TrainingRecipe.bf16())
    assert report.converted == ["fc"]
    # MultiheadAttention never calls its out_proj's forward: converting it would simulate
    # nothing, so it is left alone and reported with its module
    assert not isinstance(model.attn.out_proj, tt.Linear)
    assert [n.split(" ")[0] for n in report.not_simulated] == ["mix", "conv", "attn"]
    assert "convolution" in report.not_simulated[1]
    assert "F.multi_head_attention_forward" in report.not_simulated[2]
    assert report.lookups == ["embed (Embedding): a table lookup, no GEMM"]
    text = str(report)
    assert "3 not simulated" in text and "not simulated: conv (Conv1d)" in text


def test_convert_a_bare_linear():
    lin = torch.nn.Linear(32, 16, bias=False)
    w = lin.weight
    plain = lin(x := torch.randn(8, 32)).detach()
    report = tt.convert(lin, tt.TrainingRecipe.deepseek_v3())
    assert report.converted == [""] and "converted:     (the model itself)" in str(report)
    assert isinstance(lin, tt.Linear) and lin.weight is w
    ref = tt.Linear(32, 16, bias=False, recipe=tt.TrainingRecipe.deepseek_v3())
    ref.load_state_dict(lin.state_dict(), strict=False)
    got = lin(x).detach()
    assert np.array_equal(_bits(got), _bits(ref(x).detach()))
    assert not np.array_equal(_bits(got), _bits(plain))      # FP8 now, not fp32


def test_convert_tied_linear_everywhere():
    shared = torch.nn.Linear(16, 16)
    model = torch.nn.ModuleDict({"a": shared, "b": shared})
    report = tt.convert(model, tt.TrainingRecipe.bf16())
    assert report.converted == ["a", "b"]
    assert model["a"] is model["b"] and isinstance(model["b"], tt.Linear)


def test_recipe_errors_are_clear():
    with pytest.raises(tcsim.ConfigError, match="unknown training recipe"):
        tt.TrainingRecipe.named("fp6")
    with pytest.raises(tcsim.ConfigError, match="datapath override"):
        tt.TrainingRecipe.accumulator_proposal(16, output_precision=40).check()
    with pytest.raises(ValueError, match="recipe"):
        tt.GemmSetting(precision="fp8")
    with pytest.raises(ValueError, match="unknown Datapath field"):
        tt.GemmSetting(precision="fp8", recipe=tcsim.Recipe.deepseek_v3(),
                       datapath={"fraction_bitz": 3})


def test_stats_table():
    _, sim, x, dy = _pair(tt.TrainingRecipe.deepseek_v3(), bias=False)
    stats = tt.GemmStats(every=2)
    sim.stats = stats
    captured = []
    sim.capture = lambda *args: captured.append(args)
    for step in range(3):
        stats.begin_step(step)
        _run(sim, x, dy)
    df = stats.frame()
    assert list(df["step"]) == [0, 0, 0, 2, 2, 2]
    assert list(df["gemm"][:3]) == ["fprop", "dgrad", "wgrad"]
    assert list(df["k"][:3]) == [256, 128, 256]
    # accumulation error alone is far below the quantisation + accumulation error
    assert (df["acc_rel_err"] < df["e2e_rel_err"] / 10).all()
    assert (df["e2e_rel_err"] > 1e-3).all() and (df["e2e_rel_err"] < 0.1).all()
    # the e2e reference of wgrad is the true x, not the FP8 cache
    assert [c[1] for c in captured[:3]] == ["fprop", "dgrad", "wgrad"]
    assert np.array_equal(captured[2][3], x.numpy())


_DETERMINISM = textwrap.dedent("""
    import json, numba, numpy as np, torch
    import tcsim.torch as tt
    out = []
    for threads in (1, 2):
        numba.set_num_threads(threads)
        torch.manual_seed(0)
        lin = tt.Linear(256, 256, recipe=tt.TrainingRecipe.deepseek_v3())
        x = torch.randn(512, 256, requires_grad=True)
        y = lin(x)
        y.backward(torch.randn(512, 256))
        out.append([t.detach().numpy().view(np.uint32).tobytes().hex()
                    for t in (y, x.grad, lin.weight.grad)])
    print(json.dumps(out[0] == out[1]))
""")


def test_same_bits_whatever_the_thread_count():
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", _DETERMINISM], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) is True


_THREADS_KEPT = textwrap.dedent("""
    import torch
    import tcsim.torch as tt
    torch.set_num_threads(1)
    x = torch.randn(128, 32, requires_grad=True)
    norm = torch.nn.LayerNorm(32)
    lin = tt.Linear(32, 96, recipe=tt.TrainingRecipe.deepseek_v3())
    lin(norm(x)).sum().backward()         # torch ops around the process's first FP8 GEMMs
    print(torch.get_num_threads())
""")


def test_torch_thread_count_survives_the_first_simulated_gemm():
    """numba starting its OpenMP threading layer resets the OpenMP thread count that torch
    shares; a run's torch.set_num_threads(1) was lost after the first FP8 GEMM of a process,
    so the first run of a process summed in another order than a resumed one."""
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-c", _THREADS_KEPT], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[-1] == "1"


def test_ordered_matmul_sums_in_k_order():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 7)).astype(np.float32)
    b = rng.standard_normal((7, 4)).astype(np.float32)
    want = np.zeros((3, 4))
    for i in range(3):
        for j in range(4):
            for k in range(7):              # exact float64 products, summed in k order
                want[i, j] += float(a[i, k]) * float(b[k, j])
    from tcsim.torch.stats import ordered_matmul
    got = ordered_matmul(a, b)
    assert np.array_equal(got.view(np.uint64), want.view(np.uint64))


_STATS_ROW = textwrap.dedent("""
    import numpy as np, torch
    import tcsim.torch as tt
    torch.manual_seed(0)
    lin = tt.Linear(256, 256, recipe=tt.TrainingRecipe.bf16())
    lin.stats = tt.GemmStats(every=1)
    lin.stats.begin_step(0)
    x = torch.randn(512, 256, requires_grad=True)
    lin(x).backward(torch.randn(512, 256))
    cols = [c for c in lin.stats.frame().columns if c.endswith(("_err", "_bias", "_var"))]
    assert cols, "no error statistics to compare"
    print(lin.stats.frame()[cols].to_numpy(np.float64).view(np.uint64).tobytes().hex())
""")


def test_stats_bits_do_not_depend_on_the_blas_thread_count():
    """OpenBLAS splits a long dot product (np.linalg.norm) across its threads: the statistics
    of the same GEMMs differed between OPENBLAS_NUM_THREADS=1 (a Dask worker) and 2."""
    got = []
    for threads in ("1", "2"):
        env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", _STATS_ROW], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        got.append(res.stdout.split()[-1])
    assert got[0] == got[1]


def test_tcsim_does_not_import_torch():
    code = "import sys, tcsim, tcsim.cli; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_evaluation_passes_leave_the_amax_history_alone():
    sim = tt.Linear(128, 128, recipe=tt.TrainingRecipe.te_hybrid_delayed(history=4))
    x = torch.randn(128, 128)
    _run(sim, x, torch.randn(128, 128))
    before = {k: list(v) for k, v in sim.amax_history.items()}
    assert all(len(v) == 1 for v in before.values())
    with torch.no_grad():
        sim(x * 3)
    sim.eval()
    sim(x * 3)
    assert sim.amax_history == before
