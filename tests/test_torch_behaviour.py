"""tcsim.torch.Linear behaves like torch.nn.Linear where users rely on it: torch.compile,
autocast, NaN/Inf (GradScaler), strict state_dict loads both ways, nn.Linear's errors, empty
batches, and GemmStats' warning. Bit claims compare uint32 / uint16 views."""

from __future__ import annotations

import copy
import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tcsim  # noqa: E402
import tcsim.torch as tt  # noqa: E402
from helpers import bits  # noqa: E402


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(bits(a), bits(b))


def _model(seed=0):
    """Linear(128, 128) -> ReLU -> Linear(128, 16): DeepSeek-V3 (FP8 cache of x) first, then
    Transformer Engine's delayed scaling (an amax history)."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 16))
    tt.convert(model, tt.TrainingRecipe.deepseek_v3(), include=["0"], exclude=())
    tt.convert(model, tt.TrainingRecipe.te_hybrid_delayed(history=4), include=["2"], exclude=())
    return model


def _steps(model, forward, xs, dys):
    """Forward and backward per step; (y, dx, every parameter's grad) per step."""
    out = []
    for x, dy in zip(xs, dys):
        x = x.clone().requires_grad_(True)
        y = forward(x)
        y.backward(dy)
        out.append([y, x.grad] + [p.grad.clone() for p in model.parameters()])
        model.zero_grad(set_to_none=True)
    return out


# ---- 1. torch.compile -------------------------------------------------------------------------
def test_compiled_model_gives_eager_bits():
    """The simulated GEMMs are opaque custom ops: dynamo traces the model in one graph
    (fullgraph=True: no graph break) and the compiled forward and backward run the same
    simulation, so y, dx, every weight and bias gradient and the amax histories of two steps
    have eager mode's bits."""
    torch.manual_seed(1)
    xs = [torch.randn(8, 128) for _ in range(2)]
    dys = [torch.randn(8, 16) for _ in range(2)]
    eager = _model()
    want = _steps(eager, eager, xs, dys)
    compiled = _model()
    got = _steps(compiled, torch.compile(compiled, fullgraph=True), xs, dys)
    for step, (g, w) in enumerate(zip(got, want)):
        assert len(g) == 2 + 4
        for i, (a, b) in enumerate(zip(g, w)):
            assert _same(a, b), (step, i)
    assert compiled[2].amax_history == eager[2].amax_history
    assert len(eager[2].amax_history["x"]) == 2


# ---- 2. autocast ------------------------------------------------------------------------------
def test_autocast_returns_what_nn_linear_returns():
    """Under autocast(bf16) nn.Linear returns bf16; so does the layer, whose GEMMs then take
    x and w cast to bf16 (as float32 values), y = RN_bf16(GEMM) + bf16(b) and the gradients
    come back through the casts (dw rounded to bf16, then float32 for the fp32 weight)."""
    torch.manual_seed(2)
    plain = torch.nn.Linear(128, 64)
    sim = tt.Linear(128, 64, recipe=tt.TrainingRecipe.deepseek_v3())
    sim.load_state_dict(plain.state_dict())
    x = torch.randn(16, 128, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_plain, y = plain(x), sim(x)
    assert y.dtype == y_plain.dtype == torch.bfloat16
    dy = torch.randn(16, 64).to(torch.bfloat16)
    y.backward(dy)
    assert sim.weight.grad.dtype == x.grad.dtype == torch.float32
    # the same simulation on the bf16-rounded operands, outside autocast
    ref = tt.Linear(128, 64, bias=False, recipe=tt.TrainingRecipe.deepseek_v3())
    with torch.no_grad():
        ref.weight.copy_(sim.weight.to(torch.bfloat16).float())
    xr = x.detach().to(torch.bfloat16).float().requires_grad_(True)
    yr = ref(xr)
    yr.backward(dy.float())
    assert _same(y, yr.to(torch.bfloat16) + sim.bias.detach().to(torch.bfloat16))
    assert _same(sim.weight.grad, ref.weight.grad.to(torch.bfloat16).float())
    assert _same(x.grad, xr.grad.to(torch.bfloat16).float())
    assert _same(sim.bias.grad, dy.sum(0).float())


# ---- 3. NaN / Inf -----------------------------------------------------------------------------
def _nonfinite_pair(recipe, tokens=128):
    torch.manual_seed(3)
    sim = tt.Linear(128, 64, bias=False, recipe=recipe, name="blk.fc")
    twin = copy.deepcopy(sim)
    x = torch.randn(tokens, 128)
    dy = torch.randn(tokens, 64)
    return sim, twin, x, dy


def test_nan_and_inf_propagate_as_the_hardware_carries_them():
    """DeepSeek-V3 (E4M3: no infinity). x[3, 5] = NaN, x[7, 1] = +Inf, dy[2, 4] = +Inf.
    Every finite entry is quantised with the scales of the finite values, so each output no
    NaN/Inf entered equals, bit for bit, the output of the same layer with those entries set
    to 0; each output one entered is NaN (E4M3 carries Inf as NaN): rows 3 and 7 of y, row 2
    of dx, row 4 and columns 1 and 5 of dw (x's FP8 cache holds the NaNs)."""
    sim, twin, x, dy = _nonfinite_pair(tt.TrainingRecipe.deepseek_v3())
    xb, dyb, x0, dy0 = x.clone(), dy.clone(), x.clone(), dy.clone()
    xb[3, 5], xb[7, 1], dyb[2, 4] = float("nan"), float("inf"), float("inf")
    x0[3, 5], x0[7, 1], dy0[2, 4] = 0.0, 0.0, 0.0
    got = _steps(sim, sim, [xb], [dyb])[0]
    want = _steps(twin, twin, [x0], [dy0])[0]
    masks = [np.zeros((128, 64), bool), np.zeros((128, 128), bool), np.zeros((64, 128), bool)]
    masks[0][[3, 7]] = True
    masks[1][2] = True
    masks[2][4], masks[2][:, [1, 5]] = True, True
    for g, w, bad in zip(got, want, masks):
        g, w = g.detach().numpy(), w.detach().numpy()
        assert np.isnan(g[bad]).all()
        assert np.array_equal(g[~bad].view(np.uint32), w[~bad].view(np.uint32))


def test_inf_stays_inf_in_e5m2():
    """Transformer Engine's hybrid recipe quantises dy in E5M2, which has infinities:
    dy[2, 4] = +Inf with an all-positive w gives dx[2, :] = +Inf (Inf times a finite
    positive product, plus finite terms), not NaN; the Inf's amax is kept out of the history.
    (w >= 2^-6: the first step casts with scale 1, no history yet, and a smaller entry could
    round to an E4M3 zero, and Inf * 0 is NaN.)"""
    sim, _, x, dy = _nonfinite_pair(tt.TrainingRecipe.te_hybrid_delayed(history=4))
    with torch.no_grad():
        sim.weight.abs_().add_(2.0 ** -6)
    dy[2, 4] = float("inf")
    dx = _steps(sim, sim, [x], [dy])[0][1]
    assert torch.isposinf(dx[2]).all()
    assert torch.isfinite(dx[[0, 1, 3]]).all()
    assert sim.amax_history["dy"] == [] and len(sim.amax_history["x"]) == 1


def test_grad_scaler_sees_an_inf_gradient_and_skips_the_step():
    """What fp16 training relies on: an Inf in grad_output reaches the weight gradient, the
    GradScaler finds it, skips optimizer.step() and lowers its scale."""
    torch.manual_seed(4)
    sim = tt.Linear(128, 64, recipe=tt.TrainingRecipe.deepseek_v3())
    before = sim.weight.detach().clone()
    opt = torch.optim.SGD(sim.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    loss_weights = torch.ones(64)
    loss_weights[9] = float("inf")                 # an overflow downstream of the layer
    loss = (sim(torch.randn(128, 128)) * loss_weights).mean()
    scaler.scale(loss).backward()
    assert not torch.isfinite(sim.weight.grad).all()
    scaler.step(opt)
    scaler.update()
    assert _same(sim.weight.detach(), before)       # the step was skipped
    assert scaler.get_scale() == 512.0


def test_nonfinite_raise_names_the_layer_and_the_tensor():
    sim, _, x, dy = _nonfinite_pair(tt.TrainingRecipe.deepseek_v3())
    sim.nonfinite = "raise"
    dy[2, 4] = float("nan")
    with pytest.raises(tcsim.FormatError) as err:
        _steps(sim, sim, [x], [dy])
    text = str(err.value)
    assert "'blk.fc'" in text and "dy (grad_output" in text and "dy[2, 4] = nan" in text
    assert "x[0, 0]" not in text
    with torch.no_grad():
        sim.weight[6, 3] = float("-inf")
    with pytest.raises(tcsim.FormatError, match=r"w \(the weight\).*fprop GEMM: w\[6, 3\] = -inf"):
        sim(x)
    x[1, 2] = float("nan")
    with pytest.raises(tcsim.FormatError, match=r"x \(the layer's input.*x\[1, 2\] = nan"):
        sim(x)
    with pytest.raises(tcsim.ConfigError, match="nonfinite"):
        sim.nonfinite = "ignore"


# ---- 4. state_dict ----------------------------------------------------------------------------
def test_state_dicts_load_strictly_both_ways():
    """The amax histories travel in the state_dict's metadata, not as keys: a plain model
    loads a converted model's state_dict strictly and the reverse, and a converted model (also
    through torch.save / torch.load) gets the histories back."""
    model = _model()
    _steps(model, model, [torch.randn(8, 128)], [torch.randn(8, 16)])
    sd = model.state_dict()
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert tt.amax_histories(sd) == {"2": model[2].amax_history}
    plain = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 16))
    plain.load_state_dict(sd, strict=True)
    assert all(_same(a, b) for a, b in zip(plain.state_dict().values(), sd.values()))
    other = _model(seed=5)
    other.load_state_dict(plain.state_dict(), strict=True)    # no histories: they start empty
    assert other[2].amax_history == {"x": [], "w": [], "dy": []}
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    other.load_state_dict(torch.load(buf), strict=True)
    assert other[2].amax_history == model[2].amax_history
    # a checkpoint of an earlier tcsim (histories under "<layer>._extra_state") still loads
    old = dict(sd, **{"2._extra_state": {"x": [1.0], "w": [2.0], "dy": [3.0]}})
    other.load_state_dict(old, strict=True)
    assert other[2].amax_history == {"x": [1.0], "w": [2.0], "dy": [3.0]}


def test_a_copy_is_a_layer_of_its_own():
    """A deepcopy (or unpickled copy) has its own handle in the custom ops: its passes update
    its own histories, not the original's."""
    sim = tt.Linear(128, 128, recipe=tt.TrainingRecipe.te_hybrid_delayed(history=4))
    twin = copy.deepcopy(sim)
    _steps(twin, twin, [torch.randn(8, 128)], [torch.randn(8, 128)])
    assert len(twin.amax_history["x"]) == 1 and sim.amax_history["x"] == []


# ---- 5. nn.Linear's errors, empty batches, GemmStats ------------------------------------------
def _error(layer, x):
    with pytest.raises(Exception) as err:
        layer(x)
    return type(err.value), str(err.value)


@pytest.mark.parametrize("shape,dtype", [((3, 8), torch.bfloat16), ((3, 7), torch.float32),
                                         ((3, 16), torch.float32), ((2, 3, 7), torch.float32)])
def test_bad_input_gives_nn_linears_error(shape, dtype):
    plain = torch.nn.Linear(8, 4)
    sim = tt.Linear(8, 4, recipe=tt.TrainingRecipe.deepseek_v3())
    x = torch.randn(shape).to(dtype)
    assert _error(sim, x) == _error(plain, x)


@pytest.mark.parametrize("recipe", ["deepseek_v3", "fp32"])
@pytest.mark.parametrize("shape", [(0, 128), (2, 0, 128)])
def test_an_empty_batch_backpropagates(recipe, shape):
    plain = torch.nn.Linear(128, 64)
    sim = tt.Linear(128, 64, recipe=tt.TrainingRecipe.named(recipe))
    sim.load_state_dict(plain.state_dict())
    for layer in (plain, sim):
        x = torch.zeros(shape, requires_grad=True)
        y = layer(x)
        assert y.shape == (*shape[:-1], 64)
        y.sum().backward()
        assert x.grad.shape == x.shape
    assert _same(sim.weight.grad, plain.weight.grad)
    assert _same(sim.bias.grad, plain.bias.grad)
    assert not sim.weight.grad.any()


def test_gemm_stats_without_begin_step_warns_once():
    """A training pass before any begin_step warns once; evaluation passes (no grad, or eval
    mode) and passes after begin_step with ``step = None`` (the train runner's evaluation)
    do not."""
    sim = tt.Linear(32, 32, recipe=tt.TrainingRecipe.bf16())
    sim.stats = tt.GemmStats(every=1)
    x = torch.randn(4, 32, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            sim(x)
    with pytest.warns(UserWarning, match="begin_step") as record:
        sim(x).sum().backward()
        sim(x).sum().backward()
    assert sum("begin_step" in str(w.message) for w in record) == 1
    assert sim.stats.rows == []
    sim.stats.begin_step(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sim(x).sum().backward()
        assert len(sim.stats.rows) == 3
        sim.stats.step = None
        sim(x).sum().backward()
    assert len(sim.stats.rows) == 3
